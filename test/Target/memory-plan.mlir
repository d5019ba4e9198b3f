// The bundle's memory plan: function arguments persist and are shared by name
// between entries; temporaries and outputs are packed by live range into one
// scratch region that every entry reuses.
// RUN: qtune-compile %s --no-cubin -o %t.qtb
// RUN: qtune-run inspect %t.qtb | FileCheck %s

// Parameters and inputs: one buffer each, though two entries take them.
// CHECK: buffers (8):
// CHECK-NEXT: [0] x  input  BF16 [16, 64]  offset 0  bytes 2048
// CHECK-NEXT: [1] w1  frozen  BF16 [64, 64]  offset 2048  bytes 8192
// CHECK-NEXT: [2] w2  frozen  BF16 [64, 64]  offset 10240
// CHECK-NEXT: [3] w3  frozen  BF16 [64, 64]  offset 18432
// The scratch region starts after them, at 26624. In @chain, h1 dies when h2
// is computed, so y takes h1's place; h2 lives beside them.
// CHECK-NEXT: [4] tmp0  temporary  BF16 [16, 64]  offset [[H1:[0-9]+]]  bytes 2048
// CHECK-NEXT: [5] tmp1  temporary  BF16 [16, 64]  offset [[H2:[0-9]+]]  bytes 2048
// CHECK-NEXT: [6] y  output  BF16 [16, 64]  offset [[H1]]  bytes 2048
// @single runs alone: its output reuses the start of the scratch region.
// CHECK-NEXT: [7] z  output  BF16 [16, 64]  offset 26624  bytes 2048
// CHECK: chain: inputs [x], params [w1, w2, w3], outputs [y]
// CHECK: single: inputs [x], params [w1], outputs [z]
func.func @chain(%x: tensor<16x64xbf16> {qtune.name = "x", qtune.role = #qtune.role<input>},
                 %w1: tensor<64x64xbf16> {qtune.name = "w1", qtune.role = #qtune.role<frozen>},
                 %w2: tensor<64x64xbf16> {qtune.name = "w2", qtune.role = #qtune.role<frozen>},
                 %w3: tensor<64x64xbf16> {qtune.name = "w3", qtune.role = #qtune.role<frozen>})
    -> (tensor<16x64xbf16> {qtune.name = "y"}) {
  %h1 = qtune.linear %x, %w1 : tensor<16x64xbf16>, tensor<64x64xbf16> -> tensor<16x64xbf16>
  %h2 = qtune.linear %h1, %w2 : tensor<16x64xbf16>, tensor<64x64xbf16> -> tensor<16x64xbf16>
  %y = qtune.linear %h2, %w3 : tensor<16x64xbf16>, tensor<64x64xbf16> -> tensor<16x64xbf16>
  return %y : tensor<16x64xbf16>
}
func.func @single(%x: tensor<16x64xbf16> {qtune.name = "x", qtune.role = #qtune.role<input>},
                  %w1: tensor<64x64xbf16> {qtune.name = "w1", qtune.role = #qtune.role<frozen>})
    -> (tensor<16x64xbf16> {qtune.name = "z"}) {
  %z = qtune.linear %x, %w1 : tensor<16x64xbf16>, tensor<64x64xbf16> -> tensor<16x64xbf16>
  return %z : tensor<16x64xbf16>
}
