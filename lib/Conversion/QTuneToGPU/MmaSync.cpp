//===- MmaSync.cpp - warp-level tensor-core primitives ---------------------===//

#include "qtune/Conversion/QTuneToGPU/MmaSync.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;

namespace qtune::mma {

SmallVector<Value> registers(ImplicitLocOpBuilder &b, Value fragment) {
  auto vt = cast<VectorType>(fragment.getType());
  auto i32x1 = VectorType::get({1}, b.getI32Type());
  SmallVector<Value> regs;
  for (int64_t r = 0; r < vt.getDimSize(0); ++r) {
    Value row = vector::ExtractOp::create(b, fragment, ArrayRef<int64_t>{r});
    Value word = vector::BitCastOp::create(b, i32x1, row);
    regs.push_back(vector::ExtractOp::create(b, word, ArrayRef<int64_t>{0}));
  }
  return regs;
}

SmallVector<Value> ldmatrix(ImplicitLocOpBuilder &b, Value mem,
                            ValueRange indices, int64_t tiles, bool transpose) {
  auto type = VectorType::get({tiles, 2}, b.getBF16Type());
  return registers(b, nvgpu::LdMatrixOp::create(b, type, mem, indices,
                                                transpose, int32_t(tiles)));
}

// nvgpu.mma.sync has no bf16 lowering in MLIR 22, so the MMA is nvvm.mma.sync
// on the registers.
void mmaBF16(ImplicitLocOpBuilder &b, ValueRange a, ValueRange bRegs,
             MutableArrayRef<Value> c) {
  Type f32 = b.getF32Type();
  auto resultTy =
      LLVM::LLVMStructType::getLiteral(b.getContext(), {f32, f32, f32, f32});
  Value d = NVVM::MmaOp::create(
      b, resultTy, a, bRegs, ValueRange(c), ArrayRef<int64_t>{16, 8, 16},
      std::nullopt, std::nullopt,
      std::array<NVVM::MMATypes, 2>{NVVM::MMATypes::bf16, NVVM::MMATypes::bf16},
      std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                     NVVM::MMALayout::col});
  for (int64_t e = 0; e < 4; ++e)
    c[e] = LLVM::ExtractValueOp::create(b, d, ArrayRef<int64_t>{e});
}

Value packBF16(ImplicitLocOpBuilder &b, Value lo, Value hi) {
  auto f32x2 = VectorType::get({2}, b.getF32Type());
  Value pair = vector::FromElementsOp::create(b, f32x2, ValueRange{lo, hi});
  Value bf = arith::TruncFOp::create(
      b, VectorType::get({2}, b.getBF16Type()), pair);
  Value word = vector::BitCastOp::create(
      b, VectorType::get({1}, b.getI32Type()), bf);
  return vector::ExtractOp::create(b, word, ArrayRef<int64_t>{0});
}

} // namespace qtune::mma
