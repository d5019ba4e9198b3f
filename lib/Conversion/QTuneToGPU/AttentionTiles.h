//===- AttentionTiles.h - the pieces the attention kernels share -*- C++ -*-===//
//
// Thread roles, shared-memory stages, cp.async tile copies, MMA fragment
// addressing and the per-row reductions of the warp-level attention kernels
// (AttentionKernels.h). Private to lib/Conversion/QTuneToGPU.
//
// A warp owns 16 rows of a 64-row block tile. An m16n8 accumulator fragment
// holds, for lane = 4g + t, rows g and g + 8 at columns 2t and 2t + 1; a
// "fragment set" is the fragments of a 16 × 8n tile, value e of n8 block nb
// at index 4·nb + e (row half e / 2, column 8·nb + 2t + e % 2).
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_LIB_CONVERSION_QTUNETOGPU_ATTENTIONTILES_H
#define QTUNE_LIB_CONVERSION_QTUNETOGPU_ATTENTIONTILES_H

#include "qtune/Conversion/QTuneToGPU/AttentionKernels.h"

#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace qtune::attention {

using B = mlir::ImplicitLocOpBuilder;

/// Rows of a block tile (queries, or keys for dK/dV): four warps of 16.
constexpr int64_t kBlockRows = 64;
constexpr int64_t kWarps = 4;
constexpr int64_t kThreads = 32 * kWarps;

inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
/// Elements of a staged row: the head dimension plus 8 (16 bytes), so that
/// ldmatrix rows stay 16-byte aligned and consecutive rows fall in different
/// banks.
inline int64_t pitch(const AttentionDims &d) { return d.headDim + 8; }

/// Shared buffers carved from the kernel's dynamic shared memory, in order.
struct SharedPlan {
  struct Buffer {
    int64_t stages, rows, cols; // cols elements of `bytes` each
    int64_t bytes;
    bool integer = false;
  };
  llvm::SmallVector<Buffer> buffers;
  /// Adds [stages][rows][pitch] bf16; returns its position.
  unsigned addTiles(int64_t stages, int64_t rows, const AttentionDims &d);
  /// Adds [stages][n] f32 (or i32).
  unsigned addF32(int64_t stages, int64_t n);
  unsigned addI32(int64_t stages, int64_t n);
  int64_t totalBytes() const;
};

/// The column tile each pass sweeps: keys (forward, dQ) or queries (dK/dV).
/// Narrower at head dimension 128, where the accumulators take more
/// registers.
int64_t columnTile(const AttentionDims &d, AttentionPass pass);

/// The shared buffers of each pass, in the order its builder takes them:
/// forward: q [1][64], k [2][kc], v [2][kc]; dQ: q [1][64], g [1][64],
/// k [2][kc], v [2][kc], delta [1][64] f32; dK/dV: k [1][64], v [1][64],
/// q [2][qc], g [2][qc], lse [2][qc] f32, delta [2][qc] f32. With segments
/// then: the column tiles' ids [2][kc or qc] i32 and a count scratch [1][4].
SharedPlan sharedPlan(const AttentionDims &d, AttentionPass pass);

/// The arguments of each pass's kernel (AttentionKernels.h), then the
/// segment ids (i32 [B, S]) when d.segments.
llvm::SmallVector<mlir::Type>
kernelArguments(mlir::MLIRContext *ctx, const AttentionDims &d,
                AttentionPass pass);

/// The kernel `name` of pass `pass` (its arguments and shared plan above),
/// kThreads threads using the plan's dynamic shared memory; `body(b,
/// arguments, shared views)` builds its body.
mlir::gpu::GPUFuncOp
buildAttentionKernel(mlir::OpBuilder &builder, mlir::Location loc,
                     llvm::StringRef name, const AttentionDims &d,
                     AttentionPass pass,
                     llvm::function_ref<void(B &, mlir::ValueRange,
                                             llvm::ArrayRef<mlir::Value>)>
                         body);

/// The 64 queries of one (batch, head) that a query-major block (forward,
/// dQ) computes, and the key tiles of `kc` keys it sweeps: [firstTile,
/// endTile), up to its last query when causal, and only those holding keys
/// of its queries' segments with segment ids.
struct QueryBlock {
  mlir::Value batch, head, kvHead, first, firstTile, endTile;
};

/// Segment ids of a block: the ids of this thread's two fragment rows, and
/// the staged ids of the column tiles.
struct Segments {
  mlir::Value ids;          // the [B, S] i32 argument, or null
  mlir::Value rows[2];      // ids of fragment rows g and g + 8
  mlir::Value staged;       // [2][columns] i32 shared
};

class Tiles {
public:
  Tiles(B &b, const AttentionDims &d);

  mlir::Value idx(int64_t v);
  mlir::Value add(mlir::Value x, mlir::Value y);
  mlir::Value add(mlir::Value x, int64_t y) { return add(x, idx(y)); }
  mlir::Value mul(mlir::Value x, int64_t y);
  mlir::Value div(mlir::Value x, int64_t y);
  mlir::Value rem(mlir::Value x, int64_t y);
  mlir::Value lt(mlir::Value x, mlir::Value y);
  mlir::Value minIndex(mlir::Value x, mlir::Value y);
  mlir::Value select(mlir::Value c, mlir::Value x, mlir::Value y);

  /// This block's queries. Causal blocks take the query tiles from the last,
  /// so the longest blocks are scheduled first.
  /// With segment ids `seg` (else null) and a [1][4] f32 shared `scratch`,
  /// the key tiles of other segments are left out (this has a barrier).
  QueryBlock queryBlock(int64_t kc, mlir::Value seg, mlir::Value scratch);
  /// Σ over the block of the tiles t < tiles (a static count) for which
  /// `pred(t)` holds, in every thread (a barrier; `scratch` [1][4] f32).
  mlir::Value countTiles(int64_t tiles,
                         llvm::function_ref<mlir::Value(mlir::Value)> pred,
                         mlir::Value scratch);
  /// The segments of a block whose fragment rows start at `rowFirst` (none
  /// when `ids` is null); `staged` receives the column tiles' ids.
  Segments segments(mlir::Value ids, mlir::Value staged, mlir::Value batch,
                    mlir::Value rowFirst);
  /// Starts copying the ids of columns [first, first + n) into a stage (no
  /// segments: nothing).
  void copySegments(const Segments &seg, mlir::Value stage, mlir::Value batch,
                    mlir::Value first, int64_t n);
  /// With nondecreasing segment ids `seg`: of the column tiles of `size`
  /// positions, how many lie wholly before the segment of the block's first
  /// row (`rowFirst`) and, if `countAfter`, wholly after that of its last
  /// (else a null Value): a prefix and a suffix to skip (barriers; `scratch`
  /// as countTiles).
  std::pair<mlir::Value, mlir::Value>
  tilesOutsideSegments(mlir::Value seg, mlir::Value batch, mlir::Value rowFirst,
                       int64_t size, bool countAfter, mlir::Value scratch);
  /// The segment id at `pos` (clamped to the sequence) of batch row `batch`.
  mlir::Value segmentAt(mlir::Value seg, mlir::Value batch, mlir::Value pos);
  /// Whether the key tile from k0 of a query block needs a mask: it runs
  /// past the sequence, or (causal) past the block's first query.
  mlir::Value keyTileNeedsMask(const QueryBlock &q, mlir::Value k0, int64_t kc);

  /// Flat offset of (batch, position, head) in a [B, S, heads·d] tensor.
  mlir::Value rowOffset(mlir::Value batch, mlir::Value pos, mlir::Value head,
                        int64_t heads);
  /// Flat index of (batch, head, position) in a [B, H, S] statistic.
  mlir::Value statIndex(mlir::Value batch, mlir::Value head, mlir::Value pos);

  /// Starts copying rows [first, first + rows) of head `head` of a
  /// [B, S, heads·d] tensor into stage `stage` of `dst` (16-byte cp.async
  /// chunks; rows past the sequence read as zeros). Not committed.
  void copyRows(mlir::Value src, mlir::Value dst, mlir::Value stage,
                mlir::Value batch, mlir::Value first, mlir::Value head,
                int64_t heads, int64_t rows);
  /// Starts copying the 4-byte values at positions [first, first + n) of a
  /// sequence whose position 0 is at flat index `base` of `src` into stage
  /// `stage` of `dst` (positions past the sequence read the last one). Not
  /// committed. (Statistics: base = statIndex(batch, head, 0); segment ids:
  /// base = batch · S.)
  void copyPositions(mlir::Value src, mlir::Value dst, mlir::Value stage,
                     mlir::Value base, mlir::Value first, int64_t n);
  void commit();
  /// Waits for this thread's copies, then for every thread of the block.
  void waitAndSync();

  /// Loops over `count` column tiles in two shared stages, carrying `inits`.
  /// The caller has issued and committed tile 0 into stage 0. Each step waits
  /// for its tile, starts the copies of the next (issue(i + 1, its stage)),
  /// and runs body(i, stage, carried), which returns the next carried values.
  llvm::SmallVector<mlir::Value> pipeline(
      mlir::Value count, mlir::ValueRange inits,
      llvm::function_ref<void(mlir::Value, mlir::Value)> issue,
      llvm::function_ref<llvm::SmallVector<mlir::Value>(
          mlir::Value, mlir::Value, mlir::ValueRange)>
          body);

  /// The A operand (16 × 16, four registers) of this warp's rows at k step
  /// `ks` of a staged [rows][d] tile.
  llvm::SmallVector<mlir::Value> rowOperand(mlir::Value mem, mlir::Value stage,
                                            int64_t ks);
  /// The B operands of n8 blocks n0 / 8 and n0 / 8 + 1 at k offset k0, from
  /// a tile staged [n][k] (plain ldmatrix) or [k][n] (transposing
  /// ldmatrix): registers 0-1 for the first block, 2-3 for the second.
  llvm::SmallVector<mlir::Value> operandPairNK(mlir::Value mem,
                                               mlir::Value stage, int64_t n0,
                                               int64_t k0);
  llvm::SmallVector<mlir::Value> operandPairKN(mlir::Value mem,
                                               mlir::Value stage, int64_t k0,
                                               int64_t n0);
  /// acc (a fragment set of 16 × 8·blocks) += a · B over `ksteps` k steps,
  /// a(ks) giving the A operand of step ks and bPair(ks, n0) the B operands
  /// of blocks n0 / 8 and n0 / 8 + 1.
  void multiply(llvm::MutableArrayRef<mlir::Value> acc, int64_t ksteps,
                llvm::function_ref<llvm::SmallVector<mlir::Value>(int64_t)> a,
                llvm::function_ref<llvm::SmallVector<mlir::Value>(
                    int64_t, int64_t)>
                    bPair);
  /// A fragment set (16 × 16·ksteps, rounded to bf16) as the A operand of k
  /// step kk.
  llvm::SmallVector<mlir::Value> asOperand(llvm::ArrayRef<mlir::Value> frags,
                                           int64_t kk);

  /// The row (half 0: g, 1: g + 8) of this warp's 16 that value e of a
  /// fragment holds, from `first`; and the column of value e of block nb.
  mlir::Value fragmentRow(mlir::Value first, int64_t e);
  mlir::Value fragmentCol(mlir::Value first, int64_t nb, int64_t e);
  /// Whether key `key` is hidden from query `query`: either past the
  /// sequence, or the key after the query when causal.
  mlir::Value hidden(mlir::Value query, mlir::Value key);
  /// Max (or sum) of the per-thread `v` over the four lanes of a row.
  mlir::Value rowReduce(mlir::Value v, bool max);

  /// Stores the fragment set `acc` (16 × d) · factor[row half] as bf16 rows
  /// 16·warp + (g, g + 8) from `first` of head `head` of a [B, S, heads·d]
  /// tensor; rows past the sequence are not stored.
  void storeRows(llvm::ArrayRef<mlir::Value> acc, mlir::Value factor0,
                 mlir::Value factor1, mlir::Value dst, mlir::Value batch,
                 mlir::Value first, mlir::Value head, int64_t heads);

  /// `frags` (rows from rowFirst, columns from colFirst; rows are queries
  /// and columns keys, or the other way round) with the hidden pairs set to
  /// `fill`, where the block-uniform `needed` holds; else unchanged.
  /// With segments, also the pairs of different segments (rows: seg.rows;
  /// columns: stage `stage` of seg.staged), and then on every tile.
  llvm::SmallVector<mlir::Value> masked(llvm::ArrayRef<mlir::Value> frags,
                                        mlir::Value rowFirst,
                                        mlir::Value colFirst,
                                        bool rowsAreQueries, mlir::Value needed,
                                        mlir::Value fill,
                                        const Segments &seg = {},
                                        mlir::Value stage = {});

  /// Yields `masked()` where `cond` holds, else `plain` (a block-uniform
  /// condition: the tiles that need no mask skip it).
  llvm::SmallVector<mlir::Value>
  selectIf(mlir::Value cond, llvm::ArrayRef<mlir::Value> plain,
           llvm::function_ref<llvm::SmallVector<mlir::Value>()> masked);

  B &b;
  const AttentionDims &d;
  int64_t hd;
  mlir::Value tid, warp, lane, g, t;
};

} // namespace qtune::attention

#endif // QTUNE_LIB_CONVERSION_QTUNETOGPU_ATTENTIONTILES_H
