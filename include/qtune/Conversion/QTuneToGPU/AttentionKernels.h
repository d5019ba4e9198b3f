//===- AttentionKernels.h - flash attention on tensor cores -------*- C++ -*-===//
//
// Builders of the attention kernels: forward (online softmax, the row's
// log-sum-exp kept for backward), dQ (query-major; it also stores each row's
// delta = Σ g·o) and dK/dV (key-major, summed over the query heads of a KV
// head). Scores live only in registers: no S×S buffer exists anywhere.
//
// Every kernel runs four warps of 16 rows each (queries, or keys for dK/dV)
// on warp-level bf16 MMAs (ldmatrix + mma.sync m16n8k16, f32 accumulation;
// sm_80 and later); the key (or query) tiles they sweep are copied by
// cp.async into two shared stages, the next tile's copy in flight while the
// current one is multiplied. Tensors are flat bf16 [B, S, heads·d] (q, o, g,
// dq) or [B, S, kv_heads·d] (k, v, dk, dv); lse and delta are f32 [B, H, S].
// With segment ids (packed documents), each block first counts, from the
// ids alone, the column tiles wholly in other documents and skips them.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_CONVERSION_QTUNETOGPU_ATTENTIONKERNELS_H
#define QTUNE_CONVERSION_QTUNETOGPU_ATTENTIONKERNELS_H

#include "mlir/Dialect/GPU/IR/GPUDialect.h"

#include <optional>
#include <string>

namespace qtune {

/// The attention problem: batch (product of leading dims), sequence, heads,
/// KV heads, head dimension, softmax scale, causal or not.
struct AttentionDims {
  int64_t batch = 1, seq = 1, heads = 1, kvHeads = 1, headDim = 1;
  double scale = 1;
  bool causal = true;
  /// Segment ids i32 [B, S] (nondecreasing) follow the kernels' other
  /// arguments: keys of other segments are hidden, and their tiles skipped.
  bool segments = false;

  int64_t group() const { return heads / kvHeads; }
};

/// Largest head dimension the kernels take (their accumulators live in
/// registers); the head dimension must also be a multiple of 16 (one MMA k
/// step).
constexpr int64_t kMaxAttentionHeadDim = 128;

/// Why the kernels cannot compute `d` (a sentence naming the head dimension
/// and what is supported), or nothing when they can.
std::optional<std::string> attentionUnsupported(const AttentionDims &d);

/// The three kernels of an attention and its gradient.
enum class AttentionPass { Forward, GradQ, GradKV };

/// What a launch of one pass needs: grid (x: row tiles, y: batch × heads, or
/// batch × KV heads for GradKV), threads per block and dynamic shared bytes.
struct AttentionLaunch {
  int64_t gridX = 1, gridY = 1, threads = 128, sharedBytes = 0;
};
AttentionLaunch attentionLaunch(const AttentionDims &d, AttentionPass pass);

/// The kernel's name: what it computes and its shape class, e.g.
/// `attention_bwd_dkv_causal_gqa4_d128`.
std::string attentionKernelName(const AttentionDims &d, AttentionPass pass);

/// Each kernel's arguments end with the segment ids when d.segments.
/// Forward: (q, k, v, o, lse).
mlir::gpu::GPUFuncOp buildAttentionForwardKernel(mlir::OpBuilder &b,
                                                 mlir::Location loc,
                                                 llvm::StringRef name,
                                                 const AttentionDims &d);
/// dQ: (q, k, v, o, lse, g, dq, delta); stores delta for the dK/dV kernel.
mlir::gpu::GPUFuncOp buildAttentionGradQKernel(mlir::OpBuilder &b,
                                               mlir::Location loc,
                                               llvm::StringRef name,
                                               const AttentionDims &d);
/// dK and dV: (q, k, v, lse, delta, g, dk, dv).
mlir::gpu::GPUFuncOp buildAttentionGradKVKernel(mlir::OpBuilder &b,
                                                mlir::Location loc,
                                                llvm::StringRef name,
                                                const AttentionDims &d);

} // namespace qtune

#endif // QTUNE_CONVERSION_QTUNETOGPU_ATTENTIONKERNELS_H
