//===- QTuneAttrs.h - qtune attributes: roles and formats ---------*- C++ -*-===//

#ifndef QTUNE_DIALECT_QTUNE_IR_QTUNEATTRS_H
#define QTUNE_DIALECT_QTUNE_IR_QTUNEATTRS_H

#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/DialectImplementation.h"
#include "qtune/Dialect/QTune/IR/QTuneInterfaces.h"

#include "qtune/Dialect/QTune/IR/QTuneEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "qtune/Dialect/QTune/IR/QTuneAttrs.h.inc"

#endif // QTUNE_DIALECT_QTUNE_IR_QTUNEATTRS_H
