//===- QTuneAttrs.cpp - qtune attributes ------------------------------------===//
//
// Registration and generated code of roles and formats. The interface methods of
// each format live in Formats/<Format>.cpp.
//
//===----------------------------------------------------------------------===//

#include "qtune/Dialect/QTune/IR/QTuneAttrs.h"
#include "qtune/Dialect/QTune/IR/QTuneDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace qtune;

#include "qtune/Dialect/QTune/IR/QTuneAttrInterfaces.cpp.inc"
#include "qtune/Dialect/QTune/IR/QTuneOpInterfaces.cpp.inc"
#include "qtune/Dialect/QTune/IR/QTuneEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "qtune/Dialect/QTune/IR/QTuneAttrs.cpp.inc"

void QTuneDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "qtune/Dialect/QTune/IR/QTuneAttrs.cpp.inc"
      >();
}
