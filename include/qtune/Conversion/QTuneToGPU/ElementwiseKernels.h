//===- ElementwiseKernels.h - per-element and reduction GPU kernels -*- C++ -*-===//
//
// Builders for the small kernels around the GEMMs: one thread per element
// (fills, conversions, losses' gradients, optimizer updates) and sums reduced
// per block (losses, gradient norms). Every tensor argument is a flat
// memref<?xT>; the last kernel argument is the element count n.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_CONVERSION_QTUNETOGPU_ELEMENTWISEKERNELS_H
#define QTUNE_CONVERSION_QTUNETOGPU_ELEMENTWISEKERNELS_H

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace qtune {

/// Threads per block of the per-element and reduction kernels.
constexpr int64_t kElementwiseThreads = 256;

/// The flat memref<?xT> type every kernel takes for a tensor.
mlir::MemRefType flatMemRef(mlir::Type element);

/// A kernel `name(args..., n: index)` of kElementwiseThreads threads with the
/// given workgroup buffers; `body(b, arguments (n last), workgroup buffers)`
/// builds its body.
mlir::gpu::GPUFuncOp buildKernel(
    mlir::OpBuilder &b, mlir::Location loc, llvm::StringRef name,
    llvm::ArrayRef<mlir::Type> args, mlir::TypeRange workgroup,
    llvm::function_ref<void(mlir::ImplicitLocOpBuilder &, mlir::ValueRange,
                            mlir::ValueRange)>
        body);

/// Consecutive elements each thread of a per-element kernel handles (so the
/// accesses of a run merge into 16-byte vector loads and stores), recorded on
/// the kernel as the integer attribute kElementsPerThreadAttr, which launches
/// read to size their grids.
constexpr int64_t kElementsPerThread = 8;
constexpr llvm::StringLiteral kElementsPerThreadAttr = "elements_per_thread";

/// Blocks for a kernel handling `perThread` elements per thread over n.
constexpr int64_t elementwiseBlocks(int64_t n, int64_t perThread = 1) {
  int64_t perBlock = kElementwiseThreads * perThread;
  return (n + perBlock - 1) / perBlock;
}

/// `name(args..., n: index)` running `body(b, args, i)` for every i < n:
/// thread t takes i in [t·kElementsPerThread, (t+1)·kElementsPerThread), so
/// the body must only touch element i of its per-element arguments (its
/// memref arguments arrive as 16-byte aligned views). Launched with
/// elementwiseBlocks(n, kElementsPerThread) blocks.
mlir::gpu::GPUFuncOp buildPerElementKernel(
    mlir::OpBuilder &b, mlir::Location loc, llvm::StringRef name,
    llvm::ArrayRef<mlir::Type> args,
    llvm::function_ref<void(mlir::ImplicitLocOpBuilder &, mlir::ValueRange,
                            mlir::Value)>
        body);

/// `name(args..., out: memref<?xf32>, n: index)`: out[0] += Σ_{i<n} value(i):
/// each thread sums a grid-stride range, then the block reduces (warp
/// shuffles, then shared memory) with one atomic add per block. Any grid size
/// works (sumKernelBlocks(n) is a good one). `out` must be zeroed first.
constexpr int64_t sumKernelBlocks(int64_t n) {
  int64_t blocks = elementwiseBlocks(n, kElementsPerThread);
  return blocks < 1024 ? blocks : 1024;
}
mlir::gpu::GPUFuncOp buildSumKernel(
    mlir::OpBuilder &b, mlir::Location loc, llvm::StringRef name,
    llvm::ArrayRef<mlir::Type> args,
    llvm::function_ref<mlir::Value(mlir::ImplicitLocOpBuilder &,
                                   mlir::ValueRange, mlir::Value)>
        value);
/// The same, with the value of a run: run(b, args, first, count) returns
/// Σ value(i) over the `count` consecutive elements from `first` (count is
/// kElementsPerThread, or 1 for the tail), so a kernel can issue a run's loads
/// before its stores (merged into 16-byte accesses) and store per element.
mlir::gpu::GPUFuncOp buildSumKernelByRuns(
    mlir::OpBuilder &b, mlir::Location loc, llvm::StringRef name,
    llvm::ArrayRef<mlir::Type> args,
    llvm::function_ref<mlir::Value(mlir::ImplicitLocOpBuilder &,
                                   mlir::ValueRange, mlir::Value, int64_t)>
        run);

/// Sum (or maximum) of the f32 `v` over the block, returned in every thread.
/// `scratch` is a workgroup memref<kElementwiseThreads/32 x f32>. Every thread
/// of the block must call it (it has barriers).
mlir::Value blockReduce(mlir::ImplicitLocOpBuilder &b, mlir::Value v, bool max,
                        mlir::Value scratch);

/// Builds `body` inside an `if (threadIdx.x == 0)` at the insertion point,
/// which stays after the if.
void inFirstThread(mlir::ImplicitLocOpBuilder &b,
                   llvm::function_ref<void()> body);

/// Rounds an f32 to the nearest integer, ties to even, for |x| < 2^22 (adds
/// and subtracts 1.5·2^23; f32 adds round to even). No libdevice needed.
mlir::Value roundEvenF32(mlir::ImplicitLocOpBuilder &b, mlir::Value x);

/// `v` (a float) widened or narrowed to f32, and back to `to` (rounded to
/// nearest even).
mlir::Value toF32(mlir::ImplicitLocOpBuilder &b, mlir::Value v);
mlir::Value fromF32(mlir::ImplicitLocOpBuilder &b, mlir::Value v, mlir::Type to);

/// A kernel `name(args..., n: index)` of kElementwiseThreads threads, one
/// block per row: `body(b, arguments, row = blockIdx.x, scratch)` with the
/// workgroup scratch blockReduce needs. Launched with one block per row.
mlir::gpu::GPUFuncOp buildRowKernel(
    mlir::OpBuilder &b, mlir::Location loc, llvm::StringRef name,
    llvm::ArrayRef<mlir::Type> args,
    llvm::function_ref<void(mlir::ImplicitLocOpBuilder &, mlir::ValueRange,
                            mlir::Value, mlir::Value)>
        body);

/// Small helpers for kernel bodies: f32 constants and arithmetic, loads that
/// widen to f32, stores that round to the buffer's type, and math through
/// NVVM intrinsics (so no kernel needs libdevice).
namespace kernel {
using B = mlir::ImplicitLocOpBuilder;
mlir::Value f32(B &b, double v);
mlir::Value index(B &b, int64_t v);
mlir::Value load(B &b, mlir::Value memref, mlir::Value i);
mlir::Value loadF32(B &b, mlir::Value memref, mlir::Value i);
/// Element 0.
mlir::Value scalar(B &b, mlir::Value memref);
void storeAs(B &b, mlir::Value v, mlir::Value memref, mlir::Value i);
mlir::Value add(B &b, mlir::Value x, mlir::Value y);
mlir::Value sub(B &b, mlir::Value x, mlir::Value y);
mlir::Value mul(B &b, mlir::Value x, mlir::Value y);
mlir::Value div(B &b, mlir::Value x, mlir::Value y);
mlir::Value intrinsic(B &b, llvm::StringRef name, mlir::Value x);
mlir::Value sqrtF32(B &b, mlir::Value x);
/// 2^x and log2(x) (approximate, ~2 ulp), e^x through them.
mlir::Value exp2F32(B &b, mlir::Value x);
mlir::Value log2F32(B &b, mlir::Value x);
mlir::Value expF32(B &b, mlir::Value x);
/// sin and cos of any f32 angle: reduced to [−π, π] (two-constant
/// Cody–Waite), then the approximate hardware sine and cosine.
std::pair<mlir::Value, mlir::Value> sinCosF32(B &b, mlir::Value x);
/// Sum (or maximum) of the f32 `v` over the warp, in every lane.
mlir::Value warpReduce(B &b, mlir::Value v, bool max);
/// Lane `lane`'s `v`, in every lane.
mlir::Value laneValue(B &b, mlir::Value v, int64_t lane);
/// Builds `body` under `if (x is finite)` (x − x == 0: false for NaN and
/// ±inf); the insertion point stays after the if.
void ifFinite(B &b, mlir::Value x, llvm::function_ref<void()> body);
/// `v` rounded to `type` and widened back to f32 (what storing it would keep).
mlir::Value roundedTo(B &b, mlir::Value v, mlir::Type type);
} // namespace kernel

/// `name(out: memref<?xT>, n: index)`: out[i] = value for i < n.
mlir::gpu::GPUFuncOp buildFillKernel(mlir::OpBuilder &b, mlir::Location loc,
                                     llvm::StringRef name, mlir::Type element,
                                     double value = 0);

/// `name(slices: memref<?xf32>, out: memref<?xTo>, n: index)`: out[i] =
/// Σ_{z < count} slices[z·stride + i], summed in order (split-K partials).
mlir::gpu::GPUFuncOp buildSumSlicesKernel(mlir::OpBuilder &b,
                                          mlir::Location loc,
                                          llvm::StringRef name, int64_t count,
                                          int64_t stride, mlir::Type to);

/// `name(in: memref<?xFrom>, out: memref<?xTo>, n: index)`: out[i] = in[i]
/// converted (floats rounded to nearest even) for i < n.
mlir::gpu::GPUFuncOp buildConvertKernel(mlir::OpBuilder &b, mlir::Location loc,
                                        llvm::StringRef name, mlir::Type from,
                                        mlir::Type to);

} // namespace qtune

#endif // QTUNE_CONVERSION_QTUNETOGPU_ELEMENTWISEKERNELS_H
