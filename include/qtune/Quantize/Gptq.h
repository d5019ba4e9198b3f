//===- Gptq.h - GPTQ / OPTQ quantization of a linear layer -------*- C++ -*-===//
//
// Quantizes a weight column by column so that the layer's outputs on the
// calibration inputs, not its weights, stay close: each column is rounded to
// its group's grid and the rounding error is spread over the columns not yet
// quantized through the inverse Hessian H⁻¹ of the layer's reconstruction
// error (H = 2·XᵀX / N over the calibration inputs X). Frantar et al., "GPTQ:
// Accurate Post-Training Quantization for Generative Pre-trained
// Transformers": the Cholesky form with lazy block updates, dampening, and
// activation order (columns by decreasing H diagonal; the group parameters of
// a contiguous-group format are then fitted up front, "static groups").
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_QUANTIZE_GPTQ_H
#define QTUNE_QUANTIZE_GPTQ_H

#include "qtune/Dialect/QTune/IR/QTuneAttrs.h"
#include "qtune/Support/HostTensor.h"

#include <optional>
#include <string>
#include <vector>

namespace qtune::quantize {

struct GptqOptions {
  /// Added to H's diagonal: `damp` × its mean.
  double damp = 0.01;
  /// Quantize columns by decreasing H diagonal.
  bool actOrder = false;
  /// Columns per lazy update.
  int64_t block = 128;
};

struct GptqResult {
  llvm::SmallVector<HostTensor> components;
  /// Relative output errors of round-to-nearest and of GPTQ on the
  /// calibration inputs: √(tr(E·H·Eᵀ) / tr(W·H·Wᵀ)), E = W − dequant(Q).
  double rtnError = 0, error = 0;
};

/// GPTQ of the n × k weight `w` (row-major) with the k × k Hessian `h`
/// (row-major, symmetric). Only #qtune.uniform formats; nullopt with `error`
/// when H is not positive definite even after dampening.
std::optional<GptqResult> gptq(UniformFormatAttr format, int64_t n, int64_t k,
                               const std::vector<double> &w,
                               const std::vector<double> &h,
                               const GptqOptions &options, std::string &error);

/// √(tr(E·H·Eᵀ) / tr(W·H·Wᵀ)) with E = W − approx.
double outputError(int64_t n, int64_t k, const std::vector<double> &w,
                   const std::vector<double> &approx,
                   const std::vector<double> &h);

} // namespace qtune::quantize

#endif // QTUNE_QUANTIZE_GPTQ_H
