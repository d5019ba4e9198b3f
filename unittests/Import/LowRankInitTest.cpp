//===- LowRankInitTest.cpp - LoftQ initialization and truncated SVD --------===//
//
// Oracles: matrices of known singular values built from orthonormal cosine
// bases; the full spectrum of an exact SVD for the optimal rank-r error; and
// weights whose round-to-nearest residual is exactly rank one by construction.
//
//===----------------------------------------------------------------------===//

#include "qtune/Dialect/QTune/IR/QTuneAttrs.h"
#include "qtune/Dialect/QTune/IR/QTuneDialect.h"
#include "qtune/Import/LowRankInit.h"

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/MLIRContext.h"

#include <Eigen/Dense>
#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace qtune;
using namespace qtune::import;

namespace {

/// Orthonormal DCT-II basis vector i of length n.
std::vector<double> cosineBasis(int64_t n, int64_t i) {
  std::vector<double> v(n);
  double norm = std::sqrt((i == 0 ? 1.0 : 2.0) / double(n));
  for (int64_t j = 0; j < n; ++j)
    v[j] = norm * std::cos(M_PI * (j + 0.5) * double(i) / double(n));
  return v;
}

double frobenius(const std::vector<double> &m) {
  double s = 0;
  for (double v : m)
    s += v * v;
  return std::sqrt(s);
}

TEST(TruncatedSvdTest, RecoversKnownSingularValues) {
  // M = 5·u1·v1ᵀ + 3·u2·v2ᵀ + 1·u3·v3ᵀ: rank 3, singular values 5, 3, 1.
  int64_t rows = 48, cols = 80;
  const double sigma[3] = {5, 3, 1};
  std::vector<double> m(rows * cols, 0.0);
  for (int64_t t = 0; t < 3; ++t) {
    std::vector<double> u = cosineBasis(rows, t + 1), v = cosineBasis(cols, 2 * t + 1);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j)
        m[i * cols + j] += sigma[t] * u[i] * v[j];
  }
  TruncatedSvd svd = truncatedSvd(m, rows, cols, 3, 7);
  for (int64_t t = 0; t < 3; ++t)
    EXPECT_NEAR(svd.sigma[t], sigma[t], 1e-10) << "singular value " << t;
  std::vector<double> back(rows * cols, 0.0);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t t = 0; t < 3; ++t)
        back[i * cols + j] += svd.u[i * 3 + t] * svd.sigma[t] * svd.v[j * 3 + t];
  for (size_t i = 0; i < m.size(); ++i)
    ASSERT_NEAR(back[i], m[i], 1e-10);
}

TEST(TruncatedSvdTest, NearOptimalOnAGenericMatrix) {
  // Eckart–Young: the best rank-r error is √(Σ_{i>r} σ_i²), from the full
  // spectrum of an exact SVD of the whole matrix.
  int64_t rows = 64, cols = 96, rank = 6;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal;
  std::vector<double> m(rows * cols);
  // Decaying spectrum, as a quantization residual's leading part.
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      m[i * cols + j] = normal(rng) / (1.0 + 0.2 * double(j % 17));
  Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>
      mm(m.data(), rows, cols);
  Eigen::JacobiSVD<Eigen::MatrixXd> full(mm);
  double optimal = 0;
  for (int64_t i = rank; i < full.singularValues().size(); ++i)
    optimal += full.singularValues()(i) * full.singularValues()(i);
  optimal = std::sqrt(optimal);

  TruncatedSvd svd = truncatedSvd(m, rows, cols, rank, 11);
  std::vector<double> residual = m;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t t = 0; t < rank; ++t)
        residual[i * cols + j] -= svd.u[i * rank + t] * svd.sigma[t] * svd.v[j * rank + t];
  EXPECT_GE(frobenius(residual), optimal * (1 - 1e-9));
  EXPECT_LE(frobenius(residual), optimal * 1.01);
}

class LowRankInitTest : public ::testing::Test {
protected:
  LowRankInitTest() { ctx.loadDialect<QTuneDialect>(); }
  QuantFormatAttrInterface asymmetricPerChannel(unsigned bits) {
    return UniformFormatAttr::get(&ctx, bits, /*group=*/0, /*symmetric=*/false,
                                  mlir::Float32Type::get(&ctx));
  }
  mlir::MLIRContext ctx;
};

TEST_F(LowRankInitTest, FitsARankOneResidualExactly) {
  // D: on the 4-bit min/max grid of its rows (step 1, zero point 8), each
  // row's maximum 7 in column 0 and minimum −8 in column 1 (codes 15 and 0),
  // so quantizing D + E
  // keeps D's scales, zeros and codes while every |E| stays below half a
  // step. E = ε·u·vᵀ with v(0) = v(1) = 0: the residual is E itself, rank
  // one, and a rank-1 LoftQ adapter must reproduce it up to its bf16
  // rounding.
  int64_t n = 32, k = 64;
  QuantFormatAttrInterface format = asymmetricPerChannel(4);
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> uni(-1, 1);
  std::vector<double> w0(n * k);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j)
      w0[i * k + j] = j == 0 ? 7.0 : j == 1 ? -8.0 : -0.5 + 6.5 * uni(rng);
  std::vector<double> d(n * k);
  format.dequantize(n, k, format.quantize(n, k, w0, {}), d);
  std::vector<double> u = cosineBasis(n, 1), v = cosineBasis(k, 3);
  v[0] = v[1] = 0;
  // |u(i)| ≤ √(2/32), |v(j)| ≤ √(2/64): |E| ≤ 5 / 22.6 ≈ 0.22, below half
  // a step (1).
  double eps = 5.0;
  std::vector<double> w(n * k);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j)
      w[i * k + j] = d[i * k + j] + eps * u[i] * v[j];

  double scale = 16.0 / 1.0; // alpha 16, rank 1
  LowRankInit init = lowRankInit(format, n, k, w, 1, scale, 1, 9);
  // The codes are D's: round-to-nearest alone leaves exactly E.
  std::vector<double> back(n * k);
  format.dequantize(n, k, init.components, back);
  for (int64_t i = 0; i < n * k; ++i)
    ASSERT_NEAR(back[i], d[i], 1e-12) << "element " << i;
  double eNorm = 0, wNorm = frobenius(w);
  for (int64_t i = 0; i < n * k; ++i)
    eNorm += (w[i] - d[i]) * (w[i] - d[i]);
  EXPECT_NEAR(init.rtnError, std::sqrt(eNorm) / wNorm, 1e-12);
  // With the adapter: only bf16 rounding of A and B remains (2⁻⁹ relative).
  EXPECT_LT(init.error, init.rtnError * 1e-2);
  // The reported error is the layer's: recompute it from the factors.
  std::vector<double> layer(n * k);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j)
      layer[i * k + j] = back[i * k + j] + scale * init.b[i] * init.a[j];
  double num = 0;
  for (int64_t i = 0; i < n * k; ++i)
    num += (layer[i] - w[i]) * (layer[i] - w[i]);
  EXPECT_NEAR(init.error, std::sqrt(num) / wNorm, 1e-12);
}

TEST_F(LowRankInitTest, AdapterReducesTheErrorOfEveryRound) {
  // A 2-bit weight whose residual is far from low rank: the adapter helps
  // less. Whatever the rounds, the initialized layer is closer to W than
  // round-to-nearest; LoftQ promises no monotone rounds, but on this weight
  // the second round refits both parts for the better.
  int64_t n = 48, k = 64, rank = 8;
  QuantFormatAttrInterface format =
      UniformFormatAttr::get(&ctx, 2, 32, false, mlir::BFloat16Type::get(&ctx));
  std::mt19937_64 rng(1);
  std::normal_distribution<double> normal;
  std::vector<double> w(n * k);
  for (double &x : w)
    x = normal(rng);
  double previous = 0;
  for (int64_t rounds : {1, 2, 4}) {
    LowRankInit init = lowRankInit(format, n, k, w, rank, 2.0, rounds, 4);
    EXPECT_LT(init.error, init.rtnError) << rounds << " round(s)";
    if (rounds == 2)
      EXPECT_LT(init.error, previous) << rounds << " round(s)";
    previous = init.error;
  }
}

} // namespace
