// Loss values computed by hand.
// RUN: %python %inputs/make_safetensors.py %t.st p:F32:2x2=1,2,3,5 t:F32:2x2=1,0,1,5 \
// RUN:   logits:F32:2x2=0,1.0986122886681098,2,2 labels:I32:2=1,0
// RUN: qtune-interp %s --entry mse --inputs %t.st --print | FileCheck %s --check-prefix=MSE
// RUN: qtune-interp %s --entry ce --inputs %t.st --print | FileCheck %s --check-prefix=CE
// RUN: %python %inputs/make_safetensors.py %t.bad logits:F32:2x2=0,0,0,0 labels:I32:2=1,2
// RUN: not qtune-interp %s --entry ce --inputs %t.bad --print 2>&1 | FileCheck %s --check-prefix=BAD

// mean of (0, 2², 2², 0) = 2
// MSE: out0: tensor<f32> = 2
func.func @mse(%p: tensor<2x2xf32> {qtune.name = "p"}, %t: tensor<2x2xf32> {qtune.name = "t"}) -> tensor<f32> {
  %l = qtune.mse_loss %p, %t : tensor<2x2xf32>, tensor<2x2xf32> -> tensor<f32>
  return %l : tensor<f32>
}

// Row 0: logits (0, ln 3), label 1: ln 4 − ln 3 = 0.287682.
// Row 1: logits (2, 2), label 0: ln 2 = 0.693147. Mean: 0.490415.
// CE: out0: tensor<f32> = 0.490415
// BAD: error: label 2 of row 1 is outside [0, 2)
func.func @ce(%l: tensor<2x2xf32> {qtune.name = "logits"}, %y: tensor<2xi32> {qtune.name = "labels"}) -> tensor<f32> {
  %c = qtune.cross_entropy %l, %y : tensor<2x2xf32>, tensor<2xi32> -> tensor<f32>
  return %c : tensor<f32>
}
