// qtune-compile writes a bundle that qtune-run validates and describes; corrupt
// bundles and bad inputs are clear errors (checked before any GPU is needed).
// RUN: qtune-compile %s --no-cubin -o %t.qtb
// RUN: qtune-run inspect %t.qtb | FileCheck %s

// CHECK: target: sm_90a
// CHECK: kernels (2):
// CHECK-NEXT: [0] linear_nf4c_bias_n32k64  block [128,1,1]  shared 0  ptx {{[0-9]+}} B  cubin none
// CHECK-NEXT: [1] linear_bf16_n32k32  block [128,1,1]
// CHECK: buffers (7):
// CHECK-NEXT: [0] x  input  BF16 [2, 64]
// CHECK-NEXT: [1] codes  frozen  I32 [32, 8]
// CHECK-NEXT: [2] absmax  frozen  F32 [32, 1]
// CHECK-NEXT: [3] bias  frozen  BF16 [32]
// CHECK-NEXT: [4] w2  frozen  BF16 [32, 32]
// CHECK-NEXT: [5] tmp0  temporary  BF16 [2, 32]
// CHECK-NEXT: [6] y  output  BF16 [2, 32]
// CHECK: forward: inputs [x], params [codes, absmax, bias, w2], outputs [y], 2 launches
// Each launch carries the family of ops it computes for (what profiles sum by).
// CHECK-NEXT: [0] linear_nf4c_bias_n32k64  grid [1,1,1]  block [128,1,1]  shared 0  args (ptr x, ptr x, i64 0, i64 128, i64 1, ptr codes, ptr codes, i64 0, i64 256, i64 1, ptr absmax, ptr absmax, i64 0, i64 32, i64 1, ptr bias, ptr bias, i64 0, i64 32, i64 1, ptr tmp0, ptr tmp0, i64 0, i64 64, i64 1, i64 2)  family 'quantized GEMM'
// CHECK-NEXT: [1] linear_bf16_n32k32  grid [1,1,1]  block [128,1,1]  shared 0  args (ptr tmp0, {{.*}})  family 'dense GEMM'

// RUN: head -c 100 %t.qtb > %t.trunc
// RUN: not qtune-run inspect %t.trunc 2>&1 | FileCheck %s --check-prefix=TRUNC
// TRUNC: qtune-run: error: {{.*}}trunc

// RUN: %python -c "import sys; d = open(sys.argv[1], 'rb').read(); open(sys.argv[2], 'wb').write(b'NOTABNDL' + d[8:])" %t.qtb %t.magic
// RUN: not qtune-run inspect %t.magic 2>&1 | FileCheck %s --check-prefix=MAGIC
// MAGIC: qtune-run: error: {{.*}}magic

// RUN: %python %inputs/make_safetensors.py %t.in x:F32:2x64=0.5*128
// RUN: %python %inputs/make_safetensors.py %t.params codes:I32:32x8=0*256 absmax:F32:32x1=1*32
// RUN: not qtune-run forward %t.qtb --inputs %t.in --params %t.params --out %t.out 2>&1 | FileCheck %s --check-prefix=MISSING
// MISSING: qtune-run: error: {{.*}}missing 2 of the 4 params of entry 'forward': bias w2

// RUN: %python %inputs/make_safetensors.py %t.badshape x:F32:64x2=0.5*128
// RUN: not qtune-run forward %t.qtb --inputs %t.badshape --params %t.params --out %t.out 2>&1 | FileCheck %s --check-prefix=SHAPE
// SHAPE: qtune-run: error: {{.*}}'x'{{.*}}[64, 2]{{.*}}[2, 64]

// RUN: not qtune-compile %s -o %t.bad --emit=bundle --target sm_90a --tile-m 48 2>&1 | FileCheck %s --check-prefix=TILE
// TILE: invalid schedule 48x64x64 (2x2 warps): tileM must be a multiple of 16 × warpsM

!w = !qtune.qweight<32x64, #qtune.nf4<block = 64>>
func.func @forward(%x: tensor<2x64xbf16> {qtune.name = "x", qtune.role = #qtune.role<input>},
                   %c: tensor<32x8xi32> {qtune.name = "codes", qtune.role = #qtune.role<frozen>},
                   %a: tensor<32x1xf32> {qtune.name = "absmax", qtune.role = #qtune.role<frozen>},
                   %bias: tensor<32xbf16> {qtune.name = "bias", qtune.role = #qtune.role<frozen>},
                   %w2: tensor<32x32xbf16> {qtune.name = "w2", qtune.role = #qtune.role<frozen>})
    -> (tensor<2x32xbf16> {qtune.name = "y"}) {
  %w = qtune.qweight %c, %a : tensor<32x8xi32>, tensor<32x1xf32> -> !w
  %h = qtune.linear %x, %w, %bias : tensor<2x64xbf16>, !w, tensor<32xbf16> -> tensor<2x32xbf16>
  %y = qtune.linear %h, %w2 : tensor<2x32xbf16>, tensor<32x32xbf16> -> tensor<2x32xbf16>
  return %y : tensor<2x32xbf16>
}
