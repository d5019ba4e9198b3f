//===- AttentionBackward.cpp - flash attention backward --------------------===//
//
// Two kernels, neither holding an S×S matrix nor adding atomically (so the
// gradients are deterministic):
//
//  - dQ, query-major like the forward: each warp keeps its 16 rows of q and
//    g as MMA operands, recomputes P = 2^(S·scale·log2 e − lse·log2 e) and
//    dP = g·Vᵀ per key tile, and accumulates dQ += dS·K with
//    dS = P ∘ (dP − delta); it first stores delta = Σ g·o of its rows;
//  - dK/dV, key-major: each warp owns 16 keys and sweeps the query tiles of
//    every query head of its KV head, computing the transposed scores
//    Sᵀ = K·Qᵀ and dPᵀ = V·gᵀ, then dV += Pᵀ·g and dK += dSᵀ·Q with Pᵀ and
//    dSᵀ reused in registers as A operands.
//
//===----------------------------------------------------------------------===//

#include "AttentionTiles.h"

#include "qtune/Conversion/QTuneToGPU/ElementwiseKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <cmath>
#include <limits>

using namespace mlir;

namespace qtune {

using namespace attention;

namespace {

/// Σ_c g[row, c] · o[row, c] over the half of a row's head dimension from
/// flat index `base` (16-byte aligned: the head dimension is a multiple of
/// 16).
Value halfRowDot(B &b, Tiles &at, Value g, Value o, Value base) {
  auto bf16x8 = VectorType::get({8}, b.getBF16Type());
  auto f32x8 = VectorType::get({8}, b.getF32Type());
  Value sum = kernel::f32(b, 0);
  for (int64_t c = 0; c < at.hd / 2; c += 8) {
    Value at8 = at.add(base, c);
    auto load = [&](Value mem) -> Value {
      Value v = vector::LoadOp::create(b, bf16x8, mem, ValueRange{at8},
                                       /*nontemporal=*/false, llvm::MaybeAlign(16));
      return arith::ExtFOp::create(b, f32x8, v);
    };
    Value prod = arith::MulFOp::create(b, load(g), load(o));
    sum = kernel::add(
        b, sum, vector::ReductionOp::create(b, vector::CombiningKind::ADD, prod));
  }
  return sum;
}

} // namespace

gpu::GPUFuncOp buildAttentionGradQKernel(OpBuilder &builder, Location loc,
                                         StringRef name,
                                         const AttentionDims &d) {
  int64_t hd = d.headDim, kc = columnTile(d, AttentionPass::GradQ);
  return buildAttentionKernel(
      builder, loc, name, d, AttentionPass::GradQ,
      [&](B &b, ValueRange a, ArrayRef<Value> sh) {
        Value q = a[0], k = a[1], v = a[2], o = a[3], lse = a[4], g = a[5],
              dq = a[6], delta = a[7];
        Value qs = sh[0], gs = sh[1], ks = sh[2], vs = sh[3], deltaS = sh[4];
        Tiles at(b, d);
        Value ids = d.segments ? a[8] : Value();
        QueryBlock qb = at.queryBlock(kc, ids, d.segments ? sh[6] : Value());
        Value batch = qb.batch, head = qb.head, kvHead = qb.kvHead,
              q0 = qb.first;
        Value keyTiles = arith::SubIOp::create(b, qb.endTile, qb.firstTile);
        Segments seg = at.segments(ids, d.segments ? sh[5] : Value(), batch, q0);
        Value zero = at.idx(0);
        at.copyRows(q, qs, zero, batch, q0, head, d.heads, kBlockRows);
        at.copyRows(g, gs, zero, batch, q0, head, d.heads, kBlockRows);
        // delta of the block's rows: two threads a row, half the head
        // dimension each, while the tiles arrive.
        {
          Value r = at.div(at.tid, 2), half = at.rem(at.tid, 2);
          Value pos = at.add(q0, r);
          Value base = at.add(
              at.rowOffset(batch, at.minIndex(pos, at.idx(d.seq - 1)), head,
                           d.heads),
              at.mul(half, hd / 2));
          Value part = halfRowDot(b, at, g, o, base);
          Value sum = kernel::add(
              b, part,
              gpu::ShuffleOp::create(b, part, 1, 32, gpu::ShuffleMode::XOR)
                  .getShuffleResult());
          auto first = scf::IfOp::create(
              b,
              arith::CmpIOp::create(b, arith::CmpIPredicate::eq, half, zero),
              false);
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(first.thenBlock());
          memref::StoreOp::create(b, sum, deltaS, ValueRange{zero, r});
          auto inSeq = scf::IfOp::create(b, at.lt(pos, at.idx(d.seq)), false);
          b.setInsertionPointToStart(inSeq.thenBlock());
          memref::StoreOp::create(b, sum, delta,
                                  ValueRange{at.statIndex(batch, head, pos)});
        }
        auto issue = [&](Value j, Value stage) {
          Value first = at.mul(at.add(qb.firstTile, j), kc);
          at.copyRows(k, ks, stage, batch, first, kvHead, d.kvHeads, kc);
          at.copyRows(v, vs, stage, batch, first, kvHead, d.kvHeads, kc);
          at.copySegments(seg, stage, batch, first, kc);
        };
        issue(zero, zero);
        at.commit();
        at.waitAndSync();
        // This warp's rows of q and g as A operands, and their statistics.
        SmallVector<SmallVector<Value>> qFrag, gFrag;
        for (int64_t s = 0; s < hd / 16; ++s) {
          qFrag.push_back(at.rowOperand(qs, zero, s));
          gFrag.push_back(at.rowOperand(gs, zero, s));
        }
        SmallVector<Value> lse2(2), dl(2);
        for (int64_t h = 0; h < 2; ++h) {
          Value row = at.fragmentRow(q0, 2 * h);
          Value safe = at.minIndex(row, at.idx(d.seq - 1));
          lse2[h] = kernel::mul(
              b, kernel::load(b, lse, at.statIndex(batch, head, safe)),
              kernel::f32(b, M_LOG2E));
          dl[h] = memref::LoadOp::create(
              b, deltaS, ValueRange{zero, at.fragmentRow(zero, 2 * h)});
        }
        const double c = d.scale * M_LOG2E;
        SmallVector<Value> acc = at.pipeline(
            keyTiles, SmallVector<Value>(hd / 2, kernel::f32(b, 0)), issue,
            [&](Value j, Value stage, ValueRange iter) -> SmallVector<Value> {
              Value k0 = at.mul(at.add(qb.firstTile, j), kc);
              SmallVector<Value> s(kc / 2, kernel::f32(b, 0)),
                  dp(kc / 2, kernel::f32(b, 0));
              at.multiply(
                  s, hd / 16, [&](int64_t kstep) { return qFrag[kstep]; },
                  [&](int64_t kstep, int64_t n0) {
                    return at.operandPairNK(ks, stage, n0, kstep * 16);
                  });
              at.multiply(
                  dp, hd / 16, [&](int64_t kstep) { return gFrag[kstep]; },
                  [&](int64_t kstep, int64_t n0) {
                    return at.operandPairNK(vs, stage, n0, kstep * 16);
                  });
              Value needsMask = at.keyTileNeedsMask(qb, k0, kc);
              for (int64_t i = 0; i < int64_t(s.size()); ++i)
                s[i] = kernel::sub(b, kernel::mul(b, s[i], kernel::f32(b, c)),
                                   lse2[(i % 4) / 2]);
              s = at.masked(
                  s, q0, k0, /*rowsAreQueries=*/true, needsMask,
                  kernel::f32(b, -std::numeric_limits<double>::infinity()), seg,
                  stage);
              for (int64_t i = 0; i < int64_t(s.size()); ++i) {
                Value p = kernel::exp2F32(b, s[i]);
                s[i] = kernel::mul(b, p, kernel::sub(b, dp[i], dl[(i % 4) / 2]));
              }
              SmallVector<Value> out(iter);
              at.multiply(
                  out, kc / 16, [&](int64_t kk) { return at.asOperand(s, kk); },
                  [&](int64_t kk, int64_t n0) {
                    return at.operandPairKN(ks, stage, kk * 16, n0);
                  });
              return out;
            });
        Value scale = kernel::f32(b, d.scale);
        at.storeRows(acc, scale, scale, dq, batch, q0, head, d.heads);
      });
}

gpu::GPUFuncOp buildAttentionGradKVKernel(OpBuilder &builder, Location loc,
                                          StringRef name,
                                          const AttentionDims &d) {
  int64_t hd = d.headDim, qc = columnTile(d, AttentionPass::GradKV);
  return buildAttentionKernel(
      builder, loc, name, d, AttentionPass::GradKV,
      [&](B &b, ValueRange a, ArrayRef<Value> sh) {
        Value q = a[0], k = a[1], v = a[2], lse = a[3], delta = a[4], g = a[5],
              dk = a[6], dv = a[7];
        Value ks = sh[0], vs = sh[1], qs = sh[2], gs = sh[3], lseS = sh[4],
              deltaS = sh[5];
        Tiles at(b, d);
        Value bx = gpu::BlockIdOp::create(b, gpu::Dimension::x);
        Value by = gpu::BlockIdOp::create(b, gpu::Dimension::y);
        Value batch = at.div(by, d.kvHeads), kvHead = at.rem(by, d.kvHeads);
        Value k0 = at.mul(bx, kBlockRows);
        Value zero = at.idx(0);
        at.copyRows(k, ks, zero, batch, k0, kvHead, d.kvHeads, kBlockRows);
        at.copyRows(v, vs, zero, batch, k0, kvHead, d.kvHeads, kBlockRows);
        // Query tiles: from the one holding the block's first key (causal),
        // for each query head of the KV head in turn; with segments, only
        // those holding queries of the block's keys' segments (a prefix and
        // a suffix of the tiles are left out: ids are nondecreasing).
        int64_t queryTiles = ceilDiv(d.seq, qc);
        Value firstTile = d.causal ? at.div(k0, qc) : zero;
        Value endTile = at.idx(queryTiles);
        Value ids = d.segments ? a[8] : Value();
        Segments seg = at.segments(ids, d.segments ? sh[6] : Value(), batch, k0);
        if (ids) {
          auto [before, after] = at.tilesOutsideSegments(
              ids, batch, k0, qc, /*countAfter=*/true, sh[7]);
          firstTile = arith::MaxUIOp::create(b, firstTile, before);
          endTile = arith::SubIOp::create(b, endTile, after);
        }
        Value perHead = arith::SubIOp::create(b, endTile, firstTile);
        Value count = at.mul(perHead, d.group());
        auto tileOf = [&](Value i) -> std::pair<Value, Value> {
          Value head = at.add(at.mul(kvHead, d.group()),
                              arith::DivUIOp::create(b, i, perHead));
          Value first = at.mul(
              at.add(firstTile, arith::RemUIOp::create(b, i, perHead)), qc);
          return {head, first};
        };
        auto issue = [&](Value i, Value stage) {
          auto [head, first] = tileOf(i);
          at.copyRows(q, qs, stage, batch, first, head, d.heads, qc);
          at.copyRows(g, gs, stage, batch, first, head, d.heads, qc);
          Value stats = at.statIndex(batch, head, zero);
          at.copyPositions(lse, lseS, stage, stats, first, qc);
          at.copyPositions(delta, deltaS, stage, stats, first, qc);
          at.copySegments(seg, stage, batch, first, qc);
        };
        issue(zero, zero);
        at.commit();
        const double c = d.scale * M_LOG2E;
        SmallVector<Value> acc = at.pipeline(
            count, SmallVector<Value>(hd, kernel::f32(b, 0)), issue,
            [&](Value i, Value stage, ValueRange iter) -> SmallVector<Value> {
              Value first = tileOf(i).second;
              SmallVector<Value> s(qc / 2, kernel::f32(b, 0)),
                  dp(qc / 2, kernel::f32(b, 0));
              at.multiply(
                  s, hd / 16,
                  [&](int64_t kstep) { return at.rowOperand(ks, zero, kstep); },
                  [&](int64_t kstep, int64_t n0) {
                    return at.operandPairNK(qs, stage, n0, kstep * 16);
                  });
              at.multiply(
                  dp, hd / 16,
                  [&](int64_t kstep) { return at.rowOperand(vs, zero, kstep); },
                  [&](int64_t kstep, int64_t n0) {
                    return at.operandPairNK(gs, stage, n0, kstep * 16);
                  });
              // The statistics of this thread's query columns.
              SmallVector<Value> lse2, dl;
              for (int64_t nb = 0; nb < qc / 8; ++nb)
                for (int64_t e = 0; e < 2; ++e) {
                  Value col = at.fragmentCol(zero, nb, e);
                  lse2.push_back(kernel::mul(
                      b, memref::LoadOp::create(b, lseS, ValueRange{stage, col}),
                      kernel::f32(b, M_LOG2E)));
                  dl.push_back(
                      memref::LoadOp::create(b, deltaS, ValueRange{stage, col}));
                }
              for (int64_t x = 0; x < int64_t(s.size()); ++x)
                s[x] = kernel::sub(b, kernel::mul(b, s[x], kernel::f32(b, c)),
                                   lse2[(x / 4) * 2 + x % 2]);
              // Queries past the sequence, or before a key (causal).
              Value needsMask = at.lt(at.idx(d.seq), at.add(first, qc));
              if (d.causal)
                needsMask = arith::OrIOp::create(
                    b, needsMask, at.lt(first, at.add(k0, kBlockRows - 1)));
              s = at.masked(
                  s, k0, first, /*rowsAreQueries=*/false, needsMask,
                  kernel::f32(b, -std::numeric_limits<double>::infinity()), seg,
                  stage);
              SmallVector<Value> ds(s.size());
              for (int64_t x = 0; x < int64_t(s.size()); ++x) {
                s[x] = kernel::exp2F32(b, s[x]);
                ds[x] = kernel::mul(
                    b, s[x], kernel::sub(b, dp[x], dl[(x / 4) * 2 + x % 2]));
              }
              SmallVector<Value> dkAcc(iter.take_front(hd / 2)),
                  dvAcc(iter.drop_front(hd / 2));
              at.multiply(
                  dvAcc, qc / 16,
                  [&](int64_t kk) { return at.asOperand(s, kk); },
                  [&](int64_t kk, int64_t n0) {
                    return at.operandPairKN(gs, stage, kk * 16, n0);
                  });
              at.multiply(
                  dkAcc, qc / 16,
                  [&](int64_t kk) { return at.asOperand(ds, kk); },
                  [&](int64_t kk, int64_t n0) {
                    return at.operandPairKN(qs, stage, kk * 16, n0);
                  });
              SmallVector<Value> out(dkAcc);
              out.append(dvAcc);
              return out;
            });
        Value scale = kernel::f32(b, d.scale), one = kernel::f32(b, 1);
        at.storeRows(ArrayRef<Value>(acc).take_front(hd / 2), scale, scale, dk,
                     batch, k0, kvHead, d.kvHeads);
        at.storeRows(ArrayRef<Value>(acc).drop_front(hd / 2), one, one, dv,
                     batch, k0, kvHead, d.kvHeads);
      });
}

} // namespace qtune
