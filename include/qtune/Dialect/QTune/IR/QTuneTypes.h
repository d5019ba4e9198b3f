//===- QTuneTypes.h - qtune types --------------------------------*- C++ -*-===//

#ifndef QTUNE_DIALECT_QTUNE_IR_QTUNETYPES_H
#define QTUNE_DIALECT_QTUNE_IR_QTUNETYPES_H

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Types.h"
#include "qtune/Dialect/QTune/IR/QTuneAttrs.h"

#define GET_TYPEDEF_CLASSES
#include "qtune/Dialect/QTune/IR/QTuneOpsTypes.h.inc"

#endif // QTUNE_DIALECT_QTUNE_IR_QTUNETYPES_H
