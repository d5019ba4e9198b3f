//===- DecoderKernels.cpp - GPU kernels of the decoder ops -----------------===//

#include "qtune/Conversion/QTuneToGPU/DecoderKernels.h"
#include "qtune/Conversion/QTuneToGPU/ElementwiseKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

#include <cmath>
#include <limits>

using namespace mlir;

namespace qtune {

namespace {
using namespace kernel;

Value iadd(B &b, Value x, Value y) { return arith::AddIOp::create(b, x, y); }
Value imul(B &b, Value x, int64_t y) {
  return arith::MulIOp::create(b, x, index(b, y));
}
Value idiv(B &b, Value x, int64_t y) {
  return arith::DivUIOp::create(b, x, index(b, y));
}
Value irem(B &b, Value x, int64_t y) {
  return arith::RemUIOp::create(b, x, index(b, y));
}
Value ult(B &b, Value x, Value y) {
  return arith::CmpIOp::create(b, arith::CmpIPredicate::ult, x, y);
}
Value select(B &b, Value c, Value x, Value y) {
  return arith::SelectOp::create(b, c, x, y);
}
Value indexToF32(B &b, Value i) {
  return arith::UIToFPOp::create(
      b, b.getF32Type(), arith::IndexCastUIOp::create(b, b.getI32Type(), i));
}
Value tid(B &b) { return gpu::ThreadIdOp::create(b, gpu::Dimension::x); }

/// A loop from `lb` to `ub` by `step` carrying `inits`; `body` returns the
/// next values. Returns the final ones.
SmallVector<Value>
loop(B &b, Value lb, Value ub, Value step, ValueRange inits,
     function_ref<SmallVector<Value>(B &, Value, ValueRange)> body) {
  auto op = scf::ForOp::create(
      b, lb, ub, step, inits,
      [&](OpBuilder &ob, Location l, Value iv, ValueRange iter) {
        B lb2(l, ob);
        scf::YieldOp::create(lb2, body(lb2, iv, iter));
      });
  return SmallVector<Value>(op.getResults());
}

/// Σ over j = tid, tid + 256, ... < n of value(j): this thread's part.
Value stridedSum(B &b, int64_t n, function_ref<Value(B &, Value)> value) {
  return loop(b, tid(b), index(b, n), index(b, kElementwiseThreads),
              ValueRange{f32(b, 0)},
              [&](B &lb, Value j, ValueRange acc) -> SmallVector<Value> {
                return {add(lb, acc[0], value(lb, j))};
              })[0];
}
void stridedFor(B &b, int64_t n, function_ref<void(B &, Value)> body) {
  loop(b, tid(b), index(b, n), index(b, kElementwiseThreads), ValueRange{},
       [&](B &lb, Value j, ValueRange) -> SmallVector<Value> {
         body(lb, j);
         return {};
       });
}

/// 1 / sqrt(sum / d + eps).
Value rmsFactor(B &b, Value sumsq, int64_t d, double eps) {
  return div(b, f32(b, 1),
             sqrtF32(b, add(b, mul(b, sumsq, f32(b, 1.0 / double(d))),
                            f32(b, eps))));
}

Value sigmoid(B &b, Value x) {
  return div(b, f32(b, 1), add(b, f32(b, 1), expF32(b, arith::NegFOp::create(b, x))));
}
} // namespace

gpu::GPUFuncOp buildEmbeddingKernel(OpBuilder &builder, Location loc,
                                    StringRef name, Type elt, int64_t d,
                                    int64_t v) {
  Type i32 = builder.getI32Type();
  return buildPerElementKernel(
      builder, loc, name, {flatMemRef(elt), flatMemRef(i32), flatMemRef(elt)},
      [&](B &b, ValueRange a, Value i) {
        Value id = load(b, a[1], idiv(b, i, d));
        id = arith::MinSIOp::create(
            b,
            arith::MaxSIOp::create(b, id, arith::ConstantIntOp::create(b, i32, 0)),
            arith::ConstantIntOp::create(b, i32, v - 1));
        Value row = arith::IndexCastOp::create(b, b.getIndexType(), id);
        memref::StoreOp::create(
            b, load(b, a[0], iadd(b, imul(b, row, d), irem(b, i, d))), a[2],
            ValueRange{i});
      });
}

gpu::GPUFuncOp buildEmbeddingGradKernel(OpBuilder &builder, Location loc,
                                        StringRef name, Type gElt, int64_t d,
                                        int64_t v) {
  Type i32 = builder.getI32Type();
  return buildPerElementKernel(
      builder, loc, name,
      {flatMemRef(gElt), flatMemRef(i32), flatMemRef(builder.getF32Type())},
      [&](B &b, ValueRange a, Value i) {
        Value id = load(b, a[1], idiv(b, i, d));
        Value valid = arith::AndIOp::create(
            b,
            arith::CmpIOp::create(b, arith::CmpIPredicate::sge, id,
                                  arith::ConstantIntOp::create(b, i32, 0)),
            arith::CmpIOp::create(b, arith::CmpIPredicate::slt, id,
                                  arith::ConstantIntOp::create(b, i32, v)));
        auto inRange = scf::IfOp::create(b, valid, false);
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(inRange.thenBlock());
        Value row = arith::IndexCastOp::create(b, b.getIndexType(), id);
        memref::AtomicRMWOp::create(
            b, arith::AtomicRMWKind::addf, loadF32(b, a[0], i), a[2],
            ValueRange{iadd(b, imul(b, row, d), irem(b, i, d))});
      });
}

gpu::GPUFuncOp buildRmsNormKernel(OpBuilder &builder, Location loc,
                                  StringRef name, Type xElt, Type wElt,
                                  int64_t d, double eps) {
  return buildRowKernel(
      builder, loc, name, {flatMemRef(xElt), flatMemRef(wElt), flatMemRef(xElt)},
      [&](B &b, ValueRange a, Value row, Value scratch) {
        Value base = imul(b, row, d);
        Value ss = stridedSum(b, d, [&](B &lb, Value j) {
          Value x = loadF32(lb, a[0], iadd(lb, base, j));
          return mul(lb, x, x);
        });
        Value r = rmsFactor(b, blockReduce(b, ss, false, scratch), d, eps);
        stridedFor(b, d, [&](B &lb, Value j) {
          Value at = iadd(lb, base, j);
          // As transformers: the normalized row in x's type, then the weight.
          Value n = roundedTo(lb, mul(lb, loadF32(lb, a[0], at), r), xElt);
          storeAs(lb, mul(lb, n, loadF32(lb, a[1], j)), a[2], at);
        });
      });
}

gpu::GPUFuncOp buildRmsNormGradKernel(OpBuilder &builder, Location loc,
                                      StringRef name, Type gElt, Type xElt,
                                      Type wElt, Type dxElt, int64_t d,
                                      double eps) {
  return buildRowKernel(
      builder, loc, name,
      {flatMemRef(gElt), flatMemRef(xElt), flatMemRef(wElt), flatMemRef(dxElt)},
      [&](B &b, ValueRange a, Value row, Value scratch) {
        Value base = imul(b, row, d);
        Value ss = stridedSum(b, d, [&](B &lb, Value j) {
          Value x = loadF32(lb, a[1], iadd(lb, base, j));
          return mul(lb, x, x);
        });
        Value ux = stridedSum(b, d, [&](B &lb, Value j) {
          Value at = iadd(lb, base, j);
          return mul(lb, mul(lb, loadF32(lb, a[0], at), loadF32(lb, a[2], j)),
                     loadF32(lb, a[1], at));
        });
        Value r = rmsFactor(b, blockReduce(b, ss, false, scratch), d, eps);
        ux = blockReduce(b, ux, false, scratch);
        // dx = r·g·w − r³·x·(Σ g·w·x)/d
        Value k = mul(b, mul(b, mul(b, r, r), r), mul(b, ux, f32(b, 1.0 / double(d))));
        stridedFor(b, d, [&](B &lb, Value j) {
          Value at = iadd(lb, base, j);
          Value gw = mul(lb, loadF32(lb, a[0], at), loadF32(lb, a[2], j));
          storeAs(lb, sub(lb, mul(lb, r, gw), mul(lb, k, loadF32(lb, a[1], at))),
                  a[3], at);
        });
      });
}

gpu::GPUFuncOp buildRmsFactorKernel(OpBuilder &builder, Location loc,
                                    StringRef name, Type xElt, int64_t d,
                                    double eps) {
  return buildRowKernel(
      builder, loc, name, {flatMemRef(xElt), flatMemRef(builder.getF32Type())},
      [&](B &b, ValueRange a, Value row, Value scratch) {
        Value base = imul(b, row, d);
        Value ss = stridedSum(b, d, [&](B &lb, Value j) {
          Value x = loadF32(lb, a[0], iadd(lb, base, j));
          return mul(lb, x, x);
        });
        Value r = rmsFactor(b, blockReduce(b, ss, false, scratch), d, eps);
        inFirstThread(b, [&] { memref::StoreOp::create(b, r, a[1], ValueRange{row}); });
      });
}

gpu::GPUFuncOp buildRmsNormWeightGradKernel(OpBuilder &builder, Location loc,
                                            StringRef name, Type gElt,
                                            Type xElt, Type dwElt, int64_t d,
                                            int64_t rows) {
  return buildPerElementKernel(
      builder, loc, name,
      {flatMemRef(gElt), flatMemRef(xElt), flatMemRef(builder.getF32Type()),
       flatMemRef(dwElt)},
      [&](B &b, ValueRange a, Value j) {
        Value sum = loop(b, index(b, 0), index(b, rows), index(b, 1),
                         ValueRange{f32(b, 0)},
                         [&](B &lb, Value r, ValueRange acc) -> SmallVector<Value> {
                           Value at = iadd(lb, imul(lb, r, d), j);
                           Value t = mul(lb, mul(lb, loadF32(lb, a[0], at),
                                                 loadF32(lb, a[1], at)),
                                         load(lb, a[2], r));
                           return {add(lb, acc[0], t)};
                         })[0];
        storeAs(b, sum, a[3], j);
      });
}

gpu::GPUFuncOp buildRopeKernel(OpBuilder &builder, Location loc, StringRef name,
                               Type elt, int64_t width, int64_t seq,
                               int64_t headDim, double theta, bool inverse) {
  int64_t half = headDim / 2, pairsPerRow = width / 2;
  return buildPerElementKernel(
      builder, loc, name, {flatMemRef(elt), flatMemRef(elt)},
      [&](B &b, ValueRange a, Value i) {
        Value row = idiv(b, i, pairsPerRow), rem = irem(b, i, pairsPerRow);
        Value head = idiv(b, rem, half), j = irem(b, rem, half);
        // f_j = theta^(−2j/headDim) = 2^(j · (−2·log2(theta)/headDim)).
        Value invFreq = exp2F32(
            b, mul(b, indexToF32(b, j),
                   f32(b, -2.0 * std::log2(theta) / double(headDim))));
        Value angle = mul(b, indexToF32(b, irem(b, row, seq)), invFreq);
        auto [s, c] = sinCosF32(b, angle);
        if (inverse)
          s = arith::NegFOp::create(b, s);
        // transformers rounds cos and sin to the activations' type.
        c = roundedTo(b, c, elt);
        s = roundedTo(b, s, elt);
        Value lo = iadd(b, iadd(b, imul(b, row, width), imul(b, head, headDim)), j);
        Value hi = iadd(b, lo, index(b, half));
        Value x0 = loadF32(b, a[0], lo), x1 = loadF32(b, a[0], hi);
        storeAs(b, sub(b, mul(b, x0, c), mul(b, x1, s)), a[1], lo);
        storeAs(b, add(b, mul(b, x1, c), mul(b, x0, s)), a[1], hi);
      });
}

gpu::GPUFuncOp buildSwigluKernel(OpBuilder &builder, Location loc,
                                 StringRef name, Type elt) {
  return buildPerElementKernel(
      builder, loc, name, {flatMemRef(elt), flatMemRef(elt), flatMemRef(elt)},
      [&](B &b, ValueRange a, Value i) {
        Value g = loadF32(b, a[0], i);
        // silu(gate) in the activations' type, then times up (transformers).
        Value silu = roundedTo(b, mul(b, g, sigmoid(b, g)), elt);
        storeAs(b, mul(b, silu, loadF32(b, a[1], i)), a[2], i);
      });
}

gpu::GPUFuncOp buildSwigluGradKernel(OpBuilder &builder, Location loc,
                                     StringRef name, Type elt) {
  return buildPerElementKernel(
      builder, loc, name,
      {flatMemRef(elt), flatMemRef(elt), flatMemRef(elt), flatMemRef(elt),
       flatMemRef(elt)},
      [&](B &b, ValueRange a, Value i) {
        Value g = loadF32(b, a[0], i), u = loadF32(b, a[1], i),
              dy = loadF32(b, a[2], i);
        Value s = sigmoid(b, g);
        Value ds = add(b, f32(b, 1), mul(b, g, sub(b, f32(b, 1), s)));
        storeAs(b, mul(b, mul(b, mul(b, dy, u), s), ds), a[3], i);
        storeAs(b, mul(b, mul(b, dy, g), s), a[4], i);
      });
}

} // namespace qtune
