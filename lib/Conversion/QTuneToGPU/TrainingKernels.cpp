//===- TrainingKernels.cpp - loss, clipping and optimizer GPU kernels -------===//

#include "qtune/Conversion/QTuneToGPU/TrainingKernels.h"
#include "qtune/Conversion/QTuneToGPU/ElementwiseKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

#include <cmath>
#include <limits>

using namespace mlir;

namespace qtune {

namespace {
using B = ImplicitLocOpBuilder;
using namespace kernel;

/// The argument types, plus the loss when the kernel is guarded.
SmallVector<Type> withGuard(OpBuilder &b, const OptimizerHyper &h,
                            SmallVector<Type> args) {
  if (h.guarded)
    args.push_back(flatMemRef(b.getF32Type()));
  return args;
}
/// Builds `update` under the guard (the last of `args`) when there is one.
void guardedBy(B &b, const OptimizerHyper &h, ValueRange args,
               function_ref<void()> update) {
  if (h.guarded)
    ifFinite(b, scalar(b, args.back()), update);
  else
    update();
}
/// β·x + (1 − β)·y.
Value mix(B &b, double beta, Value x, Value y) {
  return add(b, mul(b, f32(b, beta), x), mul(b, f32(b, 1 - beta), y));
}
/// −1, 0 or 1.
Value sign(B &b, Value x) {
  Value zero = f32(b, 0);
  Value pos = arith::CmpFOp::create(b, arith::CmpFPredicate::OGT, x, zero);
  Value neg = arith::CmpFOp::create(b, arith::CmpFPredicate::OLT, x, zero);
  return arith::SelectOp::create(
      b, pos, f32(b, 1), arith::SelectOp::create(b, neg, f32(b, -1), zero));
}
/// p − lr·(sign(c) + wd·p): the Lion parameter update.
Value lionParam(B &b, Value p, Value c, Value lr, double wd) {
  Value step = sign(b, c);
  if (wd != 0)
    step = add(b, step, mul(b, f32(b, wd), p));
  return sub(b, p, mul(b, lr, step));
}
} // namespace

namespace {
/// p[i] − t[i] of an MSE kernel's arguments (p, t, ...).
Value mseDifference(B &b, ValueRange args, Value i) {
  return sub(b, loadF32(b, args[0], i), loadF32(b, args[1], i));
}
/// 2 / count · g[0]: the factor of the difference in the MSE gradient, from
/// the arguments (p, t, g, r).
Value mseGradFactor(B &b, ValueRange args, int64_t count) {
  return mul(b, scalar(b, args[2]), f32(b, 2.0 / double(count)));
}
/// The argument types of an MSE gradient kernel: (p, t, g: f32, r).
SmallVector<Type> mseGradArgs(OpBuilder &b, Type pElt, Type tElt, Type rElt) {
  return {flatMemRef(pElt), flatMemRef(tElt), flatMemRef(b.getF32Type()),
          flatMemRef(rElt)};
}
} // namespace

gpu::GPUFuncOp buildMseLossKernel(OpBuilder &b, Location loc, StringRef name,
                                  Type pElt, Type tElt, int64_t count) {
  return buildSumKernel(
      b, loc, name, {flatMemRef(pElt), flatMemRef(tElt)},
      [&](B &ib, ValueRange args, Value i) {
        Value d = mseDifference(ib, args, i);
        return mul(ib, mul(ib, d, d), f32(ib, 1.0 / double(count)));
      });
}

gpu::GPUFuncOp buildMseLossGradKernel(OpBuilder &b, Location loc,
                                      StringRef name, Type pElt, Type tElt,
                                      Type rElt, int64_t count) {
  return buildPerElementKernel(
      b, loc, name, mseGradArgs(b, pElt, tElt, rElt),
      [&](B &ib, ValueRange args, Value i) {
        storeAs(ib, mul(ib, mseDifference(ib, args, i),
                        mseGradFactor(ib, args, count)),
                args[3], i);
      });
}

gpu::GPUFuncOp buildMseLossAndGradKernel(OpBuilder &b, Location loc,
                                         StringRef name, Type pElt, Type tElt,
                                         Type rElt, int64_t count) {
  return buildSumKernelByRuns(
      b, loc, name, mseGradArgs(b, pElt, tElt, rElt),
      [&](B &ib, ValueRange args, Value first, int64_t n) {
        // The run's loads, then its stores (merged into 16-byte accesses).
        SmallVector<Value> index, d;
        for (int64_t e = 0; e < n; ++e) {
          index.push_back(arith::AddIOp::create(
              ib, first, arith::ConstantIndexOp::create(ib, e)));
          d.push_back(mseDifference(ib, args, index.back()));
        }
        Value g = mseGradFactor(ib, args, count);
        Value sum = f32(ib, 0);
        for (int64_t e = 0; e < n; ++e) {
          storeAs(ib, mul(ib, d[e], g), args[3], index[e]);
          sum = add(ib, sum, mul(ib, d[e], d[e]));
        }
        return mul(ib, sum, f32(ib, 1.0 / double(count)));
      });
}

namespace {
/// The row's max and log-sum-exp over its `v` logits (block-strided loops and
/// block reductions; every thread gets both).
std::pair<Value, Value> rowLogSumExp(B &b, Value logits, Value rowBase,
                                     int64_t v, Value scratch) {
  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  Value end = arith::ConstantIndexOp::create(b, v);
  Value step = arith::ConstantIndexOp::create(b, kElementwiseThreads);
  auto strided = [&](Value init, function_ref<Value(B &, Value, Value)> body) {
    return scf::ForOp::create(
               b, tid, end, step, ValueRange{init},
               [&](OpBuilder &ob, Location l, Value j, ValueRange iter) {
                 B lb(l, ob);
                 Value x = loadF32(lb, logits, arith::AddIOp::create(lb, rowBase, j));
                 scf::YieldOp::create(lb, ValueRange{body(lb, iter[0], x)});
               })
        .getResult(0);
  };
  Value mx = blockReduce(
      b,
      strided(f32(b, -std::numeric_limits<float>::infinity()),
              [](B &lb, Value acc, Value x) -> Value {
                return arith::MaximumFOp::create(lb, acc, x);
              }),
      /*max=*/true, scratch);
  Value sum = blockReduce(
      b,
      strided(f32(b, 0),
              [&](B &lb, Value acc, Value x) -> Value {
                return add(lb, acc, exp2F32(lb, mul(lb, sub(lb, x, mx),
                                                   f32(lb, M_LOG2E))));
              }),
      /*max=*/false, scratch);
  Value lse = add(b, mx, mul(b, intrinsic(b, "llvm.nvvm.lg2.approx.f", sum),
                             f32(b, M_LN2)));
  return {mx, lse};
}

/// Calls fn(j, at) for the columns j of a row this thread takes (strided by
/// the block), `at` = rowBase + j.
void forEachInRow(B &b, Value rowBase, int64_t v,
                  function_ref<void(B &, Value, Value)> fn) {
  scf::ForOp::create(
      b, gpu::ThreadIdOp::create(b, gpu::Dimension::x),
      arith::ConstantIndexOp::create(b, v),
      arith::ConstantIndexOp::create(b, kElementwiseThreads), ValueRange{},
      [&](OpBuilder &ob, Location l, Value j, ValueRange) {
        B lb(l, ob);
        fn(lb, j, arith::AddIOp::create(lb, rowBase, j));
        scf::YieldOp::create(lb);
      });
}

/// p = exp(x − lse), by exp2.
Value probability(B &b, Value x, Value lse) {
  return exp2F32(b, mul(b, sub(b, x, lse), f32(b, M_LOG2E)));
}

/// Whether the label is a valid column, and the label as an index.
std::pair<Value, Value> labelOf(B &b, Value labels, Value row, int64_t v) {
  Value label = memref::LoadOp::create(b, labels, ValueRange{row});
  Value valid = arith::AndIOp::create(
      b,
      arith::CmpIOp::create(b, arith::CmpIPredicate::sge, label,
                            arith::ConstantIntOp::create(b, b.getI32Type(), 0)),
      arith::CmpIOp::create(b, arith::CmpIPredicate::slt, label,
                            arith::ConstantIntOp::create(b, b.getI32Type(), v)));
  Value index = arith::IndexCastOp::create(
      b, b.getIndexType(),
      arith::SelectOp::create(b, valid, label,
                              arith::ConstantIntOp::create(b, b.getI32Type(), 0)));
  return {valid, index};
}
} // namespace

gpu::GPUFuncOp buildCrossEntropyKernel(OpBuilder &b, Location loc,
                                       StringRef name, Type logitElt, int64_t v,
                                       int64_t rows) {
  Type i32 = b.getI32Type();
  return buildRowKernel(
      b, loc, name,
      {flatMemRef(logitElt), flatMemRef(i32), flatMemRef(b.getF32Type())},
      [&](B &ib, ValueRange a, Value row, Value scratch) {
        Value rowBase = arith::MulIOp::create(
            ib, row, arith::ConstantIndexOp::create(ib, v));
        Value lse = rowLogSumExp(ib, a[0], rowBase, v, scratch).second;
        auto [valid, label] = labelOf(ib, a[1], row, v);
        Value picked = loadF32(ib, a[0], arith::AddIOp::create(ib, rowBase, label));
        Value term = mul(ib, sub(ib, lse, picked), f32(ib, 1.0 / double(rows)));
        term = arith::SelectOp::create(
            ib, valid, term, f32(ib, std::numeric_limits<float>::quiet_NaN()));
        inFirstThread(ib, [&] {
          memref::AtomicRMWOp::create(
              ib, arith::AtomicRMWKind::addf, term, a[2],
              ValueRange{arith::ConstantIndexOp::create(ib, 0)});
        });
      });
}

gpu::GPUFuncOp buildCrossEntropyGradKernel(OpBuilder &b, Location loc,
                                           StringRef name, Type logitElt,
                                           Type rElt, int64_t v, int64_t rows) {
  Type i32 = b.getI32Type();
  return buildRowKernel(
      b, loc, name,
      {flatMemRef(logitElt), flatMemRef(i32), flatMemRef(b.getF32Type()),
       flatMemRef(rElt)},
      [&](B &ib, ValueRange a, Value row, Value scratch) {
        Value rowBase = arith::MulIOp::create(
            ib, row, arith::ConstantIndexOp::create(ib, v));
        Value lse = rowLogSumExp(ib, a[0], rowBase, v, scratch).second;
        auto [valid, label] = labelOf(ib, a[1], row, v);
        Value scale = mul(ib, scalar(ib, a[2]), f32(ib, 1.0 / double(rows)));
        scale = arith::SelectOp::create(
            ib, valid, scale, f32(ib, std::numeric_limits<float>::quiet_NaN()));
        forEachInRow(ib, rowBase, v, [&](B &lb, Value j, Value at) {
          Value p = probability(lb, loadF32(lb, a[0], at), lse);
          Value hot = arith::SelectOp::create(
              lb, arith::CmpIOp::create(lb, arith::CmpIPredicate::eq, j, label),
              f32(lb, 1), f32(lb, 0));
          storeAs(lb, mul(lb, sub(lb, p, hot), scale), a[3], at);
        });
      });
}

gpu::GPUFuncOp buildKlDivKernel(OpBuilder &b, Location loc, StringRef name,
                                Type sElt, Type tElt, int64_t v, int64_t rows) {
  return buildRowKernel(
      b, loc, name,
      {flatMemRef(sElt), flatMemRef(tElt), flatMemRef(b.getF32Type())},
      [&](B &ib, ValueRange a, Value row, Value scratch) {
        Value rowBase = arith::MulIOp::create(
            ib, row, arith::ConstantIndexOp::create(ib, v));
        Value lseS = rowLogSumExp(ib, a[0], rowBase, v, scratch).second;
        Value lseT = rowLogSumExp(ib, a[1], rowBase, v, scratch).second;
        // Σ_j p_j·(lt_j − ls_j) with lt − ls = (t − s) − (lseT − lseS).
        Value shift = sub(ib, lseT, lseS);
        Value tid = gpu::ThreadIdOp::create(ib, gpu::Dimension::x);
        Value partial =
            scf::ForOp::create(
                ib, tid, arith::ConstantIndexOp::create(ib, v),
                arith::ConstantIndexOp::create(ib, kElementwiseThreads),
                ValueRange{f32(ib, 0)},
                [&](OpBuilder &ob, Location l, Value j, ValueRange iter) {
                  B lb(l, ob);
                  Value at = arith::AddIOp::create(lb, rowBase, j);
                  Value t = loadF32(lb, a[1], at);
                  Value p = probability(lb, t, lseT);
                  Value diff = sub(lb, sub(lb, t, loadF32(lb, a[0], at)), shift);
                  scf::YieldOp::create(lb, ValueRange{add(lb, iter[0], mul(lb, p, diff))});
                })
                .getResult(0);
        Value sum = blockReduce(ib, partial, /*max=*/false, scratch);
        Value term = mul(ib, sum, f32(ib, 1.0 / double(rows)));
        inFirstThread(ib, [&] {
          memref::AtomicRMWOp::create(
              ib, arith::AtomicRMWKind::addf, term, a[2],
              ValueRange{arith::ConstantIndexOp::create(ib, 0)});
        });
      });
}

gpu::GPUFuncOp buildKlDivGradKernel(OpBuilder &b, Location loc, StringRef name,
                                    Type sElt, Type tElt, Type rElt, int64_t v,
                                    int64_t rows) {
  return buildRowKernel(
      b, loc, name,
      {flatMemRef(sElt), flatMemRef(tElt), flatMemRef(b.getF32Type()),
       flatMemRef(rElt)},
      [&](B &ib, ValueRange a, Value row, Value scratch) {
        Value rowBase = arith::MulIOp::create(
            ib, row, arith::ConstantIndexOp::create(ib, v));
        Value lseS = rowLogSumExp(ib, a[0], rowBase, v, scratch).second;
        Value lseT = rowLogSumExp(ib, a[1], rowBase, v, scratch).second;
        Value scale = mul(ib, scalar(ib, a[2]), f32(ib, 1.0 / double(rows)));
        forEachInRow(ib, rowBase, v, [&](B &lb, Value, Value at) {
          Value q = probability(lb, loadF32(lb, a[0], at), lseS);
          Value p = probability(lb, loadF32(lb, a[1], at), lseT);
          storeAs(lb, mul(lb, sub(lb, q, p), scale), a[3], at);
        });
      });
}

gpu::GPUFuncOp buildSumSquaresKernel(OpBuilder &b, Location loc,
                                     StringRef name, Type element) {
  return buildSumKernel(b, loc, name, {flatMemRef(element)},
                        [&](B &ib, ValueRange args, Value i) {
                          Value g = loadF32(ib, args[0], i);
                          return mul(ib, g, g);
                        });
}

gpu::GPUFuncOp buildClipKernel(OpBuilder &b, Location loc, StringRef name,
                               Type element, double maxNorm) {
  return buildPerElementKernel(
      b, loc, name,
      {flatMemRef(element), flatMemRef(b.getF32Type()), flatMemRef(element)},
      [&](B &ib, ValueRange args, Value i) {
        Value norm = sqrtF32(ib, scalar(ib, args[1]));
        Value factor = arith::MinimumFOp::create(
            ib, f32(ib, 1), div(ib, f32(ib, maxNorm), add(ib, norm, f32(ib, 1e-6))));
        storeAs(ib, mul(ib, loadF32(ib, args[0], i), factor), args[2], i);
      });
}

gpu::GPUFuncOp buildAddKernel(OpBuilder &b, Location loc, StringRef name,
                              Type element, bool multiply) {
  return buildPerElementKernel(
      b, loc, name,
      {flatMemRef(element), flatMemRef(element), flatMemRef(element)},
      [&](B &ib, ValueRange args, Value i) {
        Value x = loadF32(ib, args[0], i), y = loadF32(ib, args[1], i);
        storeAs(ib, multiply ? mul(ib, x, y) : add(ib, x, y), args[2], i);
      });
}

gpu::GPUFuncOp buildGradAccumulateKernel(OpBuilder &b, Location loc,
                                         StringRef name, Type gElt,
                                         bool guarded) {
  OptimizerHyper h;
  h.guarded = guarded;
  Type f = b.getF32Type();
  return buildPerElementKernel(
      b, loc, name, withGuard(b, h, {flatMemRef(f), flatMemRef(gElt)}),
      [&](B &ib, ValueRange args, Value i) {
        guardedBy(ib, h, args, [&] {
          storeAs(ib, add(ib, load(ib, args[0], i), loadF32(ib, args[1], i)),
                  args[0], i);
        });
      });
}

gpu::GPUFuncOp buildGradTakeKernel(OpBuilder &b, Location loc, StringRef name) {
  Type f = b.getF32Type();
  return buildPerElementKernel(
      b, loc, name, {flatMemRef(f), flatMemRef(f), flatMemRef(f)},
      [&](B &ib, ValueRange args, Value i) {
        storeAs(ib, div(ib, load(ib, args[0], i), scalar(ib, args[1])), args[2], i);
        storeAs(ib, f32(ib, 0), args[0], i);
      });
}

gpu::GPUFuncOp buildAdamWKernel(OpBuilder &b, Location loc, StringRef name,
                                Type pElt, Type gElt, const OptimizerHyper &h) {
  Type f = b.getF32Type();
  return buildPerElementKernel(
      b, loc, name,
      withGuard(b, h, {flatMemRef(pElt), flatMemRef(gElt), flatMemRef(f),
                       flatMemRef(f), flatMemRef(f), flatMemRef(f)}),
      [&](B &ib, ValueRange args, Value i) {
        guardedBy(ib, h, args, [&] {
        Value p = loadF32(ib, args[0], i), g = loadF32(ib, args[1], i);
        Value lr = scalar(ib, args[4]), t = scalar(ib, args[5]);
        Value m = mix(ib, h.beta1, load(ib, args[2], i), g);
        Value v = mix(ib, h.beta2, load(ib, args[3], i), mul(ib, g, g));
        // Bias corrections 1 − β^t = 1 − 2^(t·log2 β).
        auto correction = [&](double beta) {
          Value pow = exp2F32(ib, mul(ib, t, f32(ib, std::log2(beta))));
          return sub(ib, f32(ib, 1), pow);
        };
        Value mHat = div(ib, m, correction(h.beta1));
        Value vHat = div(ib, v, correction(h.beta2));
        Value update = div(ib, mHat,
                           add(ib, sqrtF32(ib, vHat), f32(ib, h.eps)));
        if (h.weightDecay != 0)
          update = add(ib, update, mul(ib, f32(ib, h.weightDecay), p));
        storeAs(ib, sub(ib, p, mul(ib, lr, update)), args[0], i);
        storeAs(ib, m, args[2], i);
        storeAs(ib, v, args[3], i);
        });
      });
}

gpu::GPUFuncOp buildLionKernel(OpBuilder &b, Location loc, StringRef name,
                               Type pElt, Type gElt, Type mElt,
                               const OptimizerHyper &h) {
  return buildPerElementKernel(
      b, loc, name,
      withGuard(b, h, {flatMemRef(pElt), flatMemRef(gElt), flatMemRef(mElt),
                       flatMemRef(b.getF32Type())}),
      [&](B &ib, ValueRange args, Value i) {
        guardedBy(ib, h, args, [&] {
        Value p = loadF32(ib, args[0], i), g = loadF32(ib, args[1], i);
        Value m = loadF32(ib, args[2], i);
        Value c = mix(ib, h.beta1, m, g);
        storeAs(ib, lionParam(ib, p, c, scalar(ib, args[3]), h.weightDecay),
                args[0], i);
        storeAs(ib, mix(ib, h.beta2, m, g), args[2], i);
        });
      });
}

gpu::GPUFuncOp buildLionInt8Kernel(OpBuilder &b, Location loc, StringRef name,
                                   Type pElt, Type gElt, int64_t block,
                                   const OptimizerHyper &h) {
  MLIRContext *ctx = b.getContext();
  Type f = b.getF32Type();
  auto workgroup = gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
  auto scratch = MemRefType::get({kElementwiseThreads / 32}, f,
                                 MemRefLayoutAttrInterface(), workgroup);
  return buildKernel(
      b, loc, name,
      withGuard(b, h, {flatMemRef(pElt), flatMemRef(gElt),
                       flatMemRef(b.getI8Type()), flatMemRef(f), flatMemRef(f)}),
      scratch, [&](B &ib, ValueRange args, ValueRange wg) {
        // The guard is uniform: every thread of the block skips or none does.
        guardedBy(ib, h, args.drop_back(), [&] {
        Value pBuf = args[0], gBuf = args[1], mBuf = args[2], sBuf = args[3];
        Value n = args.back();
        Value blockId = gpu::BlockIdOp::create(ib, gpu::Dimension::x);
        Value tid = gpu::ThreadIdOp::create(ib, gpu::Dimension::x);
        Value base = arith::MulIOp::create(
            ib, blockId, arith::ConstantIndexOp::create(ib, block));
        Value oldScale = load(ib, sBuf, blockId);
        Value lr = scalar(ib, args[4]);
        Value blockEnd = arith::MinUIOp::create(
            ib, n,
            arith::AddIOp::create(ib, base, arith::ConstantIndexOp::create(ib, block)));
        Value threads = arith::ConstantIndexOp::create(ib, kElementwiseThreads);
        Value first = arith::AddIOp::create(ib, base, tid);
        // The old momentum and the new one at element i.
        auto momenta = [&](B &lb, Value i) -> std::pair<Value, Value> {
          Value code = load(lb, mBuf, i);
          Value m = mul(lb, arith::SIToFPOp::create(lb, f, code), oldScale);
          return {m, mix(lb, h.beta2, m, loadF32(lb, gBuf, i))};
        };
        // Pass 1: the block's new absmax.
        auto scan = scf::ForOp::create(
            ib, first, blockEnd, threads, ValueRange{f32(ib, 0)},
            [&](OpBuilder &ob, Location l, Value i, ValueRange iter) {
              B lb(l, ob);
              Value mNew = momenta(lb, i).second;
              // |m| as max(m, −m): the NVVM lowering has no plain fabs.
              Value abs = arith::MaximumFOp::create(
                  lb, mNew, arith::NegFOp::create(lb, mNew));
              Value absmax = arith::MaximumFOp::create(lb, iter[0], abs);
              scf::YieldOp::create(lb, absmax);
            });
        Value absmax = blockReduce(ib, scan.getResult(0), /*max=*/true, wg[0]);
        Value scale = div(ib, absmax, f32(ib, 127));
        Value positive =
            arith::CmpFOp::create(ib, arith::CmpFPredicate::OGT, scale, f32(ib, 0));
        // Pass 2: every thread rewrites only the elements it read, so the old
        // codes are still in place.
        scf::ForOp::create(
            ib, first, blockEnd, threads, ValueRange{},
            [&](OpBuilder &ob, Location l, Value i, ValueRange) {
              B lb(l, ob);
              auto [mOld, mNew] = momenta(lb, i);
              Value g = loadF32(lb, gBuf, i), p = loadF32(lb, pBuf, i);
              Value c = mix(lb, h.beta1, mOld, g);
              storeAs(lb, lionParam(lb, p, c, lr, h.weightDecay), pBuf, i);
              Value q = roundEvenF32(
                  lb, div(lb, mNew, arith::SelectOp::create(lb, positive, scale,
                                                            f32(lb, 1))));
              q = arith::SelectOp::create(lb, positive, q, f32(lb, 0));
              memref::StoreOp::create(
                  lb, arith::FPToSIOp::create(lb, lb.getI8Type(), q), mBuf,
                  ValueRange{i});
              scf::YieldOp::create(lb);
            });
        inFirstThread(ib, [&] {
          memref::StoreOp::create(ib, scale, sBuf, ValueRange{blockId});
        });
        });
      });
}

} // namespace qtune
