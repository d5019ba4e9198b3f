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

#include "mlir/IR/MLIRContext.h"

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

} // namespace qtune::quantize

#endif // QTUNE_QUANTIZE_CALIBRATION_H
