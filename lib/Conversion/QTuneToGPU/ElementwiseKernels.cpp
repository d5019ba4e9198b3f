//===- ElementwiseKernels.cpp - small per-element GPU kernels ---------------===//

#include "qtune/Conversion/QTuneToGPU/ElementwiseKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

using namespace mlir;

namespace qtune {

namespace {
MemRefType flat(Type element) {
  return MemRefType::get({ShapedType::kDynamic}, element);
}

/// A kernel over `args` whose body runs `body(i)` for the global thread index
/// i when i < n (the last argument).
gpu::GPUFuncOp buildPerElement(OpBuilder &builder, Location loc, StringRef name,
                               ArrayRef<Type> args,
                               function_ref<void(ImplicitLocOpBuilder &,
                                                 Block &, Value)>
                                   body) {
  SmallVector<Type> types(args);
  types.push_back(builder.getIndexType());
  auto func = gpu::GPUFuncOp::create(
      builder, loc, name, FunctionType::get(builder.getContext(), types, {}),
      TypeRange{}, TypeRange{});
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), builder.getUnitAttr());
  func.setKnownBlockSizeAttr(builder.getDenseI32ArrayAttr(
      {int32_t(kElementwiseThreads), 1, 1}));
  Block &entry = func.getBody().front();
  ImplicitLocOpBuilder b(loc, builder.getContext());
  b.setInsertionPointToStart(&entry);
  Value i = arith::AddIOp::create(
      b,
      arith::MulIOp::create(b, gpu::BlockIdOp::create(b, gpu::Dimension::x),
                            arith::ConstantIndexOp::create(b, kElementwiseThreads)),
      gpu::ThreadIdOp::create(b, gpu::Dimension::x));
  Value n = entry.getArguments().back();
  auto inRange = scf::IfOp::create(
      b, arith::CmpIOp::create(b, arith::CmpIPredicate::ult, i, n), false);
  b.setInsertionPointToStart(inRange.thenBlock());
  body(b, entry, i);
  b.setInsertionPointToEnd(&entry);
  gpu::ReturnOp::create(b);
  return func;
}
} // namespace

gpu::GPUFuncOp buildFillZeroKernel(OpBuilder &b, Location loc, StringRef name,
                                   Type element) {
  return buildPerElement(
      b, loc, name, {flat(element)},
      [&](ImplicitLocOpBuilder &ib, Block &entry, Value i) {
        Value zero = arith::ConstantOp::create(ib, ib.getZeroAttr(element));
        memref::StoreOp::create(ib, zero, entry.getArgument(0), ValueRange{i});
      });
}

gpu::GPUFuncOp buildConvertKernel(OpBuilder &b, Location loc, StringRef name,
                                  Type from, Type to) {
  return buildPerElement(
      b, loc, name, {flat(from), flat(to)},
      [&](ImplicitLocOpBuilder &ib, Block &entry, Value i) {
        Value v = memref::LoadOp::create(ib, entry.getArgument(0), ValueRange{i});
        unsigned fw = from.getIntOrFloatBitWidth(), tw = to.getIntOrFloatBitWidth();
        if (fw > tw)
          v = arith::TruncFOp::create(ib, to, v);
        else if (fw < tw)
          v = arith::ExtFOp::create(ib, to, v);
        memref::StoreOp::create(ib, v, entry.getArgument(1), ValueRange{i});
      });
}

} // namespace qtune
