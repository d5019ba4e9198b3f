//===- QTuneOps.cpp - qtune operations --------------------------------------===//

#include "qtune/Dialect/QTune/IR/QTuneOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/PatternMatch.h"
#include "llvm/ADT/STLExtras.h"

#include <cmath>

using namespace mlir;
using namespace qtune;

#define GET_OP_CLASSES
#include "qtune/Dialect/QTune/IR/QTuneOps.cpp.inc"

namespace {
/// Prints a shape as "64x128" ("?" for dynamic, "scalar" for rank 0).
std::string shapeStr(ArrayRef<int64_t> shape) {
  if (shape.empty())
    return "scalar";
  std::string s;
  llvm::raw_string_ostream os(s);
  llvm::interleave(
      shape, os,
      [&](int64_t d) {
        if (ShapedType::isDynamic(d))
          os << "?";
        else
          os << d;
      },
      "x");
  return s;
}

bool dimsCompatible(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

/// Checks that `result` has shape `leading ++ [last]` and element type `elt`.
LogicalResult verifyRowwiseResult(Operation *op, RankedTensorType input,
                                  RankedTensorType result, int64_t last) {
  SmallVector<int64_t> expected(input.getShape().drop_back());
  expected.push_back(last);
  bool ok = result.getRank() == (int64_t)expected.size();
  for (size_t i = 0; ok && i < expected.size(); ++i)
    ok = dimsCompatible(result.getDimSize(i), expected[i]);
  if (!ok)
    return op->emitOpError() << "result must have shape " << shapeStr(expected)
                             << " (the input's leading dimensions, then "
                             << last << "), got " << shapeStr(result.getShape());
  if (result.getElementType() != input.getElementType())
    return op->emitOpError()
           << "result element type must match the input's ("
           << input.getElementType() << "), got " << result.getElementType();
  return success();
}
} // namespace

//===----------------------------------------------------------------------===//
// QWeightOp
//===----------------------------------------------------------------------===//

LogicalResult QWeightOp::verify() {
  auto type = getResult().getType();
  SmallVector<ComponentSpec> specs = type.getComponents();
  if (getComponents().size() != specs.size()) {
    std::string names;
    llvm::raw_string_ostream os(names);
    llvm::interleave(specs, os, [&](const ComponentSpec &s) { os << s.name; },
                     ", ");
    return emitOpError() << "format " << type.getFormat() << " expects "
                         << specs.size() << " components (" << names
                         << "), got " << getComponents().size();
  }
  bool hasScale = false;
  for (auto [i, value, spec] : llvm::enumerate(getComponents(), specs)) {
    auto t = cast<RankedTensorType>(value.getType());
    if (t.getElementType() != spec.elementType)
      return emitOpError() << "component #" << i << " ('" << spec.name
                           << "') must have element type " << spec.elementType
                           << ", got " << t.getElementType();
    if (t.getShape() != ArrayRef<int64_t>(spec.shape))
      return emitOpError() << "component #" << i << " ('" << spec.name
                           << "') must have shape " << shapeStr(spec.shape)
                           << " for a " << type.getN() << "x" << type.getK()
                           << " weight in " << type.getFormat() << ", got "
                           << shapeStr(t.getShape());
    hasScale |= spec.kind == ComponentKind::Scale;
    bool trainable = getArgumentRole(value) == Role::trainable;
    // QFT trains the codes of 8-bit uniform weights in place (qtune.qft_lion).
    bool qftCodes = i == 0 && isQftFormat(type.getFormat()) && !getScaleOnly();
    if (trainable && spec.isInteger() && !qftCodes)
      return emitOpError() << "component #" << i << " ('" << spec.name
                           << "') holds integer codes and cannot come from a "
                              "trainable argument (only the codes of 8-bit "
                              "uniform weights train, with QFT)";
    if (getScaleOnly() && trainable && spec.kind != ComponentKind::Scale)
      return emitOpError() << "scale-only (PEQA) layer: component #" << i
                           << " ('" << spec.name
                           << "') comes from a trainable argument; only scales "
                              "may train, codes and zero points stay frozen";
  }
  if (getScaleOnly() && !hasScale)
    return emitOpError() << "scale-only (PEQA) layer needs a format with scale "
                            "components; "
                         << type.getFormat() << " has none";
  return success();
}

//===----------------------------------------------------------------------===//
// DequantOp
//===----------------------------------------------------------------------===//

LogicalResult DequantOp::verify() {
  auto w = getWeight().getType();
  auto r = getResult().getType();
  if (r.getRank() != 2 || r.getDimSize(0) != w.getN() ||
      r.getDimSize(1) != w.getK())
    return emitOpError() << "result must have shape " << w.getN() << "x"
                         << w.getK() << " (the weight's), got "
                         << shapeStr(r.getShape());
  return success();
}

//===----------------------------------------------------------------------===//
// LinearOp
//===----------------------------------------------------------------------===//

/// Checks y = x · Wᵀ (+ bias): shapes of x, W, bias and the result.
static LogicalResult verifyLinear(Operation *op, RankedTensorType x,
                                  Type weightType, Value bias,
                                  RankedTensorType result) {
  if (x.getRank() < 1)
    return op->emitOpError() << "input (operand #0) must have rank >= 1 "
                                "([..., K]), got a scalar";
  int64_t n, k;
  if (auto q = dyn_cast<QWeightType>(weightType)) {
    n = q.getN();
    k = q.getK();
  } else {
    auto w = cast<RankedTensorType>(weightType);
    if (w.getRank() != 2)
      return op->emitOpError() << "dense weight (operand #1) must be NxK (rank "
                                  "2), got shape "
                               << shapeStr(w.getShape());
    n = w.getDimSize(0);
    k = w.getDimSize(1);
  }
  if (!dimsCompatible(x.getShape().back(), k))
    return op->emitOpError() << "input (operand #0) has last dimension "
                             << x.getShape().back() << " but the weight is "
                             << shapeStr({n, k}) << " (expects K = " << k << ")";
  if (bias) {
    auto b = cast<RankedTensorType>(bias.getType());
    if (b.getRank() != 1 || !dimsCompatible(b.getDimSize(0), n))
      return op->emitOpError() << "bias (operand #2) must have shape " << n
                               << " (N), got " << shapeStr(b.getShape());
  }
  return verifyRowwiseResult(op, x, result, n);
}

LogicalResult LinearOp::verify() {
  return verifyLinear(*this, getInput().getType(), getWeight().getType(),
                      getBias(), getResult().getType());
}

namespace {
/// linear(x, dequant(w)) -> linear(x, w): keep the weight quantized so later
/// passes fuse its dequantization into the matrix kernel.
struct LinearOfDequant : OpRewritePattern<LinearOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(LinearOp op,
                                PatternRewriter &rewriter) const override {
    auto dq = op.getWeight().getDefiningOp<DequantOp>();
    if (!dq)
      return failure();
    rewriter.modifyOpInPlace(
        op, [&] { op.getWeightMutable().assign(dq.getWeight()); });
    return success();
  }
};
} // namespace

void LinearOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                           MLIRContext *context) {
  results.add<LinearOfDequant>(context);
}

//===----------------------------------------------------------------------===//
// LoraOp
//===----------------------------------------------------------------------===//

/// Checks the LoRA term (alpha / rank) · (x · Aᵀ) · Bᵀ.
static LogicalResult verifyLora(Operation *op, RankedTensorType x,
                                RankedTensorType a, RankedTensorType b,
                                int64_t rank, double alpha, double dropout,
                                RankedTensorType result) {
  if (rank <= 0)
    return op->emitOpError() << "rank must be positive, got " << rank;
  if (!std::isfinite(alpha))
    return op->emitOpError() << "alpha must be finite, got " << alpha;
  if (!(dropout >= 0.0 && dropout < 1.0))
    return op->emitOpError() << "dropout must be in [0, 1), got " << dropout;
  if (x.getRank() < 1)
    return op->emitOpError() << "input (operand #0) must have rank >= 1 "
                                "([..., K]), got a scalar";
  if (a.getRank() != 2)
    return op->emitOpError() << "A must be rank x K (rank 2), got shape "
                             << shapeStr(a.getShape());
  if (b.getRank() != 2)
    return op->emitOpError() << "B must be N x rank (rank 2), got shape "
                             << shapeStr(b.getShape());
  if (!dimsCompatible(a.getDimSize(0), rank))
    return op->emitOpError() << "A has " << a.getDimSize(0)
                             << " rows but rank = " << rank;
  if (!dimsCompatible(b.getDimSize(1), rank))
    return op->emitOpError() << "rank mismatch between A and B: A is "
                             << shapeStr(a.getShape()) << " (rank " << rank
                             << ") but B is " << shapeStr(b.getShape())
                             << " (expects " << b.getDimSize(0) << "x" << rank
                             << ")";
  if (!dimsCompatible(x.getShape().back(), a.getDimSize(1)))
    return op->emitOpError() << "input (operand #0) has last dimension "
                             << x.getShape().back() << " but A is "
                             << shapeStr(a.getShape()) << " (expects K = "
                             << a.getDimSize(1) << ")";
  return verifyRowwiseResult(op, x, result, b.getDimSize(0));
}

LogicalResult LoraOp::verify() {
  return verifyLora(*this, getInput().getType(), getA().getType(),
                    getB().getType(), getRank(),
                    getAlpha().convertToDouble(),
                    getDropout().convertToDouble(), getResult().getType());
}

//===----------------------------------------------------------------------===//
// FusedLinearOp
//===----------------------------------------------------------------------===//

LogicalResult FusedLinearOp::verify() {
  if (failed(verifyLinear(*this, getInput().getType(), getWeight().getType(),
                          getBias(), getResult().getType())))
    return failure();
  bool hasA = bool(getLoraA()), hasB = bool(getLoraB());
  bool hasAttrs = getLoraAlpha().has_value() && getLoraRank().has_value();
  if (hasA != hasB || hasA != hasAttrs)
    return emitOpError() << "a LoRA term needs lora(A, B) together with "
                            "lora_alpha and lora_rank (or none of them)";
  if (hasA && failed(verifyLora(*this, getInput().getType(),
                                cast<RankedTensorType>(getLoraA().getType()),
                                cast<RankedTensorType>(getLoraB().getType()),
                                *getLoraRank(), getLoraAlpha()->convertToDouble(),
                                getLoraDropout().convertToDouble(),
                                getResult().getType())))
    return failure();
  if (getResidual() && getResidual().getType() != getResult().getType())
    return emitOpError() << "residual must have the result's type "
                         << getResult().getType() << ", got "
                         << getResidual().getType();
  return success();
}

//===----------------------------------------------------------------------===//
// Gradient ops
//===----------------------------------------------------------------------===//

/// N and K of a weight operand (quantized or dense N×K).
static std::pair<int64_t, int64_t> weightDims(Type weight) {
  if (auto q = dyn_cast<QWeightType>(weight))
    return {q.getN(), q.getK()};
  auto t = cast<RankedTensorType>(weight);
  return {t.getDimSize(0), t.getDimSize(1)};
}

LogicalResult LinearTOp::verify() {
  auto g = getGrad().getType();
  if (auto w = dyn_cast<RankedTensorType>(getWeight().getType());
      w && w.getRank() != 2)
    return emitOpError() << "dense weight (operand #1) must be NxK, got shape "
                         << shapeStr(w.getShape());
  auto [n, k] = weightDims(getWeight().getType());
  if (g.getRank() < 1 || !dimsCompatible(g.getShape().back(), n))
    return emitOpError() << "gradient (operand #0) must be [..., N] with N = "
                         << n << ", got shape " << shapeStr(g.getShape());
  return verifyRowwiseResult(*this, g, getResult().getType(), k);
}

/// A weight gradient's `g` ([..., N]) and `x` ([..., K]) share their leading
/// dimensions (the sum runs over them).
static LogicalResult verifySharedLeadingDims(Operation *op, RankedTensorType g,
                                             RankedTensorType x) {
  if (g.getRank() < 1 || g.getRank() != x.getRank() ||
      g.getShape().drop_back() != x.getShape().drop_back())
    return op->emitOpError() << "gradient " << shapeStr(g.getShape())
                             << " and input " << shapeStr(x.getShape())
                             << " must share their leading dimensions";
  return success();
}

LogicalResult WeightGradOp::verify() {
  auto g = getGrad().getType(), x = getInput().getType();
  if (failed(verifySharedLeadingDims(*this, g, x)))
    return failure();
  auto r = getResult().getType();
  if (r.getRank() != 2 || r.getDimSize(0) != g.getShape().back() ||
      r.getDimSize(1) != x.getShape().back())
    return emitOpError() << "result must be " << g.getShape().back() << "x"
                         << x.getShape().back() << ", got "
                         << shapeStr(r.getShape());
  return success();
}

LogicalResult ComponentGradOp::verify() {
  auto w = getWeight().getType();
  SmallVector<ComponentSpec> specs = w.getComponents();
  int64_t c = getComponent();
  if (c < 0 || c >= (int64_t)specs.size())
    return emitOpError() << "component " << c << " out of range (the format has "
                         << specs.size() << ")";
  if (specs[c].isInteger())
    return emitOpError() << "component " << c << " ('" << specs[c].name
                         << "') holds integer codes: it has no gradient";
  if (getResult().getType().getShape() != ArrayRef<int64_t>(specs[c].shape))
    return emitOpError() << "result must have the shape of component '"
                         << specs[c].name << "' (" << shapeStr(specs[c].shape)
                         << "), got "
                         << shapeStr(getResult().getType().getShape());
  auto g = getGrad().getType(), x = getInput().getType();
  if (g.getShape().back() != w.getN() || x.getShape().back() != w.getK() ||
      g.getShape().drop_back() != x.getShape().drop_back())
    return emitOpError() << "gradient " << shapeStr(g.getShape())
                         << " and input " << shapeStr(x.getShape())
                         << " do not match the " << w.getN() << "x" << w.getK()
                         << " weight";
  return success();
}

LogicalResult MseLossOp::verify() {
  if (getPrediction().getType().getShape() != getTarget().getType().getShape())
    return emitOpError() << "prediction and target must have the same shape, got "
                         << shapeStr(getPrediction().getType().getShape())
                         << " and "
                         << shapeStr(getTarget().getType().getShape());
  return success();
}

LogicalResult KlDivOp::verify() {
  auto student = getStudent().getType(), teacher = getTeacher().getType();
  if (student.getRank() < 1 || student.getShape() != teacher.getShape())
    return emitOpError() << "student and teacher logits must have one shape "
                            "[..., V], got "
                         << shapeStr(student.getShape()) << " and "
                         << shapeStr(teacher.getShape());
  return success();
}

LogicalResult CrossEntropyOp::verify() {
  auto logits = getLogits().getType();
  auto labels = getLabels().getType();
  if (logits.getRank() < 1 || labels.getShape() != logits.getShape().drop_back())
    return emitOpError() << "labels must have the logits' leading dimensions ("
                         << shapeStr(logits.getShape().drop_back())
                         << "), got " << shapeStr(labels.getShape());
  return success();
}

//===----------------------------------------------------------------------===//
// Decoder ops
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingOp::verify() {
  auto table = getTable().getType();
  if (table.getRank() != 2)
    return emitOpError() << "table must be V x D (rank 2), got shape "
                         << shapeStr(table.getShape());
  SmallVector<int64_t> expected(getIds().getType().getShape());
  expected.push_back(table.getDimSize(1));
  auto result = getResult().getType();
  if (result.getShape() != ArrayRef<int64_t>(expected) ||
      result.getElementType() != table.getElementType())
    return emitOpError() << "result must be " << shapeStr(expected) << " of "
                         << table.getElementType()
                         << " (the ids' shape, then the table's D), got "
                         << result;
  return success();
}

LogicalResult RmsNormOp::verify() {
  auto x = getInput().getType(), w = getWeight().getType();
  if (x.getRank() < 1)
    return emitOpError("input must have rank >= 1 ([..., D])");
  if (w.getRank() != 1 || w.getDimSize(0) != x.getShape().back())
    return emitOpError() << "weight must be [" << x.getShape().back()
                         << "] (the input's last dimension), got "
                         << shapeStr(w.getShape());
  if (getResult().getType() != x)
    return emitOpError() << "result must have the input's type " << x
                         << ", got " << getResult().getType();
  if (!(getEps().convertToDouble() > 0))
    return emitOpError() << "eps must be positive, got "
                         << getEps().convertToDouble();
  return success();
}

LogicalResult RopeOp::verify() {
  auto x = getInput().getType();
  int64_t d = getHeadDim();
  if (x.getRank() < 2)
    return emitOpError() << "input must be [..., S, H x head_dim] (rank >= 2), "
                            "got shape "
                         << shapeStr(x.getShape());
  if (d <= 0 || d % 2 != 0)
    return emitOpError() << "head_dim must be positive and even, got " << d;
  if (x.getShape().back() % d != 0)
    return emitOpError() << "the last dimension (" << x.getShape().back()
                         << ") must be a multiple of head_dim (" << d << ")";
  if (!(getTheta().convertToDouble() > 0))
    return emitOpError() << "theta must be positive, got "
                         << getTheta().convertToDouble();
  return success();
}

/// Segment ids, where given, are [..., S] (the query's shape without its
/// last dimension).
static LogicalResult verifySegments(Operation *op, Value segments,
                                    RankedTensorType q) {
  if (!segments)
    return success();
  ArrayRef<int64_t> want = q.getShape().drop_back();
  auto t = cast<RankedTensorType>(segments.getType());
  if (t.getShape() != want)
    return op->emitOpError() << "segments must be " << shapeStr(want)
                             << " of i32 (one id per position), got " << t;
  return success();
}

double AttentionOp::getScaleValue() {
  if (auto s = getScale())
    return s->convertToDouble();
  return 1.0 / std::sqrt(double(getHeadDim()));
}

LogicalResult AttentionOp::verify() {
  auto q = getQuery().getType(), k = getKey().getType(),
       v = getValue().getType();
  int64_t h = getHeads(), hkv = getKvHeads();
  if (h <= 0 || hkv <= 0 || h % hkv != 0)
    return emitOpError() << "heads (" << h << ") must be a positive multiple "
                         << "of kv_heads (" << hkv << ")";
  if (q.getRank() < 2)
    return emitOpError() << "query must be [..., S, heads x head_dim] (rank "
                            ">= 2), got shape "
                         << shapeStr(q.getShape());
  if (q.getShape().back() % h != 0)
    return emitOpError() << "query's last dimension (" << q.getShape().back()
                         << ") must be a multiple of heads (" << h << ")";
  int64_t d = q.getShape().back() / h;
  SmallVector<int64_t> kvShape(q.getShape().drop_back());
  kvShape.push_back(hkv * d);
  for (auto [name, t] : {std::pair{"key", k}, std::pair{"value", v}})
    if (t.getShape() != ArrayRef<int64_t>(kvShape) ||
        t.getElementType() != q.getElementType())
      return emitOpError() << name << " must be " << shapeStr(kvShape) << " of "
                           << q.getElementType() << " (kv_heads x head_dim = "
                           << hkv << " x " << d << "), got " << t;
  if (getResult().getType() != q)
    return emitOpError() << "result must have the query's type " << q
                         << ", got " << getResult().getType();
  SmallVector<int64_t> lseShape(q.getShape().drop_back(2));
  lseShape.push_back(h);
  lseShape.push_back(q.getShape().drop_back().back());
  if (getLse().getType().getShape() != ArrayRef<int64_t>(lseShape))
    return emitOpError() << "lse must be " << shapeStr(lseShape)
                         << " ([..., heads, S]), got "
                         << shapeStr(getLse().getType().getShape());
  if (auto s = getScale(); s && !(s->convertToDouble() > 0))
    return emitOpError() << "scale must be positive, got "
                         << s->convertToDouble();
  return verifySegments(*this, getSegments(), q);
}

LogicalResult AttentionGradOp::verify() {
  return verifySegments(*this, getSegments(), getQuery().getType());
}

//===----------------------------------------------------------------------===//
// Optimizers
//===----------------------------------------------------------------------===//

/// Number of per-block scales of an int8 moment with `numElements` elements.
static int64_t numMomentBlocks(int64_t numElements, int64_t block) {
  return (numElements + block - 1) / block;
}

LogicalResult AdamWOp::verify() {
  auto p = getParam().getType();
  for (auto [name, v] : {std::pair{"grad", getGrad()}, std::pair{"m", getM()},
                         std::pair{"v", getV()}}) {
    auto t = cast<RankedTensorType>(v.getType());
    if (t.getShape() != p.getShape())
      return emitOpError() << name << " must have the parameter's shape "
                           << shapeStr(p.getShape()) << ", got "
                           << shapeStr(t.getShape());
  }
  if (!getM().getType().getElementType().isF32() ||
      !getV().getType().getElementType().isF32())
    return emitOpError("AdamW moments m and v must be f32");
  if (getNewM().getType() != getM().getType() ||
      getNewV().getType() != getV().getType())
    return emitOpError("updated moments must have the moments' types");
  return success();
}

LogicalResult LionOp::verify() {
  auto p = getParam().getType();
  auto m = cast<RankedTensorType>(getM().getType());
  if (getGrad().getType().getShape() != p.getShape() ||
      m.getShape() != p.getShape())
    return emitOpError() << "grad and momentum must have the parameter's shape "
                         << shapeStr(p.getShape());
  Type elt = m.getElementType();
  StateFormat format = getMomentum();
  bool ok = (format == StateFormat::f32 && elt.isF32()) ||
            (format == StateFormat::bf16 && elt.isBF16()) ||
            (format == StateFormat::int8 && elt.isInteger(8));
  if (!ok)
    return emitOpError() << "momentum stored as " << stringifyStateFormat(format)
                         << " needs element type "
                         << (format == StateFormat::int8
                                 ? "i8"
                                 : stringifyStateFormat(format))
                         << ", got " << elt;
  bool int8 = format == StateFormat::int8;
  if (bool(getMScales()) != int8 || bool(getNewMScales()) != int8)
    return emitOpError("int8 momentum takes per-block scales (operand and "
                       "result), other formats none");
  if (int8) {
    int64_t blocks = numMomentBlocks(m.getNumElements(), getBlock());
    auto s = getMScales().getType();
    if (getBlock() <= 0 || s.getRank() != 1 || s.getDimSize(0) != blocks)
      return emitOpError() << "int8 momentum scales must be tensor<" << blocks
                           << "xf32> (one per " << getBlock()
                           << " elements), got " << s;
    if (getNewMScales().getType() != s)
      return emitOpError("updated scales must have the scales' type");
  }
  if (getNewM().getType() != m || getNewParam().getType() != p)
    return emitOpError("results must have the parameter's and momentum's types");
  return success();
}

bool qtune::isQftFormat(QuantFormatAttrInterface format) {
  auto u = dyn_cast_or_null<UniformFormatAttr>(format);
  return u && u.getBits() == 8;
}

LogicalResult QftLionOp::verify() {
  UniformFormatAttr format = getFormat();
  if (format.getBits() != 8)
    return emitOpError() << "QFT trains 8-bit uniform codes, got " << format;
  auto g = getGrad().getType(), x = getInput().getType();
  if (failed(verifySharedLeadingDims(*this, g, x)))
    return failure();
  int64_t n = g.getShape().back(), k = x.getShape().back();
  if (failed(cast<QuantFormatAttrInterface>(Attribute(format))
                 .verifyShape(n, k, [&] { return emitOpError(); })))
    return failure();
  SmallVector<ComponentSpec> specs =
      cast<QuantFormatAttrInterface>(Attribute(format)).getComponents(n, k);
  SmallVector<Value> comps{getCodes()};
  llvm::append_range(comps, getParams());
  if (comps.size() != specs.size())
    return emitOpError() << "format " << format << " has " << specs.size()
                         << " components; got codes and "
                         << getParams().size() << " params";
  for (auto [i, v, spec] : llvm::enumerate(comps, specs)) {
    auto t = cast<RankedTensorType>(v.getType());
    if (t.getElementType() != spec.elementType ||
        t.getShape() != ArrayRef<int64_t>(spec.shape))
      return emitOpError() << "component #" << i << " ('" << spec.name
                           << "') must be " << shapeStr(spec.shape) << " of "
                           << spec.elementType << " for a " << n << "x" << k
                           << " weight, got " << t;
  }
  int64_t block = getBlock();
  if (block <= 0 || k % block != 0)
    return emitOpError() << "momentum block " << block
                         << " must divide K = " << k
                         << " (blocks stay within a row)";
  auto m = getM().getType(), ms = getMScales().getType();
  if (m.getShape() != ArrayRef<int64_t>{n, k})
    return emitOpError() << "momentum must be " << n << "x" << k
                         << "xi8, got " << m;
  if (ms.getRank() != 1 || ms.getDimSize(0) != n * k / block)
    return emitOpError() << "momentum scales must be tensor<" << n * k / block
                         << "xf32> (one per " << block << " elements), got "
                         << ms;
  if (getNewCodes().getType() != getCodes().getType() ||
      getNewM().getType() != m || getNewMScales().getType() != ms)
    return emitOpError("results must have the types of codes, m and m_scales");
  return success();
}

LogicalResult ClipGradNormOp::verify() {
  if (getGrads().getTypes() != getResults().getTypes())
    return emitOpError("results must have the types of the gradients, in order");
  if (!(getMaxNorm().convertToDouble() > 0))
    return emitOpError() << "max_norm must be positive, got "
                         << getMaxNorm().convertToDouble();
  return success();
}

//===----------------------------------------------------------------------===//
// BufferViewOp
//===----------------------------------------------------------------------===//

LogicalResult BufferViewOp::verify() {
  int64_t offset = getOffset(), size = getSize();
  if (offset < 0 || size <= 0)
    return emitOpError() << "needs offset >= 0 and size > 0, got offset "
                         << offset << " and size " << size;
  int64_t extent = getSource().getType().getDimSize(0);
  if (!ShapedType::isDynamic(extent) && offset + size > extent)
    return emitOpError() << "window [" << offset << ", " << offset + size
                         << ") lies outside the " << extent
                         << "-element buffer";
  return success();
}

LogicalResult TensorMapOp::verify() {
  int64_t rows = getRows(), cols = getCols(), boxRows = getBoxRows(),
          boxCols = getBoxCols(), swizzle = getSwizzle();
  if (rows < 1 || cols < 1 || cols % 8 != 0)
    return emitOpError() << "needs rows >= 1 and cols a positive multiple of "
                            "8 (16-byte rows), got "
                         << rows << " x " << cols;
  if (boxRows < 1 || boxRows > 256 || boxCols < 8 || boxCols > 256 ||
      boxCols % 8 != 0)
    return emitOpError() << "box " << boxRows << " x " << boxCols
                         << " must have 1 to 256 rows and a multiple of 8 "
                            "columns up to 256";
  if (swizzle != 0 && swizzle != 32 && swizzle != 64 && swizzle != 128)
    return emitOpError() << "swizzle must be 0, 32, 64 or 128 bytes, got "
                         << swizzle;
  if (swizzle != 0 && boxCols * 2 > swizzle)
    return emitOpError() << "a box row of " << boxCols * 2
                         << " bytes does not fit the " << swizzle
                         << "-byte swizzle";
  int64_t extent = getSource().getType().getDimSize(0);
  if (!ShapedType::isDynamic(extent) && rows * cols > extent)
    return emitOpError() << "a " << rows << " x " << cols
                         << " matrix does not fit the " << extent
                         << "-element buffer";
  return success();
}

LogicalResult GradAccumulateOp::verify() {
  if (getAcc().getType().getShape() != getGrad().getType().getShape())
    return emitOpError() << "accumulator " << getAcc().getType()
                         << " and gradient " << getGrad().getType()
                         << " must have the same shape";
  return success();
}
