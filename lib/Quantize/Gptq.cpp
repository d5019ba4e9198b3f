//===- Gptq.cpp - GPTQ / OPTQ quantization of a linear layer ---------------===//

#include "qtune/Quantize/Gptq.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace qtune::quantize {

using RowMatrix =
    Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

double outputError(int64_t n, int64_t k, const std::vector<double> &w,
                   const std::vector<double> &approx,
                   const std::vector<double> &h) {
  Eigen::Map<const RowMatrix> W(w.data(), n, k), A(approx.data(), n, k),
      H(h.data(), k, k);
  RowMatrix E = W - A;
  double num = ((E * H).array() * E.array()).sum();
  double den = ((W * H).array() * W.array()).sum();
  return den > 0 ? std::sqrt(std::max(num, 0.0) / den) : 0.0;
}

std::optional<GptqResult> gptq(UniformFormatAttr format, int64_t n, int64_t k,
                               const std::vector<double> &w,
                               const std::vector<double> &h,
                               const GptqOptions &options, std::string &error) {
  int64_t gs = QuantFormatAttrInterface(format).getGroupSize(k), groups = k / gs;
  RowMatrix W = Eigen::Map<const RowMatrix>(w.data(), n, k);
  Eigen::MatrixXd H = Eigen::Map<const RowMatrix>(h.data(), k, k);
  // Inputs that are always zero: their weights do not matter; quantize them
  // as zeros and keep H invertible.
  for (int64_t i = 0; i < k; ++i)
    if (H(i, i) == 0) {
      H(i, i) = 1;
      W.col(i).setZero();
    }
  std::vector<int64_t> perm(k);
  std::iota(perm.begin(), perm.end(), 0);
  if (options.actOrder)
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int64_t a, int64_t b) { return H(a, a) > H(b, b); });
  RowMatrix Wp(n, k);
  Eigen::MatrixXd Hp(k, k);
  for (int64_t i = 0; i < k; ++i) {
    Wp.col(i) = W.col(perm[i]);
    for (int64_t j = 0; j < k; ++j)
      Hp(i, j) = H(perm[i], perm[j]);
  }
  Hp.diagonal().array() += options.damp * Hp.diagonal().mean();
  // U: the upper Cholesky factor of H⁻¹ (H⁻¹ = Uᵀ·U); row i holds the
  // update of the later columns per unit of column i's error.
  Eigen::LLT<Eigen::MatrixXd> chol(Hp);
  if (chol.info() != Eigen::Success) {
    error = "the Hessian is not positive definite even with dampening " +
            std::to_string(options.damp) + "; raise --damp";
    return std::nullopt;
  }
  Eigen::MatrixXd hinv = chol.solve(Eigen::MatrixXd::Identity(k, k));
  Eigen::LLT<Eigen::MatrixXd> cholInv(hinv);
  if (cholInv.info() != Eigen::Success) {
    error = "the inverse Hessian is not positive definite; raise --damp";
    return std::nullopt;
  }
  Eigen::MatrixXd U = cholInv.matrixU();

  HostTensor scales({n, groups}), zeros({n, groups});
  // Fits group g of every row on the columns `columns(r)` holds.
  auto fit = [&](int64_t g, auto columns) {
    for (int64_t r = 0; r < n; ++r) {
      auto [s, z] = format.fitGroup(columns(r));
      scales.data[r * groups + g] = s;
      zeros.data[r * groups + g] = z;
    }
  };
  // With activation order a group's columns are not quantized together: fit
  // every group on the original weight first.
  if (options.actOrder)
    for (int64_t g = 0; g < groups; ++g)
      fit(g, [&](int64_t r) {
        return llvm::ArrayRef<double>(&w[r * k + g * gs], gs);
      });

  std::vector<uint32_t> codes(n * k);
  for (int64_t i1 = 0; i1 < k; i1 += options.block) {
    int64_t i2 = std::min(i1 + options.block, k);
    RowMatrix err(n, i2 - i1);
    for (int64_t i = i1; i < i2; ++i) {
      int64_t c = perm[i], g = c / gs;
      // In natural order a group's columns are consecutive: fit it on the
      // current (already updated) columns when its first one comes.
      if (!options.actOrder && c % gs == 0) {
        std::vector<double> values(gs);
        fit(g, [&](int64_t r) {
          for (int64_t j = 0; j < gs; ++j)
            values[j] = Wp(r, i + j);
          return llvm::ArrayRef<double>(values);
        });
      }
      double d = U(i, i);
      for (int64_t r = 0; r < n; ++r) {
        double s = scales.data[r * groups + g], z = zeros.data[r * groups + g];
        uint32_t q = format.codeOf(Wp(r, i), s, z);
        codes[r * k + c] = q;
        double value = s * (double(q) - z);
        err(r, i - i1) = (Wp(r, i) - value) / d;
      }
      // Spread the error over the rest of the block now, beyond it lazily.
      if (i + 1 < i2)
        Wp.middleCols(i + 1, i2 - i - 1).noalias() -=
            err.col(i - i1) * U.row(i).segment(i + 1, i2 - i - 1);
    }
    if (i2 < k)
      Wp.rightCols(k - i2).noalias() -=
          err * U.block(i1, i2, i2 - i1, k - i2);
  }

  GptqResult result;
  result.components =
      format.fromCodes(n, k, codes, std::move(scales), std::move(zeros));
  std::vector<double> rtn(n * k);
  QuantFormatAttrInterface iface(format);
  iface.dequantize(n, k, iface.quantize(n, k, w, {}), rtn);
  result.rtnError = outputError(n, k, w, rtn, h);
  std::vector<double> back(n * k);
  iface.dequantize(n, k, result.components, back);
  result.error = outputError(n, k, w, back, h);
  return result;
}

} // namespace qtune::quantize
