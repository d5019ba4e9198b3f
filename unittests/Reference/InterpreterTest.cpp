//===- InterpreterTest.cpp - reference interpreter against hand-written math ===//
//
// Each test builds qtune IR, runs it on the interpreter and compares with the
// same computation written out directly here (explicit bit extraction and loops,
// no format interface), so the two cannot share a mistake.
//
//===----------------------------------------------------------------------===//

#include "qtune/Reference/Interpreter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Parser/Parser.h"
#include "qtune/Dialect/QTune/IR/QTuneDialect.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace mlir;
using qtune::HostTensor;

namespace {

class InterpreterTest : public ::testing::Test {
protected:
  InterpreterTest() {
    registry.insert<qtune::QTuneDialect, func::FuncDialect, arith::ArithDialect,
                    tensor::TensorDialect>();
    context = std::make_unique<MLIRContext>(registry);
  }

  std::vector<HostTensor> run(const std::string &source,
                              const std::vector<HostTensor> &args) {
    module = parseSourceString<ModuleOp>(source, context.get());
    EXPECT_TRUE(module) << source;
    if (!module)
      return {};
    auto func = *module->getOps<func::FuncOp>().begin();
    FailureOr<std::vector<HostTensor>> out = qtune::ref::run(func, args);
    EXPECT_TRUE(succeeded(out));
    return succeeded(out) ? *out : std::vector<HostTensor>{};
  }

  /// Runs the first function of `source`, which must fail; its diagnostics.
  std::string runError(const std::string &source,
                       const std::vector<HostTensor> &args) {
    module = parseSourceString<ModuleOp>(source, context.get());
    EXPECT_TRUE(module) << source;
    if (!module)
      return {};
    std::string diagnostics;
    ScopedDiagnosticHandler handler(context.get(), [&](Diagnostic &d) {
      diagnostics += d.str();
      return success();
    });
    auto func = *module->getOps<func::FuncOp>().begin();
    EXPECT_TRUE(failed(qtune::ref::run(func, args)));
    return diagnostics;
  }

  HostTensor random(std::vector<int64_t> shape, double lo = -1, double hi = 1) {
    HostTensor t(std::move(shape));
    for (double &v : t.data)
      v = std::uniform_real_distribution<double>(lo, hi)(rng);
    return t;
  }

  DialectRegistry registry;
  std::unique_ptr<MLIRContext> context;
  OwningOpRef<ModuleOp> module;
  std::mt19937_64 rng{1234};
};

// Random 4-bit codes packed 8 per word, low nibble first.
struct Codes4 {
  int64_t n, k;
  std::vector<int> q; // n × k
  HostTensor words;   // n × k/8
};

Codes4 randomCodes4(int64_t n, int64_t k, std::mt19937_64 &rng) {
  Codes4 c{n, k, std::vector<int>(n * k), HostTensor({n, k / 8})};
  for (int64_t r = 0; r < n; ++r)
    for (int64_t w = 0; w < k / 8; ++w) {
      uint32_t word = 0;
      for (int j = 0; j < 8; ++j) {
        int q = rng() % 16;
        c.q[r * k + w * 8 + j] = q;
        word |= uint32_t(q) << (4 * j);
      }
      c.words.data[r * (k / 8) + w] = word;
    }
  return c;
}

constexpr const char *kLayer = R"mlir(
!w = !qtune.qweight<16x64, #qtune.uniform<bits = 4, group = 32, scale_type = f32>>
func.func @layer(%x: tensor<3x5x64xf32>, %codes: tensor<16x8xi32>,
                 %s: tensor<16x2xf32>, %z: tensor<16x2xf32>, %bias: tensor<16xf32>,
                 %a: tensor<4x64xf32>, %b: tensor<16x4xf32>) -> tensor<3x5x16xf32> {
  %w = qtune.qweight %codes, %s, %z : tensor<16x8xi32>, tensor<16x2xf32>, tensor<16x2xf32> -> !w
  %y = qtune.linear %x, %w, %bias : tensor<3x5x64xf32>, !w, tensor<16xf32> -> tensor<3x5x16xf32>
  %d = qtune.lora %x, %a, %b {alpha = 8.0 : f64, rank = 4 : i64}
      : tensor<3x5x64xf32>, tensor<4x64xf32>, tensor<16x4xf32> -> tensor<3x5x16xf32>
  %r = arith.addf %y, %d : tensor<3x5x16xf32>
  return %r : tensor<3x5x16xf32>
}
)mlir";

TEST_F(InterpreterTest, QuantizedLinearPlusLoraMatchesDirectComputation) {
  const int64_t M = 15, N = 16, K = 64, R = 4, G = 32;
  HostTensor x = random({3, 5, K});
  Codes4 codes = randomCodes4(N, K, rng);
  HostTensor s = random({N, K / G}, 0.01, 0.1), z = random({N, K / G}, 0, 15);
  HostTensor bias = random({N}), a = random({R, K}), b = random({N, R});
  std::vector<HostTensor> out =
      run(kLayer, {x, codes.words, s, z, bias, a, b});
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].shape, (std::vector<int64_t>{3, 5, N}));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double base = bias.data[n];
      for (int64_t k = 0; k < K; ++k) {
        double w = s.data[n * 2 + k / G] * (codes.q[n * K + k] - z.data[n * 2 + k / G]);
        base += x.data[m * K + k] * w;
      }
      double lora = 0;
      for (int64_t r = 0; r < R; ++r) {
        double xa = 0;
        for (int64_t k = 0; k < K; ++k)
          xa += x.data[m * K + k] * a.data[r * K + k];
        lora += xa * b.data[n * R + r];
      }
      EXPECT_NEAR(out[0].data[m * N + n], base + (8.0 / R) * lora, 1e-12)
          << "at m=" << m << " n=" << n;
    }
}

constexpr const char *kPeqa = R"mlir(
!w = !qtune.qweight<8x32, #qtune.uniform<bits = 4, group = 16, symmetric = true, scale_type = f32>>
func.func @peqa(%x: tensor<2x32xf32> {qtune.role = #qtune.role<input>},
                %codes: tensor<8x4xi32> {qtune.role = #qtune.role<frozen>},
                %s: tensor<8x2xf32> {qtune.role = #qtune.role<trainable>}) -> tensor<2x8xf32> {
  %w = qtune.qweight scale_only %codes, %s : tensor<8x4xi32>, tensor<8x2xf32> -> !w
  %y = qtune.linear %x, %w : tensor<2x32xf32>, !w -> tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}
)mlir";

// A PEQA layer: the same frozen codes under two sets of task scales.
TEST_F(InterpreterTest, ScaleOnlyLayerSwapsTasksByScales) {
  const int64_t M = 2, N = 8, K = 32, G = 16;
  HostTensor x = random({M, K});
  Codes4 codes = randomCodes4(N, K, rng);
  for (int task = 0; task < 2; ++task) {
    HostTensor s = random({N, K / G}, 0.01, 0.2);
    std::vector<HostTensor> out = run(kPeqa, {x, codes.words, s});
    ASSERT_EQ(out.size(), 1u);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double y = 0;
        for (int64_t k = 0; k < K; ++k)
          y += x.data[m * K + k] * s.data[n * 2 + k / G] * (codes.q[n * K + k] - 8);
        EXPECT_NEAR(out[0].data[m * N + n], y, 1e-12) << "task " << task;
      }
  }
}

TEST_F(InterpreterTest, TruncfRoundsToTheResultType) {
  const char *src = R"mlir(
func.func @t(%x: tensor<3xf32>) -> tensor<3xbf16> {
  %y = arith.truncf %x : tensor<3xf32> to tensor<3xbf16>
  return %y : tensor<3xbf16>
}
)mlir";
  // 1 + 2^-8 is a tie between 1 and 1 + 2^-7 in bf16: rounds to even (1).
  // 1 + 3·2^-9 rounds up to 1 + 2^-7.
  std::vector<HostTensor> out =
      run(src, {HostTensor({3}, {1.0 + std::ldexp(1.0, -8),
                                 1.0 + 3 * std::ldexp(1.0, -9), -2.5})});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data[0], 1.0);
  EXPECT_EQ(out[0].data[1], 1.0 + std::ldexp(1.0, -7));
  EXPECT_EQ(out[0].data[2], -2.5);
}

TEST_F(InterpreterTest, WrongArgumentShapeIsAnError) {
  const char *src = R"mlir(
func.func @t(%x: tensor<3xf32>) -> tensor<3xf32> {
  return %x : tensor<3xf32>
}
)mlir";
  module = parseSourceString<ModuleOp>(src, context.get());
  ASSERT_TRUE(module);
  std::string message;
  ScopedDiagnosticHandler handler(context.get(), [&](Diagnostic &d) {
    message = d.str();
    return success();
  });
  auto func = *module->getOps<func::FuncOp>().begin();
  EXPECT_TRUE(failed(qtune::ref::run(func, {HostTensor({4})})));
  EXPECT_NE(message.find("argument #0 must be shaped like"), std::string::npos)
      << message;
}

} // namespace

namespace {

// Decoder ops on values small enough to write the answers out by hand.
TEST_F(InterpreterTest, KlDivergenceMatchesHandComputedValues) {
  // Row 0: student (0, 0) → q = (1/2, 1/2); teacher (ln 3, 0) → p = (3/4, 1/4):
  // KL = 3/4·ln(3/2) + 1/4·ln(1/2). Row 1: equal logits, KL = 0. Mean of two
  // rows; the gradient (q − p)/2 · g with g = 2.
  std::vector<HostTensor> out = run(R"mlir(
func.func @kl(%s: tensor<2x2xf32>, %t: tensor<2x2xf32>, %g: tensor<f32>) -> (tensor<f32>, tensor<2x2xf32>) {
  %l = qtune.kl_div %s, %t : tensor<2x2xf32>, tensor<2x2xf32> -> tensor<f32>
  %d = qtune.kl_div_grad %s, %t, %g : tensor<2x2xf32>, tensor<2x2xf32>, tensor<f32> -> tensor<2x2xf32>
  return %l, %d : tensor<f32>, tensor<2x2xf32>
}
)mlir",
                                    {HostTensor({2, 2}, {0, 0, 1, -1}),
                                     HostTensor({2, 2}, {std::log(3.0), 0, 1, -1}),
                                     HostTensor({}, 2.0)});
  ASSERT_EQ(out.size(), 2u);
  double kl = 0.75 * std::log(1.5) + 0.25 * std::log(0.5);
  EXPECT_NEAR(out[0].data[0], kl / 2, 1e-12);
  std::vector<double> grad{(0.5 - 0.75) / 2 * 2, (0.5 - 0.25) / 2 * 2, 0, 0};
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(out[1].data[i], grad[i], 1e-12) << i;
}

TEST_F(InterpreterTest, DecoderOpsMatchHandComputedValues) {
  std::vector<HostTensor> out = run(R"mlir(
func.func @ops(%table: tensor<3x2xf32>, %w: tensor<2xf32>, %x: tensor<1x2x2xf32>,
               %q: tensor<1x2x1xf32>, %k: tensor<1x2x1xf32>, %v: tensor<1x2x1xf32>,
               %g: tensor<2xf32>, %u: tensor<2xf32>)
    -> (tensor<2x2xf32>, tensor<1x2x2xf32>, tensor<1x2x2xf32>, tensor<1x2x1xf32>,
        tensor<1x1x2xf32>, tensor<2xf32>) {
  %ids = arith.constant dense<[2, 0]> : tensor<2xi32>
  %e = qtune.embedding %table, %ids : tensor<3x2xf32>, tensor<2xi32> -> tensor<2x2xf32>
  %n = qtune.rms_norm %x, %w {eps = 1.0e-6 : f64} : tensor<1x2x2xf32>, tensor<2xf32> -> tensor<1x2x2xf32>
  %r = qtune.rope %x {head_dim = 2 : i64, theta = 10000.0 : f64} : tensor<1x2x2xf32>
  %o, %lse = qtune.attention %q, %k, %v {heads = 1 : i64, kv_heads = 1 : i64} : tensor<1x2x1xf32>, tensor<1x2x1xf32>, tensor<1x2x1xf32> -> tensor<1x2x1xf32>, tensor<1x1x2xf32>
  %s = qtune.swiglu %g, %u : tensor<2xf32>
  return %e, %n, %r, %o, %lse, %s : tensor<2x2xf32>, tensor<1x2x2xf32>, tensor<1x2x2xf32>, tensor<1x2x1xf32>, tensor<1x1x2xf32>, tensor<2xf32>
}
)mlir",
                                    {HostTensor({3, 2}, {1, 2, 3, 4, 5, 6}),
                                     HostTensor({2}, {1, 2}),
                                     HostTensor({1, 2, 2}, {3, 4, 1, 0}),
                                     HostTensor({1, 2, 1}, {1, 2}),
                                     HostTensor({1, 2, 1}, {1, 3}),
                                     HostTensor({1, 2, 1}, {10, 20}),
                                     HostTensor({2}, {1, -2}),
                                     HostTensor({2}, {2, 3})});
  ASSERT_EQ(out.size(), 6u);
  // Embedding: rows 2 and 0 of the table.
  EXPECT_EQ(out[0].data, (std::vector<double>{5, 6, 1, 2}));
  // RMSNorm: row (3, 4) has mean square 12.5; row (1, 0) has 0.5.
  double r0 = 1 / std::sqrt(12.5 + 1e-6), r1 = 1 / std::sqrt(0.5 + 1e-6);
  std::vector<double> norm{3 * r0, 8 * r0, 1 * r1, 0};
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(out[1].data[i], norm[i], 1e-12) << i;
  // RoPE: position 0 unchanged; position 1 rotated by 1 radian (f_0 = 1).
  std::vector<double> rot{3, 4, std::cos(1.0), std::sin(1.0)};
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(out[2].data[i], rot[i], 1e-12) << i;
  // Causal attention, d = 1, scale 1: query 0 sees key 0 only; query 1 sees
  // scores 2·1 and 2·3.
  double p0 = std::exp(2.0) / (std::exp(2.0) + std::exp(6.0));
  EXPECT_NEAR(out[3].data[0], 10, 1e-12);
  EXPECT_NEAR(out[3].data[1], p0 * 10 + (1 - p0) * 20, 1e-12);
  EXPECT_NEAR(out[4].data[0], 1.0, 1e-12);
  EXPECT_NEAR(out[4].data[1], std::log(std::exp(2.0) + std::exp(6.0)), 1e-12);
  // SwiGLU: silu(1)·2 and silu(−2)·3.
  auto silu = [](double z) { return z / (1 + std::exp(-z)); };
  EXPECT_NEAR(out[5].data[0], silu(1) * 2, 1e-12);
  EXPECT_NEAR(out[5].data[1], silu(-2) * 3, 1e-12);
}

TEST_F(InterpreterTest, AttentionWithSegmentsIsAttentionPerDocument) {
  // Two packed documents (positions 0-1 and 2-4) give, causal or not, what
  // each document gives alone.
  HostTensor q = random({1, 5, 4}), k = random({1, 5, 2}), v = random({1, 5, 2});
  for (bool causal : {true, false}) {
    std::string c = causal ? "true" : "false";
    std::vector<HostTensor> packed = run(R"mlir(
func.func @f(%q: tensor<1x5x4xf32>, %k: tensor<1x5x2xf32>, %v: tensor<1x5x2xf32>, %seg: tensor<1x5xi32>) -> (tensor<1x5x4xf32>, tensor<1x2x5xf32>) {
  %o, %lse = qtune.attention %q, %k, %v segments %seg {heads = 2 : i64, kv_heads = 1 : i64, causal = )mlir" + c + R"mlir(} : tensor<1x5x4xf32>, tensor<1x5x2xf32>, tensor<1x5x2xf32>, tensor<1x5xi32> -> tensor<1x5x4xf32>, tensor<1x2x5xf32>
  return %o, %lse : tensor<1x5x4xf32>, tensor<1x2x5xf32>
})mlir",
                                         {q, k, v, HostTensor({1, 5}, {4, 4, 9, 9, 9})});
    for (auto [first, len] : {std::pair<int64_t, int64_t>{0, 2}, {2, 3}}) {
      auto slice = [&](const HostTensor &t) {
        int64_t w = t.shape.back();
        HostTensor s({1, len, w});
        std::copy(t.data.begin() + first * w, t.data.begin() + (first + len) * w,
                  s.data.begin());
        return s;
      };
      std::string n = std::to_string(len);
      std::vector<HostTensor> alone = run(
          "func.func @f(%q: tensor<1x" + n + "x4xf32>, %k: tensor<1x" + n +
              "x2xf32>, %v: tensor<1x" + n + "x2xf32>) -> (tensor<1x" + n +
              "x4xf32>, tensor<1x2x" + n + "xf32>) {\n"
              "  %o, %lse = qtune.attention %q, %k, %v {heads = 2 : i64, "
              "kv_heads = 1 : i64, causal = " + c + "} : tensor<1x" + n +
              "x4xf32>, tensor<1x" + n + "x2xf32>, tensor<1x" + n +
              "x2xf32> -> tensor<1x" + n + "x4xf32>, tensor<1x2x" + n +
              "xf32>\n  return %o, %lse : tensor<1x" + n +
              "x4xf32>, tensor<1x2x" + n + "xf32>\n}",
          {slice(q), slice(k), slice(v)});
      for (int64_t i = 0; i < len * 4; ++i)
        EXPECT_NEAR(packed[0].data[first * 4 + i], alone[0].data[i], 1e-12)
            << "o, causal " << causal << ", position " << first + i / 4;
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t i = 0; i < len; ++i)
          EXPECT_NEAR(packed[1].data[h * 5 + first + i], alone[1].data[h * len + i],
                      1e-12)
              << "lse, causal " << causal;
    }
  }
}

TEST_F(InterpreterTest, DecreasingSegmentIdsAreAnError) {
  std::string diagnostics = runError(R"mlir(
func.func @f(%q: tensor<1x3x2xf32>, %seg: tensor<1x3xi32>) -> tensor<1x3x2xf32> {
  %o, %lse = qtune.attention %q, %q, %q segments %seg {heads = 1 : i64, kv_heads = 1 : i64} : tensor<1x3x2xf32>, tensor<1x3x2xf32>, tensor<1x3x2xf32>, tensor<1x3xi32> -> tensor<1x3x2xf32>, tensor<1x1x3xf32>
  return %o : tensor<1x3x2xf32>
})mlir",
                                     {HostTensor({1, 3, 2}), HostTensor({1, 3}, {1, 2, 1})});
  EXPECT_NE(diagnostics.find("segment ids must be nondecreasing along the "
                             "sequence, got 2 then 1 at position 2"),
            std::string::npos)
      << diagnostics;
}

TEST_F(InterpreterTest, TokenIdOutsideTheVocabularyIsAnError) {
  std::string diagnostics = runError(R"mlir(
func.func @e(%table: tensor<3x2xf32>, %ids: tensor<2xi32>) -> tensor<2x2xf32> {
  %e = qtune.embedding %table, %ids : tensor<3x2xf32>, tensor<2xi32> -> tensor<2x2xf32>
  return %e : tensor<2x2xf32>
})mlir",
                                     {HostTensor({3, 2}), HostTensor({2}, {1, 3})});
  EXPECT_NE(diagnostics.find("token id 3 at position 1 is outside [0, 3)"),
            std::string::npos)
      << diagnostics;
}

} // namespace
