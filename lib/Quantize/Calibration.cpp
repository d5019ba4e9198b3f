//===- Calibration.cpp - layer Hessians from calibration sequences --------===//

#include "qtune/Quantize/Calibration.h"
#include "qtune/Dialect/QTune/IR/QTuneOps.h"
#include "qtune/Import/LlamaImport.h"
#include "qtune/Reference/Interpreter.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

#include <Eigen/Dense>

#include <cstring>

namespace qtune::quantize {

using namespace mlir;
using RowMatrix =
    Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

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
  import::ImportOptions options;
  options.method = import::Method::None;
  options.format = nullptr; // the full-precision model
  options.seqLen = seqLen;
  options.batch = 1;
  options.name = "calibration";
  std::optional<import::ImportResult> model =
      import::importLlama(ctx, config, checkpoint, options, error);
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
    std::string argName = ref::argumentName(func, weight.getArgNumber());
    llvm::StringRef name = argName;
    if (!name.contains(".layers.") || !name.ends_with(".weight"))
      return;
    const HostTensor &x = *operands[0];
    int64_t k = x.shape.back(), m = x.numElements() / k;
    Eigen::Map<const RowMatrix> X(x.data.data(), m, k);
    RowMatrix &h = sums[name.drop_back(strlen(".weight")).str()];
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

} // namespace qtune::quantize
