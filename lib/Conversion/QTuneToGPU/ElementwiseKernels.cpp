//===- ElementwiseKernels.cpp - per-element and reduction GPU kernels -------===//

#include "qtune/Conversion/QTuneToGPU/ElementwiseKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

#include <cmath>

using namespace mlir;

namespace qtune {

namespace {
constexpr int64_t kWarps = kElementwiseThreads / 32;

Value globalIndex(ImplicitLocOpBuilder &b) {
  return arith::AddIOp::create(
      b,
      arith::MulIOp::create(b, gpu::BlockIdOp::create(b, gpu::Dimension::x),
                            arith::ConstantIndexOp::create(b, kElementwiseThreads)),
      gpu::ThreadIdOp::create(b, gpu::Dimension::x));
}
} // namespace

gpu::GPUFuncOp
buildKernel(OpBuilder &builder, Location loc, StringRef name,
            ArrayRef<Type> args, TypeRange workgroup,
            function_ref<void(ImplicitLocOpBuilder &, ValueRange, ValueRange)>
                body) {
  SmallVector<Type> types(args);
  types.push_back(builder.getIndexType());
  auto func = gpu::GPUFuncOp::create(
      builder, loc, name, FunctionType::get(builder.getContext(), types, {}),
      workgroup, TypeRange{});
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), builder.getUnitAttr());
  func.setKnownBlockSizeAttr(builder.getDenseI32ArrayAttr(
      {int32_t(kElementwiseThreads), 1, 1}));
  Block &entry = func.getBody().front();
  ImplicitLocOpBuilder b(loc, builder.getContext());
  b.setInsertionPointToStart(&entry);
  body(b, entry.getArguments().take_front(func.getFunctionType().getNumInputs()),
       func.getWorkgroupAttributions());
  b.setInsertionPointToEnd(&entry);
  gpu::ReturnOp::create(b);
  return func;
}

MemRefType flatMemRef(Type element) {
  return MemRefType::get({ShapedType::kDynamic}, element);
}

void inFirstThread(ImplicitLocOpBuilder &b, function_ref<void()> body) {
  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  auto first = scf::IfOp::create(
      b,
      arith::CmpIOp::create(b, arith::CmpIPredicate::eq, tid,
                            arith::ConstantIndexOp::create(b, 0)),
      false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(first.thenBlock());
  body();
}

Value roundEvenF32(ImplicitLocOpBuilder &b, Value x) {
  Value magic = arith::ConstantOp::create(b, b.getF32FloatAttr(12582912.0f));
  return arith::SubFOp::create(b, arith::AddFOp::create(b, x, magic), magic);
}

Value toF32(ImplicitLocOpBuilder &b, Value v) {
  unsigned w = v.getType().getIntOrFloatBitWidth();
  if (v.getType().isF32())
    return v;
  return w < 32 ? Value(arith::ExtFOp::create(b, b.getF32Type(), v))
                : Value(arith::TruncFOp::create(b, b.getF32Type(), v));
}

Value fromF32(ImplicitLocOpBuilder &b, Value v, Type to) {
  if (to.isF32())
    return v;
  return to.getIntOrFloatBitWidth() < 32
             ? Value(arith::TruncFOp::create(b, to, v))
             : Value(arith::ExtFOp::create(b, to, v));
}

/// The kernel's memref arguments as 16-byte aligned views: every buffer a
/// bundle passes starts 16-byte aligned, and saying so lets LLVM merge the
/// loads and stores of consecutive elements into vector accesses.
SmallVector<Value> alignedArguments(ImplicitLocOpBuilder &b, ValueRange args) {
  SmallVector<Value> out;
  for (Value a : args)
    out.push_back(isa<MemRefType>(a.getType())
                      ? Value(memref::AssumeAlignmentOp::create(b, a, 16))
                      : a);
  return out;
}

gpu::GPUFuncOp buildPerElementKernel(
    OpBuilder &builder, Location loc, StringRef name, ArrayRef<Type> args,
    function_ref<void(ImplicitLocOpBuilder &, ValueRange, Value)> body) {
  gpu::GPUFuncOp func = buildKernel(
      builder, loc, name, args, {},
      [&](ImplicitLocOpBuilder &b, ValueRange arguments, ValueRange) {
        Value n = arguments.back();
        SmallVector<Value> aligned = alignedArguments(b, arguments.drop_back());
        auto c = [&](int64_t v) { return arith::ConstantIndexOp::create(b, v); };
        Value first = arith::MulIOp::create(b, globalIndex(b),
                                            c(kElementsPerThread));
        Value end = arith::AddIOp::create(b, first, c(kElementsPerThread));
        // A whole run: straight-line code (consecutive, aligned accesses);
        // the last, partial run: a loop with the bound.
        auto whole = scf::IfOp::create(
            b, arith::CmpIOp::create(b, arith::CmpIPredicate::ule, end, n),
            /*withElseRegion=*/true);
        {
          OpBuilder::InsertionGuard g(b);
          b.setInsertionPointToStart(whole.thenBlock());
          for (int64_t e = 0; e < kElementsPerThread; ++e)
            body(b, aligned, arith::AddIOp::create(b, first, c(e)));
          // The stores go last, so every load of the run comes first and
          // merges with its neighbours (LLVM cannot prove that a store of
          // element e leaves the load of element e + 1 alone; the body's
          // contract does).
          SmallVector<Operation *> stores;
          for (Operation &op : whole.thenBlock()->without_terminator())
            if (isa<memref::StoreOp>(op))
              stores.push_back(&op);
          for (Operation *op : stores)
            op->moveBefore(whole.thenBlock()->getTerminator());
          b.setInsertionPointToStart(whole.elseBlock());
          scf::ForOp::create(
              b, first, arith::MinUIOp::create(b, end, n), c(1), ValueRange{},
              [&](OpBuilder &ob, Location l, Value i, ValueRange) {
                ImplicitLocOpBuilder lb(l, ob);
                body(lb, aligned, i);
                scf::YieldOp::create(lb);
              });
        }
      });
  func->setAttr(kElementsPerThreadAttr,
                builder.getI64IntegerAttr(kElementsPerThread));
  return func;
}

Value blockReduce(ImplicitLocOpBuilder &b, Value v, bool max, Value scratch) {
  auto warpReduce = [&](Value x) { return kernel::warpReduce(b, x, max); };
  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  Value c32 = arith::ConstantIndexOp::create(b, 32);
  Value c0 = arith::ConstantIndexOp::create(b, 0);
  Value warp = arith::DivUIOp::create(b, tid, c32);
  Value lane = arith::RemUIOp::create(b, tid, c32);
  v = warpReduce(v);
  // The previous reduction's readers are done before scratch is rewritten.
  gpu::BarrierOp::create(b);
  auto first = scf::IfOp::create(
      b, arith::CmpIOp::create(b, arith::CmpIPredicate::eq, lane, c0), false);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(first.thenBlock());
    memref::StoreOp::create(b, v, scratch, ValueRange{warp});
  }
  gpu::BarrierOp::create(b);
  // Every warp reduces the per-warp partials (lanes past the warp count
  // contribute the identity), so every thread ends with the total.
  Value identity = arith::ConstantOp::create(
      b, b.getF32FloatAttr(max ? -std::numeric_limits<float>::infinity() : 0.f));
  Value inWarps = arith::CmpIOp::create(
      b, arith::CmpIPredicate::ult, lane, arith::ConstantIndexOp::create(b, kWarps));
  auto partial = scf::IfOp::create(b, b.getF32Type(), inWarps, true);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(partial.thenBlock());
    scf::YieldOp::create(
        b, ValueRange{memref::LoadOp::create(b, scratch, ValueRange{lane})});
    b.setInsertionPointToStart(partial.elseBlock());
    scf::YieldOp::create(b, identity);
  }
  return warpReduce(partial.getResult(0));
}

gpu::GPUFuncOp buildSumKernel(
    OpBuilder &builder, Location loc, StringRef name, ArrayRef<Type> args,
    function_ref<Value(ImplicitLocOpBuilder &, ValueRange, Value)> value) {
  return buildSumKernelByRuns(
      builder, loc, name, args,
      [&](ImplicitLocOpBuilder &b, ValueRange inputs, Value first,
          int64_t count) {
        Value sum = value(b, inputs, first);
        for (int64_t e = 1; e < count; ++e)
          sum = arith::AddFOp::create(
              b, sum,
              value(b, inputs,
                    arith::AddIOp::create(
                        b, first, arith::ConstantIndexOp::create(b, e))));
        return sum;
      });
}

gpu::GPUFuncOp buildSumKernelByRuns(
    OpBuilder &builder, Location loc, StringRef name, ArrayRef<Type> args,
    function_ref<Value(ImplicitLocOpBuilder &, ValueRange, Value, int64_t)>
        run) {
  SmallVector<Type> types(args);
  types.push_back(flatMemRef(builder.getF32Type()));
  auto workgroup = gpu::AddressSpaceAttr::get(builder.getContext(),
                                              gpu::AddressSpace::Workgroup);
  auto scratchType = MemRefType::get({kWarps}, builder.getF32Type(),
                                     MemRefLayoutAttrInterface(), workgroup);
  return buildKernel(
      builder, loc, name, types, scratchType,
      [&](ImplicitLocOpBuilder &b, ValueRange arguments, ValueRange workgroup) {
        Value n = arguments.back();
        SmallVector<Value> aligned =
            alignedArguments(b, arguments.drop_back(2));
        ValueRange inputs = aligned;
        Value out = arguments[arguments.size() - 2];
        auto c = [&](int64_t v) { return arith::ConstantIndexOp::create(b, v); };
        // Grid-stride: each thread sums its elements first, so a grid of a
        // few hundred blocks covers any n with one atomic per block. Whole
        // runs of kElementsPerThread consecutive elements first (straight-line
        // code, vector loads), then the remainder one by one.
        Value threads = arith::MulIOp::create(
            b, gpu::GridDimOp::create(b, gpu::Dimension::x),
            c(kElementwiseThreads));
        Value runs = arith::DivUIOp::create(b, n, c(kElementsPerThread));
        Value zero = arith::ConstantOp::create(b, b.getF32FloatAttr(0));
        auto runLoop = scf::ForOp::create(
            b, globalIndex(b), runs, threads, ValueRange{zero},
            [&](OpBuilder &ob, Location l, Value r, ValueRange iter) {
              ImplicitLocOpBuilder lb(l, ob);
              Value first = arith::MulIOp::create(lb, r, c(kElementsPerThread));
              Value sum = arith::AddFOp::create(
                  lb, iter[0], run(lb, inputs, first, kElementsPerThread));
              scf::YieldOp::create(lb, ValueRange{sum});
            });
        auto tail = scf::ForOp::create(
            b,
            arith::AddIOp::create(
                b, arith::MulIOp::create(b, runs, c(kElementsPerThread)),
                globalIndex(b)),
            n, threads, ValueRange{runLoop.getResult(0)},
            [&](OpBuilder &ob, Location l, Value i, ValueRange iter) {
              ImplicitLocOpBuilder lb(l, ob);
              scf::YieldOp::create(
                  lb, ValueRange{arith::AddFOp::create(lb, iter[0],
                                                      run(lb, inputs, i, 1))});
            });
        Value total =
            blockReduce(b, tail.getResult(0), /*max=*/false, workgroup[0]);
        inFirstThread(b, [&] {
          memref::AtomicRMWOp::create(
              b, arith::AtomicRMWKind::addf, total, out,
              ValueRange{arith::ConstantIndexOp::create(b, 0)});
        });
      });
}

gpu::GPUFuncOp buildFillKernel(OpBuilder &b, Location loc, StringRef name,
                               Type element, double value) {
  return buildPerElementKernel(
      b, loc, name, {flatMemRef(element)},
      [&](ImplicitLocOpBuilder &ib, ValueRange args, Value i) {
        TypedAttr attr = isa<FloatType>(element)
                             ? TypedAttr(ib.getFloatAttr(element, value))
                             : TypedAttr(ib.getIntegerAttr(element, int64_t(value)));
        Value v = arith::ConstantOp::create(ib, attr);
        memref::StoreOp::create(ib, v, args[0], ValueRange{i});
      });
}

gpu::GPUFuncOp buildSumSlicesKernel(OpBuilder &b, Location loc, StringRef name,
                                    int64_t count, int64_t stride, Type to) {
  return buildPerElementKernel(
      b, loc, name, {flatMemRef(b.getF32Type()), flatMemRef(to)},
      [&](ImplicitLocOpBuilder &ib, ValueRange args, Value i) {
        Value n = arith::ConstantIndexOp::create(ib, stride);
        Value sum;
        for (int64_t z = 0; z < count; ++z) {
          Value at = arith::AddIOp::create(
              ib, arith::MulIOp::create(ib, arith::ConstantIndexOp::create(ib, z), n),
              i);
          Value v = memref::LoadOp::create(ib, args[0], ValueRange{at});
          sum = sum ? Value(arith::AddFOp::create(ib, sum, v)) : v;
        }
        memref::StoreOp::create(ib, fromF32(ib, sum, to), args[1], ValueRange{i});
      });
}

gpu::GPUFuncOp buildConvertKernel(OpBuilder &b, Location loc, StringRef name,
                                  Type from, Type to) {
  return buildPerElementKernel(
      b, loc, name, {flatMemRef(from), flatMemRef(to)},
      [&](ImplicitLocOpBuilder &ib, ValueRange args, Value i) {
        Value v = memref::LoadOp::create(ib, args[0], ValueRange{i});
        memref::StoreOp::create(ib, fromF32(ib, toF32(ib, v), to), args[1],
                                ValueRange{i});
      });
}

gpu::GPUFuncOp buildRowKernel(
    OpBuilder &b, Location loc, StringRef name, ArrayRef<Type> args,
    function_ref<void(ImplicitLocOpBuilder &, ValueRange, Value, Value)> body) {
  auto workgroup =
      gpu::AddressSpaceAttr::get(b.getContext(), gpu::AddressSpace::Workgroup);
  auto scratch = MemRefType::get({kElementwiseThreads / 32}, b.getF32Type(),
                                 MemRefLayoutAttrInterface(), workgroup);
  return buildKernel(b, loc, name, args, scratch,
                     [&](ImplicitLocOpBuilder &ib, ValueRange a, ValueRange wg) {
                       body(ib, a, gpu::BlockIdOp::create(ib, gpu::Dimension::x),
                            wg[0]);
                     });
}

namespace kernel {
Value f32(B &b, double v) {
  return arith::ConstantOp::create(b, b.getF32FloatAttr(float(v)));
}
Value index(B &b, int64_t v) { return arith::ConstantIndexOp::create(b, v); }
Value load(B &b, Value memref, Value i) {
  return memref::LoadOp::create(b, memref, ValueRange{i});
}
Value loadF32(B &b, Value memref, Value i) { return toF32(b, load(b, memref, i)); }
Value scalar(B &b, Value memref) { return load(b, memref, index(b, 0)); }
void storeAs(B &b, Value v, Value memref, Value i) {
  Type element = cast<MemRefType>(memref.getType()).getElementType();
  memref::StoreOp::create(b, fromF32(b, v, element), memref, ValueRange{i});
}
Value add(B &b, Value x, Value y) { return arith::AddFOp::create(b, x, y); }
Value sub(B &b, Value x, Value y) { return arith::SubFOp::create(b, x, y); }
Value mul(B &b, Value x, Value y) { return arith::MulFOp::create(b, x, y); }
Value div(B &b, Value x, Value y) { return arith::DivFOp::create(b, x, y); }
Value intrinsic(B &b, StringRef name, Value x) {
  return LLVM::CallIntrinsicOp::create(b, x.getType(), b.getStringAttr(name),
                                       ValueRange{x})
      .getResult(0);
}
Value sqrtF32(B &b, Value x) { return intrinsic(b, "llvm.nvvm.sqrt.rn.f", x); }
Value exp2F32(B &b, Value x) {
  return intrinsic(b, "llvm.nvvm.ex2.approx.f32", x);
}
Value log2F32(B &b, Value x) { return intrinsic(b, "llvm.nvvm.lg2.approx.f", x); }
Value expF32(B &b, Value x) { return exp2F32(b, mul(b, x, f32(b, M_LOG2E))); }
std::pair<Value, Value> sinCosF32(B &b, Value x) {
  // x − 2π·round(x / 2π), with 2π split in a head exact in f32 and a tail.
  const double twoPi = 2 * M_PI;
  const float head = float(twoPi);
  const double tail = twoPi - double(head);
  Value k = roundEvenF32(b, mul(b, x, f32(b, 1 / twoPi)));
  Value r = sub(b, sub(b, x, mul(b, k, f32(b, head))), mul(b, k, f32(b, tail)));
  return {intrinsic(b, "llvm.nvvm.sin.approx.f", r),
          intrinsic(b, "llvm.nvvm.cos.approx.f", r)};
}
Value warpReduce(B &b, Value v, bool max) {
  for (int32_t offset = 16; offset > 0; offset /= 2) {
    Value other =
        gpu::ShuffleOp::create(b, v, offset, 32, gpu::ShuffleMode::XOR)
            .getShuffleResult();
    v = max ? Value(arith::MaximumFOp::create(b, v, other)) : add(b, v, other);
  }
  return v;
}
Value laneValue(B &b, Value v, int64_t lane) {
  return gpu::ShuffleOp::create(b, v, int32_t(lane), 32, gpu::ShuffleMode::IDX)
      .getShuffleResult();
}
void ifFinite(B &b, Value x, function_ref<void()> body) {
  Value ok = arith::CmpFOp::create(b, arith::CmpFPredicate::OEQ, sub(b, x, x),
                                   f32(b, 0));
  auto op = scf::IfOp::create(b, ok, false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(op.thenBlock());
  body();
}
Value roundedTo(B &b, Value v, Type type) {
  if (type.isF32())
    return v;
  return toF32(b, fromF32(b, v, type));
}
} // namespace kernel

} // namespace qtune
