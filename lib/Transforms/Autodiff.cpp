//===- Autodiff.cpp - reverse-mode gradients of qtune functions ------------===//

#include "qtune/Dialect/QTune/IR/QTuneOps.h"
#include "qtune/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/RegionUtils.h"

namespace qtune {
#define GEN_PASS_DEF_QTUNEAUTODIFF
#include "qtune/Transforms/Passes.h.inc"
} // namespace qtune

using namespace mlir;
using namespace qtune;

namespace {

bool isScalarLoss(Type t) {
  auto rt = dyn_cast<RankedTensorType>(t);
  return rt && rt.getRank() == 0 && rt.getElementType().isF32();
}

/// Builds `<name>_grad` for `func`; returns failure after a diagnostic.
LogicalResult differentiate(func::FuncOp func) {
  SmallVector<unsigned> trainable;
  for (unsigned i = 0; i < func.getNumArguments(); ++i)
    if (getArgumentRole(func.getArgument(i)) == Role::trainable)
      trainable.push_back(i);
  if (trainable.empty())
    return success();
  if (func.getNumResults() != 1 || !isScalarLoss(func.getResultTypes()[0]))
    return func.emitError("qtune-autodiff: a function with trainable "
                          "arguments must return one tensor<f32> loss");

  OpBuilder top(func);
  top.setInsertionPointAfter(func);
  auto grad = cast<func::FuncOp>(top.clone(*func));
  grad.setName((func.getName() + "_grad").str());
  Block &body = grad.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  Value loss = ret.getOperand(0);

  // Active values: depend on a trainable argument and reach the loss.
  DenseSet<Value> varied, useful{loss};
  for (unsigned i : trainable)
    varied.insert(body.getArgument(i));
  for (Operation &op : body)
    if (llvm::any_of(op.getOperands(), [&](Value v) { return varied.count(v); }))
      varied.insert(op.getResults().begin(), op.getResults().end());
  for (Operation &op : llvm::reverse(body))
    if (llvm::any_of(op.getResults(), [&](Value v) { return useful.count(v); }))
      useful.insert(op.getOperands().begin(), op.getOperands().end());
  auto active = [&](Value v) { return varied.count(v) && useful.count(v); };

  OpBuilder b(ret);
  Location loc = ret.getLoc();
  DenseMap<Value, Value> grads;
  auto accumulate = [&](Value v, Value g) {
    if (!g)
      return;
    auto [it, inserted] = grads.try_emplace(v, g);
    if (!inserted)
      it->second = arith::AddFOp::create(b, loc, it->second, g);
  };
  auto one = DenseElementsAttr::get(cast<ShapedType>(loss.getType()),
                                    b.getF32FloatAttr(1.0f));
  grads[loss] = arith::ConstantOp::create(b, loc, one);

  SmallVector<Operation *> ops;
  for (Operation &op : body)
    if (&op != ret.getOperation())
      ops.push_back(&op);
  for (Operation *op : llvm::reverse(ops)) {
    SmallVector<Value> resultGrads;
    bool any = false;
    for (Value r : op->getResults()) {
      resultGrads.push_back(grads.lookup(r));
      any |= bool(resultGrads.back());
    }
    SmallVector<bool> needGrad;
    for (Value v : op->getOperands())
      needGrad.push_back(active(v));
    if (!any || llvm::none_of(needGrad, [](bool n) { return n; }))
      continue;
    SmallVector<Value> operandGrads;
    if (isa<arith::AddFOp, arith::SubFOp>(op)) {
      Value g = resultGrads[0];
      operandGrads = {g, isa<arith::SubFOp>(op)
                             ? Value(arith::NegFOp::create(b, loc, g))
                             : g};
    } else if (isa<arith::NegFOp>(op)) {
      operandGrads = {arith::NegFOp::create(b, loc, resultGrads[0])};
    } else if (auto mul = dyn_cast<arith::MulFOp>(op)) {
      // d(a·b) = g·b, g·a (elementwise, e.g. a weighted term of a loss).
      Value g = resultGrads[0];
      operandGrads = {arith::MulFOp::create(b, loc, g, mul.getRhs()),
                      arith::MulFOp::create(b, loc, g, mul.getLhs())};
    } else if (auto diff = dyn_cast<DifferentiableOpInterface>(op)) {
      if (failed(diff.buildAdjoint(b, resultGrads, needGrad, operandGrads)))
        return failure();
    } else {
      return op->emitError() << "qtune-autodiff: '" << op->getName()
                             << "' is on the path from a trainable argument "
                                "to the loss but has no adjoint";
    }
    for (auto [v, g, need] :
         llvm::zip(op->getOperands(), operandGrads, needGrad))
      if (need)
        accumulate(v, g);
  }

  SmallVector<Value> results{loss};
  SmallVector<Type> resultTypes{loss.getType()};
  SmallVector<DictionaryAttr> resultAttrs{
      b.getDictionaryAttr(b.getNamedAttr(QTuneDialect::kNameAttrName,
                                         b.getStringAttr("loss")))};
  for (unsigned i : trainable) {
    Value arg = body.getArgument(i);
    Value g = grads.lookup(arg);
    if (!g) // the argument does not reach the loss
      g = arith::ConstantOp::create(
          b, loc,
          DenseElementsAttr::get(
              cast<ShapedType>(arg.getType()),
              cast<TypedAttr>(b.getZeroAttr(getElementTypeOrSelf(arg)))));
    results.push_back(g);
    // The gradient has the argument's type, except for QFT codes, whose
    // gradient is the N×K dW of their weight (fused into qtune.qft_lion).
    resultTypes.push_back(g.getType());
    std::string name = "arg" + std::to_string(i);
    if (auto n = func.getArgAttrOfType<StringAttr>(i, QTuneDialect::kNameAttrName))
      name = n.str();
    resultAttrs.push_back(b.getDictionaryAttr(b.getNamedAttr(
        QTuneDialect::kNameAttrName, b.getStringAttr("grad_" + name))));
  }
  func::ReturnOp::create(b, loc, results);
  ret.erase();
  grad.setFunctionType(
      FunctionType::get(func.getContext(), grad.getArgumentTypes(), resultTypes));
  grad.setAllResultAttrs(resultAttrs);
  // Drop what the gradients do not need (e.g. symbolic weight gradients of
  // quantized weights, replaced by per-component gradients).
  IRRewriter rewriter(func.getContext());
  (void)runRegionDCE(rewriter, grad->getRegions());
  return success();
}

struct QTuneAutodiffPass : qtune::impl::QTuneAutodiffBase<QTuneAutodiffPass> {
  void runOnOperation() override {
    for (auto func : llvm::to_vector(getOperation().getOps<func::FuncOp>()))
      if (!func.isExternal() && failed(differentiate(func)))
        return signalPassFailure();
  }
};

} // namespace
