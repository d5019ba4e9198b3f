// qtune-interp --steps runs a train-step entry repeatedly, feeding the updated
// parameters back. Hand-computed Lion run of loss = (w·x − t)² with x = 1,
// t = 1, w₀ = 0, lr = 0.25, β1 = 0.9: every gradient 2(w − 1) is negative, so
// w rises by lr each step and the losses are (1 − 0.25·i)².
// RUN: qtune-opt %s -qtune-autodiff -qtune-optimizer="optimizer=lion" -o %t.mlir
// RUN: %python %S/../Inputs/make_safetensors.py %t.in.safetensors x:F32:1x1=1 t:F32:1x1=1 w:F32:1x1=0
// RUN: qtune-interp %t.mlir --entry loss_train_step --inputs %t.in.safetensors --steps 3 --lr 0.25 --losses %t.losses --out %t.out --print 2>&1 | FileCheck %s
// RUN: FileCheck %s --check-prefix=LOSSES < %t.losses
// CHECK: qtune-interp: 3 steps, loss 1 -> 0.25
// CHECK: w: tensor<1x1xf32> = {{\[\[}}0.75]]
// Momentum (β2 = 0.99): m = 0.99·m + 0.01·g over g = −2, −1.5, −1.
// CHECK: w.m: tensor<1x1xf32> = {{\[\[}}-0.044452]]
// LOSSES: [1.000000000e+00, 5.625000000e-01, 2.500000000e-01]

// Bad uses of --steps.
// RUN: not qtune-interp %s --entry loss --inputs %t.in.safetensors --steps 2 --lr 0.1 --print 2>&1 | FileCheck %s --check-prefix=NOTSTEP
// NOTSTEP: --steps needs a train-step entry (an `lr` argument, a `loss` result and results marked qtune.updates); 'loss' is not one
// RUN: not qtune-interp %t.mlir --entry loss_train_step --inputs %t.in.safetensors --steps 2 --lr -1 --print 2>&1 | FileCheck %s --check-prefix=BADLR
// BADLR: --lr must be a finite non-negative number

func.func @loss(%x: tensor<1x1xf32> {qtune.name = "x", qtune.role = #qtune.role<input>},
                %w: tensor<1x1xf32> {qtune.name = "w", qtune.role = #qtune.role<trainable>},
                %t: tensor<1x1xf32> {qtune.name = "t", qtune.role = #qtune.role<input>}) -> tensor<f32> {
  %y = qtune.linear %x, %w : tensor<1x1xf32>, tensor<1x1xf32> -> tensor<1x1xf32>
  %l = qtune.mse_loss %y, %t : tensor<1x1xf32>, tensor<1x1xf32> -> tensor<f32>
  return %l : tensor<f32>
}
