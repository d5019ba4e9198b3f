//===- LowRankInit.h - LoRA initialization from the quantization residual -===//
//
// Data-free initialization of a LoRA adapter on a quantized weight (LoftQ):
// the adapter starts as the best rank-r approximation of what quantization
// lost, W − dequant(Q(W)), so the quantized layer with its adapter starts
// closer to the full-precision one. With more than one round the
// quantization and the approximation alternate: Q_t = Q(W − s·B_{t−1}·A_{t−1}),
// s·B_t·A_t = SVD_r(W − dequant(Q_t)).
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_IMPORT_LOWRANKINIT_H
#define QTUNE_IMPORT_LOWRANKINIT_H

#include "qtune/Dialect/QTune/IR/QTuneAttrs.h"

#include <cstdint>
#include <vector>

namespace qtune::import {

/// The leading `rank` singular triplets of the row-major rows × cols matrix
/// `m`: m ≈ U · diag(sigma) · Vᵀ with U rows × rank and V cols × rank
/// (row-major), sigma descending. Randomized range finding (oversampled by
/// 10, four power iterations, seeded) followed by an exact SVD of the small
/// projected matrix; exact when the matrix's rank is at most rank + 10.
struct TruncatedSvd {
  std::vector<double> u, sigma, v;
};
TruncatedSvd truncatedSvd(const std::vector<double> &m, int64_t rows,
                          int64_t cols, int64_t rank, uint64_t seed);

struct LowRankInit {
  /// The weight's components, quantized from W − s·B·A of the last round.
  llvm::SmallVector<HostTensor> components;
  /// LoRA factors as PEFT stores them: A rank × k, B n × rank (row-major),
  /// rounded to bf16, with s·B·A ≈ W − dequant(components).
  std::vector<double> a, b;
  /// Relative Frobenius errors ‖W − W'‖ / ‖W‖ of round-to-nearest alone and
  /// of the initialized layer (dequant(Q) + s·B·A with the bf16 factors).
  double rtnError = 0, error = 0;
};

/// `rounds` ≥ 1 alternating rounds for an n × k weight `w` (row-major) in
/// `format`, an adapter of `rank` applied with scale s = alpha / rank.
LowRankInit lowRankInit(QuantFormatAttrInterface format, int64_t n, int64_t k,
                        const std::vector<double> &w, int64_t rank,
                        double scale, int64_t rounds, uint64_t seed);

} // namespace qtune::import

#endif // QTUNE_IMPORT_LOWRANKINIT_H
