//===- MmaSync.h - warp-level tensor-core primitives -------------*- C++ -*-===//
//
// The warp-level MMA building blocks shared by the GEMM template and the
// attention kernels (sm_80+): ldmatrix fragments as 32-bit registers, one
// m16n8k16 bf16 MMA with f32 accumulators, and the packing of two f32 into
// one register of two bf16 (an accumulator fragment reused as an A operand).
//
// Fragment layouts (lane = 4g + t): an m16n8 accumulator holds (g, 2t),
// (g, 2t+1), (g+8, 2t), (g+8, 2t+1); an m16k16 A operand holds the bf16 pairs
// (g, 2t..), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..); a k16n8 B operand
// (k, n) = (2t.., g) and (2t+8.., g).
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_CONVERSION_QTUNETOGPU_MMASYNC_H
#define QTUNE_CONVERSION_QTUNETOGPU_MMASYNC_H

#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace qtune::mma {

/// The 32-bit registers of an nvgpu.ldmatrix result (rows of two bf16).
llvm::SmallVector<mlir::Value> registers(mlir::ImplicitLocOpBuilder &b,
                                         mlir::Value fragment);

/// nvgpu.ldmatrix of `tiles` (2 or 4) 8×8 bf16 matrices of the shared
/// memref `mem`, lane l addressing the row at `indices` (optionally
/// transposed), as 2 or 4 registers.
llvm::SmallVector<mlir::Value> ldmatrix(mlir::ImplicitLocOpBuilder &b,
                                        mlir::Value mem,
                                        mlir::ValueRange indices, int64_t tiles,
                                        bool transpose);

/// c += a · b for one m16n8k16 MMA: `a` four registers of bf16 pairs, `bRegs`
/// two, `c` four f32 accumulators (replaced by the results).
void mmaBF16(mlir::ImplicitLocOpBuilder &b, mlir::ValueRange a,
             mlir::ValueRange bRegs, llvm::MutableArrayRef<mlir::Value> c);

/// One 32-bit register holding `lo` and `hi` rounded to bf16 (lo in the low
/// half).
mlir::Value packBF16(mlir::ImplicitLocOpBuilder &b, mlir::Value lo,
                     mlir::Value hi);

} // namespace qtune::mma

#endif // QTUNE_CONVERSION_QTUNETOGPU_MMASYNC_H
