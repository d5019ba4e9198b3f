//===- Calibration.h - layer Hessians from calibration sequences -*- C++ -*-===//
//
// Runs the full-precision model (imported densely, `<name>_logits`) on
// calibration token sequences in the reference interpreter and accumulates,
// for every decoder linear layer, H = 2·XᵀX / rows over the inputs X the
// layer sees: what GPTQ needs. All Hessians come from the full-precision
// forward (not from the partly quantized model, as sequential GPTQ does).
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_QUANTIZE_CALIBRATION_H
#define QTUNE_QUANTIZE_CALIBRATION_H

#include "qtune/Import/HFCheckpoint.h"
#include "qtune/Import/LlamaConfig.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace qtune::quantize {

/// Module path ("model.layers.0.self_attn.q_proj") → row-major K × K H.
using Hessians = std::map<std::string, std::vector<double>>;

/// `sequences`: token ids, each of one length. nullopt with `error` on a
/// token outside the vocabulary or a failed import or run. `progress` hears
/// (done, total) sequences.
std::optional<Hessians>
collectHessians(mlir::MLIRContext &ctx, const import::LlamaConfig &config,
                import::HFCheckpoint &checkpoint,
                const std::vector<std::vector<int32_t>> &sequences,
                std::string &error,
                const std::function<void(int64_t, int64_t)> &progress = {});

/// The same Hessians from a compiled entry on the GPU: the dense model's
/// forward on `batch` sequences of `seqLen` tokens (input `input_ids`, I32
/// [batch, seqLen]) whose outputs are, for every decoder linear layer,
/// `hessian.<module>` = 2·XᵀX / (batch·seqLen), F32 K × K (qtune.weight_grad
/// of the layer's input with itself). The logits are not computed. `params`
/// are the dense model's, in bf16, as qtune-import writes them.
struct CalibrationGraph {
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::vector<st::OwnedTensor> params;
};
std::optional<CalibrationGraph>
buildCalibrationGraph(mlir::MLIRContext &ctx, const import::LlamaConfig &config,
                      import::HFCheckpoint &checkpoint, int64_t batch,
                      int64_t seqLen, std::string &error);

/// The output name of module `module`'s Hessian in the calibration graph.
std::string hessianName(const std::string &module);

} // namespace qtune::quantize

#endif // QTUNE_QUANTIZE_CALIBRATION_H
