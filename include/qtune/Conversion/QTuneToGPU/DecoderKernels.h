//===- DecoderKernels.h - GPU kernels of the decoder ops ---------*- C++ -*-===//
//
// Builders for the kernels of qtune's LLaMA-family decoder ops: embedding
// gather and scatter, RMSNorm (forward, input and weight gradients), rotary
// embedding, SwiGLU and its gradient (attention: AttentionKernels.h).
// Every tensor argument is a flat memref<?xT>; the last argument is the
// element (or row, or block) count the kernel is launched over. Arithmetic is
// f32; results are rounded to their buffer's type.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_CONVERSION_QTUNETOGPU_DECODERKERNELS_H
#define QTUNE_CONVERSION_QTUNETOGPU_DECODERKERNELS_H

#include "mlir/Dialect/GPU/IR/GPUDialect.h"

namespace qtune {

/// (table, ids: i32, out, n = rows·d): out[r, :] = table[ids[r], :] (ids
/// clamped into [0, v): the runtime validates token files).
mlir::gpu::GPUFuncOp buildEmbeddingKernel(mlir::OpBuilder &b, mlir::Location loc,
                                          llvm::StringRef name, mlir::Type elt,
                                          int64_t d, int64_t v);
/// (g, ids: i32, out: f32 zeroed, n = rows·d): out[ids[r], :] += g[r, :].
mlir::gpu::GPUFuncOp buildEmbeddingGradKernel(mlir::OpBuilder &b,
                                              mlir::Location loc,
                                              llvm::StringRef name,
                                              mlir::Type gElt, int64_t d,
                                              int64_t v);

/// One block per row of d: (x, w, y, rows).
mlir::gpu::GPUFuncOp buildRmsNormKernel(mlir::OpBuilder &b, mlir::Location loc,
                                        llvm::StringRef name, mlir::Type xElt,
                                        mlir::Type wElt, int64_t d, double eps);
/// One block per row: (g, x, w, dx, rows).
mlir::gpu::GPUFuncOp buildRmsNormGradKernel(mlir::OpBuilder &b,
                                            mlir::Location loc,
                                            llvm::StringRef name,
                                            mlir::Type gElt, mlir::Type xElt,
                                            mlir::Type wElt, mlir::Type dxElt,
                                            int64_t d, double eps);
/// One block per row: (x, r: f32, rows): r = 1/sqrt(mean(x²) + eps).
mlir::gpu::GPUFuncOp buildRmsFactorKernel(mlir::OpBuilder &b, mlir::Location loc,
                                          llvm::StringRef name, mlir::Type xElt,
                                          int64_t d, double eps);
/// One thread per column: (g, x, r: f32, dw, d): dw[j] = Σ_rows g·x·r.
mlir::gpu::GPUFuncOp buildRmsNormWeightGradKernel(
    mlir::OpBuilder &b, mlir::Location loc, llvm::StringRef name,
    mlir::Type gElt, mlir::Type xElt, mlir::Type dwElt, int64_t d,
    int64_t rows);

/// One thread per rotated pair: (x, y, n = rows·width/2); rows of `width`
/// features, sequence length `seq` (position = row mod seq).
mlir::gpu::GPUFuncOp buildRopeKernel(mlir::OpBuilder &b, mlir::Location loc,
                                     llvm::StringRef name, mlir::Type elt,
                                     int64_t width, int64_t seq, int64_t headDim,
                                     double theta, bool inverse);

/// (gate, up, y, n) and (gate, up, dy, dgate, dup, n).
mlir::gpu::GPUFuncOp buildSwigluKernel(mlir::OpBuilder &b, mlir::Location loc,
                                       llvm::StringRef name, mlir::Type elt);
mlir::gpu::GPUFuncOp buildSwigluGradKernel(mlir::OpBuilder &b,
                                           mlir::Location loc,
                                           llvm::StringRef name, mlir::Type elt);

} // namespace qtune

#endif // QTUNE_CONVERSION_QTUNETOGPU_DECODERKERNELS_H
