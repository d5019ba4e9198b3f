//===- Bundle.h - compiled modules to .qtb bundles -----------------*- C++ -*-===//
//
// Turns the host side of a lowered module (functions over memrefs with
// gpu.launch_func) into the bundle's arena layout, buffers and entry points.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_TARGET_BUNDLE_H
#define QTUNE_TARGET_BUNDLE_H

#include "mlir/IR/BuiltinOps.h"
#include "qtune/runtime/Bundle.h"

namespace qtune {

/// Fills `writer` with one entry per host function of `module` (each a
/// function whose arguments are buffers and whose body allocates and launches),
/// one buffer per argument, allocation and result, and one kernel per launched
/// symbol, whose code is the blobs `ptxBlob` and `cubinBlob` (-1: none).
/// Reports an error at the offending op on anything it cannot express.
mlir::LogicalResult buildBundle(mlir::ModuleOp module, int ptxBlob,
                                int cubinBlob, rt::BundleWriter &writer);

} // namespace qtune

#endif // QTUNE_TARGET_BUNDLE_H
