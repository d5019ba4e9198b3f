//===- QTuneDialect.h - qtune dialect ----------------------------*- C++ -*-===//

#ifndef QTUNE_DIALECT_QTUNE_IR_QTUNEDIALECT_H
#define QTUNE_DIALECT_QTUNE_IR_QTUNEDIALECT_H

#include "mlir/IR/Dialect.h"

#include "qtune/Dialect/QTune/IR/QTuneOpsDialect.h.inc"

#endif // QTUNE_DIALECT_QTUNE_IR_QTUNEDIALECT_H
