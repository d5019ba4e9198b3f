// RUN: qtune-opt %s -canonicalize | FileCheck %s

// linear(x, dequant(w)) -> linear(x, w): the weight stays quantized and the
// dequantization, now dead, is erased.

// CHECK-LABEL: func.func @linear_of_dequant
// CHECK-SAME: (%[[X:.*]]: tensor<8x128xf32>, %[[W:.*]]: !qtune.qweight<64x128, #qtune.nf4<>>)
// CHECK-NOT: qtune.dequant
// CHECK: %[[Y:.*]] = qtune.linear %[[X]], %[[W]] : tensor<8x128xf32>, !qtune.qweight<64x128, #qtune.nf4<>> -> tensor<8x64xf32>
// CHECK-NOT: qtune.dequant
// CHECK: return %[[Y]]
func.func @linear_of_dequant(%x: tensor<8x128xf32>, %w: !qtune.qweight<64x128, #qtune.nf4<>>)
    -> tensor<8x64xf32> {
  %d = qtune.dequant %w : !qtune.qweight<64x128, #qtune.nf4<>> -> tensor<64x128xf32>
  %y = qtune.linear %x, %d : tensor<8x128xf32>, tensor<64x128xf32> -> tensor<8x64xf32>
  return %y : tensor<8x64xf32>
}

// With a bias and batch dimensions, on a weight assembled from components; the
// bias operand is kept.
// CHECK-LABEL: func.func @linear_of_dequant_bias
// CHECK-SAME: (%[[X:.*]]: tensor<2x3x96xbf16>, %[[C:.*]]: tensor<16x9xi32>, %[[S:.*]]: tensor<16x2xbf16>, %[[Z:.*]]: tensor<16x2xbf16>, %[[B:.*]]: tensor<16xbf16>)
// CHECK: %[[W:.*]] = qtune.qweight %[[C]], %[[S]], %[[Z]]
// CHECK-NOT: qtune.dequant
// CHECK: %[[Y:.*]] = qtune.linear %[[X]], %[[W]], %[[B]] : tensor<2x3x96xbf16>, !qtune.qweight<16x96, #qtune.uniform<bits = 3, group = 48>>, tensor<16xbf16> -> tensor<2x3x16xbf16>
// CHECK-NOT: qtune.dequant
// CHECK: return %[[Y]]
func.func @linear_of_dequant_bias(%x: tensor<2x3x96xbf16>, %codes: tensor<16x9xi32>,
                                  %scales: tensor<16x2xbf16>, %zeros: tensor<16x2xbf16>,
                                  %bias: tensor<16xbf16>) -> tensor<2x3x16xbf16> {
  %w = qtune.qweight %codes, %scales, %zeros : tensor<16x9xi32>, tensor<16x2xbf16>, tensor<16x2xbf16>
      -> !qtune.qweight<16x96, #qtune.uniform<bits = 3, group = 48>>
  %d = qtune.dequant %w : !qtune.qweight<16x96, #qtune.uniform<bits = 3, group = 48>> -> tensor<16x96xbf16>
  %y = qtune.linear %x, %d, %bias : tensor<2x3x96xbf16>, tensor<16x96xbf16>, tensor<16xbf16> -> tensor<2x3x16xbf16>
  return %y : tensor<2x3x16xbf16>
}

// Two linears share one dequantized weight: both are rewritten and the dequant
// goes away.
// CHECK-LABEL: func.func @shared_dequant
// CHECK-SAME: (%[[X:.*]]: tensor<4x64xf32>, %[[W:.*]]: !qtune.qweight<32x64, #qtune.lut<bits = 4, group = 32>>)
// CHECK-NOT: qtune.dequant
// CHECK: qtune.linear %[[X]], %[[W]] : tensor<4x64xf32>, !qtune.qweight<32x64, #qtune.lut<bits = 4, group = 32>> -> tensor<4x32xf32>
// CHECK: qtune.linear %[[X]], %[[W]] : tensor<4x64xf32>, !qtune.qweight<32x64, #qtune.lut<bits = 4, group = 32>> -> tensor<4x32xf32>
// CHECK-NOT: qtune.dequant
func.func @shared_dequant(%x: tensor<4x64xf32>, %w: !qtune.qweight<32x64, #qtune.lut<bits = 4, group = 32>>)
    -> (tensor<4x32xf32>, tensor<4x32xf32>) {
  %d = qtune.dequant %w : !qtune.qweight<32x64, #qtune.lut<bits = 4, group = 32>> -> tensor<32x64xf32>
  %y0 = qtune.linear %x, %d : tensor<4x64xf32>, tensor<32x64xf32> -> tensor<4x32xf32>
  %y1 = qtune.linear %x, %d : tensor<4x64xf32>, tensor<32x64xf32> -> tensor<4x32xf32>
  return %y0, %y1 : tensor<4x32xf32>, tensor<4x32xf32>
}

// The dequantized weight has another use: it stays, the linear still reads w.
// CHECK-LABEL: func.func @dequant_with_other_use
// CHECK-SAME: (%[[X:.*]]: tensor<4x64xf32>, %[[W:.*]]: !qtune.qweight<32x64, #qtune.uniform<bits = 4>>)
// CHECK: %[[D:.*]] = qtune.dequant %[[W]]
// CHECK: %[[Y:.*]] = qtune.linear %[[X]], %[[W]] : tensor<4x64xf32>, !qtune.qweight<32x64, #qtune.uniform<bits = 4>> -> tensor<4x32xf32>
// CHECK: return %[[Y]], %[[D]]
func.func @dequant_with_other_use(%x: tensor<4x64xf32>, %w: !qtune.qweight<32x64, #qtune.uniform<bits = 4>>)
    -> (tensor<4x32xf32>, tensor<32x64xf32>) {
  %d = qtune.dequant %w : !qtune.qweight<32x64, #qtune.uniform<bits = 4>> -> tensor<32x64xf32>
  %y = qtune.linear %x, %d : tensor<4x64xf32>, tensor<32x64xf32> -> tensor<4x32xf32>
  return %y, %d : tensor<4x32xf32>, tensor<32x64xf32>
}

// A dense weight argument: nothing to fold.
// CHECK-LABEL: func.func @dense_weight_unchanged
// CHECK-SAME: (%[[X:.*]]: tensor<8x128xf32>, %[[W:.*]]: tensor<64x128xf32>, %[[B:.*]]: tensor<64xf32>)
// CHECK: %[[Y:.*]] = qtune.linear %[[X]], %[[W]], %[[B]] : tensor<8x128xf32>, tensor<64x128xf32>, tensor<64xf32> -> tensor<8x64xf32>
// CHECK: return %[[Y]]
func.func @dense_weight_unchanged(%x: tensor<8x128xf32>, %w: tensor<64x128xf32>, %b: tensor<64xf32>)
    -> tensor<8x64xf32> {
  %y = qtune.linear %x, %w, %b : tensor<8x128xf32>, tensor<64x128xf32>, tensor<64xf32> -> tensor<8x64xf32>
  return %y : tensor<8x64xf32>
}

// A quantized weight used directly is left as is.
// CHECK-LABEL: func.func @qweight_unchanged
// CHECK: qtune.linear %{{.*}}, %{{.*}} : tensor<8x128xf32>, !qtune.qweight<64x128, #qtune.nf4<>> -> tensor<8x64xf32>
func.func @qweight_unchanged(%x: tensor<8x128xf32>, %w: !qtune.qweight<64x128, #qtune.nf4<>>)
    -> tensor<8x64xf32> {
  %y = qtune.linear %x, %w : tensor<8x128xf32>, !qtune.qweight<64x128, #qtune.nf4<>> -> tensor<8x64xf32>
  return %y : tensor<8x64xf32>
}

// Dead dequant and dead linear are erased (both ops are pure).
// CHECK-LABEL: func.func @dead_ops
// CHECK-NEXT: return
func.func @dead_ops(%x: tensor<8x128xf32>, %w: !qtune.qweight<64x128, #qtune.nf4<>>) {
  %d = qtune.dequant %w : !qtune.qweight<64x128, #qtune.nf4<>> -> tensor<64x128xf32>
  %y = qtune.linear %x, %d : tensor<8x128xf32>, tensor<64x128xf32> -> tensor<8x64xf32>
  return
}
