// The generated PTX uses tensor cores, async copies and ldmatrix, and spills
// nothing to local memory.
// RUN: qtune-compile %s --emit=ptx --target sm_90a -o - | FileCheck %s --check-prefixes=CHECK,SM90
// RUN: qtune-compile %s --emit=ptx --target sm_80 -o - | FileCheck %s --check-prefixes=CHECK,SM80
// RUN: qtune-compile %s --emit=ptx -o - | FileCheck %s --check-prefix=NOLOCAL
// RUN: not qtune-compile %s --emit=ptx --target sm_75 -o - 2>&1 | FileCheck %s --check-prefix=OLDCHIP

// SM90: .target sm_90a
// SM80: .target sm_80
// CHECK-DAG: .entry linear_bf16_n16k512(
// CHECK-DAG: .entry linear_nf4g64_lora16_residual_n256k512(
// CHECK-DAG: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// CHECK-DAG: ldmatrix.sync.aligned.m8n8.x4.shared.b16
// CHECK-DAG: ldmatrix.sync.aligned.m8n8.x2.shared.b16
// CHECK-DAG: cp.async.ca.shared.global
// CHECK-DAG: cp.async.wait_group
// NOLOCAL-NOT: .local
// NOLOCAL-NOT: local.
// OLDCHIP: qtune-lower-to-gpu: chip must be sm_80 or newer

!w = !qtune.qweight<256x512, #qtune.nf4<block = 64, double_quant = true, dq_block = 4>>
func.func @forward(%x: tensor<16x512xbf16> {qtune.name = "x", qtune.role = #qtune.role<input>},
                   %c: tensor<256x64xi32> {qtune.name = "codes", qtune.role = #qtune.role<frozen>},
                   %ac: tensor<256x2xi32> {qtune.name = "absmax_codes", qtune.role = #qtune.role<frozen>},
                   %as: tensor<256x2xf32> {qtune.name = "absmax_scales", qtune.role = #qtune.role<frozen>},
                   %ao: tensor<1xf32> {qtune.name = "absmax_offset", qtune.role = #qtune.role<frozen>},
                   %a: tensor<16x512xbf16> {qtune.name = "lora_A", qtune.role = #qtune.role<trainable>},
                   %b: tensor<256x16xbf16> {qtune.name = "lora_B", qtune.role = #qtune.role<trainable>},
                   %r: tensor<16x256xbf16> {qtune.name = "residual", qtune.role = #qtune.role<input>})
    -> (tensor<16x256xbf16> {qtune.name = "y"}) {
  %w = qtune.qweight %c, %ac, %as, %ao : tensor<256x64xi32>, tensor<256x2xi32>, tensor<256x2xf32>, tensor<1xf32> -> !w
  %y = qtune.linear %x, %w : tensor<16x512xbf16>, !w -> tensor<16x256xbf16>
  %d = qtune.lora %x, %a, %b {alpha = 32.0 : f64, rank = 16 : i64} : tensor<16x512xbf16>, tensor<16x512xbf16>, tensor<256x16xbf16> -> tensor<16x256xbf16>
  %s = arith.addf %y, %d : tensor<16x256xbf16>
  %o = arith.addf %s, %r : tensor<16x256xbf16>
  return %o : tensor<16x256xbf16>
}
