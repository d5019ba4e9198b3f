//===- QTuneToGPU.cpp - lower qtune graphs to GPU kernels + host plan -------===//

#include "qtune/Conversion/Passes.h"
#include "qtune/Conversion/QTuneToGPU/AttentionKernels.h"
#include "qtune/Conversion/QTuneToGPU/DecoderKernels.h"
#include "qtune/Conversion/QTuneToGPU/ElementwiseKernels.h"
#include "qtune/Conversion/QTuneToGPU/GemmTemplate.h"
#include "qtune/Conversion/QTuneToGPU/TrainingKernels.h"
#include "qtune/Dialect/QTune/IR/QTuneOps.h"

#include "mlir/IR/IRMapping.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Format.h"
#include <cmath>

namespace qtune {
#define GEN_PASS_DEF_QTUNELOWERTOGPU
#include "qtune/Conversion/Passes.h.inc"
} // namespace qtune

using namespace mlir;
using namespace qtune;

namespace {

/// Output tiles below which a long reduction is split (about the SM count
/// of the GPUs the kernels target).
constexpr int64_t kSplitKTargetBlocks = 132;
/// Blocks per SM a split reduction aims for.
constexpr int64_t kSplitKBlocksPerSM = 4;

/// Name of the gpu.module holding every kernel.
constexpr StringLiteral kKernelModule = "qtune_kernels";
/// Adapters have at most this rank (profiles count a dense product of that
/// shape as an adapter's).
constexpr int64_t kAdapterMaxRank = 512;

/// The schedule for an m × n launch: the options where given, else
/// large tiles for training-sized M (tensor cores busy, weight dequantized once
/// per 128 rows) and small ones for decode-sized M (more blocks).
GemmSchedule chooseSchedule(int64_t m, int64_t n, const GemmSchedule &given) {
  // Training-sized M: 128 × 128 tiles with K steps of 64 (73.7 KB of dynamic
  // shared memory; 14 % faster than K steps of 32 for the 4096² INT4 layer at
  // M = 2048 and 8192 on an H100, see bench/RESULTS.md).
  GemmSchedule s = m >= 512 ? GemmSchedule{128, 128, 64, 2, 4}
                            : GemmSchedule{32, 64, 64, 2, 2};
  // sm_90a, unless a tile option is given: warpgroups of wgmma m64n128k16
  // over three stages. Four warpgroups (256 rows: each weight tile is
  // dequantized once per 256 rows; 164 KiB, 151 KiB with X by TMA, one block
  // per SM) where that still fills the GPU, else two (109.5 KiB, 103 KiB with
  // TMA, two blocks per SM). On an H100,
  // fwd+bwd of the 4096² INT4 + LoRA layer: 739 against 812 us at M = 2048,
  // 2626 against 2818 us at M = 8192 (bench/RESULTS.md; four stages were
  // slower).
  bool tiled = given.tileM || given.tileN || given.tileK || given.warpsM ||
               given.warpsN;
  if (given.wgmma && !tiled && m >= 512 && n > 16) {
    int64_t tileM = ((m + 255) / 256) * ((n + 127) / 128) >= kSplitKTargetBlocks
                        ? 256
                        : 128;
    s = GemmSchedule{tileM, 128, 64, tileM / 16, 1};
    s.wgmma = true;
    s.stages = 3;
    return s;
  }
  // Adapter-sized outputs (LoRA rank ≤ 16): narrow tiles, so no MMA work is
  // spent on columns that do not exist.
  if (n <= 16)
    s = m >= 512 ? GemmSchedule{128, 16, 64, 4, 1} : GemmSchedule{32, 16, 64, 2, 1};
  if (given.tileM)
    s.tileM = given.tileM;
  if (given.tileN)
    s.tileN = given.tileN;
  if (given.tileK)
    s.tileK = given.tileK;
  if (given.warpsM)
    s.warpsM = given.warpsM;
  if (given.warpsN)
    s.warpsN = given.warpsN;
  return s;
}

/// A cache key naming a kernel kind and the element types it was built for.
std::string kernelKey(StringRef kind, ArrayRef<Type> types,
                      ArrayRef<double> constants = {}) {
  std::string key;
  llvm::raw_string_ostream os(key);
  os << kind;
  for (Type t : types)
    os << ":" << t;
  for (double c : constants)
    os << ":" << llvm::format("%.17g", c);
  return key;
}

/// The readable name of a small kernel from its cache key ("kind:types:
/// constants"): the op it computes and, for the row kernels, the row width
/// (`rms_norm_fwd_h4096`, `cross_entropy_v32000`, `rope_w4096`).
std::string elementwiseKernelName(StringRef key) {
  SmallVector<StringRef> parts;
  key.split(parts, ':');
  StringRef kind = parts.front();
  // The first numeric constant of the key, if any (types are not numbers).
  std::string first;
  for (StringRef p : ArrayRef<StringRef>(parts).drop_front())
    if (!p.empty() && (isdigit(p[0]) || p[0] == '-')) {
      first = p.str();
      break;
    }
  static const llvm::StringMap<std::pair<StringRef, StringRef>> names = {
      {"rms_norm", {"rms_norm_fwd", "_h"}},
      {"rms_norm_grad", {"rms_norm_bwd", "_h"}},
      {"rms_factor", {"rms_norm_factor", "_h"}},
      {"rms_norm_weight_grad", {"rms_norm_weight_grad", "_h"}},
      {"rope", {"rope", "_w"}},
      {"rope_inverse", {"rope_inverse", "_w"}},
      {"embedding", {"embedding", "_d"}},
      {"embedding_grad", {"embedding_grad", "_d"}},
      {"ce", {"cross_entropy", "_v"}},
      {"ce_grad", {"cross_entropy_grad", "_v"}},
      {"kl", {"kl_div", "_v"}},
      {"kl_grad", {"kl_div_grad", "_v"}},
  };
  auto it = names.find(kind);
  if (it == names.end() || first.empty())
    return kind.str();
  return (it->second.first + it->second.second + first).str();
}

Type elementOf(Value v) { return getElementTypeOrSelf(v.getType()); }

int64_t numElements(Value v) {
  return cast<ShapedType>(v.getType()).getNumElements();
}

class Lowering {
public:
  Lowering(ModuleOp module, gpu::GPUModuleOp kernels, GemmSchedule schedule,
           int64_t logitsChunkBytes)
      : module(module), kernels(kernels), options(schedule),
        chunkBytes(logitsChunkBytes) {}

  LogicalResult lowerFunction(func::FuncOp func);
  /// The family a profile reports the launches of `op` under (attention,
  /// quantized GEMM, adapter GEMMs, dense GEMM, lm head and loss, norms and
  /// elementwise, optimizer), recorded on each launch as
  /// QTuneDialect::kKernelFamilyAttrName.
  StringRef familyOf(Operation *op);

private:
  /// The flat memref<?xT> view of a buffer.
  Value flatView(OpBuilder &b, Location loc, Value buffer);
  /// Gets or builds the kernel for `spec` and `schedule`; returns its symbol.
  FailureOr<SymbolRefAttr> kernelFor(Operation *op, const GemmSpec &spec,
                                     const GemmSchedule &schedule);
  /// Launches the kernel for `spec` over an m × n output.
  /// `fixed`: a schedule the kernel's epilogue requires (else chosen).
  LogicalResult launch(OpBuilder &b, Operation *op, const GemmSpec &spec,
                       int64_t m, ValueRange buffers,
                       std::optional<GemmSchedule> fixed = std::nullopt);
  /// The schedule of `op`'s GEMM over m × n: `fixed`, else the op's
  /// qtune.schedule, else the pass options' or the chosen one.
  GemmSchedule scheduleOf(Operation *op, int64_t m, int64_t n,
                          std::optional<GemmSchedule> fixed);
  /// A mean squared error and its gradient that are the only users of a
  /// linear layer's output, computed in the layer's GEMM epilogue.
  struct MseFusion {
    MseLossOp loss;
    MseLossGradOp grad;
    double gradFactor; // seed · 2 / count, in f32 as the MSE kernels have it
    int64_t count;
  };
  /// The MSE fusion of `linear`'s output: its users are exactly an MSE loss
  /// and its fusable gradient (fusableGrad), with a bf16 target defined before
  /// the layer and a constant seed.
  std::optional<MseFusion> mseOfOutput(Operation *linear);
  /// Ops already lowered with the op that produces their operands.
  DenseSet<Operation *> loweredWithProducer;
  LogicalResult lowerLinear(OpBuilder &b, Operation *op, Value input,
                            Value weight, Value bias, Value loraA, Value loraB,
                            Value residual, double alpha, int64_t rank,
                            std::optional<MseFusion> mse = std::nullopt);
  /// A qtune.lora that qtune-fuse left alone (a second adapter on a layer, a
  /// frozen base adapter under a trained one): T = s · x · Aᵀ, then T · Bᵀ.
  LogicalResult lowerLora(OpBuilder &b, LoraOp op);
  FailureOr<Value> buffer(Operation *user, Value tensor);
  /// g · W (input gradient): a GEMM whose weight is read transposed. With
  /// `adapter` (t · A, A dense r × K with r ≤ 64, unscaled): both in one
  /// kernel, t · A as its second K segment, y = g·W + t·A.
  LogicalResult lowerLinearT(OpBuilder &b, LinearTOp op,
                             LinearTOp adapter = nullptr, Value sum = {});
  /// An input gradient through a layer with a LoRA adapter is the sum of two
  /// linear_t ops (g·W and t·A with t = s·g·B) feeding only an arith.addf:
  /// found here and lowered as one GEMM at the addf.
  void findAdapterInputGrads(func::FuncOp func);
  struct AdapterInputGrad {
    LinearTOp main, adapter;
  };
  DenseMap<Operation *, AdapterInputGrad> adapterInputGrads; // by the addf
  DenseSet<Operation *> inAdapterInputGrad; // the two linear_t ops
  /// scale · gᵀ · x (weight gradient): both operands read transposed.
  LogicalResult lowerWeightGrad(OpBuilder &b, WeightGradOp op);
  /// T = s · x · Aᵀ of each adapter lowered so far, by (x, A).
  DenseMap<std::pair<Value, Value>, std::pair<Value, double>> adapterProducts;
  /// A plain x · Aᵀ (no bias) that an adapter already computed as T, used
  /// only as the input of weight gradients (the backward's dB = s·gᵀ·(x·Aᵀ)):
  /// not launched again; its weight gradients read T with their scale divided
  /// by s. True when `op` was handled so.
  bool reuseAdapterProduct(LinearOp op);
  DenseMap<Value, std::pair<Value, double>> reusedProducts; // by the linear
  /// The gradient of one float component of a quantized weight: the weight
  /// gradient GEMM with a per-element derivative epilogue that accumulates
  /// atomically in f32 (zeroed first; converted to the component's type after).
  LogicalResult lowerComponentGrad(OpBuilder &b, ComponentGradOp op);
  /// Launches a per-element kernel over `n` elements (`blocks` thread
  /// blocks, by default one thread per element), building it on first use.
  void launchElementwise(OpBuilder &b, Location loc, StringRef key,
                         function_ref<void(OpBuilder &, StringRef)> build,
                         ValueRange buffers, int64_t n, int64_t blocks = 0);
  /// A new buffer of `type` with every element `value`.
  Value filled(OpBuilder &b, Location loc, MemRefType type, double value);
  /// A zeroed f32 buffer of `shape`.
  Value zeroedF32(OpBuilder &b, Location loc, ArrayRef<int64_t> shape);
  LogicalResult lowerConstant(OpBuilder &b, arith::ConstantOp op);
  LogicalResult lowerMseLoss(OpBuilder &b, MseLossOp op);
  LogicalResult lowerMseLossGrad(OpBuilder &b, MseLossGradOp op);
  /// Cross entropy, KL divergence and their gradients: one thread block per
  /// row of logits.
  LogicalResult lowerCrossEntropy(OpBuilder &b, Operation *op);
  /// arith.addf / arith.mulf of equally shaped tensors, elementwise.
  LogicalResult lowerAdd(OpBuilder &b, Operation *op);
  /// A new buffer for the tensor `v`.
  Value allocFor(OpBuilder &b, Location loc, Value v);
  /// `acc` (f32) as a buffer of `type`: itself, or converted into a new one.
  Value fromF32Buffer(OpBuilder &b, Location loc, Value acc,
                      RankedTensorType type);
  /// The lm head and its loss, a chunk of rows at a time (see LmHead).
  struct LmHead {
    LinearOp linear;
    CrossEntropyOp loss;          // may be null
    CrossEntropyGradOp lossGrad;  // may be null
    LinearTOp inputGrad;          // may be null (set when lossGrad is)
    Operation *last = nullptr;    // the group is lowered here
    int64_t chunk = 0;            // rows per chunk
  };
  /// Finds dense linears whose logits feed only a cross entropy (and its
  /// gradient, which feeds only the input gradient through the same weight),
  /// too large to hold at once.
  void findLmHeads(func::FuncOp func);
  LogicalResult lowerLmHead(OpBuilder &b, LmHead head);
  /// The decoder ops (DecoderKernels.h).
  LogicalResult lowerEmbedding(OpBuilder &b, Operation *op);
  LogicalResult lowerRmsNorm(OpBuilder &b, Operation *op);
  LogicalResult lowerRope(OpBuilder &b, RopeOp op);
  LogicalResult lowerSwiglu(OpBuilder &b, Operation *op);
  LogicalResult lowerAttention(OpBuilder &b, Operation *op);
  /// Launches one attention kernel (AttentionKernels.h), building it on
  /// first use.
  void launchAttention(OpBuilder &b, Location loc, const AttentionDims &d,
                       AttentionPass pass, ValueRange bufs);
  /// `base`, or `base_N` where the kernel module already has that symbol.
  std::string uniqueKernelName(StringRef base);
  LogicalResult lowerClip(OpBuilder &b, ClipGradNormOp op);
  /// Optimizer steps update their parameter and state buffers in place: each
  /// must be a function argument that no later op reads.
  LogicalResult requireInPlace(Operation *op, ValueRange updated);
  LogicalResult lowerAdamW(OpBuilder &b, AdamWOp op);
  /// Gradient accumulation: in place on the f32 accumulator.
  LogicalResult lowerGradAccumulate(OpBuilder &b, GradAccumulateOp op);
  LogicalResult lowerGradTake(OpBuilder &b, GradTakeOp op);
  LogicalResult lowerLion(OpBuilder &b, LionOp op);
  /// QFT: the weight-gradient GEMM whose epilogue applies the Lion step to the
  /// codes and momentum in place (no N×K gradient buffer).
  LogicalResult lowerQftLion(OpBuilder &b, QftLionOp op);
  /// Appends the weight's buffers (its components, or the dense weight) to
  /// `bufs` and records its format and component types in `spec`.
  LogicalResult addWeight(Operation *op, Value weight, GemmSpec &spec,
                          SmallVectorImpl<Value> &bufs);
  /// Appends the buffers of `values` to `bufs`.
  LogicalResult addBuffers(Operation *op, ValueRange values,
                           SmallVectorImpl<Value> &bufs);
  /// Checks that every value is a statically shaped bf16 tensor.
  LogicalResult requireBF16(Operation *op, ArrayRef<Value> values);

  ModuleOp module;
  gpu::GPUModuleOp kernels;
  GemmSchedule options; // zeros: chosen per launch
  IRMapping buffers;                       // tensor value -> memref buffer
  /// Logits larger than this (as f32) are computed with their loss and
  /// gradient a chunk of rows at a time.
  int64_t chunkBytes;
  DenseMap<Value, QWeightOp> qweights;     // qweight value -> its op
  /// Ops of an lm-head group, and the group each group's last op lowers.
  DenseSet<Operation *> inLmHead;
  DenseMap<Operation *, LmHead> lmHeads;
  /// MSE gradients that also compute their loss (fused with the earlier
  /// qtune.mse_loss, see lowerMseLoss): the gradient op -> the loss buffer.
  DenseMap<Operation *, Value> mseLossOfGrad;
  llvm::StringMap<SymbolRefAttr> kernelCache;
};

MemRefType bufferType(RankedTensorType t) {
  return MemRefType::get(t.getShape(), t.getElementType());
}

Value Lowering::flatView(OpBuilder &b, Location loc, Value buffer) {
  auto type = cast<MemRefType>(buffer.getType());
  Value flat = buffer;
  if (type.getRank() == 0) {
    flat = memref::ExpandShapeOp::create(
        b, loc, MemRefType::get({1}, type.getElementType()), buffer,
        ArrayRef<ReassociationIndices>{});
  } else if (type.getRank() != 1) {
    ReassociationIndices all;
    for (int64_t i = 0; i < type.getRank(); ++i)
      all.push_back(i);
    flat = memref::CollapseShapeOp::create(b, loc, buffer,
                                           ArrayRef<ReassociationIndices>{all});
  }
  return memref::CastOp::create(
      b, loc, MemRefType::get({ShapedType::kDynamic}, type.getElementType()),
      flat);
}

FailureOr<SymbolRefAttr> Lowering::kernelFor(Operation *op,
                                             const GemmSpec &spec,
                                             const GemmSchedule &schedule) {
  if (std::optional<std::string> why = schedule.validate())
    return op->emitError() << "qtune-lower-to-gpu: invalid schedule "
                           << schedule.tileM << "x" << schedule.tileN << "x"
                           << schedule.tileK << " (" << schedule.warpsM << "x"
                           << schedule.warpsN << " warps): " << *why;
  std::string key;
  llvm::raw_string_ostream os(key);
  os << spec.n << "x" << spec.k << "|";
  if (spec.format)
    os << spec.format;
  else
    os << "dense";
  for (Type t : spec.componentTypes)
    os << "," << t;
  if (spec.gradFormat)
    os << "|grad " << spec.gradFormat << " c" << spec.gradComponent << " rows"
       << spec.gradRows;
  for (Type t : spec.gradComponentTypes)
    os << "," << t;
  if (spec.qftFormat) {
    os << "|qft " << spec.qftFormat;
    for (Type t : spec.qftParamTypes)
      os << "," << t;
    os << llvm::format(" %.17g %.17g %.17g", spec.qftBeta1, spec.qftBeta2,
                       spec.qftWeightDecay);
  }
  os << "|b" << spec.hasBias << "r" << spec.hasResidual << "l" << spec.loraRank
     << (spec.loraWeightTransposed ? "t" : "")
     << "s" << spec.outputScale << "t" << spec.transposeX << spec.transposeW
     << (spec.xRowsAligned ? "a" : "") << (spec.tmaX ? "tma" : "")
     << "f" << spec.outputF32 << "k" << spec.splitK;
  if (spec.mseLoss)
    os << llvm::format("|mse %.17g %lld", spec.mseGradFactor,
                       (long long)spec.mseCount);
  os
     << "|" << schedule.tileM << "," << schedule.tileN
     << "," << schedule.tileK << "," << schedule.warpsM << ","
     << schedule.warpsN << (schedule.wgmma ? ",wgmma" : "") << ","
     << schedule.stages;
  auto it = kernelCache.find(key);
  if (it != kernelCache.end())
    return it->second;
  std::string name = uniqueKernelName(gemmKernelName(spec));
  OpBuilder b = OpBuilder::atBlockEnd(kernels.getBody());
  buildGemmKernel(b, kernels.getLoc(), name, spec, schedule);
  auto ref = SymbolRefAttr::get(kernels.getNameAttr(),
                                {FlatSymbolRefAttr::get(b.getContext(), name)});
  kernelCache[key] = ref;
  return ref;
}

GemmSchedule Lowering::scheduleOf(Operation *op, int64_t m, int64_t n,
                                  std::optional<GemmSchedule> fixed) {
  if (fixed)
    return *fixed;
  // A layer's own schedule attribute wins over the pass options.
  if (auto attr = op->getAttrOfType<DenseI64ArrayAttr>(
          QTuneDialect::kScheduleAttrName)) {
    ArrayRef<int64_t> v = attr.asArrayRef();
    return GemmSchedule{v[0], v[1], v[2], v[3], v[4]};
  }
  return chooseSchedule(m, n, options);
}

/// Split-K slices (1: none) when a plain product's output has too few tiles
/// to fill the GPU and its reduction is long: slices write f32 partials that
/// one kernel sums.
static int64_t splitKOf(const GemmSpec &spec, const GemmSchedule &schedule,
                        int64_t m) {
  bool plain = !spec.hasBias && !spec.hasResidual && !spec.loraRank &&
               !spec.gradFormat && !spec.qftFormat && !spec.mseLoss;
  int64_t tiles = (spec.k + schedule.tileK - 1) / schedule.tileK;
  int64_t outputTiles = ((spec.n + schedule.tileN - 1) / schedule.tileN) *
                        ((m + schedule.tileM - 1) / schedule.tileM);
  if (!plain || outputTiles >= kSplitKTargetBlocks || tiles < 16)
    return 1;
  // About four blocks per SM: the split products are narrow (adapter ranks)
  // and read their operands once, so the more loads in flight the better
  // (dA = dtᵀ·x of the 4096² LoRA layer at M = 8192 on an H100: 44 us with
  // two slices' worth per SM, 30 with four, 37 with eight).
  return std::max<int64_t>(
      1, std::min((kSplitKBlocksPerSM * kSplitKTargetBlocks + outputTiles - 1) /
                      outputTiles,
                  tiles / 8));
}

LogicalResult Lowering::launch(OpBuilder &b, Operation *op,
                               const GemmSpec &plainSpec, int64_t m,
                               ValueRange plainBufs,
                               std::optional<GemmSchedule> fixed) {
  GemmSpec spec = plainSpec;
  spec.xRowsAligned = spec.transposeX && m % 8 == 0;
  SmallVector<Value> bufs(plainBufs);
  GemmSchedule schedule = scheduleOf(op, m, spec.n, fixed);
  Location loc = op->getLoc();
  spec.splitK = splitKOf(spec, schedule, m);
  if (spec.splitK > 1)
    bufs.back() = memref::AllocOp::create(
        b, loc, MemRefType::get({spec.splitK * m * spec.n}, b.getF32Type()));
  // X by TMA: plain row-major X (forward and input-gradient products, with or
  // without a LoRA segment) on the unsplit wgmma path, whose stages live in
  // dynamic shared memory (no static shared memory before them, so the
  // swizzled stages start 1024-byte aligned) and that fit a block's shared
  // memory.
  spec.tmaX = schedule.wgmma && spec.splitK == 1 && !spec.transposeX &&
              schedule.tileK == 64 && spec.k % 8 == 0 && !spec.gradFormat &&
              !spec.qftFormat;
  if (spec.tmaX && (!gemmUsesDynamicShared(spec, schedule) ||
                    !gemmSharedFits(spec, schedule)))
    spec.tmaX = false;
  FailureOr<SymbolRefAttr> kernel = kernelFor(op, spec, schedule);
  if (failed(kernel))
    return failure();
  auto c = [&](int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); };
  SmallVector<Value> args;
  for (Value buf : bufs)
    args.push_back(flatView(b, loc, buf));
  args.push_back(c(m));
  if (spec.tmaX)
    args.push_back(TensorMapOp::create(
        b, loc, b.getI64Type(), args.front(), b.getI64IntegerAttr(m),
        b.getI64IntegerAttr(spec.k), b.getI64IntegerAttr(schedule.tileM),
        b.getI64IntegerAttr(schedule.tileK), b.getI64IntegerAttr(128)));
  int64_t gridX = (spec.n + schedule.tileN - 1) / schedule.tileN;
  int64_t gridY = (m + schedule.tileM - 1) / schedule.tileM;
  Value dynamicShared;
  if (gemmUsesDynamicShared(spec, schedule))
    dynamicShared = arith::ConstantIntOp::create(
        b, loc, b.getI32Type(), gemmSharedBytes(spec, schedule));
  gpu::LaunchFuncOp::create(
      b, loc, *kernel, gpu::KernelDim3{c(gridX), c(gridY), c(spec.splitK)},
      gpu::KernelDim3{c(schedule.threads()), c(1), c(1)}, dynamicShared, args);
  if (spec.splitK > 1) {
    Type to = cast<MemRefType>(plainBufs.back().getType()).getElementType();
    int64_t count = spec.splitK, stride = m * spec.n;
    launchElementwise(
        b, loc, kernelKey("sum_slices", {to}, {double(count), double(stride)}),
        [&](OpBuilder &kb, StringRef name) {
          buildSumSlicesKernel(kb, kernels.getLoc(), name, count, stride, to);
        },
        ValueRange{bufs.back(), plainBufs.back()}, stride);
  }
  return success();
}

FailureOr<Value> Lowering::buffer(Operation *user, Value tensor) {
  if (Value buf = buffers.lookupOrNull(tensor))
    return buf;
  return user->emitError("qtune-lower-to-gpu: operand is not a function "
                         "argument or the result of a lowered op");
}

LogicalResult Lowering::lowerLinear(OpBuilder &b, Operation *op, Value input,
                                    Value weight, Value bias, Value loraA,
                                    Value loraB, Value residual, double alpha,
                                    int64_t rank,
                                    std::optional<MseFusion> mse) {
  Location loc = op->getLoc();
  auto result = cast<RankedTensorType>(op->getResult(0).getType());
  for (Value v : {input, bias, loraA, loraB, residual, Value(op->getResult(0))}) {
    if (!v)
      continue;
    auto t = cast<RankedTensorType>(v.getType());
    if (!t.getElementType().isBF16() || !t.hasStaticShape())
      return op->emitError() << "qtune-lower-to-gpu: GPU kernels take "
                                "statically shaped bf16 activations and "
                                "adapters, got "
                             << t;
  }
  auto xType = cast<RankedTensorType>(input.getType());
  int64_t k = xType.getShape().back();
  int64_t m = xType.getNumElements() / k;
  int64_t n = result.getShape().back();

  SmallVector<Value> bufs;
  FailureOr<Value> x = buffer(op, input);
  if (failed(x))
    return failure();
  bufs.push_back(*x);

  GemmSpec spec;
  spec.n = n;
  spec.k = k;
  if (!qweights.lookup(weight)) {
    auto wType = dyn_cast<RankedTensorType>(weight.getType());
    if (!wType || !wType.getElementType().isBF16())
      return op->emitError() << "qtune-lower-to-gpu: a dense weight must be "
                                "bf16, got "
                             << weight.getType();
  }
  if (failed(addWeight(op, weight, spec, bufs)))
    return failure();
  for (Value v : {bias, residual}) {
    if (!v)
      continue;
    FailureOr<Value> buf = buffer(op, v);
    if (failed(buf))
      return failure();
    bufs.push_back(*buf);
  }
  spec.hasBias = bool(bias);
  spec.hasResidual = bool(residual);

  if (loraA) {
    // T = (alpha / rank) · x · Aᵀ, an M × rank bf16 temporary.
    FailureOr<Value> a = buffer(op, loraA), bB = buffer(op, loraB);
    if (failed(a) || failed(bB))
      return failure();
    Value t = memref::AllocOp::create(
        b, loc, MemRefType::get({m, rank}, b.getBF16Type()));
    GemmSpec loraSpec;
    loraSpec.n = rank;
    loraSpec.k = k;
    loraSpec.outputScale = alpha / rank;
    if (failed(launch(b, op, loraSpec, m, ValueRange{*x, *a, t})))
      return failure();
    adapterProducts[{input, loraA}] = {t, loraSpec.outputScale};
    spec.loraRank = rank;
    bufs.push_back(t);
    bufs.push_back(*bB);
  }
  // A product that would be split over K (decode-sized M) fills the GPU
  // better split, with the MSE kernel after it (PEQA's layer at M = 16: 120
  // against 86 us unsplit with the fused epilogue).
  if (mse && splitKOf(spec, scheduleOf(op, m, n, std::nullopt), m) > 1)
    mse.reset();
  if (mse) {
    // y's buffer receives the loss's gradient; the loss is added up.
    FailureOr<Value> target = buffer(op, mse->loss.getTarget());
    if (failed(target))
      return failure();
    spec.mseLoss = true;
    spec.mseGradFactor = mse->gradFactor;
    spec.mseCount = mse->count;
    Value loss = zeroedF32(b, loc, {});
    Value grad = memref::AllocOp::create(
        b, loc, bufferType(cast<RankedTensorType>(mse->grad.getType())));
    bufs.append({grad, *target, loss});
    if (failed(launch(b, op, spec, m, bufs)))
      return failure();
    buffers.map(mse->grad.getResult(), grad);
    buffers.map(mse->loss.getResult(), loss);
    loweredWithProducer.insert(mse->loss);
    loweredWithProducer.insert(mse->grad);
    return success();
  }
  Value y = memref::AllocOp::create(b, loc, bufferType(result));
  bufs.push_back(y);
  if (failed(launch(b, op, spec, m, bufs)))
    return failure();
  buffers.map(op->getResult(0), y);
  return success();
}

LogicalResult Lowering::lowerLora(OpBuilder &b, LoraOp op) {
  if (op.getDropout().convertToDouble() != 0)
    return op.emitError() << "qtune-lower-to-gpu: LoRA dropout has no GPU "
                             "lowering; use dropout 0";
  if (failed(requireBF16(op, {op.getInput(), op.getA(), op.getB(),
                              op.getResult()})))
    return failure();
  auto xType = cast<RankedTensorType>(op.getInput().getType());
  int64_t k = xType.getShape().back(), m = xType.getNumElements() / k;
  int64_t rank = op.getRank(), n = op.getType().getShape().back();
  FailureOr<Value> x = buffer(op, op.getInput()), a = buffer(op, op.getA()),
                   bw = buffer(op, op.getB());
  if (failed(x) || failed(a) || failed(bw))
    return failure();
  Value t = memref::AllocOp::create(
      b, op.getLoc(), MemRefType::get({m, rank}, b.getBF16Type()));
  GemmSpec tSpec;
  tSpec.n = rank;
  tSpec.k = k;
  tSpec.outputScale = op.getAlpha().convertToDouble() / double(rank);
  if (failed(launch(b, op, tSpec, m, ValueRange{*x, *a, t})))
    return failure();
  adapterProducts[{op.getInput(), op.getA()}] = {t, tSpec.outputScale};
  GemmSpec ySpec;
  ySpec.n = n;
  ySpec.k = rank;
  Value y = memref::AllocOp::create(b, op.getLoc(), bufferType(op.getType()));
  if (failed(launch(b, op, ySpec, m, ValueRange{t, *bw, y})))
    return failure();
  buffers.map(op.getResult(), y);
  return success();
}

bool Lowering::reuseAdapterProduct(LinearOp op) {
  if (op.getBias())
    return false;
  auto it = adapterProducts.find({op.getInput(), op.getWeight()});
  if (it == adapterProducts.end() || it->second.second == 0 ||
      !std::isfinite(it->second.second))
    return false;
  Value t = op.getResult();
  if (!llvm::all_of(t.getUsers(), [&](Operation *user) {
        auto wg = dyn_cast<WeightGradOp>(user);
        return wg && wg.getInput() == t && wg.getGrad() != t;
      }))
    return false;
  reusedProducts[t] = it->second;
  return true;
}

LogicalResult Lowering::addBuffers(Operation *op, ValueRange values,
                                  SmallVectorImpl<Value> &bufs) {
  for (Value v : values) {
    FailureOr<Value> buf = buffer(op, v);
    if (failed(buf))
      return failure();
    bufs.push_back(*buf);
  }
  return success();
}

LogicalResult Lowering::addWeight(Operation *op, Value weight, GemmSpec &spec,
                                  SmallVectorImpl<Value> &bufs) {
  QWeightOp q = qweights.lookup(weight);
  if (!q)
    return addBuffers(op, weight, bufs);
  spec.format = q.getType().getFormat();
  for (Value comp : q.getComponents())
    spec.componentTypes.push_back(
        cast<RankedTensorType>(comp.getType()).getElementType());
  return addBuffers(op, q.getComponents(), bufs);
}

LogicalResult Lowering::requireBF16(Operation *op, ArrayRef<Value> values) {
  for (Value v : values) {
    auto t = dyn_cast<RankedTensorType>(v.getType());
    if (!t || !t.getElementType().isBF16() || !t.hasStaticShape())
      return op->emitError() << "qtune-lower-to-gpu: GPU kernels take "
                                "statically shaped bf16 activations and "
                                "adapters, got "
                             << v.getType();
  }
  return success();
}

void Lowering::findAdapterInputGrads(func::FuncOp func) {
  adapterInputGrads.clear();
  inAdapterInputGrad.clear();
  func.walk([&](arith::AddFOp add) {
    auto lhs = add.getLhs().getDefiningOp<LinearTOp>();
    auto rhs = add.getRhs().getDefiningOp<LinearTOp>();
    if (!lhs || !rhs || lhs == rhs || !lhs->hasOneUse() || !rhs->hasOneUse() ||
        inLmHead.contains(lhs) || inLmHead.contains(rhs))
      return;
    auto isAdapter = [](LinearTOp op) {
      auto w = dyn_cast<RankedTensorType>(op.getWeight().getType());
      return w && w.getRank() == 2 && w.getDimSize(0) <= 64 &&
             op.getScale().convertToDouble() == 1.0;
    };
    LinearTOp adapter = isAdapter(rhs) ? rhs : isAdapter(lhs) ? lhs : nullptr;
    LinearTOp main = adapter == rhs ? lhs : rhs;
    if (!adapter || main.getScale().convertToDouble() != 1.0 ||
        main.getType() != adapter.getType())
      return;
    // Only where the wgmma template runs it: the warp-level template stages
    // the rank-r segment as a whole K tile (measured on an H100 at M = 2048:
    // 1064 us fused against 874 us as two GEMMs and an add).
    auto g = main.getGrad().getType();
    int64_t k = g.getShape().back(), n = main.getType().getShape().back();
    if (!chooseSchedule(g.getNumElements() / k, n, options).wgmma ||
        main->hasAttr(QTuneDialect::kScheduleAttrName))
      return;
    adapterInputGrads[add] = {main, adapter};
    inAdapterInputGrad.insert(main);
    inAdapterInputGrad.insert(adapter);
  });
}

LogicalResult Lowering::lowerLinearT(OpBuilder &b, LinearTOp op,
                                     LinearTOp adapter, Value sum) {
  SmallVector<Value> check{op.getGrad(), op.getResult()};
  if (!isa<QWeightType>(op.getWeight().getType()))
    check.push_back(op.getWeight());
  if (adapter)
    llvm::append_range(check, ValueRange{adapter.getGrad(), adapter.getWeight()});
  if (failed(requireBF16(op, check)))
    return failure();
  auto g = op.getGrad().getType();
  GemmSpec spec;
  spec.k = g.getShape().back();                   // reduction: the weight's N
  spec.n = op.getType().getShape().back();        // output: the weight's K
  spec.outputScale = op.getScale().convertToDouble();
  spec.transposeW = true;
  SmallVector<Value> bufs;
  FailureOr<Value> gBuf = buffer(op, op.getGrad());
  if (failed(gBuf))
    return failure();
  bufs.push_back(*gBuf);
  if (failed(addWeight(op, op.getWeight(), spec, bufs)))
    return failure();
  if (adapter) {
    spec.loraRank = adapter.getGrad().getType().getShape().back();
    spec.loraWeightTransposed = true;
    FailureOr<Value> tBuf = buffer(adapter, adapter.getGrad());
    FailureOr<Value> aBuf = buffer(adapter, adapter.getWeight());
    if (failed(tBuf) || failed(aBuf))
      return failure();
    bufs.push_back(*tBuf);
    bufs.push_back(*aBuf);
  }
  Value y = memref::AllocOp::create(b, op.getLoc(), bufferType(op.getType()));
  bufs.push_back(y);
  if (failed(launch(b, op, spec, g.getNumElements() / spec.k, bufs)))
    return failure();
  buffers.map(sum ? sum : op.getResult(), y);
  return success();
}

LogicalResult Lowering::lowerWeightGrad(OpBuilder &b, WeightGradOp op) {
  bool f32Result = op.getType().getElementType().isF32();
  SmallVector<Value> check{op.getGrad(), op.getInput()};
  if (!f32Result)
    check.push_back(op.getResult());
  if (failed(requireBF16(op, check)))
    return failure();
  auto g = op.getGrad().getType(), x = op.getInput().getType();
  int64_t rows = g.getShape().back(), cols = x.getShape().back();
  GemmSpec spec;
  spec.n = cols;
  spec.k = g.getNumElements() / rows; // reduction over every leading position
  spec.outputScale = op.getScale().convertToDouble();
  spec.transposeX = true;
  spec.transposeW = true;
  spec.outputF32 = f32Result;
  FailureOr<Value> gBuf = buffer(op, op.getGrad()), xBuf;
  if (auto reused = reusedProducts.find(op.getInput());
      reused != reusedProducts.end()) {
    // s'·gᵀ·(x·Aᵀ) = (s'/s)·gᵀ·T with T = s·x·Aᵀ.
    xBuf = reused->second.first;
    spec.outputScale /= reused->second.second;
  } else {
    xBuf = buffer(op, op.getInput());
  }
  if (failed(gBuf) || failed(xBuf))
    return failure();
  Value r = memref::AllocOp::create(b, op.getLoc(), bufferType(op.getType()));
  if (failed(launch(b, op, spec, rows, ValueRange{*gBuf, *xBuf, r})))
    return failure();
  buffers.map(op.getResult(), r);
  return success();
}

void Lowering::launchElementwise(OpBuilder &b, Location loc, StringRef key,
                                 function_ref<void(OpBuilder &, StringRef)> build,
                                 ValueRange bufs, int64_t n, int64_t blocks) {
  auto it = kernelCache.find(key);
  SymbolRefAttr kernel;
  if (it != kernelCache.end()) {
    kernel = it->second;
  } else {
    std::string name = uniqueKernelName(elementwiseKernelName(key));
    OpBuilder kb = OpBuilder::atBlockEnd(kernels.getBody());
    build(kb, name);
    kernel = SymbolRefAttr::get(kernels.getNameAttr(),
                                {FlatSymbolRefAttr::get(b.getContext(), name)});
    kernelCache[key] = kernel;
  }
  auto c = [&](int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); };
  SmallVector<Value> args;
  for (Value buf : bufs)
    args.push_back(flatView(b, loc, buf));
  args.push_back(c(n));
  if (!blocks) {
    // Per-element kernels say how many elements a thread takes.
    auto func = kernels.lookupSymbol<gpu::GPUFuncOp>(
        kernel.getLeafReference());
    auto perThread = func->getAttrOfType<IntegerAttr>(kElementsPerThreadAttr);
    blocks = elementwiseBlocks(n, perThread ? perThread.getInt() : 1);
  }
  gpu::LaunchFuncOp::create(
      b, loc, kernel, gpu::KernelDim3{c(blocks), c(1), c(1)},
      gpu::KernelDim3{c(kElementwiseThreads), c(1), c(1)}, Value(), args);
}

LogicalResult Lowering::lowerComponentGrad(OpBuilder &b, ComponentGradOp op) {
  if (failed(requireBF16(op, {op.getGrad(), op.getInput()})))
    return failure();
  QWeightOp q = qweights.lookup(op.getWeight());
  if (!q)
    return op.emitError("qtune-lower-to-gpu: the weight must come from a "
                        "qtune.qweight of this function");
  Location loc = op.getLoc();
  auto resultType = op.getType();
  QWeightType w = q.getType();
  GemmSpec spec;
  spec.n = w.getK();
  spec.k = op.getGrad().getType().getNumElements() / w.getN();
  spec.transposeX = true;
  spec.transposeW = true;
  spec.gradFormat = w.getFormat();
  spec.gradComponent = op.getComponent();
  spec.gradRows = w.getN();
  SmallVector<Value> bufs;
  if (failed(addBuffers(op, {op.getGrad(), op.getInput()}, bufs)) ||
      failed(addBuffers(op, q.getComponents(), bufs)))
    return failure();
  for (Value comp : q.getComponents())
    spec.gradComponentTypes.push_back(
        cast<RankedTensorType>(comp.getType()).getElementType());
  Value acc = zeroedF32(b, loc, resultType.getShape());
  bufs.push_back(acc);
  if (failed(launch(b, op, spec, w.getN(), bufs)))
    return failure();
  buffers.map(op.getResult(), fromF32Buffer(b, loc, acc, resultType));
  return success();
}

Value Lowering::allocFor(OpBuilder &b, Location loc, Value v) {
  return memref::AllocOp::create(b, loc,
                                 bufferType(cast<RankedTensorType>(v.getType())));
}

Value Lowering::fromF32Buffer(OpBuilder &b, Location loc, Value acc,
                              RankedTensorType type) {
  Type element = type.getElementType(), f32 = b.getF32Type();
  if (element.isF32())
    return acc;
  Value result = memref::AllocOp::create(b, loc, bufferType(type));
  launchElementwise(
      b, loc, kernelKey("convert", {f32, element}),
      [&](OpBuilder &kb, StringRef name) {
        buildConvertKernel(kb, kernels.getLoc(), name, f32, element);
      },
      ValueRange{acc, result}, type.getNumElements());
  return result;
}

LogicalResult Lowering::lowerEmbedding(OpBuilder &b, Operation *op) {
  Location loc = op->getLoc();
  SmallVector<Value> bufs;
  if (failed(addBuffers(op, op->getOperands(), bufs)))
    return failure();
  bool isGrad = isa<EmbeddingGradOp>(op);
  Value ids = op->getOperand(1);
  auto result = cast<RankedTensorType>(op->getResult(0).getType());
  int64_t d = result.getShape().back();
  int64_t n = numElements(ids) * d;
  Type e = elementOf(op->getOperand(0));
  if (!isGrad) {
    int64_t v = cast<RankedTensorType>(op->getOperand(0).getType()).getDimSize(0);
    Value out = allocFor(b, loc, op->getResult(0));
    bufs.push_back(out);
    launchElementwise(
        b, loc, kernelKey("embedding", {e}, {double(d), double(v)}),
        [&](OpBuilder &kb, StringRef name) {
          buildEmbeddingKernel(kb, kernels.getLoc(), name, e, d, v);
        },
        bufs, n);
    buffers.map(op->getResult(0), out);
    return success();
  }
  int64_t v = result.getDimSize(0);
  Value acc = zeroedF32(b, loc, result.getShape());
  bufs.push_back(acc);
  launchElementwise(
      b, loc, kernelKey("embedding_grad", {e}, {double(d), double(v)}),
      [&](OpBuilder &kb, StringRef name) {
        buildEmbeddingGradKernel(kb, kernels.getLoc(), name, e, d, v);
      },
      bufs, n);
  buffers.map(op->getResult(0), fromF32Buffer(b, loc, acc, result));
  return success();
}

LogicalResult Lowering::lowerRmsNorm(OpBuilder &b, Operation *op) {
  Location loc = op->getLoc();
  SmallVector<Value> bufs;
  if (failed(addBuffers(op, op->getOperands(), bufs)))
    return failure();
  Value out = allocFor(b, loc, op->getResult(0));
  bufs.push_back(out);
  buffers.map(op->getResult(0), out);
  if (auto n = dyn_cast<RmsNormOp>(op)) {
    Type x = elementOf(n.getInput()), w = elementOf(n.getWeight());
    int64_t d = n.getWeight().getType().getDimSize(0);
    double eps = n.getEps().convertToDouble();
    int64_t rows = numElements(n.getInput()) / d;
    launchElementwise(
        b, loc, kernelKey("rms_norm", {x, w}, {double(d), eps}),
        [&](OpBuilder &kb, StringRef name) {
          buildRmsNormKernel(kb, kernels.getLoc(), name, x, w, d, eps);
        },
        bufs, rows, rows);
    return success();
  }
  if (auto g = dyn_cast<RmsNormGradOp>(op)) {
    Type gt = elementOf(g.getGrad()), x = elementOf(g.getInput()),
         w = elementOf(g.getWeight()), dx = elementOf(g.getResult());
    int64_t d = g.getWeight().getType().getDimSize(0);
    double eps = g.getEps().convertToDouble();
    int64_t rows = numElements(g.getInput()) / d;
    launchElementwise(
        b, loc, kernelKey("rms_norm_grad", {gt, x, w, dx}, {double(d), eps}),
        [&](OpBuilder &kb, StringRef name) {
          buildRmsNormGradKernel(kb, kernels.getLoc(), name, gt, x, w, dx, d, eps);
        },
        bufs, rows, rows);
    return success();
  }
  auto wg = cast<RmsNormWeightGradOp>(op);
  Type gt = elementOf(wg.getGrad()), x = elementOf(wg.getInput()),
       dw = elementOf(wg.getResult());
  int64_t d = wg.getType().getDimSize(0);
  double eps = wg.getEps().convertToDouble();
  int64_t rows = numElements(wg.getInput()) / d;
  Value factors = memref::AllocOp::create(
      b, loc, MemRefType::get({rows}, b.getF32Type()));
  launchElementwise(
      b, loc, kernelKey("rms_factor", {x}, {double(d), eps}),
      [&](OpBuilder &kb, StringRef name) {
        buildRmsFactorKernel(kb, kernels.getLoc(), name, x, d, eps);
      },
      ValueRange{bufs[1], factors}, rows, rows);
  launchElementwise(
      b, loc, kernelKey("rms_norm_weight_grad", {gt, x, dw}, {double(d), double(rows)}),
      [&](OpBuilder &kb, StringRef name) {
        buildRmsNormWeightGradKernel(kb, kernels.getLoc(), name, gt, x, dw, d, rows);
      },
      ValueRange{bufs[0], bufs[1], factors, out}, d);
  return success();
}

LogicalResult Lowering::lowerRope(OpBuilder &b, RopeOp op) {
  Location loc = op.getLoc();
  SmallVector<Value> bufs;
  if (failed(addBuffers(op, {op.getInput()}, bufs)))
    return failure();
  Value out = allocFor(b, loc, op.getResult());
  bufs.push_back(out);
  auto shape = op.getInput().getType().getShape();
  int64_t width = shape.back(), seq = shape[shape.size() - 2];
  int64_t hd = op.getHeadDim();
  double theta = op.getTheta().convertToDouble();
  bool inverse = op.getInverse();
  Type e = elementOf(op.getInput());
  launchElementwise(
      b, loc,
      kernelKey(inverse ? "rope_inverse" : "rope", {e},
                {double(width), double(seq), double(hd), theta}),
      [&](OpBuilder &kb, StringRef name) {
        buildRopeKernel(kb, kernels.getLoc(), name, e, width, seq, hd, theta,
                        inverse);
      },
      bufs, numElements(op.getInput()) / 2);
  buffers.map(op.getResult(), out);
  return success();
}

LogicalResult Lowering::lowerSwiglu(OpBuilder &b, Operation *op) {
  Location loc = op->getLoc();
  SmallVector<Value> bufs;
  if (failed(addBuffers(op, op->getOperands(), bufs)))
    return failure();
  for (Value r : op->getResults()) {
    bufs.push_back(allocFor(b, loc, r));
    buffers.map(r, bufs.back());
  }
  Type e = elementOf(op->getOperand(0));
  bool isGrad = isa<SwigluGradOp>(op);
  launchElementwise(
      b, loc, kernelKey(isGrad ? "swiglu_grad" : "swiglu", {e}),
      [&](OpBuilder &kb, StringRef name) {
        if (isGrad)
          buildSwigluGradKernel(kb, kernels.getLoc(), name, e);
        else
          buildSwigluKernel(kb, kernels.getLoc(), name, e);
      },
      bufs, numElements(op->getOperand(0)));
  return success();
}

LogicalResult Lowering::lowerAttention(OpBuilder &b, Operation *op) {
  Location loc = op->getLoc();
  auto q = cast<RankedTensorType>(op->getOperand(0).getType());
  AttentionDims d;
  Value segments;
  if (auto a = dyn_cast<AttentionOp>(op)) {
    d.heads = a.getHeads();
    d.kvHeads = a.getKvHeads();
    d.scale = a.getScaleValue();
    d.causal = a.getCausal();
    segments = a.getSegments();
  } else {
    auto g = cast<AttentionGradOp>(op);
    d.heads = g.getHeads();
    d.kvHeads = g.getKvHeads();
    d.scale = g.getScale().convertToDouble();
    d.causal = g.getCausal();
    segments = g.getSegments();
  }
  d.segments = bool(segments);
  d.headDim = q.getShape().back() / d.heads;
  d.seq = q.getShape()[q.getRank() - 2];
  d.batch = q.getNumElements() / (d.seq * q.getShape().back());
  if (std::optional<std::string> why = attentionUnsupported(d))
    return op->emitError() << "qtune-lower-to-gpu: " << *why;
  // q, k, v (and o, g of the gradient) are bf16; lse is f32 by the verifier.
  SmallVector<Value> tensors(op->getOperands().take_front(3));
  if (isa<AttentionGradOp>(op))
    tensors.append({op->getOperand(3), op->getOperand(5)});
  if (failed(requireBF16(op, tensors)))
    return failure();
  SmallVector<Value> bufs;
  if (failed(addBuffers(op, op->getOperands(), bufs)))
    return failure();
  // The segment ids, where given, are the last operand and every kernel's
  // last argument.
  SmallVector<Value> segmentBuf;
  if (segments)
    segmentBuf.push_back(bufs.pop_back_val());
  auto withSegments = [&](SmallVector<Value> args) {
    args.append(segmentBuf);
    return args;
  };
  if (isa<AttentionOp>(op)) {
    for (Value r : op->getResults()) {
      bufs.push_back(allocFor(b, loc, r));
      buffers.map(r, bufs.back());
    }
    launchAttention(b, loc, d, AttentionPass::Forward, withSegments(bufs));
    return success();
  }
  // Operands: q, k, v, o, lse, g. dQ first (it also writes delta), then dK/dV.
  Value dq = allocFor(b, loc, op->getResult(0)), dk = allocFor(b, loc, op->getResult(1)),
        dv = allocFor(b, loc, op->getResult(2));
  Value delta = memref::AllocOp::create(
      b, loc, bufferType(cast<RankedTensorType>(op->getOperand(4).getType())));
  launchAttention(b, loc, d, AttentionPass::GradQ,
                  withSegments({bufs[0], bufs[1], bufs[2], bufs[3], bufs[4],
                                bufs[5], dq, delta}));
  launchAttention(b, loc, d, AttentionPass::GradKV,
                  withSegments({bufs[0], bufs[1], bufs[2], bufs[4], delta,
                                bufs[5], dk, dv}));
  buffers.map(op->getResult(0), dq);
  buffers.map(op->getResult(1), dk);
  buffers.map(op->getResult(2), dv);
  return success();
}

void Lowering::launchAttention(OpBuilder &b, Location loc,
                               const AttentionDims &d, AttentionPass pass,
                               ValueRange bufs) {
  std::string key = kernelKey(
      attentionKernelName(d, pass), {},
      {double(d.batch), double(d.seq), double(d.heads), double(d.kvHeads),
       double(d.headDim), d.scale, double(d.causal), double(d.segments)});
  SymbolRefAttr kernel = kernelCache.lookup(key);
  if (!kernel) {
    std::string name = uniqueKernelName(attentionKernelName(d, pass));
    OpBuilder kb = OpBuilder::atBlockEnd(kernels.getBody());
    switch (pass) {
    case AttentionPass::Forward:
      buildAttentionForwardKernel(kb, kernels.getLoc(), name, d);
      break;
    case AttentionPass::GradQ:
      buildAttentionGradQKernel(kb, kernels.getLoc(), name, d);
      break;
    case AttentionPass::GradKV:
      buildAttentionGradKVKernel(kb, kernels.getLoc(), name, d);
      break;
    }
    kernel = SymbolRefAttr::get(kernels.getNameAttr(),
                                {FlatSymbolRefAttr::get(b.getContext(), name)});
    kernelCache[key] = kernel;
  }
  AttentionLaunch l = attentionLaunch(d, pass);
  auto c = [&](int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); };
  SmallVector<Value> args;
  for (Value buf : bufs)
    args.push_back(flatView(b, loc, buf));
  gpu::LaunchFuncOp::create(
      b, loc, kernel, gpu::KernelDim3{c(l.gridX), c(l.gridY), c(1)},
      gpu::KernelDim3{c(l.threads), c(1), c(1)},
      arith::ConstantIntOp::create(b, loc, b.getI32Type(), l.sharedBytes),
      args);
}

std::string Lowering::uniqueKernelName(StringRef base) {
  std::string name = base.str();
  for (int n = 2; kernels.lookupSymbol(name); ++n)
    name = (base + "_" + Twine(n)).str();
  return name;
}

Value Lowering::filled(OpBuilder &b, Location loc, MemRefType type,
                      double value) {
  Value buf = memref::AllocOp::create(b, loc, type);
  Type e = type.getElementType();
  launchElementwise(
      b, loc, kernelKey("fill", {e}, {value}),
      [&](OpBuilder &kb, StringRef name) {
        buildFillKernel(kb, kernels.getLoc(), name, e, value);
      },
      ValueRange{buf}, type.getNumElements());
  return buf;
}

Value Lowering::zeroedF32(OpBuilder &b, Location loc, ArrayRef<int64_t> shape) {
  return filled(b, loc, MemRefType::get(shape, b.getF32Type()), 0);
}

LogicalResult Lowering::lowerConstant(OpBuilder &b, arith::ConstantOp op) {
  auto splat = dyn_cast<SplatElementsAttr>(op.getValue());
  auto type = dyn_cast<RankedTensorType>(op.getType());
  if (!splat || !type || !type.hasStaticShape())
    return op.emitError("qtune-lower-to-gpu: only splat tensor constants "
                        "have a GPU lowering");
  double value = isa<FloatType>(type.getElementType())
                     ? splat.getSplatValue<APFloat>().convertToDouble()
                     : double(splat.getSplatValue<APInt>().getSExtValue());
  buffers.map(op.getResult(), filled(b, op.getLoc(), bufferType(type), value));
  return success();
}

/// The gradient of `op`'s loss that the same block computes later, when
/// nothing reads the loss before it: one pass over the prediction and the
/// target then gives both (the gradient's kernel adds the loss).
static MseLossGradOp fusableGrad(MseLossOp op) {
  for (Operation *o = op->getNextNode(); o; o = o->getNextNode()) {
    auto grad = dyn_cast<MseLossGradOp>(o);
    if (!grad || grad.getPrediction() != op.getPrediction() ||
        grad.getTarget() != op.getTarget())
      continue;
    for (Operation *user : op.getResult().getUsers())
      if (user->getBlock() != grad->getBlock() || !grad->isBeforeInBlock(user))
        return nullptr;
    return grad;
  }
  return nullptr;
}

std::optional<Lowering::MseFusion> Lowering::mseOfOutput(Operation *linear) {
  Value y = linear->getResult(0);
  MseLossOp loss;
  MseLossGradOp grad;
  for (Operation *user : y.getUsers()) {
    auto l = dyn_cast<MseLossOp>(user);
    auto g = dyn_cast<MseLossGradOp>(user);
    if (l && !loss && l.getPrediction() == y && l.getTarget() != y)
      loss = l;
    else if (g && !grad && g.getPrediction() == y && g.getTarget() != y)
      grad = g;
    else
      return std::nullopt;
  }
  if (!loss || !grad || fusableGrad(loss) != grad)
    return std::nullopt;
  Value target = loss.getTarget();
  Operation *def = target.getDefiningOp();
  if ((def && (def->getBlock() != linear->getBlock() ||
               !def->isBeforeInBlock(linear))) ||
      (!def && cast<BlockArgument>(target).getOwner() != linear->getBlock()))
    return std::nullopt;
  if (!elementOf(target).isBF16() || !elementOf(grad.getResult()).isBF16() ||
      grad.getType() != y.getType())
    return std::nullopt;
  DenseElementsAttr seed;
  if (!matchPattern(grad.getGrad(), m_Constant(&seed)) || !seed.isSplat() ||
      !isa<FloatType>(seed.getElementType()))
    return std::nullopt;
  int64_t count = numElements(y);
  // As the MSE kernels compute it: f32(seed) · f32(2 / count).
  float factor = float(seed.getSplatValue<APFloat>().convertToDouble()) *
                 float(2.0 / double(count));
  return MseFusion{loss, grad, double(factor), count};
}

LogicalResult Lowering::lowerMseLoss(OpBuilder &b, MseLossOp op) {
  if (MseLossGradOp grad = fusableGrad(op)) {
    Value loss = zeroedF32(b, op.getLoc(), {});
    mseLossOfGrad[grad] = loss;
    buffers.map(op.getResult(), loss);
    return success();
  }
  SmallVector<Value> bufs;
  if (failed(addBuffers(op, {op.getPrediction(), op.getTarget()}, bufs)))
    return failure();
  Type p = elementOf(op.getPrediction()), t = elementOf(op.getTarget());
  int64_t n = numElements(op.getPrediction());
  Value loss = zeroedF32(b, op.getLoc(), {});
  bufs.push_back(loss);
  launchElementwise(
      b, op.getLoc(), kernelKey("mse", {p, t}, {double(n)}),
      [&](OpBuilder &kb, StringRef name) {
        buildMseLossKernel(kb, kernels.getLoc(), name, p, t, n);
      },
      bufs, n, sumKernelBlocks(n));
  buffers.map(op.getResult(), loss);
  return success();
}

LogicalResult Lowering::lowerMseLossGrad(OpBuilder &b, MseLossGradOp op) {
  SmallVector<Value> bufs;
  if (failed(addBuffers(op, {op.getPrediction(), op.getTarget(), op.getGrad()},
                        bufs)))
    return failure();
  Type p = elementOf(op.getPrediction()), t = elementOf(op.getTarget()),
       r = elementOf(op.getResult());
  int64_t n = numElements(op.getPrediction());
  Value result = memref::AllocOp::create(
      b, op.getLoc(), bufferType(cast<RankedTensorType>(op.getType())));
  bufs.push_back(result);
  buffers.map(op.getResult(), result);
  if (Value loss = mseLossOfGrad.lookup(op)) {
    bufs.push_back(loss);
    launchElementwise(
        b, op.getLoc(), kernelKey("mse_and_grad", {p, t, r}, {double(n)}),
        [&](OpBuilder &kb, StringRef name) {
          buildMseLossAndGradKernel(kb, kernels.getLoc(), name, p, t, r, n);
        },
        bufs, n, sumKernelBlocks(n));
    return success();
  }
  launchElementwise(
      b, op.getLoc(), kernelKey("mse_grad", {p, t, r}, {double(n)}),
      [&](OpBuilder &kb, StringRef name) {
        buildMseLossGradKernel(kb, kernels.getLoc(), name, p, t, r, n);
      },
      bufs, n);
  return success();
}

LogicalResult Lowering::lowerCrossEntropy(OpBuilder &b, Operation *op) {
  bool isGrad = isa<CrossEntropyGradOp, KlDivGradOp>(op);
  bool kl = isa<KlDivOp, KlDivGradOp>(op);
  Value logits = op->getOperand(0);
  auto type = cast<RankedTensorType>(logits.getType());
  if (!type.hasStaticShape() || type.getRank() < 1)
    return op->emitError() << "qtune-lower-to-gpu: cross entropy takes "
                              "statically shaped logits, got "
                           << type;
  int64_t v = type.getShape().back();
  int64_t rows = v ? type.getNumElements() / v : 0;
  SmallVector<Value> bufs;
  if (failed(addBuffers(op, op->getOperands(), bufs)))
    return failure();
  Location loc = op->getLoc();
  Type l = type.getElementType();
  Value result;
  if (isGrad) {
    result = memref::AllocOp::create(
        b, loc, bufferType(cast<RankedTensorType>(op->getResult(0).getType())));
    Type r = elementOf(op->getResult(0));
    bufs.push_back(result);
    Type t = kl ? elementOf(op->getOperand(1)) : Type();
    launchElementwise(
        b, loc,
        kl ? kernelKey("kl_grad", {l, t, r}, {double(v), double(rows)})
           : kernelKey("ce_grad", {l, r}, {double(v), double(rows)}),
        [&](OpBuilder &kb, StringRef name) {
          if (kl)
            buildKlDivGradKernel(kb, kernels.getLoc(), name, l, t, r, v, rows);
          else
            buildCrossEntropyGradKernel(kb, kernels.getLoc(), name, l, r, v, rows);
        },
        bufs, rows, rows);
  } else {
    result = zeroedF32(b, loc, {});
    bufs.push_back(result);
    Type t = kl ? elementOf(op->getOperand(1)) : Type();
    launchElementwise(
        b, loc,
        kl ? kernelKey("kl", {l, t}, {double(v), double(rows)})
           : kernelKey("ce", {l}, {double(v), double(rows)}),
        [&](OpBuilder &kb, StringRef name) {
          if (kl)
            buildKlDivKernel(kb, kernels.getLoc(), name, l, t, v, rows);
          else
            buildCrossEntropyKernel(kb, kernels.getLoc(), name, l, v, rows);
        },
        bufs, rows, rows);
  }
  buffers.map(op->getResult(0), result);
  return success();
}

LogicalResult Lowering::lowerAdd(OpBuilder &b, Operation *op) {
  bool multiply = isa<arith::MulFOp>(op);
  auto type = dyn_cast<RankedTensorType>(op->getResult(0).getType());
  if (!type || !type.hasStaticShape())
    return op->emitError() << "qtune-lower-to-gpu: " << op->getName()
                           << " takes statically shaped tensors here, got "
                           << op->getResult(0).getType();
  SmallVector<Value> bufs;
  if (failed(addBuffers(op, op->getOperands(), bufs)))
    return failure();
  Value result = memref::AllocOp::create(b, op->getLoc(), bufferType(type));
  bufs.push_back(result);
  Type e = type.getElementType();
  launchElementwise(
      b, op->getLoc(), kernelKey(multiply ? "mul" : "add", {e}),
      [&](OpBuilder &kb, StringRef name) {
        buildAddKernel(kb, kernels.getLoc(), name, e, multiply);
      },
      bufs, type.getNumElements());
  buffers.map(op->getResult(0), result);
  return success();
}

LogicalResult Lowering::lowerClip(OpBuilder &b, ClipGradNormOp op) {
  Location loc = op.getLoc();
  Value sumsq = zeroedF32(b, loc, {});
  for (Value g : op.getGrads()) {
    FailureOr<Value> buf = buffer(op, g);
    if (failed(buf))
      return failure();
    Type e = elementOf(g);
    launchElementwise(
        b, loc, kernelKey("sumsq", {e}),
        [&](OpBuilder &kb, StringRef name) {
          buildSumSquaresKernel(kb, kernels.getLoc(), name, e);
        },
        ValueRange{*buf, sumsq}, numElements(g), sumKernelBlocks(numElements(g)));
  }
  double maxNorm = op.getMaxNorm().convertToDouble();
  for (auto [g, r] : llvm::zip(op.getGrads(), op.getResults())) {
    Type e = elementOf(g);
    Value result =
        memref::AllocOp::create(b, loc, bufferType(cast<RankedTensorType>(r.getType())));
    launchElementwise(
        b, loc, kernelKey("clip", {e}, {maxNorm}),
        [&](OpBuilder &kb, StringRef name) {
          buildClipKernel(kb, kernels.getLoc(), name, e, maxNorm);
        },
        ValueRange{buffers.lookup(g), sumsq, result}, numElements(g));
    buffers.map(r, result);
  }
  return success();
}

LogicalResult Lowering::requireInPlace(Operation *op, ValueRange updated) {
  for (Value v : updated) {
    if (!v)
      continue;
    auto arg = dyn_cast<BlockArgument>(v);
    if (!arg || !isa<func::FuncOp>(arg.getOwner()->getParentOp()))
      return op->emitError("qtune-lower-to-gpu: an optimizer updates its "
                           "parameter and states in place, so each must be a "
                           "function argument");
    for (Operation *user : v.getUsers())
      if (user != op && !isa<func::ReturnOp>(user) && op->isBeforeInBlock(user))
        return op->emitError() << "qtune-lower-to-gpu: argument #"
                               << arg.getArgNumber()
                               << " is updated in place here but read after "
                                  "the update by '"
                               << user->getName() << "'";
  }
  return success();
}

LogicalResult Lowering::lowerGradAccumulate(OpBuilder &b, GradAccumulateOp op) {
  if (failed(requireInPlace(op, {op.getAcc()})))
    return failure();
  SmallVector<Value> bufs;
  SmallVector<Value> operands{op.getAcc(), op.getGrad()};
  if (op.getGuard())
    operands.push_back(op.getGuard());
  if (failed(addBuffers(op, operands, bufs)))
    return failure();
  Type g = elementOf(op.getGrad());
  bool guarded = bool(op.getGuard());
  launchElementwise(
      b, op.getLoc(), kernelKey("grad_accumulate", {g}, {double(guarded)}),
      [&](OpBuilder &kb, StringRef name) {
        buildGradAccumulateKernel(kb, kernels.getLoc(), name, g, guarded);
      },
      bufs, numElements(op.getAcc()));
  buffers.map(op.getNewAcc(), bufs[0]);
  return success();
}

LogicalResult Lowering::lowerGradTake(OpBuilder &b, GradTakeOp op) {
  if (failed(requireInPlace(op, {op.getAcc()})))
    return failure();
  SmallVector<Value> bufs;
  if (failed(addBuffers(op, {op.getAcc(), op.getCount()}, bufs)))
    return failure();
  Value grad = allocFor(b, op.getLoc(), op.getGrad());
  bufs.push_back(grad);
  launchElementwise(
      b, op.getLoc(), kernelKey("grad_take", {}),
      [&](OpBuilder &kb, StringRef name) {
        buildGradTakeKernel(kb, kernels.getLoc(), name);
      },
      bufs, numElements(op.getAcc()));
  buffers.map(op.getGrad(), grad);
  buffers.map(op.getNewAcc(), bufs[0]);
  return success();
}

LogicalResult Lowering::lowerAdamW(OpBuilder &b, AdamWOp op) {
  if (failed(requireInPlace(op, {op.getParam(), op.getM(), op.getV()})))
    return failure();
  SmallVector<Value> bufs;
  SmallVector<Value> operands{op.getParam(), op.getGrad(), op.getM(),
                             op.getV(),     op.getLr(),   op.getStep()};
  if (op.getGuard())
    operands.push_back(op.getGuard());
  if (failed(addBuffers(op, operands, bufs)))
    return failure();
  OptimizerHyper h{op.getBeta1().convertToDouble(),
                   op.getBeta2().convertToDouble(),
                   op.getEps().convertToDouble(),
                   op.getWeightDecay().convertToDouble(), bool(op.getGuard())};
  Type p = elementOf(op.getParam()), g = elementOf(op.getGrad());
  launchElementwise(
      b, op.getLoc(),
      kernelKey("adamw", {p, g},
                {h.beta1, h.beta2, h.eps, h.weightDecay, double(h.guarded)}),
      [&](OpBuilder &kb, StringRef name) {
        buildAdamWKernel(kb, kernels.getLoc(), name, p, g, h);
      },
      bufs, numElements(op.getParam()));
  buffers.map(op.getNewParam(), bufs[0]);
  buffers.map(op.getNewM(), bufs[2]);
  buffers.map(op.getNewV(), bufs[3]);
  return success();
}

LogicalResult Lowering::lowerLion(OpBuilder &b, LionOp op) {
  if (failed(requireInPlace(op, {op.getParam(), op.getM(), op.getMScales()})))
    return failure();
  SmallVector<Value> bufs;
  SmallVector<Value> operands{op.getParam(), op.getGrad(), op.getM()};
  if (op.getMScales())
    operands.push_back(op.getMScales());
  operands.push_back(op.getLr());
  if (op.getGuard())
    operands.push_back(op.getGuard());
  if (failed(addBuffers(op, operands, bufs)))
    return failure();
  OptimizerHyper h{op.getBeta1().convertToDouble(),
                   op.getBeta2().convertToDouble(), 0,
                   op.getWeightDecay().convertToDouble(), bool(op.getGuard())};
  Type p = elementOf(op.getParam()), g = elementOf(op.getGrad()),
       m = elementOf(op.getM());
  int64_t n = numElements(op.getParam());
  if (op.getMomentum() == StateFormat::int8) {
    int64_t block = op.getBlock();
    launchElementwise(
        b, op.getLoc(),
        kernelKey("lion_int8", {p, g},
                  {h.beta1, h.beta2, h.weightDecay, double(block),
                   double(h.guarded)}),
        [&](OpBuilder &kb, StringRef name) {
          buildLionInt8Kernel(kb, kernels.getLoc(), name, p, g, block, h);
        },
        bufs, n, (n + block - 1) / block);
    buffers.map(op.getNewMScales(), bufs[3]);
  } else {
    launchElementwise(
        b, op.getLoc(),
        kernelKey("lion", {p, g, m},
                  {h.beta1, h.beta2, h.weightDecay, double(h.guarded)}),
        [&](OpBuilder &kb, StringRef name) {
          buildLionKernel(kb, kernels.getLoc(), name, p, g, m, h);
        },
        bufs, n);
  }
  buffers.map(op.getNewParam(), bufs[0]);
  buffers.map(op.getNewM(), bufs[2]);
  return success();
}

LogicalResult Lowering::lowerQftLion(OpBuilder &b, QftLionOp op) {
  if (failed(requireBF16(op, {op.getGrad(), op.getInput()})) ||
      failed(requireInPlace(op, {op.getCodes(), op.getM(), op.getMScales()})))
    return failure();
  auto g = op.getGrad().getType(), x = op.getInput().getType();
  int64_t n = g.getShape().back(), k = x.getShape().back();
  int64_t block = op.getBlock();
  // One momentum block per tile row: tileN = block; whole tiles only. On
  // sm_90a, for training-sized token counts, two warpgroups of wgmma
  // m64n{block}k16 (128 rows; 4096² INT8 layer on an H100: 1957 against
  // 3102 us at 8192 tokens, 725 against 888 at 2048), else warp-level tiles
  // (more blocks for the update-bound step of few tokens: 190 against 283 us
  // at 16).
  int64_t tokens = g.getNumElements() / n;
  GemmSchedule schedule{block <= 128 ? 64 : 32, block, 32, 2, 2};
  if (options.wgmma && tokens >= 512 && block % 16 == 0 && block <= 256 &&
      n % 128 == 0) {
    schedule = GemmSchedule{128, block, 64, 8, 1};
    schedule.wgmma = true;
    schedule.stages = 3;
  }
  if (n % schedule.tileM != 0 || k % block != 0 || block % 16 != 0)
    return op.emitError() << "qtune-lower-to-gpu: the fused QFT step needs "
                             "N a multiple of "
                          << schedule.tileM << " and K of the momentum block "
                          << block << " (a multiple of 16); got " << n << "x"
                          << k;
  if (std::optional<std::string> why = schedule.validate())
    return op.emitError() << "qtune-lower-to-gpu: momentum block " << block
                          << " gives no valid QFT tile: " << *why;
  GemmSpec spec;
  spec.n = k;
  spec.k = tokens;
  spec.outputScale = op.getScale().convertToDouble();
  spec.transposeX = true;
  spec.transposeW = true;
  spec.gradRows = n;
  spec.qftFormat = op.getFormat();
  for (Value p : op.getParams())
    spec.qftParamTypes.push_back(elementOf(p));
  spec.qftBeta1 = op.getBeta1().convertToDouble();
  spec.qftBeta2 = op.getBeta2().convertToDouble();
  spec.qftWeightDecay = op.getWeightDecay().convertToDouble();
  spec.qftGuarded = bool(op.getGuard());
  SmallVector<Value> bufs;
  if (failed(addBuffers(op, {op.getGrad(), op.getInput(), op.getCodes()}, bufs)) ||
      failed(addBuffers(op, op.getParams(), bufs)) ||
      failed(addBuffers(op, {op.getM(), op.getMScales(), op.getLr()}, bufs)) ||
      (op.getGuard() && failed(addBuffers(op, {op.getGuard()}, bufs))))
    return failure();
  if (failed(launch(b, op, spec, n, bufs, schedule)))
    return failure();
  buffers.map(op.getNewCodes(), buffers.lookup(op.getCodes()));
  buffers.map(op.getNewM(), buffers.lookup(op.getM()));
  buffers.map(op.getNewMScales(), buffers.lookup(op.getMScales()));
  return success();
}

void Lowering::findLmHeads(func::FuncOp func) {
  inLmHead.clear();
  lmHeads.clear();
  Block &body = func.getBody().front();
  for (LinearOp l : body.getOps<LinearOp>()) {
    auto x = l.getInput().getType();
    auto w = dyn_cast<RankedTensorType>(l.getWeight().getType());
    if (l.getBias() || !w || !x.hasStaticShape() || !l.getType().hasStaticShape())
      continue;
    int64_t d = x.getShape().back(), rows = x.getNumElements() / d;
    int64_t v = l.getType().getShape().back();
    int64_t eltBytes = l.getType().getElementTypeBitWidth() / 8;
    if (rows * v * 4 <= chunkBytes)
      continue;
    // The largest row count dividing the rows whose logits (and their
    // gradient, up to f32) fit; windows stay 16-byte aligned.
    int64_t chunk = 0;
    for (int64_t c = rows; c >= 16; --c)
      if (rows % c == 0 && c * v * 4 <= chunkBytes && c % 4 == 0 &&
          (c * d * eltBytes) % 16 == 0) {
        chunk = c;
        break;
      }
    if (!chunk)
      continue;
    LmHead head;
    head.linear = l;
    head.chunk = chunk;
    bool ok = true;
    for (Operation *user : l->getUsers()) {
      if (auto ce = dyn_cast<CrossEntropyOp>(user); ce && !head.loss)
        head.loss = ce;
      else if (auto g = dyn_cast<CrossEntropyGradOp>(user); g && !head.lossGrad)
        head.lossGrad = g;
      else
        ok = false;
    }
    if (head.lossGrad) {
      for (Operation *user : head.lossGrad->getUsers()) {
        auto lt = dyn_cast<LinearTOp>(user);
        if (lt && !head.inputGrad && lt.getWeight() == l.getWeight() &&
            lt.getGrad() == head.lossGrad.getResult())
          head.inputGrad = lt;
        else
          ok = false; // e.g. a trainable lm head's weight gradient
      }
      ok &= bool(head.inputGrad);
    }
    if (!ok || (!head.loss && !head.lossGrad))
      continue;
    SmallVector<Operation *> ops{l};
    for (Operation *op : {(Operation *)head.loss, (Operation *)head.lossGrad,
                          (Operation *)head.inputGrad})
      if (op)
        ops.push_back(op);
    head.last = l;
    for (Operation *op : ops)
      if (head.last->isBeforeInBlock(op))
        head.last = op;
    // No other op may read the group's values before the group is lowered.
    DenseSet<Value> results;
    for (Operation *op : ops)
      results.insert(op->getResult(0));
    for (Operation *op = l->getNextNode(); op && op != head.last;
         op = op->getNextNode())
      if (!llvm::is_contained(ops, op) &&
          llvm::any_of(op->getOperands(), [&](Value v) { return results.contains(v); }))
        ok = false;
    if (!ok)
      continue;
    inLmHead.insert(ops.begin(), ops.end());
    lmHeads[head.last] = head;
  }
}

LogicalResult Lowering::lowerLmHead(OpBuilder &b, LmHead head) {
  LinearOp l = head.linear;
  Location loc = l.getLoc();
  if (failed(requireBF16(l, {l.getInput(), l.getWeight(), l.getResult()})))
    return failure();
  auto x = l.getInput().getType();
  int64_t d = x.getShape().back(), rows = x.getNumElements() / d;
  int64_t v = l.getType().getShape().back(), chunk = head.chunk;
  Value labels = head.loss ? head.loss.getLabels() : head.lossGrad.getLabels();
  SmallVector<Value> in;
  if (failed(addBuffers(l, {l.getInput(), l.getWeight(), labels}, in)))
    return failure();
  Value h = flatView(b, loc, in[0]), w = in[1], lab = flatView(b, loc, in[2]);
  Value loss = head.loss ? zeroedF32(b, loc, {}) : Value();
  Value dloss, dx, dxFlat;
  if (head.lossGrad) {
    FailureOr<Value> g = buffer(head.lossGrad, head.lossGrad.getGrad());
    if (failed(g))
      return failure();
    dloss = *g;
    dx = memref::AllocOp::create(b, loc, bufferType(head.inputGrad.getType()));
    dxFlat = flatView(b, loc, dx);
  }
  Type logitElt = l.getType().getElementType();
  auto window = [&](Value flat, int64_t offset, int64_t size) {
    return Value(BufferViewOp::create(b, loc, flat, b.getI64IntegerAttr(offset),
                                      b.getI64IntegerAttr(size)));
  };
  for (int64_t c = 0; c < rows / chunk; ++c) {
    Value hC = window(h, c * chunk * d, chunk * d);
    Value labC = window(lab, c * chunk, chunk);
    Value logits = memref::AllocOp::create(
        b, loc, MemRefType::get({chunk, v}, logitElt));
    GemmSpec spec;
    spec.n = v;
    spec.k = d;
    if (failed(launch(b, l, spec, chunk, ValueRange{hC, w, logits})))
      return failure();
    if (head.loss)
      launchElementwise(
          b, loc, kernelKey("ce", {logitElt}, {double(v), double(rows)}),
          [&](OpBuilder &kb, StringRef name) {
            buildCrossEntropyKernel(kb, kernels.getLoc(), name, logitElt, v, rows);
          },
          ValueRange{logits, labC, loss}, chunk, chunk);
    if (!head.lossGrad)
      continue;
    Type r = head.lossGrad.getType().getElementType();
    Value dlogits = memref::AllocOp::create(b, loc, MemRefType::get({chunk, v}, r));
    launchElementwise(
        b, loc, kernelKey("ce_grad", {logitElt, r}, {double(v), double(rows)}),
        [&](OpBuilder &kb, StringRef name) {
          buildCrossEntropyGradKernel(kb, kernels.getLoc(), name, logitElt, r, v,
                                      rows);
        },
        ValueRange{logits, labC, dloss, dlogits}, chunk, chunk);
    GemmSpec dxSpec;
    dxSpec.k = v;
    dxSpec.n = d;
    dxSpec.outputScale = head.inputGrad.getScale().convertToDouble();
    dxSpec.transposeW = true;
    if (failed(launch(b, head.inputGrad, dxSpec, chunk,
                      ValueRange{dlogits, w, window(dxFlat, c * chunk * d, chunk * d)})))
      return failure();
  }
  if (head.loss)
    buffers.map(head.loss.getResult(), loss);
  if (head.inputGrad)
    buffers.map(head.inputGrad.getResult(), dx);
  return success();
}

LogicalResult Lowering::lowerFunction(func::FuncOp func) {
  if (func.isExternal())
    return success();
  FunctionType type = func.getFunctionType();
  SmallVector<Type> argTypes, resultTypes;
  for (auto [i, t] : llvm::enumerate(type.getInputs())) {
    auto rt = dyn_cast<RankedTensorType>(t);
    if (!rt || !rt.hasStaticShape())
      return func.emitError() << "qtune-lower-to-gpu: argument #" << i
                              << " must be a statically shaped tensor, got "
                              << t;
    argTypes.push_back(bufferType(rt));
  }
  for (Type t : type.getResults())
    resultTypes.push_back(bufferType(cast<RankedTensorType>(t)));

  OpBuilder b(func);
  auto host = func::FuncOp::create(b, func.getLoc(), func.getName(),
                                   FunctionType::get(func.getContext(),
                                                     argTypes, resultTypes));
  host.setAllArgAttrs(func.getAllArgAttrs());
  host.setAllResultAttrs(func.getAllResultAttrs());
  Block *entry = host.addEntryBlock();
  for (auto [from, to] :
       llvm::zip(func.getArguments(), entry->getArguments()))
    buffers.map(from, to);
  b.setInsertionPointToStart(entry);

  findLmHeads(func);
  findAdapterInputGrads(func);
  // Every launch the builder creates is tagged with the family of the op
  // being lowered (a fusion may lower several ops at one of them).
  struct FamilyTagger : OpBuilder::Listener {
    StringAttr family;
    void notifyOperationInserted(Operation *op,
                                 OpBuilder::InsertPoint) override {
      if (isa<gpu::LaunchFuncOp>(op) && family)
        op->setAttr(QTuneDialect::kKernelFamilyAttrName, family);
    }
  } tagger;
  b.setListener(&tagger);
  for (Operation &op : func.getBody().front()) {
    LogicalResult ok = success();
    tagger.family = b.getStringAttr(familyOf(&op));
    if (loweredWithProducer.contains(&op)) {
      // Lowered already, with the op that produces its operands.
    } else if (inLmHead.contains(&op)) {
      auto head = lmHeads.find(&op);
      if (head != lmHeads.end())
        ok = lowerLmHead(b, head->second);
    } else if (auto q = dyn_cast<QWeightOp>(op)) {
      qweights[q.getResult()] = q;
    } else if (auto f = dyn_cast<FusedLinearOp>(op)) {
      ok = lowerLinear(b, f, f.getInput(), f.getWeight(), f.getBias(),
                       f.getLoraA(), f.getLoraB(), f.getResidual(),
                       f.getLoraA() ? f.getLoraAlpha()->convertToDouble() : 0,
                       f.getLoraA() ? *f.getLoraRank() : 0, mseOfOutput(f));
    } else if (auto l = dyn_cast<LoraOp>(op)) {
      ok = lowerLora(b, l);
    } else if (inAdapterInputGrad.contains(&op)) {
      // Lowered at its addf, with the other half of the input gradient.
    } else if (auto fused = adapterInputGrads.find(&op);
               fused != adapterInputGrads.end()) {
      ok = lowerLinearT(b, fused->second.main, fused->second.adapter,
                        op.getResult(0));
    } else if (auto lt = dyn_cast<LinearTOp>(op)) {
      ok = lowerLinearT(b, lt);
    } else if (auto wg = dyn_cast<WeightGradOp>(op)) {
      ok = lowerWeightGrad(b, wg);
    } else if (auto cg = dyn_cast<ComponentGradOp>(op)) {
      ok = lowerComponentGrad(b, cg);
    } else if (auto l = dyn_cast<MseLossOp>(op)) {
      ok = lowerMseLoss(b, l);
    } else if (auto l = dyn_cast<MseLossGradOp>(op)) {
      ok = lowerMseLossGrad(b, l);
    } else if (isa<CrossEntropyOp, CrossEntropyGradOp, KlDivOp, KlDivGradOp>(op)) {
      ok = lowerCrossEntropy(b, &op);
    } else if (isa<EmbeddingOp, EmbeddingGradOp>(op)) {
      ok = lowerEmbedding(b, &op);
    } else if (isa<RmsNormOp, RmsNormGradOp, RmsNormWeightGradOp>(op)) {
      ok = lowerRmsNorm(b, &op);
    } else if (auto r = dyn_cast<RopeOp>(op)) {
      ok = lowerRope(b, r);
    } else if (isa<SwigluOp, SwigluGradOp>(op)) {
      ok = lowerSwiglu(b, &op);
    } else if (isa<AttentionOp, AttentionGradOp>(op)) {
      ok = lowerAttention(b, &op);
    } else if (auto c = dyn_cast<arith::ConstantOp>(op)) {
      ok = lowerConstant(b, c);
    } else if (isa<arith::AddFOp, arith::MulFOp>(op)) {
      ok = lowerAdd(b, &op);
    } else if (auto c = dyn_cast<ClipGradNormOp>(op)) {
      ok = lowerClip(b, c);
    } else if (auto a = dyn_cast<AdamWOp>(op)) {
      ok = lowerAdamW(b, a);
    } else if (auto a = dyn_cast<GradAccumulateOp>(op)) {
      ok = lowerGradAccumulate(b, a);
    } else if (auto t = dyn_cast<GradTakeOp>(op)) {
      ok = lowerGradTake(b, t);
    } else if (auto l = dyn_cast<LionOp>(op)) {
      ok = lowerLion(b, l);
    } else if (auto q = dyn_cast<QftLionOp>(op)) {
      ok = lowerQftLion(b, q);
    } else if (auto l = dyn_cast<LinearOp>(op)) {
      if (!reuseAdapterProduct(l))
        ok = lowerLinear(b, l, l.getInput(), l.getWeight(), l.getBias(), {},
                         {}, {}, 0, 0, mseOfOutput(l));
    } else if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      SmallVector<Value> results;
      for (Value v : ret.getOperands()) {
        FailureOr<Value> buf = buffer(ret, v);
        if (failed(buf))
          return failure();
        results.push_back(*buf);
      }
      func::ReturnOp::create(b, ret.getLoc(), results);
    } else {
      return op.emitError() << "qtune-lower-to-gpu: '" << op.getName()
                            << "' has no GPU lowering yet (run qtune-fuse "
                               "first; supported: qtune.qweight, "
                               "qtune.linear, qtune.fused_linear, "
                               "qtune.lora, qtune.linear_t, "
                               "qtune.weight_grad, qtune.component_grad, "
                               "qtune.mse_loss(_grad), "
                               "qtune.cross_entropy(_grad), "
                               "qtune.kl_div(_grad), the decoder "
                               "ops and their gradients, "
                               "qtune.clip_grad_norm, qtune.adamw, "
                               "qtune.lion, qtune.qft_lion, arith.addf, "
                               "arith.mulf)";
    }
    if (failed(ok))
      return failure();
  }
  func.erase();
  return success();
}

StringRef Lowering::familyOf(Operation *op) {
  if (inLmHead.contains(op))
    return "lm head and loss";
  auto quantized = [&](Value w) { return isa<QWeightType>(w.getType()); };
  // A dense weight of adapter shape (one side a rank, the other at least 8
  // times longer) is an adapter's.
  auto adapterSized = [](Value w) {
    auto t = dyn_cast<RankedTensorType>(w.getType());
    if (!t || t.getRank() != 2)
      return false;
    int64_t lo = std::min(t.getDimSize(0), t.getDimSize(1)),
            hi = std::max(t.getDimSize(0), t.getDimSize(1));
    return lo <= kAdapterMaxRank && hi >= 8 * lo;
  };
  return TypeSwitch<Operation *, StringRef>(op)
      .Case<AttentionOp, AttentionGradOp>([](auto) { return "attention"; })
      .Case<FusedLinearOp, LinearOp, LinearTOp>([&](auto l) -> StringRef {
        if (quantized(l.getWeight()))
          return "quantized GEMM";
        return adapterSized(l.getWeight()) ? "adapter GEMMs" : "dense GEMM";
      })
      .Case<ComponentGradOp, QftLionOp>([](auto) { return "quantized GEMM"; })
      .Case<LoraOp>([](auto) { return "adapter GEMMs"; })
      .Case<WeightGradOp>([&](WeightGradOp g) -> StringRef {
        return adapterSized(g.getResult()) ? "adapter GEMMs" : "dense GEMM";
      })
      .Case<MseLossOp, MseLossGradOp, CrossEntropyOp, CrossEntropyGradOp,
            KlDivOp, KlDivGradOp>([](auto) { return "lm head and loss"; })
      .Case<ClipGradNormOp, AdamWOp, GradAccumulateOp, GradTakeOp, LionOp>(
          [](auto) { return "optimizer"; })
      .Case<arith::AddFOp>([&](Operation *add) -> StringRef {
        // The merged input gradient of an adapter layer (g·W + t·A).
        auto fused = adapterInputGrads.find(add);
        if (fused != adapterInputGrads.end())
          return quantized(fused->second.main.getWeight()) ? "quantized GEMM"
                                                           : "dense GEMM";
        return "norms and elementwise";
      })
      .Default([](Operation *) { return "norms and elementwise"; });
}

struct QTuneLowerToGPUPass
    : qtune::impl::QTuneLowerToGPUBase<QTuneLowerToGPUPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    GemmSchedule schedule{tileM, tileN, tileK, warpsM, warpsN};
    if (!StringRef(chip).starts_with("sm_") ||
        std::atoi(chip.c_str() + 3) < 80) {
      module.emitError() << "qtune-lower-to-gpu: chip must be sm_80 or newer "
                            "(the kernels use mma.sync and cp.async), got '"
                         << chip << "'";
      return signalPassFailure();
    }
    if (mma != "auto" && mma != "sync") {
      module.emitError() << "qtune-lower-to-gpu: mma must be 'auto' or "
                            "'sync', got '"
                         << mma << "'";
      return signalPassFailure();
    }
    // wgmma exists on sm_90a only (not sm_90, not later architectures).
    schedule.wgmma = mma == "auto" && chip == "sm_90a";
    OpBuilder b = OpBuilder::atBlockEnd(module.getBody());
    auto target = NVVM::NVVMTargetAttr::get(&getContext(), /*optLevel=*/3,
                                            "nvptx64-nvidia-cuda", chip);
    auto kernels = gpu::GPUModuleOp::create(b, module.getLoc(), kKernelModule,
                                            b.getArrayAttr({target}));
    module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                    b.getUnitAttr());
    Lowering lowering(module, kernels, schedule, logitsChunkBytes);
    for (auto func : llvm::to_vector(module.getOps<func::FuncOp>()))
      if (failed(lowering.lowerFunction(func)))
        return signalPassFailure();
  }
};

} // namespace
