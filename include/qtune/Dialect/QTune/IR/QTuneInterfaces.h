//===- QTuneInterfaces.h - quantizer format interface ------------*- C++ -*-===//

#ifndef QTUNE_DIALECT_QTUNE_IR_QTUNEINTERFACES_H
#define QTUNE_DIALECT_QTUNE_IR_QTUNEINTERFACES_H

#include "mlir/IR/Attributes.h"
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

} // namespace qtune

#include "qtune/Dialect/QTune/IR/QTuneAttrInterfaces.h.inc"

#endif // QTUNE_DIALECT_QTUNE_IR_QTUNEINTERFACES_H
