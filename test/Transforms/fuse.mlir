// RUN: qtune-opt %s -qtune-fuse | FileCheck %s
// Fusion keeps the numbers: the interpreter gives the same outputs before and after.
// RUN: qtune-interp %s --entry lora_bias_residual --random-inputs 7 --print > %t.before
// RUN: qtune-opt %s -qtune-fuse | qtune-interp - --entry lora_bias_residual --random-inputs 7 --print > %t.after
// RUN: diff %t.before %t.after
// RUN: qtune-opt %s -qtune-fuse | FileCheck %s --check-prefix=NUMERIC-INPUT
// NUMERIC-INPUT-LABEL: func.func @lora_bias_residual
// NUMERIC-INPUT: qtune.fused_linear

!w = !qtune.qweight<16x32, #qtune.uniform<bits = 4, group = 16>>

// CHECK-LABEL: func.func @lora_bias_residual
// CHECK-SAME: (%[[X:.*]]: tensor<4x32xf32>, %[[C:.*]]: tensor<16x4xi32>, %[[S:.*]]: tensor<16x2xbf16>, %[[Z:.*]]: tensor<16x2xbf16>, %[[BIAS:.*]]: tensor<16xf32>, %[[A:.*]]: tensor<2x32xf32>, %[[B:.*]]: tensor<16x2xf32>, %[[R:.*]]: tensor<4x16xf32>)
// CHECK: %[[W:.*]] = qtune.qweight
// CHECK-NEXT: %[[Y:.*]] = qtune.fused_linear %[[X]], %[[W]] bias(%[[BIAS]] : tensor<16xf32>) lora(%[[A]], %[[B]] : tensor<2x32xf32>, tensor<16x2xf32>) residual(%[[R]] : tensor<4x16xf32>) {lora_alpha = 4.000000e+00 : f64, lora_rank = 2 : i64}
// CHECK-NOT: arith.addf
// CHECK-NOT: qtune.lora
// CHECK: return %[[Y]]
func.func @lora_bias_residual(%x: tensor<4x32xf32>, %c: tensor<16x4xi32>, %s: tensor<16x2xbf16>,
                              %z: tensor<16x2xbf16>, %bias: tensor<16xf32>, %a: tensor<2x32xf32>,
                              %b: tensor<16x2xf32>, %r: tensor<4x16xf32>) -> tensor<4x16xf32> {
  %w = qtune.qweight %c, %s, %z : tensor<16x4xi32>, tensor<16x2xbf16>, tensor<16x2xbf16> -> !w
  %y = qtune.linear %x, %w, %bias : tensor<4x32xf32>, !w, tensor<16xf32> -> tensor<4x16xf32>
  %d = qtune.lora %x, %a, %b {alpha = 4.0 : f64, rank = 2 : i64} : tensor<4x32xf32>, tensor<2x32xf32>, tensor<16x2xf32> -> tensor<4x16xf32>
  %0 = arith.addf %y, %d : tensor<4x16xf32>
  %1 = arith.addf %r, %0 : tensor<4x16xf32>
  return %1 : tensor<4x16xf32>
}

// The LoRA term may come first; dropout is carried over; dense weights fuse too.
// CHECK-LABEL: func.func @lora_first_dense
// CHECK: %[[Y:.*]] = qtune.fused_linear %arg0, %arg1 lora(%arg2, %arg3 : tensor<8x32xf32>, tensor<16x8xf32>) {lora_alpha = 1.600000e+01 : f64, lora_dropout = 1.000000e-01 : f64, lora_rank = 8 : i64} : tensor<2x3x32xf32>, tensor<16x32xf32> -> tensor<2x3x16xf32>
// CHECK-NEXT: return %[[Y]]
func.func @lora_first_dense(%x: tensor<2x3x32xf32>, %w: tensor<16x32xf32>, %a: tensor<8x32xf32>,
                            %b: tensor<16x8xf32>) -> tensor<2x3x16xf32> {
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64, dropout = 0.1 : f64} : tensor<2x3x32xf32>, tensor<8x32xf32>, tensor<16x8xf32> -> tensor<2x3x16xf32>
  %y = qtune.linear %x, %w : tensor<2x3x32xf32>, tensor<16x32xf32> -> tensor<2x3x16xf32>
  %0 = arith.addf %d, %y : tensor<2x3x16xf32>
  return %0 : tensor<2x3x16xf32>
}

// A residual alone.
// CHECK-LABEL: func.func @residual_only
// CHECK: qtune.fused_linear %arg0, %arg1 residual(%arg2 : tensor<4x16xf32>) : tensor<4x32xf32>, tensor<16x32xf32> -> tensor<4x16xf32>
// CHECK-NOT: arith.addf
func.func @residual_only(%x: tensor<4x32xf32>, %w: tensor<16x32xf32>, %r: tensor<4x16xf32>) -> tensor<4x16xf32> {
  %y = qtune.linear %x, %w : tensor<4x32xf32>, tensor<16x32xf32> -> tensor<4x16xf32>
  %0 = arith.addf %y, %r : tensor<4x16xf32>
  return %0 : tensor<4x16xf32>
}

// Must not fuse: the linear's result has another use (fusing would compute it twice).
// CHECK-LABEL: func.func @linear_used_twice
// CHECK: %[[Y:.*]] = qtune.linear
// CHECK: qtune.lora
// CHECK: %[[S:.*]] = arith.addf
// CHECK-NOT: qtune.fused_linear
// CHECK: return %[[S]], %[[Y]]
func.func @linear_used_twice(%x: tensor<4x32xf32>, %w: tensor<16x32xf32>, %a: tensor<2x32xf32>,
                             %b: tensor<16x2xf32>) -> (tensor<4x16xf32>, tensor<4x16xf32>) {
  %y = qtune.linear %x, %w : tensor<4x32xf32>, tensor<16x32xf32> -> tensor<4x16xf32>
  %d = qtune.lora %x, %a, %b {alpha = 2.0 : f64, rank = 2 : i64} : tensor<4x32xf32>, tensor<2x32xf32>, tensor<16x2xf32> -> tensor<4x16xf32>
  %0 = arith.addf %y, %d : tensor<4x16xf32>
  return %0, %y : tensor<4x16xf32>, tensor<4x16xf32>
}

// Must not fuse as an adapter: the LoRA reads another input. Its result is then
// only an addend (a residual), computed by its own op.
// CHECK-LABEL: func.func @lora_of_other_input
// CHECK: %[[D:.*]] = qtune.lora %arg1
// CHECK: qtune.fused_linear %arg0, %arg2 residual(%[[D]] : tensor<4x16xf32>)
// CHECK-NOT: lora(
func.func @lora_of_other_input(%x: tensor<4x32xf32>, %x2: tensor<4x32xf32>, %w: tensor<16x32xf32>,
                               %a: tensor<2x32xf32>, %b: tensor<16x2xf32>) -> tensor<4x16xf32> {
  %d = qtune.lora %x2, %a, %b {alpha = 2.0 : f64, rank = 2 : i64} : tensor<4x32xf32>, tensor<2x32xf32>, tensor<16x2xf32> -> tensor<4x16xf32>
  %y = qtune.linear %x, %w : tensor<4x32xf32>, tensor<16x32xf32> -> tensor<4x16xf32>
  %0 = arith.addf %y, %d : tensor<4x16xf32>
  return %0 : tensor<4x16xf32>
}

// Must not fuse: a second residual add stays an arith.addf (one residual per op).
// CHECK-LABEL: func.func @two_residuals
// CHECK: %[[F:.*]] = qtune.fused_linear %arg0, %arg1 residual(%arg2
// CHECK: arith.addf %[[F]], %arg3
func.func @two_residuals(%x: tensor<4x32xf32>, %w: tensor<16x32xf32>, %r1: tensor<4x16xf32>,
                         %r2: tensor<4x16xf32>) -> tensor<4x16xf32> {
  %y = qtune.linear %x, %w : tensor<4x32xf32>, tensor<16x32xf32> -> tensor<4x16xf32>
  %0 = arith.addf %y, %r1 : tensor<4x16xf32>
  %1 = arith.addf %0, %r2 : tensor<4x16xf32>
  return %1 : tensor<4x16xf32>
}
