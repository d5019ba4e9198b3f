//===- GradientTest.cpp - qtune-autodiff against finite differences ---------===//
//
// For each loss function below, qtune-autodiff builds `<name>_grad`; the
// reference interpreter evaluates it in float64, and every element of every
// gradient is compared with a central finite difference of the loss, also
// evaluated by the interpreter. The two share only the forward semantics.
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

struct Case {
  const char *name;
  const char *source; // defines func @loss
};

// Trainable arguments cover: LoRA A and B, PEQA scales (uniform, asymmetric
// and symmetric), trainable zero points, NF4 absmax, lut tables, a dense
// weight and bias, and both MSE operands; leading batch dimensions included.
const Case kCases[] = {
    {"lora_and_peqa_uniform", R"mlir(
!w = !qtune.qweight<6x8, #qtune.uniform<bits = 4, group = 4, scale_type = f32>>
func.func @loss(%x: tensor<3x8xf32>, %c: tensor<6x1xi32>,
                %s: tensor<6x2xf32> {qtune.role = #qtune.role<trainable>},
                %z: tensor<6x2xf32>,
                %a: tensor<2x8xf32> {qtune.role = #qtune.role<trainable>},
                %b: tensor<6x2xf32> {qtune.role = #qtune.role<trainable>},
                %t: tensor<3x6xf32>) -> tensor<f32> {
  %w = qtune.qweight scale_only %c, %s, %z : tensor<6x1xi32>, tensor<6x2xf32>, tensor<6x2xf32> -> !w
  %y = qtune.linear %x, %w : tensor<3x8xf32>, !w -> tensor<3x6xf32>
  %d = qtune.lora %x, %a, %b {alpha = 4.0 : f64, rank = 2 : i64} : tensor<3x8xf32>, tensor<2x8xf32>, tensor<6x2xf32> -> tensor<3x6xf32>
  %r = arith.addf %y, %d : tensor<3x6xf32>
  %l = qtune.mse_loss %r, %t : tensor<3x6xf32>, tensor<3x6xf32> -> tensor<f32>
  return %l : tensor<f32>
})mlir"},
    {"zeros_and_input_through_two_layers", R"mlir(
!w = !qtune.qweight<5x7, #qtune.uniform<bits = 3, scale_type = f32>>
func.func @loss(%x: tensor<2x2x7xf32> {qtune.role = #qtune.role<trainable>},
                %c: tensor<5x1xi32>,
                %s: tensor<5x1xf32>,
                %z: tensor<5x1xf32> {qtune.role = #qtune.role<trainable>},
                %w2: tensor<3x5xf32> {qtune.role = #qtune.role<trainable>},
                %bias: tensor<3xf32> {qtune.role = #qtune.role<trainable>},
                %t: tensor<2x2x3xf32> {qtune.role = #qtune.role<trainable>}) -> tensor<f32> {
  %w = qtune.qweight %c, %s, %z : tensor<5x1xi32>, tensor<5x1xf32>, tensor<5x1xf32> -> !w
  %h = qtune.linear %x, %w : tensor<2x2x7xf32>, !w -> tensor<2x2x5xf32>
  %y = qtune.linear %h, %w2, %bias : tensor<2x2x5xf32>, tensor<3x5xf32>, tensor<3xf32> -> tensor<2x2x3xf32>
  %l = qtune.mse_loss %y, %t : tensor<2x2x3xf32>, tensor<2x2x3xf32> -> tensor<f32>
  return %l : tensor<f32>
})mlir"},
    {"shared_weight_nf4_absmax", R"mlir(
!w = !qtune.qweight<4x8, #qtune.nf4<block = 4>>
func.func @loss(%x: tensor<2x8xf32>, %c: tensor<4x1xi32>,
                %am: tensor<4x2xf32> {qtune.role = #qtune.role<trainable>},
                %t: tensor<2x4xf32>) -> tensor<f32> {
  %w = qtune.qweight scale_only %c, %am : tensor<4x1xi32>, tensor<4x2xf32> -> !w
  %y1 = qtune.linear %x, %w : tensor<2x8xf32>, !w -> tensor<2x4xf32>
  %x2 = arith.negf %x : tensor<2x8xf32>
  %y2 = qtune.linear %x2, %w : tensor<2x8xf32>, !w -> tensor<2x4xf32>
  %y = arith.subf %y1, %y2 : tensor<2x4xf32>
  %l = qtune.mse_loss %y, %t : tensor<2x4xf32>, tensor<2x4xf32> -> tensor<f32>
  return %l : tensor<f32>
})mlir"},
    {"lut_table_and_double_quant_nf4", R"mlir(
!l = !qtune.qweight<3x8, #qtune.lut<bits = 2, group = 4>>
!n = !qtune.qweight<3x8, #qtune.nf4<block = 4, double_quant = true, dq_block = 1>>
func.func @loss(%x: tensor<2x8xf32>, %c: tensor<3x1xi32>,
                %tab: tensor<3x2x4xf32> {qtune.role = #qtune.role<trainable>},
                %c4: tensor<3x1xi32>, %ac: tensor<3x1xi32>,
                %as: tensor<3x2xf32> {qtune.role = #qtune.role<trainable>},
                %ao: tensor<1xf32> {qtune.role = #qtune.role<trainable>},
                %t: tensor<2x3xf32>) -> tensor<f32> {
  %w = qtune.qweight %c, %tab : tensor<3x1xi32>, tensor<3x2x4xf32> -> !l
  %y1 = qtune.linear %x, %w : tensor<2x8xf32>, !l -> tensor<2x3xf32>
  %v = qtune.qweight %c4, %ac, %as, %ao : tensor<3x1xi32>, tensor<3x1xi32>, tensor<3x2xf32>, tensor<1xf32> -> !n
  %y2 = qtune.linear %x, %v : tensor<2x8xf32>, !n -> tensor<2x3xf32>
  %y = arith.addf %y1, %y2 : tensor<2x3xf32>
  %l = qtune.mse_loss %y, %t : tensor<2x3xf32>, tensor<2x3xf32> -> tensor<f32>
  return %l : tensor<f32>
})mlir"},
    {"cross_entropy_over_lora_logits", R"mlir(
!w = !qtune.qweight<5x8, #qtune.uniform<bits = 4, group = 8, scale_type = f32>>
func.func @loss(%x: tensor<2x3x8xf32>, %c: tensor<5x1xi32>, %s: tensor<5x1xf32>,
                %z: tensor<5x1xf32>,
                %a: tensor<2x8xf32> {qtune.role = #qtune.role<trainable>},
                %b: tensor<5x2xf32> {qtune.role = #qtune.role<trainable>}) -> tensor<f32> {
  %w = qtune.qweight %c, %s, %z : tensor<5x1xi32>, tensor<5x1xf32>, tensor<5x1xf32> -> !w
  %y = qtune.linear %x, %w : tensor<2x3x8xf32>, !w -> tensor<2x3x5xf32>
  %d = qtune.lora %x, %a, %b {alpha = 2.0 : f64, rank = 2 : i64} : tensor<2x3x8xf32>, tensor<2x8xf32>, tensor<5x2xf32> -> tensor<2x3x5xf32>
  %r = arith.addf %y, %d : tensor<2x3x5xf32>
  %labels = arith.constant dense<[[0, 4, 2], [1, 3, 4]]> : tensor<2x3xi32>
  %l = qtune.cross_entropy %r, %labels : tensor<2x3x5xf32>, tensor<2x3xi32> -> tensor<f32>
  return %l : tensor<f32>
})mlir"},
    // Distillation (LREC): a quantized student with LoRA against the logits
    // of a full-precision teacher (a frozen weight) on the same input, plus a
    // weighted cross entropy (arith.mulf): the adapters get both gradients.
    {"kl_div_student_against_teacher", R"mlir(
!w = !qtune.qweight<5x8, #qtune.uniform<bits = 4, group = 8, scale_type = f32>>
func.func @loss(%x: tensor<2x3x8xf32>, %c: tensor<5x1xi32>, %s: tensor<5x1xf32>,
                %z: tensor<5x1xf32>, %wt: tensor<5x8xf32>,
                %a: tensor<2x8xf32> {qtune.role = #qtune.role<trainable>},
                %b: tensor<5x2xf32> {qtune.role = #qtune.role<trainable>}) -> tensor<f32> {
  %w = qtune.qweight %c, %s, %z : tensor<5x1xi32>, tensor<5x1xf32>, tensor<5x1xf32> -> !w
  %y = qtune.linear %x, %w : tensor<2x3x8xf32>, !w -> tensor<2x3x5xf32>
  %d = qtune.lora %x, %a, %b {alpha = 2.0 : f64, rank = 2 : i64} : tensor<2x3x8xf32>, tensor<2x8xf32>, tensor<5x2xf32> -> tensor<2x3x5xf32>
  %r = arith.addf %y, %d : tensor<2x3x5xf32>
  %t = qtune.linear %x, %wt : tensor<2x3x8xf32>, tensor<5x8xf32> -> tensor<2x3x5xf32>
  %kl = qtune.kl_div %r, %t : tensor<2x3x5xf32>, tensor<2x3x5xf32> -> tensor<f32>
  %labels = arith.constant dense<[[0, 4, 2], [1, 3, 4]]> : tensor<2x3xi32>
  %ce = qtune.cross_entropy %r, %labels : tensor<2x3x5xf32>, tensor<2x3xi32> -> tensor<f32>
  %cw = arith.constant dense<0.25> : tensor<f32>
  %wce = arith.mulf %ce, %cw : tensor<f32>
  %l = arith.addf %kl, %wce : tensor<f32>
  return %l : tensor<f32>
})mlir"},
    // A LLaMA-style decoder block: embedding, RMSNorm, q/k/v projections
    // (LoRA on q), rotary embedding, causal attention with 2 query heads on
    // one KV head, residuals, SwiGLU MLP, final norm, lm head, cross entropy.
    {"decoder_block", R"mlir(
func.func @loss(%table: tensor<5x8xf32> {qtune.role = #qtune.role<trainable>},
                %n1: tensor<8xf32> {qtune.role = #qtune.role<trainable>},
                %wq: tensor<8x8xf32>, %wk: tensor<4x8xf32>,
                %wv: tensor<4x8xf32> {qtune.role = #qtune.role<trainable>},
                %wo: tensor<8x8xf32>,
                %aq: tensor<2x8xf32> {qtune.role = #qtune.role<trainable>},
                %bq: tensor<8x2xf32> {qtune.role = #qtune.role<trainable>},
                %n2: tensor<8xf32>, %wg: tensor<6x8xf32>, %wu: tensor<6x8xf32>,
                %wd: tensor<8x6xf32> {qtune.role = #qtune.role<trainable>},
                %nf: tensor<8xf32>, %head: tensor<5x8xf32>) -> tensor<f32> {
  %ids = arith.constant dense<[[0, 4, 2], [1, 3, 3]]> : tensor<2x3xi32>
  %labels = arith.constant dense<[[4, 2, 1], [3, 3, 0]]> : tensor<2x3xi32>
  %h = qtune.embedding %table, %ids : tensor<5x8xf32>, tensor<2x3xi32> -> tensor<2x3x8xf32>
  %x = qtune.rms_norm %h, %n1 {eps = 1.0e-5 : f64} : tensor<2x3x8xf32>, tensor<8xf32> -> tensor<2x3x8xf32>
  %q0 = qtune.linear %x, %wq : tensor<2x3x8xf32>, tensor<8x8xf32> -> tensor<2x3x8xf32>
  %qd = qtune.lora %x, %aq, %bq {alpha = 4.0 : f64, rank = 2 : i64} : tensor<2x3x8xf32>, tensor<2x8xf32>, tensor<8x2xf32> -> tensor<2x3x8xf32>
  %q1 = arith.addf %q0, %qd : tensor<2x3x8xf32>
  %k0 = qtune.linear %x, %wk : tensor<2x3x8xf32>, tensor<4x8xf32> -> tensor<2x3x4xf32>
  %v = qtune.linear %x, %wv : tensor<2x3x8xf32>, tensor<4x8xf32> -> tensor<2x3x4xf32>
  %q = qtune.rope %q1 {head_dim = 4 : i64, theta = 10000.0 : f64} : tensor<2x3x8xf32>
  %k = qtune.rope %k0 {head_dim = 4 : i64, theta = 3.0 : f64} : tensor<2x3x4xf32>
  %o, %lse = qtune.attention %q, %k, %v {heads = 2 : i64, kv_heads = 1 : i64} : tensor<2x3x8xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32> -> tensor<2x3x8xf32>, tensor<2x2x3xf32>
  %a = qtune.linear %o, %wo : tensor<2x3x8xf32>, tensor<8x8xf32> -> tensor<2x3x8xf32>
  %h2 = arith.addf %h, %a : tensor<2x3x8xf32>
  %y = qtune.rms_norm %h2, %n2 {eps = 1.0e-5 : f64} : tensor<2x3x8xf32>, tensor<8xf32> -> tensor<2x3x8xf32>
  %g = qtune.linear %y, %wg : tensor<2x3x8xf32>, tensor<6x8xf32> -> tensor<2x3x6xf32>
  %u = qtune.linear %y, %wu : tensor<2x3x8xf32>, tensor<6x8xf32> -> tensor<2x3x6xf32>
  %m = qtune.swiglu %g, %u : tensor<2x3x6xf32>
  %dn = qtune.linear %m, %wd : tensor<2x3x6xf32>, tensor<8x6xf32> -> tensor<2x3x8xf32>
  %h3 = arith.addf %h2, %dn : tensor<2x3x8xf32>
  %f = qtune.rms_norm %h3, %nf {eps = 1.0e-5 : f64} : tensor<2x3x8xf32>, tensor<8xf32> -> tensor<2x3x8xf32>
  %logits = qtune.linear %f, %head : tensor<2x3x8xf32>, tensor<5x8xf32> -> tensor<2x3x5xf32>
  %l = qtune.cross_entropy %logits, %labels : tensor<2x3x5xf32>, tensor<2x3xi32> -> tensor<f32>
  return %l : tensor<f32>
})mlir"},
    // Attention without a mask, as many KV heads as query heads, a given
    // scale, and an inverse rotation; q, k and v trainable directly.
    {"attention_full_mha_inverse_rope", R"mlir(
func.func @loss(%q: tensor<1x4x6xf32> {qtune.role = #qtune.role<trainable>},
                %k: tensor<1x4x6xf32> {qtune.role = #qtune.role<trainable>},
                %v: tensor<1x4x6xf32> {qtune.role = #qtune.role<trainable>},
                %t: tensor<1x4x6xf32>) -> tensor<f32> {
  %r = qtune.rope %q {head_dim = 2 : i64, theta = 5.0 : f64, inverse} : tensor<1x4x6xf32>
  %o, %lse = qtune.attention %r, %k, %v {heads = 3 : i64, kv_heads = 3 : i64, scale = 0.7 : f64, causal = false} : tensor<1x4x6xf32>, tensor<1x4x6xf32>, tensor<1x4x6xf32> -> tensor<1x4x6xf32>, tensor<1x3x4xf32>
  %l = qtune.mse_loss %o, %t : tensor<1x4x6xf32>, tensor<1x4x6xf32> -> tensor<f32>
  return %l : tensor<f32>
})mlir"},
    // Packed documents: segment ids hide the keys of other documents, causal
    // and not, with 2 query heads on one KV head.
    {"attention_segments", R"mlir(
func.func @loss(%q: tensor<2x5x4xf32> {qtune.role = #qtune.role<trainable>},
                %k: tensor<2x5x2xf32> {qtune.role = #qtune.role<trainable>},
                %v: tensor<2x5x2xf32> {qtune.role = #qtune.role<trainable>},
                %t: tensor<2x5x4xf32>) -> tensor<f32> {
  %seg = arith.constant dense<[[1, 1, 2, 2, 2], [0, 3, 3, 3, 7]]> : tensor<2x5xi32>
  %o, %lse = qtune.attention %q, %k, %v segments %seg {heads = 2 : i64, kv_heads = 1 : i64} : tensor<2x5x4xf32>, tensor<2x5x2xf32>, tensor<2x5x2xf32>, tensor<2x5xi32> -> tensor<2x5x4xf32>, tensor<2x2x5xf32>
  %o2, %lse2 = qtune.attention %o, %k, %v segments %seg {heads = 2 : i64, kv_heads = 1 : i64, causal = false} : tensor<2x5x4xf32>, tensor<2x5x2xf32>, tensor<2x5x2xf32>, tensor<2x5xi32> -> tensor<2x5x4xf32>, tensor<2x2x5xf32>
  %l = qtune.mse_loss %o2, %t : tensor<2x5x4xf32>, tensor<2x5x4xf32> -> tensor<f32>
  return %l : tensor<f32>
})mlir"},
};

class GradientTest : public ::testing::TestWithParam<Case> {};

TEST_P(GradientTest, MatchesFiniteDifferences) {
  DialectRegistry registry;
  registry.insert<qtune::QTuneDialect, func::FuncDialect, arith::ArithDialect,
                  tensor::TensorDialect>();
  MLIRContext context(registry);
  OwningOpRef<ModuleOp> module =
      parseSourceString<ModuleOp>(GetParam().source, &context);
  ASSERT_TRUE(module);
  PassManager pm(&context);
  pm.addPass(qtune::createQTuneAutodiff());
  ASSERT_TRUE(succeeded(pm.run(*module)));
  auto loss = module->lookupSymbol<func::FuncOp>("loss");
  auto grad = module->lookupSymbol<func::FuncOp>("loss_grad");
  ASSERT_TRUE(loss && grad);

  std::mt19937_64 rng(42);
  std::vector<HostTensor> args;
  std::vector<unsigned> trainable;
  for (auto [i, type] : llvm::enumerate(loss.getArgumentTypes())) {
    auto rt = cast<RankedTensorType>(type);
    HostTensor t(std::vector<int64_t>(rt.getShape().begin(), rt.getShape().end()));
    for (double &v : t.data)
      v = rt.getElementType().isInteger(32)
              ? double(uint32_t(rng()))
              : std::uniform_real_distribution<double>(-1, 1)(rng);
    args.push_back(std::move(t));
    if (qtune::getArgumentRole(loss.getArgument(i)) == qtune::Role::trainable)
      trainable.push_back(i);
  }

  FailureOr<std::vector<HostTensor>> out = qtune::ref::run(grad, args);
  ASSERT_TRUE(succeeded(out));
  ASSERT_EQ(out->size(), trainable.size() + 1);
  FailureOr<std::vector<HostTensor>> base = qtune::ref::run(loss, args);
  ASSERT_TRUE(succeeded(base));
  EXPECT_NEAR((*out)[0].data[0], (*base)[0].data[0], 1e-12) << "loss";

  const double eps = 1e-6;
  for (auto [r, argIndex] : llvm::enumerate(trainable)) {
    const HostTensor &g = (*out)[r + 1];
    ASSERT_EQ(g.shape, args[argIndex].shape);
    for (size_t e = 0; e < g.data.size(); ++e) {
      std::vector<HostTensor> plus = args, minus = args;
      plus[argIndex].data[e] += eps;
      minus[argIndex].data[e] -= eps;
      double lp = (*qtune::ref::run(loss, plus))[0].data[0];
      double lm = (*qtune::ref::run(loss, minus))[0].data[0];
      double fd = (lp - lm) / (2 * eps);
      EXPECT_NEAR(g.data[e], fd, 1e-6 * std::max(1.0, std::fabs(fd)))
          << "argument #" << argIndex << " element " << e;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Adjoints, GradientTest, ::testing::ValuesIn(kCases),
                         [](const auto &info) { return info.param.name; });

} // namespace
