//===- Passes.h - qtune transformation passes --------------------*- C++ -*-===//

#ifndef QTUNE_TRANSFORMS_PASSES_H
#define QTUNE_TRANSFORMS_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Pass/Pass.h"
#include "qtune/Dialect/QTune/IR/QTuneDialect.h"

namespace qtune {

#define GEN_PASS_DECL
#include "qtune/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "qtune/Transforms/Passes.h.inc"

} // namespace qtune

#endif // QTUNE_TRANSFORMS_PASSES_H
