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

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

namespace {
constexpr int64_t kRowsPerBlock = kElementwiseThreads / 32; // one per warp
constexpr int64_t kTile = 32;                               // keys or queries

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// The shared state of the three attention kernels' bodies.
class AttentionBuilder {
public:
  AttentionBuilder(B &b, const AttentionDims &d, Type elt)
      : b(b), d(d), elt(elt), hd(d.headDim), lanesT(ceilDiv(d.headDim, 32)) {
    Value t = tid(b);
    warp = idiv(b, t, 32);
    lane = irem(b, t, 32);
    for (int64_t k = 0; k < lanesT; ++k) {
      Value c = iadd(b, lane, index(b, 32 * k));
      channels.push_back(c);
      channelOk.push_back(ult(b, c, index(b, hd)));
      // Lanes past the head dimension read a valid channel, store nothing.
      clamped.push_back(arith::MinUIOp::create(b, c, index(b, hd - 1)));
    }
  }

  /// Flat offset of (batch, position, head) in a [B, S, heads·hd] tensor.
  Value rowOffset(Value batch, Value pos, Value head, int64_t heads) {
    return imul(b, iadd(b, imul(b, iadd(b, imul(b, batch, d.seq), pos), heads),
                        head),
                hd);
  }

  /// Cooperatively stages `kTile` rows of hd (positions first.., clamped to
  /// the sequence: rows past it are zero) of a [B, S, heads·hd] tensor into
  /// shared `dst` with row stride hd + 1, as f32.
  void stageTile(Value src, Value dst, Value batch, Value first, Value head,
                 int64_t heads) {
    stridedFor(b, kTile * hd, [&](B &lb, Value e) {
      Value r = idiv(lb, e, hd), c = irem(lb, e, hd);
      Value pos = iadd(lb, first, r);
      Value ok = ult(lb, pos, index(lb, d.seq));
      Value safe = arith::MinUIOp::create(lb, pos, index(lb, d.seq - 1));
      Value v = loadF32(lb, src, iadd(lb, rowOffset(batch, safe, head, heads), c));
      memref::StoreOp::create(lb, select(lb, ok, v, f32(lb, 0)), dst,
                              ValueRange{iadd(lb, imul(lb, r, hd + 1), c)});
    });
  }

  /// This warp's row of hd (at `offset` of `src`, if `ok`) into shared `dst`
  /// at `dstOffset` (zeros when not ok).
  void stageRow(Value src, Value offset, Value ok, Value dst, Value dstOffset) {
    for (int64_t k = 0; k < lanesT; ++k) {
      Value v = loadF32(b, src, iadd(b, offset, clamped[k]));
      Value keep = arith::AndIOp::create(b, ok, channelOk[k]);
      auto guard = scf::IfOp::create(b, channelOk[k], false);
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(guard.thenBlock());
      memref::StoreOp::create(b, select(b, keep, v, f32(b, 0)), dst,
                              ValueRange{iadd(b, dstOffset, channels[k])});
    }
  }

  /// Σ_c a[aOff + c] · s[sOff + c] over the head dimension (shared memory).
  Value dot(Value a, Value aOff, Value s, Value sOff) {
    return loop(b, index(b, 0), index(b, hd), index(b, 1), ValueRange{f32(b, 0)},
                [&](B &lb, Value c, ValueRange acc) -> SmallVector<Value> {
                  Value x = load(lb, a, iadd(lb, aOff, c));
                  Value y = load(lb, s, iadd(lb, sOff, c));
                  return {add(lb, acc[0], mul(lb, x, y))};
                })[0];
  }

  /// acc[k] += scale · Σ_{l < 32} (lane l's w) · tile[l·(hd+1) + channel k].
  void accumulate(SmallVectorImpl<Value> &acc, Value w, Value tile,
                  double scale = 1.0) {
    for (int64_t l = 0; l < kTile; ++l) {
      Value wl = laneValue(b, w, l);
      if (scale != 1.0)
        wl = mul(b, wl, f32(b, scale));
      for (int64_t k = 0; k < lanesT; ++k)
        acc[k] = add(b, acc[k],
                     mul(b, wl, load(b, tile, iadd(b, index(b, l * (hd + 1)),
                                                   clamped[k]))));
    }
  }

  /// Stores acc[k] · factor at offset + channel k (valid channels, if ok).
  void storeRow(ArrayRef<Value> acc, Value factor, Value dst, Value offset,
                Value ok) {
    auto guard = scf::IfOp::create(b, ok, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(guard.thenBlock());
    for (int64_t k = 0; k < lanesT; ++k) {
      auto inHead = scf::IfOp::create(b, channelOk[k], false);
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(inHead.thenBlock());
      Value v = factor ? mul(b, acc[k], factor) : acc[k];
      storeAs(b, v, dst, iadd(b, offset, channels[k]));
    }
  }

  /// Flat index of (batch, head, position) in a [B, H, S] statistics buffer.
  Value statIndex(Value batch, Value head, Value pos) {
    return iadd(b, imul(b, iadd(b, imul(b, batch, d.heads), head), d.seq), pos);
  }

  /// Lane 0 stores `v` at dst[at] when `ok` (one value per row).
  void storeFromLane0(Value v, Value dst, Value at, Value ok) {
    auto lane0 = scf::IfOp::create(
        b,
        arith::AndIOp::create(
            b, ok, arith::CmpIOp::create(b, arith::CmpIPredicate::eq, lane, index(b, 0))),
        false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(lane0.thenBlock());
    memref::StoreOp::create(b, v, dst, ValueRange{at});
  }

  B &b;
  const AttentionDims &d;
  Type elt;
  int64_t hd, lanesT;
  Value warp, lane;
  SmallVector<Value> channels, channelOk, clamped;
};

MemRefType shared(OpBuilder &b, int64_t n) {
  return MemRefType::get(
      {n}, b.getF32Type(), MemRefLayoutAttrInterface(),
      gpu::AddressSpaceAttr::get(b.getContext(), gpu::AddressSpace::Workgroup));
}

/// The query tile (8 rows) of a query-major block: {batch, head, kv head,
/// first query row, this warp's row, row < S}.
struct QueryBlock {
  Value batch, head, kvHead, first, row, valid;
};
QueryBlock queryBlock(B &b, AttentionBuilder &ab, const AttentionDims &d) {
  int64_t tiles = ceilDiv(d.seq, kRowsPerBlock);
  Value bid = gpu::BlockIdOp::create(b, gpu::Dimension::x);
  Value bh = idiv(b, bid, tiles);
  QueryBlock q;
  q.first = imul(b, irem(b, bid, tiles), kRowsPerBlock);
  q.batch = idiv(b, bh, d.heads);
  q.head = irem(b, bh, d.heads);
  q.kvHead = idiv(b, q.head, d.heads / d.kvHeads);
  q.row = iadd(b, q.first, ab.warp);
  q.valid = ult(b, q.row, index(b, d.seq));
  return q;
}

/// Key tiles a query block visits: up to its last row when causal.
Value keyTiles(B &b, const QueryBlock &q, const AttentionDims &d) {
  if (!d.causal)
    return index(b, ceilDiv(d.seq, kTile));
  Value last = arith::MinUIOp::create(b, iadd(b, q.first, index(b, kRowsPerBlock)),
                                      index(b, d.seq));
  return idiv(b, iadd(b, last, index(b, kTile - 1)), kTile);
}

/// Whether key `key` is hidden from query `query`.
Value masked(B &b, Value query, Value key, const AttentionDims &d) {
  Value out = arith::CmpIOp::create(b, arith::CmpIPredicate::uge, key,
                                    index(b, d.seq));
  if (d.causal)
    out = arith::OrIOp::create(
        b, out, arith::CmpIOp::create(b, arith::CmpIPredicate::ugt, key, query));
  return out;
}
} // namespace

int64_t attentionForwardBlocks(const AttentionDims &d) {
  return ceilDiv(d.seq, kRowsPerBlock) * d.batch * d.heads;
}
int64_t attentionKeyBlocks(const AttentionDims &d) {
  return ceilDiv(d.seq, kRowsPerBlock) * d.batch * d.kvHeads;
}

gpu::GPUFuncOp buildAttentionKernel(OpBuilder &builder, Location loc,
                                    StringRef name, Type elt,
                                    const AttentionDims &d) {
  int64_t hd = d.headDim, stride = hd + 1;
  Type f32t = builder.getF32Type();
  return buildKernel(
      builder, loc, name,
      {flatMemRef(elt), flatMemRef(elt), flatMemRef(elt), flatMemRef(elt),
       flatMemRef(f32t)},
      TypeRange{shared(builder, kRowsPerBlock * hd),
                shared(builder, kTile * stride), shared(builder, kTile * stride)},
      [&](B &b, ValueRange a, ValueRange wg) {
        Value qs = wg[0], ks = wg[1], vs = wg[2];
        AttentionBuilder ab(b, d, elt);
        QueryBlock q = queryBlock(b, ab, d);
        Value safeRow = arith::MinUIOp::create(b, q.row, index(b, d.seq - 1));
        Value qOffset = ab.rowOffset(q.batch, safeRow, q.head, d.heads);
        Value qsRow = imul(b, ab.warp, hd);
        ab.stageRow(a[0], qOffset, q.valid, qs, qsRow);
        SmallVector<Value> inits{f32(b, -std::numeric_limits<float>::infinity()),
                                 f32(b, 0)};
        inits.append(ab.lanesT, f32(b, 0));
        SmallVector<Value> out = loop(
            b, index(b, 0), keyTiles(b, q, d), index(b, 1), inits,
            [&](B &lb, Value kt, ValueRange iter) -> SmallVector<Value> {
              AttentionBuilder &l = ab;
              OpBuilder::InsertionGuard guard(b);
              b.setInsertionPoint(lb.getInsertionBlock(), lb.getInsertionPoint());
              Value first = imul(b, kt, kTile);
              gpu::BarrierOp::create(b);
              l.stageTile(a[1], ks, q.batch, first, q.kvHead, d.kvHeads);
              l.stageTile(a[2], vs, q.batch, first, q.kvHead, d.kvHeads);
              gpu::BarrierOp::create(b);
              Value key = iadd(b, first, l.lane);
              Value s = mul(b, l.dot(qs, qsRow, ks, imul(b, l.lane, stride)),
                            f32(b, d.scale));
              Value hidden = masked(b, q.row, key, d);
              s = select(b, hidden, f32(b, -std::numeric_limits<float>::infinity()), s);
              Value m = iter[0];
              Value mNew = arith::MaximumFOp::create(b, m, warpReduce(b, s, true));
              Value p = select(b, hidden, f32(b, 0), expF32(b, sub(b, s, mNew)));
              Value corr = expF32(b, sub(b, m, mNew));
              Value lsum = add(b, mul(b, iter[1], corr), warpReduce(b, p, false));
              SmallVector<Value> acc;
              for (int64_t k = 0; k < l.lanesT; ++k)
                acc.push_back(mul(b, iter[2 + k], corr));
              l.accumulate(acc, p, vs);
              SmallVector<Value> next{mNew, lsum};
              next.append(acc);
              return next;
            });
        Value invL = div(b, f32(b, 1), out[1]);
        ab.storeRow(ArrayRef<Value>(out).drop_front(2), invL, a[3], qOffset,
                    q.valid);
        Value lse = add(b, out[0], mul(b, log2F32(b, out[1]), f32(b, M_LN2)));
        ab.storeFromLane0(lse, a[4], ab.statIndex(q.batch, q.head, q.row), q.valid);
      });
}

gpu::GPUFuncOp buildAttentionGradQKernel(OpBuilder &builder, Location loc,
                                         StringRef name, Type elt,
                                         const AttentionDims &d) {
  int64_t hd = d.headDim, stride = hd + 1;
  Type f32t = builder.getF32Type();
  return buildKernel(
      builder, loc, name,
      {flatMemRef(elt), flatMemRef(elt), flatMemRef(elt), flatMemRef(elt),
       flatMemRef(f32t), flatMemRef(elt), flatMemRef(elt), flatMemRef(f32t)},
      TypeRange{shared(builder, kRowsPerBlock * hd),
                shared(builder, kRowsPerBlock * hd),
                shared(builder, kTile * stride), shared(builder, kTile * stride)},
      [&](B &b, ValueRange a, ValueRange wg) {
        Value qs = wg[0], gs = wg[1], ks = wg[2], vs = wg[3];
        AttentionBuilder ab(b, d, elt);
        QueryBlock q = queryBlock(b, ab, d);
        Value safeRow = arith::MinUIOp::create(b, q.row, index(b, d.seq - 1));
        Value qOffset = ab.rowOffset(q.batch, safeRow, q.head, d.heads);
        Value rowShared = imul(b, ab.warp, hd);
        ab.stageRow(a[0], qOffset, q.valid, qs, rowShared);
        ab.stageRow(a[5], qOffset, q.valid, gs, rowShared);
        // delta = Σ_c g·o over the row.
        Value part = f32(b, 0);
        for (int64_t k = 0; k < ab.lanesT; ++k) {
          Value at = iadd(b, qOffset, ab.clamped[k]);
          Value t = mul(b, loadF32(b, a[5], at), loadF32(b, a[3], at));
          part = add(b, part, select(b, ab.channelOk[k], t, f32(b, 0)));
        }
        Value delta = warpReduce(b, part, false);
        Value statAt = ab.statIndex(q.batch, q.head,
                                    arith::MinUIOp::create(b, q.row, index(b, d.seq - 1)));
        Value lse = load(b, a[4], statAt);
        ab.storeFromLane0(delta, a[7], statAt, q.valid);
        SmallVector<Value> inits(ab.lanesT, f32(b, 0));
        SmallVector<Value> dq = loop(
            b, index(b, 0), keyTiles(b, q, d), index(b, 1), inits,
            [&](B &lb, Value kt, ValueRange iter) -> SmallVector<Value> {
              OpBuilder::InsertionGuard guard(b);
              b.setInsertionPoint(lb.getInsertionBlock(), lb.getInsertionPoint());
              Value first = imul(b, kt, kTile);
              gpu::BarrierOp::create(b);
              ab.stageTile(a[1], ks, q.batch, first, q.kvHead, d.kvHeads);
              ab.stageTile(a[2], vs, q.batch, first, q.kvHead, d.kvHeads);
              gpu::BarrierOp::create(b);
              Value key = iadd(b, first, ab.lane);
              Value mine = imul(b, ab.lane, stride);
              Value s = mul(b, ab.dot(qs, rowShared, ks, mine), f32(b, d.scale));
              Value p = select(b, masked(b, q.row, key, d), f32(b, 0),
                               expF32(b, sub(b, s, lse)));
              Value dp = ab.dot(gs, rowShared, vs, mine);
              Value ds = mul(b, p, sub(b, dp, delta));
              SmallVector<Value> acc(iter);
              ab.accumulate(acc, ds, ks, d.scale);
              return acc;
            });
        ab.storeRow(dq, Value(), a[6], qOffset, q.valid);
      });
}

gpu::GPUFuncOp buildAttentionGradKVKernel(OpBuilder &builder, Location loc,
                                          StringRef name, Type elt,
                                          const AttentionDims &d) {
  int64_t hd = d.headDim, stride = hd + 1;
  int64_t group = d.heads / d.kvHeads;
  Type f32t = builder.getF32Type();
  return buildKernel(
      builder, loc, name,
      {flatMemRef(elt), flatMemRef(elt), flatMemRef(elt), flatMemRef(f32t),
       flatMemRef(f32t), flatMemRef(elt), flatMemRef(elt), flatMemRef(elt)},
      TypeRange{shared(builder, kTile * stride), shared(builder, kTile * stride),
                shared(builder, kRowsPerBlock * hd),
                shared(builder, kRowsPerBlock * hd), shared(builder, kTile),
                shared(builder, kTile)},
      [&](B &b, ValueRange a, ValueRange wg) {
        Value qs = wg[0], gs = wg[1], kw = wg[2], vw = wg[3], lseS = wg[4],
              deltaS = wg[5];
        AttentionBuilder ab(b, d, elt);
        int64_t tiles = ceilDiv(d.seq, kRowsPerBlock);
        Value bid = gpu::BlockIdOp::create(b, gpu::Dimension::x);
        Value bk = idiv(b, bid, tiles);
        Value batch = idiv(b, bk, d.kvHeads), kvHead = irem(b, bk, d.kvHeads);
        Value firstKey = imul(b, irem(b, bid, tiles), kRowsPerBlock);
        Value key = iadd(b, firstKey, ab.warp);
        Value keyOk = ult(b, key, index(b, d.seq));
        Value safeKey = arith::MinUIOp::create(b, key, index(b, d.seq - 1));
        Value kvOffset = ab.rowOffset(batch, safeKey, kvHead, d.kvHeads);
        Value mine = imul(b, ab.warp, hd);
        ab.stageRow(a[1], kvOffset, keyOk, kw, mine);
        ab.stageRow(a[2], kvOffset, keyOk, vw, mine);
        // Causal: query tiles from the one holding the block's first key.
        Value firstTile = d.causal ? idiv(b, firstKey, kTile) : index(b, 0);
        SmallVector<Value> inits(2 * ab.lanesT, f32(b, 0));
        SmallVector<Value> acc = loop(
            b, index(b, 0), index(b, group), index(b, 1), inits,
            [&](B &lb0, Value gi, ValueRange outer) -> SmallVector<Value> {
              OpBuilder::InsertionGuard guard0(b);
              b.setInsertionPoint(lb0.getInsertionBlock(), lb0.getInsertionPoint());
              Value head = iadd(b, imul(b, kvHead, group), gi);
              return loop(
                  b, firstTile, index(b, ceilDiv(d.seq, kTile)), index(b, 1),
                  outer,
                  [&](B &lb, Value qt, ValueRange iter) -> SmallVector<Value> {
                    OpBuilder::InsertionGuard guard(b);
                    b.setInsertionPoint(lb.getInsertionBlock(),
                                        lb.getInsertionPoint());
                    Value first = imul(b, qt, kTile);
                    gpu::BarrierOp::create(b);
                    ab.stageTile(a[0], qs, batch, first, head, d.heads);
                    ab.stageTile(a[5], gs, batch, first, head, d.heads);
                    {
                      // lse and delta of the tile's queries.
                      Value t = tid(b);
                      auto few = scf::IfOp::create(b, ult(b, t, index(b, kTile)), false);
                      OpBuilder::InsertionGuard g(b);
                      b.setInsertionPointToStart(few.thenBlock());
                      Value pos = arith::MinUIOp::create(b, iadd(b, first, t),
                                                         index(b, d.seq - 1));
                      Value at = ab.statIndex(batch, head, pos);
                      memref::StoreOp::create(b, load(b, a[3], at), lseS, ValueRange{t});
                      memref::StoreOp::create(b, load(b, a[4], at), deltaS, ValueRange{t});
                    }
                    gpu::BarrierOp::create(b);
                    Value query = iadd(b, first, ab.lane);
                    Value row = imul(b, ab.lane, stride);
                    Value s = mul(b, ab.dot(qs, row, kw, mine), f32(b, d.scale));
                    Value hidden = arith::OrIOp::create(
                        b, masked(b, query, key, d),
                        arith::CmpIOp::create(b, arith::CmpIPredicate::uge, query,
                                              index(b, d.seq)));
                    Value p = select(b, hidden, f32(b, 0),
                                     expF32(b, sub(b, s, load(b, lseS, ab.lane))));
                    Value dp = ab.dot(gs, row, vw, mine);
                    Value ds = mul(b, p, sub(b, dp, load(b, deltaS, ab.lane)));
                    SmallVector<Value> dk(iter.take_front(ab.lanesT)),
                        dv(iter.drop_front(ab.lanesT));
                    ab.accumulate(dv, p, gs);
                    ab.accumulate(dk, ds, qs, d.scale);
                    SmallVector<Value> next(dk);
                    next.append(dv);
                    return next;
                  });
            });
        ab.storeRow(ArrayRef<Value>(acc).take_front(ab.lanesT), Value(), a[6],
                    kvOffset, keyOk);
        ab.storeRow(ArrayRef<Value>(acc).drop_front(ab.lanesT), Value(), a[7],
                    kvOffset, keyOk);
      });
}

} // namespace qtune
