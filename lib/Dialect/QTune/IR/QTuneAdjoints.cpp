//===- QTuneAdjoints.cpp - vector-Jacobian products of qtune ops -----------===//

#include "qtune/Dialect/QTune/IR/QTuneOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

using namespace mlir;
using namespace qtune;

namespace {
RankedTensorType withLastDim(RankedTensorType t, int64_t last) {
  SmallVector<int64_t> shape(t.getShape());
  shape.back() = last;
  return RankedTensorType::get(shape, t.getElementType());
}
} // namespace

LogicalResult LinearOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> resultGrads,
                                     ArrayRef<bool> needGrad,
                                     SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(getNumOperands(), Value());
  Value g = resultGrads[0];
  if (!g)
    return success();
  Location loc = getLoc();
  auto x = getInput().getType();
  auto [n, k] = std::pair{cast<RankedTensorType>(g.getType()).getShape().back(),
                          x.getShape().back()};
  if (needGrad[0])
    operandGrads[0] = LinearTOp::create(b, loc, x, g, getWeight(),
                                        b.getF64FloatAttr(1.0));
  if (needGrad[1]) {
    // For a quantized weight this N×K gradient is symbolic: qtune.qweight's
    // adjoint turns it into per-component gradients and it dies.
    Type type = isa<QWeightType>(getWeight().getType())
                    ? RankedTensorType::get({n, k}, b.getF32Type())
                    : getWeight().getType();
    operandGrads[1] = WeightGradOp::create(b, loc, type, g, getInput(),
                                           b.getF64FloatAttr(1.0));
  }
  if (getBias() && needGrad[2])
    operandGrads[2] = BiasGradOp::create(b, loc, getBias().getType(), g);
  return success();
}

LogicalResult LoraOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> resultGrads,
                                   ArrayRef<bool> needGrad,
                                   SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(getNumOperands(), Value());
  Value g = resultGrads[0];
  if (!g)
    return success();
  // Dropout is the identity everywhere else (evaluation); trained through
  // without it, the adapter would silently learn without regularization.
  if (!getDropout().isZero())
    return emitError("qtune-autodiff: LoRA dropout is not implemented in "
                     "training; use dropout 0");
  Location loc = getLoc();
  auto s = b.getF64FloatAttr(getScaling());
  auto one = b.getF64FloatAttr(1.0);
  auto x = getInput().getType();
  auto tType = withLastDim(x, getRank());
  // y = s · t · Bᵀ with t = x · Aᵀ.
  if (needGrad[2]) {
    Value t = LinearOp::create(b, loc, tType, getInput(), getA(), Value());
    operandGrads[2] = WeightGradOp::create(b, loc, getB().getType(), g, t, s);
  }
  if (needGrad[0] || needGrad[1]) {
    Value dt = LinearTOp::create(b, loc, tType, g, getB(), s);
    if (needGrad[1])
      operandGrads[1] =
          WeightGradOp::create(b, loc, getA().getType(), dt, getInput(), one);
    if (needGrad[0])
      operandGrads[0] = LinearTOp::create(b, loc, x, dt, getA(), one);
  }
  return success();
}

LogicalResult QWeightOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> resultGrads,
                                      ArrayRef<bool> needGrad,
                                      SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(getNumOperands(), Value());
  Value dW = resultGrads[0];
  if (!dW)
    return success();
  // dW is a sum of symbolic weight gradients gᵢᵀ·xᵢ, one per linear use.
  SmallVector<WeightGradOp> terms;
  SmallVector<Value> work{dW};
  while (!work.empty()) {
    Value v = work.pop_back_val();
    if (auto add = v.getDefiningOp<arith::AddFOp>()) {
      work.push_back(add.getLhs());
      work.push_back(add.getRhs());
    } else if (auto wg = v.getDefiningOp<WeightGradOp>()) {
      terms.push_back(wg);
    } else {
      return emitOpError("qtune-autodiff: the gradient of a quantized weight "
                         "must come from the linear layers that use it");
    }
  }
  SmallVector<ComponentSpec> specs = getType().getComponents();
  for (auto [i, spec] : llvm::enumerate(specs)) {
    if (!needGrad[i])
      continue;
    if (i == 0 && isQftFormat(getType().getFormat())) {
      // QFT: the codes' "gradient" is dW itself, consumed by qtune.qft_lion
      // (qtune-optimizer), which fuses it into the update.
      operandGrads[i] = dW;
      continue;
    }
    if (spec.isInteger())
      return emitOpError() << "qtune-autodiff: component #" << i << " ('"
                           << spec.name
                           << "') holds integer codes and has no gradient";
    auto type = cast<RankedTensorType>(getOperand(i).getType());
    Value sum;
    for (WeightGradOp t : terms) {
      Value term = ComponentGradOp::create(b, getLoc(), type, t.getGrad(),
                                           t.getInput(), getResult(),
                                           b.getI64IntegerAttr(i));
      sum = sum ? arith::AddFOp::create(b, getLoc(), sum, term) : term;
    }
    operandGrads[i] = sum;
  }
  return success();
}

LogicalResult MseLossOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> resultGrads,
                                      ArrayRef<bool> needGrad,
                                      SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(2, Value());
  Value g = resultGrads[0];
  if (!g || !(needGrad[0] || needGrad[1]))
    return success();
  Value dp = MseLossGradOp::create(b, getLoc(), getPrediction().getType(),
                                   getPrediction(), getTarget(), g);
  if (needGrad[0])
    operandGrads[0] = dp;
  if (needGrad[1])
    operandGrads[1] = arith::NegFOp::create(b, getLoc(), dp);
  return success();
}

LogicalResult CrossEntropyOp::buildAdjoint(OpBuilder &b,
                                           ArrayRef<Value> resultGrads,
                                           ArrayRef<bool> needGrad,
                                           SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(2, Value());
  if (needGrad[1])
    return emitOpError("qtune-autodiff: integer labels have no gradient");
  if (resultGrads[0] && needGrad[0])
    operandGrads[0] = CrossEntropyGradOp::create(
        b, getLoc(), getLogits().getType(), getLogits(), getLabels(),
        resultGrads[0]);
  return success();
}

LogicalResult KlDivOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> resultGrads,
                                    ArrayRef<bool> needGrad,
                                    SmallVectorImpl<Value> &operandGrads) {
  // The teacher is a fixed target: no gradient for it.
  operandGrads.assign(2, Value());
  if (resultGrads[0] && needGrad[0])
    operandGrads[0] = KlDivGradOp::create(b, getLoc(), getStudent().getType(),
                                          getStudent(), getTeacher(),
                                          resultGrads[0]);
  return success();
}

//===----------------------------------------------------------------------===//
// Decoder ops
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> resultGrads,
                                        ArrayRef<bool> needGrad,
                                        SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(2, Value());
  if (needGrad[1])
    return emitOpError("qtune-autodiff: integer token ids have no gradient");
  if (resultGrads[0] && needGrad[0])
    operandGrads[0] = EmbeddingGradOp::create(
        b, getLoc(), getTable().getType(), resultGrads[0], getIds());
  return success();
}

LogicalResult RmsNormOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> resultGrads,
                                      ArrayRef<bool> needGrad,
                                      SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(2, Value());
  Value g = resultGrads[0];
  if (!g)
    return success();
  if (needGrad[0])
    operandGrads[0] =
        RmsNormGradOp::create(b, getLoc(), getInput().getType(), g, getInput(),
                              getWeight(), getEpsAttr());
  if (needGrad[1])
    operandGrads[1] = RmsNormWeightGradOp::create(
        b, getLoc(), getWeight().getType(), g, getInput(), getEpsAttr());
  return success();
}

LogicalResult RopeOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> resultGrads,
                                   ArrayRef<bool> needGrad,
                                   SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(1, Value());
  if (!resultGrads[0] || !needGrad[0])
    return success();
  // A rotation's transpose is the opposite rotation.
  operandGrads[0] = RopeOp::create(b, getLoc(), resultGrads[0], getHeadDimAttr(),
                                   getThetaAttr(),
                                   getInverse() ? UnitAttr() : b.getUnitAttr());
  return success();
}

LogicalResult AttentionOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> resultGrads,
                                        ArrayRef<bool> needGrad,
                                        SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(3, Value());
  Value g = resultGrads[0];
  if (resultGrads[1])
    return emitOpError("qtune-autodiff: the attention's lse result is kept "
                       "for the backward pass and may not reach the loss");
  if (!g)
    return success();
  auto grads = AttentionGradOp::create(
      b, getLoc(),
      TypeRange{getQuery().getType(), getKey().getType(), getValue().getType()},
      getQuery(), getKey(), getValue(), getResult(), getLse(), g, getSegments(),
      getHeadsAttr(), getKvHeadsAttr(), b.getF64FloatAttr(getScaleValue()),
      getCausalAttr());
  for (unsigned i = 0; i < 3; ++i)
    if (needGrad[i])
      operandGrads[i] = grads->getResult(i);
  return success();
}

LogicalResult SwigluOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> resultGrads,
                                     ArrayRef<bool> needGrad,
                                     SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(2, Value());
  if (!resultGrads[0])
    return success();
  Type t = getGate().getType();
  auto grads = SwigluGradOp::create(b, getLoc(), TypeRange{t, t}, getGate(),
                                    getUp(), resultGrads[0]);
  if (needGrad[0])
    operandGrads[0] = grads.getGradGate();
  if (needGrad[1])
    operandGrads[1] = grads.getGradUp();
  return success();
}
