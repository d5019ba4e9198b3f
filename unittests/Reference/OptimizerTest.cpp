//===- OptimizerTest.cpp - optimizer steps and training in the interpreter -===//
//
// The interpreter's AdamW and Lion (f32 and int8 momentum) against the update
// rules written out here, and a whole training loop: qtune-autodiff +
// qtune-optimizer, iterated by the interpreter, must fit a layer-level
// regression (a float teacher, a quantized student with LoRA and PEQA scales).
//
//===----------------------------------------------------------------------===//

#include "qtune/Reference/Interpreter.h"
#include "qtune/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "qtune/Dialect/QTune/IR/QTuneOps.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace mlir;
using qtune::HostTensor;

namespace {

class OptimizerTest : public ::testing::Test {
protected:
  OptimizerTest() {
    registry.insert<qtune::QTuneDialect, func::FuncDialect, arith::ArithDialect,
                    tensor::TensorDialect>();
    context = std::make_unique<MLIRContext>(registry);
  }
  func::FuncOp parse(const std::string &src, StringRef name) {
    module = parseSourceString<ModuleOp>(src, context.get());
    return module ? module->lookupSymbol<func::FuncOp>(name) : func::FuncOp();
  }
  DialectRegistry registry;
  std::unique_ptr<MLIRContext> context;
  OwningOpRef<ModuleOp> module;
};

TEST_F(OptimizerTest, AdamWStepMatchesTheUpdateRule) {
  auto f = parse(R"mlir(
func.func @step(%p: tensor<3xf32>, %g: tensor<3xf32>, %m: tensor<3xf32>, %v: tensor<3xf32>,
                %lr: tensor<f32>, %t: tensor<f32>) -> (tensor<3xf32>, tensor<3xf32>, tensor<3xf32>) {
  %np, %nm, %nv = qtune.adamw %p, %g, %m, %v, %lr, %t {beta1 = 0.9 : f64, beta2 = 0.99 : f64, eps = 1.0e-8 : f64, weight_decay = 0.1 : f64}
      : tensor<3xf32>, tensor<3xf32>, tensor<3xf32>, tensor<3xf32>, tensor<f32>, tensor<f32>
  return %np, %nm, %nv : tensor<3xf32>, tensor<3xf32>, tensor<3xf32>
})mlir", "step");
  ASSERT_TRUE(f);
  HostTensor p({3}, {1.0, -2.0, 0.5}), g({3}, {0.5, 0.25, -1.0}),
      m({3}, {0.0, 0.1, 0.2}), v({3}, {0.0, 0.01, 0.04});
  double lr = 0.01, t = 3;
  auto out = qtune::ref::run(f, {p, g, m, v, HostTensor({}, lr), HostTensor({}, t)});
  ASSERT_TRUE(succeeded(out));
  for (int i = 0; i < 3; ++i) {
    double mi = 0.9 * m.data[i] + 0.1 * g.data[i];
    double vi = 0.99 * v.data[i] + 0.01 * g.data[i] * g.data[i];
    double mhat = mi / (1 - std::pow(0.9, t)), vhat = vi / (1 - std::pow(0.99, t));
    double pi = p.data[i] - lr * (mhat / (std::sqrt(vhat) + 1e-8) + 0.1 * p.data[i]);
    // The parameter is stored in its own type (f32) between steps.
    EXPECT_EQ((*out)[0].data[i], double(float(pi)));
    EXPECT_NEAR((*out)[1].data[i], mi, 1e-7); // moments stored as f32
    EXPECT_NEAR((*out)[2].data[i], vi, 1e-7);
  }
}

// if_finite(%loss): a non-finite loss leaves parameter and states as they
// were (a skipped step); a finite one updates as without the guard.
TEST_F(OptimizerTest, GuardedStepsChangeNothingWhenTheLossIsNotFinite) {
  auto f = parse(R"mlir(
func.func @step(%p: tensor<2xf32>, %g: tensor<2xf32>, %m: tensor<2xf32>, %v: tensor<2xf32>,
                %lr: tensor<f32>, %t: tensor<f32>, %loss: tensor<f32>, %mi8: tensor<2xi8>, %s: tensor<1xf32>)
    -> (tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xi8>, tensor<1xf32>) {
  %np, %nm, %nv = qtune.adamw %p, %g, %m, %v, %lr, %t if_finite(%loss : tensor<f32>)
      : tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<f32>, tensor<f32>
  %lp, %lm, %ls = qtune.lion %p, %g, %mi8 scales(%s : tensor<1xf32>), %lr if_finite(%loss : tensor<f32>)
      {momentum = #qtune.state<int8>, block = 2 : i64}
      : tensor<2xf32>, tensor<2xf32>, tensor<2xi8>, tensor<f32> -> tensor<2xf32>, tensor<2xi8>, tensor<1xf32>
  return %np, %nm, %nv, %lp, %lm, %ls : tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xi8>, tensor<1xf32>
})mlir", "step");
  ASSERT_TRUE(f);
  HostTensor p({2}, {1.0, -2.0}), g({2}, {0.5, -0.25}), m({2}, {0.1, 0.2}),
      v({2}, {0.01, 0.04}), mi8({2}, {10, -20}), s({1}, {0.01});
  for (double loss : {std::nan(""), double(INFINITY), -double(INFINITY)}) {
    auto out = qtune::ref::run(f, {p, g, m, v, HostTensor({}, 0.1), HostTensor({}, 2),
                                   HostTensor({}, loss), mi8, s});
    ASSERT_TRUE(succeeded(out));
    EXPECT_EQ((*out)[0].data, p.data) << loss;
    EXPECT_EQ((*out)[1].data, m.data);
    EXPECT_EQ((*out)[2].data, v.data);
    EXPECT_EQ((*out)[3].data, p.data);
    EXPECT_EQ((*out)[4].data, mi8.data);
    EXPECT_EQ((*out)[5].data, s.data);
  }
  auto out = qtune::ref::run(f, {p, g, m, v, HostTensor({}, 0.1), HostTensor({}, 2),
                                 HostTensor({}, 3.5), mi8, s});
  ASSERT_TRUE(succeeded(out));
  EXPECT_NE((*out)[0].data, p.data);
  EXPECT_NE((*out)[3].data, p.data);
  EXPECT_NE((*out)[4].data, mi8.data);
}

TEST_F(OptimizerTest, LionWithInt8MomentumMatchesTheUpdateRule) {
  auto f = parse(R"mlir(
func.func @step(%p: tensor<4xf32>, %g: tensor<4xf32>, %m: tensor<4xi8>, %s: tensor<2xf32>,
                %lr: tensor<f32>) -> (tensor<4xf32>, tensor<4xi8>, tensor<2xf32>) {
  %np, %nm, %ns = qtune.lion %p, %g, %m scales(%s : tensor<2xf32>), %lr {beta1 = 0.9 : f64, beta2 = 0.99 : f64, momentum = #qtune.state<int8>, block = 2 : i64}
      : tensor<4xf32>, tensor<4xf32>, tensor<4xi8>, tensor<f32> -> tensor<4xf32>, tensor<4xi8>, tensor<2xf32>
  return %np, %nm, %ns : tensor<4xf32>, tensor<4xi8>, tensor<2xf32>
})mlir", "step");
  ASSERT_TRUE(f);
  HostTensor p({4}, {1.0, 1.0, 1.0, 1.0}), g({4}, {0.5, -0.5, 0.0, 2.0});
  HostTensor codes({4}, {127.0, -64.0, 10.0, 0.0}), scales({2}, {0.01, 0.02});
  auto out = qtune::ref::run(f, {p, g, codes, scales, HostTensor({}, 0.1)});
  ASSERT_TRUE(succeeded(out));
  double newM[4];
  for (int i = 0; i < 4; ++i) {
    double m = codes.data[i] * scales.data[i / 2];
    double c = 0.9 * m + 0.1 * g.data[i];
    double sign = c > 0 ? 1 : (c < 0 ? -1 : 0);
    EXPECT_EQ((*out)[0].data[i], double(float(p.data[i] - 0.1 * sign))) << i;
    newM[i] = 0.99 * m + 0.01 * g.data[i];
  }
  for (int b = 0; b < 2; ++b) {
    double absmax = std::max(std::fabs(newM[2 * b]), std::fabs(newM[2 * b + 1]));
    EXPECT_NEAR((*out)[2].data[b], absmax / 127, 1e-8);
    for (int i = 2 * b; i < 2 * b + 2; ++i) {
      // Requantized within half a step, and the block's largest value is ±127.
      EXPECT_NEAR((*out)[1].data[i] * (*out)[2].data[b], newM[i],
                  0.5 * absmax / 127 + 1e-9);
      EXPECT_LE(std::fabs((*out)[1].data[i]), 127.0);
    }
  }
}

// QFT: one fused Lion step on 8-bit symmetric per-channel codes (w = s·(q −
// 128)), written out element by element: dW = gᵀx, the step moves each code
// by lr/s rounded, the int8 momentum is requantized per block of 4.
TEST_F(OptimizerTest, QftLionStepMatchesTheUpdateRule) {
  auto f = parse(R"mlir(
!q8 = !qtune.qweight<2x4, #qtune.uniform<bits = 8, group = 0, symmetric = true, scale_type = f32>>
func.func @step(%g: tensor<3x2xf32>, %x: tensor<3x4xf32>, %c: tensor<2x1xi32>,
                %s: tensor<2x1xf32>, %m: tensor<2x4xi8>, %ms: tensor<2xf32>,
                %lr: tensor<f32>) -> (tensor<2x1xi32>, tensor<2x4xi8>, tensor<2xf32>) {
  %nc, %nm, %ns = qtune.qft_lion %g, %x, %c, params(%s : tensor<2x1xf32>), %m, %ms, %lr
      {format = #qtune.uniform<bits = 8, group = 0, symmetric = true, scale_type = f32>, block = 4 : i64, weight_decay = 0.5 : f64}
      : tensor<3x2xf32>, tensor<3x4xf32>, tensor<2x1xi32>, tensor<2x4xi8>, tensor<2xf32>, tensor<f32>
      -> tensor<2x1xi32>, tensor<2x4xi8>, tensor<2xf32>
  return %nc, %nm, %ns : tensor<2x1xi32>, tensor<2x4xi8>, tensor<2xf32>
})mlir", "step");
  ASSERT_TRUE(f);
  HostTensor g({3, 2}, {0.5, -1.0, 0.25, 2.0, -0.75, 0.0});
  HostTensor x({3, 4}, {1.0, -2.0, 0.5, 0.0, 0.25, 1.0, -1.0, 2.0, 3.0, 0.0, 0.5, -0.5});
  // Row 0 codes 130, 120, 128, 255; row 1 codes 0, 140, 129, 127 (bytes
  // little-endian in one word per row).
  uint32_t words[2] = {130u | 120u << 8 | 128u << 16 | 255u << 24,
                       0u | 140u << 8 | 129u << 16 | 127u << 24};
  HostTensor c({2, 1}, {double(words[0]), double(words[1])});
  HostTensor s({2, 1}, {0.25, 0.5});
  HostTensor m({2, 4}, {10, -20, 0, 127, -127, 5, 0, 64});
  HostTensor ms({2}, {0.01, 0.02});
  double lr = 0.3, wd = 0.5, b1 = 0.9, b2 = 0.99;
  auto out = qtune::ref::run(f, {g, x, c, s, m, ms, HostTensor({}, lr)});
  ASSERT_TRUE(succeeded(out));
  for (int r = 0; r < 2; ++r) {
    double newM[4], absmax = 0;
    for (int k = 0; k < 4; ++k) {
      double dw = 0;
      for (int i = 0; i < 3; ++i)
        dw += g.data[i * 2 + r] * x.data[i * 4 + k];
      double mOld = m.data[r * 4 + k] * ms.data[r];
      double cdir = b1 * mOld + (1 - b1) * dw;
      double sign = cdir > 0 ? 1 : (cdir < 0 ? -1 : 0);
      double q = (words[r] >> (8 * k)) & 255u;
      double w = s.data[r] * (q - 128);
      w -= lr * (sign + wd * w);
      double want = std::clamp(std::nearbyint(w / s.data[r] + 128), 0.0, 255.0);
      uint32_t got = uint32_t(int64_t((*out)[0].data[r]) & 0xFFFFFFFF);
      EXPECT_EQ(double((got >> (8 * k)) & 255u), want) << r << "," << k;
      newM[k] = b2 * mOld + (1 - b2) * dw;
      absmax = std::max(absmax, std::fabs(newM[k]));
    }
    EXPECT_NEAR((*out)[2].data[r], absmax / 127, 1e-8);
    for (int k = 0; k < 4; ++k)
      EXPECT_NEAR((*out)[1].data[r * 4 + k] * (*out)[2].data[r], newM[k],
                  0.5 * absmax / 127 + 1e-9);
  }
}

constexpr const char *kRegression = R"mlir(
!w = !qtune.qweight<8x16, #qtune.uniform<bits = 4, group = 8, scale_type = f32>>
func.func @loss(%x: tensor<32x16xf32> {qtune.role = #qtune.role<input>},
                %c: tensor<8x2xi32> {qtune.role = #qtune.role<frozen>},
                %s: tensor<8x2xf32> {qtune.name = "scales", qtune.role = #qtune.role<trainable>},
                %z: tensor<8x2xf32> {qtune.role = #qtune.role<frozen>},
                %a: tensor<4x16xf32> {qtune.name = "A", qtune.role = #qtune.role<trainable>},
                %b: tensor<8x4xf32> {qtune.name = "B", qtune.role = #qtune.role<trainable>},
                %teacher: tensor<8x16xf32> {qtune.role = #qtune.role<frozen>}) -> tensor<f32> {
  %t = qtune.linear %x, %teacher : tensor<32x16xf32>, tensor<8x16xf32> -> tensor<32x8xf32>
  %w = qtune.qweight scale_only %c, %s, %z : tensor<8x2xi32>, tensor<8x2xf32>, tensor<8x2xf32> -> !w
  %y = qtune.linear %x, %w : tensor<32x16xf32>, !w -> tensor<32x8xf32>
  %d = qtune.lora %x, %a, %b {alpha = 8.0 : f64, rank = 4 : i64} : tensor<32x16xf32>, tensor<4x16xf32>, tensor<8x4xf32> -> tensor<32x8xf32>
  %r = arith.addf %y, %d : tensor<32x8xf32>
  %l = qtune.mse_loss %r, %t : tensor<32x8xf32>, tensor<32x8xf32> -> tensor<f32>
  return %l : tensor<f32>
}
)mlir";

// Trains a quantized student (4-bit RTN of a perturbed teacher) with LoRA and
// PEQA scales towards the float teacher for 150 steps of the compiled
// train_step, carried through the interpreter with the in-place updates its
// results declare.
void trainRegression(MLIRContext *ctx,
                     const qtune::QTuneOptimizerOptions &options,
                     double maxRatio) {
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(kRegression, ctx);
  ASSERT_TRUE(module);
  PassManager pm(ctx);
  pm.addPass(qtune::createQTuneAutodiff());
  pm.addPass(qtune::createQTuneOptimizer(options));
  ASSERT_TRUE(succeeded(pm.run(*module)));
  bool adamw = options.optimizer == "adamw";
  auto step = module->lookupSymbol<func::FuncOp>("loss_train_step");
  ASSERT_TRUE(step);

  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal(0, 1);
  const int64_t N = 8, K = 16;
  HostTensor teacher({N, K});
  for (double &v : teacher.data)
    v = normal(rng) * 0.5;
  // Student: 4-bit asymmetric RTN (group 8) of a perturbed teacher.
  HostTensor codes({N, 2}), scales({N, 2}), zeros({N, 2});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < 2; ++g) {
      double mn = 0, mx = 0;
      for (int64_t k = 0; k < 8; ++k) {
        double w = teacher.data[n * K + g * 8 + k];
        mn = std::min(mn, w);
        mx = std::max(mx, w);
      }
      double s = (mx - mn) / 15 * 1.3; // a deliberately poor scale
      double z = std::nearbyint(-mn / s);
      scales.data[n * 2 + g] = s;
      zeros.data[n * 2 + g] = z;
      uint32_t word = 0;
      for (int64_t k = 0; k < 8; ++k) {
        double q = std::clamp(std::nearbyint(teacher.data[n * K + g * 8 + k] / s + z), 0.0, 15.0);
        word |= uint32_t(q) << (4 * k);
      }
      codes.data[n * 2 + g] = word;
    }
  HostTensor a({4, K}), b({N, 4}); // B = 0: the adapter starts as identity
  for (double &v : a.data)
    v = normal(rng) * 0.25;
  HostTensor x({32, K});
  for (double &v : x.data)
    v = normal(rng);

  std::vector<HostTensor> args = {x, codes, scales, zeros, a, b, teacher};
  for (unsigned i = args.size(); i < step.getNumArguments(); ++i) {
    auto t = cast<RankedTensorType>(step.getArgumentTypes()[i]);
    args.emplace_back(std::vector<int64_t>(t.getShape().begin(), t.getShape().end()));
  }
  auto named = [&](StringRef n) -> HostTensor & {
    for (unsigned i = 0; i < step.getNumArguments(); ++i)
      if (auto s = step.getArgAttrOfType<StringAttr>(i, "qtune.name"); s && s.getValue() == n)
        return args[i];
    ADD_FAILURE() << "no argument " << n.str();
    return args[0];
  };
  double first = 0, last = 0;
  for (int it = 1; it <= 150; ++it) {
    named("lr").data = {adamw ? 1e-2 : 2e-3};
    if (adamw)
      named("step").data = {double(it)};
    auto out = qtune::ref::run(step, args);
    ASSERT_TRUE(succeeded(out));
    double loss = (*out)[0].data[0];
    ASSERT_TRUE(std::isfinite(loss));
    if (it == 1)
      first = loss;
    last = loss;
    for (unsigned r = 1; r < out->size(); ++r) {
      auto upd = step.getResultAttrOfType<IntegerAttr>(r, "qtune.updates");
      ASSERT_TRUE(upd);
      args[upd.getInt()] = (*out)[r];
    }
  }
  EXPECT_LT(last, maxRatio * first) << "loss " << first << " -> " << last;
}

TEST_F(OptimizerTest, AdamWTrainsLoraAndPeqaScales) {
  qtune::QTuneOptimizerOptions options;
  options.optimizer = "adamw";
  trainRegression(context.get(), options, 0.2);
}

TEST_F(OptimizerTest, LionWithInt8MomentumTrains) {
  qtune::QTuneOptimizerOptions options;
  options.optimizer = "lion";
  options.momentum = "int8";
  options.block = 16;
  options.beta2 = 0.99;
  options.maxGradNorm = 10.0;
  trainRegression(context.get(), options, 0.5);
}

} // namespace

namespace {

// Gradient accumulation: two micro-batches of one row through
// small_accumulate, then small_apply with accum_count 2, update the
// parameters as big_train_step does on both rows at once (the MSE's mean over
// two rows is the mean of the two rows' means).
TEST_F(OptimizerTest, AccumulatedMicroBatchesEqualOneBigStep) {
  const char *src = R"mlir(
func.func @big(%x: tensor<2x4xf32> {qtune.name = "x"}, %t: tensor<2x3xf32> {qtune.name = "t"},
               %w: tensor<3x4xf32> {qtune.name = "w", qtune.role = #qtune.role<trainable>}) -> tensor<f32> {
  %y = qtune.linear %x, %w : tensor<2x4xf32>, tensor<3x4xf32> -> tensor<2x3xf32>
  %l = qtune.mse_loss %y, %t : tensor<2x3xf32>, tensor<2x3xf32> -> tensor<f32>
  return %l : tensor<f32>
}
func.func @small(%x: tensor<1x4xf32> {qtune.name = "x"}, %t: tensor<1x3xf32> {qtune.name = "t"},
                 %w: tensor<3x4xf32> {qtune.name = "w", qtune.role = #qtune.role<trainable>}) -> tensor<f32> {
  %y = qtune.linear %x, %w : tensor<1x4xf32>, tensor<3x4xf32> -> tensor<1x3xf32>
  %l = qtune.mse_loss %y, %t : tensor<1x3xf32>, tensor<1x3xf32> -> tensor<f32>
  return %l : tensor<f32>
})mlir";
  module = parseSourceString<ModuleOp>(src, context.get());
  ASSERT_TRUE(module);
  PassManager pm(context.get());
  pm.addPass(qtune::createQTuneAutodiff());
  pm.addPass(qtune::createQTuneOptimizer());
  ASSERT_TRUE(succeeded(pm.run(*module)));
  auto big = module->lookupSymbol<func::FuncOp>("big_train_step");
  auto acc = module->lookupSymbol<func::FuncOp>("small_accumulate");
  auto apply = module->lookupSymbol<func::FuncOp>("small_apply");
  ASSERT_TRUE(big && acc && apply);

  std::mt19937_64 rng(7);
  auto random = [&](std::vector<int64_t> shape) {
    HostTensor t(std::move(shape));
    for (double &v : t.data)
      v = double(float(std::uniform_real_distribution<double>(-1, 1)(rng)));
    return t;
  };
  HostTensor x = random({2, 4}), t = random({2, 3}), w = random({3, 4});
  HostTensor zeros({3, 4}), lr({}, 0.01), step({}, 1.0);
  auto row = [](const HostTensor &m, int64_t r) {
    int64_t cols = m.shape[1];
    return HostTensor({1, cols}, std::vector<double>(m.data.begin() + r * cols,
                                                     m.data.begin() + (r + 1) * cols));
  };
  // big_train_step(x, t, w, w.m, w.v, lr, step) -> loss, w, w.m, w.v
  auto one = qtune::ref::run(big, {x, t, w, zeros, zeros, lr, step});
  ASSERT_TRUE(succeeded(one));
  // small_accumulate(x, t, w, w.grad_acc) -> loss, w.grad_acc
  HostTensor accumulator = zeros;
  double lossSum = 0;
  for (int64_t r = 0; r < 2; ++r) {
    auto out = qtune::ref::run(acc, {row(x, r), row(t, r), w, accumulator});
    ASSERT_TRUE(succeeded(out));
    lossSum += (*out)[0].data[0];
    accumulator = (*out)[1];
  }
  EXPECT_NEAR(lossSum / 2, (*one)[0].data[0], 1e-7);
  // small_apply(w, w.m, w.v, lr, step, accum_count, w.grad_acc) -> w, w.m, w.v, w.grad_acc
  auto two = qtune::ref::run(apply, {w, zeros, zeros, lr, step, HostTensor({}, 2.0), accumulator});
  ASSERT_TRUE(succeeded(two));
  for (int i = 0; i < 12; ++i) {
    EXPECT_NEAR((*two)[0].data[i], (*one)[1].data[i], 1e-6) << "w " << i;
    EXPECT_NEAR((*two)[1].data[i], (*one)[2].data[i], 1e-7) << "m " << i;
    EXPECT_EQ((*two)[3].data[i], 0.0) << "the accumulator is reset";
  }
}

} // namespace
