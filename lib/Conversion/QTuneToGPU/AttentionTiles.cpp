//===- AttentionTiles.cpp - the pieces the attention kernels share ---------===//

#include "AttentionTiles.h"

#include "qtune/Conversion/QTuneToGPU/ElementwiseKernels.h"
#include "qtune/Conversion/QTuneToGPU/MmaSync.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include "llvm/Support/raw_ostream.h"

using namespace mlir;

namespace qtune {

std::optional<std::string> attentionUnsupported(const AttentionDims &d) {
  if (d.headDim % 16 == 0 && d.headDim <= kMaxAttentionHeadDim)
    return std::nullopt;
  std::string why;
  llvm::raw_string_ostream os(why);
  os << "the attention kernels take head dimensions that are multiples of 16 "
        "up to "
     << kMaxAttentionHeadDim << " (one tensor-core k step; accumulators in "
     << "registers), got " << d.headDim;
  return why;
}

AttentionLaunch attentionLaunch(const AttentionDims &d, AttentionPass pass) {
  using namespace attention;
  AttentionLaunch l;
  l.gridX = ceilDiv(d.seq, kBlockRows);
  l.gridY = d.batch * (pass == AttentionPass::GradKV ? d.kvHeads : d.heads);
  l.threads = kThreads;
  l.sharedBytes = sharedPlan(d, pass).totalBytes();
  return l;
}

std::string attentionKernelName(const AttentionDims &d, AttentionPass pass) {
  std::string name;
  llvm::raw_string_ostream os(name);
  os << "attention_"
     << (pass == AttentionPass::Forward ? "fwd"
         : pass == AttentionPass::GradQ ? "bwd_dq"
                                        : "bwd_dkv");
  if (d.causal)
    os << "_causal";
  if (d.group() > 1)
    os << "_gqa" << d.group();
  if (d.segments)
    os << "_seg";
  os << "_d" << d.headDim;
  return name;
}

namespace attention {

int64_t columnTile(const AttentionDims &d, AttentionPass pass) {
  if (pass == AttentionPass::Forward)
    return 64;
  return d.headDim <= 64 ? 64 : 32;
}

unsigned SharedPlan::addTiles(int64_t stages, int64_t rows,
                              const AttentionDims &d) {
  buffers.push_back({stages, rows, pitch(d), 2});
  return buffers.size() - 1;
}
unsigned SharedPlan::addF32(int64_t stages, int64_t n) {
  buffers.push_back({stages, n, 1, 4});
  return buffers.size() - 1;
}
unsigned SharedPlan::addI32(int64_t stages, int64_t n) {
  buffers.push_back({stages, n, 1, 4, /*integer=*/true});
  return buffers.size() - 1;
}
int64_t SharedPlan::totalBytes() const {
  int64_t total = 0;
  for (const Buffer &buf : buffers) // each buffer 16-byte aligned
    total += (buf.stages * buf.rows * buf.cols * buf.bytes + 15) / 16 * 16;
  return total;
}

SharedPlan sharedPlan(const AttentionDims &d, AttentionPass pass) {
  SharedPlan p;
  int64_t c = columnTile(d, pass);
  // The block's own rows: q (forward, dQ) or k (dK/dV); then g (dQ) or v.
  p.addTiles(1, kBlockRows, d);
  if (pass != AttentionPass::Forward)
    p.addTiles(1, kBlockRows, d);
  // Two stages of the two column tiles: k and v, or q and g (dK/dV).
  p.addTiles(2, c, d);
  p.addTiles(2, c, d);
  if (pass == AttentionPass::GradQ) // delta of the block's rows
    p.addF32(1, kBlockRows);
  if (pass == AttentionPass::GradKV) { // lse and delta of the column tiles
    p.addF32(2, c);
    p.addF32(2, c);
  }
  if (d.segments) {
    p.addI32(2, c);
    p.addF32(1, kWarps);
  }
  return p;
}

SmallVector<Type> kernelArguments(MLIRContext *ctx, const AttentionDims &d,
                                  AttentionPass pass) {
  Type t = flatMemRef(BFloat16Type::get(ctx)), f = flatMemRef(Float32Type::get(ctx));
  SmallVector<Type> args;
  switch (pass) {
  case AttentionPass::Forward: // q, k, v, o, lse
    args = {t, t, t, t, f};
    break;
  case AttentionPass::GradQ: // q, k, v, o, lse, g, dq, delta
    args = {t, t, t, t, f, t, t, f};
    break;
  case AttentionPass::GradKV: // q, k, v, lse, delta, g, dk, dv
    args = {t, t, t, f, f, t, t, t};
    break;
  }
  if (d.segments)
    args.push_back(flatMemRef(IntegerType::get(ctx, 32)));
  return args;
}

gpu::GPUFuncOp
buildAttentionKernel(OpBuilder &builder, Location loc, StringRef name,
                     const AttentionDims &d, AttentionPass pass,
                     function_ref<void(B &, ValueRange, ArrayRef<Value>)> body) {
  MLIRContext *ctx = builder.getContext();
  SmallVector<Type> args = kernelArguments(ctx, d, pass);
  SharedPlan plan = sharedPlan(d, pass);
  auto func = gpu::GPUFuncOp::create(builder, loc, name,
                                     FunctionType::get(ctx, args, {}),
                                     TypeRange{}, TypeRange{});
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), builder.getUnitAttr());
  func.setKnownBlockSizeAttr(
      builder.getDenseI32ArrayAttr({int32_t(kThreads), 1, 1}));
  Block &entry = func.getBody().front();
  B b(loc, ctx);
  b.setInsertionPointToStart(&entry);
  auto workgroup = gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
  Value dyn = gpu::DynamicSharedMemoryOp::create(
      b, MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                         MemRefLayoutAttrInterface(), workgroup));
  SmallVector<Value> views;
  int64_t offset = 0;
  for (const SharedPlan::Buffer &buf : plan.buffers) {
    Type elt = buf.bytes == 2 ? Type(b.getBF16Type())
               : buf.integer  ? Type(b.getI32Type())
                              : Type(b.getF32Type());
    SmallVector<int64_t> shape{buf.stages, buf.rows};
    if (buf.cols > 1)
      shape.push_back(buf.cols);
    auto type = MemRefType::get(shape, elt, MemRefLayoutAttrInterface(),
                                workgroup);
    views.push_back(memref::ViewOp::create(
        b, type, dyn, arith::ConstantIndexOp::create(b, offset), ValueRange{}));
    offset += (buf.stages * buf.rows * buf.cols * buf.bytes + 15) / 16 * 16;
  }
  body(b, entry.getArguments(), views);
  gpu::ReturnOp::create(b);
  // Let LLVM fuse the softmax's scalings into fmas.
  auto contract =
      arith::FastMathFlagsAttr::get(ctx, arith::FastMathFlags::contract);
  func.walk([&](arith::ArithFastMathInterface op) {
    op->setAttr(op.getFastMathAttrName(), contract);
  });
  return func;
}

Tiles::Tiles(B &b, const AttentionDims &d) : b(b), d(d), hd(d.headDim) {
  tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  warp = div(tid, 32);
  lane = rem(tid, 32);
  g = div(lane, 4);
  t = rem(lane, 4);
}

Value Tiles::idx(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
Value Tiles::add(Value x, Value y) { return arith::AddIOp::create(b, x, y); }
Value Tiles::mul(Value x, int64_t y) {
  return arith::MulIOp::create(b, x, idx(y));
}
Value Tiles::div(Value x, int64_t y) {
  return arith::DivUIOp::create(b, x, idx(y));
}
Value Tiles::rem(Value x, int64_t y) {
  return arith::RemUIOp::create(b, x, idx(y));
}
Value Tiles::lt(Value x, Value y) {
  return arith::CmpIOp::create(b, arith::CmpIPredicate::ult, x, y);
}
Value Tiles::minIndex(Value x, Value y) {
  return arith::MinUIOp::create(b, x, y);
}
Value Tiles::select(Value c, Value x, Value y) {
  return arith::SelectOp::create(b, c, x, y);
}

QueryBlock Tiles::queryBlock(int64_t kc, Value seg, Value scratch) {
  int64_t tiles = ceilDiv(d.seq, kBlockRows);
  Value bx = gpu::BlockIdOp::create(b, gpu::Dimension::x);
  Value tile = d.causal ? arith::SubIOp::create(b, idx(tiles - 1), bx) : bx;
  Value by = gpu::BlockIdOp::create(b, gpu::Dimension::y);
  QueryBlock q;
  q.batch = div(by, d.heads);
  q.head = rem(by, d.heads);
  q.kvHead = div(q.head, d.group());
  q.first = mul(tile, kBlockRows);
  Value keyEnd =
      d.causal ? minIndex(add(q.first, kBlockRows), idx(d.seq)) : idx(d.seq);
  q.firstTile = idx(0);
  q.endTile = div(add(keyEnd, kc - 1), kc);
  if (!seg)
    return q;
  // Key tiles wholly before the segment of the block's first query are
  // skipped; after that of its last query too, unless causal (the causal end
  // is tighter).
  auto [before, after] =
      tilesOutsideSegments(seg, q.batch, q.first, kc, !d.causal, scratch);
  q.firstTile = before;
  if (after)
    q.endTile = arith::SubIOp::create(b, q.endTile, after);
  return q;
}

Segments Tiles::segments(Value ids, Value staged, Value batch,
                         Value rowFirst) {
  Segments seg;
  if (!ids)
    return seg;
  seg.ids = ids;
  seg.staged = staged;
  for (int64_t h = 0; h < 2; ++h)
    seg.rows[h] = segmentAt(ids, batch, fragmentRow(rowFirst, 2 * h));
  return seg;
}

void Tiles::copySegments(const Segments &seg, Value stage, Value batch,
                         Value first, int64_t n) {
  if (seg.ids)
    copyPositions(seg.ids, seg.staged, stage, mul(batch, d.seq), first, n);
}

std::pair<Value, Value> Tiles::tilesOutsideSegments(Value seg, Value batch,
                                                    Value rowFirst, int64_t size,
                                                    bool countAfter,
                                                    Value scratch) {
  int64_t tiles = ceilDiv(d.seq, size);
  Value firstSeg = segmentAt(seg, batch, rowFirst);
  Value before = countTiles(
      tiles,
      [&](Value t) {
        return arith::CmpIOp::create(b, arith::CmpIPredicate::slt,
                                     segmentAt(seg, batch, add(mul(t, size), size - 1)),
                                     firstSeg);
      },
      scratch);
  if (!countAfter)
    return {before, Value()};
  Value lastSeg = segmentAt(seg, batch, add(rowFirst, kBlockRows - 1));
  Value after = countTiles(
      tiles,
      [&](Value t) {
        return arith::CmpIOp::create(b, arith::CmpIPredicate::sgt,
                                     segmentAt(seg, batch, mul(t, size)), lastSeg);
      },
      scratch);
  return {before, after};
}

Value Tiles::segmentAt(Value seg, Value batch, Value pos) {
  return memref::LoadOp::create(
      b, seg, ValueRange{add(mul(batch, d.seq), minIndex(pos, idx(d.seq - 1)))});
}

Value Tiles::countTiles(int64_t tiles, function_ref<Value(Value)> pred,
                        Value scratch) {
  Type i32 = b.getI32Type();
  Value mine = arith::ConstantIntOp::create(b, i32, 0);
  for (int64_t i = 0; i * kThreads < tiles; ++i) {
    Value t = add(tid, i * kThreads);
    Value in = lt(t, idx(tiles));
    // Threads past the tiles test the last one and count nothing.
    Value hit = arith::AndIOp::create(
        b, in, pred(minIndex(t, idx(tiles - 1))));
    mine = arith::AddIOp::create(b, mine,
                                 arith::ExtUIOp::create(b, i32, hit));
  }
  for (int32_t offset = 16; offset > 0; offset /= 2)
    mine = arith::AddIOp::create(
        b, mine,
        gpu::ShuffleOp::create(b, mine, offset, 32, gpu::ShuffleMode::XOR)
            .getShuffleResult());
  // The previous count's readers are done before scratch is rewritten.
  gpu::BarrierOp::create(b);
  {
    auto first = scf::IfOp::create(
        b, arith::CmpIOp::create(b, arith::CmpIPredicate::eq, lane, idx(0)),
        false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(first.thenBlock());
    memref::StoreOp::create(
        b, arith::SIToFPOp::create(b, b.getF32Type(), mine), scratch,
        ValueRange{idx(0), warp});
  }
  gpu::BarrierOp::create(b);
  Value total = kernel::f32(b, 0);
  for (int64_t w = 0; w < kWarps; ++w)
    total = kernel::add(
        b, total, memref::LoadOp::create(b, scratch, ValueRange{idx(0), idx(w)}));
  return arith::IndexCastUIOp::create(
      b, b.getIndexType(), arith::FPToUIOp::create(b, b.getI32Type(), total));
}

Value Tiles::keyTileNeedsMask(const QueryBlock &q, Value k0, int64_t kc) {
  Value last = add(k0, kc);
  Value needed = lt(idx(d.seq), last);
  if (d.causal)
    needed = arith::OrIOp::create(b, needed, lt(add(q.first, 1), last));
  return needed;
}

Value Tiles::rowOffset(Value batch, Value pos, Value head, int64_t heads) {
  return mul(add(mul(add(mul(batch, d.seq), pos), heads), head), hd);
}
Value Tiles::statIndex(Value batch, Value head, Value pos) {
  return add(mul(add(mul(batch, d.heads), head), d.seq), pos);
}

void Tiles::copyRows(Value src, Value dst, Value stage, Value batch,
                     Value first, Value head, int64_t heads, int64_t rows) {
  int64_t perRow = hd / 8, chunks = rows * perRow;
  for (int64_t i = 0; i * kThreads < chunks; ++i) {
    auto copy = [&] {
      Value c = add(tid, i * kThreads);
      Value r = div(c, perRow), col = mul(rem(c, perRow), 8);
      Value pos = add(first, r);
      Value ok = lt(pos, idx(d.seq));
      Value safe = minIndex(pos, idx(d.seq - 1));
      nvgpu::DeviceAsyncCopyOp::create(
          b, nvgpu::DeviceAsyncTokenType::get(b.getContext()), dst,
          ValueRange{stage, r, col}, src,
          ValueRange{add(rowOffset(batch, safe, head, heads), col)},
          b.getIndexAttr(8), select(ok, idx(8), idx(0)),
          /*bypassL1=*/b.getUnitAttr());
    };
    if ((i + 1) * kThreads <= chunks) {
      copy();
      continue;
    }
    auto inTile = scf::IfOp::create(
        b, lt(add(tid, i * kThreads), idx(chunks)), false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(inTile.thenBlock());
    copy();
  }
}

void Tiles::copyPositions(Value src, Value dst, Value stage, Value base,
                          Value first, int64_t n) {
  auto few = scf::IfOp::create(b, lt(tid, idx(n)), false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(few.thenBlock());
  Value pos = minIndex(add(first, tid), idx(d.seq - 1));
  nvgpu::DeviceAsyncCopyOp::create(
      b, nvgpu::DeviceAsyncTokenType::get(b.getContext()), dst,
      ValueRange{stage, tid}, src, ValueRange{add(base, pos)},
      b.getIndexAttr(1), Value(), UnitAttr());
}

void Tiles::commit() { NVVM::CpAsyncCommitGroupOp::create(b); }

void Tiles::waitAndSync() {
  NVVM::CpAsyncWaitGroupOp::create(b, b.getI32IntegerAttr(0));
  gpu::BarrierOp::create(b);
}

SmallVector<Value> Tiles::pipeline(
    Value count, ValueRange inits, function_ref<void(Value, Value)> issue,
    function_ref<SmallVector<Value>(Value, Value, ValueRange)> body) {
  auto loop = scf::ForOp::create(
      b, idx(0), count, idx(1), inits,
      [&](OpBuilder &ob, Location, Value i, ValueRange iter) {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPoint(ob.getInsertionBlock(), ob.getInsertionPoint());
        waitAndSync();
        Value next = add(i, 1);
        {
          auto more = scf::IfOp::create(b, lt(next, count), false);
          OpBuilder::InsertionGuard g2(b);
          b.setInsertionPointToStart(more.thenBlock());
          issue(next, rem(next, 2));
        }
        commit();
        scf::YieldOp::create(b, body(i, rem(i, 2), iter));
      });
  return SmallVector<Value>(loop.getResults());
}

SmallVector<Value> Tiles::rowOperand(Value mem, Value stage, int64_t ks) {
  Value row = add(mul(warp, 16), rem(lane, 16));
  Value col = add(mul(div(lane, 16), 8), ks * 16);
  return mma::ldmatrix(b, mem, ValueRange{stage, row, col}, 4, false);
}

SmallVector<Value> Tiles::operandPairNK(Value mem, Value stage, int64_t n0,
                                        int64_t k0) {
  Value row = add(add(mul(div(lane, 16), 8), rem(lane, 8)), n0);
  Value col = add(mul(rem(div(lane, 8), 2), 8), k0);
  return mma::ldmatrix(b, mem, ValueRange{stage, row, col}, 4, false);
}

SmallVector<Value> Tiles::operandPairKN(Value mem, Value stage, int64_t k0,
                                        int64_t n0) {
  Value row = add(rem(lane, 16), k0);
  Value col = add(mul(div(lane, 16), 8), n0);
  return mma::ldmatrix(b, mem, ValueRange{stage, row, col}, 4, true);
}

void Tiles::multiply(
    MutableArrayRef<Value> acc, int64_t ksteps,
    function_ref<SmallVector<Value>(int64_t)> a,
    function_ref<SmallVector<Value>(int64_t, int64_t)> bPair) {
  int64_t blocks = acc.size() / 4;
  for (int64_t ks = 0; ks < ksteps; ++ks) {
    SmallVector<Value> aRegs = a(ks);
    for (int64_t nb = 0; nb < blocks; nb += 2) {
      SmallVector<Value> regs = bPair(ks, nb * 8);
      mma::mmaBF16(b, aRegs, ArrayRef<Value>(regs).take_front(2),
                   acc.slice(nb * 4, 4));
      mma::mmaBF16(b, aRegs, ArrayRef<Value>(regs).drop_front(2),
                   acc.slice(nb * 4 + 4, 4));
    }
  }
}

SmallVector<Value> Tiles::asOperand(ArrayRef<Value> frags, int64_t kk) {
  ArrayRef<Value> lo = frags.slice(8 * kk, 4), hi = frags.slice(8 * kk + 4, 4);
  return {mma::packBF16(b, lo[0], lo[1]), mma::packBF16(b, lo[2], lo[3]),
          mma::packBF16(b, hi[0], hi[1]), mma::packBF16(b, hi[2], hi[3])};
}

Value Tiles::fragmentRow(Value first, int64_t e) {
  return add(add(first, add(mul(warp, 16), g)), (e / 2) * 8);
}
Value Tiles::fragmentCol(Value first, int64_t nb, int64_t e) {
  return add(add(first, mul(t, 2)), nb * 8 + e % 2);
}

Value Tiles::hidden(Value query, Value key) {
  Value out = arith::OrIOp::create(
      b, arith::CmpIOp::create(b, arith::CmpIPredicate::uge, key, idx(d.seq)),
      arith::CmpIOp::create(b, arith::CmpIPredicate::uge, query, idx(d.seq)));
  if (d.causal)
    out = arith::OrIOp::create(b, out, lt(query, key));
  return out;
}

SmallVector<Value> Tiles::masked(ArrayRef<Value> frags, Value rowFirst,
                                 Value colFirst, bool rowsAreQueries,
                                 Value needed, Value fill, const Segments &seg,
                                 Value stage) {
  auto mask = [&] {
    SmallVector<Value> out(frags);
    SmallVector<Value> colSeg;
    if (seg.ids)
      for (int64_t nb = 0; nb < int64_t(out.size()) / 4; ++nb)
        for (int64_t e = 0; e < 2; ++e)
          colSeg.push_back(memref::LoadOp::create(
              b, seg.staged, ValueRange{stage, fragmentCol(idx(0), nb, e)}));
    for (int64_t i = 0; i < int64_t(out.size()); ++i) {
      Value row = fragmentRow(rowFirst, i % 4);
      Value col = fragmentCol(colFirst, i / 4, i % 4);
      Value hide = rowsAreQueries ? hidden(row, col) : hidden(col, row);
      if (seg.ids)
        hide = arith::OrIOp::create(
            b, hide,
            arith::CmpIOp::create(b, arith::CmpIPredicate::ne,
                                  seg.rows[(i % 4) / 2],
                                  colSeg[(i / 4) * 2 + i % 2]));
      out[i] = select(hide, fill, out[i]);
    }
    return out;
  };
  // Segment boundaries can fall in any tile.
  if (seg.ids)
    return mask();
  return selectIf(needed, frags, mask);
}

Value Tiles::rowReduce(Value v, bool max) {
  for (int32_t offset : {1, 2}) {
    Value other = gpu::ShuffleOp::create(b, v, offset, 32, gpu::ShuffleMode::XOR)
                      .getShuffleResult();
    v = max ? Value(arith::MaximumFOp::create(b, v, other))
            : Value(arith::AddFOp::create(b, v, other));
  }
  return v;
}

void Tiles::storeRows(ArrayRef<Value> acc, Value factor0, Value factor1,
                      Value dst, Value batch, Value first, Value head,
                      int64_t heads) {
  auto bf16x2 = VectorType::get({2}, b.getBF16Type());
  auto f32x2 = VectorType::get({2}, b.getF32Type());
  for (int64_t half = 0; half < 2; ++half) {
    Value row = fragmentRow(first, 2 * half);
    auto inSeq = scf::IfOp::create(b, lt(row, idx(d.seq)), false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(inSeq.thenBlock());
    Value factor = half ? factor1 : factor0;
    Value base = add(rowOffset(batch, row, head, heads), mul(t, 2));
    for (int64_t nb = 0; nb < int64_t(acc.size()) / 4; ++nb) {
      Value x = kernel::mul(b, acc[4 * nb + 2 * half], factor);
      Value y = kernel::mul(b, acc[4 * nb + 2 * half + 1], factor);
      Value pair = arith::TruncFOp::create(
          b, bf16x2, vector::FromElementsOp::create(b, f32x2, ValueRange{x, y}));
      vector::StoreOp::create(b, pair, dst, ValueRange{add(base, nb * 8)},
                              /*nontemporal=*/false, llvm::MaybeAlign(4));
    }
  }
}

SmallVector<Value>
Tiles::selectIf(Value cond, ArrayRef<Value> plain,
                function_ref<SmallVector<Value>()> masked) {
  SmallVector<Type> types;
  for (Value v : plain)
    types.push_back(v.getType());
  auto op = scf::IfOp::create(b, types, cond, /*withElse=*/true);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(op.thenBlock());
    scf::YieldOp::create(b, masked());
    b.setInsertionPointToStart(op.elseBlock());
    scf::YieldOp::create(b, plain);
  }
  return SmallVector<Value>(op.getResults());
}

} // namespace attention
} // namespace qtune
