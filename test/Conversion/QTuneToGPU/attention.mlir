// RUN: qtune-opt %s -split-input-file -verify-diagnostics -qtune-lower-to-gpu | FileCheck %s

// Attention and its gradient lower to three tensor-core kernels named for what
// they compute: 64 rows (queries, or keys for dK/dV) a block of 128 threads,
// one block row per (batch, head) — per KV head for dK/dV — and their
// two-stage tiles in dynamic shared memory: q [64][d+8] and two stages of
// 64-key k and v tiles (forward); 32-key or 32-query tiles at d = 128 in the
// backward kernels. Only [S, H·d] tensors and [H, S] statistics exist: no S×S
// buffer, forward or backward.
// CHECK-LABEL: func.func @attention_gqa
// CHECK-NOT: memref<{{.*}}256x256
// CHECK: gpu.launch_func @qtune_kernels::@attention_fwd_causal_gqa4_d128 blocks in (%c4, %c8, %c1{{.*}}) threads in (%c128, %c1, %c1{{.*}}) dynamic_shared_memory_size %c87040_i32 args({{.*}}) {qtune.kernel_family = "attention"}
// CHECK: %[[DELTA:.*]] = memref.alloc() : memref<2x4x256xf32>
// CHECK: gpu.launch_func @qtune_kernels::@attention_bwd_dq_causal_gqa4_d128 blocks in (%c4{{.*}}, %c8{{.*}}, %c1{{.*}}) threads in (%c128{{.*}}) dynamic_shared_memory_size %c69888_i32
// CHECK: gpu.launch_func @qtune_kernels::@attention_bwd_dkv_causal_gqa4_d128 blocks in (%c4{{.*}}, %c2{{.*}}, %c1{{.*}}) threads in (%c128{{.*}}) dynamic_shared_memory_size %c70144_i32
// CHECK-NOT: memref<{{.*}}256x256
// CHECK: return
// The forward: q and the first k, v tiles by 16-byte cp.async, q kept as MMA
// operands (ldmatrix), then the key loop: S = Q·Kᵀ and O += P·V on mma.sync
// m16n8k16 bf16, the masked tile only where the tile needs a mask, row maxima
// across the four lanes of a row, exp2.
// CHECK: gpu.func @attention_fwd_causal_gqa4_d128(
// CHECK-SAME: known_block_size = array<i32: 128, 1, 1>
// CHECK: memref.view {{.*}} to memref<1x64x136xbf16, #gpu.address_space<workgroup>>
// CHECK: memref.view {{.*}} to memref<2x64x136xbf16, #gpu.address_space<workgroup>>
// CHECK: memref.view {{.*}} to memref<2x64x136xbf16, #gpu.address_space<workgroup>>
// CHECK: nvgpu.device_async_copy {{.*}} 8, %{{.*}} {bypassL1}
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 4 : i32, transpose = false}
// CHECK: scf.for
// CHECK: nvvm.cp.async.wait.group 0
// CHECK: gpu.barrier
// CHECK: nvvm.mma.sync {{.*}} {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<bf16>, multiplicandBPtxType = #nvvm.mma_type<bf16>, shape = #nvvm.shape<m = 16, n = 8, k = 16>}
// CHECK: scf.if
// CHECK: gpu.shuffle  xor
// CHECK: llvm.nvvm.ex2.approx.f32
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 4 : i32, transpose = true}
// CHECK: nvvm.mma.sync
// CHECK: gpu.func @attention_bwd_dq_causal_gqa4_d128(
// CHECK: memref.view {{.*}} to memref<2x32x136xbf16, #gpu.address_space<workgroup>>
// CHECK: memref.view {{.*}} to memref<1x64xf32, #gpu.address_space<workgroup>>
// CHECK: vector.reduction <add>
// CHECK: gpu.func @attention_bwd_dkv_causal_gqa4_d128(
// CHECK: memref.view {{.*}} to memref<2x32xf32, #gpu.address_space<workgroup>>
// lse and delta of each query tile arrive by 4-byte cp.async.
// CHECK: nvgpu.device_async_copy {{.*}} : memref<?xf32> to memref<2x32xf32, #gpu.address_space<workgroup>>
func.func @attention_gqa(%q: tensor<2x256x512xbf16>, %k: tensor<2x256x128xbf16>,
                         %v: tensor<2x256x128xbf16>, %g: tensor<2x256x512xbf16>)
    -> (tensor<2x256x512xbf16>, tensor<2x256x128xbf16>, tensor<2x256x128xbf16>) {
  %o, %lse = qtune.attention %q, %k, %v {heads = 4 : i64, kv_heads = 1 : i64} : tensor<2x256x512xbf16>, tensor<2x256x128xbf16>, tensor<2x256x128xbf16> -> tensor<2x256x512xbf16>, tensor<2x4x256xf32>
  %dq, %dk, %dv = qtune.attention_grad %q, %k, %v, %o, %lse, %g {heads = 4 : i64, kv_heads = 1 : i64, scale = 0.08838834764831845 : f64, causal = true} : tensor<2x256x512xbf16>, tensor<2x256x128xbf16>, tensor<2x256x128xbf16>, tensor<2x256x512xbf16>, tensor<2x4x256xf32>, tensor<2x256x512xbf16> -> tensor<2x256x512xbf16>, tensor<2x256x128xbf16>, tensor<2x256x128xbf16>
  return %dq, %dk, %dv : tensor<2x256x512xbf16>, tensor<2x256x128xbf16>, tensor<2x256x128xbf16>
}

// -----

// Without causality or grouping, at head dimension 64: 64-row tiles in every
// kernel, names without "causal" or "gqa"; a second attention of the same
// shape reuses the kernel, one of another shape gets a numbered name.
// CHECK-LABEL: func.func @attention_full_d64
// CHECK: gpu.launch_func @qtune_kernels::@attention_fwd_d64 blocks in (%c2, %c2{{.*}}, %c1{{.*}}) {{.*}} dynamic_shared_memory_size %c46080_i32
// CHECK: gpu.launch_func @qtune_kernels::@attention_fwd_d64 blocks
// CHECK: gpu.launch_func @qtune_kernels::@attention_fwd_d64_2 blocks in (%c1{{.*}}, %c2{{.*}}, %c1{{.*}})
// CHECK: gpu.func @attention_fwd_d64(
// CHECK: gpu.func @attention_fwd_d64_2(
func.func @attention_full_d64(%q: tensor<1x100x128xbf16>, %q2: tensor<1x40x128xbf16>)
    -> (tensor<1x100x128xbf16>, tensor<1x100x128xbf16>, tensor<1x40x128xbf16>) {
  %o, %lse = qtune.attention %q, %q, %q {heads = 2 : i64, kv_heads = 2 : i64, causal = false} : tensor<1x100x128xbf16>, tensor<1x100x128xbf16>, tensor<1x100x128xbf16> -> tensor<1x100x128xbf16>, tensor<1x2x100xf32>
  %o2, %lse2 = qtune.attention %o, %o, %o {heads = 2 : i64, kv_heads = 2 : i64, causal = false} : tensor<1x100x128xbf16>, tensor<1x100x128xbf16>, tensor<1x100x128xbf16> -> tensor<1x100x128xbf16>, tensor<1x2x100xf32>
  %o3, %lse3 = qtune.attention %q2, %q2, %q2 {heads = 2 : i64, kv_heads = 2 : i64, causal = false} : tensor<1x40x128xbf16>, tensor<1x40x128xbf16>, tensor<1x40x128xbf16> -> tensor<1x40x128xbf16>, tensor<1x2x40xf32>
  return %o, %o2, %o3 : tensor<1x100x128xbf16>, tensor<1x100x128xbf16>, tensor<1x40x128xbf16>
}

// -----

// Head dimensions the tensor-core kernels cannot take are refused by name.
func.func @attention_head_dim_40(%q: tensor<1x64x80xbf16>) -> tensor<1x64x80xbf16> {
  // expected-error @+1 {{qtune-lower-to-gpu: the attention kernels take head dimensions that are multiples of 16 up to 128 (one tensor-core k step; accumulators in registers), got 40}}
  %o, %lse = qtune.attention %q, %q, %q {heads = 2 : i64, kv_heads = 2 : i64} : tensor<1x64x80xbf16>, tensor<1x64x80xbf16>, tensor<1x64x80xbf16> -> tensor<1x64x80xbf16>, tensor<1x2x64xf32>
  return %o : tensor<1x64x80xbf16>
}

// -----

func.func @attention_head_dim_256(%q: tensor<1x64x512xbf16>) -> tensor<1x64x512xbf16> {
  // expected-error @+1 {{got 256}}
  %o, %lse = qtune.attention %q, %q, %q {heads = 2 : i64, kv_heads = 2 : i64} : tensor<1x64x512xbf16>, tensor<1x64x512xbf16>, tensor<1x64x512xbf16> -> tensor<1x64x512xbf16>, tensor<1x2x64xf32>
  return %o : tensor<1x64x512xbf16>
}

// -----

func.func @attention_f32(%q: tensor<1x64x128xf32>) -> tensor<1x64x128xf32> {
  // expected-error @+1 {{qtune-lower-to-gpu: GPU kernels take statically shaped bf16 activations and adapters, got 'tensor<1x64x128xf32>'}}
  %o, %lse = qtune.attention %q, %q, %q {heads = 2 : i64, kv_heads = 2 : i64} : tensor<1x64x128xf32>, tensor<1x64x128xf32>, tensor<1x64x128xf32> -> tensor<1x64x128xf32>, tensor<1x2x64xf32>
  return %o : tensor<1x64x128xf32>
}

// -----

// Packed documents: the segment ids are every kernel's last argument; each
// block counts the tiles of other documents from the ids (a shuffle sum per
// warp, then the warps' counts through shared memory) and stages the column
// tiles' ids by 4-byte cp.async beside its k and v tiles.
// CHECK-LABEL: func.func @attention_segments
// CHECK: gpu.launch_func @qtune_kernels::@attention_fwd_causal_gqa2_seg_d64 {{.*}} args({{.*}}, %{{.*}} : memref<?xf32>, %{{.*}} : memref<?xi32>)
// CHECK: gpu.launch_func @qtune_kernels::@attention_bwd_dq_causal_gqa2_seg_d64 {{.*}}, %{{.*}} : memref<?xf32>, %{{.*}} : memref<?xi32>)
// CHECK: gpu.launch_func @qtune_kernels::@attention_bwd_dkv_causal_gqa2_seg_d64 {{.*}}, %{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xi32>)
// CHECK: gpu.func @attention_fwd_causal_gqa2_seg_d64(
// CHECK-SAME: %{{.*}}: memref<?xi32>)
// CHECK: memref.view {{.*}} to memref<2x64xi32, #gpu.address_space<workgroup>>
// CHECK: memref.view {{.*}} to memref<1x4xf32, #gpu.address_space<workgroup>>
// CHECK: gpu.shuffle  xor {{.*}} : i32
// CHECK: nvgpu.device_async_copy {{.*}} : memref<?xi32> to memref<2x64xi32, #gpu.address_space<workgroup>>
// CHECK: arith.cmpi ne
func.func @attention_segments(%q: tensor<1x256x256xbf16>, %k: tensor<1x256x128xbf16>,
                              %seg: tensor<1x256xi32>, %g: tensor<1x256x256xbf16>)
    -> (tensor<1x256x256xbf16>, tensor<1x256x128xbf16>, tensor<1x256x128xbf16>) {
  %o, %lse = qtune.attention %q, %k, %k segments %seg {heads = 4 : i64, kv_heads = 2 : i64} : tensor<1x256x256xbf16>, tensor<1x256x128xbf16>, tensor<1x256x128xbf16>, tensor<1x256xi32> -> tensor<1x256x256xbf16>, tensor<1x4x256xf32>
  %dq, %dk, %dv = qtune.attention_grad %q, %k, %k, %o, %lse, %g segments %seg {heads = 4 : i64, kv_heads = 2 : i64, scale = 0.125 : f64, causal = true} : tensor<1x256x256xbf16>, tensor<1x256x128xbf16>, tensor<1x256x128xbf16>, tensor<1x256x256xbf16>, tensor<1x4x256xf32>, tensor<1x256x256xbf16>, tensor<1x256xi32> -> tensor<1x256x256xbf16>, tensor<1x256x128xbf16>, tensor<1x256x128xbf16>
  return %dq, %dk, %dv : tensor<1x256x256xbf16>, tensor<1x256x128xbf16>, tensor<1x256x128xbf16>
}
