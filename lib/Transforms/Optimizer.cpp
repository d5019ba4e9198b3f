//===- Optimizer.cpp - append optimizer steps to gradient functions --------===//

#include "qtune/Dialect/QTune/IR/QTuneOps.h"
#include "qtune/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/IRMapping.h"

namespace qtune {
#define GEN_PASS_DEF_QTUNEOPTIMIZER
#include "qtune/Transforms/Passes.h.inc"
} // namespace qtune

using namespace mlir;
using namespace qtune;

namespace {

StringAttr resultName(func::FuncOp f, unsigned i) {
  return f.getResultAttrOfType<StringAttr>(i, QTuneDialect::kNameAttrName);
}

/// A function made by qtune-autodiff: results `loss`, then `grad_<p>` for each
/// trainable argument in order.
bool isGradientFunction(func::FuncOp f) {
  if (f.isExternal() || f.getNumResults() < 2 || !resultName(f, 0) ||
      resultName(f, 0).getValue() != "loss")
    return false;
  for (unsigned i = 1; i < f.getNumResults(); ++i)
    if (!resultName(f, i) || !resultName(f, i).getValue().starts_with("grad_"))
      return false;
  return true;
}

struct QTuneOptimizerPass : qtune::impl::QTuneOptimizerBase<QTuneOptimizerPass> {
  using Base::Base;

  LogicalResult buildTrainStep(func::FuncOp grad) {
    MLIRContext *ctx = &getContext();
    bool adamw = optimizer == "adamw";
    std::optional<StateFormat> format = symbolizeStateFormat(momentum);
    if (!adamw && optimizer != "lion")
      return grad.emitError() << "qtune-optimizer: unknown optimizer '"
                              << optimizer << "' (adamw or lion)";
    if (!format)
      return grad.emitError() << "qtune-optimizer: unknown momentum format '"
                              << momentum << "' (f32, bf16 or int8)";
    if (adamw && *format != StateFormat::f32)
      return grad.emitError("qtune-optimizer: AdamW keeps f32 moments");
    double b2 = beta2 > 0 ? double(beta2) : (adamw ? 0.999 : 0.99);

    SmallVector<unsigned> params;
    for (unsigned i = 0; i < grad.getNumArguments(); ++i)
      if (getArgumentRole(grad.getArgument(i)) == Role::trainable)
        params.push_back(i);
    if (params.size() + 1 != grad.getNumResults())
      return grad.emitError("qtune-optimizer: expected one gradient per "
                            "trainable argument");

    OpBuilder b(ctx);
    auto name = [&](unsigned i) {
      if (auto n = grad.getArgAttrOfType<StringAttr>(i, QTuneDialect::kNameAttrName))
        return n.str();
      return "arg" + std::to_string(i);
    };
    auto roleAttrs = [&](Role role, StringRef n) {
      return b.getDictionaryAttr(
          {b.getNamedAttr(QTuneDialect::kRoleAttrName, RoleAttr::get(ctx, role)),
           b.getNamedAttr(QTuneDialect::kNameAttrName, b.getStringAttr(n))});
    };

    // Arguments: the gradient function's, then states, then lr (and step).
    SmallVector<Type> argTypes(grad.getArgumentTypes());
    SmallVector<DictionaryAttr> argAttrs;
    for (unsigned i = 0; i < grad.getNumArguments(); ++i)
      argAttrs.push_back(grad.getArgAttrDict(i) ? grad.getArgAttrDict(i)
                                                : b.getDictionaryAttr({}));
    struct State {
      unsigned m, v = 0, scales = 0;
    };
    // QFT parameters: the codes of an 8-bit uniform weight (qtune.qft_lion).
    DenseMap<unsigned, QWeightOp> qftWeights;
    for (unsigned p : params)
      for (Operation *user : grad.getArgument(p).getUsers())
        if (auto q = dyn_cast<QWeightOp>(user))
          if (q.getComponents()[0] == grad.getArgument(p) &&
              isQftFormat(q.getType().getFormat()))
            qftWeights[p] = q;
    auto qftWeight = [&](unsigned p) { return qftWeights.lookup(p); };
    for (unsigned p : params) {
      if (!qftWeight(p))
        continue;
      if (adamw || *format != StateFormat::int8)
        return grad.emitError()
               << "qtune-optimizer: argument #" << p << " ('" << name(p)
               << "') trains 8-bit codes (QFT), which update with Lion and "
                  "int8 momentum: use optimizer=lion momentum=int8";
      if (maxGradNorm > 0)
        return grad.emitError("qtune-optimizer: gradient-norm clipping needs "
                              "every gradient before any update, but QFT "
                              "never holds its weight's gradient; drop "
                              "max-grad-norm");
    }
    SmallVector<State> states;
    for (unsigned p : params) {
      auto type = cast<RankedTensorType>(argTypes[p]);
      if (QWeightOp q = qftWeight(p)) {
        // Momentum over the N×K weight, not over the packed codes.
        int64_t n = q.getType().getN(), k = q.getType().getK();
        if (k % block != 0)
          return grad.emitError()
                 << "qtune-optimizer: QFT momentum blocks must divide K = " << k
                 << " (block = " << block << ")";
        State s;
        s.m = argTypes.size();
        argTypes.push_back(RankedTensorType::get({n, k}, b.getI8Type()));
        argAttrs.push_back(roleAttrs(Role::optimizer_state, name(p) + ".m"));
        s.scales = argTypes.size();
        argTypes.push_back(RankedTensorType::get({n * k / block}, b.getF32Type()));
        argAttrs.push_back(
            roleAttrs(Role::optimizer_state, name(p) + ".m_scales"));
        states.push_back(s);
        continue;
      }
      State s;
      Type mElt = adamw || *format == StateFormat::f32 ? b.getF32Type()
                  : *format == StateFormat::bf16       ? Type(b.getBF16Type())
                                                       : b.getI8Type();
      s.m = argTypes.size();
      argTypes.push_back(type.clone(mElt));
      argAttrs.push_back(roleAttrs(Role::optimizer_state, name(p) + ".m"));
      if (adamw) {
        s.v = argTypes.size();
        argTypes.push_back(type.clone(b.getF32Type()));
        argAttrs.push_back(roleAttrs(Role::optimizer_state, name(p) + ".v"));
      } else if (*format == StateFormat::int8) {
        s.scales = argTypes.size();
        int64_t blocks = (type.getNumElements() + block - 1) / block;
        argTypes.push_back(RankedTensorType::get({blocks}, b.getF32Type()));
        argAttrs.push_back(
            roleAttrs(Role::optimizer_state, name(p) + ".m_scales"));
      }
      states.push_back(s);
    }
    auto scalar = RankedTensorType::get({}, b.getF32Type());
    unsigned lrArg = argTypes.size();
    argTypes.push_back(scalar);
    argAttrs.push_back(roleAttrs(Role::input, "lr"));
    unsigned stepArg = 0;
    if (adamw) {
      stepArg = argTypes.size();
      argTypes.push_back(scalar);
      argAttrs.push_back(roleAttrs(Role::input, "step"));
    }

    std::string stepName = grad.getName().str();
    if (StringRef(stepName).ends_with("_grad"))
      stepName.resize(stepName.size() - 5);
    stepName += "_train_step";
    b.setInsertionPointAfter(grad);
    auto step = func::FuncOp::create(b, grad.getLoc(), stepName,
                                     FunctionType::get(ctx, argTypes, {}));
    step.setAllArgAttrs(argAttrs);
    Block *entry = step.addEntryBlock();
    IRMapping map;
    for (unsigned i = 0; i < grad.getNumArguments(); ++i)
      map.map(grad.getArgument(i), entry->getArgument(i));
    b.setInsertionPointToStart(entry);
    Block &body = grad.getBody().front();
    for (Operation &op : body.without_terminator())
      b.clone(op, map);
    auto ret = cast<func::ReturnOp>(body.getTerminator());
    Location loc = ret.getLoc();
    Value loss = map.lookup(ret.getOperand(0));
    SmallVector<Value> grads;
    for (unsigned i = 1; i < ret.getNumOperands(); ++i)
      grads.push_back(map.lookup(ret.getOperand(i)));
    if (maxGradNorm > 0)
      grads = ClipGradNormOp::create(b, loc, ValueRange(grads).getTypes(), grads,
                                     b.getF64FloatAttr(maxGradNorm))
                  .getResults();

    SmallVector<Value> results{loss};
    SmallVector<DictionaryAttr> resultAttrs{b.getDictionaryAttr(
        b.getNamedAttr(QTuneDialect::kNameAttrName, b.getStringAttr("loss")))};
    // An updated value keeps the name of the argument it replaces.
    auto updates = [&](unsigned arg) {
      return b.getDictionaryAttr(
          {b.getNamedAttr(QTuneDialect::kNameAttrName,
                          argAttrs[arg].get(QTuneDialect::kNameAttrName)
                              ? argAttrs[arg].get(QTuneDialect::kNameAttrName)
                              : b.getStringAttr(name(arg))),
           b.getNamedAttr(QTuneDialect::kUpdatesAttrName,
                          b.getI64IntegerAttr(arg))});
    };
    Value lr = entry->getArgument(lrArg);
    for (auto [i, p] : llvm::enumerate(params)) {
      Value param = entry->getArgument(p);
      const State &s = states[i];
      SmallVector<std::pair<Value, unsigned>> out;
      if (QWeightOp q = qftWeight(p)) {
        auto wg = grads[i].getDefiningOp<WeightGradOp>();
        if (!wg)
          return grad.emitError()
                 << "qtune-optimizer: QFT weight '" << name(p)
                 << "' must feed exactly one linear layer (its gradient is "
                    "fused into the update)";
        auto qft = QftLionOp::create(
            b, loc,
            TypeRange{param.getType(), entry->getArgument(s.m).getType(),
                      entry->getArgument(s.scales).getType()},
            wg.getGrad(), wg.getInput(), param,
            llvm::map_to_vector(q.getComponents().drop_front(),
                                [&](Value v) { return map.lookup(v); }),
            entry->getArgument(s.m), entry->getArgument(s.scales), lr, loss,
            cast<UniformFormatAttr>(Attribute(q.getType().getFormat())),
            wg.getScaleAttr(), b.getF64FloatAttr(beta1), b.getF64FloatAttr(b2),
            b.getF64FloatAttr(weightDecay), b.getI64IntegerAttr(block));
        out = {{Value(qft.getNewCodes()), p},
               {Value(qft.getNewM()), s.m},
               {Value(qft.getNewMScales()), s.scales}};
        for (auto [value, arg] : out) {
          results.push_back(value);
          resultAttrs.push_back(updates(arg));
        }
        continue;
      }
      if (adamw) {
        auto op = AdamWOp::create(
            b, loc,
            TypeRange{param.getType(), entry->getArgument(s.m).getType(),
                      entry->getArgument(s.v).getType()},
            param, grads[i], entry->getArgument(s.m),
            entry->getArgument(s.v), lr, entry->getArgument(stepArg), loss,
            b.getF64FloatAttr(beta1), b.getF64FloatAttr(b2),
            b.getF64FloatAttr(eps), b.getF64FloatAttr(weightDecay));
        out = {{Value(op.getNewParam()), p},
               {Value(op.getNewM()), s.m},
               {Value(op.getNewV()), s.v}};
      } else {
        Value scales = s.scales ? entry->getArgument(s.scales) : Value();
        SmallVector<Type> types{param.getType(),
                                entry->getArgument(s.m).getType()};
        if (scales)
          types.push_back(scales.getType());
        auto op = LionOp::create(
            b, loc, types, param, grads[i], entry->getArgument(s.m), scales, lr,
            loss, b.getF64FloatAttr(beta1), b.getF64FloatAttr(b2),
            b.getF64FloatAttr(weightDecay), StateFormatAttr::get(ctx, *format),
            b.getI64IntegerAttr(block));
        out = {{Value(op.getNewParam()), p}, {Value(op.getNewM()), s.m}};
        if (scales)
          out.push_back({op.getNewMScales(), s.scales});
      }
      for (auto [value, arg] : out) {
        results.push_back(value);
        resultAttrs.push_back(updates(arg));
      }
    }
    func::ReturnOp::create(b, loc, results);
    // A QFT weight's gradient is fused into its update: the N×K weight_grad
    // is dead now.
    for (auto wg : llvm::to_vector(step.getOps<WeightGradOp>()))
      if (wg->use_empty())
        wg.erase();
    step.setFunctionType(FunctionType::get(
        ctx, argTypes, ValueRange(results).getTypes()));
    step.setAllResultAttrs(resultAttrs);
    return success();
  }

  /// `<name>_accumulate` and `<name>_apply` from the gradient function and
  /// its train step (see the pass description).
  LogicalResult buildAccumulation(func::FuncOp grad, func::FuncOp step) {
    MLIRContext *ctx = &getContext();
    SmallVector<Operation *> updates;
    ClipGradNormOp clip;
    for (Operation &op : step.getBody().front()) {
      if (isa<QftLionOp>(op))
        return success(); // QFT never holds its gradient
      if (isa<AdamWOp, LionOp>(op))
        updates.push_back(&op);
      if (auto c = dyn_cast<ClipGradNormOp>(op))
        clip = c;
    }
    if (updates.empty())
      return success();
    OpBuilder b(ctx);
    auto attrs = [&](Role role, StringRef n) {
      return b.getDictionaryAttr(
          {b.getNamedAttr(QTuneDialect::kRoleAttrName, RoleAttr::get(ctx, role)),
           b.getNamedAttr(QTuneDialect::kNameAttrName, b.getStringAttr(n))});
    };
    auto argName = [&](func::FuncOp f, unsigned i) {
      auto n = f.getArgAttrOfType<StringAttr>(i, QTuneDialect::kNameAttrName);
      return n ? n.str() : "arg" + std::to_string(i);
    };
    std::string base = grad.getName().str();
    if (StringRef(base).ends_with("_grad"))
      base.resize(base.size() - 5);
    auto f32Like = [&](Value v) {
      return cast<RankedTensorType>(v.getType()).clone(b.getF32Type());
    };

    // <name>_accumulate: the gradient function, then acc += grad per parameter.
    b.setInsertionPointAfter(step);
    auto acc = cast<func::FuncOp>(b.clone(*grad));
    acc.setName(base + "_accumulate");
    Block &body = acc.getBody().front();
    auto ret = cast<func::ReturnOp>(body.getTerminator());
    Value loss = ret.getOperand(0);
    SmallVector<unsigned> params;
    for (unsigned i = 0; i < acc.getNumArguments(); ++i)
      if (getArgumentRole(acc.getArgument(i)) == Role::trainable)
        params.push_back(i);
    SmallVector<Value> results{loss};
    SmallVector<DictionaryAttr> resultAttrs{acc.getResultAttrDict(0)};
    b.setInsertionPoint(ret);
    for (auto [r, p] : llvm::enumerate(params)) {
      Value g = ret.getOperand(r + 1);
      std::string n = argName(acc, p) + ".grad_acc";
      unsigned index = acc.getNumArguments();
      if (failed(acc.insertArgument(index, f32Like(acc.getArgument(p)),
                                    attrs(Role::optimizer_state, n),
                                    acc.getLoc())))
        return failure();
      results.push_back(GradAccumulateOp::create(b, ret.getLoc(),
                                                 acc.getArgument(index), g, loss));
      resultAttrs.push_back(b.getDictionaryAttr(
          {b.getNamedAttr(QTuneDialect::kNameAttrName, b.getStringAttr(n)),
           b.getNamedAttr(QTuneDialect::kUpdatesAttrName,
                          b.getI64IntegerAttr(index))}));
    }
    func::ReturnOp::create(b, ret.getLoc(), results);
    ret.erase();
    acc.setFunctionType(FunctionType::get(ctx, acc.getArgumentTypes(),
                                          ValueRange(results).getTypes()));
    acc.setAllResultAttrs(resultAttrs);

    // <name>_apply: the train step's clipping and updates on the mean
    // accumulated gradients.
    b.setInsertionPointAfter(acc);
    auto apply = func::FuncOp::create(b, step.getLoc(), base + "_apply",
                                      FunctionType::get(ctx, {}, {}));
    Block *entry = apply.addEntryBlock();
    SmallVector<Type> argTypes;
    SmallVector<DictionaryAttr> argAttrs;
    IRMapping map;
    auto addArg = [&](Value from, DictionaryAttr a) {
      if (map.contains(from))
        return;
      argTypes.push_back(from.getType());
      argAttrs.push_back(a);
      map.map(from, entry->addArgument(from.getType(), step.getLoc()));
    };
    // Raw gradients, in update order: the clip's operands, or the updates'.
    SmallVector<Value> raw;
    for (Operation *u : updates)
      raw.push_back(u->getOperand(1));
    if (clip)
      raw.assign(clip.getGrads().begin(), clip.getGrads().end());
    for (Operation *u : updates)
      for (Value v : u->getOperands())
        if (auto arg = dyn_cast<BlockArgument>(v))
          addArg(v, step.getArgAttrDict(arg.getArgNumber())
                        ? step.getArgAttrDict(arg.getArgNumber())
                        : b.getDictionaryAttr({}));
    b.setInsertionPointToStart(entry);
    Value countArg;
    {
      auto scalar = RankedTensorType::get({}, b.getF32Type());
      argTypes.push_back(scalar);
      argAttrs.push_back(attrs(Role::input, "accum_count"));
      countArg = entry->addArgument(scalar, step.getLoc());
    }
    SmallVector<Value> applyResults;
    SmallVector<DictionaryAttr> applyAttrs;
    SmallVector<std::pair<Value, unsigned>> accs;
    for (auto [u, g] : llvm::zip(updates, raw)) {
      Value param = u->getOperand(0);
      std::string n =
          argName(step, cast<BlockArgument>(param).getArgNumber()) + ".grad_acc";
      argTypes.push_back(f32Like(param));
      argAttrs.push_back(attrs(Role::optimizer_state, n));
      Value accArg = entry->addArgument(argTypes.back(), step.getLoc());
      auto take = GradTakeOp::create(b, step.getLoc(), accArg.getType(),
                                     accArg.getType(), accArg, countArg);
      map.map(g, take.getGrad());
      accs.push_back({take.getNewAcc(), entry->getNumArguments() - 1});
    }
    if (clip) {
      // The same clipping, on the f32 mean gradients.
      SmallVector<Value> grads = llvm::map_to_vector(
          clip.getGrads(), [&](Value g) { return map.lookup(g); });
      auto copy = ClipGradNormOp::create(b, clip.getLoc(),
                                         ValueRange(grads).getTypes(), grads,
                                         clip.getMaxNormAttr());
      for (auto [from, to] : llvm::zip(clip.getResults(), copy.getResults()))
        map.map(from, to);
    }
    for (Operation *u : updates) {
      Operation *copy = b.clone(*u, map);
      // No loss here: the guard was the micro-batches'.
      if (auto a = dyn_cast<AdamWOp>(copy))
        a.getGuardMutable().clear();
      if (auto l = dyn_cast<LionOp>(copy))
        l.getGuardMutable().clear();
      // Results in the step's order, replacing the same arguments.
      for (auto [i, r] : llvm::enumerate(u->getResults())) {
        for (OpOperand &use : r.getUses()) {
          if (!isa<func::ReturnOp>(use.getOwner()))
            continue;
          unsigned idx = use.getOperandNumber();
          auto target = step.getResultAttrOfType<IntegerAttr>(
              idx, QTuneDialect::kUpdatesAttrName);
          Value arg = map.lookup(step.getArgument(target.getInt()));
          applyResults.push_back(copy->getResult(i));
          applyAttrs.push_back(b.getDictionaryAttr(
              {b.getNamedAttr(QTuneDialect::kNameAttrName,
                              step.getResultAttrDict(idx).get(
                                  QTuneDialect::kNameAttrName)),
               b.getNamedAttr(QTuneDialect::kUpdatesAttrName,
                              b.getI64IntegerAttr(
                                  cast<BlockArgument>(arg).getArgNumber()))}));
        }
      }
    }
    for (auto [value, index] : accs) {
      applyResults.push_back(value);
      applyAttrs.push_back(b.getDictionaryAttr(
          {b.getNamedAttr(QTuneDialect::kNameAttrName,
                          argAttrs[index].get(QTuneDialect::kNameAttrName)),
           b.getNamedAttr(QTuneDialect::kUpdatesAttrName,
                          b.getI64IntegerAttr(index))}));
    }
    func::ReturnOp::create(b, step.getLoc(), applyResults);
    apply.setFunctionType(FunctionType::get(ctx, argTypes,
                                            ValueRange(applyResults).getTypes()));
    apply.setAllArgAttrs(argAttrs);
    apply.setAllResultAttrs(applyAttrs);
    return success();
  }

  void runOnOperation() override {
    for (auto f : llvm::to_vector(getOperation().getOps<func::FuncOp>())) {
      if (!isGradientFunction(f))
        continue;
      if (failed(buildTrainStep(f)))
        return signalPassFailure();
      std::string base = f.getName().str();
      if (StringRef(base).ends_with("_grad"))
        base.resize(base.size() - 5);
      auto step = getOperation().lookupSymbol<func::FuncOp>(base + "_train_step");
      if (accumulate && step && failed(buildAccumulation(f, step)))
        return signalPassFailure();
    }
  }
};

} // namespace
