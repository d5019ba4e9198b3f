// RUN: qtune-opt %s -qtune-autodiff -split-input-file -verify-diagnostics | FileCheck %s

// LoRA on a frozen quantized weight plus PEQA scales: the input gradient never
// appears (x is not trainable), the scales get a per-component gradient, and no
// N×K weight gradient survives.
!w = !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 32>>
// CHECK-LABEL: func.func @loss(
// CHECK-LABEL: func.func @loss_grad(
// CHECK-SAME: -> (tensor<f32> {qtune.name = "loss"}, tensor<64x4xbf16> {qtune.name = "grad_scales"}, tensor<8x128xbf16> {qtune.name = "grad_lora_A"}, tensor<64x8xbf16> {qtune.name = "grad_lora_B"})
// CHECK: %[[L:.*]] = qtune.mse_loss
// CHECK: %[[G:.*]] = qtune.mse_loss_grad
// CHECK: %[[T:.*]] = qtune.linear %arg0, %arg4
// CHECK: %[[DB:.*]] = qtune.weight_grad %[[G]], %[[T]] {scale = 2.000000e+00 : f64} : tensor<4x64xbf16>, tensor<4x8xbf16> -> tensor<64x8xbf16>
// CHECK: %[[DT:.*]] = qtune.linear_t %[[G]], %arg5 {scale = 2.000000e+00 : f64}
// CHECK: %[[DA:.*]] = qtune.weight_grad %[[DT]], %arg0 : tensor<4x8xbf16>, tensor<4x128xbf16> -> tensor<8x128xbf16>
// CHECK-NOT: -> tensor<64x128x
// CHECK: %[[DS:.*]] = qtune.component_grad %[[G]], %arg0, %{{.*}} {component = 1 : i64}
// CHECK-NOT: qtune.linear_t %[[G]], %{{.*}} : {{.*}}!qtune.qweight
// CHECK: return %[[L]], %[[DS]], %[[DA]], %[[DB]]
func.func @loss(%x: tensor<4x128xbf16> {qtune.role = #qtune.role<input>},
                %c: tensor<64x16xi32> {qtune.role = #qtune.role<frozen>},
                %s: tensor<64x4xbf16> {qtune.name = "scales", qtune.role = #qtune.role<trainable>},
                %z: tensor<64x4xbf16> {qtune.role = #qtune.role<frozen>},
                %a: tensor<8x128xbf16> {qtune.name = "lora_A", qtune.role = #qtune.role<trainable>},
                %b: tensor<64x8xbf16> {qtune.name = "lora_B", qtune.role = #qtune.role<trainable>},
                %t: tensor<4x64xbf16> {qtune.role = #qtune.role<input>}) -> tensor<f32> {
  %w = qtune.qweight scale_only %c, %s, %z : tensor<64x16xi32>, tensor<64x4xbf16>, tensor<64x4xbf16> -> !w
  %y = qtune.linear %x, %w : tensor<4x128xbf16>, !w -> tensor<4x64xbf16>
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64} : tensor<4x128xbf16>, tensor<8x128xbf16>, tensor<64x8xbf16> -> tensor<4x64xbf16>
  %r = arith.addf %y, %d : tensor<4x64xbf16>
  %l = qtune.mse_loss %r, %t : tensor<4x64xbf16>, tensor<4x64xbf16> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// Through a frozen quantized weight into an earlier adapter: the input gradient
// is qtune.linear_t on the quantized weight (dequantization recomputed).
!w = !qtune.qweight<16x16, #qtune.nf4<block = 16>>
// CHECK-LABEL: func.func @two_layers_grad(
// CHECK: qtune.linear_t %{{.*}}, %{{.*}} : tensor<2x16xf32>, !qtune.qweight<16x16, #qtune.nf4<block = 16>> -> tensor<2x16xf32>
// CHECK-NOT: qtune.component_grad
func.func @two_layers(%x: tensor<2x16xf32>, %c: tensor<16x2xi32>, %am: tensor<16x1xf32>,
                      %a: tensor<4x16xf32> {qtune.role = #qtune.role<trainable>},
                      %b: tensor<16x4xf32> {qtune.role = #qtune.role<trainable>},
                      %t: tensor<2x16xf32>) -> tensor<f32> {
  %w = qtune.qweight %c, %am : tensor<16x2xi32>, tensor<16x1xf32> -> !w
  %d = qtune.lora %x, %a, %b {alpha = 4.0 : f64, rank = 4 : i64} : tensor<2x16xf32>, tensor<4x16xf32>, tensor<16x4xf32> -> tensor<2x16xf32>
  %h = arith.addf %x, %d : tensor<2x16xf32>
  %y = qtune.linear %h, %w : tensor<2x16xf32>, !w -> tensor<2x16xf32>
  %l = qtune.mse_loss %y, %t : tensor<2x16xf32>, tensor<2x16xf32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// A trainable argument that does not reach the loss gets a zero gradient.
// CHECK-LABEL: func.func @unused_grad(
// CHECK: %[[Z:.*]] = arith.constant dense<0.000000e+00> : tensor<3xf32>
// CHECK: return %{{.*}}, %[[Z]]
func.func @unused(%p: tensor<3xf32>, %q: tensor<3xf32> {qtune.role = #qtune.role<trainable>}) -> tensor<f32> {
  %l = qtune.mse_loss %p, %p : tensor<3xf32>, tensor<3xf32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// expected-error @+1 {{qtune-autodiff: a function with trainable arguments must return one tensor<f32> loss}}
func.func @not_a_loss(%a: tensor<3xf32> {qtune.role = #qtune.role<trainable>}) -> tensor<3xf32> {
  return %a : tensor<3xf32>
}

// -----

func.func @no_adjoint(%a: tensor<3xf32> {qtune.role = #qtune.role<trainable>}, %t: tensor<3xf32>) -> tensor<f32> {
  // expected-error @+1 {{qtune-autodiff: 'arith.divf' is on the path from a trainable argument to the loss but has no adjoint}}
  %sq = arith.divf %a, %a : tensor<3xf32>
  %l = qtune.mse_loss %sq, %t : tensor<3xf32>, tensor<3xf32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

func.func @lora_dropout(%x: tensor<4x64xbf16>, %a: tensor<4x64xbf16> {qtune.role = #qtune.role<trainable>},
                        %b: tensor<32x4xbf16> {qtune.role = #qtune.role<trainable>}, %t: tensor<4x32xbf16>) -> tensor<f32> {
  // expected-error @+1 {{qtune-autodiff: LoRA dropout is not implemented in training; use dropout 0}}
  %l = qtune.lora %x, %a, %b {alpha = 8.0 : f64, rank = 4 : i64, dropout = 0.1 : f64} : tensor<4x64xbf16>, tensor<4x64xbf16>, tensor<32x4xbf16> -> tensor<4x32xbf16>
  %loss = qtune.mse_loss %l, %t : tensor<4x32xbf16>, tensor<4x32xbf16> -> tensor<f32>
  return %loss : tensor<f32>
}
