//===- Calibration.cpp - layer Hessians from calibration sequences --------===//

#include "qtune/Quantize/Calibration.h"
#include "qtune/Dialect/QTune/IR/QTuneOps.h"
#include "qtune/Import/LlamaImport.h"
#include "qtune/Reference/Interpreter.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include <Eigen/Dense>

#include <set>

namespace qtune::quantize {

using namespace mlir;
using RowMatrix =
    Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace {
/// The dense full-precision model at `batch` x `seqLen`, functions
/// "calibration" (loss) and "calibration_logits".
std::optional<import::ImportResult>
importDense(MLIRContext &ctx, const import::LlamaConfig &config,
            import::HFCheckpoint &checkpoint, int64_t batch, int64_t seqLen,
            std::string &error) {
  import::ImportOptions options;
  options.method = import::Method::None;
  options.format = nullptr; // the full-precision model
  options.seqLen = seqLen;
  options.batch = batch;
  options.name = "calibration";
  return import::importLlama(ctx, config, checkpoint, options, error);
}

/// The module path of a decoder linear layer whose weight is argument
/// `index` of `func` ("model.layers.0.self_attn.q_proj"), else "".
std::string decoderLayerOf(func::FuncOp func, unsigned index) {
  std::string argName = ref::argumentName(func, index);
  llvm::StringRef name = argName;
  if (!name.contains(".layers.") || !name.consume_back(".weight"))
    return "";
  return name.str();
}
} // namespace

std::optional<Hessians>
collectHessians(MLIRContext &ctx, const import::LlamaConfig &config,
                import::HFCheckpoint &checkpoint,
                const std::vector<std::vector<int32_t>> &sequences,
                std::string &error,
                const std::function<void(int64_t, int64_t)> &progress) {
  if (sequences.empty()) {
    error = "no calibration sequences";
    return std::nullopt;
  }
  int64_t seqLen = sequences.front().size();
  std::optional<import::ImportResult> model =
      importDense(ctx, config, checkpoint, /*batch=*/1, seqLen, error);
  if (!model)
    return std::nullopt;
  auto func = model->module->lookupSymbol<func::FuncOp>("calibration_logits");
  std::vector<HostTensor> args(1 + model->params.size());
  for (auto [i, t] : llvm::enumerate(model->params)) {
    st::TensorInfo info{t.name, t.dtype, t.shape, 0, t.bytes.size()};
    args[1 + i] = HostTensor(t.shape, st::toDoubles(info, t.bytes.data()));
  }

  std::map<std::string, RowMatrix> sums;
  int64_t rows = 0;
  auto observe = [&](Operation *op, ArrayRef<const HostTensor *> operands) {
    auto linear = dyn_cast<LinearOp>(op);
    auto weight = linear ? dyn_cast<BlockArgument>(linear.getWeight()) : nullptr;
    if (!weight)
      return;
    std::string module = decoderLayerOf(func, weight.getArgNumber());
    if (module.empty())
      return;
    const HostTensor &x = *operands[0];
    int64_t k = x.shape.back(), m = x.numElements() / k;
    Eigen::Map<const RowMatrix> X(x.data.data(), m, k);
    RowMatrix &h = sums[module];
    if (h.size() == 0)
      h = RowMatrix::Zero(k, k);
    h.noalias() += X.transpose() * X;
  };
  for (auto [s, tokens] : llvm::enumerate(sequences)) {
    if ((int64_t)tokens.size() != seqLen) {
      error = "calibration sequence " + std::to_string(s) + " has " +
              std::to_string(tokens.size()) + " tokens, the first " +
              std::to_string(seqLen);
      return std::nullopt;
    }
    HostTensor ids({1, seqLen});
    for (int64_t i = 0; i < seqLen; ++i) {
      if (tokens[i] < 0 || tokens[i] >= config.vocabSize) {
        error = "calibration sequence " + std::to_string(s) + " holds token " +
                std::to_string(tokens[i]) + ", outside the vocabulary of " +
                std::to_string(config.vocabSize);
        return std::nullopt;
      }
      ids.data[i] = tokens[i];
    }
    args[0] = std::move(ids);
    if (failed(ref::run(func, args, observe))) {
      error = "the reference forward of calibration sequence " +
              std::to_string(s) + " failed";
      return std::nullopt;
    }
    rows += seqLen;
    if (progress)
      progress(s + 1, sequences.size());
  }
  Hessians out;
  for (auto &[name, h] : sums) {
    RowMatrix scaled = (2.0 / double(rows)) * h;
    out[name].assign(scaled.data(), scaled.data() + scaled.size());
  }
  return out;
}

std::string hessianName(const std::string &module) {
  return "hessian." + module;
}

std::optional<CalibrationGraph>
buildCalibrationGraph(MLIRContext &ctx, const import::LlamaConfig &config,
                      import::HFCheckpoint &checkpoint, int64_t batch,
                      int64_t seqLen, std::string &error) {
  std::optional<import::ImportResult> model =
      importDense(ctx, config, checkpoint, batch, seqLen, error);
  if (!model)
    return std::nullopt;
  ModuleOp module = *model->module;
  // Keep the logits function alone, under the name "calibration".
  module.lookupSymbol<func::FuncOp>("calibration").erase();
  auto func = module.lookupSymbol<func::FuncOp>("calibration_logits");
  func.setName("calibration");

  OpBuilder b(&ctx);
  auto f32 = b.getF32Type();
  auto scale = b.getF64FloatAttr(2.0 / double(batch * seqLen));
  SmallVector<Value> hessians;
  SmallVector<std::string> names;
  func.walk([&](LinearOp linear) {
    auto weight = dyn_cast<BlockArgument>(linear.getWeight());
    if (!weight)
      return;
    std::string layer = decoderLayerOf(func, weight.getArgNumber());
    if (layer.empty())
      return;
    Value x = linear.getInput();
    int64_t k = cast<RankedTensorType>(x.getType()).getShape().back();
    b.setInsertionPointAfter(linear);
    hessians.push_back(WeightGradOp::create(
        b, linear.getLoc(), RankedTensorType::get({k, k}, f32), x, x, scale));
    names.push_back(hessianName(layer));
  });
  auto ret = cast<func::ReturnOp>(func.getBody().front().getTerminator());
  b.setInsertionPoint(ret);
  func::ReturnOp::create(b, ret.getLoc(), hessians);
  ret.erase();
  // What only fed the logits (the last norm, the lm head) goes.
  Block &body = func.getBody().front();
  for (Operation &op : llvm::make_early_inc_range(llvm::reverse(body)))
    if (isOpTriviallyDead(&op))
      op.erase();
  func.setType(b.getFunctionType(func.getArgumentTypes(),
                                 ValueRange(hessians).getTypes()));
  for (auto [i, name] : llvm::enumerate(names))
    func.setResultAttr(i, QTuneDialect::kNameAttrName, b.getStringAttr(name));
  // Params the remaining function no longer reads (the lm head) are dropped.
  llvm::BitVector unused(func.getNumArguments());
  std::set<std::string> kept;
  for (unsigned i = 0; i < func.getNumArguments(); ++i) {
    std::string name = ref::argumentName(func, i);
    if (func.getArgument(i).use_empty())
      unused.set(i);
    else
      kept.insert(name);
  }
  if (failed(func.eraseArguments(unused))) {
    error = "the calibration graph's unused arguments could not be removed";
    return std::nullopt;
  }
  CalibrationGraph graph;
  for (st::OwnedTensor &t : model->params)
    if (kept.count(t.name))
      graph.params.push_back(std::move(t));
  graph.module = std::move(model->module);
  if (failed(verify(*graph.module))) {
    error = "the calibration graph does not verify";
    return std::nullopt;
  }
  return graph;
}

} // namespace qtune::quantize
