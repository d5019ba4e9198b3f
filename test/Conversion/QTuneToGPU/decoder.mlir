// RUN: qtune-opt %s -qtune-autodiff -qtune-lower-to-gpu | FileCheck %s

// Decoder ops and their gradients lower to their own kernels. Attention at
// sequence 2048 (one head of 128, causal) keeps only [S, H·d] tensors and the
// [H, S] log-sum-exp: no S×S score buffer exists, forward or backward.
// CHECK-LABEL: func.func @block_grad
// CHECK-NOT: memref.alloc() : memref<{{.*}}2048x2048
// CHECK: gpu.launch_func @qtune_kernels::@rms_norm_fwd_h128 blocks in (%{{.*}}, %{{.*}}, %{{.*}})
// CHECK: gpu.launch_func @qtune_kernels::@rope_w128 blocks
// CHECK: %[[O:.*]] = memref.alloc() : memref<1x2048x128xbf16>
// CHECK: %[[LSE:.*]] = memref.alloc() : memref<1x1x2048xf32>
// CHECK: gpu.launch_func @qtune_kernels::@attention_fwd_causal_d128 {{.*}} args({{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xf32>)
// CHECK: gpu.launch_func @qtune_kernels::@swiglu blocks
// Backward: swiglu_grad, attention dQ (also writing delta) and dK/dV, the inverse rotation, rms_norm_grad.
// CHECK: memref.alloc() : memref<1x1x2048xf32>
// CHECK: gpu.launch_func @qtune_kernels::@attention_bwd_dq_causal_d128
// CHECK: gpu.launch_func @qtune_kernels::@attention_bwd_dkv_causal_d128
// CHECK-NOT: memref.alloc() : memref<{{.*}}2048x2048
// CHECK: return
// (The attention kernels themselves: attention.mlir.)
func.func @block(%x: tensor<1x2048x128xbf16> {qtune.name = "x", qtune.role = #qtune.role<trainable>},
                 %w: tensor<128xbf16> {qtune.name = "w", qtune.role = #qtune.role<frozen>},
                 %t: tensor<1x2048x128xbf16> {qtune.name = "t", qtune.role = #qtune.role<input>})
    -> tensor<f32> {
  %n = qtune.rms_norm %x, %w {eps = 1.0e-5 : f64} : tensor<1x2048x128xbf16>, tensor<128xbf16> -> tensor<1x2048x128xbf16>
  %q = qtune.rope %n {head_dim = 128 : i64} : tensor<1x2048x128xbf16>
  %o, %lse = qtune.attention %q, %n, %n {heads = 1 : i64, kv_heads = 1 : i64} : tensor<1x2048x128xbf16>, tensor<1x2048x128xbf16>, tensor<1x2048x128xbf16> -> tensor<1x2048x128xbf16>, tensor<1x1x2048xf32>
  %s = qtune.swiglu %o, %q : tensor<1x2048x128xbf16>
  %l = qtune.mse_loss %s, %t : tensor<1x2048x128xbf16>, tensor<1x2048x128xbf16> -> tensor<f32>
  return %l : tensor<f32>
}
