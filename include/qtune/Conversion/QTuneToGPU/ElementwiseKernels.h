//===- ElementwiseKernels.h - small per-element GPU kernels -------*- C++ -*-===//

#ifndef QTUNE_CONVERSION_QTUNETOGPU_ELEMENTWISEKERNELS_H
#define QTUNE_CONVERSION_QTUNETOGPU_ELEMENTWISEKERNELS_H

#include "mlir/Dialect/GPU/IR/GPUDialect.h"

namespace qtune {

/// Threads per block of the per-element kernels.
constexpr int64_t kElementwiseThreads = 256;

/// `name(out: memref<?xT>, n: index)`: out[i] = 0 for i < n.
mlir::gpu::GPUFuncOp buildFillZeroKernel(mlir::OpBuilder &b, mlir::Location loc,
                                         llvm::StringRef name,
                                         mlir::Type element);

/// `name(in: memref<?xFrom>, out: memref<?xTo>, n: index)`: out[i] = in[i]
/// converted (floats rounded to nearest even) for i < n.
mlir::gpu::GPUFuncOp buildConvertKernel(mlir::OpBuilder &b, mlir::Location loc,
                                        llvm::StringRef name, mlir::Type from,
                                        mlir::Type to);

} // namespace qtune

#endif // QTUNE_CONVERSION_QTUNETOGPU_ELEMENTWISEKERNELS_H
