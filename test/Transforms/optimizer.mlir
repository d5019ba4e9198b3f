// RUN: qtune-opt %s -qtune-autodiff -qtune-optimizer | FileCheck %s --check-prefix=ADAMW
// RUN: qtune-opt %s -qtune-autodiff -qtune-optimizer="optimizer=lion momentum=bf16 max-grad-norm=1.0" | FileCheck %s --check-prefix=LION
// RUN: qtune-opt %s -qtune-autodiff -qtune-optimizer="optimizer=lion momentum=int8 block=64" | FileCheck %s --check-prefix=INT8
// RUN: not qtune-opt %s -qtune-autodiff -qtune-optimizer="optimizer=sgd" 2>&1 | FileCheck %s --check-prefix=BADOPT
// RUN: not qtune-opt %s -qtune-autodiff -qtune-optimizer="momentum=int8" 2>&1 | FileCheck %s --check-prefix=ADAMINT8

// ADAMW-LABEL: func.func @loss_train_step(
// ADAMW-SAME: %[[A:[a-z0-9]+]]: tensor<8x128xbf16> {qtune.name = "lora_A", qtune.role = #qtune.role<trainable>}
// ADAMW-SAME: tensor<8x128xf32> {qtune.name = "lora_A.m", qtune.role = #qtune.role<optimizer_state>}
// ADAMW-SAME: tensor<8x128xf32> {qtune.name = "lora_A.v", qtune.role = #qtune.role<optimizer_state>}
// ADAMW-SAME: tensor<f32> {qtune.name = "lr", qtune.role = #qtune.role<input>}, %{{.*}}: tensor<f32> {qtune.name = "step", qtune.role = #qtune.role<input>})
// ADAMW-SAME: -> (tensor<f32> {qtune.name = "loss"}, tensor<8x128xbf16> {qtune.name = "lora_A", qtune.updates = 1 : i64}, tensor<8x128xf32> {qtune.name = "lora_A.m", qtune.updates = 4 : i64}
// Defaults (β1 0.9, β2 0.999, ε 1e-8, no weight decay) are not printed.
// ADAMW: %[[LOSS:.*]] = qtune.mse_loss
// ADAMW: qtune.adamw %[[A]], %{{.*}}, %arg4, %arg5, %arg8, %arg9 if_finite(%[[LOSS]] : tensor<f32>) : tensor<8x128xbf16>
// ADAMW-NOT: qtune.clip_grad_norm

// LION-LABEL: func.func @loss_train_step(
// LION-SAME: tensor<8x128xbf16> {qtune.name = "lora_A.m", qtune.role = #qtune.role<optimizer_state>}
// LION-NOT: {qtune.name = "step"
// LION: qtune.clip_grad_norm {{.*}} {max_norm = 1.000000e+00 : f64}
// LION: qtune.lion {{.*}} if_finite(%{{.*}} : tensor<f32>) {momentum = #qtune.state<bf16>}
// Gradient accumulation: <fn>_accumulate adds each gradient into an f32
// accumulator (skipped on a non-finite loss); <fn>_apply clips and updates with
// the mean accumulated gradient (no guard: its micro-batches had one) and
// resets the accumulators.
// LION-LABEL: func.func @loss_accumulate(
// LION-SAME: %[[ACC:[a-z0-9]+]]: tensor<8x128xf32> {qtune.name = "lora_A.grad_acc", qtune.role = #qtune.role<optimizer_state>}
// LION: %[[L:.*]] = qtune.mse_loss
// LION: qtune.grad_accumulate %[[ACC]], %{{.*}} if_finite(%[[L]] : tensor<f32>) : tensor<8x128xf32>, tensor<8x128xbf16>
// LION-LABEL: func.func @loss_apply(
// LION-SAME: {qtune.name = "accum_count", qtune.role = #qtune.role<input>}
// LION: %[[G:.*]], %{{.*}} = qtune.grad_take %{{.*}}, %{{.*}} : tensor<8x128xf32>, tensor<f32>
// LION: qtune.clip_grad_norm %[[G]], {{.*}} : tensor<8x128xf32>, tensor<64x8xf32> -> tensor<8x128xf32>, tensor<64x8xf32>
// LION-NOT: if_finite
// LION: return

// INT8-LABEL: func.func @loss_train_step(
// INT8-SAME: tensor<8x128xi8> {qtune.name = "lora_A.m"
// INT8-SAME: tensor<16xf32> {qtune.name = "lora_A.m_scales"
// INT8: qtune.lion {{.*}} scales(%{{.*}} : tensor<16xf32>), {{.*}} {block = 64 : i64, momentum = #qtune.state<int8>}

// With trainable 8-bit codes the codes' gradient (dW) is fused into qtune.qft_lion; no N×K
// weight_grad survives in the train step; int8 momentum over the N×K weight.
// RUN: qtune-opt %S/Inputs/qft.mlir -qtune-autodiff -qtune-optimizer="optimizer=lion momentum=int8 block=64" | FileCheck %s --check-prefix=QFT
// RUN: not qtune-opt %S/Inputs/qft.mlir -qtune-autodiff -qtune-optimizer 2>&1 | FileCheck %s --check-prefix=QFTADAM
// RUN: not qtune-opt %S/Inputs/qft.mlir -qtune-autodiff -qtune-optimizer="optimizer=lion momentum=int8 max-grad-norm=1.0" 2>&1 | FileCheck %s --check-prefix=QFTCLIP
// QFT-LABEL: func.func @loss_grad(
// QFT-SAME: -> (tensor<f32> {qtune.name = "loss"}, tensor<64x128xf32> {qtune.name = "grad_codes"})
// QFT-LABEL: func.func @loss_train_step(
// QFT-SAME: tensor<64x128xi8> {qtune.name = "codes.m", qtune.role = #qtune.role<optimizer_state>}
// QFT-SAME: tensor<128xf32> {qtune.name = "codes.m_scales", qtune.role = #qtune.role<optimizer_state>}
// QFT-NOT: qtune.weight_grad
// QFT: qtune.qft_lion %{{.*}}, %arg0, %arg1, params(%arg2 : tensor<64x1xbf16>), %arg4, %arg5, %arg6 if_finite(%{{.*}} : tensor<f32>) {block = 64 : i64, format = #qtune.uniform<bits = 8, symmetric = true>}
// QFT-NOT: qtune.weight_grad
// QFT: return
// QFT never holds its gradient, so it has no accumulation entries.
// QFT-NOT: func.func @loss_accumulate
// QFTADAM: argument #1 ('codes') trains 8-bit codes (QFT), which update with Lion and int8 momentum: use optimizer=lion momentum=int8
// QFTCLIP: gradient-norm clipping needs every gradient before any update, but QFT never holds its weight's gradient; drop max-grad-norm

// BADOPT: qtune-optimizer: unknown optimizer 'sgd' (adamw or lion)
// ADAMINT8: qtune-optimizer: AdamW keeps f32 moments

func.func @loss(%x: tensor<4x128xbf16> {qtune.role = #qtune.role<input>},
                %a: tensor<8x128xbf16> {qtune.name = "lora_A", qtune.role = #qtune.role<trainable>},
                %b: tensor<64x8xbf16> {qtune.name = "lora_B", qtune.role = #qtune.role<trainable>},
                %t: tensor<4x64xbf16> {qtune.role = #qtune.role<input>}) -> tensor<f32> {
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64} : tensor<4x128xbf16>, tensor<8x128xbf16>, tensor<64x8xbf16> -> tensor<4x64xbf16>
  %l = qtune.mse_loss %d, %t : tensor<4x64xbf16>, tensor<4x64xbf16> -> tensor<f32>
  return %l : tensor<f32>
}
