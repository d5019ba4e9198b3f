// qtune-compile --train derives <fn>_grad, <fn>_train_step and, for gradient
// accumulation, <fn>_accumulate and <fn>_apply, and compiles all five. The train step's updated parameters and optimizer states are outputs
// that are the params' own buffers (updated in place); lr and step are inputs.
// RUN: qtune-compile %s --train --optimizer-options "optimizer=adamw" --no-cubin -o %t.qtb
// RUN: qtune-run inspect %t.qtb | FileCheck %s
// RUN: qtune-compile %s --train --optimizer-options "optimizer=lion momentum=int8 block=64 max-grad-norm=1.0" --no-cubin -o %t.lion.qtb
// RUN: qtune-run inspect %t.lion.qtb | FileCheck %s --check-prefix=LION
// RUN: not qtune-compile %s --optimizer-options "optimizer=lion" --no-cubin -o %t.bad.qtb 2>&1 | FileCheck %s --check-prefix=NOTRAIN
// RUN: not qtune-compile %s --train --optimizer-options "optimizer=sgd" --no-cubin -o %t.bad.qtb 2>&1 | FileCheck %s --check-prefix=BADOPT
// RUN: not qtune-compile %S/Inputs/return-argument.mlir --no-cubin -o %t.bad.qtb 2>&1 | FileCheck %s --check-prefix=RETARG

// CHECK: entries (5):
// CHECK: layer: inputs [x, target], params [codes, scales, zeros, lora_A, lora_B], outputs [out0]
// CHECK: layer_accumulate: inputs [x, target], params [codes, scales, zeros, lora_A, lora_B, lora_A.grad_acc, lora_B.grad_acc], outputs [loss, lora_A.grad_acc, lora_B.grad_acc]
// CHECK: layer_apply: inputs [lr, step, accum_count], params [lora_A, lora_A.m, lora_A.v, lora_B, lora_B.m, lora_B.v, lora_A.grad_acc, lora_B.grad_acc], outputs [lora_A, lora_A.m, lora_A.v, lora_B, lora_B.m, lora_B.v, lora_A.grad_acc, lora_B.grad_acc]
// CHECK: layer_grad: inputs [x, target], params [codes, scales, zeros, lora_A, lora_B], outputs [loss, grad_lora_A, grad_lora_B]
// CHECK: layer_train_step: inputs [x, target, lr, step], params [codes, scales, zeros, lora_A, lora_B, lora_A.m, lora_A.v, lora_B.m, lora_B.v], outputs [loss, lora_A, lora_A.m, lora_A.v, lora_B, lora_B.m, lora_B.v]

// LION: layer_train_step: inputs [x, target, lr], params [codes, scales, zeros, lora_A, lora_B, lora_A.m, lora_A.m_scales, lora_B.m, lora_B.m_scales], outputs [loss, lora_A, lora_A.m, lora_A.m_scales, lora_B, lora_B.m, lora_B.m_scales]

// NOTRAIN: qtune-compile: error: --optimizer-options needs --train
// BADOPT: qtune-optimizer: unknown optimizer 'sgd' (adamw or lion)
// RETARG: bundle: result #0 returns argument #0 without 'qtune.updates = 0'

!u4 = !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 64>>
func.func @layer(%x: tensor<16x128xbf16> {qtune.name = "x", qtune.role = #qtune.role<input>},
                 %t: tensor<16x64xbf16> {qtune.name = "target", qtune.role = #qtune.role<input>},
                 %c: tensor<64x16xi32> {qtune.name = "codes", qtune.role = #qtune.role<frozen>},
                 %s: tensor<64x2xbf16> {qtune.name = "scales", qtune.role = #qtune.role<frozen>},
                 %z: tensor<64x2xbf16> {qtune.name = "zeros", qtune.role = #qtune.role<frozen>},
                 %a: tensor<8x128xbf16> {qtune.name = "lora_A", qtune.role = #qtune.role<trainable>},
                 %b: tensor<64x8xbf16> {qtune.name = "lora_B", qtune.role = #qtune.role<trainable>}) -> tensor<f32> {
  %w = qtune.qweight %c, %s, %z : tensor<64x16xi32>, tensor<64x2xbf16>, tensor<64x2xbf16> -> !u4
  %y = qtune.linear %x, %w : tensor<16x128xbf16>, !u4 -> tensor<16x64xbf16>
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64} : tensor<16x128xbf16>, tensor<8x128xbf16>, tensor<64x8xbf16> -> tensor<16x64xbf16>
  %o = arith.addf %y, %d : tensor<16x64xbf16>
  %l = qtune.mse_loss %o, %t : tensor<16x64xbf16>, tensor<16x64xbf16> -> tensor<f32>
  return %l : tensor<f32>
}
