//===- QTuneInterfaces.h - quantizer format interface ------------*- C++ -*-===//

#ifndef QTUNE_DIALECT_QTUNE_IR_QTUNEINTERFACES_H
#define QTUNE_DIALECT_QTUNE_IR_QTUNEINTERFACES_H

#include "mlir/IR/Attributes.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Types.h"
#include "qtune/Support/HostTensor.h"
#include "llvm/ADT/SmallVector.h"

namespace qtune {

/// What a component of a quantized weight is, as far as training is concerned.
enum class ComponentKind {
  Codes, ///< packed integer codes (no derivative)
  Scale, ///< multiplicative float parameters: what a scale-only (PEQA) layer trains
  Zero,  ///< zero points / offsets (frozen in a scale-only layer)
  Table, ///< codebook values
};

/// One component of an N×K quantized weight.
struct ComponentSpec {
  std::string name;
  ComponentKind kind;
  mlir::Type elementType;
  llvm::SmallVector<int64_t> shape;

  bool isInteger() const { return kind == ComponentKind::Codes; }
};

/// How emitted dequantization code reads the components of a weight. Kernel
/// templates implement it over their buffers; formats only call it.
class ComponentAccess {
public:
  virtual ~ComponentAccess() = default;
  /// Element `flatIndex` (row-major, index type) of float component
  /// `component`, converted to f32.
  virtual mlir::Value loadFloat(mlir::OpBuilder &b, mlir::Location loc,
                                unsigned component, mlir::Value flatIndex) = 0;
  /// Code `col` of row `row` of integer component `component`, stored in the
  /// canonical packing with `bits` bits per code and `wordsPerRow` 32-bit words
  /// per row, as an i32 in [0, 2^bits).
  virtual mlir::Value loadCode(mlir::OpBuilder &b, mlir::Location loc,
                               unsigned component, mlir::Value row,
                               mlir::Value col, unsigned bits,
                               int64_t wordsPerRow) = 0;
};

} // namespace qtune

#include "qtune/Dialect/QTune/IR/QTuneAttrInterfaces.h.inc"

#include "mlir/IR/OpDefinition.h"
#include "qtune/Dialect/QTune/IR/QTuneOpInterfaces.h.inc"

#endif // QTUNE_DIALECT_QTUNE_IR_QTUNEINTERFACES_H
