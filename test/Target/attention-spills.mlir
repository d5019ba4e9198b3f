// The attention kernels keep their accumulators in registers, for sm_90a and
// sm_80, at head dimensions 128 and 64: ptxas spills at most a few words (at
// d = 64 it may trade 4 bytes for a 128-register budget), never fragments
// (ptxas's report; the PTX-level `.local` check does not see its spills).
// REQUIRES: ptxas
// RUN: qtune-compile %s --emit=ptx --target sm_90a -o %t.sm90.ptx
// RUN: %ptxas -arch=sm_90a -v %t.sm90.ptx -o /dev/null 2>&1 | FileCheck %s
// RUN: qtune-compile %s --emit=ptx --target sm_80 -o %t.sm80.ptx
// RUN: %ptxas -arch=sm_80 -v %t.sm80.ptx -o /dev/null 2>&1 | FileCheck %s

// CHECK-COUNT-6: {{^ *[0-9]+ bytes stack frame, [0-9]{1,2} bytes spill stores, [0-9]{1,2} bytes spill loads}}
// CHECK-NOT: bytes spill stores

func.func @d128(%q: tensor<1x256x512xbf16> {qtune.role = #qtune.role<input>}, %k: tensor<1x256x128xbf16> {qtune.role = #qtune.role<input>},
                %g: tensor<1x256x512xbf16> {qtune.role = #qtune.role<input>}, %seg: tensor<1x256xi32> {qtune.role = #qtune.role<input>})
    -> (tensor<1x256x512xbf16>, tensor<1x256x128xbf16>, tensor<1x256x128xbf16>) {
  %o, %lse = qtune.attention %q, %k, %k segments %seg {heads = 4 : i64, kv_heads = 1 : i64} : tensor<1x256x512xbf16>, tensor<1x256x128xbf16>, tensor<1x256x128xbf16>, tensor<1x256xi32> -> tensor<1x256x512xbf16>, tensor<1x4x256xf32>
  %dq, %dk, %dv = qtune.attention_grad %q, %k, %k, %o, %lse, %g segments %seg {heads = 4 : i64, kv_heads = 1 : i64, scale = 0.08838834764831845 : f64, causal = true} : tensor<1x256x512xbf16>, tensor<1x256x128xbf16>, tensor<1x256x128xbf16>, tensor<1x256x512xbf16>, tensor<1x4x256xf32>, tensor<1x256x512xbf16>, tensor<1x256xi32> -> tensor<1x256x512xbf16>, tensor<1x256x128xbf16>, tensor<1x256x128xbf16>
  return %dq, %dk, %dv : tensor<1x256x512xbf16>, tensor<1x256x128xbf16>, tensor<1x256x128xbf16>
}

func.func @d64(%q: tensor<1x256x256xbf16> {qtune.role = #qtune.role<input>}, %g: tensor<1x256x256xbf16> {qtune.role = #qtune.role<input>})
    -> (tensor<1x256x256xbf16>, tensor<1x256x256xbf16>, tensor<1x256x256xbf16>) {
  %o, %lse = qtune.attention %q, %q, %q {heads = 4 : i64, kv_heads = 4 : i64, causal = false} : tensor<1x256x256xbf16>, tensor<1x256x256xbf16>, tensor<1x256x256xbf16> -> tensor<1x256x256xbf16>, tensor<1x4x256xf32>
  %dq, %dk, %dv = qtune.attention_grad %q, %q, %q, %o, %lse, %g {heads = 4 : i64, kv_heads = 4 : i64, scale = 0.125 : f64, causal = false} : tensor<1x256x256xbf16>, tensor<1x256x256xbf16>, tensor<1x256x256xbf16>, tensor<1x256x256xbf16>, tensor<1x4x256xf32>, tensor<1x256x256xbf16> -> tensor<1x256x256xbf16>, tensor<1x256x256xbf16>, tensor<1x256x256xbf16>
  return %dq, %dk, %dv : tensor<1x256x256xbf16>, tensor<1x256x256xbf16>, tensor<1x256x256xbf16>
}
