//===- QTuneOps.h - qtune operations -----------------------------*- C++ -*-===//

#ifndef QTUNE_DIALECT_QTUNE_IR_QTUNEOPS_H
#define QTUNE_DIALECT_QTUNE_IR_QTUNEOPS_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "qtune/Dialect/QTune/IR/QTuneDialect.h"
#include "qtune/Dialect/QTune/IR/QTuneTypes.h"

#define GET_OP_CLASSES
#include "qtune/Dialect/QTune/IR/QTuneOps.h.inc"

namespace qtune {
/// The role an argument of a function declares with `qtune.role`, if any.
std::optional<Role> getArgumentRole(mlir::Value value);
/// Whether weights in `format` can train their codes with QFT
/// (`qtune.qft_lion`): 8-bit uniform formats.
bool isQftFormat(QuantFormatAttrInterface format);
} // namespace qtune

#endif // QTUNE_DIALECT_QTUNE_IR_QTUNEOPS_H
