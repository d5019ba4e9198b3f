// RUN: qtune-opt %s | qtune-opt | FileCheck %s
// RUN: qtune-opt %s --mlir-print-op-generic | qtune-opt | FileCheck %s

// Round trip of the qtune dialect: every quantizer format and its parameters,
// qtune.qweight with each format's component shapes, qtune.dequant, qtune.linear,
// qtune.lora and the argument attributes qtune.role and qtune.name.

//===----------------------------------------------------------------------===//
// Format attributes (as qweight types in function signatures)
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func private @uniform_formats
// CHECK-SAME: !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
// CHECK-SAME: !qtune.qweight<4x96, #qtune.uniform<bits = 3>>
// CHECK-SAME: !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 128>>
// CHECK-SAME: !qtune.qweight<16x40, #qtune.uniform<bits = 8, group = 8>>
// CHECK-SAME: !qtune.qweight<4x96, #qtune.uniform<bits = 3, symmetric = true, scale_type = f32>>
// CHECK-SAME: !qtune.qweight<4x96, #qtune.uniform<bits = 3, group = 48, scale_type = f16>>
// CHECK-SAME: !qtune.qweight<4x100, #qtune.uniform<bits = 4>>
// CHECK-SAME: !qtune.qweight<2x64, #qtune.uniform<bits = 8, group = 16, symmetric = true>>
// CHECK-SAME: !qtune.qweight<2x64, #qtune.uniform<bits = 2, symmetric = true>>)
func.func private @uniform_formats(
    !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>,
    !qtune.qweight<4x96, #qtune.uniform<bits = 3, group = 0>>,
    !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 128, symmetric = false>>,
    !qtune.qweight<16x40, #qtune.uniform<bits = 8, group = 8, scale_type = bf16>>,
    !qtune.qweight<4x96, #qtune.uniform<bits = 3, symmetric = true, scale_type = f32>>,
    !qtune.qweight<4x96, #qtune.uniform<bits = 3, group = 48, scale_type = f16>>,
    !qtune.qweight<4x100, #qtune.uniform<bits = 4>>,
    !qtune.qweight<2x64, #qtune.uniform<bits = 8, group = 16, symmetric = true>>,
    // Parameters in any order; the default scale type is bf16, written or not.
    !qtune.qweight<2x64, #qtune.uniform<symmetric = true, bits = 2, scale_type = bf16>>)

// CHECK-LABEL: func.func private @nf4_formats
// CHECK-SAME: !qtune.qweight<8x128, #qtune.nf4<>>
// CHECK-SAME: !qtune.qweight<8x96, #qtune.nf4<block = 32>>
// CHECK-SAME: !qtune.qweight<4x256, #qtune.nf4<block = 32, double_quant = true, dq_block = 4>>
// CHECK-SAME: !qtune.qweight<4x8192, #qtune.nf4<double_quant = true>>
func.func private @nf4_formats(
    !qtune.qweight<8x128, #qtune.nf4<block = 64>>,
    !qtune.qweight<8x96, #qtune.nf4<block = 32, double_quant = false>>,
    !qtune.qweight<4x256, #qtune.nf4<block = 32, double_quant = true, dq_block = 4>>,
    !qtune.qweight<4x8192, #qtune.nf4<double_quant = true, dq_block = 256>>)

// CHECK-LABEL: func.func private @lut_formats
// CHECK-SAME: !qtune.qweight<4x96, #qtune.lut<bits = 3>>
// CHECK-SAME: !qtune.qweight<4x64, #qtune.lut<bits = 4, group = 32>>
// CHECK-SAME: !qtune.qweight<4x64, #qtune.lut<bits = 1, group = 64>>
// CHECK-SAME: !qtune.qweight<2x10, #qtune.lut<bits = 8>>
func.func private @lut_formats(
    !qtune.qweight<4x96, #qtune.lut<bits = 3>>,
    !qtune.qweight<4x64, #qtune.lut<bits = 4, group = 32>>,
    !qtune.qweight<4x64, #qtune.lut<bits = 1, group = 64>>,
    !qtune.qweight<2x10, #qtune.lut<bits = 8, group = 0>>)

//===----------------------------------------------------------------------===//
// qtune.qweight: components of each format
//===----------------------------------------------------------------------===//

// 2-bit, group 32: codes i32[8, 64*2/32 = 4], scales and zeros bf16[8, 2].
// CHECK-LABEL: func.func @qweight_uniform2_group
// CHECK: qtune.qweight %{{.*}}, %{{.*}}, %{{.*}} : tensor<8x4xi32>, tensor<8x2xbf16>, tensor<8x2xbf16> -> !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
func.func @qweight_uniform2_group(%codes: tensor<8x4xi32>, %scales: tensor<8x2xbf16>,
                                  %zeros: tensor<8x2xbf16>)
    -> !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>> {
  %w = qtune.qweight %codes, %scales, %zeros
      : tensor<8x4xi32>, tensor<8x2xbf16>, tensor<8x2xbf16>
      -> !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
  return %w : !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
}

// 3-bit per channel, K = 96: codes i32[4, 96*3/32 = 9] (codes straddle words),
// one scale (and zero) per row.
// CHECK-LABEL: func.func @qweight_uniform3_per_channel
// CHECK: qtune.qweight %{{.*}}, %{{.*}}, %{{.*}} : tensor<4x9xi32>, tensor<4x1xbf16>, tensor<4x1xbf16> -> !qtune.qweight<4x96, #qtune.uniform<bits = 3>>
func.func @qweight_uniform3_per_channel(%codes: tensor<4x9xi32>, %scales: tensor<4x1xbf16>,
                                        %zeros: tensor<4x1xbf16>)
    -> !qtune.qweight<4x96, #qtune.uniform<bits = 3>> {
  %w = qtune.qweight %codes, %scales, %zeros
      : tensor<4x9xi32>, tensor<4x1xbf16>, tensor<4x1xbf16>
      -> !qtune.qweight<4x96, #qtune.uniform<bits = 3>>
  return %w : !qtune.qweight<4x96, #qtune.uniform<bits = 3>>
}

// 3-bit, group 16, K = 48: codes i32[2, ceil(144/32) = 5], f16 scales/zeros [2, 3].
// CHECK-LABEL: func.func @qweight_uniform3_group_f16
// CHECK: qtune.qweight %{{.*}}, %{{.*}}, %{{.*}} : tensor<2x5xi32>, tensor<2x3xf16>, tensor<2x3xf16> -> !qtune.qweight<2x48, #qtune.uniform<bits = 3, group = 16, scale_type = f16>>
func.func @qweight_uniform3_group_f16(%codes: tensor<2x5xi32>, %scales: tensor<2x3xf16>,
                                      %zeros: tensor<2x3xf16>)
    -> !qtune.qweight<2x48, #qtune.uniform<bits = 3, group = 16, scale_type = f16>> {
  %w = qtune.qweight %codes, %scales, %zeros
      : tensor<2x5xi32>, tensor<2x3xf16>, tensor<2x3xf16>
      -> !qtune.qweight<2x48, #qtune.uniform<bits = 3, group = 16, scale_type = f16>>
  return %w : !qtune.qweight<2x48, #qtune.uniform<bits = 3, group = 16, scale_type = f16>>
}

// 4-bit symmetric, f32 scales: no zeros component.
// CHECK-LABEL: func.func @qweight_uniform4_symmetric
// CHECK: qtune.qweight %{{.*}}, %{{.*}} : tensor<64x16xi32>, tensor<64x2xf32> -> !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 64, symmetric = true, scale_type = f32>>
func.func @qweight_uniform4_symmetric(%codes: tensor<64x16xi32>, %scales: tensor<64x2xf32>)
    -> !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 64, symmetric = true, scale_type = f32>> {
  %w = qtune.qweight %codes, %scales : tensor<64x16xi32>, tensor<64x2xf32>
      -> !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 64, symmetric = true, scale_type = f32>>
  return %w : !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 64, symmetric = true, scale_type = f32>>
}

// 4-bit per channel with K = 100: codes i32[3, ceil(400/32) = 13].
// CHECK-LABEL: func.func @qweight_uniform4_k100
// CHECK: qtune.qweight %{{.*}}, %{{.*}}, %{{.*}} : tensor<3x13xi32>, tensor<3x1xbf16>, tensor<3x1xbf16> -> !qtune.qweight<3x100, #qtune.uniform<bits = 4>>
func.func @qweight_uniform4_k100(%codes: tensor<3x13xi32>, %scales: tensor<3x1xbf16>,
                                 %zeros: tensor<3x1xbf16>)
    -> !qtune.qweight<3x100, #qtune.uniform<bits = 4>> {
  %w = qtune.qweight %codes, %scales, %zeros
      : tensor<3x13xi32>, tensor<3x1xbf16>, tensor<3x1xbf16>
      -> !qtune.qweight<3x100, #qtune.uniform<bits = 4>>
  return %w : !qtune.qweight<3x100, #qtune.uniform<bits = 4>>
}

// 8-bit, group 8, K = 40: codes i32[16, 10], scales/zeros bf16[16, 5].
// CHECK-LABEL: func.func @qweight_uniform8_group
// CHECK: qtune.qweight %{{.*}}, %{{.*}}, %{{.*}} : tensor<16x10xi32>, tensor<16x5xbf16>, tensor<16x5xbf16> -> !qtune.qweight<16x40, #qtune.uniform<bits = 8, group = 8>>
func.func @qweight_uniform8_group(%codes: tensor<16x10xi32>, %scales: tensor<16x5xbf16>,
                                  %zeros: tensor<16x5xbf16>)
    -> !qtune.qweight<16x40, #qtune.uniform<bits = 8, group = 8>> {
  %w = qtune.qweight %codes, %scales, %zeros
      : tensor<16x10xi32>, tensor<16x5xbf16>, tensor<16x5xbf16>
      -> !qtune.qweight<16x40, #qtune.uniform<bits = 8, group = 8>>
  return %w : !qtune.qweight<16x40, #qtune.uniform<bits = 8, group = 8>>
}

// NF4 without double quantization: codes i32[8, 16], absmax f32[8, 128/64 = 2].
// CHECK-LABEL: func.func @qweight_nf4
// CHECK: qtune.qweight %{{.*}}, %{{.*}} : tensor<8x16xi32>, tensor<8x2xf32> -> !qtune.qweight<8x128, #qtune.nf4<>>
func.func @qweight_nf4(%codes: tensor<8x16xi32>, %absmax: tensor<8x2xf32>)
    -> !qtune.qweight<8x128, #qtune.nf4<>> {
  %w = qtune.qweight %codes, %absmax : tensor<8x16xi32>, tensor<8x2xf32>
      -> !qtune.qweight<8x128, #qtune.nf4<block = 64>>
  return %w : !qtune.qweight<8x128, #qtune.nf4<block = 64>>
}

// NF4 with double quantization, K = 192, block 32: 6 absmax values per row, stored
// as 8-bit codes i32[4, ceil(48/32) = 2], ceil(6/4) = 2 second-level scales per
// row, one offset.
// CHECK-LABEL: func.func @qweight_nf4_double_quant
// CHECK: qtune.qweight %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<4x24xi32>, tensor<4x2xi32>, tensor<4x2xf32>, tensor<1xf32> -> !qtune.qweight<4x192, #qtune.nf4<block = 32, double_quant = true, dq_block = 4>>
func.func @qweight_nf4_double_quant(%codes: tensor<4x24xi32>, %acodes: tensor<4x2xi32>,
                                    %ascales: tensor<4x2xf32>, %aoffset: tensor<1xf32>)
    -> !qtune.qweight<4x192, #qtune.nf4<block = 32, double_quant = true, dq_block = 4>> {
  %w = qtune.qweight %codes, %acodes, %ascales, %aoffset
      : tensor<4x24xi32>, tensor<4x2xi32>, tensor<4x2xf32>, tensor<1xf32>
      -> !qtune.qweight<4x192, #qtune.nf4<block = 32, double_quant = true, dq_block = 4>>
  return %w : !qtune.qweight<4x192, #qtune.nf4<block = 32, double_quant = true, dq_block = 4>>
}

// Codebook per tensor: table f32[2^3].
// CHECK-LABEL: func.func @qweight_lut_per_tensor
// CHECK: qtune.qweight %{{.*}}, %{{.*}} : tensor<4x9xi32>, tensor<8xf32> -> !qtune.qweight<4x96, #qtune.lut<bits = 3>>
func.func @qweight_lut_per_tensor(%codes: tensor<4x9xi32>, %table: tensor<8xf32>)
    -> !qtune.qweight<4x96, #qtune.lut<bits = 3>> {
  %w = qtune.qweight %codes, %table : tensor<4x9xi32>, tensor<8xf32>
      -> !qtune.qweight<4x96, #qtune.lut<bits = 3>>
  return %w : !qtune.qweight<4x96, #qtune.lut<bits = 3>>
}

// Codebook per group of 32: table f32[N, K/32, 2^4].
// CHECK-LABEL: func.func @qweight_lut_per_group
// CHECK: qtune.qweight %{{.*}}, %{{.*}} : tensor<4x8xi32>, tensor<4x2x16xf32> -> !qtune.qweight<4x64, #qtune.lut<bits = 4, group = 32>>
func.func @qweight_lut_per_group(%codes: tensor<4x8xi32>, %table: tensor<4x2x16xf32>)
    -> !qtune.qweight<4x64, #qtune.lut<bits = 4, group = 32>> {
  %w = qtune.qweight %codes, %table : tensor<4x8xi32>, tensor<4x2x16xf32>
      -> !qtune.qweight<4x64, #qtune.lut<bits = 4, group = 32>>
  return %w : !qtune.qweight<4x64, #qtune.lut<bits = 4, group = 32>>
}

// A scale-only (PEQA) layer: scales train, codes and zero points stay frozen.
// CHECK-LABEL: func.func @qweight_scale_only
// CHECK-SAME: %{{.*}}: tensor<8x4xi32> {qtune.role = #qtune.role<frozen>}
// CHECK-SAME: %{{.*}}: tensor<8x2xbf16> {qtune.role = #qtune.role<trainable>}
// CHECK-SAME: %{{.*}}: tensor<8x2xbf16> {qtune.role = #qtune.role<frozen>}
// CHECK: qtune.qweight scale_only %{{.*}}, %{{.*}}, %{{.*}} : tensor<8x4xi32>, tensor<8x2xbf16>, tensor<8x2xbf16> -> !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
func.func @qweight_scale_only(
    %codes: tensor<8x4xi32> {qtune.role = #qtune.role<frozen>},
    %scales: tensor<8x2xbf16> {qtune.role = #qtune.role<trainable>},
    %zeros: tensor<8x2xbf16> {qtune.role = #qtune.role<frozen>})
    -> !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>> {
  %w = qtune.qweight scale_only %codes, %scales, %zeros
      : tensor<8x4xi32>, tensor<8x2xbf16>, tensor<8x2xbf16>
      -> !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
  return %w : !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
}

// Scale-only NF4: absmax is the scale.
// CHECK-LABEL: func.func @qweight_scale_only_nf4
// CHECK: qtune.qweight scale_only %{{.*}}, %{{.*}} : tensor<8x16xi32>, tensor<8x2xf32> -> !qtune.qweight<8x128, #qtune.nf4<>>
func.func @qweight_scale_only_nf4(
    %codes: tensor<8x16xi32>,
    %absmax: tensor<8x2xf32> {qtune.role = #qtune.role<trainable>})
    -> !qtune.qweight<8x128, #qtune.nf4<>> {
  %w = qtune.qweight scale_only %codes, %absmax : tensor<8x16xi32>, tensor<8x2xf32>
      -> !qtune.qweight<8x128, #qtune.nf4<>>
  return %w : !qtune.qweight<8x128, #qtune.nf4<>>
}

// Trainable codebook and trainable zero points (outside a scale-only layer).
// CHECK-LABEL: func.func @qweight_trainable_float_components
// CHECK: qtune.qweight %{{.*}}, %{{.*}} : tensor<4x9xi32>, tensor<8xf32> -> !qtune.qweight<4x96, #qtune.lut<bits = 3>>
// CHECK: qtune.qweight %{{.*}}, %{{.*}}, %{{.*}} : tensor<8x4xi32>, tensor<8x2xbf16>, tensor<8x2xbf16> -> !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
func.func @qweight_trainable_float_components(
    %codes: tensor<4x9xi32> {qtune.role = #qtune.role<frozen>},
    %table: tensor<8xf32> {qtune.role = #qtune.role<trainable>},
    %ucodes: tensor<8x4xi32> {qtune.role = #qtune.role<input>},
    %scales: tensor<8x2xbf16> {qtune.role = #qtune.role<trainable>},
    %zeros: tensor<8x2xbf16> {qtune.role = #qtune.role<trainable>})
    -> (!qtune.qweight<4x96, #qtune.lut<bits = 3>>,
        !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>) {
  %w = qtune.qweight %codes, %table : tensor<4x9xi32>, tensor<8xf32>
      -> !qtune.qweight<4x96, #qtune.lut<bits = 3>>
  %u = qtune.qweight %ucodes, %scales, %zeros
      : tensor<8x4xi32>, tensor<8x2xbf16>, tensor<8x2xbf16>
      -> !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
  return %w, %u : !qtune.qweight<4x96, #qtune.lut<bits = 3>>,
                  !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
}

//===----------------------------------------------------------------------===//
// qtune.dequant
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @dequant
// CHECK: qtune.dequant %{{.*}} : !qtune.qweight<4x96, #qtune.uniform<bits = 3>> -> tensor<4x96xf32>
// CHECK: qtune.dequant %{{.*}} : !qtune.qweight<8x128, #qtune.nf4<>> -> tensor<8x128xbf16>
// CHECK: qtune.dequant %{{.*}} : !qtune.qweight<4x64, #qtune.lut<bits = 4, group = 32>> -> tensor<4x64xf16>
func.func @dequant(%a: !qtune.qweight<4x96, #qtune.uniform<bits = 3>>,
                   %b: !qtune.qweight<8x128, #qtune.nf4<>>,
                   %c: !qtune.qweight<4x64, #qtune.lut<bits = 4, group = 32>>)
    -> (tensor<4x96xf32>, tensor<8x128xbf16>, tensor<4x64xf16>) {
  %0 = qtune.dequant %a : !qtune.qweight<4x96, #qtune.uniform<bits = 3>> -> tensor<4x96xf32>
  %1 = qtune.dequant %b : !qtune.qweight<8x128, #qtune.nf4<>> -> tensor<8x128xbf16>
  %2 = qtune.dequant %c : !qtune.qweight<4x64, #qtune.lut<bits = 4, group = 32>> -> tensor<4x64xf16>
  return %0, %1, %2 : tensor<4x96xf32>, tensor<8x128xbf16>, tensor<4x64xf16>
}

//===----------------------------------------------------------------------===//
// qtune.linear
//===----------------------------------------------------------------------===//

// No batch dimension: x is [K].
// CHECK-LABEL: func.func @linear_vector
// CHECK: qtune.linear %{{.*}}, %{{.*}} : tensor<128xf32>, !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 64>> -> tensor<64xf32>
func.func @linear_vector(%x: tensor<128xf32>,
                         %w: !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 64>>)
    -> tensor<64xf32> {
  %y = qtune.linear %x, %w : tensor<128xf32>, !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 64>> -> tensor<64xf32>
  return %y : tensor<64xf32>
}

// One leading batch dimension.
// CHECK-LABEL: func.func @linear_qweight_1d_batch
// CHECK: qtune.linear %{{.*}}, %{{.*}} : tensor<8x128xbf16>, !qtune.qweight<64x128, #qtune.nf4<>> -> tensor<8x64xbf16>
func.func @linear_qweight_1d_batch(%x: tensor<8x128xbf16>, %w: !qtune.qweight<64x128, #qtune.nf4<>>)
    -> tensor<8x64xbf16> {
  %y = qtune.linear %x, %w : tensor<8x128xbf16>, !qtune.qweight<64x128, #qtune.nf4<>> -> tensor<8x64xbf16>
  return %y : tensor<8x64xbf16>
}

// Two leading batch dimensions.
// CHECK-LABEL: func.func @linear_qweight_2d_batch
// CHECK: qtune.linear %{{.*}}, %{{.*}} : tensor<2x8x128xbf16>, !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 64>> -> tensor<2x8x64xbf16>
func.func @linear_qweight_2d_batch(%x: tensor<2x8x128xbf16>,
                                   %w: !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 64>>)
    -> tensor<2x8x64xbf16> {
  %y = qtune.linear %x, %w : tensor<2x8x128xbf16>, !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 64>> -> tensor<2x8x64xbf16>
  return %y : tensor<2x8x64xbf16>
}

// Three leading batch dimensions, with a bias.
// CHECK-LABEL: func.func @linear_qweight_3d_batch_bias
// CHECK: qtune.linear %{{.*}}, %{{.*}}, %{{.*}} : tensor<2x3x5x96xf16>, !qtune.qweight<16x96, #qtune.lut<bits = 3>>, tensor<16xf16> -> tensor<2x3x5x16xf16>
func.func @linear_qweight_3d_batch_bias(%x: tensor<2x3x5x96xf16>,
                                        %w: !qtune.qweight<16x96, #qtune.lut<bits = 3>>,
                                        %b: tensor<16xf16>) -> tensor<2x3x5x16xf16> {
  %y = qtune.linear %x, %w, %b : tensor<2x3x5x96xf16>, !qtune.qweight<16x96, #qtune.lut<bits = 3>>, tensor<16xf16> -> tensor<2x3x5x16xf16>
  return %y : tensor<2x3x5x16xf16>
}

// Dense weight, without and with a bias.
// CHECK-LABEL: func.func @linear_dense
// CHECK: qtune.linear %{{.*}}, %{{.*}} : tensor<8x128xf32>, tensor<64x128xf32> -> tensor<8x64xf32>
// CHECK: qtune.linear %{{.*}}, %{{.*}}, %{{.*}} : tensor<8x128xf32>, tensor<64x128xf32>, tensor<64xf32> -> tensor<8x64xf32>
func.func @linear_dense(%x: tensor<8x128xf32>, %w: tensor<64x128xf32>, %b: tensor<64xf32>)
    -> (tensor<8x64xf32>, tensor<8x64xf32>) {
  %y = qtune.linear %x, %w : tensor<8x128xf32>, tensor<64x128xf32> -> tensor<8x64xf32>
  %z = qtune.linear %x, %w, %b : tensor<8x128xf32>, tensor<64x128xf32>, tensor<64xf32> -> tensor<8x64xf32>
  return %y, %z : tensor<8x64xf32>, tensor<8x64xf32>
}

// Dense weight of another float type than x, dynamic batch dimensions.
// CHECK-LABEL: func.func @linear_dense_dynamic
// CHECK: qtune.linear %{{.*}}, %{{.*}}, %{{.*}} : tensor<?x?x32xbf16>, tensor<16x32xf32>, tensor<16xf32> -> tensor<?x?x16xbf16>
func.func @linear_dense_dynamic(%x: tensor<?x?x32xbf16>, %w: tensor<16x32xf32>, %b: tensor<16xf32>)
    -> tensor<?x?x16xbf16> {
  %y = qtune.linear %x, %w, %b : tensor<?x?x32xbf16>, tensor<16x32xf32>, tensor<16xf32> -> tensor<?x?x16xbf16>
  return %y : tensor<?x?x16xbf16>
}

// The whole chain: components -> qweight -> linear.
// CHECK-LABEL: func.func @linear_of_components
// CHECK: %[[W:.*]] = qtune.qweight %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<4x24xi32>, tensor<4x2xi32>, tensor<4x2xf32>, tensor<1xf32> -> !qtune.qweight<4x192, #qtune.nf4<block = 32, double_quant = true, dq_block = 4>>
// CHECK: qtune.linear %{{.*}}, %[[W]] : tensor<3x192xf32>, !qtune.qweight<4x192, #qtune.nf4<block = 32, double_quant = true, dq_block = 4>> -> tensor<3x4xf32>
func.func @linear_of_components(%x: tensor<3x192xf32>, %codes: tensor<4x24xi32>,
                                %acodes: tensor<4x2xi32>, %ascales: tensor<4x2xf32>,
                                %aoffset: tensor<1xf32>) -> tensor<3x4xf32> {
  %w = qtune.qweight %codes, %acodes, %ascales, %aoffset
      : tensor<4x24xi32>, tensor<4x2xi32>, tensor<4x2xf32>, tensor<1xf32>
      -> !qtune.qweight<4x192, #qtune.nf4<block = 32, double_quant = true, dq_block = 4>>
  %y = qtune.linear %x, %w : tensor<3x192xf32>, !qtune.qweight<4x192, #qtune.nf4<block = 32, double_quant = true, dq_block = 4>> -> tensor<3x4xf32>
  return %y : tensor<3x4xf32>
}

//===----------------------------------------------------------------------===//
// qtune.lora
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @lora
// CHECK: qtune.lora %{{.*}}, %{{.*}}, %{{.*}} {alpha = 1.600000e+01 : f64, rank = 8 : i64} : tensor<8x128xf32>, tensor<8x128xf32>, tensor<64x8xf32> -> tensor<8x64xf32>
func.func @lora(%x: tensor<8x128xf32>, %a: tensor<8x128xf32>, %b: tensor<64x8xf32>)
    -> tensor<8x64xf32> {
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64}
      : tensor<8x128xf32>, tensor<8x128xf32>, tensor<64x8xf32> -> tensor<8x64xf32>
  return %d : tensor<8x64xf32>
}

// CHECK-LABEL: func.func @lora_dropout_batched
// CHECK: qtune.lora %{{.*}}, %{{.*}}, %{{.*}} {alpha = 3.200000e+01 : f64, dropout = 1.000000e-01 : f64, rank = 16 : i64} : tensor<2x4x96xbf16>, tensor<16x96xbf16>, tensor<48x16xbf16> -> tensor<2x4x48xbf16>
func.func @lora_dropout_batched(%x: tensor<2x4x96xbf16>, %a: tensor<16x96xbf16>, %b: tensor<48x16xbf16>)
    -> tensor<2x4x48xbf16> {
  %d = qtune.lora %x, %a, %b {alpha = 32.0 : f64, rank = 16 : i64, dropout = 0.1 : f64}
      : tensor<2x4x96xbf16>, tensor<16x96xbf16>, tensor<48x16xbf16> -> tensor<2x4x48xbf16>
  return %d : tensor<2x4x48xbf16>
}

// A QLoRA layer: frozen NF4 base weight plus a trainable adapter, with roles and
// names on the arguments.
// CHECK-LABEL: func.func @qlora_layer
// CHECK-SAME: %{{.*}}: tensor<4x128xbf16> {qtune.name = "x", qtune.role = #qtune.role<input>}
// CHECK-SAME: %{{.*}}: tensor<64x16xi32> {qtune.name = "layer.codes", qtune.role = #qtune.role<frozen>}
// CHECK-SAME: %{{.*}}: tensor<64x2xf32> {qtune.name = "layer.absmax", qtune.role = #qtune.role<frozen>}
// CHECK-SAME: %{{.*}}: tensor<8x128xbf16> {qtune.name = "layer.lora_A", qtune.role = #qtune.role<trainable>}
// CHECK-SAME: %{{.*}}: tensor<64x8xbf16> {qtune.name = "layer.lora_B", qtune.role = #qtune.role<trainable>}
// CHECK-SAME: %{{.*}}: tensor<8x128xf32> {qtune.name = "adam.m.lora_A", qtune.role = #qtune.role<optimizer_state>}
// CHECK-SAME: %{{.*}}: tensor<64x8xf32> {qtune.role = #qtune.role<optimizer_state>}
// CHECK-SAME: %{{.*}}: tensor<64xbf16> {qtune.name = "layer.bias"}) -> (tensor<4x64xbf16> {qtune.name = "y"})
// CHECK: %[[W:.*]] = qtune.qweight %{{.*}}, %{{.*}} : tensor<64x16xi32>, tensor<64x2xf32> -> !qtune.qweight<64x128, #qtune.nf4<>>
// CHECK: %[[Y:.*]] = qtune.linear %{{.*}}, %[[W]], %{{.*}} : tensor<4x128xbf16>, !qtune.qweight<64x128, #qtune.nf4<>>, tensor<64xbf16> -> tensor<4x64xbf16>
// CHECK: %[[D:.*]] = qtune.lora %{{.*}}, %{{.*}}, %{{.*}} {alpha = 1.600000e+01 : f64, rank = 8 : i64} : tensor<4x128xbf16>, tensor<8x128xbf16>, tensor<64x8xbf16> -> tensor<4x64xbf16>
// CHECK: arith.addf %[[Y]], %[[D]] : tensor<4x64xbf16>
func.func @qlora_layer(
    %x: tensor<4x128xbf16> {qtune.role = #qtune.role<input>, qtune.name = "x"},
    %codes: tensor<64x16xi32> {qtune.role = #qtune.role<frozen>, qtune.name = "layer.codes"},
    %absmax: tensor<64x2xf32> {qtune.role = #qtune.role<frozen>, qtune.name = "layer.absmax"},
    %a: tensor<8x128xbf16> {qtune.role = #qtune.role<trainable>, qtune.name = "layer.lora_A"},
    %b: tensor<64x8xbf16> {qtune.role = #qtune.role<trainable>, qtune.name = "layer.lora_B"},
    %ma: tensor<8x128xf32> {qtune.role = #qtune.role<optimizer_state>, qtune.name = "adam.m.lora_A"},
    %mb: tensor<64x8xf32> {qtune.role = #qtune.role<optimizer_state>},
    %bias: tensor<64xbf16> {qtune.name = "layer.bias"}) -> (tensor<4x64xbf16> {qtune.name = "y"}) {
  %w = qtune.qweight %codes, %absmax : tensor<64x16xi32>, tensor<64x2xf32>
      -> !qtune.qweight<64x128, #qtune.nf4<>>
  %y = qtune.linear %x, %w, %bias : tensor<4x128xbf16>, !qtune.qweight<64x128, #qtune.nf4<>>, tensor<64xbf16> -> tensor<4x64xbf16>
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64}
      : tensor<4x128xbf16>, tensor<8x128xbf16>, tensor<64x8xbf16> -> tensor<4x64xbf16>
  %r = arith.addf %y, %d : tensor<4x64xbf16>
  return %r : tensor<4x64xbf16>
}

// CHECK-LABEL: func.func @fused_linear_all_parts
// CHECK: qtune.fused_linear %{{.*}}, %{{.*}} bias(%{{.*}} : tensor<16xf32>) lora(%{{.*}}, %{{.*}} : tensor<2x32xf32>, tensor<16x2xf32>) residual(%{{.*}} : tensor<4x16xf32>) {lora_alpha = 4.000000e+00 : f64, lora_rank = 2 : i64} : tensor<4x32xf32>, !qtune.qweight<16x32, #qtune.nf4<block = 16>> -> tensor<4x16xf32>
// CHECK: qtune.fused_linear %{{.*}}, %{{.*}} : tensor<4x32xf32>, tensor<16x32xf32> -> tensor<4x16xf32>
func.func @fused_linear_all_parts(%x: tensor<4x32xf32>, %w: !qtune.qweight<16x32, #qtune.nf4<block = 16>>,
                                  %d: tensor<16x32xf32>, %bias: tensor<16xf32>, %a: tensor<2x32xf32>,
                                  %b: tensor<16x2xf32>, %r: tensor<4x16xf32>) -> (tensor<4x16xf32>, tensor<4x16xf32>) {
  %y = qtune.fused_linear %x, %w bias(%bias : tensor<16xf32>) lora(%a, %b : tensor<2x32xf32>, tensor<16x2xf32>) residual(%r : tensor<4x16xf32>) {lora_alpha = 4.0 : f64, lora_rank = 2 : i64} : tensor<4x32xf32>, !qtune.qweight<16x32, #qtune.nf4<block = 16>> -> tensor<4x16xf32>
  %z = qtune.fused_linear %x, %d : tensor<4x32xf32>, tensor<16x32xf32> -> tensor<4x16xf32>
  return %y, %z : tensor<4x16xf32>, tensor<4x16xf32>
}

// QFT: trainable 8-bit codes, and the fused Lion step on them.
// CHECK-LABEL: func.func @qft
// CHECK: qtune.qweight %{{.*}}, %{{.*}} : tensor<16x8xi32>, tensor<16x1xbf16> -> !qtune.qweight<16x32, #qtune.uniform<bits = 8, symmetric = true>>
// CHECK: qtune.qft_lion %{{.*}}, %{{.*}}, %{{.*}}, params(%{{.*}} : tensor<16x1xbf16>), %{{.*}}, %{{.*}}, %{{.*}} {block = 32 : i64, format = #qtune.uniform<bits = 8, symmetric = true>} : tensor<4x16xbf16>, tensor<4x32xbf16>, tensor<16x8xi32>, tensor<16x32xi8>, tensor<16xf32>, tensor<f32> -> tensor<16x8xi32>, tensor<16x32xi8>, tensor<16xf32>
func.func @qft(%c: tensor<16x8xi32> {qtune.role = #qtune.role<trainable>}, %s: tensor<16x1xbf16>,
               %g: tensor<4x16xbf16>, %x: tensor<4x32xbf16>, %m: tensor<16x32xi8>, %ms: tensor<16xf32>,
               %lr: tensor<f32>) -> (tensor<16x8xi32>, tensor<16x32xi8>, tensor<16xf32>) {
  %w = qtune.qweight %c, %s : tensor<16x8xi32>, tensor<16x1xbf16> -> !qtune.qweight<16x32, #qtune.uniform<bits = 8, symmetric = true>>
  %nc, %nm, %ns = qtune.qft_lion %g, %x, %c, params(%s : tensor<16x1xbf16>), %m, %ms, %lr
      {format = #qtune.uniform<bits = 8, symmetric = true>, block = 32 : i64}
      : tensor<4x16xbf16>, tensor<4x32xbf16>, tensor<16x8xi32>, tensor<16x32xi8>, tensor<16xf32>, tensor<f32>
      -> tensor<16x8xi32>, tensor<16x32xi8>, tensor<16xf32>
  return %nc, %nm, %ns : tensor<16x8xi32>, tensor<16x32xi8>, tensor<16xf32>
}

//===----------------------------------------------------------------------===//
// Decoder ops and their gradient ops
//===----------------------------------------------------------------------===//

// CHECK-LABEL: func.func @decoder_ops
// CHECK: qtune.embedding %{{.*}}, %{{.*}} : tensor<16x8xbf16>, tensor<2x4xi32> -> tensor<2x4x8xbf16>
// CHECK: qtune.rms_norm %{{.*}}, %{{.*}} {eps = 1.000000e-05 : f64} : tensor<2x4x8xbf16>, tensor<8xbf16> -> tensor<2x4x8xbf16>
// CHECK: qtune.rope %{{.*}} {head_dim = 4 : i64, theta = 5.000000e+05 : f64} : tensor<2x4x8xbf16>
// CHECK: qtune.rope %{{.*}} {head_dim = 4 : i64, inverse} : tensor<2x4x8xbf16>
// CHECK: qtune.attention %{{.*}}, %{{.*}}, %{{.*}} {heads = 2 : i64, kv_heads = 1 : i64} : tensor<2x4x8xbf16>, tensor<2x4x4xbf16>, tensor<2x4x4xbf16> -> tensor<2x4x8xbf16>, tensor<2x2x4xf32>
// CHECK: qtune.attention %{{.*}}, %{{.*}}, %{{.*}} {causal = false, heads = 2 : i64, kv_heads = 1 : i64, scale = 1.250000e-01 : f64}
// CHECK: qtune.swiglu %{{.*}}, %{{.*}} : tensor<2x4x8xbf16>
// CHECK: qtune.embedding_grad
// CHECK: qtune.rms_norm_grad
// CHECK: qtune.rms_norm_weight_grad
// CHECK: qtune.attention_grad {{.*}} -> tensor<2x4x8xbf16>, tensor<2x4x4xbf16>, tensor<2x4x4xbf16>
// CHECK: qtune.swiglu_grad {{.*}} : tensor<2x4x8xbf16> -> tensor<2x4x8xbf16>, tensor<2x4x8xbf16>
func.func @decoder_ops(%t: tensor<16x8xbf16>, %ids: tensor<2x4xi32>, %w: tensor<8xbf16>,
                       %k: tensor<2x4x4xbf16>, %g: tensor<2x4x8xbf16>) {
  %h = qtune.embedding %t, %ids : tensor<16x8xbf16>, tensor<2x4xi32> -> tensor<2x4x8xbf16>
  %n = qtune.rms_norm %h, %w {eps = 1.0e-5 : f64} : tensor<2x4x8xbf16>, tensor<8xbf16> -> tensor<2x4x8xbf16>
  %r = qtune.rope %n {head_dim = 4 : i64, theta = 500000.0 : f64} : tensor<2x4x8xbf16>
  %ri = qtune.rope %r {head_dim = 4 : i64, inverse} : tensor<2x4x8xbf16>
  %o, %lse = qtune.attention %r, %k, %k {heads = 2 : i64, kv_heads = 1 : i64} : tensor<2x4x8xbf16>, tensor<2x4x4xbf16>, tensor<2x4x4xbf16> -> tensor<2x4x8xbf16>, tensor<2x2x4xf32>
  %o2, %lse2 = qtune.attention %r, %k, %k {heads = 2 : i64, kv_heads = 1 : i64, scale = 0.125 : f64, causal = false} : tensor<2x4x8xbf16>, tensor<2x4x4xbf16>, tensor<2x4x4xbf16> -> tensor<2x4x8xbf16>, tensor<2x2x4xf32>
  %s = qtune.swiglu %o, %r : tensor<2x4x8xbf16>
  %de = qtune.embedding_grad %g, %ids : tensor<2x4x8xbf16>, tensor<2x4xi32> -> tensor<16x8xf32>
  %dn = qtune.rms_norm_grad %g, %h, %w {eps = 1.0e-5 : f64} : tensor<2x4x8xbf16>, tensor<2x4x8xbf16>, tensor<8xbf16> -> tensor<2x4x8xbf16>
  %dw = qtune.rms_norm_weight_grad %g, %h {eps = 1.0e-5 : f64} : tensor<2x4x8xbf16>, tensor<2x4x8xbf16> -> tensor<8xbf16>
  %dq, %dk, %dv = qtune.attention_grad %r, %k, %k, %o, %lse, %g {heads = 2 : i64, kv_heads = 1 : i64, scale = 0.5 : f64, causal = true} : tensor<2x4x8xbf16>, tensor<2x4x4xbf16>, tensor<2x4x4xbf16>, tensor<2x4x8xbf16>, tensor<2x2x4xf32>, tensor<2x4x8xbf16> -> tensor<2x4x8xbf16>, tensor<2x4x4xbf16>, tensor<2x4x4xbf16>
  %dg, %du = qtune.swiglu_grad %o, %r, %g : tensor<2x4x8xbf16> -> tensor<2x4x8xbf16>, tensor<2x4x8xbf16>
  return
}

// Attention over packed documents: segment ids, forward and gradient.
// CHECK-LABEL: func.func @attention_segments
// CHECK: qtune.attention %{{.*}}, %{{.*}}, %{{.*}} segments %{{.*}} {heads = 2 : i64, kv_heads = 1 : i64} : tensor<2x4x8xbf16>, tensor<2x4x4xbf16>, tensor<2x4x4xbf16>, tensor<2x4xi32> -> tensor<2x4x8xbf16>, tensor<2x2x4xf32>
// CHECK: qtune.attention_grad {{.*}} segments %{{.*}} {{{.*}}} : {{.*}}, tensor<2x4xi32> -> tensor<2x4x8xbf16>, tensor<2x4x4xbf16>, tensor<2x4x4xbf16>
func.func @attention_segments(%q: tensor<2x4x8xbf16>, %k: tensor<2x4x4xbf16>, %seg: tensor<2x4xi32>) {
  %o, %lse = qtune.attention %q, %k, %k segments %seg {heads = 2 : i64, kv_heads = 1 : i64} : tensor<2x4x8xbf16>, tensor<2x4x4xbf16>, tensor<2x4x4xbf16>, tensor<2x4xi32> -> tensor<2x4x8xbf16>, tensor<2x2x4xf32>
  %dq, %dk, %dv = qtune.attention_grad %q, %k, %k, %o, %lse, %o segments %seg {heads = 2 : i64, kv_heads = 1 : i64, scale = 0.5 : f64, causal = true} : tensor<2x4x8xbf16>, tensor<2x4x4xbf16>, tensor<2x4x4xbf16>, tensor<2x4x8xbf16>, tensor<2x2x4xf32>, tensor<2x4x8xbf16>, tensor<2x4xi32> -> tensor<2x4x8xbf16>, tensor<2x4x4xbf16>, tensor<2x4x4xbf16>
  return
}
