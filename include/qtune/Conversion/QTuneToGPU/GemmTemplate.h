//===- GemmTemplate.h - tensor-core GEMM kernel template ----------*- C++ -*-===//
//
// Builds a gpu.func computing Y[M, N] = X[M, K] · Wᵀ (+ bias) (+ T · Bᵀ)
// (+ residual) in bf16 with fp32 accumulation on tensor cores, X staged by
// nvgpu.device_async_copy. Two MMA paths share the loaders and epilogues:
// warp-level (nvgpu.ldmatrix + nvvm.mma.sync m16n8k16, sm_80+) and
// warpgroup-level (nvvm.wgmma.mma_async m64nNk16 on shared-memory
// descriptors, sm_90a). W is dense bf16 or quantized; a quantized W is
// dequantized tile by tile in the prologue through
// QuantFormatAttrInterface::emitDequant, never materialized in global memory.
// The optional second K segment (T: M×r, B: N×r) adds a precomputed LoRA term.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_CONVERSION_QTUNETOGPU_GEMMTEMPLATE_H
#define QTUNE_CONVERSION_QTUNETOGPU_GEMMTEMPLATE_H

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "qtune/Dialect/QTune/IR/QTuneAttrs.h"

namespace qtune {

/// Tile sizes of the GEMM template. A block computes tileM × tileN outputs with
/// warpsM × warpsN warps; each warp a (tileM/warpsM) × (tileN/warpsN) tile made
/// of m16n8k16 MMAs; K advances tileK at a time.
///
/// With `wgmma` (sm_90a) each warpgroup of four warps computes 64 rows × tileN
/// with wgmma m64n{tileN}k16 reading both operands from shared memory; then
/// warpsN is 1 and warpsM = tileM / 16 (warp w holds rows 16w..16w+15, the
/// same accumulator layout as the warp-level path), and `stages` shared
/// stages keep X copies `stages - 1` tiles ahead while the weight tile of the
/// next step is dequantized during the current step's MMAs.
struct GemmSchedule {
  int64_t tileM = 64, tileN = 64, tileK = 32;
  int64_t warpsM = 2, warpsN = 2;
  bool wgmma = false;
  int64_t stages = 2;

  int64_t threads() const { return 32 * warpsM * warpsN; }
  /// Shared memory of the stages of the X and W tiles (rows padded), for
  /// the larger of the two W layouts. Past 48 KiB the kernel takes it as
  /// dynamic shared memory (up to the 227 KiB of sm_90).
  int64_t sharedBytes() const;
  /// wgmma layout: K-major 8-row × 16-byte core matrices (128 contiguous
  /// bytes); the core matrices of one 8-row group lie `coreStrideBytes()`
  /// apart along K, and row groups `rowGroupBytes()` apart. Both are 16 bytes
  /// (one bank group) more than a multiple of 128, so that 16-byte stores of
  /// eight threads that differ in the K chunk, or in the row, or in pairs of
  /// rows four apart, land in distinct banks.
  static constexpr int64_t coreStrideBytes() { return 144; }
  int64_t rowGroupBytes() const { return tileK / 8 * coreStrideBytes() + 16; }
  /// Checks divisibility constraints; returns an explanation on failure.
  std::optional<std::string> validate() const;
};

/// What one kernel computes. N and K are static; M is a kernel argument.
struct GemmSpec {
  int64_t n = 0, k = 0;
  /// Quantized weight format, or null for a dense bf16 weight.
  QuantFormatAttrInterface format;
  /// Element types of the weight's components (quantized weights only).
  llvm::SmallVector<mlir::Type> componentTypes;
  bool hasBias = false, hasResidual = false;
  /// Rank of the second segment (T · Bᵀ), 0 for none.
  int64_t loraRank = 0;
  /// The second segment's dense weight is stored r × N and read transposed,
  /// as the main weight is with transposeW: an input gradient g·W + t·A with
  /// t = s·g·B (the warp-level path needs transposeW then, too).
  bool loraWeightTransposed = false;
  /// Factor applied to the product before bias and residual.
  double outputScale = 1.0;
  /// MSE epilogue: the product y (after scale, bias and residual, rounded to
  /// bf16) is the prediction of a mean squared error against a bf16 target
  /// (an argument after y): y's buffer receives the loss's gradient
  /// mseGradFactor · (y − target) in bf16 instead of y, and
  /// Σ (y − target)² / mseCount is added atomically into an f32 loss (an
  /// argument after the target, zeroed by the caller). y itself is never
  /// stored. Not with split-K, gradient or QFT epilogues.
  bool mseLoss = false;
  double mseGradFactor = 0;
  int64_t mseCount = 0;
  /// y is stored as f32 instead of bf16 (e.g. a QFT weight's dW in a gradient
  /// entry).
  bool outputF32 = false;
  /// Split-K: the reduction is cut into `splitK` slices (grid z); slice z
  /// stores its scaled partial product, in f32, at y[z·M·N + m·N + n] (y is an
  /// f32 workspace then), and a separate kernel sums the slices in order
  /// (deterministic). For plain products only (no bias, residual, LoRA
  /// segment, gradient or QFT epilogue).
  int64_t splitK = 1;
  /// wgmma path: X (row-major, 16-byte aligned rows) reaches shared memory
  /// by TMA: one bulk tensor copy per K tile, issued by one thread, into
  /// 128-byte-swizzled stages whose completion mbarriers count; rows past M
  /// and columns past K read as zero. The kernel takes the device address of
  /// the tensor map (a qtune.tensor_map over x, boxes of tileM × tileK) after
  /// M. Needs tileK = 64 (128-byte rows) and no split-K.
  bool tmaX = false;
  /// X is stored transposed: element (m, k) at x[k · M + m] (weight gradients
  /// read gᵀ this way). Staged by element loads, unless xRowsAligned.
  bool transposeX = false;
  /// With transposeX: M is a multiple of 8, so every stored row of X starts
  /// 16-byte aligned. The warp-level path then stages X [k][m] with 16-byte
  /// cp.async chunks of 8 consecutive m and reads its A fragments with
  /// transposing ldmatrix (element loads cost 8 × the instructions).
  bool xRowsAligned = false;
  /// The weight is stored transposed: element (n, k) of the product's B is
  /// W[k, n] — a dense K×N matrix, or a quantized weight whose logical shape
  /// is K×N, dequantized at (k, n) (input gradients g · W).
  bool transposeW = false;
  /// Component-gradient epilogue (PEQA and other float components): the
  /// product is dW (rows = the weight's N, columns = its K); each element is
  /// multiplied by ∂w/∂component from `gradFormat.emitDerivative` and added
  /// atomically into an f32 gradient of the component. The weight's
  /// components follow the dense B operand among the kernel's arguments.
  QuantFormatAttrInterface gradFormat;
  llvm::SmallVector<mlir::Type> gradComponentTypes;
  int64_t gradComponent = -1;
  /// N of that weight: the rows of dW (the product's M, static here).
  int64_t gradRows = 0;
  /// QFT epilogue (qtune.qft_lion): the product is dW of an 8-bit uniform
  /// weight (rows = its N, `gradRows`; columns = its K); each tile applies one
  /// Lion step to the packed codes, the int8 momentum and its per-row-block
  /// scales in place, reading lr from a one-element buffer. Needs whole tiles
  /// and momentum blocks of exactly tileN elements; no y.
  UniformFormatAttr qftFormat;
  llvm::SmallVector<mlir::Type> qftParamTypes; ///< scales [, zeros]
  double qftBeta1 = 0.9, qftBeta2 = 0.99, qftWeightDecay = 0;
  /// The QFT step takes the loss after lr and changes nothing when it is not
  /// finite (the whole block skips the epilogue).
  bool qftGuarded = false;
};

/// The shared memory bytes a kernel for `spec` and `schedule` uses, and
/// whether it takes them as dynamic shared memory (more than 48 KiB; the
/// launch then passes the size).
int64_t gemmSharedBytes(const GemmSpec &spec, const GemmSchedule &schedule);
bool gemmUsesDynamicShared(const GemmSpec &spec, const GemmSchedule &schedule);
/// Whether those bytes fit a block's shared memory (TMA's extra X stage and
/// mbarriers come on top of GemmSchedule::sharedBytes).
bool gemmSharedFits(const GemmSpec &spec, const GemmSchedule &schedule);

/// A name that says what the kernel computes and its shape class, e.g.
/// `linear_uniform4g128_lora16_n4096k4096`, `linear_input_grad_bf16_n4096k11008`,
/// `weight_grad_bf16_n16k4096_splitk4`, `peqa_scale_grad_uniform4g128_n4096k4096`,
/// `qft_lion_uniform8c_n4096k4096`.
std::string gemmKernelName(const GemmSpec &spec);

/// Kernel parameter order: x, weight component(s) (or the dense weight),
/// [gradient epilogue's weight components], [QFT: codes, scales [, zeros],
/// m, m_scales, lr [, loss]], [bias], [residual], [T, B], y (not with QFT), M.
/// Every tensor is a flat memref<?xT>; y is f32 in the gradient epilogue.
mlir::gpu::GPUFuncOp buildGemmKernel(mlir::OpBuilder &builder,
                                     mlir::Location loc, llvm::StringRef name,
                                     const GemmSpec &spec,
                                     const GemmSchedule &schedule);

} // namespace qtune

#endif // QTUNE_CONVERSION_QTUNETOGPU_GEMMTEMPLATE_H
