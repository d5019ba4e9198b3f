// Reference interpreter: quantized linear + bias + LoRA, values computed by hand.
// RUN: %python %inputs/make_safetensors.py %t.in.safetensors \
// RUN:   x:F32:1x4=1,2,3,4 codes:I32:2x1=0x4321,0x780F scales:BF16:2x1=0.5,0.25 \
// RUN:   zeros:BF16:2x1=2,8 bias:F32:2=0.5,-0.25 A:F32:1x4=1,0,0,1 B:F32:2x1=0.5,-1
// RUN: qtune-interp %s --entry layer --inputs %t.in.safetensors --out %t.out.safetensors --print | FileCheck %s
// RUN: qtune-interp %s --entry=base --inputs %t.in.safetensors --print | FileCheck %s --check-prefix=BASE
// RUN: not qtune-interp %t.out.safetensors --random-inputs 1 --print 2>&1 | FileCheck %s --check-prefix=NOTIR

// Row 0: codes 1,2,3,4, w = 0.5·(q − 2) = [-0.5, 0, 0.5, 1]     → x·w = 5
// Row 1: codes 15,0,8,7, w = 0.25·(q − 8) = [1.75, -2, 0, -0.25] → x·w = -3.25
// + bias [0.5, -0.25]; LoRA: x·Aᵀ = 5, · Bᵀ = [2.5, -5], · alpha/rank = 2.
// CHECK: y: tensor<1x2xf32> = {{\[\[}}10.5, -13.5]]
// BASE: out0: tensor<1x2xf32> = {{\[\[}}5, -3.25]]
// NOTIR: error: could not parse or verify

!w = !qtune.qweight<2x4, #qtune.uniform<bits = 4, group = 4>>

func.func @layer(%x: tensor<1x4xf32> {qtune.name = "x"},
                 %codes: tensor<2x1xi32> {qtune.name = "codes", qtune.role = #qtune.role<frozen>},
                 %scales: tensor<2x1xbf16> {qtune.name = "scales", qtune.role = #qtune.role<frozen>},
                 %zeros: tensor<2x1xbf16> {qtune.name = "zeros", qtune.role = #qtune.role<frozen>},
                 %bias: tensor<2xf32> {qtune.name = "bias"},
                 %a: tensor<1x4xf32> {qtune.name = "A", qtune.role = #qtune.role<trainable>},
                 %b: tensor<2x1xf32> {qtune.name = "B", qtune.role = #qtune.role<trainable>})
    -> (tensor<1x2xf32> {qtune.name = "y"}) {
  %w = qtune.qweight %codes, %scales, %zeros : tensor<2x1xi32>, tensor<2x1xbf16>, tensor<2x1xbf16> -> !w
  %y = qtune.linear %x, %w, %bias : tensor<1x4xf32>, !w, tensor<2xf32> -> tensor<1x2xf32>
  %d = qtune.lora %x, %a, %b {alpha = 2.0 : f64, rank = 1 : i64} : tensor<1x4xf32>, tensor<1x4xf32>, tensor<2x1xf32> -> tensor<1x2xf32>
  %s = arith.addf %y, %d : tensor<1x2xf32>
  return %s : tensor<1x2xf32>
}

func.func @base(%x: tensor<1x4xf32> {qtune.name = "x"},
                %codes: tensor<2x1xi32> {qtune.name = "codes"},
                %scales: tensor<2x1xbf16> {qtune.name = "scales"},
                %zeros: tensor<2x1xbf16> {qtune.name = "zeros"}) -> tensor<1x2xf32> {
  %w = qtune.qweight %codes, %scales, %zeros : tensor<2x1xi32>, tensor<2x1xbf16>, tensor<2x1xbf16> -> !w
  %d = qtune.dequant %w : !w -> tensor<2x4xf32>
  %y = qtune.linear %x, %d : tensor<1x4xf32>, tensor<2x4xf32> -> tensor<1x2xf32>
  return %y : tensor<1x2xf32>
}
