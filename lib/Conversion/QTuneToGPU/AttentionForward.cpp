//===- AttentionForward.cpp - flash attention forward ----------------------===//
//
// One block per 64 queries of one (batch, head): each warp keeps its 16
// query rows as MMA operands in registers and sweeps the key tiles up to the
// block's last query (causal) with an online softmax in the exponent base 2:
// scores S = Q·Kᵀ in f32 fragments, row maxima across the four lanes of a
// row, P = 2^(S·scale·log2 e − m) rounded to bf16 and reused in registers as
// the A operand of O += P·V. Causal blocks start with the last query tile, so
// the longest blocks are scheduled first.
//
//===----------------------------------------------------------------------===//

#include "AttentionTiles.h"

#include "qtune/Conversion/QTuneToGPU/ElementwiseKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

#include <cmath>
#include <limits>

using namespace mlir;

namespace qtune {

using namespace attention;

gpu::GPUFuncOp buildAttentionForwardKernel(OpBuilder &builder, Location loc,
                                           StringRef name,
                                           const AttentionDims &d) {
  int64_t hd = d.headDim, kc = columnTile(d, AttentionPass::Forward);
  return buildAttentionKernel(
      builder, loc, name, d, AttentionPass::Forward,
      [&](B &b, ValueRange a, ArrayRef<Value> sh) {
        Value q = a[0], k = a[1], v = a[2], o = a[3], lse = a[4];
        Value qs = sh[0], ks = sh[1], vs = sh[2];
        Tiles at(b, d);
        Value ids = d.segments ? a[5] : Value();
        QueryBlock qb = at.queryBlock(kc, ids, d.segments ? sh[4] : Value());
        Value batch = qb.batch, head = qb.head, kvHead = qb.kvHead,
              q0 = qb.first;
        Segments seg = at.segments(ids, d.segments ? sh[3] : Value(), batch, q0);
        Value zero = at.idx(0);
        auto issue = [&](Value j, Value stage) {
          Value first = at.mul(at.add(qb.firstTile, j), kc);
          at.copyRows(k, ks, stage, batch, first, kvHead, d.kvHeads, kc);
          at.copyRows(v, vs, stage, batch, first, kvHead, d.kvHeads, kc);
          at.copySegments(seg, stage, batch, first, kc);
        };
        at.copyRows(q, qs, zero, batch, q0, head, d.heads, kBlockRows);
        issue(zero, zero);
        at.commit();
        at.waitAndSync();
        SmallVector<SmallVector<Value>> qFrag;
        for (int64_t s = 0; s < hd / 16; ++s)
          qFrag.push_back(at.rowOperand(qs, zero, s));

        const double c = d.scale * M_LOG2E;
        Value negInf =
            kernel::f32(b, -std::numeric_limits<double>::infinity());
        // Carried: m (log2 units) and the thread's partial l of both row
        // halves, then the output fragments.
        SmallVector<Value> inits{negInf, negInf, kernel::f32(b, 0),
                                 kernel::f32(b, 0)};
        inits.append(hd / 2, kernel::f32(b, 0));
        Value keyTiles = arith::SubIOp::create(b, qb.endTile, qb.firstTile);
        SmallVector<Value> out = at.pipeline(
            keyTiles, inits, issue,
            [&](Value j, Value stage, ValueRange iter) -> SmallVector<Value> {
              Value k0 = at.mul(at.add(qb.firstTile, j), kc);
              SmallVector<Value> s(kc / 2, kernel::f32(b, 0));
              at.multiply(
                  s, hd / 16, [&](int64_t kstep) { return qFrag[kstep]; },
                  [&](int64_t kstep, int64_t n0) {
                    return at.operandPairNK(ks, stage, n0, kstep * 16);
                  });
              for (Value &x : s)
                x = kernel::mul(b, x, kernel::f32(b, c));
              Value needsMask = at.keyTileNeedsMask(qb, k0, kc);
              s = at.masked(s, q0, k0, /*rowsAreQueries=*/true, needsMask,
                            negInf, seg, stage);
              SmallVector<Value> carried;
              SmallVector<Value> corr(2), mUse(2);
              for (int64_t h = 0; h < 2; ++h) {
                Value mx = iter[h];
                for (int64_t i = 0; i < int64_t(s.size()); ++i)
                  if ((i % 4) / 2 == h)
                    mx = arith::MaximumFOp::create(b, mx, s[i]);
                mx = at.rowReduce(mx, true);
                // A row with no visible key yet keeps m = −inf: subtract 0.
                Value isInf = arith::CmpFOp::create(
                    b, arith::CmpFPredicate::OEQ, mx, negInf);
                mUse[h] = at.select(isInf, kernel::f32(b, 0), mx);
                corr[h] = kernel::exp2F32(b, kernel::sub(b, iter[h], mUse[h]));
                carried.push_back(mx);
              }
              SmallVector<Value> rowSum{kernel::f32(b, 0), kernel::f32(b, 0)};
              for (int64_t i = 0; i < int64_t(s.size()); ++i) {
                int64_t h = (i % 4) / 2;
                s[i] = kernel::exp2F32(b, kernel::sub(b, s[i], mUse[h]));
                rowSum[h] = kernel::add(b, rowSum[h], s[i]);
              }
              for (int64_t h = 0; h < 2; ++h)
                carried.push_back(kernel::add(
                    b, kernel::mul(b, iter[2 + h], corr[h]), rowSum[h]));
              SmallVector<Value> acc(iter.drop_front(4));
              for (int64_t i = 0; i < int64_t(acc.size()); ++i)
                acc[i] = kernel::mul(b, acc[i], corr[(i % 4) / 2]);
              at.multiply(
                  acc, kc / 16, [&](int64_t kk) { return at.asOperand(s, kk); },
                  [&](int64_t kk, int64_t n0) {
                    return at.operandPairKN(vs, stage, kk * 16, n0);
                  });
              carried.append(acc);
              return carried;
            });
        SmallVector<Value> inv(2);
        for (int64_t h = 0; h < 2; ++h) {
          Value l = at.rowReduce(out[2 + h], false);
          inv[h] = kernel::div(b, kernel::f32(b, 1), l);
          Value row = at.fragmentRow(q0, 2 * h);
          Value logSumExp = kernel::mul(
              b, kernel::add(b, out[h], kernel::log2F32(b, l)),
              kernel::f32(b, M_LN2));
          Value store = arith::AndIOp::create(
              b, at.lt(row, at.idx(d.seq)),
              arith::CmpIOp::create(b, arith::CmpIPredicate::eq, at.t,
                                    at.idx(0)));
          auto ifStore = scf::IfOp::create(b, store, false);
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(ifStore.thenBlock());
          memref::StoreOp::create(b, logSumExp, lse,
                                  ValueRange{at.statIndex(batch, head, row)});
        }
        at.storeRows(ArrayRef<Value>(out).drop_front(4), inv[0], inv[1], o,
                     batch, q0, head, d.heads);
      });
}

} // namespace qtune
