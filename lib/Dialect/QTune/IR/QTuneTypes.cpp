//===- QTuneTypes.cpp - qtune types -----------------------------------------===//

#include "qtune/Dialect/QTune/IR/QTuneTypes.h"
#include "qtune/Dialect/QTune/IR/QTuneDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace qtune;

#define GET_TYPEDEF_CLASSES
#include "qtune/Dialect/QTune/IR/QTuneOpsTypes.cpp.inc"

void QTuneDialect::registerTypes() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "qtune/Dialect/QTune/IR/QTuneOpsTypes.cpp.inc"
      >();
}

// !qtune.qweight<NxK, #format>
Type QWeightType::parse(AsmParser &parser) {
  SmallVector<int64_t, 2> dims;
  if (parser.parseLess())
    return {};
  SMLoc dimsLoc = parser.getCurrentLocation();
  if (parser.parseDimensionList(dims, /*allowDynamic=*/false,
                                /*withTrailingX=*/false))
    return {};
  if (dims.size() != 2) {
    parser.emitError(dimsLoc) << "qweight shape must be NxK (2 dimensions), got "
                              << dims.size();
    return {};
  }
  Attribute format;
  SMLoc formatLoc;
  if (parser.parseComma() || (formatLoc = parser.getCurrentLocation(), false) ||
      parser.parseAttribute(format) || parser.parseGreater())
    return {};
  auto iface = dyn_cast<QuantFormatAttrInterface>(format);
  if (!iface) {
    parser.emitError(formatLoc)
        << "expected a quantizer format attribute (one implementing "
           "QuantFormatAttrInterface), got "
        << format;
    return {};
  }
  return parser.getChecked<QWeightType>(parser.getContext(), dims[0], dims[1],
                                        iface);
}

void QWeightType::print(AsmPrinter &printer) const {
  printer << "<" << getN() << "x" << getK() << ", " << getFormat() << ">";
}

LogicalResult
QWeightType::verify(function_ref<InFlightDiagnostic()> emitError, int64_t n,
                    int64_t k, QuantFormatAttrInterface format) {
  if (n <= 0 || k <= 0)
    return emitError() << "qweight dimensions must be positive, got " << n << "x"
                       << k;
  return format.verifyShape(n, k, emitError);
}
