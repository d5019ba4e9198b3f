//===- Interpreter.cpp - CPU reference interpreter of qtune IR -------------===//

#include "qtune/Reference/Interpreter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "qtune/Dialect/QTune/IR/FormatUtils.h"
#include "qtune/Dialect/QTune/IR/QTuneOps.h"
#include "qtune/Reference/DecoderOps.h"
#include "llvm/ADT/TypeSwitch.h"

#include <algorithm>
#include <cmath>
#include <variant>

using namespace mlir;

namespace qtune::ref {

namespace {

/// A quantized weight: its type and its components, in format order.
struct QWeightValue {
  QWeightType type;
  std::vector<HostTensor> components;
};
using RefValue = std::variant<HostTensor, QWeightValue>;

std::vector<int64_t> shapeOf(Type t) {
  auto rt = cast<RankedTensorType>(t);
  return std::vector<int64_t>(rt.getShape().begin(), rt.getShape().end());
}

class Evaluator {
public:
  FailureOr<std::vector<HostTensor>> call(func::FuncOp func,
                                          ArrayRef<HostTensor> args);

private:
  LogicalResult eval(Operation *op);
  const HostTensor &tensor(Value v) { return std::get<HostTensor>(values[v]); }
  void set(Value v, HostTensor t) { values[v] = std::move(t); }

  LogicalResult evalConstant(arith::ConstantOp op);
  HostTensor linear(Value input, Value weight, Value bias, Type resultType);
  HostTensor lora(Value input, Value a, Value b, double scaling,
                  Type resultType);
  HostTensor fusedLinear(FusedLinearOp op);
  /// The weight operand as a dense N×K matrix (dequantized if quantized).
  std::vector<double> denseWeight(Value weight, int64_t &n, int64_t &k);
  /// scale · gᵀ · x summed over the leading dimensions (N×K).
  HostTensor weightGrad(const HostTensor &g, const HostTensor &x, double scale);
  HostTensor dequantize(const QWeightValue &w);
  /// For an optimizer op guarded by a non-finite loss: the inputs its results
  /// keep (in result order); nullopt otherwise.
  std::optional<SmallVector<Value>> skippedUpdate(Operation *op);

  DenseMap<Value, RefValue> values;
  unsigned depth = 0;

public:
  Observer observe;
};

/// log Σ_j exp(row[j]) over `v` values, stable (max subtracted).
double logSumExp(const double *row, int64_t v) {
  double mx = *std::max_element(row, row + v), sum = 0;
  for (int64_t j = 0; j < v; ++j)
    sum += std::exp(row[j] - mx);
  return mx + std::log(sum);
}

/// y[m, n] = Σ_k x[m, k] · w[n, k] over the flattened leading dims of x.
HostTensor matmulTransposed(const HostTensor &x, const std::vector<double> &w,
                            int64_t n, int64_t k, std::vector<int64_t> shape) {
  int64_t m = k ? x.numElements() / k : 0;
  HostTensor y(std::move(shape));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t l = 0; l < k; ++l)
        acc += x.data[i * k + l] * w[j * k + l];
      y.data[i * n + j] = acc;
    }
  return y;
}

FailureOr<std::vector<HostTensor>> Evaluator::call(func::FuncOp func,
                                                   ArrayRef<HostTensor> args) {
  if (func.isExternal())
    return func.emitError("the reference interpreter cannot run a function "
                          "without a body");
  if (++depth > 64)
    return func.emitError("call depth exceeds 64 (recursion?)");
  FunctionType ft = func.getFunctionType();
  if (args.size() != ft.getNumInputs())
    return func.emitError() << "expects " << ft.getNumInputs()
                            << " arguments, got " << args.size();
  Block &entry = func.getBody().front();
  if (!llvm::hasSingleElement(func.getBody()))
    return func.emitError("the reference interpreter runs single-block "
                          "functions only");
  for (auto [i, arg] : llvm::enumerate(entry.getArguments())) {
    auto rt = dyn_cast<RankedTensorType>(arg.getType());
    if (!rt || !rt.hasStaticShape())
      return func.emitError() << "argument #" << i
                              << " must be a statically shaped tensor, got "
                              << arg.getType();
    if (ArrayRef<int64_t>(args[i].shape) != rt.getShape() ||
        (int64_t)args[i].data.size() != rt.getNumElements())
      return func.emitError() << "argument #" << i << " must be shaped like "
                              << rt << ", got a tensor of "
                              << args[i].data.size() << " elements";
    set(arg, args[i]);
  }
  for (Operation &op : entry) {
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      std::vector<HostTensor> results;
      for (Value v : ret.getOperands()) {
        if (!std::holds_alternative<HostTensor>(values[v]))
          return ret.emitError("the reference interpreter returns tensors "
                               "only, not quantized weights");
        results.push_back(tensor(v));
      }
      --depth;
      return results;
    }
    if (observe && depth == 1) {
      SmallVector<const HostTensor *> operands;
      for (Value v : op.getOperands())
        operands.push_back(std::holds_alternative<HostTensor>(values[v])
                               ? &tensor(v)
                               : nullptr);
      observe(&op, operands);
    }
    if (failed(eval(&op)))
      return failure();
  }
  return func.emitError("function body has no return");
}

LogicalResult Evaluator::evalConstant(arith::ConstantOp op) {
  Attribute value = op.getValue();
  auto convert = [](Attribute a) -> std::optional<double> {
    if (auto f = dyn_cast<FloatAttr>(a))
      return f.getValueAsDouble();
    if (auto i = dyn_cast<IntegerAttr>(a))
      return (double)i.getValue().getSExtValue();
    return std::nullopt;
  };
  if (auto dense = dyn_cast<DenseElementsAttr>(value)) {
    HostTensor t(shapeOf(dense.getType()));
    if (isa<FloatType>(dense.getElementType())) {
      int64_t i = 0;
      for (APFloat f : dense.getValues<APFloat>()) {
        bool lost;
        f.convert(APFloat::IEEEdouble(), APFloat::rmNearestTiesToEven, &lost);
        t.data[i++] = f.convertToDouble();
      }
    } else if (isa<IntegerType>(dense.getElementType())) {
      int64_t i = 0;
      for (const APInt &v : dense.getValues<APInt>())
        t.data[i++] = (double)v.getSExtValue();
    } else {
      return op.emitError("unsupported constant element type");
    }
    set(op.getResult(), std::move(t));
    return success();
  }
  if (std::optional<double> v = convert(value)) {
    set(op.getResult(), HostTensor({}, *v));
    return success();
  }
  return op.emitError("the reference interpreter does not support this "
                      "constant");
}

HostTensor Evaluator::dequantize(const QWeightValue &w) {
  int64_t n = w.type.getN(), k = w.type.getK();
  HostTensor out({n, k});
  w.type.getFormat().dequantize(n, k, w.components, out.data);
  return out;
}

std::vector<double> Evaluator::denseWeight(Value weight, int64_t &n,
                                           int64_t &k) {
  if (auto *q = std::get_if<QWeightValue>(&values[weight])) {
    n = q->type.getN();
    k = q->type.getK();
    return dequantize(*q).data;
  }
  const HostTensor &d = tensor(weight);
  n = d.shape[0];
  k = d.shape[1];
  return d.data;
}

HostTensor Evaluator::weightGrad(const HostTensor &g, const HostTensor &x,
                                 double scale) {
  int64_t n = g.shape.back(), k = x.shape.back();
  int64_t m = n ? g.numElements() / n : 0;
  HostTensor r({n, k});
  for (int64_t i = 0; i < m; ++i)
    for (int64_t a = 0; a < n; ++a) {
      double gv = g.data[i * n + a] * scale;
      for (int64_t c = 0; c < k; ++c)
        r.data[a * k + c] += gv * x.data[i * k + c];
    }
  return r;
}

HostTensor Evaluator::linear(Value input, Value weight, Value bias,
                             Type resultType) {
  const HostTensor &x = tensor(input);
  int64_t n, k;
  std::vector<double> w = denseWeight(weight, n, k);
  HostTensor y = matmulTransposed(x, w, n, k, shapeOf(resultType));
  if (bias) {
    const HostTensor &b = tensor(bias);
    for (size_t i = 0; i < y.data.size(); ++i)
      y.data[i] += b.data[i % n];
  }
  return y;
}

HostTensor Evaluator::lora(Value input, Value aValue, Value bValue,
                           double scaling, Type resultType) {
  const HostTensor &x = tensor(input);
  const HostTensor &a = tensor(aValue);
  const HostTensor &b = tensor(bValue);
  int64_t r = a.shape[0], k = a.shape[1], n = b.shape[0];
  std::vector<int64_t> midShape(x.shape.begin(), x.shape.end() - 1);
  midShape.push_back(r);
  HostTensor mid = matmulTransposed(x, a.data, r, k, midShape);
  HostTensor y = matmulTransposed(mid, b.data, n, r, shapeOf(resultType));
  for (double &v : y.data)
    v *= scaling;
  return y;
}

HostTensor Evaluator::fusedLinear(FusedLinearOp op) {
  HostTensor y =
      linear(op.getInput(), op.getWeight(), op.getBias(), op.getType());
  if (op.getLoraA()) {
    HostTensor d = lora(op.getInput(), op.getLoraA(), op.getLoraB(),
                        op.getLoraScaling(), op.getType());
    for (size_t i = 0; i < y.data.size(); ++i)
      y.data[i] += d.data[i];
  }
  if (op.getResidual()) {
    const HostTensor &r = tensor(op.getResidual());
    for (size_t i = 0; i < y.data.size(); ++i)
      y.data[i] += r.data[i];
  }
  return y;
}

/// Attention segment ids must be nondecreasing along each sequence (the GPU
/// kernels skip the key tiles of other segments by that order).
LogicalResult checkSegments(Operation *op, const HostTensor &seg) {
  int64_t s = seg.shape.empty() ? 1 : seg.shape.back();
  for (int64_t i = 0; i < seg.numElements(); ++i)
    if (i % s && seg.data[i] < seg.data[i - 1])
      return op->emitOpError()
             << "segment ids must be nondecreasing along the sequence, got "
             << int64_t(seg.data[i - 1]) << " then " << int64_t(seg.data[i])
             << " at position " << i % s;
  return success();
}

template <typename Fn>
LogicalResult elementwise(Operation *op, DenseMap<Value, RefValue> &values,
                          Fn fn) {
  auto get = [&](unsigned i) -> const HostTensor & {
    return std::get<HostTensor>(values[op->getOperand(i)]);
  };
  HostTensor out = get(0);
  if (op->getNumOperands() == 2) {
    const HostTensor &rhs = get(1);
    for (size_t i = 0; i < out.data.size(); ++i)
      out.data[i] = fn(out.data[i], rhs.data[i]);
  } else {
    for (double &v : out.data)
      v = fn(v, 0.0);
  }
  values[op->getResult(0)] = std::move(out);
  return success();
}

/// Rounds every element to the element type of `type`.
HostTensor rounded(HostTensor t, Type type) {
  Type elt = getElementTypeOrSelf(type);
  for (double &v : t.data)
    v = format::roundTo(v, elt);
  return t;
}

std::optional<SmallVector<Value>> Evaluator::skippedUpdate(Operation *op) {
  Value guard;
  SmallVector<Value> inputs;
  if (auto a = dyn_cast<AdamWOp>(op)) {
    guard = a.getGuard();
    inputs = {a.getParam(), a.getM(), a.getV()};
  } else if (auto l = dyn_cast<LionOp>(op)) {
    guard = l.getGuard();
    inputs = {l.getParam(), l.getM()};
    if (l.getMScales())
      inputs.push_back(l.getMScales());
  } else if (auto q = dyn_cast<QftLionOp>(op)) {
    guard = q.getGuard();
    inputs = {q.getCodes(), q.getM(), q.getMScales()};
  } else if (auto a = dyn_cast<GradAccumulateOp>(op)) {
    guard = a.getGuard();
    inputs = {a.getAcc()};
  }
  if (!guard || !values.count(guard) || std::isfinite(tensor(guard).data[0]))
    return std::nullopt;
  return inputs;
}

LogicalResult Evaluator::eval(Operation *op) {
  for (Value v : op->getOperands())
    if (!values.count(v))
      return op->emitError("operand defined outside the function body (the "
                           "reference interpreter runs self-contained "
                           "functions)");
  // A guarded optimizer step whose loss is not finite changes nothing.
  if (std::optional<SmallVector<Value>> unchanged = skippedUpdate(op)) {
    for (auto [result, input] : llvm::zip(op->getResults(), *unchanged))
      values[result] = values[input];
    return success();
  }
  using E = DenseMap<Value, RefValue>;
  E &vs = values;
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case<arith::ConstantOp>([&](auto c) { return evalConstant(c); })
      .Case<arith::AddFOp>([&](Operation *o) {
        return elementwise(o, vs, [](double a, double b) { return a + b; });
      })
      .Case<arith::SubFOp>([&](Operation *o) {
        return elementwise(o, vs, [](double a, double b) { return a - b; });
      })
      .Case<arith::MulFOp>([&](Operation *o) {
        return elementwise(o, vs, [](double a, double b) { return a * b; });
      })
      .Case<arith::DivFOp>([&](Operation *o) {
        return elementwise(o, vs, [](double a, double b) { return a / b; });
      })
      .Case<arith::MaximumFOp, arith::MaxNumFOp>([&](Operation *o) {
        return elementwise(o, vs,
                           [](double a, double b) { return std::fmax(a, b); });
      })
      .Case<arith::MinimumFOp, arith::MinNumFOp>([&](Operation *o) {
        return elementwise(o, vs,
                           [](double a, double b) { return std::fmin(a, b); });
      })
      .Case<arith::NegFOp>([&](Operation *o) {
        return elementwise(o, vs, [](double a, double) { return -a; });
      })
      .Case<arith::TruncFOp, arith::ExtFOp>([&](Operation *o) {
        set(o->getResult(0), rounded(tensor(o->getOperand(0)),
                                     o->getResult(0).getType()));
        return success();
      })
      .Case<tensor::EmptyOp>([&](tensor::EmptyOp e) -> LogicalResult {
        if (!e.getType().hasStaticShape())
          return e.emitError("tensor.empty must have a static shape");
        set(e.getResult(), HostTensor(shapeOf(e.getType())));
        return success();
      })
      .Case<tensor::CollapseShapeOp, tensor::ExpandShapeOp, tensor::ReshapeOp,
            tensor::CastOp>([&](Operation *o) -> LogicalResult {
        auto rt = cast<RankedTensorType>(o->getResult(0).getType());
        if (!rt.hasStaticShape())
          return o->emitError("result must have a static shape");
        HostTensor t = tensor(o->getOperand(0));
        t.shape = shapeOf(rt);
        set(o->getResult(0), std::move(t));
        return success();
      })
      .Case<func::CallOp>([&](func::CallOp c) -> LogicalResult {
        auto callee = SymbolTable::lookupNearestSymbolFrom<func::FuncOp>(
            c, c.getCalleeAttr());
        if (!callee)
          return c.emitError() << "callee " << c.getCalleeAttr()
                               << " not found";
        std::vector<HostTensor> args;
        for (Value v : c.getOperands())
          args.push_back(tensor(v));
        FailureOr<std::vector<HostTensor>> results = call(callee, args);
        if (failed(results))
          return failure();
        for (auto [v, t] : llvm::zip(c.getResults(), *results))
          set(v, std::move(t));
        return success();
      })
      .Case<QWeightOp>([&](QWeightOp q) {
        QWeightValue w{q.getType(), {}};
        for (Value c : q.getComponents())
          w.components.push_back(tensor(c));
        values[q.getResult()] = std::move(w);
        return success();
      })
      .Case<DequantOp>([&](DequantOp d) {
        set(d.getResult(),
            dequantize(std::get<QWeightValue>(values[d.getWeight()])));
        return success();
      })
      .Case<LinearOp>([&](LinearOp l) {
        set(l.getResult(), linear(l.getInput(), l.getWeight(), l.getBias(),
                                  l.getType()));
        return success();
      })
      .Case<LoraOp>([&](LoraOp l) {
        set(l.getResult(), lora(l.getInput(), l.getA(), l.getB(),
                                l.getScaling(), l.getType()));
        return success();
      })
      .Case<LinearTOp>([&](LinearTOp l) {
        // y[m, k] = scale · Σ_n g[m, n] · W[n, k]
        const HostTensor &g = tensor(l.getGrad());
        int64_t n, k;
        std::vector<double> w = denseWeight(l.getWeight(), n, k);
        HostTensor y(shapeOf(l.getType()));
        int64_t m = n ? g.numElements() / n : 0;
        double scale = l.getScale().convertToDouble();
        for (int64_t i = 0; i < m; ++i)
          for (int64_t a = 0; a < n; ++a) {
            double gv = g.data[i * n + a] * scale;
            for (int64_t c = 0; c < k; ++c)
              y.data[i * k + c] += gv * w[a * k + c];
          }
        set(l.getResult(), std::move(y));
        return success();
      })
      .Case<WeightGradOp>([&](WeightGradOp wg) {
        set(wg.getResult(), weightGrad(tensor(wg.getGrad()),
                                       tensor(wg.getInput()),
                                       wg.getScale().convertToDouble()));
        return success();
      })
      .Case<BiasGradOp>([&](BiasGradOp bg) {
        const HostTensor &g = tensor(bg.getGrad());
        int64_t n = g.shape.back();
        HostTensor r({n});
        for (size_t i = 0; i < g.data.size(); ++i)
          r.data[i % n] += g.data[i];
        set(bg.getResult(), std::move(r));
        return success();
      })
      .Case<ComponentGradOp>([&](ComponentGradOp cg) {
        const auto &w = std::get<QWeightValue>(values[cg.getWeight()]);
        HostTensor dW =
            weightGrad(tensor(cg.getGrad()), tensor(cg.getInput()), 1.0);
        set(cg.getResult(),
            w.type.getFormat().dequantizeVJP(w.type.getN(), w.type.getK(),
                                             cg.getComponent(), w.components,
                                             dW.data));
        return success();
      })
      .Case<MseLossOp>([&](MseLossOp l) {
        const HostTensor &p = tensor(l.getPrediction());
        const HostTensor &t = tensor(l.getTarget());
        double sum = 0;
        for (size_t i = 0; i < p.data.size(); ++i)
          sum += (p.data[i] - t.data[i]) * (p.data[i] - t.data[i]);
        set(l.getResult(), HostTensor({}, sum / double(p.data.size())));
        return success();
      })
      .Case<MseLossGradOp>([&](MseLossGradOp l) {
        HostTensor r = tensor(l.getPrediction());
        const HostTensor &t = tensor(l.getTarget());
        double g = tensor(l.getGrad()).data[0];
        double factor = 2.0 * g / double(r.data.size());
        for (size_t i = 0; i < r.data.size(); ++i)
          r.data[i] = factor * (r.data[i] - t.data[i]);
        set(l.getResult(), std::move(r));
        return success();
      })
      .Case<CrossEntropyOp, CrossEntropyGradOp>([&](Operation *o) -> LogicalResult {
        // Row-wise log-softmax in float64, stable (max subtracted).
        const HostTensor &logits = tensor(o->getOperand(0));
        const HostTensor &labels = tensor(o->getOperand(1));
        int64_t v = logits.shape.back();
        int64_t rows = v ? logits.numElements() / v : 0;
        bool isGrad = isa<CrossEntropyGradOp>(o);
        HostTensor grad(logits.shape);
        double loss = 0;
        double g = isGrad ? tensor(o->getOperand(2)).data[0] : 0.0;
        for (int64_t r = 0; r < rows; ++r) {
          const double *row = &logits.data[r * v];
          double label = labels.data[r];
          if (!(label >= 0 && label < double(v)))
            return o->emitError() << "label " << int64_t(label) << " of row " << r
                                  << " is outside [0, " << v << ")";
          double lse = logSumExp(row, v);
          loss += lse - row[int64_t(label)];
          if (isGrad)
            for (int64_t j = 0; j < v; ++j)
              grad.data[r * v + j] =
                  g * (std::exp(row[j] - lse) - (j == int64_t(label))) / rows;
        }
        if (isGrad)
          set(o->getResult(0), std::move(grad));
        else
          set(o->getResult(0), HostTensor({}, rows ? loss / rows : 0.0));
        return success();
      })
      .Case<KlDivOp, KlDivGradOp>([&](Operation *o) -> LogicalResult {
        // Row-wise log-softmax of both in float64, stable.
        const HostTensor &s = tensor(o->getOperand(0));
        const HostTensor &t = tensor(o->getOperand(1));
        int64_t v = s.shape.back();
        int64_t rows = v ? s.numElements() / v : 0;
        bool isGrad = isa<KlDivGradOp>(o);
        double g = isGrad ? tensor(o->getOperand(2)).data[0] : 0.0;
        auto logSoftmax = [&](const double *row, std::vector<double> &out) {
          double lse = logSumExp(row, v);
          for (int64_t j = 0; j < v; ++j)
            out[j] = row[j] - lse;
        };
        HostTensor grad(s.shape);
        std::vector<double> ls(v), lt(v);
        double loss = 0;
        for (int64_t r = 0; r < rows; ++r) {
          logSoftmax(&s.data[r * v], ls);
          logSoftmax(&t.data[r * v], lt);
          for (int64_t j = 0; j < v; ++j) {
            double p = std::exp(lt[j]);
            loss += p * (lt[j] - ls[j]);
            if (isGrad)
              grad.data[r * v + j] = g * (std::exp(ls[j]) - p) / rows;
          }
        }
        if (isGrad)
          set(o->getResult(0), std::move(grad));
        else
          set(o->getResult(0), HostTensor({}, rows ? loss / rows : 0.0));
        return success();
      })
      .Case<ClipGradNormOp>([&](ClipGradNormOp c) {
        double sq = 0;
        for (Value g : c.getGrads())
          for (double v : tensor(g).data)
            sq += v * v;
        double factor =
            std::min(1.0, c.getMaxNorm().convertToDouble() / (std::sqrt(sq) + 1e-6));
        for (auto [g, r] : llvm::zip(c.getGrads(), c.getResults())) {
          HostTensor t = tensor(g);
          for (double &v : t.data)
            v *= factor;
          set(r, std::move(t));
        }
        return success();
      })
      .Case<AdamWOp>([&](AdamWOp a) {
        HostTensor p = tensor(a.getParam()), m = tensor(a.getM()),
                   v = tensor(a.getV());
        const HostTensor &g = tensor(a.getGrad());
        double lr = tensor(a.getLr()).data[0], t = tensor(a.getStep()).data[0];
        double b1 = a.getBeta1().convertToDouble(),
               b2 = a.getBeta2().convertToDouble(),
               eps = a.getEps().convertToDouble(),
               wd = a.getWeightDecay().convertToDouble();
        double c1 = 1 - std::pow(b1, t), c2 = 1 - std::pow(b2, t);
        for (size_t i = 0; i < p.data.size(); ++i) {
          m.data[i] = b1 * m.data[i] + (1 - b1) * g.data[i];
          v.data[i] = b2 * v.data[i] + (1 - b2) * g.data[i] * g.data[i];
          double update =
              (m.data[i] / c1) / (std::sqrt(v.data[i] / c2) + eps) + wd * p.data[i];
          p.data[i] -= lr * update;
        }
        // Parameters are stored in their own type between steps.
        set(a.getNewParam(), rounded(std::move(p), a.getNewParam().getType()));
        set(a.getNewM(), rounded(std::move(m), a.getNewM().getType()));
        set(a.getNewV(), rounded(std::move(v), a.getNewV().getType()));
        return success();
      })
      .Case<LionOp>([&](LionOp l) {
        HostTensor p = tensor(l.getParam()), m = tensor(l.getM());
        const HostTensor &g = tensor(l.getGrad());
        double lr = tensor(l.getLr()).data[0];
        double b1 = l.getBeta1().convertToDouble(),
               b2 = l.getBeta2().convertToDouble(),
               wd = l.getWeightDecay().convertToDouble();
        bool int8 = l.getMomentum() == StateFormat::int8;
        int64_t block = l.getBlock();
        HostTensor scales;
        if (int8) { // decode m = code · scale
          scales = tensor(l.getMScales());
          for (size_t i = 0; i < m.data.size(); ++i)
            m.data[i] *= scales.data[i / block];
        }
        for (size_t i = 0; i < p.data.size(); ++i) {
          double c = b1 * m.data[i] + (1 - b1) * g.data[i];
          double sign = c > 0 ? 1.0 : (c < 0 ? -1.0 : 0.0);
          p.data[i] -= lr * (sign + wd * p.data[i]);
          m.data[i] = b2 * m.data[i] + (1 - b2) * g.data[i];
        }
        if (int8) { // requantize per block: scale = absmax / 127
          for (size_t b0 = 0; b0 < m.data.size(); b0 += block) {
            size_t b1e = std::min(m.data.size(), b0 + size_t(block));
            double absmax = 0;
            for (size_t i = b0; i < b1e; ++i)
              absmax = std::max(absmax, std::fabs(m.data[i]));
            double s = format::roundTo(absmax / 127.0, Float32Type::get(l.getContext()));
            scales.data[b0 / block] = s;
            for (size_t i = b0; i < b1e; ++i)
              m.data[i] = s > 0 ? std::nearbyint(m.data[i] / s) : 0.0;
          }
          set(l.getNewMScales(), std::move(scales));
          set(l.getNewM(), std::move(m));
        } else {
          set(l.getNewM(), rounded(std::move(m), l.getNewM().getType()));
        }
        set(l.getNewParam(), rounded(std::move(p), l.getNewParam().getType()));
        return success();
      })
      .Case<QftLionOp>([&](QftLionOp q) {
        const HostTensor &g = tensor(q.getGrad()), &x = tensor(q.getInput());
        int64_t n = q.getGrad().getType().getShape().back();
        int64_t k = q.getInput().getType().getShape().back();
        int64_t rows = int64_t(g.data.size()) / n;
        UniformFormatAttr f = q.getFormat();
        int64_t gs = f.getGroupSize(k), groups = k / gs;
        const HostTensor &scales = tensor(q.getParams()[0]);
        const HostTensor *zeros =
            f.getSymmetric() ? nullptr : &tensor(q.getParams()[1]);
        std::vector<uint32_t> words = format::wordsOf(tensor(q.getCodes()));
        HostTensor m = tensor(q.getM()), ms = tensor(q.getMScales());
        double lr = tensor(q.getLr()).data[0], sc = q.getScale().convertToDouble();
        double b1 = q.getBeta1().convertToDouble(),
               b2 = q.getBeta2().convertToDouble(),
               wd = q.getWeightDecay().convertToDouble();
        int64_t block = q.getBlock();
        for (int64_t r = 0; r < n; ++r) {
          for (int64_t c = 0; c < k; ++c) {
            double dw = 0;
            for (int64_t i = 0; i < rows; ++i)
              dw += g.data[i * n + r] * x.data[i * k + c];
            dw *= sc;
            int64_t e = r * k + c;
            double mOld = m.data[e] * ms.data[e / block];
            double cm = b1 * mOld + (1 - b1) * dw;
            double sign = cm > 0 ? 1.0 : (cm < 0 ? -1.0 : 0.0);
            int64_t gi = r * groups + c / gs;
            double s = scales.data[gi], z = zeros ? zeros->data[gi] : 128.0;
            uint32_t &word = words[(r * k + c) / 4];
            unsigned shift = 8 * (c % 4);
            double w = s * (double((word >> shift) & 255u) - z);
            w -= lr * (sign + wd * w);
            double code = std::clamp(std::nearbyint(w / s + z), 0.0, 255.0);
            word = (word & ~(255u << shift)) | (uint32_t(code) << shift);
            m.data[e] = b2 * mOld + (1 - b2) * dw;
          }
        }
        // Requantize the momentum per block: scale = absmax / 127.
        for (size_t b0 = 0; b0 < m.data.size(); b0 += block) {
          double absmax = 0;
          for (size_t i = b0; i < b0 + block; ++i)
            absmax = std::max(absmax, std::fabs(m.data[i]));
          double scale = format::roundTo(absmax / 127.0,
                                         Float32Type::get(q.getContext()));
          ms.data[b0 / block] = scale;
          for (size_t i = b0; i < b0 + block; ++i)
            m.data[i] = scale > 0 ? std::nearbyint(m.data[i] / scale) : 0.0;
        }
        set(q.getNewCodes(),
            format::tensorOfWords(words, tensor(q.getCodes()).shape));
        set(q.getNewM(), std::move(m));
        set(q.getNewMScales(), std::move(ms));
        return success();
      })
      .Case<EmbeddingOp, EmbeddingGradOp>([&](Operation *o) -> LogicalResult {
        const HostTensor &ids = tensor(o->getOperand(1));
        bool isGrad = isa<EmbeddingGradOp>(o);
        int64_t v = isGrad ? shapeOf(o->getResult(0).getType())[0]
                           : tensor(o->getOperand(0)).shape[0];
        for (int64_t i = 0; i < ids.numElements(); ++i)
          if (!(ids.data[i] >= 0 && ids.data[i] < double(v)))
            return o->emitError() << "token id " << int64_t(ids.data[i])
                                  << " at position " << i << " is outside [0, "
                                  << v << ")";
        set(o->getResult(0), isGrad ? embeddingGrad(tensor(o->getOperand(0)), ids, v)
                                    : embedding(tensor(o->getOperand(0)), ids));
        return success();
      })
      .Case<RmsNormOp>([&](RmsNormOp r) {
        set(r.getResult(), rmsNorm(tensor(r.getInput()), tensor(r.getWeight()),
                                   r.getEps().convertToDouble()));
        return success();
      })
      .Case<RmsNormGradOp>([&](RmsNormGradOp r) {
        set(r.getResult(),
            rmsNormGrad(tensor(r.getGrad()), tensor(r.getInput()),
                        tensor(r.getWeight()), r.getEps().convertToDouble()));
        return success();
      })
      .Case<RmsNormWeightGradOp>([&](RmsNormWeightGradOp r) {
        set(r.getResult(), rmsNormWeightGrad(tensor(r.getGrad()),
                                             tensor(r.getInput()),
                                             r.getEps().convertToDouble()));
        return success();
      })
      .Case<RopeOp>([&](RopeOp r) {
        set(r.getResult(), rope(tensor(r.getInput()), r.getHeadDim(),
                                r.getTheta().convertToDouble(), r.getInverse()));
        return success();
      })
      .Case<AttentionOp>([&](AttentionOp a) {
        const HostTensor *seg =
            a.getSegments() ? &tensor(a.getSegments()) : nullptr;
        if (seg && failed(checkSegments(a, *seg)))
          return failure();
        auto [o, lse] = attention(
            tensor(a.getQuery()), tensor(a.getKey()), tensor(a.getValue()),
            {a.getHeads(), a.getKvHeads(), a.getScaleValue(), a.getCausal(),
             seg});
        set(a.getResult(), std::move(o));
        set(a.getLse(), std::move(lse));
        return success();
      })
      .Case<AttentionGradOp>([&](AttentionGradOp a) {
        auto grads = attentionGrad(
            tensor(a.getQuery()), tensor(a.getKey()), tensor(a.getValue()),
            tensor(a.getOutput()), tensor(a.getLse()), tensor(a.getGrad()),
            {a.getHeads(), a.getKvHeads(), a.getScale().convertToDouble(),
             a.getCausal(),
             a.getSegments() ? &tensor(a.getSegments()) : nullptr});
        for (unsigned i = 0; i < 3; ++i)
          set(a->getResult(i), std::move(grads[i]));
        return success();
      })
      .Case<SwigluOp>([&](SwigluOp w) {
        set(w.getResult(), swiglu(tensor(w.getGate()), tensor(w.getUp())));
        return success();
      })
      .Case<SwigluGradOp>([&](SwigluGradOp w) {
        auto [dg, du] = swigluGrad(tensor(w.getGate()), tensor(w.getUp()),
                                   tensor(w.getGrad()));
        set(w.getGradGate(), std::move(dg));
        set(w.getGradUp(), std::move(du));
        return success();
      })
      .Case<GradAccumulateOp>([&](GradAccumulateOp a) {
        HostTensor acc = tensor(a.getAcc());
        const HostTensor &g = tensor(a.getGrad());
        for (size_t i = 0; i < acc.data.size(); ++i)
          acc.data[i] = double(float(acc.data[i] + g.data[i])); // f32 storage
        set(a.getNewAcc(), std::move(acc));
        return success();
      })
      .Case<GradTakeOp>([&](GradTakeOp t) {
        HostTensor g = tensor(t.getAcc());
        double count = tensor(t.getCount()).data[0];
        for (double &v : g.data)
          v = double(float(v / count));
        set(t.getGrad(), std::move(g));
        set(t.getNewAcc(), HostTensor(tensor(t.getAcc()).shape));
        return success();
      })
      .Case<FusedLinearOp>([&](FusedLinearOp f) {
        set(f.getResult(), fusedLinear(f));
        return success();
      })
      .Default([&](Operation *o) {
        return o->emitError() << "the reference interpreter does not support '"
                              << o->getName() << "'";
      });
}

} // namespace

FailureOr<std::vector<HostTensor>> run(func::FuncOp func,
                                       ArrayRef<HostTensor> args,
                                       const Observer &observe) {
  Evaluator evaluator;
  evaluator.observe = observe;
  return evaluator.call(func, args);
}

std::string argumentName(func::FuncOp func, unsigned index) {
  if (auto name = func.getArgAttrOfType<StringAttr>(index, "qtune.name"))
    return name.str();
  return "arg" + std::to_string(index);
}

std::string resultName(func::FuncOp func, unsigned index) {
  if (auto name = func.getResultAttrOfType<StringAttr>(index, "qtune.name"))
    return name.str();
  return "out" + std::to_string(index);
}

} // namespace qtune::ref
