//===- LowRankInit.cpp - LoRA initialization from the quantization residual===//

#include "qtune/Import/LowRankInit.h"
#include "qtune/runtime/Float16.h"

#include <Eigen/Dense>

#include <cmath>
#include <random>

namespace qtune::import {

using RowMatrix =
    Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

TruncatedSvd truncatedSvd(const std::vector<double> &m, int64_t rows,
                          int64_t cols, int64_t rank, uint64_t seed) {
  Eigen::Map<const RowMatrix> a(m.data(), rows, cols);
  int64_t sketch = std::min<int64_t>(rank + 10, std::min(rows, cols));
  // Range finder: an orthonormal basis of A·Ω, refined by power iterations
  // (re-orthonormalized each time) so the leading directions dominate.
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  Eigen::MatrixXd omega(cols, sketch);
  for (int64_t j = 0; j < sketch; ++j)
    for (int64_t i = 0; i < cols; ++i)
      omega(i, j) = normal(rng);
  auto orthonormal = [&](const Eigen::MatrixXd &y) {
    Eigen::HouseholderQR<Eigen::MatrixXd> qr(y);
    return Eigen::MatrixXd(qr.householderQ() *
                           Eigen::MatrixXd::Identity(y.rows(), y.cols()));
  };
  Eigen::MatrixXd q = orthonormal(a * omega);
  for (int iter = 0; iter < 4; ++iter) {
    Eigen::MatrixXd z = orthonormal(a.transpose() * q);
    q = orthonormal(a * z);
  }
  // A ≈ Q·(QᵀA); the small factor's exact SVD gives the triplets.
  Eigen::MatrixXd small = q.transpose() * a;
  Eigen::JacobiSVD<Eigen::MatrixXd> svd(small,
                                        Eigen::ComputeThinU | Eigen::ComputeThinV);
  Eigen::MatrixXd u = q * svd.matrixU();
  TruncatedSvd out;
  int64_t r = std::min<int64_t>(rank, sketch);
  out.u.assign(rows * rank, 0.0);
  out.v.assign(cols * rank, 0.0);
  out.sigma.assign(rank, 0.0);
  for (int64_t j = 0; j < r; ++j) {
    out.sigma[j] = svd.singularValues()(j);
    for (int64_t i = 0; i < rows; ++i)
      out.u[i * rank + j] = u(i, j);
    for (int64_t i = 0; i < cols; ++i)
      out.v[i * rank + j] = svd.matrixV()(i, j);
  }
  return out;
}

namespace {
double bf16(double v) { return bf16ToFloat(doubleToBf16(v)); }

} // namespace

LowRankInit lowRankInit(QuantFormatAttrInterface format, int64_t n, int64_t k,
                        const std::vector<double> &w, int64_t rank,
                        double scale, int64_t rounds, uint64_t seed) {
  LowRankInit out;
  out.a.assign(rank * k, 0.0);
  out.b.assign(n * rank, 0.0);
  std::vector<double> target = w, back(n * k), delta(n * k, 0.0);
  for (int64_t round = 0; round < rounds; ++round) {
    // Quantize what the adapter does not carry, then fit the adapter to what
    // quantization lost.
    for (int64_t i = 0; i < n * k; ++i)
      target[i] = w[i] - delta[i];
    out.components = format.quantize(n, k, target, {});
    format.dequantize(n, k, out.components, back);
    if (round == 0)
      out.rtnError = relativeError(w, back);
    std::vector<double> residual(n * k);
    for (int64_t i = 0; i < n * k; ++i)
      residual[i] = w[i] - back[i];
    TruncatedSvd svd = truncatedSvd(residual, n, k, rank, seed + round);
    // s·B·A = U·Σ·Vᵀ with the singular values split evenly: B = U·√(Σ/s),
    // A = √(Σ/s)·Vᵀ, both rounded to bf16 as stored.
    for (int64_t j = 0; j < rank; ++j) {
      double root = std::sqrt(svd.sigma[j] / scale);
      for (int64_t i = 0; i < n; ++i)
        out.b[i * rank + j] = bf16(svd.u[i * rank + j] * root);
      for (int64_t i = 0; i < k; ++i)
        out.a[j * k + i] = bf16(svd.v[i * rank + j] * root);
    }
    Eigen::Map<RowMatrix>(delta.data(), n, k) =
        scale * (Eigen::Map<const RowMatrix>(out.b.data(), n, rank) *
                 Eigen::Map<const RowMatrix>(out.a.data(), rank, k));
  }
  std::vector<double> layer(n * k);
  for (int64_t i = 0; i < n * k; ++i)
    layer[i] = back[i] + delta[i];
  out.error = relativeError(w, layer);
  return out;
}

} // namespace qtune::import
