//===- GemmTemplate.cpp - tensor-core GEMM kernel template ------------------===//
//
// One block computes a tileM × tileN tile of Y. Per K tile:
//   1. X tile [tileM × tileK] bf16 → shared, 16-byte nvgpu.device_async_copy
//      chunks (zero-filled past M and K), or element loads when rows are not
//      16-byte aligned; on the warpgroup path a row-major X arrives by TMA
//      (one bulk tensor copy per tile, mbarrier-counted, 128-byte swizzle);
//   2. W tile [tileN × tileK] → shared: each element dequantized through
//      QuantFormatAttrInterface::emitDequant (or read from a dense weight) and
//      rounded to bf16 — the prologue hook;
//   3. warp-level path: nvgpu.ldmatrix fragments, nvgpu.mma.sync m16n8k16 into
//      fp32 accumulators; warpgroup path (sm_90a): nvvm.wgmma.mma_async on
//      shared-memory descriptors, issued asynchronously so that the next
//      tiles' copies and dequantization overlap the MMAs.
// The epilogue scales, adds bias and residual, masks M/N tails and stores bf16.
//
//===----------------------------------------------------------------------===//

#include "qtune/Conversion/QTuneToGPU/GemmTemplate.h"
#include "qtune/Conversion/QTuneToGPU/MmaSync.h"
#include "qtune/Conversion/QTuneToGPU/ElementwiseKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "llvm/Support/raw_ostream.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

using namespace mlir;

namespace qtune {

int64_t GemmSchedule::sharedBytes() const {
  if (wgmma) // one layout for every weight (the loader transposes)
    return stages * (tileM + tileN) / 8 * rowGroupBytes();
  // X stages, plus W stages in either layout ([n][k], or [k][n] for a
  // transposed weight), whichever is larger.
  return 2 * tileM * (tileK + 8) * 2 +
         std::max(2 * tileN * (tileK + 8) * 2, 2 * tileK * (tileN + 8) * 2);
}

namespace {
constexpr int64_t kStaticSharedLimit = 48 * 1024;
constexpr int64_t kSharedLimit = 227 * 1024; // sm_90 (sm_80: 163 KiB)

/// The warp-level path stages a transposed X with aligned rows [k][m].
bool xStagedKM(const GemmSpec &spec, const GemmSchedule &s) {
  return spec.transposeX && spec.xRowsAligned && !s.wgmma;
}
/// The wgmma path stages a transposed X with aligned rows MN-major (core
/// matrices of 8 K rows × 8 consecutive M) and reads it transposed.
bool xStagedMN(const GemmSpec &spec, const GemmSchedule &s) {
  return spec.transposeX && spec.xRowsAligned && s.wgmma;
}
/// X by TMA with a weight stored K × N (input gradients g·W): the K loop
/// keeps one group of MMAs in flight across its barrier (segmentLoopWgmma),
/// so that dequantizing the tile ahead, whose runs along N gather a code and
/// its group parameters from 8 stored rows each, overlaps two groups of
/// MMAs. Three stages or more: a step writes neither group's stages. (On an
/// H100, the 4096² INT4 layer at M = 8192: g·W 646 → 577 us; the forward's
/// x·Wᵀ, whose runs read one code word each, went 606 → 612 us with it, and
/// a fourth X stage for copies two tiles ahead made both slower: 633 and
/// 625 us. bench/RESULTS.md.)
bool mmaInFlight(const GemmSpec &spec, const GemmSchedule &s) {
  return spec.tmaX && s.stages >= 3 && spec.transposeW;
}
/// The bytes between the wgmma path's X stages: the core-matrix layout's,
/// or with TMA the larger of it and the 128-byte-swizzled rows, rounded up to
/// the swizzle's 1024-byte pattern (the stages start on it).
int64_t xStageBytes(const GemmSpec &spec, const GemmSchedule &s) {
  int64_t core = s.tileM / 8 * s.rowGroupBytes();
  if (!spec.tmaX)
    return core;
  int64_t swizzled = llvm::alignTo(s.tileM * s.tileK * 2, 1024);
  // A LoRA segment of one K tile (rank ≤ tileK) stages it in the core layout
  // from the first stage on, running into the second, which it leaves unused
  // (segmentLoopWgmma): the stages need only the swizzled rows.
  if (spec.loraRank <= s.tileK)
    return swizzled;
  return llvm::alignTo(std::max(core, swizzled), 1024);
}
int64_t xsBytes(const GemmSpec &spec, const GemmSchedule &s) {
  if (s.wgmma)
    return s.stages * xStageBytes(spec, s);
  return xStagedKM(spec, s) ? 2 * s.tileK * (s.tileM + 8) * 2
                            : 2 * s.tileM * (s.tileK + 8) * 2;
}
int64_t wsBytes(const GemmSpec &spec, const GemmSchedule &s) {
  if (s.wgmma)
    return s.stages * s.tileN / 8 * s.rowGroupBytes();
  return spec.transposeW ? 2 * s.tileK * (s.tileN + 8) * 2
                         : 2 * s.tileN * (s.tileK + 8) * 2;
}
int64_t rowMaxBytes(const GemmSpec &spec, const GemmSchedule &s) {
  return spec.qftFormat ? s.tileM * s.warpsN * 4 : 0;
}
/// TMA: one mbarrier (8 bytes) per stage counts its X copy.
int64_t barrierBytes(const GemmSpec &spec, const GemmSchedule &s) {
  return spec.tmaX ? 8 * s.stages : 0;
}
} // namespace

int64_t gemmSharedBytes(const GemmSpec &spec, const GemmSchedule &schedule) {
  return xsBytes(spec, schedule) + wsBytes(spec, schedule) +
         rowMaxBytes(spec, schedule) + barrierBytes(spec, schedule);
}

bool gemmSharedFits(const GemmSpec &spec, const GemmSchedule &schedule) {
  return gemmSharedBytes(spec, schedule) <= kSharedLimit;
}

bool gemmUsesDynamicShared(const GemmSpec &spec, const GemmSchedule &schedule) {
  return gemmSharedBytes(spec, schedule) > kStaticSharedLimit;
}

std::optional<std::string> GemmSchedule::validate() const {
  if (sharedBytes() > kSharedLimit)
    return "the two shared stages need " + std::to_string(sharedBytes()) +
           " bytes, more than the 227 KiB of shared memory of a block";
  if (tileK % 16 != 0)
    return "tileK must be a multiple of 16 (the MMA's K)";
  if (wgmma) {
    if (tileM % 64 != 0 || warpsM != tileM / 16 || warpsN != 1)
      return "wgmma needs tileM a multiple of 64 with warpsM = tileM / 16 and "
             "warpsN = 1 (one warpgroup per 64 rows)";
    if (tileN % 16 != 0 || tileN > 256)
      return "wgmma needs tileN a multiple of 16, at most 256";
    if (stages < 2)
      return "wgmma needs at least 2 stages";
    if ((tileM * tileK / 8) % threads() != 0 ||
        (tileN * tileK / 8) % threads() != 0)
      return "tileM × tileK / 8 and tileN × tileK / 8 must be multiples of "
             "the thread count";
    return std::nullopt;
  }
  if (tileM % (16 * warpsM) != 0)
    return "tileM must be a multiple of 16 × warpsM";
  if (tileN % (8 * warpsN) != 0)
    return "tileN must be a multiple of 8 × warpsN";
  if ((tileM * tileK / 8) % threads() != 0)
    return "tileM × tileK / 8 must be a multiple of the thread count";
  if ((tileN * tileK / 8) % threads() != 0)
    return "tileN × tileK / 8 must be a multiple of the thread count";
  return std::nullopt;
}

namespace {

MemRefType flat(Type element) {
  return MemRefType::get({ShapedType::kDynamic}, element);
}

/// Global reads split in two: a recording pass issues the loads of a tile
/// and keeps the loaded values; a replaying pass, a K step later, takes them
/// in the same order instead of loading (the code that consumes them is the
/// same format code run twice, so the order matches). This keeps a tile's
/// weight loads in flight for a whole step before they are used.
struct LoadLog {
  enum Mode { Direct, Record, Replay } mode = Direct;
  SmallVector<Value> values;
  size_t next = 0;

  Value load(OpBuilder &b, Location loc, Value mem, Value index) {
    if (mode == Replay) {
      assert(next < values.size() && "replay past the recorded loads");
      return values[next++];
    }
    Value v = memref::LoadOp::create(b, loc, mem, index);
    if (mode == Record)
      values.push_back(v);
    return v;
  }
};

/// Component reads from flat global memrefs.
class GlobalComponentAccess : public ComponentAccess {
public:
  explicit GlobalComponentAccess(ValueRange components, LoadLog *log = nullptr)
      : components(components), log(log ? log : &direct) {}

  Value loadFloat(OpBuilder &b, Location loc, unsigned component,
                  Value flatIndex) override {
    Value v = log->load(b, loc, components[component], flatIndex);
    if (!v.getType().isF32())
      v = arith::ExtFOp::create(b, loc, b.getF32Type(), v);
    return v;
  }

  Value loadCode(OpBuilder &b, Location loc, unsigned component, Value row,
                 Value col, unsigned bits, int64_t wordsPerRow) override {
    auto idx = [&](int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); };
    Value bit = arith::MulIOp::create(b, loc, col, idx(bits));
    Value word = arith::AddIOp::create(
        b, loc, arith::MulIOp::create(b, loc, row, idx(wordsPerRow)),
        arith::DivUIOp::create(b, loc, bit, idx(32)));
    Value shift = arith::RemUIOp::create(b, loc, bit, idx(32));
    Value mem = components[component];
    Value lo = log->load(b, loc, mem, word);
    Type i32 = b.getI32Type(), i64 = b.getI64Type();
    Value mask = arith::ConstantIntOp::create(b, loc, i32, (1u << bits) - 1);
    Value shift32 = arith::IndexCastUIOp::create(b, loc, i32, shift);
    if (32 % bits == 0) // codes never straddle words
      return arith::AndIOp::create(
          b, loc, arith::ShRUIOp::create(b, loc, lo, shift32), mask);
    // The next word holds the high bits when the code straddles; it exists
    // then (rows are padded to whole words), so read it only in that case.
    Value straddles = arith::CmpIOp::create(
        b, loc, arith::CmpIPredicate::ugt,
        arith::AddIOp::create(b, loc, shift, idx(bits)), idx(32));
    Value nextWord = arith::SelectOp::create(
        b, loc, straddles, arith::AddIOp::create(b, loc, word, idx(1)), word);
    Value hi = log->load(b, loc, mem, nextWord);
    Value both = arith::OrIOp::create(
        b, loc,
        arith::ShLIOp::create(b, loc, arith::ExtUIOp::create(b, loc, i64, hi),
                              arith::ConstantIntOp::create(b, loc, i64, 32)),
        arith::ExtUIOp::create(b, loc, i64, lo));
    Value shifted = arith::ShRUIOp::create(
        b, loc, both, arith::IndexCastUIOp::create(b, loc, i64, shift));
    return arith::AndIOp::create(b, loc,
                                 arith::TruncIOp::create(b, loc, i32, shifted),
                                 mask);
  }

private:
  ValueRange components;
  LoadLog direct;
  LoadLog *log;
};

/// One K segment of the product: X-like rows [M × kSeg] times a weight
/// [N × kSeg] (quantized through `format`, else dense bf16).
struct Segment {
  Value x;
  int64_t kSeg;
  QuantFormatAttrInterface format;
  ValueRange weight; // the components, or the one dense weight
  bool transposed = false;       // X stored as [kSeg × M]
  bool weightTransposed = false; // W stored (or quantized) as [kSeg × N]
  bool tma = false;              // X by TMA (GemmSpec::tmaX), swizzled stages
};

class KernelBuilder {
public:
  KernelBuilder(ImplicitLocOpBuilder &b, const GemmSpec &spec,
                const GemmSchedule &s, Value xs, Value ws, Value m)
      : b(b), spec(spec), s(s), xs(xs), ws(ws), m(m) {}

  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, x, y); }
  Value div(Value x, int64_t y) { return arith::DivUIOp::create(b, x, idx(y)); }
  Value rem(Value x, int64_t y) { return arith::RemUIOp::create(b, x, idx(y)); }
  Value lt(Value x, Value y) {
    return arith::CmpIOp::create(b, arith::CmpIPredicate::ult, x, y);
  }
  Value both(Value x, Value y) { return arith::AndIOp::create(b, x, y); }
  Value extToF32(Value v) {
    return arith::ExtFOp::create(b, b.getF32Type(), v, arith::FastMathFlagsAttr());
  }
  Value select(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, c, x, y);
  }

  void setThreadIds() {
    tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
    Value warp = div(tid, 32);
    lane = rem(tid, 32);
    wm = div(warp, s.warpsN);
    wn = rem(warp, s.warpsN);
    rowBase = mul(gpu::BlockIdOp::create(b, gpu::Dimension::y), idx(s.tileM));
    colBase = mul(gpu::BlockIdOp::create(b, gpu::Dimension::x), idx(s.tileN));
  }

  int64_t fragsM() const { return s.tileM / s.warpsM / 16; }
  int64_t fragsN() const { return s.tileN / s.warpsN / 8; }

  /// Element offset, within a wgmma stage, of (row, k): K-major core
  /// matrices (see GemmSchedule::rowGroupBytes).
  Value coreOffset(Value row, Value k) {
    return add(add(mul(div(row, 8), idx(s.rowGroupBytes() / 2)),
                   mul(div(k, 8), idx(s.coreStrideBytes() / 2))),
               add(mul(rem(row, 8), idx(8)), rem(k, 8)));
  }
  int64_t xStageElems() const { return xStageBytes(spec, s) / 2; }
  int64_t wStageElems() const { return s.tileN / 8 * s.rowGroupBytes() / 2; }

  /// The shared indices of element (row, k) of stage `stage` of a tile.
  SmallVector<Value> stagedAt(Value stage, Value row, Value k,
                              int64_t stageElems) {
    if (s.wgmma)
      return {add(mul(stage, idx(stageElems)), coreOffset(row, k))};
    return {stage, row, k};
  }

  /// Starts staging the X tile of K offset `k0` into shared stage `stage`:
  /// 16-byte cp.async chunks, committed as one group (waited for by the
  /// caller), or element loads when rows are not 16-byte aligned.
  /// Consecutive threads take consecutive chunks of a row (coalesced; padded
  /// rows or the core-matrix strides keep their stores in distinct banks).
  /// `kInRange`: the caller guarantees the whole tile lies within K, so only
  /// rows are masked (and their reads clamped to the last row: loop
  /// invariant, so a chunk's copy is an address add and the copy itself).
  void loadXTile(const Segment &seg, Value k0, Value stage,
                 bool kInRange = false) {
    if (seg.transposed && (xStagedKM(spec, s) || xStagedMN(spec, s))) {
      loadXTileTransposed(seg, k0, stage);
      return;
    }
    int64_t chunksPerRow = s.tileK / 8;
    int64_t perThread = s.tileM * chunksPerRow / s.threads();
    Value kSeg = idx(seg.kSeg);
    // 16-byte chunks need contiguous, 16-byte aligned rows.
    bool async = seg.kSeg % 8 == 0 && !seg.transposed;
    Type bf16 = b.getBF16Type();
    for (int64_t i = 0; i < perThread; ++i) {
      auto [r, chunk] = itemAt(i, chunksPerRow);
      Value kc = mul(chunk, idx(8));
      Value gm = add(rowBase, r), gk = add(k0, kc);
      if (async && kInRange) {
        Value rowc = arith::MinUIOp::create(b, gm, arith::SubIOp::create(b, m, idx(1)));
        Value count = select(lt(gm, m), idx(8), idx(0));
        nvgpu::DeviceAsyncCopyOp::create(
            b, nvgpu::DeviceAsyncTokenType::get(b.getContext()), xs,
            stagedAt(stage, r, kc, xStageElems()), seg.x,
            ValueRange{add(mul(rowc, kSeg), gk)}, b.getIndexAttr(8), count,
            /*bypassL1=*/UnitAttr());
        continue;
      }
      if (async) {
        Value valid = both(lt(gm, m), lt(gk, kSeg));
        Value src = select(valid, add(mul(gm, kSeg), gk), idx(0));
        Value count = select(valid, idx(8), idx(0));
        nvgpu::DeviceAsyncCopyOp::create(
            b, nvgpu::DeviceAsyncTokenType::get(b.getContext()), xs,
            stagedAt(stage, r, kc, xStageElems()), seg.x, ValueRange{src},
            b.getIndexAttr(8), count, /*bypassL1=*/UnitAttr());
        continue;
      }
      Value zero = arith::ConstantOp::create(b, b.getFloatAttr(bf16, 0.0));
      for (int64_t e = 0; e < 8; ++e) {
        Value gke = add(gk, idx(e));
        Value valid = both(lt(gm, m), lt(gke, kSeg));
        Value flat = seg.transposed ? add(mul(gke, m), gm) : add(mul(gm, kSeg), gke);
        Value src = select(valid, flat, idx(0));
        Value v = select(valid, memref::LoadOp::create(b, seg.x, src), zero);
        memref::StoreOp::create(b, v, xs,
                                stagedAt(stage, r, add(kc, idx(e)), xStageElems()));
      }
    }
    NVVM::CpAsyncCommitGroupOp::create(b);
  }

  /// A transposed X (stored [kSeg × M], M a multiple of 8): 16-byte cp.async
  /// chunks of 8 consecutive m of one stored row, consecutive threads on
  /// consecutive chunks, into a [k][m] stage (warp-level path) or MN-major
  /// core matrices (wgmma path). A chunk past M is zero-filled (M is a
  /// multiple of 8, so a chunk is all in or all out).
  void loadXTileTransposed(const Segment &seg, Value k0, Value stage) {
    int64_t chunksPerRow = s.tileM / 8;
    Value kSeg = idx(seg.kSeg);
    forEachChunk(s.tileK * chunksPerRow, [&](Value c) {
      Value r = div(c, chunksPerRow);                // k within the tile
      Value mc = mul(rem(c, chunksPerRow), idx(8)); // first m of the chunk
      Value gm = add(rowBase, mc), gk = add(k0, r);
      Value valid = both(lt(gm, m), lt(gk, kSeg));
      Value src = select(valid, add(mul(gk, m), gm), idx(0));
      Value count = select(valid, idx(8), idx(0));
      SmallVector<Value> dst{stage, r, mc};
      if (s.wgmma)
        dst = {add(mul(stage, idx(xStageElems())), mnMajorOffset(mc, r))};
      nvgpu::DeviceAsyncCopyOp::create(
          b, nvgpu::DeviceAsyncTokenType::get(b.getContext()), xs, dst, seg.x,
          ValueRange{src}, b.getIndexAttr(8), count, /*bypassL1=*/UnitAttr());
    });
    NVVM::CpAsyncCommitGroupOp::create(b);
  }

  /// Row and position within the row of item tid + i · threads of a tile
  /// walked `perRow` items a row. Where the thread count is a multiple of
  /// `perRow`, every round of a thread has the same position and rows a
  /// constant apart (so its addresses differ by constants, folded into
  /// immediate offsets).
  std::pair<Value, Value> itemAt(int64_t i, int64_t perRow) {
    if (s.threads() % perRow == 0)
      return {add(div(tid, perRow), idx(i * s.threads() / perRow)),
              rem(tid, perRow)};
    Value c = add(tid, idx(i * s.threads()));
    return {div(c, perRow), rem(c, perRow)};
  }

  /// Runs body(c) for the chunks c = tid, tid + threads, ... below `chunks`,
  /// guarding only the last round when `chunks` is not a multiple of the
  /// thread count.
  void forEachChunk(int64_t chunks, function_ref<void(Value)> body) {
    for (int64_t i = 0; i * s.threads() < chunks; ++i) {
      Value c = add(tid, idx(i * s.threads()));
      if ((i + 1) * s.threads() <= chunks) {
        body(c);
        continue;
      }
      auto inTile = scf::IfOp::create(b, lt(c, idx(chunks)), false);
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(inTile.thenBlock());
      body(c);
    }
  }

  /// Dequantizes (or reads) the W tile of K offset `k0` into shared memory.
  /// Each thread produces runs of 8 consecutive weights of one stored row of
  /// W, so the code words and group parameters a run shares are read once
  /// (the loads of one run have equal addresses once LLVM folds the aligned
  /// index math), and stores a run with one 16-byte store. W stored as N×K is
  /// staged [n][k]; a weight read transposed (element (n, k) of the product is
  /// W[k, n], W stored as K×N) is staged [k][n], its B fragments then read by
  /// transposing ldmatrix. Out-of-range elements are clamped for the read and
  /// masked to zero.
  /// Element (row, col) of the stored weight (rows × cols), in f32: the
  /// format's dequantization, or the dense weight.
  Value storedWeight(const Segment &seg, Value row, Value col, int64_t rows,
                     int64_t cols, LoadLog *log = nullptr) {
    if (seg.format) {
      GlobalComponentAccess access(seg.weight, log);
      return seg.format.emitDequant(b, b.getLoc(), row, col, rows, cols, access);
    }
    LoadLog direct;
    return extToF32((log ? log : &direct)
                        ->load(b, b.getLoc(), seg.weight[0],
                               add(mul(row, idx(cols)), col)));
  }

  void loadWTile(const Segment &seg, Value k0, Value stage) {
    constexpr int64_t run = 8;
    bool t = seg.weightTransposed;
    // The stored weight is rows × cols; the tile covers `tileRows` of its rows
    // from `rowBase0` and the columns from `colBase0`.
    int64_t rows = t ? seg.kSeg : spec.n, cols = t ? spec.n : seg.kSeg;
    int64_t tileRows = t ? s.tileK : s.tileN, tileCols = t ? s.tileN : s.tileK;
    Value rowBase0 = t ? k0 : colBase, colBase0 = t ? colBase : k0;
    int64_t runsPerRow = tileCols / run;
    int64_t perThread = tileRows * runsPerRow / s.threads();
    Value rowsV = idx(rows), colsV = idx(cols);
    // Whole runs are in or out of range when the row length is a multiple of
    // the run: clamp the run's start then. Otherwise clamp each element.
    bool wholeRuns = cols % run == 0;
    Value zero = arith::ConstantOp::create(b, b.getF32FloatAttr(0.0f));
    for (int64_t i = 0; i < perThread; ++i) {
      Value c = add(tid, idx(i * s.threads()));
      Value r = div(c, runsPerRow);                 // row within the tile
      Value cc0 = mul(rem(c, runsPerRow), idx(run)); // first column of the run
      Value row = add(rowBase0, r), col0 = add(colBase0, cc0);
      Value rowValid = lt(row, rowsV);
      Value rowc = arith::MinUIOp::create(b, row, idx(rows - 1));
      Value col0c =
          wholeRuns ? arith::MinUIOp::create(b, col0, idx(cols - run)) : col0;
      auto f32x8 = VectorType::get({run}, b.getF32Type());
      auto bf16x8 = VectorType::get({run}, b.getBF16Type());
      if (!seg.format && wholeRuns) {
        // A dense run is 16 aligned bytes (rows hold whole runs; buffers
        // start 16-byte aligned): one vector load, no conversion.
        Value vec = vector::LoadOp::create(
            b, bf16x8, seg.weight[0], ValueRange{add(mul(rowc, colsV), col0c)},
            /*nontemporal=*/false, llvm::MaybeAlign(16));
        Value valid = both(rowValid, lt(col0, colsV));
        Value zeros = arith::ConstantOp::create(
            b, DenseElementsAttr::get(bf16x8, b.getZeroAttr(b.getBF16Type())));
        vector::StoreOp::create(b, select(valid, vec, zeros), ws,
                                ValueRange{stage, r, cc0});
        continue;
      }
      SmallVector<Value> values;
      for (int64_t e = 0; e < run; ++e) {
        Value col = add(col0, idx(e));
        Value valid = both(rowValid, lt(col, colsV));
        Value colc = wholeRuns ? add(col0c, idx(e))
                               : Value(arith::MinUIOp::create(b, col,
                                                              idx(cols - 1)));
        values.push_back(
            select(valid, storedWeight(seg, rowc, colc, rows, cols), zero));
      }
      Value vec = vector::FromElementsOp::create(b, f32x8, values);
      vector::StoreOp::create(b, arith::TruncFOp::create(b, bf16x8, vec), ws,
                              ValueRange{stage, r, cc0});
    }
  }

  /// Element offset, within a wgmma stage, of (n, k) in the MN-major layout
  /// of a weight stored K × N: the same core-matrix grid and strides as
  /// coreOffset, but each core matrix holds 8 K rows of 8 consecutive N.
  Value mnMajorOffset(Value n, Value k) {
    return add(add(mul(div(n, 8), idx(s.rowGroupBytes() / 2)),
                   mul(div(k, 8), idx(s.coreStrideBytes() / 2))),
               add(mul(rem(k, 8), idx(8)), rem(n, 8)));
  }

  /// The wgmma path's W tile. Each thread dequantizes runs of 8 consecutive
  /// weights of a stored row and stores each run with one 16-byte store: a
  /// weight stored N × K (runs along K) into K-major core matrices, one
  /// stored K × N (input gradients g·W; runs along N) into MN-major ones,
  /// which the MMA reads transposed. Either way a run shares its code word
  /// and group parameters, consecutive threads take consecutive runs of a row
  /// (coalesced loads), and the stores of eight threads land in distinct
  /// banks (see GemmSchedule::coreStrideBytes). Out-of-range elements are
  /// clamped for the read and masked to zero. With a recording `log` only the
  /// loads are issued (no stage is written); with a replaying one the tile is
  /// computed from the recorded values and stored into `stage`.
  void loadWTileCore(const Segment &seg, Value k0, Value stage, LoadLog &log) {
    constexpr int64_t run = 8;
    bool t = seg.weightTransposed;
    int64_t rows = t ? seg.kSeg : spec.n, cols = t ? spec.n : seg.kSeg;
    int64_t tileCols = t ? s.tileN : s.tileK;
    int64_t runsPerRow = tileCols / run;
    int64_t perThread = s.tileN * s.tileK / run / s.threads();
    // Whole runs are in or out of range when the row length is a multiple of
    // the run: clamp the run's start then.
    bool wholeRuns = cols % run == 0;
    // With whole tiles every element of a computed tile is in range: only the
    // prefetch of the tile past the last reads out of range, clamped, into a
    // stage no MMA reads. No masks then.
    bool wholeTiles = spec.n % s.tileN == 0 && seg.kSeg % s.tileK == 0;
    Value zero = arith::ConstantOp::create(b, b.getF32FloatAttr(0.0f));
    Value rowsV = idx(rows), colsV = idx(cols);
    for (int64_t i = 0; i < perThread; ++i) {
      auto [r, runInRow] = itemAt(i, runsPerRow);    // stored row in the tile
      Value cc0 = mul(runInRow, idx(run));           // first column of the run
      Value row = add(t ? k0 : colBase, r), col0 = add(t ? colBase : k0, cc0);
      Value rowValid = lt(row, rowsV);
      // Whole tiles of a fetch clamped to the last tile (segmentLoopWgmma)
      // are in range: no clamps.
      Value rowc = wholeTiles ? row
                              : Value(arith::MinUIOp::create(b, row, idx(rows - 1)));
      Value col0c =
          wholeTiles || !wholeRuns
              ? col0
              : Value(arith::MinUIOp::create(b, col0, idx(cols - run)));
      auto bf16x8 = VectorType::get({run}, b.getBF16Type());
      Value offset = t ? mnMajorOffset(cc0, r) : coreOffset(r, cc0);
      if (!seg.format && wholeRuns) {
        // A dense run is 16 aligned bytes (rows hold whole runs; buffers
        // start 16-byte aligned): one vector load, no conversion.
        Value vec;
        if (log.mode == LoadLog::Replay) {
          vec = log.values[log.next++];
        } else {
          vec = vector::LoadOp::create(
              b, bf16x8, seg.weight[0],
              ValueRange{add(mul(rowc, colsV), col0c)},
              /*nontemporal=*/false, llvm::MaybeAlign(16));
          if (log.mode == LoadLog::Record) {
            log.values.push_back(vec);
            continue;
          }
        }
        if (!wholeTiles) {
          Value zeros = arith::ConstantOp::create(
              b, DenseElementsAttr::get(bf16x8, b.getZeroAttr(b.getBF16Type())));
          vec = select(both(rowValid, lt(col0, colsV)), vec, zeros);
        }
        vector::StoreOp::create(
            b, vec, ws, ValueRange{add(mul(stage, idx(wStageElems())), offset)},
            /*nontemporal=*/false, llvm::MaybeAlign(16));
        continue;
      }
      SmallVector<Value> values;
      for (int64_t e = 0; e < run; ++e) {
        Value col = add(col0, idx(e));
        Value colc = wholeRuns ? add(col0c, idx(e))
                               : Value(arith::MinUIOp::create(b, col,
                                                              idx(cols - 1)));
        Value w = storedWeight(seg, rowc, colc, rows, cols, &log);
        values.push_back(wholeTiles ? w
                                    : select(both(rowValid, lt(col, colsV)), w,
                                             zero));
      }
      if (log.mode == LoadLog::Record)
        continue;
      auto f32x8 = VectorType::get({run}, b.getF32Type());
      Value vec = arith::TruncFOp::create(
          b, bf16x8, vector::FromElementsOp::create(b, f32x8, values));
      vector::StoreOp::create(
          b, vec, ws, ValueRange{add(mul(stage, idx(wStageElems())), offset)},
          /*nontemporal=*/false, llvm::MaybeAlign(16));
    }
  }

  /// MMAs over the staged tiles. `acc` holds 4 f32 accumulators per m16n8
  /// fragment: (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1) for lane = 4g + t.
  SmallVector<Value> mmaTile(SmallVector<Value> acc, Value stage) {
    Value aRow = add(mul(wm, idx(s.tileM / s.warpsM)), rem(lane, 16));
    Value aCol = mul(div(lane, 16), idx(8));
    Value bRow = add(mul(wn, idx(s.tileN / s.warpsN)), rem(lane, 8));
    Value bCol = mul(rem(div(lane, 8), 2), idx(8));
    for (int64_t ks = 0; ks < s.tileK / 16; ++ks) {
      SmallVector<SmallVector<Value>> aFrag, bFrag;
      for (int64_t i = 0; i < fragsM(); ++i) {
        if (xStagedKM(spec, s)) {
          // [k][m] stage: lane l addresses row k = 16·ks + l % 8 + 8·(l / 16)
          // at m offset 8·((l / 8) % 2), so the four transposed 8 × 8 loads
          // are the (m, k) quadrants in the order of the [m][k] layout's.
          Value k = add(add(rem(lane, 8), mul(div(lane, 16), idx(8))),
                        idx(ks * 16));
          Value mRow = add(add(mul(wm, idx(s.tileM / s.warpsM)), idx(i * 16)),
                           mul(rem(div(lane, 8), 2), idx(8)));
          aFrag.push_back(mma::ldmatrix(b, xs, ValueRange{stage, k, mRow}, 4,
                                        /*transpose=*/true));
          continue;
        }
        aFrag.push_back(mma::ldmatrix(
            b, xs,
            ValueRange{stage, add(aRow, idx(i * 16)), add(aCol, idx(ks * 16))},
            4, /*transpose=*/false));
      }
      for (int64_t j = 0; j < fragsN(); ++j) {
        if (spec.transposeW) {
          // [k][n] stage: lanes 0..15 address rows k = 16·ks + lane; the
          // transposing load yields the same fragment as the [n][k] layout.
          Value k = add(rem(lane, 16), idx(ks * 16));
          Value nCol = add(mul(wn, idx(s.tileN / s.warpsN)), idx(j * 8));
          bFrag.push_back(mma::ldmatrix(b, ws, ValueRange{stage, k, nCol}, 2,
                                        /*transpose=*/true));
          continue;
        }
        bFrag.push_back(mma::ldmatrix(
            b, ws,
            ValueRange{stage, add(bRow, idx(j * 8)), add(bCol, idx(ks * 16))},
            2, /*transpose=*/false));
      }
      for (int64_t i = 0; i < fragsM(); ++i)
        for (int64_t j = 0; j < fragsN(); ++j)
          mma::mmaBF16(b, aFrag[i], bFrag[j],
                       MutableArrayRef<Value>(&acc[(i * fragsN() + j) * 4], 4));
    }
    return acc;
  }

  /// This block's K tiles [first, last): all of them, or its split-K slice
  /// (grid z).
  std::pair<Value, Value> sliceOfTiles(int64_t tiles) {
    if (spec.splitK <= 1)
      return {idx(0), idx(tiles)};
    int64_t perSlice = (tiles + spec.splitK - 1) / spec.splitK;
    Value first =
        mul(gpu::BlockIdOp::create(b, gpu::Dimension::z), idx(perSlice));
    return {first,
            arith::MinUIOp::create(b, add(first, idx(perSlice)), idx(tiles))};
  }

  /// The K loop of one segment, carrying the accumulators. Two shared stages:
  /// while the warps multiply tile t, tile t+1 is copied (X, cp.async) and
  /// dequantized (W) into the other stage; one barrier per step. (Measured on
  /// H100, fwd+bwd of a 4096² INT4 + LoRA layer at M = 2048: 7 % faster than
  /// guarding the prefetch with a branch.)
  SmallVector<Value> segmentLoop(const Segment &seg, SmallVector<Value> acc) {
    int64_t tiles = (seg.kSeg + s.tileK - 1) / s.tileK;
    auto [first, last] = sliceOfTiles(tiles);
    Value firstStage = rem(first, 2);
    loadXTile(seg, mul(first, idx(s.tileK)), firstStage);
    loadWTile(seg, mul(first, idx(s.tileK)), firstStage);
    auto loop = scf::ForOp::create(
        b, first, last, idx(1), acc,
        [&](OpBuilder &nested, Location loc, Value kt, ValueRange iter) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPoint(nested.getInsertionBlock(),
                              nested.getInsertionPoint());
          Value stage = rem(kt, 2);
          NVVM::CpAsyncWaitGroupOp::create(b, b.getI32IntegerAttr(0));
          gpu::BarrierOp::create(b);
          Value next = add(kt, idx(1));
          // Unconditional: past the last tile the loads are masked to
          // zeros. Without a branch the scheduler can overlap the next
          // tile's global loads with this tile's MMAs.
          Value nextStage = rem(next, 2);
          Value k0 = mul(next, idx(s.tileK));
          loadXTile(seg, k0, nextStage);
          loadWTile(seg, k0, nextStage);
          SmallVector<Value> out = mmaTile(SmallVector<Value>(iter), stage);
          scf::YieldOp::create(b, out);
        });
    // The next segment (or nothing) reuses the stages.
    gpu::BarrierOp::create(b);
    return SmallVector<Value>(loop.getResults());
  }

  /// The wgmma accumulators of one warpgroup's 64 × tileN tile: tileN / 2 f32
  /// per thread, in the order of the warp-level path's fragments (for each
  /// n8 column block: (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)).
  Type wgmmaAccType() {
    SmallVector<Type> fields(s.tileN / 2, b.getF32Type());
    return LLVM::LLVMStructType::getLiteral(b.getContext(), fields);
  }
  SmallVector<Value> unpackWgmma(Value acc) {
    SmallVector<Value> out;
    for (int64_t e = 0; e < s.tileN / 2; ++e)
      out.push_back(LLVM::ExtractValueOp::create(b, acc, ArrayRef<int64_t>{e}));
    return out;
  }

  /// A shared-memory matrix descriptor of `buffer`: its start address field
  /// (address / 16, 14 bits) or'ed with the constant `fields`.
  Value descriptorOf(Value buffer, int64_t fields) {
    Type i64 = b.getI64Type();
    auto c64 = [&](int64_t v) {
      return Value(arith::ConstantIntOp::create(b, i64, v));
    };
    Value addr = arith::IndexCastUIOp::create(
        b, i64, memref::ExtractAlignedPointerAsIndexOp::create(b, buffer));
    Value start = arith::AndIOp::create(
        b, arith::ShRUIOp::create(b, addr, c64(4)), c64(0x3FFF));
    return arith::OrIOp::create(b, start, c64(fields));
  }
  /// The core matrix layout (no swizzle): LBO = coreStrideBytes between
  /// K-adjacent core matrices, SBO = rowGroupBytes between row groups.
  Value descriptorBase(Value buffer) {
    return descriptorOf(buffer, (int64_t(s.coreStrideBytes() >> 4) << 16) |
                                    (int64_t(s.rowGroupBytes() >> 4) << 32));
  }
  /// Stages of 128-byte rows in the 128-byte swizzle (TMA's layout: row r's
  /// 16-byte chunk c at chunk c ⊕ (r mod 8)): layout type 1, SBO = 1024
  /// bytes between 8-row groups, LBO unused (1).
  Value descriptorBaseSwizzled(Value buffer) {
    return descriptorOf(buffer, (int64_t(1) << 16) |
                                    (int64_t(1024 >> 4) << 32) |
                                    (int64_t(1) << 62));
  }
  /// The descriptor `byteOffset` bytes past the base's start address.
  Value descriptorAt(Value base, Value byteOffset) {
    return arith::AddIOp::create(
        b, base,
        arith::IndexCastUIOp::create(b, b.getI64Type(), div(byteOffset, 16)));
  }

  /// Issues the wgmma MMAs of one staged K tile (`ksteps` k16 steps) and
  /// commits them as one group; the caller waits for it. `mnMajorB`: the
  /// weight tile is MN-major (a weight stored K × N), read transposed.
  Value wgmmaTile(Value acc, Value stage, int64_t ksteps, bool mnMajorB,
                  bool mnMajorA = false, bool swizzledA = false) {
    NVVM::WgmmaFenceAlignedOp::create(b);
    Value warpgroup = div(tid, 128);
    Value xOff = add(mul(stage, idx(xStageElems() * 2)),
                     mul(warpgroup, idx(swizzledA ? 64 * s.tileK * 2
                                                  : 64 / 8 * s.rowGroupBytes())));
    Value wOff = mul(stage, idx(wStageElems() * 2));
    auto shape = NVVM::MMAShapeAttr::get(b.getContext(), 64, s.tileN, 16);
    for (int64_t ks = 0; ks < ksteps; ++ks) {
      // Two K-adjacent core matrices per k16 step.
      int64_t kOff = ks * 2 * s.coreStrideBytes();
      // Swizzled rows: the k16 step's 32 bytes, before the swizzle.
      Value descA = swizzledA ? descriptorAt(xDescSwizzled, add(xOff, idx(ks * 32)))
                              : descriptorAt(xDesc, add(xOff, idx(kOff)));
      Value descB = descriptorAt(wDesc, add(wOff, idx(kOff)));
      acc = NVVM::WgmmaMmaAsyncOp::create(
          b, acc.getType(), acc, descA, descB, shape, NVVM::WGMMATypes::bf16,
          NVVM::WGMMATypes::bf16, NVVM::WGMMATypes::f32,
          NVVM::WGMMAScaleOut::one, NVVM::WGMMAScaleIn::one,
          NVVM::WGMMAScaleIn::one,
          mnMajorA ? NVVM::MMALayout::col : NVVM::MMALayout::row,
          mnMajorB ? NVVM::MMALayout::row : NVVM::MMALayout::col,
          /*satfinite=*/nullptr);
    }
    NVVM::WgmmaGroupSyncAlignedOp::create(b);
    return acc;
  }

  /// The wgmma K loop of one segment. X copies run `stages - 1` tiles ahead;
  /// the weight loads of tile kt + 2 are issued in step kt and kept in
  /// registers (LoadLog), and tile kt + 1 is dequantized from the loads of
  /// the step before. Per step: wait for this tile's copies, make every
  /// thread's shared writes visible to the async proxy, barrier, issue the
  /// MMAs, then (while they run) start the copies and loads ahead, dequantize
  /// the next tile into its stage, and wait for the MMAs. The barrier of a
  /// step comes after every warpgroup waited for the previous step's MMAs,
  /// so the stages written in a step are free. With MMAs in flight
  /// (mmaInFlight) a step waits only for the previous step's MMAs and starts
  /// its X copy, `stages - 2` tiles ahead, after the barrier: the stages
  /// written in a step are then those of tiles kt − 2 and earlier, free.
  Value segmentLoopWgmma(const Segment &seg, Value acc) {
    if (!xDesc) {
      xDesc = descriptorBase(xs);
      wDesc = descriptorBase(ws);
    }
    if (seg.tma && !xDescSwizzled)
      xDescSwizzled = descriptorBaseSwizzled(xs);
    int64_t tiles = (seg.kSeg + s.tileK - 1) / s.tileK;
    int64_t ksteps = std::min(s.tileK, (seg.kSeg + 15) / 16 * 16) / 16;
    int64_t stages = s.stages;
    auto [first, last] = sliceOfTiles(tiles);
    // A dense N × K weight travels with X: its copies join the X tile's
    // group, and nothing passes through registers.
    bool asyncW = denseAsyncW(seg);
    // With whole K tiles, a copy ahead of the last tile re-reads the last
    // tile (into a stage no MMA reads) instead of masking every chunk.
    bool wholeK = seg.kSeg % s.tileK == 0;
    auto copyAhead = [&](Value kt, Value stage) {
      if (seg.tma) {
        // One thread starts the TMA copy of an X tile that exists (none
        // past the last: nothing may still write a stage after the loop).
        if (asyncW) {
          copyWTile(seg, mul(arith::MinUIOp::create(b, kt, idx(tiles - 1)),
                             idx(s.tileK)),
                    stage);
          NVVM::CpAsyncCommitGroupOp::create(b);
        }
        tmaLoadX(kt, stage, tiles);
        return;
      }
      Value k0 = mul(wholeK ? Value(arith::MinUIOp::create(b, kt, idx(tiles - 1)))
                            : kt,
                     idx(s.tileK));
      if (asyncW)
        copyWTile(seg, k0, stage);
      loadXTile(seg, k0, stage, /*kInRange=*/wholeK);
    };
    // One group of MMAs in flight across the step's barrier (mmaInFlight):
    // copies run a tile less ahead.
    bool inflight = seg.tma && mmaInFlight(spec, s);
    assert(!(inflight && asyncW) && "a weight in flight is not a dense N × K");
    int64_t ahead = inflight ? stages - 2 : stages - 1;
    // A single tile is copied alone: nothing written past its stage (a
    // one-tile LoRA segment's core layout runs into the next stage).
    bool singleTile = spec.splitK <= 1 && tiles == 1;
    assert((seg.tma || singleTile ||
            s.tileM / 8 * s.rowGroupBytes() <= xStageBytes(spec, s)) &&
           "a segment's core layout overruns its stage");
    for (int64_t p = 0; p < (singleTile ? 1 : ahead); ++p) {
      Value kt = add(first, idx(p));
      copyAhead(kt, rem(kt, stages));
    }
    auto fetchW = [&](Value kt) {
      if (asyncW)
        return SmallVector<Value>();
      LoadLog log;
      log.mode = LoadLog::Record;
      // A fetch past the last tile (for a stage no MMA reads) reads the last.
      kt = arith::MinUIOp::create(b, kt, idx(tiles - 1));
      loadWTileCore(seg, mul(kt, idx(s.tileK)), Value(), log);
      return log.values;
    };
    auto storeW = [&](Value kt, Value stage, ValueRange fetched) {
      if (asyncW)
        return;
      LoadLog log;
      log.mode = LoadLog::Replay;
      log.values.assign(fetched.begin(), fetched.end());
      loadWTileCore(seg, mul(kt, idx(s.tileK)), stage, log);
      assert(log.next == log.values.size() && "replay left loads unused");
    };
    // W: tile `first` now, the loads of tile first + 1 in flight (or, for
    // an asynchronous W, the copies of the first stages with X).
    SmallVector<Value> firstTile = fetchW(first);
    storeW(first, rem(first, stages), firstTile);
    SmallVector<Value> inits{acc};
    llvm::append_range(inits, fetchW(add(first, idx(1))));
    // One K step; stageOf(d) is the stage of tile kt + d.
    auto step = [&](Value kt, function_ref<Value(int64_t)> stageOf,
                    ValueRange iter) {
      NVVM::CpAsyncWaitGroupOp::create(
          b, b.getI32IntegerAttr(singleTile ? 0 : ahead - 1));
      // This tile's TMA copy: the stage's (kt / stages)-th phase.
      if (seg.tma)
        NVVM::MBarrierTryWaitParityOp::create(
            b, barrier(stageOf(0)),
            arith::IndexCastUIOp::create(b, b.getI32Type(),
                                         rem(div(kt, stages), 2)),
            arith::ConstantIntOp::create(b, b.getI32Type(), 10000000));
      NVVM::FenceProxyOp::create(
          b, NVVM::ProxyKind::async_shared,
          NVVM::SharedSpaceAttr::get(b.getContext(),
                                     NVVM::SharedSpace::shared_cta));
      gpu::BarrierOp::create(b);
      // With MMAs in flight: the stage of tile kt + stages − 2 was last
      // read by the MMAs of tile kt − 2, which every warpgroup waited for
      // before this barrier.
      if (inflight && !singleTile)
        copyAhead(add(kt, idx(ahead)), stageOf(ahead));
      Value out = wgmmaTile(iter[0], stageOf(0), ksteps, seg.weightTransposed,
                            seg.transposed && xStagedMN(spec, s), seg.tma);
      // Past the last tile the loads are clamped (and masked or unread).
      if (!inflight && !singleTile)
        copyAhead(add(kt, idx(stages - 1)), stageOf(stages - 1));
      SmallVector<Value> yields{out};
      llvm::append_range(yields, fetchW(add(kt, idx(2))));
      // With MMAs in flight, the stage of tile kt + 1 was last read by the
      // MMAs of tile kt + 1 − stages ≤ kt − 2: done.
      storeW(add(kt, idx(1)), stageOf(1), iter.drop_front());
      NVVM::WgmmaWaitGroupSyncOp::create(b, inflight ? 1 : 0);
      return yields;
    };
    auto inLoop = [&](Value lb, Value ub, Value stepSize, ValueRange loopInits,
                      function_ref<SmallVector<Value>(Value, ValueRange)> body) {
      auto loop = scf::ForOp::create(
          b, lb, ub, stepSize, loopInits,
          [&](OpBuilder &nested, Location, Value iv, ValueRange iter) {
            OpBuilder::InsertionGuard guard(b);
            b.setInsertionPoint(nested.getInsertionBlock(),
                                nested.getInsertionPoint());
            scf::YieldOp::create(b, body(iv, iter));
          });
      return SmallVector<Value>(loop.getResults());
    };
    SmallVector<Value> results;
    if (spec.splitK <= 1) {
      // The K loop unrolled by the stage count: each copy of the step works
      // on constant stages (constant shared offsets, no stage arithmetic);
      // the tiles past the last whole round follow unrolled.
      int64_t rounds = tiles / stages;
      results = inLoop(idx(0), idx(rounds * stages), idx(stages), inits,
                       [&](Value kt0, ValueRange iter) {
                         SmallVector<Value> carried(iter);
                         for (int64_t j = 0; j < stages; ++j)
                           carried = step(add(kt0, idx(j)),
                                          [&](int64_t d) {
                                            return idx((j + d) % stages);
                                          },
                                          carried);
                         return carried;
                       });
      for (int64_t kt = rounds * stages; kt < tiles; ++kt)
        results = step(idx(kt),
                       [&](int64_t d) { return idx((kt + d) % stages); },
                       results);
    } else {
      results = inLoop(first, last, idx(1), inits,
                       [&](Value kt, ValueRange iter) {
                         return step(kt,
                                     [&](int64_t d) {
                                       return rem(add(kt, idx(d)), stages);
                                     },
                                     iter);
                       });
    }
    // The next segment (or nothing) reuses the stages.
    if (inflight)
      NVVM::WgmmaWaitGroupSyncOp::create(b, 0);
    NVVM::CpAsyncWaitGroupOp::create(b, b.getI32IntegerAttr(0));
    gpu::BarrierOp::create(b);
    return results[0];
  }

  /// TMA: the mbarrier of `stage`, as a shared pointer.
  Value barrier(Value stage) {
    Value addr = add(memref::ExtractAlignedPointerAsIndexOp::create(b, bars),
                     mul(stage, idx(8)));
    return LLVM::IntToPtrOp::create(
        b, LLVM::LLVMPointerType::get(b.getContext(), 3),
        Value(arith::IndexCastUIOp::create(b, b.getI64Type(), addr)));
  }
  /// TMA: thread 0 initializes the stages' mbarriers (one arrival each:
  /// the copy's issuer, plus the copy's bytes) before any copy starts.
  void initBarriers() {
    auto first = scf::IfOp::create(b, arith::CmpIOp::create(
                                          b, arith::CmpIPredicate::eq, tid, idx(0)),
                                   false);
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(first.thenBlock());
      for (int64_t i = 0; i < s.stages; ++i)
        NVVM::MBarrierInitOp::create(
            b, barrier(idx(i)),
            arith::ConstantIntOp::create(b, b.getI32Type(), 1), Value());
      NVVM::FenceProxyOp::create(
          b, NVVM::ProxyKind::async_shared,
          NVVM::SharedSpaceAttr::get(b.getContext(),
                                     NVVM::SharedSpace::shared_cta));
    }
    gpu::BarrierOp::create(b);
  }
  /// TMA: thread 0 starts the copy of X tile `kt` (rows rowBase.., K
  /// columns kt · tileK..) into `stage`, if the tile exists: the stage's
  /// mbarrier expects its bytes, and the copy completes them.
  void tmaLoadX(Value kt, Value stage, int64_t tiles) {
    Value issue = both(arith::CmpIOp::create(b, arith::CmpIPredicate::eq, tid, idx(0)),
                       lt(kt, idx(tiles)));
    auto guard = scf::IfOp::create(b, issue, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(guard.thenBlock());
    Type i32 = b.getI32Type();
    Value bar = barrier(stage);
    NVVM::MBarrierArriveExpectTxOp::create(
        b, Type(), bar,
        arith::ConstantIntOp::create(b, i32, s.tileM * s.tileK * 2),
        NVVM::MemScopeKind::CTA, /*relaxed=*/false, Value());
    Value dst = LLVM::IntToPtrOp::create(
        b, LLVM::LLVMPointerType::get(b.getContext(), 3),
        Value(arith::IndexCastUIOp::create(
            b, b.getI64Type(),
            add(memref::ExtractAlignedPointerAsIndexOp::create(b, xs),
                mul(stage, idx(xStageElems() * 2))))));
    // The CTA's own shared address, as the shared::cluster address of the
    // executing CTA (the copy's destination space).
    dst = LLVM::AddrSpaceCastOp::create(
        b, LLVM::LLVMPointerType::get(b.getContext(), 7), dst);
    Value coords[] = {
        arith::IndexCastUIOp::create(b, i32, mul(kt, idx(s.tileK))),
        arith::IndexCastUIOp::create(b, i32, rowBase)};
    NVVM::CpAsyncBulkTensorGlobalToSharedClusterOp::create(
        b, dst, tensorMap, coords, bar, ValueRange{}, Value(), Value(),
        NVVM::TMALoadMode::TILE, /*isCTAOnly=*/false,
        NVVM::CTAGroupKindAttr(), Value());
  }

  /// The wgmma path stages a dense weight stored N × K with 16-byte aligned
  /// rows like X (copyWTile), not through registers.
  bool denseAsyncW(const Segment &seg) const {
    return s.wgmma && !seg.format && !seg.weightTransposed && seg.kSeg % 8 == 0;
  }
  /// Starts copying the W tile of K offset `k0` of such a weight into stage
  /// `stage`: 16-byte cp.async chunks into its K-major core matrices,
  /// zero-filled past N and K; the caller's X tile commits them.
  void copyWTile(const Segment &seg, Value k0, Value stage) {
    int64_t chunksPerRow = s.tileK / 8;
    Value kSeg = idx(seg.kSeg), n = idx(spec.n);
    forEachChunk(s.tileN * chunksPerRow, [&](Value c) {
      Value r = div(c, chunksPerRow);
      Value kc = mul(rem(c, chunksPerRow), idx(8));
      Value gn = add(colBase, r), gk = add(k0, kc);
      Value valid = both(lt(gn, n), lt(gk, kSeg));
      Value src = select(valid, add(mul(gn, kSeg), gk), idx(0));
      Value count = select(valid, idx(8), idx(0));
      nvgpu::DeviceAsyncCopyOp::create(
          b, nvgpu::DeviceAsyncTokenType::get(b.getContext()), ws,
          ValueRange{add(mul(stage, idx(wStageElems())), coreOffset(r, kc))},
          seg.weight[0], ValueRange{src}, b.getIndexAttr(8), count,
          /*bypassL1=*/UnitAttr());
    });
  }

  /// Where the accumulators live: element (i, j, h, e) of a thread (lane =
  /// 4g + t) is acc[accIndex(i, j, h, e)], at row tileRow(i, h) of the tile
  /// (add rowBase for the output's) and output column outputCol(j, e).
  int64_t accIndex(int64_t i, int64_t j, int64_t h, int64_t e) const {
    return (i * fragsN() + j) * 4 + h * 2 + e;
  }
  Value tileRow(int64_t i, int64_t h) {
    return add(mul(wm, idx(s.tileM / s.warpsM)),
               add(div(lane, 4), idx(i * 16 + h * 8)));
  }
  /// The column of element e of fragment j in the block's tile, and in the
  /// output.
  Value tileCol(int64_t j, int64_t e) {
    return add(mul(wn, idx(s.tileN / s.warpsN)),
               add(mul(rem(lane, 4), idx(2)), idx(j * 8 + e)));
  }
  Value outputCol(int64_t j, int64_t e) { return add(colBase, tileCol(j, e)); }

  /// Calls fn(row, col, value) for every accumulator element inside the M×N
  /// output, inside a guard that masks the tails.
  void forEachOutput(ArrayRef<Value> acc,
                     function_ref<void(Value, Value, Value)> fn) {
    Value n = idx(spec.n);
    for (int64_t i = 0; i < fragsM(); ++i)
      for (int64_t j = 0; j < fragsN(); ++j)
        for (int64_t h = 0; h < 2; ++h)
          for (int64_t e = 0; e < 2; ++e) {
            Value row = add(rowBase, tileRow(i, h));
            Value col = outputCol(j, e);
            Value v = acc[accIndex(i, j, h, e)];
            auto inBounds =
                scf::IfOp::create(b, both(lt(row, m), lt(col, n)), false);
            OpBuilder::InsertionGuard guard(b);
            b.setInsertionPointToStart(inBounds.thenBlock());
            fn(row, col, v);
          }
  }

  /// Gradient of a float component: atomically adds acc · ∂w/∂c into the f32
  /// gradient at the component element each (row, col) of dW depends on.
  void gradientEpilogue(ArrayRef<Value> acc, ValueRange components, Value out) {
    Value scale = arith::ConstantOp::create(
        b, b.getF32FloatAttr(float(spec.outputScale)));
    if (spec.gradRows % s.tileM == 0 && spec.n % s.tileN == 0) {
      reducedGradientEpilogue(acc, components, out, scale);
      return;
    }
    forEachOutput(acc, [&](Value row, Value col, Value v) {
      GlobalComponentAccess access(components);
      // The weight is spec.gradRows × spec.n.
      auto [d, index] = spec.gradFormat.emitDerivative(
          b, b.getLoc(), row, col, spec.gradRows, spec.n, spec.gradComponent,
          access);
      Value term =
          arith::MulFOp::create(b, arith::MulFOp::create(b, v, scale), d);
      memref::AtomicRMWOp::create(b, arith::AtomicRMWKind::addf, term, out,
                                  ValueRange{index});
    });
  }

  /// The gradient epilogue over whole tiles (no element out of range). A
  /// thread holds 2 · fragsN elements of each of its rows; where their terms
  /// all feed one component element (a uniform format's scale of a group at
  /// least as wide as the tile), they are summed in registers and added with
  /// one atomic, else each is added by its own (formats whose component
  /// changes within the thread's columns). One atomic per element made the
  /// 16 M same-address additions of a 4096² PEQA scale gradient the cost.
  void reducedGradientEpilogue(ArrayRef<Value> acc, ValueRange components,
                               Value out, Value scale) {
    auto atomicAdd = [&](Value term, Value index) {
      memref::AtomicRMWOp::create(b, arith::AtomicRMWKind::addf, term, out,
                                  ValueRange{index});
    };
    for (int64_t i = 0; i < fragsM(); ++i)
      for (int64_t h = 0; h < 2; ++h) {
        Value row = add(rowBase, tileRow(i, h));
        SmallVector<Value> terms, indices;
        for (int64_t j = 0; j < fragsN(); ++j)
          for (int64_t e = 0; e < 2; ++e) {
            GlobalComponentAccess access(components);
            auto [d, index] = spec.gradFormat.emitDerivative(
                b, b.getLoc(), row, outputCol(j, e), spec.gradRows, spec.n,
                spec.gradComponent, access);
            Value v = acc[accIndex(i, j, h, e)];
            terms.push_back(arith::MulFOp::create(
                b, arith::MulFOp::create(b, v, scale), d));
            indices.push_back(index);
          }
        Value same = arith::ConstantIntOp::create(b, b.getI1Type(), 1);
        for (size_t k = 1; k < indices.size(); ++k)
          same = both(same, arith::CmpIOp::create(b, arith::CmpIPredicate::eq,
                                                  indices[k], indices[0]));
        auto oneGroup = scf::IfOp::create(b, same, /*withElseRegion=*/true);
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(oneGroup.thenBlock());
        Value sum = terms[0];
        for (size_t k = 1; k < terms.size(); ++k)
          sum = arith::AddFOp::create(b, sum, terms[k]);
        atomicAdd(sum, indices[0]);
        b.setInsertionPointToStart(oneGroup.elseBlock());
        for (size_t k = 0; k < terms.size(); ++k)
          atomicAdd(terms[k], indices[k]);
      }
  }

  /// QFT: one Lion step on the tile's codes and momentum (see GemmSpec). Every
  /// thread runs every statement (whole tiles, no guards), so the quad
  /// shuffles and the barrier are uniform.
  void qftEpilogue(ArrayRef<Value> acc, Value codes, ValueRange params,
                   Value mBuf, Value msBuf, Value lrBuf, Value rowMax) {
    Type f32 = b.getF32Type(), i32 = b.getI32Type();
    auto cf = [&](double v) {
      return Value(arith::ConstantOp::create(b, b.getF32FloatAttr(float(v))));
    };
    auto fadd = [&](Value x, Value y) { return Value(arith::AddFOp::create(b, x, y)); };
    auto fmul = [&](Value x, Value y) { return Value(arith::MulFOp::create(b, x, y)); };
    auto fmax = [&](Value x, Value y) { return Value(arith::MaximumFOp::create(b, x, y)); };
    auto mix = [&](double beta, Value x, Value y) {
      return fadd(fmul(cf(beta), x), fmul(cf(1 - beta), y));
    };
    auto shuffleXor = [&](Value v, int32_t offset) {
      return gpu::ShuffleOp::create(b, v, offset, 32, gpu::ShuffleMode::XOR)
          .getShuffleResult();
    };
    int64_t k = spec.n, block = s.tileN;
    int64_t groupSize = spec.qftFormat.getGroupSize(k), groups = k / groupSize;
    bool symmetric = spec.qftFormat.getSymmetric();
    Value t = rem(lane, 4);
    Value lr = memref::LoadOp::create(b, lrBuf, idx(0));
    // The momentum block of a row of this tile.
    auto blockOf = [&](Value row) {
      return add(mul(row, idx(k / block)), div(colBase, block));
    };
    Value outScale = cf(spec.outputScale);
    // The old momentum scale of each of the thread's rows, read before the
    // barrier (after it the block's leader overwrites it).
    SmallVector<Value> oldScales;
    for (int64_t i = 0; i < fragsM(); ++i)
      for (int64_t h = 0; h < 2; ++h)
        oldScales.push_back(memref::LoadOp::create(
            b, msBuf, blockOf(add(rowBase, tileRow(i, h)))));
    // The new momentum and the update direction of one element, from its
    // dW and its old momentum. Computed once for the row maxima and again
    // for the update, so that no per-element array stays live across the
    // barrier (a 64 × 256 wgmma tile holds 128 accumulators a thread).
    auto momentum = [&](int64_t i, int64_t j, int64_t h, int64_t e,
                        Value row) -> std::pair<Value, Value> {
      Value dw = fmul(acc[accIndex(i, j, h, e)], outScale);
      Value code = memref::LoadOp::create(
          b, mBuf, add(mul(row, idx(k)), outputCol(j, e)));
      Value m = fmul(arith::SIToFPOp::create(b, f32, code), oldScales[i * 2 + h]);
      return {mix(spec.qftBeta2, m, dw), mix(spec.qftBeta1, m, dw)};
    };
    // Row absmax of the new momentum over the tile's columns (one block):
    // within the thread, the quad, then the warps of the row via shared memory.
    for (int64_t i = 0; i < fragsM(); ++i)
      for (int64_t h = 0; h < 2; ++h) {
        Value row = add(rowBase, tileRow(i, h));
        Value local = cf(0);
        for (int64_t j = 0; j < fragsN(); ++j)
          for (int64_t e = 0; e < 2; ++e) {
            Value v = momentum(i, j, h, e, row).first;
            local = fmax(local, fmax(v, arith::NegFOp::create(b, v)));
          }
        local = fmax(local, shuffleXor(local, 1));
        local = fmax(local, shuffleXor(local, 2));
        auto first = scf::IfOp::create(
            b, arith::CmpIOp::create(b, arith::CmpIPredicate::eq, t, idx(0)), false);
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(first.thenBlock());
        memref::StoreOp::create(b, local, rowMax, ValueRange{tileRow(i, h), wn});
      }
    // Every thread has read the old momentum scales before this barrier.
    gpu::BarrierOp::create(b);
    Value leader = both(arith::CmpIOp::create(b, arith::CmpIPredicate::eq, t, idx(0)),
                        arith::CmpIOp::create(b, arith::CmpIPredicate::eq, wn, idx(0)));
    for (int64_t i = 0; i < fragsM(); ++i)
      for (int64_t h = 0; h < 2; ++h) {
        Value row = add(rowBase, tileRow(i, h));
        Value absmax = cf(0);
        for (int64_t w = 0; w < s.warpsN; ++w)
          absmax = fmax(absmax, memref::LoadOp::create(
                                    b, rowMax, ValueRange{tileRow(i, h), idx(w)}));
        Value scale = arith::DivFOp::create(b, absmax, cf(127));
        Value positive =
            arith::CmpFOp::create(b, arith::CmpFPredicate::OGT, scale, cf(0));
        Value divisor = select(positive, scale, cf(1));
        {
          auto write = scf::IfOp::create(b, leader, false);
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(write.thenBlock());
          memref::StoreOp::create(b, scale, msBuf, blockOf(row));
        }
        for (int64_t j = 0; j < fragsN(); ++j) {
          Value col0 = outputCol(j, 0);
          Value word = add(mul(row, idx(k / 4)), div(col0, 4));
          Value packed = memref::LoadOp::create(b, codes, word);
          Value shift0 = arith::IndexCastUIOp::create(
              b, i32, mul(rem(col0, 4), idx(8)));
          Value half;
          for (int64_t e = 0; e < 2; ++e) {
            Value col = outputCol(j, e), flat = add(mul(row, idx(k)), col);
            auto [mNew, d] = momentum(i, j, h, e, row);
            // Momentum: requantized with the block's new scale.
            Value q = roundEvenF32(b, arith::DivFOp::create(b, mNew, divisor));
            q = select(positive, q, cf(0));
            memref::StoreOp::create(
                b, arith::FPToSIOp::create(b, b.getI8Type(), q), mBuf, flat);
            // Weight: decode, Lion step, requantize with the fixed scale.
            Value shift = arith::AddIOp::create(
                b, shift0, arith::ConstantIntOp::create(b, i32, 8 * e));
            Value byte = arith::AndIOp::create(
                b, arith::ShRUIOp::create(b, packed, shift),
                arith::ConstantIntOp::create(b, i32, 255));
            Value group = add(mul(row, idx(groups)), div(col, groupSize));
            Value sc = memref::LoadOp::create(b, params[0], group);
            if (!sc.getType().isF32())
              sc = extToF32(sc);
            Value z = symmetric ? cf(128) : memref::LoadOp::create(b, params[1], group);
            if (!z.getType().isF32())
              z = extToF32(z);
            Value w = fmul(sc, arith::SubFOp::create(
                                   b, arith::UIToFPOp::create(b, f32, byte), z));
            Value sign = select(
                arith::CmpFOp::create(b, arith::CmpFPredicate::OGT, d, cf(0)), cf(1),
                select(arith::CmpFOp::create(b, arith::CmpFPredicate::OLT, d, cf(0)),
                       cf(-1), cf(0)));
            if (spec.qftWeightDecay != 0)
              sign = fadd(sign, fmul(cf(spec.qftWeightDecay), w));
            Value wNew = arith::SubFOp::create(b, w, fmul(lr, sign));
            Value qw = roundEvenF32(b, fadd(arith::DivFOp::create(b, wNew, sc), z));
            qw = arith::MinimumFOp::create(b, fmax(qw, cf(0)), cf(255));
            Value code = arith::ShLIOp::create(
                b, arith::FPToUIOp::create(b, i32, qw),
                arith::ConstantIntOp::create(b, i32, 8 * e));
            half = half ? Value(arith::OrIOp::create(b, half, code)) : code;
          }
          // Lanes t and t ^ 1 hold the two halves of one 4-code word; the
          // even lane writes it.
          Value other = shuffleXor(half, 1);
          auto even = scf::IfOp::create(
              b, arith::CmpIOp::create(b, arith::CmpIPredicate::eq, rem(t, 2), idx(0)),
              false);
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(even.thenBlock());
          Value full = arith::OrIOp::create(
              b, half,
              arith::ShLIOp::create(b, other, arith::ConstantIntOp::create(b, i32, 16)));
          memref::StoreOp::create(b, full, codes, word);
        }
      }
  }

  /// Scale, bias, residual, tail masks and bf16 stores.
  void epilogue(ArrayRef<Value> acc, Value bias, Value residual, Value y) {
    Value n = idx(spec.n);
    Value scale = arith::ConstantOp::create(
        b, b.getF32FloatAttr(float(spec.outputScale)));
    // Split-K partials go to slice z of the workspace.
    Value sliceBase =
        spec.splitK > 1
            ? mul(gpu::BlockIdOp::create(b, gpu::Dimension::z), mul(m, n))
            : Value();
    if (!sliceBase && !spec.outputF32 && spec.n % 2 == 0) {
      pairedEpilogue(acc, bias, residual, y, scale);
      return;
    }
    forEachOutput(acc, [&](Value row, Value col, Value v) {
      Value flatIdx = add(mul(row, n), col);
      // Split products are plain: no bias or residual.
      v = outputValue(v, scale, bias, residual, col, flatIdx);
      if (sliceBase) {
        memref::StoreOp::create(b, v, y, add(sliceBase, flatIdx));
        return;
      }
      if (!spec.outputF32)
        v = arith::TruncFOp::create(b, b.getBF16Type(), v);
      memref::StoreOp::create(b, v, y, flatIdx);
    });
  }

  /// An accumulator as the product's output element: scaled, plus bias[col]
  /// and residual[at] (indices in range).
  Value outputValue(Value v, Value scale, Value bias, Value residual,
                    Value col, Value at) {
    if (spec.outputScale != 1.0)
      v = arith::MulFOp::create(b, v, scale);
    if (bias)
      v = arith::AddFOp::create(b, v,
                                extToF32(memref::LoadOp::create(b, bias, col)));
    if (residual)
      v = arith::AddFOp::create(
          b, v, extToF32(memref::LoadOp::create(b, residual, at)));
    return v;
  }

  /// One bf16 pair of a thread's output: accumulator fragment (i, j, h),
  /// columns outputCol(j, 0) and the next.
  struct OutputPair {
    int64_t i, j, h;
    Value value; // vector<2xbf16>
  };
  /// Whether outputs go out through shared memory: the wgmma path, whose X
  /// stages (free after the K loop) hold the block's tile with rows padded
  /// by 16 bytes, rows of whole 16-byte chunks, and chunks that the threads
  /// share evenly.
  bool stagesOutput() const {
    return s.wgmma && spec.n % 8 == 0 &&
           xsBytes(spec, s) >= s.tileM * (s.tileN + 8) * 2 &&
           (s.tileM * s.tileN / 8) % s.threads() == 0;
  }
  /// Stores the bf16 pairs of every thread into y (N columns). Staged: each
  /// thread writes its pairs into the tile in shared memory (4-byte stores;
  /// the 16-byte row padding puts a warp's 8 rows × 4 pairs in distinct
  /// banks), a barrier, then each thread stores whole 16-byte chunks of rows
  /// in range (a warp writes 512 contiguous bytes of two rows instead of
  /// 16-byte pieces of eight rows per instruction). Else each in-range pair
  /// is stored with one 4-byte store.
  void storeOutputPairs(ArrayRef<OutputPair> pairs, Value y) {
    Value n = idx(spec.n);
    if (!stagesOutput()) {
      for (const OutputPair &p : pairs) {
        Value row = add(rowBase, tileRow(p.i, p.h)), col = outputCol(p.j, 0);
        auto inBounds =
            scf::IfOp::create(b, both(lt(row, m), lt(col, n)), false);
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(inBounds.thenBlock());
        vector::StoreOp::create(b, p.value, y, ValueRange{add(mul(row, n), col)},
                                /*nontemporal=*/false, llvm::MaybeAlign(4));
      }
      return;
    }
    int64_t stride = s.tileN + 8;
    for (const OutputPair &p : pairs)
      vector::StoreOp::create(
          b, p.value, xs,
          ValueRange{add(mul(tileRow(p.i, p.h), idx(stride)), tileCol(p.j, 0))},
          /*nontemporal=*/false, llvm::MaybeAlign(4));
    gpu::BarrierOp::create(b);
    int64_t chunksPerRow = s.tileN / 8;
    auto bf16x8 = VectorType::get({8}, b.getBF16Type());
    for (int64_t i = 0; i < s.tileM * chunksPerRow / s.threads(); ++i) {
      auto [r, chunk] = itemAt(i, chunksPerRow);
      Value c0 = mul(chunk, idx(8));
      Value vec = vector::LoadOp::create(
          b, bf16x8, xs, ValueRange{add(mul(r, idx(stride)), c0)},
          /*nontemporal=*/false, llvm::MaybeAlign(16));
      Value row = add(rowBase, r), col = add(colBase, c0);
      auto inBounds = scf::IfOp::create(b, both(lt(row, m), lt(col, n)), false);
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(inBounds.thenBlock());
      vector::StoreOp::create(b, vec, y, ValueRange{add(mul(row, n), col)},
                              /*nontemporal=*/false, llvm::MaybeAlign(16));
    }
  }

  /// The bf16 epilogue over rows of even length: a thread's two adjacent
  /// columns (an even one and the next, in range together) are one pair of
  /// storeOutputPairs (scalar 2-byte stores made the 8192 × 4096 forward
  /// product 12 % slower than 4-byte ones).
  void pairedEpilogue(ArrayRef<Value> acc, Value bias, Value residual, Value y,
                      Value scale) {
    Value n = idx(spec.n);
    auto bf16x2 = VectorType::get({2}, b.getBF16Type());
    auto f32x2 = VectorType::get({2}, b.getF32Type());
    SmallVector<OutputPair> pairs;
    for (int64_t i = 0; i < fragsM(); ++i)
      for (int64_t j = 0; j < fragsN(); ++j)
        for (int64_t h = 0; h < 2; ++h) {
          Value row = add(rowBase, tileRow(i, h));
          Value col = outputCol(j, 0);
          Value valid = both(lt(row, m), lt(col, n));
          // Out of range: read the first elements (the pair is not stored).
          Value at = select(valid, add(mul(row, n), col), idx(0));
          Value colAt = select(valid, col, idx(0));
          SmallVector<Value> values;
          for (int64_t e = 0; e < 2; ++e)
            values.push_back(outputValue(acc[accIndex(i, j, h, e)], scale,
                                         bias, residual, add(colAt, idx(e)),
                                         add(at, idx(e))));
          pairs.push_back(
              {i, j, h,
               arith::TruncFOp::create(
                   b, bf16x2,
                   vector::FromElementsOp::create(b, f32x2, values))});
        }
    storeOutputPairs(pairs, y);
  }

  /// `v` rounded to bf16, as f32. By bits: the kernel's ops carry the
  /// contract flag, under which extf(truncf(v)) folds to v.
  Value roundedToBF16(Value v) {
    Value bits = arith::BitcastOp::create(
        b, b.getI16Type(), arith::TruncFOp::create(b, b.getBF16Type(), v));
    Value wide = arith::ShLIOp::create(
        b, arith::ExtUIOp::create(b, b.getI32Type(), bits),
        arith::ConstantIntOp::create(b, b.getI32Type(), 16));
    return arith::BitcastOp::create(b, b.getF32Type(), wide);
  }

  /// The MSE epilogue (GemmSpec::mseLoss): per element the bf16 prediction
  /// y as epilogue() would store it, d = y − target, the gradient
  /// factor · d stored in bf16; each thread sums d² over its elements (zero
  /// out of range), a warp's sums are reduced by shuffles and its first lane
  /// adds sum / count to the loss. The same arithmetic as the fused MSE
  /// kernel over a stored y, so the gradient is the same to the bit; the
  /// loss differs only in the order of its additions. A thread's targets are
  /// all loaded before its first store (a store may alias them, so loads
  /// after it would wait for it), two adjacent columns at a time when rows
  /// have an even length (4-byte loads and stores).
  void mseEpilogue(ArrayRef<Value> acc, Value bias, Value residual, Value grad,
                   Value target, Value loss) {
    assert(spec.splitK <= 1 && "an MSE epilogue needs whole sums");
    Value n = idx(spec.n);
    auto f32c = [&](double v) {
      return Value(arith::ConstantOp::create(b, b.getF32FloatAttr(float(v))));
    };
    Value scale = f32c(spec.outputScale);
    Value factor = f32c(spec.mseGradFactor);
    Value zeroF = f32c(0);
    bool pairs = spec.n % 2 == 0;
    int64_t width = pairs ? 2 : 1;
    auto bf16s = VectorType::get({width}, b.getBF16Type());
    auto f32s = VectorType::get({width}, b.getF32Type());
    struct Item {
      Value valid, at, col, targets; // in range or 0; targets: width f32
      int64_t first;                 // accumulator index of its first element
      int64_t i, j, h;               // its fragment
    };
    SmallVector<OutputPair> gradPairs;
    SmallVector<Item> items;
    for (int64_t i = 0; i < fragsM(); ++i)
      for (int64_t j = 0; j < fragsN(); ++j)
        for (int64_t h = 0; h < 2; ++h)
          for (int64_t e = 0; e < 2; e += width) {
            Value row = add(rowBase, tileRow(i, h));
            Value col = outputCol(j, e); // even: a pair never crosses n
            Value valid = both(lt(row, m), lt(col, n));
            // Out of range: read element 0 and count nothing.
            Value at = select(valid, add(mul(row, n), col), idx(0));
            Value t = vector::LoadOp::create(b, bf16s, target, ValueRange{at},
                                             /*nontemporal=*/false,
                                             llvm::MaybeAlign(2 * width));
            items.push_back({valid, at, select(valid, col, idx(0)),
                             arith::ExtFOp::create(b, f32s, t,
                                                   arith::FastMathFlagsAttr()),
                             accIndex(i, j, h, e), i, j, h});
          }
    Value sum = zeroF;
    for (const Item &item : items) {
      SmallVector<Value> grads;
      for (int64_t e = 0; e < width; ++e) {
        Value v = outputValue(acc[item.first + e], scale, bias, residual,
                              add(item.col, idx(e)), add(item.at, idx(e)));
        Value yv = roundedToBF16(v);
        Value d = arith::SubFOp::create(
            b, yv,
            vector::ExtractOp::create(b, item.targets, ArrayRef<int64_t>{e}));
        d = select(item.valid, d, zeroF);
        sum = arith::AddFOp::create(b, sum, arith::MulFOp::create(b, d, d));
        grads.push_back(arith::MulFOp::create(b, d, factor));
      }
      Value g = arith::TruncFOp::create(
          b, bf16s, vector::FromElementsOp::create(b, f32s, grads));
      if (pairs) {
        gradPairs.push_back({item.i, item.j, item.h, g});
        continue;
      }
      auto inBounds = scf::IfOp::create(b, item.valid, false);
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(inBounds.thenBlock());
      vector::StoreOp::create(b, g, grad, ValueRange{item.at},
                              /*nontemporal=*/false,
                              llvm::MaybeAlign(2 * width));
    }
    if (pairs)
      storeOutputPairs(gradPairs, grad);
    for (int32_t offset = 16; offset >= 1; offset /= 2)
      sum = arith::AddFOp::create(
          b, sum,
          gpu::ShuffleOp::create(b, sum, offset, 32, gpu::ShuffleMode::XOR)
              .getShuffleResult());
    auto first = scf::IfOp::create(
        b, arith::CmpIOp::create(b, arith::CmpIPredicate::eq, lane, idx(0)),
        false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(first.thenBlock());
    memref::AtomicRMWOp::create(
        b, arith::AtomicRMWKind::addf,
        arith::MulFOp::create(b, sum, f32c(1.0 / double(spec.mseCount))), loss,
        ValueRange{idx(0)});
  }

private:
  ImplicitLocOpBuilder &b;
  const GemmSpec &spec;
  const GemmSchedule &s;
  Value xs, ws, m;
  Value tid, lane, wm, wn, rowBase, colBase;
  Value xDesc, wDesc; // wgmma descriptor bases of the X and W stages
  Value xDescSwizzled; // of the X stages in the 128-byte swizzle (TMA)

public:
  Value tensorMap; // TMA: the generic address of X's tensor map
  Value bars;      // TMA: the stages' mbarriers (memref<stages x i64>)
};

} // namespace

std::string gemmKernelName(const GemmSpec &spec) {
  std::string name;
  llvm::raw_string_ostream os(name);
  auto formatName = [&](QuantFormatAttrInterface f, int64_t k) {
    StringRef kind = f.getAbstractAttribute().getName();
    kind.consume_front("qtune.");
    os << kind;
    if (!isdigit(kind.back())) // nf4 says its bits already
      os << f.getBits();
    int64_t group = f.getGroupSize(k);
    if (group == k)
      os << "c"; // per channel
    else
      os << "g" << group;
  };
  if (spec.qftFormat)
    os << "qft_lion_";
  else if (spec.gradFormat)
    os << "peqa_scale_grad_";
  else if (spec.transposeX)
    os << "weight_grad_";
  else if (spec.transposeW)
    os << "linear_input_grad_";
  else
    os << "linear_";
  // The weight's format (for the gradient and QFT epilogues, the format of
  // the weight they update).
  QuantFormatAttrInterface f = spec.qftFormat   ? spec.qftFormat
                               : spec.gradFormat ? spec.gradFormat
                                                 : spec.format;
  int64_t k = spec.gradFormat || spec.qftFormat ? spec.n : spec.k;
  if (f)
    formatName(f, k);
  else
    os << "bf16";
  if (spec.loraRank)
    os << "_lora" << spec.loraRank;
  if (spec.hasBias)
    os << "_bias";
  if (spec.hasResidual)
    os << "_residual";
  if (spec.mseLoss)
    os << "_mse";
  os << "_n" << spec.n << "k" << spec.k;
  if (spec.splitK > 1)
    os << "_splitk" << spec.splitK;
  return name;
}

gpu::GPUFuncOp buildGemmKernel(OpBuilder &builder, Location loc, StringRef name,
                               const GemmSpec &spec,
                               const GemmSchedule &schedule) {
  MLIRContext *ctx = builder.getContext();
  Type bf16 = builder.getBF16Type();
  SmallVector<Type> args{flat(bf16)};
  if (spec.format)
    for (Type t : spec.componentTypes)
      args.push_back(flat(t));
  else
    args.push_back(flat(bf16));
  for (Type t : spec.gradComponentTypes)
    args.push_back(flat(t));
  if (spec.hasBias)
    args.push_back(flat(bf16));
  if (spec.hasResidual)
    args.push_back(flat(bf16));
  if (spec.loraRank) {
    args.push_back(flat(bf16)); // T
    args.push_back(flat(bf16)); // B
  }
  if (spec.qftFormat) {
    args.push_back(flat(builder.getI32Type())); // codes
    for (Type t : spec.qftParamTypes)
      args.push_back(flat(t));
    args.push_back(flat(builder.getI8Type()));  // m
    args.push_back(flat(builder.getF32Type())); // m_scales
    args.push_back(flat(builder.getF32Type())); // lr
    if (spec.qftGuarded)
      args.push_back(flat(builder.getF32Type())); // loss
  } else {
    args.push_back(flat(spec.gradFormat || spec.outputF32 || spec.splitK > 1
                            ? builder.getF32Type()
                            : bf16)); // y
  }
  if (spec.mseLoss) {
    args.push_back(flat(bf16));                   // target
    args.push_back(flat(builder.getF32Type())); // loss
  }
  args.push_back(builder.getIndexType()); // M
  if (spec.tmaX)
    args.push_back(builder.getI64Type()); // X's tensor map (device address)

  auto workgroup = gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
  // Rows padded by 8 elements (16 bytes): ldmatrix rows stay 16-byte aligned
  // and consecutive rows start in different banks.
  auto xsType = MemRefType::get(
      xStagedKM(spec, schedule)
          ? ArrayRef<int64_t>{2, schedule.tileK, schedule.tileM + 8}
          : ArrayRef<int64_t>{2, schedule.tileM, schedule.tileK + 8},
      bf16, MemRefLayoutAttrInterface(), workgroup);
  if (schedule.wgmma) // flat stages of core matrices
    xsType = MemRefType::get({xsBytes(spec, schedule) / 2}, bf16,
                             MemRefLayoutAttrInterface(), workgroup);
  assert((schedule.wgmma || !spec.loraRank ||
          spec.transposeW == spec.loraWeightTransposed) &&
         "every segment of a warp-level kernel shares the W stage layout");
  auto wsType = MemRefType::get(spec.transposeW
                                    ? ArrayRef<int64_t>{2, schedule.tileK,
                                                        schedule.tileN + 8}
                                    : ArrayRef<int64_t>{2, schedule.tileN,
                                                        schedule.tileK + 8},
                                bf16,
                                MemRefLayoutAttrInterface(), workgroup);
  if (schedule.wgmma)
    wsType = MemRefType::get({wsBytes(spec, schedule) / 2}, bf16,
                             MemRefLayoutAttrInterface(), workgroup);
  // Per-row, per-warp absmax of the new momentum (QFT).
  auto rowMaxType = MemRefType::get({schedule.tileM, schedule.warpsN},
                                    builder.getF32Type(),
                                    MemRefLayoutAttrInterface(), workgroup);
  bool dynamicShared = gemmUsesDynamicShared(spec, schedule);
  SmallVector<Type> workgroupTypes;
  if (!dynamicShared) {
    workgroupTypes = {xsType, wsType};
    if (spec.qftFormat)
      workgroupTypes.push_back(rowMaxType);
  }
  auto func = gpu::GPUFuncOp::create(builder, loc, name,
                                     FunctionType::get(ctx, args, {}),
                                     workgroupTypes, TypeRange{});
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), builder.getUnitAttr());
  func.setKnownBlockSizeAttr(
      builder.getDenseI32ArrayAttr({int32_t(schedule.threads()), 1, 1}));

  // wgmma: two blocks per SM (their shared stages fit), so one block's
  // barrier and dequantization overlap the other's MMAs; ptxas keeps the
  // registers to 128 per thread for it. Not for 256-column tiles (QFT), whose
  // 128 accumulators a thread need more.
  if (schedule.wgmma && schedule.threads() <= 256 && schedule.tileN <= 128)
    func->setAttr(NVVM::NVVMDialect::getMinctasmAttrName(),
                  builder.getI32IntegerAttr(2));

  Block &entry = func.getBody().front();
  ImplicitLocOpBuilder b(loc, ctx);
  b.setInsertionPointToStart(&entry);
  unsigned a = 0;
  Value x = entry.getArgument(a++);
  unsigned numWeight = spec.format ? spec.componentTypes.size() : 1;
  ValueRange weight = entry.getArguments().slice(a, numWeight);
  a += numWeight;
  ValueRange gradComponents =
      entry.getArguments().slice(a, spec.gradComponentTypes.size());
  a += spec.gradComponentTypes.size();
  Value qftCodes, qftM, qftMScales, qftLr, qftGuard;
  ValueRange qftParams;
  if (spec.qftFormat) {
    qftCodes = entry.getArgument(a++);
    qftParams = entry.getArguments().slice(a, spec.qftParamTypes.size());
    a += spec.qftParamTypes.size();
    qftM = entry.getArgument(a++);
    qftMScales = entry.getArgument(a++);
    qftLr = entry.getArgument(a++);
    if (spec.qftGuarded)
      qftGuard = entry.getArgument(a++);
  }
  Value bias = spec.hasBias ? entry.getArgument(a++) : Value();
  Value residual = spec.hasResidual ? entry.getArgument(a++) : Value();
  Value loraT, loraB;
  if (spec.loraRank) {
    loraT = entry.getArgument(a++);
    loraB = entry.getArgument(a++);
  }
  Value y = spec.qftFormat ? Value() : entry.getArgument(a++);
  Value mseTarget, mseLoss;
  if (spec.mseLoss) {
    mseTarget = entry.getArgument(a++);
    mseLoss = entry.getArgument(a++);
  }
  Value m = entry.getArgument(a++);
  Value tensorMap = spec.tmaX ? entry.getArgument(a++) : Value();

  // The shared buffers: static workgroup attributions, or views of the
  // dynamic shared memory laid out X stages, W stages, row maxima.
  SmallVector<Value> shared(func.getWorkgroupAttributions().begin(),
                            func.getWorkgroupAttributions().end());
  if (dynamicShared) {
    Value dyn = gpu::DynamicSharedMemoryOp::create(
        b, MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                           MemRefLayoutAttrInterface(), workgroup));
    int64_t offset = 0;
    SmallVector<MemRefType> types{xsType, wsType};
    if (spec.qftFormat)
      types.push_back(rowMaxType);
    if (spec.tmaX) // after the stages (8-byte aligned)
      types.push_back(MemRefType::get({schedule.stages}, b.getI64Type(),
                                      MemRefLayoutAttrInterface(), workgroup));
    for (MemRefType t : types) {
      shared.push_back(memref::ViewOp::create(
          b, t, dyn, arith::ConstantIndexOp::create(b, offset), ValueRange{}));
      offset += t.getNumElements() * t.getElementTypeBitWidth() / 8;
    }
  }
  KernelBuilder kb(b, spec, schedule, shared[0], shared[1], m);
  kb.setThreadIds();
  Value zero = arith::ConstantOp::create(b, b.getF32FloatAttr(0.0f));
  Segment main{x, spec.k, spec.format, weight, spec.transposeX, spec.transposeW};
  if (spec.tmaX) {
    assert(dynamicShared && schedule.wgmma && !spec.qftFormat &&
           "TMA stages live in dynamic shared memory, on the wgmma path");
    main.tma = true;
    kb.tensorMap = LLVM::IntToPtrOp::create(
        b, LLVM::LLVMPointerType::get(ctx), tensorMap);
    kb.bars = shared.back();
    kb.initBarriers();
  }
  Segment lora{loraT, spec.loraRank, nullptr, ValueRange(&loraB, 1),
               /*transposed=*/false, spec.loraWeightTransposed};
  SmallVector<Value> acc;
  if (schedule.wgmma) {
    Value wgAcc = LLVM::ZeroOp::create(b, kb.wgmmaAccType());
    wgAcc = kb.segmentLoopWgmma(main, wgAcc);
    if (spec.loraRank)
      wgAcc = kb.segmentLoopWgmma(lora, wgAcc);
    acc = kb.unpackWgmma(wgAcc);
  } else {
    acc.assign(kb.fragsM() * kb.fragsN() * 4, zero);
    acc = kb.segmentLoop(main, acc);
    if (spec.loraRank)
      acc = kb.segmentLoop(lora, acc);
  }
  if (spec.qftFormat) {
    auto epilogue = [&] {
      kb.qftEpilogue(acc, qftCodes, qftParams, qftM, qftMScales, qftLr,
                     shared[2]);
    };
    // A uniform condition: the epilogue's shuffles and barrier stay safe.
    if (qftGuard)
      kernel::ifFinite(b, kernel::scalar(b, qftGuard), epilogue);
    else
      epilogue();
  }
  else if (spec.gradFormat)
    kb.gradientEpilogue(acc, gradComponents, y);
  else if (spec.mseLoss)
    kb.mseEpilogue(acc, bias, residual, y, mseTarget, mseLoss);
  else
    kb.epilogue(acc, bias, residual, y);
  gpu::ReturnOp::create(b);
  // Let LLVM fuse multiplies and adds (dequantization's q·s − s·z, the
  // epilogue's scaling and bias) into fmas.
  auto contract = arith::FastMathFlagsAttr::get(ctx, arith::FastMathFlags::contract);
  func.walk([&](arith::ArithFastMathInterface op) {
    op->setAttr(op.getFastMathAttrName(), contract);
  });
  return func;
}

} // namespace qtune
