//===- TrainingKernels.h - loss, clipping and optimizer GPU kernels -*- C++ -*-===//
//
// Kernels of a train step other than the GEMMs: the MSE loss and its gradient,
// gradient-norm clipping, elementwise gradient sums and the optimizer updates
// (AdamW; Lion with f32, bf16 or int8 block-quantized momentum). Optimizer
// kernels update their parameter and state buffers in place and read `lr` and
// `step` from one-element f32 buffers, so one bundle serves a whole schedule.
// Each follows the semantics of its op (docs/dialect.md) in f32 arithmetic.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_CONVERSION_QTUNETOGPU_TRAININGKERNELS_H
#define QTUNE_CONVERSION_QTUNETOGPU_TRAININGKERNELS_H

#include "mlir/Dialect/GPU/IR/GPUDialect.h"

namespace qtune {

/// `(p, t, loss: f32, n)`: loss[0] += Σ (p − t)² / count (loss zeroed first).
mlir::gpu::GPUFuncOp buildMseLossKernel(mlir::OpBuilder &b, mlir::Location loc,
                                        llvm::StringRef name, mlir::Type pElt,
                                        mlir::Type tElt, int64_t count);

/// `(p, t, g: f32, r, n)`: r = 2 · (p − t) / count · g[0].
mlir::gpu::GPUFuncOp buildMseLossGradKernel(mlir::OpBuilder &b,
                                            mlir::Location loc,
                                            llvm::StringRef name,
                                            mlir::Type pElt, mlir::Type tElt,
                                            mlir::Type rElt, int64_t count);

/// Both in one pass over p and t: `(p, t, g: f32, r, loss: f32, n)`:
/// r = 2 · (p − t) / count · g[0] and loss[0] += Σ (p − t)² / count (loss
/// zeroed first). For a loss whose gradient the same entry computes.
mlir::gpu::GPUFuncOp buildMseLossAndGradKernel(mlir::OpBuilder &b,
                                               mlir::Location loc,
                                               llvm::StringRef name,
                                               mlir::Type pElt, mlir::Type tElt,
                                               mlir::Type rElt, int64_t count);

/// `(logits, labels: i32, loss: f32, n = rows)`, one thread block per row of
/// `v` logits: loss[0] += (logsumexp(row) − row[label]) / rows (loss zeroed
/// first); a label outside [0, v) adds NaN, so the loss says so.
/// KL(teacher ‖ student) over rows of `v` logits (one block per row, added
/// atomically into a zeroed f32 scalar), and its gradient in the student:
/// (softmax(s) − softmax(t)) · g / rows.
mlir::gpu::GPUFuncOp buildKlDivKernel(mlir::OpBuilder &b, mlir::Location loc,
                                      llvm::StringRef name, mlir::Type sElt,
                                      mlir::Type tElt, int64_t v, int64_t rows);
mlir::gpu::GPUFuncOp buildKlDivGradKernel(mlir::OpBuilder &b,
                                          mlir::Location loc,
                                          llvm::StringRef name, mlir::Type sElt,
                                          mlir::Type tElt, mlir::Type rElt,
                                          int64_t v, int64_t rows);
mlir::gpu::GPUFuncOp buildCrossEntropyKernel(mlir::OpBuilder &b,
                                             mlir::Location loc,
                                             llvm::StringRef name,
                                             mlir::Type logitElt, int64_t v,
                                             int64_t rows);

/// `(logits, labels: i32, g: f32, r, n = rows)`, one thread block per row:
/// r = (softmax(row) − onehot(label)) / rows · g[0].
mlir::gpu::GPUFuncOp buildCrossEntropyGradKernel(mlir::OpBuilder &b,
                                                 mlir::Location loc,
                                                 llvm::StringRef name,
                                                 mlir::Type logitElt,
                                                 mlir::Type rElt, int64_t v,
                                                 int64_t rows);

/// `(g, sumsq: f32, n)`: sumsq[0] += Σ g².
mlir::gpu::GPUFuncOp buildSumSquaresKernel(mlir::OpBuilder &b,
                                           mlir::Location loc,
                                           llvm::StringRef name,
                                           mlir::Type element);

/// `(g, sumsq: f32, r, n)`: r = g · min(1, maxNorm / (sqrt(sumsq[0]) + 1e-6)).
mlir::gpu::GPUFuncOp buildClipKernel(mlir::OpBuilder &b, mlir::Location loc,
                                     llvm::StringRef name, mlir::Type element,
                                     double maxNorm);

/// `(a, b, r, n)`: r = a + b, or r = a · b with `multiply`.
mlir::gpu::GPUFuncOp buildAddKernel(mlir::OpBuilder &b, mlir::Location loc,
                                    llvm::StringRef name, mlir::Type element,
                                    bool multiply = false);

/// `(acc: f32, g, [loss: f32], n)`, in place: acc += g (skipped when
/// `guarded` and the loss is not finite).
mlir::gpu::GPUFuncOp buildGradAccumulateKernel(mlir::OpBuilder &b,
                                               mlir::Location loc,
                                               llvm::StringRef name,
                                               mlir::Type gElt, bool guarded);
/// `(acc: f32, count: f32, g: f32, n)`: g = acc / count, then acc = 0.
mlir::gpu::GPUFuncOp buildGradTakeKernel(mlir::OpBuilder &b, mlir::Location loc,
                                         llvm::StringRef name);

struct OptimizerHyper {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0;
  /// The kernel takes one more f32 argument, the step's loss, after the ones
  /// listed below (before n); when it is not finite nothing is updated.
  bool guarded = false;
};

/// `(p, g, m: f32, v: f32, lr: f32, step: f32, n)`, in place: one AdamW step.
mlir::gpu::GPUFuncOp buildAdamWKernel(mlir::OpBuilder &b, mlir::Location loc,
                                      llvm::StringRef name, mlir::Type pElt,
                                      mlir::Type gElt,
                                      const OptimizerHyper &h);

/// `(p, g, m, lr: f32, n)`, in place: one Lion step, m f32 or bf16.
mlir::gpu::GPUFuncOp buildLionKernel(mlir::OpBuilder &b, mlir::Location loc,
                                     llvm::StringRef name, mlir::Type pElt,
                                     mlir::Type gElt, mlir::Type mElt,
                                     const OptimizerHyper &h);

/// `(p, g, m: i8, scales: f32, lr: f32, n)`, in place: one Lion step with the
/// momentum stored as int8 codes and one f32 scale per `block` consecutive
/// elements. Launched with one thread block per momentum block: it decodes,
/// updates, finds the block's new absmax and requantizes (scale absmax/127).
mlir::gpu::GPUFuncOp buildLionInt8Kernel(mlir::OpBuilder &b,
                                         mlir::Location loc,
                                         llvm::StringRef name, mlir::Type pElt,
                                         mlir::Type gElt, int64_t block,
                                         const OptimizerHyper &h);

} // namespace qtune

#endif // QTUNE_CONVERSION_QTUNETOGPU_TRAININGKERNELS_H
