// Reference interpreter: dequantization of each format, values computed by hand.
// RUN: %python %inputs/make_safetensors.py %t.st \
// RUN:   c3:I32:1x2=0xc8fac688,0x1 s3:F32:1x1=1 \
// RUN:   c4:I32:1x1=0x8F70 absmax:F32:1x1=2 \
// RUN:   c2:I32:1x1=0x93 table:F32:4=-1,-0.25,0.5,2 \
// RUN:   c2g:I32:2x1=0x93,0x39 tables:F32:2x2x4=-1,-0.25,0.5,2,10,20,30,40,0,1,2,3,-4,-3,-2,-1
// RUN: qtune-interp %s --entry uniform3 --inputs %t.st --print | FileCheck %s --check-prefix=U3
// RUN: qtune-interp %s --entry nf4 --inputs %t.st --print | FileCheck %s --check-prefix=NF4
// RUN: qtune-interp %s --entry lut --inputs %t.st --print | FileCheck %s --check-prefix=LUT
// RUN: qtune-interp %s --entry lut_grouped --inputs %t.st --print | FileCheck %s --check-prefix=LUTG

// 3-bit codes 0..7, 0, 1, 7: code 10 occupies bits 30..32 and straddles two words.
// Symmetric: w = s · (q − 4).
// U3: out0: tensor<1x11xf32> = {{\[\[}}-4, -3, -2, -1, 0, 1, 2, 3, -4, -3, 3]]
func.func @uniform3(%c: tensor<1x2xi32> {qtune.name = "c3"},
                    %s: tensor<1x1xf32> {qtune.name = "s3"}) -> tensor<1x11xf32> {
  %w = qtune.qweight %c, %s : tensor<1x2xi32>, tensor<1x1xf32>
      -> !qtune.qweight<1x11, #qtune.uniform<bits = 3, symmetric = true, scale_type = f32>>
  %d = qtune.dequant %w : !qtune.qweight<1x11, #qtune.uniform<bits = 3, symmetric = true, scale_type = f32>> -> tensor<1x11xf32>
  return %d : tensor<1x11xf32>
}

// NF4 codes 0, 7, 15, 8 → absmax · [-1, 0, 1, 0.07958029955625534].
// NF4: out0: tensor<1x4xf32> = {{\[\[}}-2, 0, 2, 0.159161]]
func.func @nf4(%c: tensor<1x1xi32> {qtune.name = "c4"},
               %a: tensor<1x1xf32> {qtune.name = "absmax"}) -> tensor<1x4xf32> {
  %w = qtune.qweight %c, %a : tensor<1x1xi32>, tensor<1x1xf32> -> !qtune.qweight<1x4, #qtune.nf4<block = 4>>
  %d = qtune.dequant %w : !qtune.qweight<1x4, #qtune.nf4<block = 4>> -> tensor<1x4xf32>
  return %d : tensor<1x4xf32>
}

// 2-bit codes 3, 0, 1, 2 (0x93) index the table [-1, -0.25, 0.5, 2].
// LUT: out0: tensor<1x4xf32> = {{\[\[}}2, -1, -0.25, 0.5]]
func.func @lut(%c: tensor<1x1xi32> {qtune.name = "c2"},
               %t: tensor<4xf32> {qtune.name = "table"}) -> tensor<1x4xf32> {
  %w = qtune.qweight %c, %t : tensor<1x1xi32>, tensor<4xf32> -> !qtune.qweight<1x4, #qtune.lut<bits = 2>>
  %d = qtune.dequant %w : !qtune.qweight<1x4, #qtune.lut<bits = 2>> -> tensor<1x4xf32>
  return %d : tensor<1x4xf32>
}

// Per-group tables (group 2): row 0 codes 3,0 | 1,2 ; row 1 (0x39) codes 1,2 | 3,0.
// LUTG: out0: tensor<2x4xf32> = {{\[\[}}2, -1, 20, 30], [1, 2, -1, -4]]
func.func @lut_grouped(%c: tensor<2x1xi32> {qtune.name = "c2g"},
                       %t: tensor<2x2x4xf32> {qtune.name = "tables"}) -> tensor<2x4xf32> {
  %w = qtune.qweight %c, %t : tensor<2x1xi32>, tensor<2x2x4xf32> -> !qtune.qweight<2x4, #qtune.lut<bits = 2, group = 2>>
  %d = qtune.dequant %w : !qtune.qweight<2x4, #qtune.lut<bits = 2, group = 2>> -> tensor<2x4xf32>
  return %d : tensor<2x4xf32>
}
