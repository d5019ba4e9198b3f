// RUN: qtune-opt %s -qtune-fuse -qtune-lower-to-gpu -split-input-file -verify-diagnostics | FileCheck %s
// RUN: qtune-opt %s -qtune-fuse -qtune-lower-to-gpu=mma=sync -split-input-file -verify-diagnostics | FileCheck %s --check-prefix=SYNC
// RUN: qtune-opt %s -qtune-fuse -qtune-lower-to-gpu=chip=sm_80 -split-input-file -verify-diagnostics | FileCheck %s --check-prefix=SYNC
// RUN: not qtune-opt %s -qtune-lower-to-gpu=mma=fast -split-input-file 2>&1 | FileCheck %s --check-prefix=BADMMA
// BADMMA: qtune-lower-to-gpu: mma must be 'auto' or 'sync', got 'fast'

// A quantized linear with a LoRA adapter: two launches (T = s·x·Aᵀ, then the
// fused GEMM with T·Bᵀ as a second K segment); the weight is never dequantized
// into a buffer (the only allocations are T and y).
!w = !qtune.qweight<1000x384, #qtune.uniform<bits = 3, group = 128>>
// CHECK-LABEL: func.func @forward
// CHECK-SAME: %[[X:.*]]: memref<7x384xbf16> {qtune.name = "x"
// CHECK-NOT: memref.alloc() : memref<1000x384
// CHECK: %[[T:.*]] = memref.alloc() : memref<7x8xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@linear_bf16_n8k384 blocks in (%{{.*}}, %{{.*}}, %{{.*}}) threads in (%{{.*}}, %{{.*}}, %{{.*}}) args(%{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %{{.*}} : index)
// CHECK: %[[Y:.*]] = memref.alloc() : memref<7x1000xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@linear_uniform3g128_lora8_n1000k384 {{.*}} args({{.*}} : memref<?xbf16>, {{.*}} : memref<?xi32>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : index)
// CHECK-NOT: memref.alloc() : memref<1000x384
// CHECK: return %[[Y]]
// CHECK: gpu.module @qtune_kernels [#nvvm.target<O = 3, chip = "sm_90a">]
// CHECK: gpu.func @linear_bf16_n8k384(
// CHECK-SAME: workgroup(%{{.*}} : memref<2x32x72xbf16, #gpu.address_space<workgroup>>, %{{.*}} : memref<2x16x72xbf16, #gpu.address_space<workgroup>>) kernel
// CHECK: nvgpu.device_async_copy
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 4 : i32, transpose = false}
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 2 : i32, transpose = false}
// CHECK: nvvm.mma.sync {{.*}} {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<bf16>, multiplicandBPtxType = #nvvm.mma_type<bf16>, shape = #nvvm.shape<m = 16, n = 8, k = 16>}
// CHECK: gpu.func @linear_uniform3g128_lora8_n1000k384(
// 3-bit codes straddle words: the prologue reads a second word when needed.
// CHECK: arith.shli {{.*}} : i64
// CHECK: nvvm.mma.sync
func.func @forward(%x: tensor<7x384xbf16> {qtune.name = "x", qtune.role = #qtune.role<input>},
                   %c: tensor<1000x36xi32> {qtune.name = "codes", qtune.role = #qtune.role<frozen>},
                   %s: tensor<1000x3xbf16> {qtune.name = "scales", qtune.role = #qtune.role<frozen>},
                   %z: tensor<1000x3xbf16> {qtune.name = "zeros", qtune.role = #qtune.role<frozen>},
                   %a: tensor<8x384xbf16> {qtune.name = "lora_A", qtune.role = #qtune.role<trainable>},
                   %b: tensor<1000x8xbf16> {qtune.name = "lora_B", qtune.role = #qtune.role<trainable>})
    -> (tensor<7x1000xbf16> {qtune.name = "y"}) {
  %w = qtune.qweight %c, %s, %z : tensor<1000x36xi32>, tensor<1000x3xbf16>, tensor<1000x3xbf16> -> !w
  %y = qtune.linear %x, %w : tensor<7x384xbf16>, !w -> tensor<7x1000xbf16>
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64} : tensor<7x384xbf16>, tensor<8x384xbf16>, tensor<1000x8xbf16> -> tensor<7x1000xbf16>
  %r = arith.addf %y, %d : tensor<7x1000xbf16>
  return %r : tensor<7x1000xbf16>
}

// -----

// Two adapters on one layer (a frozen base adapter under a trained one):
// qtune-fuse folds the first into the layer's GEMM; the second is lowered on
// its own, T2 = s·x·A2ᵀ then D2 = T2·B2ᵀ, and D2 enters the layer's GEMM as
// its residual (no separate add).
!w = !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 64>>
// CHECK-LABEL: func.func @two_adapters
// CHECK: %[[T2:.*]] = memref.alloc() : memref<16x2xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@linear_bf16_n2k128 {{.*}} args(%{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %{{.*}} : index)
// CHECK: %[[D2:.*]] = memref.alloc() : memref<16x64xbf16>
// CHECK: memref.collapse_shape %[[T2]]
// CHECK: memref.collapse_shape %[[D2]]
// CHECK: gpu.launch_func @qtune_kernels::@linear_bf16_n64k2 {{.*}} args(%{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %{{.*}} : index)
// CHECK: %[[T1:.*]] = memref.alloc() : memref<16x4xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@linear_bf16_n4k128 blocks
// CHECK: %[[Y:.*]] = memref.alloc() : memref<16x64xbf16>
// CHECK: memref.collapse_shape %[[D2]]
// CHECK: memref.collapse_shape %[[T1]]
// CHECK: gpu.launch_func @qtune_kernels::@linear_uniform4g64_lora4_residual_n64k128 {{.*}} args({{.*}} : memref<?xbf16>, {{.*}} : memref<?xi32>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : index)
// CHECK: return %[[Y]]
func.func @two_adapters(%x: tensor<16x128xbf16> {qtune.name = "x", qtune.role = #qtune.role<input>},
                        %c: tensor<64x16xi32> {qtune.name = "codes", qtune.role = #qtune.role<frozen>},
                        %s: tensor<64x2xbf16> {qtune.name = "scales", qtune.role = #qtune.role<frozen>},
                        %z: tensor<64x2xbf16> {qtune.name = "zeros", qtune.role = #qtune.role<frozen>},
                        %a1: tensor<4x128xbf16> {qtune.name = "base_lora_A", qtune.role = #qtune.role<frozen>},
                        %b1: tensor<64x4xbf16> {qtune.name = "base_lora_B", qtune.role = #qtune.role<frozen>},
                        %a2: tensor<2x128xbf16> {qtune.name = "lora_A", qtune.role = #qtune.role<trainable>},
                        %b2: tensor<64x2xbf16> {qtune.name = "lora_B", qtune.role = #qtune.role<trainable>})
    -> (tensor<16x64xbf16> {qtune.name = "y"}) {
  %w = qtune.qweight %c, %s, %z : tensor<64x16xi32>, tensor<64x2xbf16>, tensor<64x2xbf16> -> !w
  %y = qtune.linear %x, %w : tensor<16x128xbf16>, !w -> tensor<16x64xbf16>
  %d1 = qtune.lora %x, %a1, %b1 {alpha = 8.0 : f64, rank = 4 : i64} : tensor<16x128xbf16>, tensor<4x128xbf16>, tensor<64x4xbf16> -> tensor<16x64xbf16>
  %s1 = arith.addf %y, %d1 : tensor<16x64xbf16>
  %d2 = qtune.lora %x, %a2, %b2 {alpha = 4.0 : f64, rank = 2 : i64} : tensor<16x128xbf16>, tensor<2x128xbf16>, tensor<64x2xbf16> -> tensor<16x64xbf16>
  %s2 = arith.addf %s1, %d2 : tensor<16x64xbf16>
  return %s2 : tensor<16x64xbf16>
}

// -----

// Two layers in a chain share one kernel (same format, N, K, epilogue); the
// first layer's output is a temporary the second reads; bias and residual are
// kernel arguments.
!w = !qtune.qweight<64x64, #qtune.nf4<block = 64>>
// CHECK-LABEL: func.func @chain
// CHECK: gpu.launch_func @qtune_kernels::@linear_nf4c_bias_n64k64 blocks
// CHECK: gpu.launch_func @qtune_kernels::@linear_nf4c_bias_n64k64 blocks
// CHECK-NOT: gpu.launch_func
// CHECK: gpu.func @linear_nf4c_bias_n64k64(
// NF4 values come from a select tree on the code, not an indexed table.
// CHECK-NOT: llvm.alloca
// CHECK: arith.select
func.func @chain(%x: tensor<2x64xbf16>, %c: tensor<64x8xi32>, %a: tensor<64x1xf32>,
                 %bias: tensor<64xbf16>) -> tensor<2x64xbf16> {
  %w = qtune.qweight %c, %a : tensor<64x8xi32>, tensor<64x1xf32> -> !w
  %y = qtune.linear %x, %w, %bias : tensor<2x64xbf16>, !w, tensor<64xbf16> -> tensor<2x64xbf16>
  %z = qtune.linear %y, %w, %bias : tensor<2x64xbf16>, !w, tensor<64xbf16> -> tensor<2x64xbf16>
  return %z : tensor<2x64xbf16>
}

// -----

func.func @f32_activations(%x: tensor<2x64xf32>, %w: tensor<64x64xbf16>) -> tensor<2x64xf32> {
  // expected-error @+1 {{qtune-lower-to-gpu: GPU kernels take statically shaped bf16 activations and adapters, got 'tensor<2x64xf32>'}}
  %y = qtune.linear %x, %w : tensor<2x64xf32>, tensor<64x64xbf16> -> tensor<2x64xf32>
  return %y : tensor<2x64xf32>
}

// -----

func.func @unsupported(%x: tensor<2x64xbf16>) -> tensor<2x64xbf16> {
  // expected-error @+1 {{qtune-lower-to-gpu: 'arith.divf' has no GPU lowering yet}}
  %y = arith.divf %x, %x : tensor<2x64xbf16>
  return %y : tensor<2x64xbf16>
}

// -----

// A layer's qtune.schedule (kept through qtune-fuse) fixes its kernel's tiles.
// CHECK-LABEL: func.func @scheduled
// CHECK: gpu.launch_func @qtune_kernels::@linear_bf16_residual_n64k64 blocks in (%{{.*}}, %{{.*}}, %{{.*}}) threads in (%[[T:.*]], %{{.*}}, %{{.*}})
// CHECK: gpu.func @linear_bf16_residual_n64k64(
// CHECK-SAME: workgroup(%{{.*}} : memref<2x16x40xbf16, #gpu.address_space<workgroup>>, %{{.*}} : memref<2x32x40xbf16, #gpu.address_space<workgroup>>)
// CHECK-SAME: known_block_size = array<i32: 64, 1, 1>
func.func @scheduled(%x: tensor<2x64xbf16>, %w: tensor<64x64xbf16>, %r: tensor<2x64xbf16>) -> tensor<2x64xbf16> {
  %y = qtune.linear %x, %w {qtune.schedule = array<i64: 16, 32, 32, 1, 2>} : tensor<2x64xbf16>, tensor<64x64xbf16> -> tensor<2x64xbf16>
  %o = arith.addf %y, %r : tensor<2x64xbf16>
  return %o : tensor<2x64xbf16>
}

// -----

func.func @bad_schedule(%x: tensor<2x64xbf16>, %w: tensor<64x64xbf16>) -> tensor<2x64xbf16> {
  // expected-error @+1 {{qtune-lower-to-gpu: invalid schedule 24x32x32 (1x2 warps): tileM must be a multiple of 16 × warpsM}}
  %y = qtune.linear %x, %w {qtune.schedule = array<i64: 24, 32, 32, 1, 2>} : tensor<2x64xbf16>, tensor<64x64xbf16> -> tensor<2x64xbf16>
  return %y : tensor<2x64xbf16>
}

// -----

// Gradient GEMMs: g · W through a quantized weight reads the weight transposed
// (dequantized at (n, k) of the N×K weight while K is the output); gᵀ · x
// reads both operands transposed, reducing over all leading positions.
!w = !qtune.qweight<64x32, #qtune.uniform<bits = 4, group = 32>>
// CHECK-LABEL: func.func @gradients
// CHECK: %[[DX:.*]] = memref.alloc() : memref<2x3x32xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@linear_input_grad_uniform4g32_n32k64 blocks in (%{{.*}}, %{{.*}}, %{{.*}})
// CHECK: %[[DW:.*]] = memref.alloc() : memref<64x32xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@weight_grad_bf16_n32k6 blocks
// CHECK: return %[[DX]], %[[DW]]
// g's rows are contiguous (async copies into [m][k] stages); gᵀ, with M = 64
// a multiple of 8, is staged [k][m] (tileK × (tileM + 8)) by async copies of
// 8 consecutive m and read by transposing ldmatrix.
// CHECK: gpu.func @linear_input_grad_uniform4g32_n32k64(
// CHECK: nvgpu.device_async_copy
// CHECK: nvvm.mma.sync
// CHECK: gpu.func @weight_grad_bf16_n32k6({{.*}}) workgroup(%[[XS:.*]] : memref<2x64x40xbf16, #gpu.address_space<workgroup>>,
// CHECK: nvgpu.device_async_copy %{{.*}}, %[[XS]]
// CHECK: nvgpu.ldmatrix %[[XS]][{{.*}}] {numTiles = 4 : i32, transpose = true}
// CHECK: nvvm.mma.sync
func.func @gradients(%g: tensor<2x3x64xbf16>, %x: tensor<2x3x32xbf16>, %c: tensor<64x4xi32>,
                     %s: tensor<64x1xbf16>, %z: tensor<64x1xbf16>) -> (tensor<2x3x32xbf16>, tensor<64x32xbf16>) {
  %w = qtune.qweight %c, %s, %z : tensor<64x4xi32>, tensor<64x1xbf16>, tensor<64x1xbf16> -> !w
  %dx = qtune.linear_t %g, %w : tensor<2x3x64xbf16>, !w -> tensor<2x3x32xbf16>
  %dw = qtune.weight_grad %g, %x : tensor<2x3x64xbf16>, tensor<2x3x32xbf16> -> tensor<64x32xbf16>
  return %dx, %dw : tensor<2x3x32xbf16>, tensor<64x32xbf16>
}

// -----

// gᵀ with M = 60 (rows not 16-byte aligned): element loads into [m][k].
// CHECK-LABEL: func.func @gradients_unaligned
// CHECK: gpu.func @weight_grad_bf16_n32k6({{.*}}) workgroup(%[[XS:.*]] : memref<2x32x72xbf16, #gpu.address_space<workgroup>>,
// CHECK-NOT: nvgpu.device_async_copy
// CHECK: nvgpu.ldmatrix %[[XS]][{{.*}}] {numTiles = 4 : i32, transpose = false}
// CHECK: nvvm.mma.sync
func.func @gradients_unaligned(%g: tensor<2x3x60xbf16>, %x: tensor<2x3x32xbf16>) -> tensor<60x32xbf16> {
  %dw = qtune.weight_grad %g, %x : tensor<2x3x60xbf16>, tensor<2x3x32xbf16> -> tensor<60x32xbf16>
  return %dw : tensor<60x32xbf16>
}

// -----

!w4 = !qtune.qweight<256x512, #qtune.uniform<bits = 4, group = 128>>
// The input gradient through a layer with a LoRA adapter, g·W + t·A: on the
// wgmma template one GEMM whose second K segment is t·A (A stored r × K, read
// transposed like W), no separate product or add. Both weights are staged
// MN-major (runs along their stored rows) and read transposed by the MMA.
// g reaches its stages by TMA, and the main K loop keeps one group of MMAs
// in flight: each step waits for its tile's copy, passes the barrier, copies
// the tile one ahead (the stage the MMAs of two tiles back read), issues its
// MMAs and waits only for the previous group. After the loop every group is
// waited for; the one-tile LoRA segment waits for its own.
// CHECK-LABEL: func.func @adapter_input_grad
// CHECK: qtune.tensor_map
// CHECK: gpu.launch_func @qtune_kernels::@linear_input_grad_uniform4g128_lora16_n512k256 blocks
// CHECK-NOT: gpu.launch_func
// CHECK: return
// CHECK: gpu.func @linear_input_grad_uniform4g128_lora16_n512k256(
// CHECK: scf.for
// CHECK: nvvm.mbarrier.try_wait.parity
// CHECK: gpu.barrier
// CHECK-NOT: nvvm.wgmma.mma_async
// CHECK: nvvm.cp.async.bulk.tensor.shared.cluster.global
// CHECK-COUNT-4: nvvm.wgmma.mma_async {{.*}} B[<bf16>, <one>, <row>]
// CHECK-NOT: nvvm.cp.async.bulk.tensor
// CHECK: nvvm.wgmma.wait.group.sync.aligned 1
// CHECK: scf.yield
// CHECK: nvvm.wgmma.wait.group.sync.aligned 1
// CHECK-NEXT: nvvm.wgmma.wait.group.sync.aligned 0
// CHECK-NEXT: nvvm.cp.async.wait.group 0
// CHECK-NEXT: gpu.barrier
// CHECK: nvvm.wgmma.mma_async {{.*}} B[<bf16>, <one>, <row>]
// CHECK: nvvm.wgmma.wait.group.sync.aligned 0
// With warp-level MMAs they stay two GEMMs and an add.
// SYNC-LABEL: func.func @adapter_input_grad
// SYNC: gpu.launch_func @qtune_kernels::@linear_input_grad_uniform4g128_n512k256 blocks
// SYNC: gpu.launch_func @qtune_kernels::@linear_input_grad_bf16_n512k16 blocks
// SYNC: gpu.launch_func @qtune_kernels::@add blocks
func.func @adapter_input_grad(%g: tensor<2048x256xbf16>, %c: tensor<256x64xi32>,
                              %s: tensor<256x4xbf16>, %z: tensor<256x4xbf16>,
                              %t: tensor<2048x16xbf16>, %a: tensor<16x512xbf16>) -> tensor<2048x512xbf16> {
  %w = qtune.qweight %c, %s, %z : tensor<256x64xi32>, tensor<256x4xbf16>, tensor<256x4xbf16> -> !w4
  %main = qtune.linear_t %g, %w : tensor<2048x256xbf16>, !w4 -> tensor<2048x512xbf16>
  %lora = qtune.linear_t %t, %a : tensor<2048x16xbf16>, tensor<16x512xbf16> -> tensor<2048x512xbf16>
  %dx = arith.addf %main, %lora : tensor<2048x512xbf16>
  return %dx : tensor<2048x512xbf16>
}

// -----

// The backward's dB = s·gᵀ·(x·Aᵀ) reads the forward adapter's T = s·x·Aᵀ
// (the same x and A) with its scale divided by s (2 / 2: no scaling left):
// x·Aᵀ is computed once, so three GEMMs instead of four.
// CHECK-LABEL: func.func @adapter_product_reused
// CHECK: %[[T:.*]] = memref.alloc() : memref<64x16xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@linear_bf16_n16k256 blocks
// CHECK: gpu.launch_func @qtune_kernels::@linear_bf16_lora16_n128k256 blocks
// CHECK: memref.collapse_shape %[[T]]
// CHECK: gpu.launch_func @qtune_kernels::@weight_grad_bf16_n16k64 blocks
// CHECK-NOT: gpu.launch_func
// CHECK: return
// CHECK: gpu.func @linear_bf16_n16k256(
// CHECK: arith.constant 2.000000e+00 : f32
// CHECK: gpu.func @weight_grad_bf16_n16k64(
// CHECK-NOT: 2.000000e+00
// CHECK: gpu.return
// SYNC-LABEL: func.func @adapter_product_reused
// SYNC: gpu.launch_func @qtune_kernels::@linear_bf16_n16k256 blocks
// SYNC: gpu.launch_func @qtune_kernels::@linear_bf16_lora16_n128k256 blocks
// SYNC: gpu.launch_func @qtune_kernels::@weight_grad_bf16_n16k64 blocks
// SYNC-NOT: gpu.launch_func
// SYNC: return
func.func @adapter_product_reused(%x: tensor<64x256xbf16>, %w: tensor<128x256xbf16>,
                                  %a: tensor<16x256xbf16>, %b: tensor<128x16xbf16>,
                                  %g: tensor<64x128xbf16>) -> (tensor<64x128xbf16>, tensor<128x16xbf16>) {
  %y0 = qtune.linear %x, %w : tensor<64x256xbf16>, tensor<128x256xbf16> -> tensor<64x128xbf16>
  %l = qtune.lora %x, %a, %b {alpha = 3.200000e+01 : f64, rank = 16 : i64} : tensor<64x256xbf16>, tensor<16x256xbf16>, tensor<128x16xbf16> -> tensor<64x128xbf16>
  %y = arith.addf %y0, %l : tensor<64x128xbf16>
  %t = qtune.linear %x, %a : tensor<64x256xbf16>, tensor<16x256xbf16> -> tensor<64x16xbf16>
  %db = qtune.weight_grad %g, %t {scale = 2.000000e+00 : f64} : tensor<64x128xbf16>, tensor<64x16xbf16> -> tensor<128x16xbf16>
  return %y, %db : tensor<64x128xbf16>, tensor<128x16xbf16>
}

// -----

// PEQA scale gradient: zero an f32 accumulator, one GEMM (gᵀ · x) whose
// epilogue multiplies by ∂w/∂s = q − z and adds atomically per group, then
// convert to the scales' bf16. No N×K gradient buffer exists. Whole tiles: a
// thread's 8 elements of a row whose scale index is one (here always: groups
// of 32, a warp's 32 columns) are summed and added by one atomic, else one
// atomic each.
!w = !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 32>>
// CHECK-LABEL: func.func @peqa
// CHECK: %[[ACC:.*]] = memref.alloc() : memref<64x4xf32>
// CHECK: gpu.launch_func @qtune_kernels::@fill blocks
// CHECK-NOT: memref.alloc() : memref<64x128
// CHECK: gpu.launch_func @qtune_kernels::@peqa_scale_grad_uniform4g32_n128k8 blocks
// CHECK: %[[R:.*]] = memref.alloc() : memref<64x4xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@convert blocks
// CHECK: return %[[R]]
// CHECK: gpu.func @peqa_scale_grad_uniform4g32_n128k8(
// CHECK: scf.if
// CHECK-NOT: memref.atomic_rmw
// CHECK: arith.addf
// CHECK: memref.atomic_rmw addf
// CHECK-NEXT: } else {
// CHECK-COUNT-8: memref.atomic_rmw addf
func.func @peqa(%g: tensor<8x64xbf16>, %x: tensor<8x128xbf16>, %c: tensor<64x16xi32>,
                %s: tensor<64x4xbf16>, %z: tensor<64x4xbf16>) -> tensor<64x4xbf16> {
  %w = qtune.qweight scale_only %c, %s, %z : tensor<64x16xi32>, tensor<64x4xbf16>, tensor<64x4xbf16> -> !w
  %ds = qtune.component_grad %g, %x, %w {component = 1 : i64} : tensor<8x64xbf16>, tensor<8x128xbf16>, !w -> tensor<64x4xbf16>
  return %ds : tensor<64x4xbf16>
}

// -----

// A train step: the layer's GEMM epilogue computes the MSE loss and its
// gradient (y is never stored): it writes the gradient into its output and
// adds each warp's sum of squares into a zeroed scalar; no MSE kernel runs.
// Clipping sums squares then scales, and the
// optimizer updates its parameter and states in place (no allocation for
// them; the results are the argument buffers). Per-element kernels take 8
// elements a thread (2048 elements: one block); int8 Lion momentum runs one
// thread block per momentum block (2048 / 256 = 8).
// CHECK-LABEL: func.func @step(
// CHECK-SAME: %[[W:[a-z0-9]+]]: memref<32x64xbf16> {qtune.name = "w"
// CHECK-SAME: %[[M:[a-z0-9]+]]: memref<32x64xi8>
// CHECK-SAME: %[[MS:[a-z0-9]+]]: memref<8xf32>
// CHECK: memref.alloc() : memref<f32>
// CHECK: %[[LOSS:.*]] = memref.alloc() : memref<f32>
// CHECK: %[[G:.*]] = memref.alloc() : memref<4x32xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@linear_bf16_mse_n32k64 {{.*}} args(%{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xf32>, %c4{{.*}} : index)
// CHECK-NOT: gpu.launch_func
// CHECK-NOT: memref.alloc() : memref<32x64xbf16>
// CHECK: %[[DW:.*]] = memref.alloc() : memref<32x64xbf16>
// CHECK: %[[CLIPPED:.*]] = memref.alloc() : memref<32x64xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@clip blocks in (%c1{{[_0-9]*}},
// CHECK-NOT: memref.alloc
// CHECK: %[[WF:.*]] = memref.cast %{{.*}} : memref<2048xbf16> to memref<?xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@lion_int8 blocks in (%c8
// CHECK-SAME: args(%[[WF]] : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xi8>, %{{.*}} : memref<?xf32>, %{{.*}} : memref<?xf32>
// CHECK: return %[[LOSS]], %[[W]], %[[M]], %[[MS]]
// The GEMM's epilogue: d = y − t, the gradient stored, then warp shuffles
// and one atomic add per warp for the loss.
// CHECK: gpu.func @linear_bf16_mse_n32k64(
// CHECK: arith.truncf
// CHECK: arith.subf
// CHECK: memref.store
// CHECK: gpu.shuffle  xor
// CHECK: memref.atomic_rmw addf
// CHECK: gpu.func @lion_int8(
// CHECK: gpu.shuffle  xor
// CHECK: arith.maximumf
// CHECK: arith.fptosi {{.*}} : f32 to i8
func.func @step(%x: tensor<4x64xbf16> {qtune.name = "x", qtune.role = #qtune.role<input>},
                %t: tensor<4x32xbf16> {qtune.name = "t", qtune.role = #qtune.role<input>},
                %w: tensor<32x64xbf16> {qtune.name = "w", qtune.role = #qtune.role<trainable>},
                %m: tensor<32x64xi8> {qtune.name = "w.m", qtune.role = #qtune.role<optimizer_state>},
                %ms: tensor<8xf32> {qtune.name = "w.m_scales", qtune.role = #qtune.role<optimizer_state>},
                %lr: tensor<f32> {qtune.name = "lr", qtune.role = #qtune.role<input>})
    -> (tensor<f32> {qtune.name = "loss"}, tensor<32x64xbf16> {qtune.name = "w", qtune.updates = 2 : i64},
        tensor<32x64xi8> {qtune.name = "w.m", qtune.updates = 3 : i64}, tensor<8xf32> {qtune.name = "w.m_scales", qtune.updates = 4 : i64}) {
  %one = arith.constant dense<1.0> : tensor<f32>
  %y = qtune.linear %x, %w : tensor<4x64xbf16>, tensor<32x64xbf16> -> tensor<4x32xbf16>
  %l = qtune.mse_loss %y, %t : tensor<4x32xbf16>, tensor<4x32xbf16> -> tensor<f32>
  %g = qtune.mse_loss_grad %y, %t, %one : tensor<4x32xbf16>, tensor<4x32xbf16>, tensor<f32> -> tensor<4x32xbf16>
  %dw = qtune.weight_grad %g, %x : tensor<4x32xbf16>, tensor<4x64xbf16> -> tensor<32x64xbf16>
  %c = qtune.clip_grad_norm %dw {max_norm = 1.0 : f64} : tensor<32x64xbf16> -> tensor<32x64xbf16>
  %nw, %nm, %ns = qtune.lion %w, %c, %m scales(%ms : tensor<8xf32>), %lr {block = 256 : i64, momentum = #qtune.state<int8>} : tensor<32x64xbf16>, tensor<32x64xbf16>, tensor<32x64xi8>, tensor<f32> -> tensor<32x64xbf16>, tensor<32x64xi8>, tensor<8xf32>
  return %l, %nw, %nm, %ns : tensor<f32>, tensor<32x64xbf16>, tensor<32x64xi8>, tensor<8xf32>
}

// -----

// When the prediction is also returned, the layer stores it and one kernel
// (one pass over y and t) writes the gradient and adds the loss per block.
// CHECK-LABEL: func.func @mse_of_returned_output
// CHECK: %[[Y:.*]] = memref.alloc() : memref<4x32xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@linear_bf16_n32k64 {{.*}} args(%{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %c4{{.*}} : index)
// CHECK: %[[LOSS:.*]] = memref.alloc() : memref<f32>
// CHECK: %[[G:.*]] = memref.alloc() : memref<4x32xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@mse_and_grad {{.*}} args(%{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xf32>, %{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xf32>, %c128{{.*}} : index)
// CHECK: return %[[LOSS]], %[[G]], %[[Y]]
// CHECK: gpu.func @mse_and_grad({{.*}}) workgroup(%{{.*}} : memref<8xf32, #gpu.address_space<workgroup>>) kernel
// CHECK: memref.store
// CHECK: gpu.shuffle  xor
// CHECK: memref.atomic_rmw addf
func.func @mse_of_returned_output(%x: tensor<4x64xbf16>, %t: tensor<4x32xbf16>, %w: tensor<32x64xbf16>)
    -> (tensor<f32>, tensor<4x32xbf16>, tensor<4x32xbf16>) {
  %one = arith.constant dense<1.0> : tensor<f32>
  %y = qtune.linear %x, %w : tensor<4x64xbf16>, tensor<32x64xbf16> -> tensor<4x32xbf16>
  %l = qtune.mse_loss %y, %t : tensor<4x32xbf16>, tensor<4x32xbf16> -> tensor<f32>
  %g = qtune.mse_loss_grad %y, %t, %one : tensor<4x32xbf16>, tensor<4x32xbf16>, tensor<f32> -> tensor<4x32xbf16>
  return %l, %g, %y : tensor<f32>, tensor<4x32xbf16>, tensor<4x32xbf16>
}

// -----

// A decode-sized product that is split over K (16 rows, 32 K tiles, 4 output
// tiles) keeps its split: the slices, their sum, then the MSE kernel.
// CHECK-LABEL: func.func @mse_after_split_product
// CHECK: memref.alloc() : memref<16384xf32>
// CHECK: gpu.launch_func @qtune_kernels::@linear_bf16_n256k2048_splitk4 blocks in (%c4{{[_0-9]*}}, %c1{{[_0-9]*}}, %c4{{[_0-9]*}})
// CHECK: gpu.launch_func @qtune_kernels::@sum_slices blocks
// CHECK: gpu.launch_func @qtune_kernels::@mse_and_grad {{.*}} args(%{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xf32>, %{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xf32>, %c4096{{.*}} : index)
// CHECK: return
func.func @mse_after_split_product(%x: tensor<16x2048xbf16>, %t: tensor<16x256xbf16>, %w: tensor<256x2048xbf16>)
    -> (tensor<f32>, tensor<16x256xbf16>) {
  %one = arith.constant dense<1.0> : tensor<f32>
  %y = qtune.linear %x, %w : tensor<16x2048xbf16>, tensor<256x2048xbf16> -> tensor<16x256xbf16>
  %l = qtune.mse_loss %y, %t : tensor<16x256xbf16>, tensor<16x256xbf16> -> tensor<f32>
  %g = qtune.mse_loss_grad %y, %t, %one : tensor<16x256xbf16>, tensor<16x256xbf16>, tensor<f32> -> tensor<16x256xbf16>
  return %l, %g : tensor<f32>, tensor<16x256xbf16>
}

// -----

// An in-place update must be the last reader of its argument.
func.func @read_after_update(%w: tensor<8xf32> {qtune.role = #qtune.role<trainable>},
                             %g: tensor<8xf32>, %m: tensor<8xf32>, %lr: tensor<f32>)
    -> (tensor<8xf32>, tensor<8xf32>) {
  // expected-error @+1 {{qtune-lower-to-gpu: argument #0 is updated in place here but read after the update by 'arith.addf'}}
  %nw, %nm = qtune.lion %w, %g, %m, %lr {momentum = #qtune.state<f32>} : tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<f32> -> tensor<8xf32>, tensor<8xf32>
  %s = arith.addf %w, %nw : tensor<8xf32>
  return %s, %nm : tensor<8xf32>, tensor<8xf32>
}

// -----

// QFT: one GEMM (gᵀ · x) whose epilogue updates the packed codes, the int8
// momentum and its scales in place: no N×K buffer, no y; one momentum block
// per tile row (tileN = block = 64), per-row absmax across warps in shared
// memory, the two halves of each code word joined by a shuffle.
// CHECK-LABEL: func.func @qft(
// CHECK-NOT: memref.alloc
// CHECK: gpu.launch_func @qtune_kernels::@qft_lion_uniform8c_n128k4 blocks in (%c2{{.*}}, %c1{{.*}}, %c1{{.*}}) threads in (%c128
// CHECK-NOT: memref.alloc
// CHECK: return %arg2, %arg4, %arg5
// CHECK: gpu.func @qft_lion_uniform8c_n128k4({{.*}}) workgroup({{.*}}, %{{.*}} : memref<64x2xf32, #gpu.address_space<workgroup>>) kernel
// CHECK: gpu.shuffle  xor
// CHECK: gpu.barrier
// CHECK: arith.fptosi {{.*}} : f32 to i8
// CHECK: arith.fptoui {{.*}} : f32 to i32
// CHECK: gpu.shuffle  xor
func.func @qft(%g: tensor<4x64xbf16>, %x: tensor<4x128xbf16>, %c: tensor<64x32xi32> {qtune.role = #qtune.role<trainable>},
               %s: tensor<64x1xbf16>, %m: tensor<64x128xi8>, %ms: tensor<128xf32>, %lr: tensor<f32>)
    -> (tensor<64x32xi32> {qtune.updates = 2 : i64}, tensor<64x128xi8> {qtune.updates = 4 : i64}, tensor<128xf32> {qtune.updates = 5 : i64}) {
  %nc, %nm, %ns = qtune.qft_lion %g, %x, %c, params(%s : tensor<64x1xbf16>), %m, %ms, %lr
      {format = #qtune.uniform<bits = 8, symmetric = true>, block = 64 : i64}
      : tensor<4x64xbf16>, tensor<4x128xbf16>, tensor<64x32xi32>, tensor<64x128xi8>, tensor<128xf32>, tensor<f32>
      -> tensor<64x32xi32>, tensor<64x128xi8>, tensor<128xf32>
  return %nc, %nm, %ns : tensor<64x32xi32>, tensor<64x128xi8>, tensor<128xf32>
}

// -----

// QFT over a training-sized token count (512) on sm_90a: the dW GEMM runs on
// two warpgroups of wgmma m64n256k16 (tileN = block = 256; gᵀ and x both
// staged MN-major and read transposed) over three stages in dynamic shared
// memory (X 128 and W 256 rows of core matrices a stage, then the row maxima:
// 3 × 384 / 8 × 1168 + 512 bytes), one block per SM (no minctasm: 128
// accumulators a thread), and the same fused Lion epilogue. Without wgmma:
// the warp-level 32 × 256 tile.
// CHECK-LABEL: func.func @qft_wgmma(
// CHECK: gpu.launch_func @qtune_kernels::@qft_lion_uniform8g128_n256k512 blocks in (%c1{{.*}}, %c1{{.*}}, %c1{{.*}}) threads in (%c256{{.*}}) dynamic_shared_memory_size %c168704_i32
// CHECK: gpu.func @qft_lion_uniform8g128_n256k512({{.*}}) kernel attributes {known_block_size = array<i32: 256, 1, 1>}
// CHECK: memref.view {{.*}} to memref<128x1xf32, #gpu.address_space<workgroup>>
// CHECK-COUNT-4: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 256, k = 16>, D[<f32>, <one>], A[<bf16>, <one>, <col>], B[<bf16>, <one>, <row>]
// CHECK: gpu.barrier
// CHECK: arith.fptosi {{.*}} : f32 to i8
// SYNC-LABEL: func.func @qft_wgmma(
// SYNC: gpu.launch_func {{.*}} blocks in (%c1{{.*}}, %c4{{.*}}, %c1{{.*}}) threads in (%c128
// SYNC-NOT: wgmma
func.func @qft_wgmma(%g: tensor<512x128xbf16>, %x: tensor<512x256xbf16>, %c: tensor<128x64xi32> {qtune.role = #qtune.role<trainable>},
                     %s: tensor<128x2xbf16>, %m: tensor<128x256xi8>, %ms: tensor<128xf32>, %lr: tensor<f32>)
    -> (tensor<128x64xi32> {qtune.updates = 2 : i64}, tensor<128x256xi8> {qtune.updates = 4 : i64}, tensor<128xf32> {qtune.updates = 5 : i64}) {
  %nc, %nm, %ns = qtune.qft_lion %g, %x, %c, params(%s : tensor<128x2xbf16>), %m, %ms, %lr
      {format = #qtune.uniform<bits = 8, symmetric = true, group = 128>, block = 256 : i64}
      : tensor<512x128xbf16>, tensor<512x256xbf16>, tensor<128x64xi32>, tensor<128x256xi8>, tensor<128xf32>, tensor<f32>
      -> tensor<128x64xi32>, tensor<128x256xi8>, tensor<128xf32>
  return %nc, %nm, %ns : tensor<128x64xi32>, tensor<128x256xi8>, tensor<128xf32>
}

// -----

// The fused QFT step needs whole tiles.
func.func @qft_ragged(%g: tensor<4x40xbf16>, %x: tensor<4x128xbf16>, %c: tensor<40x32xi32>,
                      %s: tensor<40x1xbf16>, %m: tensor<40x128xi8>, %ms: tensor<80xf32>, %lr: tensor<f32>)
    -> (tensor<40x32xi32>, tensor<40x128xi8>, tensor<80xf32>) {
  // expected-error @+1 {{qtune-lower-to-gpu: the fused QFT step needs N a multiple of 64 and K of the momentum block 64 (a multiple of 16); got 40x128}}
  %nc, %nm, %ns = qtune.qft_lion %g, %x, %c, params(%s : tensor<40x1xbf16>), %m, %ms, %lr
      {format = #qtune.uniform<bits = 8, symmetric = true>, block = 64 : i64}
      : tensor<4x40xbf16>, tensor<4x128xbf16>, tensor<40x32xi32>, tensor<40x128xi8>, tensor<80xf32>, tensor<f32>
      -> tensor<40x32xi32>, tensor<40x128xi8>, tensor<80xf32>
  return %nc, %nm, %ns : tensor<40x32xi32>, tensor<40x128xi8>, tensor<80xf32>
}

// -----

// An adapter-sized product (N = 16) with a long reduction: narrow tiles
// (128×16) and split-K. Eight slices (16 output tiles, 64 K tiles) write f32
// partials into a workspace, summed in order by a second kernel into y
// (8 outputs a thread: 32768 / 2048 = 16 blocks).
// CHECK-LABEL: func.func @split_k
// CHECK: %[[WS:.*]] = memref.alloc() : memref<262144xf32>
// CHECK: gpu.launch_func @qtune_kernels::@linear_bf16_n16k4096_splitk8 blocks in (%c1{{.*}}, %c16{{.*}}, %c8{{.*}}) threads in (%c128
// CHECK: gpu.launch_func @qtune_kernels::@sum_slices blocks in (%c16{{[_0-9]*}},
// CHECK: gpu.func @linear_bf16_n16k4096_splitk8({{.*}}) workgroup(%{{.*}} : memref<2x128x72xbf16, #gpu.address_space<workgroup>>, %{{.*}} : memref<2x16x72xbf16, #gpu.address_space<workgroup>>) kernel
// CHECK: gpu.block_id  z
// CHECK: gpu.func @sum_slices(
// CHECK-COUNT-8: memref.load
func.func @split_k(%x: tensor<2048x4096xbf16>, %a: tensor<16x4096xbf16>) -> tensor<2048x16xbf16> {
  %t = qtune.linear %x, %a : tensor<2048x4096xbf16>, tensor<16x4096xbf16> -> tensor<2048x16xbf16>
  return %t : tensor<2048x16xbf16>
}

// -----

// Training-sized M on sm_90a: two warpgroups of wgmma m64n128k16 (four k16
// steps per K tile of 64) over three stages in dynamic shared memory, two
// blocks per SM. X reaches its stages by TMA: the host plan builds a tensor
// map over x (boxes of 128 × 64, 128-byte swizzle) and passes it after M;
// in the kernel thread 0 initializes one mbarrier per stage and starts one
// bulk tensor copy per K tile (the mbarrier expects its 16384 bytes), and
// every thread waits for the stage's phase before the step's barrier. X
// stages of 128 swizzled 128-byte rows (16384 bytes; a one-tile LoRA
// segment's core layout may run into the next stage), W stages of 16 row
// groups × 1168 bytes, the mbarriers after them: 105240 bytes. The dense
// weight is copied by cp.async, so the K loop carries only the
// accumulators. The MMAs of a tile are committed as one group and waited for
// after the next tile's copies are issued. The loop is unrolled by the stage
// count (K = 256: four tiles of 64, one round of three steps on constant
// stages, no stage arithmetic in the loop, then the fourth step).
// CHECK-LABEL: func.func @dynamic_shared
// CHECK: %[[MAP:.*]] = qtune.tensor_map %{{.*}} {box_cols = 64 : i64, box_rows = 128 : i64, cols = 256 : i64, rows = 600 : i64, swizzle = 128 : i64} : memref<?xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@linear_bf16_n256k256 {{.*}} threads in (%c256{{.*}}) dynamic_shared_memory_size %c105240_i32 args({{.*}}, %[[MAP]] : i64)
// CHECK: gpu.func @linear_bf16_n256k256(%arg0: memref<?xbf16>, %arg1: memref<?xbf16>, %arg2: memref<?xbf16>, %arg3: index, %arg4: i64)
// CHECK-NOT: workgroup(
// CHECK-SAME: kernel
// CHECK-SAME: nvvm.minctasm = 2
// CHECK: gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
// CHECK: memref.view {{.*}} to memref<24576xbf16, #gpu.address_space<workgroup>>
// CHECK: memref.view {{.*}} to memref<28032xbf16, #gpu.address_space<workgroup>>
// CHECK: memref.view {{.*}} to memref<3xi64, #gpu.address_space<workgroup>>
// CHECK: llvm.inttoptr %arg4 : i64 to !llvm.ptr
// CHECK-COUNT-3: nvvm.mbarrier.init
// CHECK: gpu.barrier
// CHECK-NOT: nvgpu.device_async_copy %arg0
// CHECK: nvgpu.device_async_copy %arg1[%{{.*}}], %{{.*}}[%{{.*}}], 8, %{{.*}} : memref<?xbf16> to memref<28032xbf16, #gpu.address_space<workgroup>>
// CHECK: nvvm.cp.async.commit.group
// CHECK: nvvm.mbarrier.arrive.expect_tx %{{.*}}, %c16384_i32
// CHECK: nvvm.cp.async.bulk.tensor.shared.cluster.global %{{.*}}, %{{.*}}, %{{.*}}, box[%{{.*}}, %{{.*}}] : !llvm.ptr<7>, !llvm.ptr
// CHECK: scf.for %{{.*}} = %c0{{.*}} to %c3{{.*}} step %c3{{.*}} iter_args(%{{[a-z0-9_]+}} = %{{[a-z0-9_]+}}) -> (!llvm.struct<
// CHECK-NOT: arith.remui {{.*}}, %c3{{(_[0-9]+)?}} :
// CHECK: nvvm.mbarrier.try_wait.parity
// CHECK: nvvm.fence.proxy
// CHECK-NEXT: gpu.barrier
// CHECK: nvvm.wgmma.fence.aligned
// CHECK-COUNT-4: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 128, k = 16>, D[<f32>, <one>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <col>]
// CHECK-NEXT: nvvm.wgmma.commit.group.sync.aligned
// CHECK-NOT: arith.remui {{.*}}, %c3{{(_[0-9]+)?}} :
// CHECK: nvvm.cp.async.commit.group
// CHECK-NOT: arith.remui {{.*}}, %c3{{(_[0-9]+)?}} :
// CHECK: nvvm.wgmma.wait.group.sync.aligned 0
// CHECK-NOT: arith.remui {{.*}}, %c3{{(_[0-9]+)?}} :
// CHECK: nvvm.mbarrier.try_wait.parity
// CHECK: nvvm.fence.proxy
// CHECK-NEXT: gpu.barrier
// CHECK: nvvm.wgmma.fence.aligned
// CHECK-COUNT-4: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 128, k = 16>, D[<f32>, <one>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <col>]
// CHECK-NEXT: nvvm.wgmma.commit.group.sync.aligned
// CHECK-NOT: arith.remui {{.*}}, %c3{{(_[0-9]+)?}} :
// CHECK: nvvm.cp.async.commit.group
// CHECK-NOT: arith.remui {{.*}}, %c3{{(_[0-9]+)?}} :
// CHECK: nvvm.wgmma.wait.group.sync.aligned 0
// CHECK-NOT: arith.remui {{.*}}, %c3{{(_[0-9]+)?}} :
// CHECK: nvvm.mbarrier.try_wait.parity
// CHECK: nvvm.fence.proxy
// CHECK-NEXT: gpu.barrier
// CHECK: nvvm.wgmma.fence.aligned
// CHECK-COUNT-4: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 128, k = 16>, D[<f32>, <one>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <col>]
// CHECK-NEXT: nvvm.wgmma.commit.group.sync.aligned
// CHECK-NOT: arith.remui {{.*}}, %c3{{(_[0-9]+)?}} :
// CHECK: nvvm.cp.async.commit.group
// CHECK-NOT: arith.remui {{.*}}, %c3{{(_[0-9]+)?}} :
// CHECK: nvvm.wgmma.wait.group.sync.aligned 0
// CHECK: scf.yield
// CHECK-NOT: arith.remui {{.*}}, %c3{{(_[0-9]+)?}} :
// CHECK: nvvm.mbarrier.try_wait.parity
// CHECK: nvvm.fence.proxy
// CHECK-NEXT: gpu.barrier
// CHECK: nvvm.wgmma.fence.aligned
// CHECK-COUNT-4: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 128, k = 16>, D[<f32>, <one>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <col>]
// CHECK-NEXT: nvvm.wgmma.commit.group.sync.aligned
// CHECK-NOT: arith.remui {{.*}}, %c3{{(_[0-9]+)?}} :
// CHECK: nvvm.cp.async.commit.group
// CHECK-NOT: arith.remui {{.*}}, %c3{{(_[0-9]+)?}} :
// CHECK: nvvm.wgmma.wait.group.sync.aligned 0
// The epilogue stores through the tile in the (free) X stages: bf16 pairs
// in, a barrier, then whole 16-byte chunks of rows out (the 600-row tail
// masked).
// CHECK: vector.store {{.*}} : memref<24576xbf16, #gpu.address_space<workgroup>>, vector<2xbf16>
// CHECK: gpu.barrier
// CHECK: vector.load {{.*}} : memref<24576xbf16, #gpu.address_space<workgroup>>, vector<8xbf16>
// CHECK: scf.if
// CHECK-NEXT: arith.muli
// CHECK-NEXT: arith.addi
// CHECK-NEXT: vector.store {{.*}} : memref<?xbf16>, vector<8xbf16>
// Without wgmma (mma=sync, or sm_80) the same layer takes the warp-level
// schedule: stages past 48 KiB (128 × 128 × 64: 73728 bytes) live in dynamic
// shared memory, viewed as the padded X and W stages.
// SYNC-LABEL: func.func @dynamic_shared
// SYNC: gpu.launch_func @qtune_kernels::@linear_bf16_n256k256 {{.*}} dynamic_shared_memory_size %c73728_i32
// SYNC: gpu.func @linear_bf16_n256k256(
// SYNC-NOT: workgroup(
// SYNC-SAME: kernel
// SYNC: gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
// SYNC: memref.view {{.*}} to memref<2x128x72xbf16, #gpu.address_space<workgroup>>
// SYNC: memref.view {{.*}} to memref<2x128x72xbf16, #gpu.address_space<workgroup>>
// SYNC-NOT: wgmma
// SYNC: nvvm.mma.sync
func.func @dynamic_shared(%x: tensor<600x256xbf16>, %w: tensor<256x256xbf16>) -> tensor<600x256xbf16> {
  %y = qtune.linear %x, %w : tensor<600x256xbf16>, tensor<256x256xbf16> -> tensor<600x256xbf16>
  return %y : tensor<600x256xbf16>
}

// -----

// KL divergence (distillation) and its gradient in the student: one thread
// block per row, each with both rows' log-sum-exp; the loss is a zeroed
// scalar with one atomic add per row.
// CHECK-LABEL: func.func @kl_div
// CHECK: gpu.launch_func @qtune_kernels::@kl_div_v100 blocks in (%c6
// CHECK: gpu.launch_func @qtune_kernels::@kl_div_grad_v100 blocks in (%c6
// CHECK: gpu.func @kl_div_v100(
// CHECK: memref.atomic_rmw addf
// CHECK: gpu.func @kl_div_grad_v100(
// CHECK: llvm.call_intrinsic "llvm.nvvm.ex2.approx.f32"
func.func @kl_div(%s: tensor<2x3x100xbf16>, %t: tensor<2x3x100xf32>, %g: tensor<f32>)
    -> (tensor<f32>, tensor<2x3x100xbf16>) {
  %l = qtune.kl_div %s, %t : tensor<2x3x100xbf16>, tensor<2x3x100xf32> -> tensor<f32>
  %d = qtune.kl_div_grad %s, %t, %g : tensor<2x3x100xbf16>, tensor<2x3x100xf32>, tensor<f32> -> tensor<2x3x100xbf16>
  return %l, %d : tensor<f32>, tensor<2x3x100xbf16>
}

// -----

// Cross entropy and its gradient: one thread block per row (12 rows), the
// row's max and log-sum-exp reduced across the block; the loss is a zeroed
// scalar with one atomic add per row.
// CHECK-LABEL: func.func @cross_entropy
// CHECK: gpu.launch_func @qtune_kernels::@cross_entropy_v1000 blocks in (%c12
// CHECK: gpu.launch_func @qtune_kernels::@cross_entropy_grad_v1000 blocks in (%c12
// CHECK: gpu.func @cross_entropy_v1000({{.*}}) workgroup(%{{.*}} : memref<8xf32, #gpu.address_space<workgroup>>) kernel
// CHECK: llvm.call_intrinsic "llvm.nvvm.lg2.approx.f"
// CHECK: memref.atomic_rmw addf
// CHECK: gpu.func @cross_entropy_grad_v1000(
// CHECK: llvm.call_intrinsic "llvm.nvvm.ex2.approx.f32"
func.func @cross_entropy(%logits: tensor<3x4x1000xbf16>, %labels: tensor<3x4xi32>, %g: tensor<f32>)
    -> (tensor<f32>, tensor<3x4x1000xbf16>) {
  %l = qtune.cross_entropy %logits, %labels : tensor<3x4x1000xbf16>, tensor<3x4xi32> -> tensor<f32>
  %d = qtune.cross_entropy_grad %logits, %labels, %g : tensor<3x4x1000xbf16>, tensor<3x4xi32>, tensor<f32> -> tensor<3x4x1000xbf16>
  return %l, %d : tensor<f32>, tensor<3x4x1000xbf16>
}

// -----

// An lm head with its loss and gradient over 2048 tokens × 32000 logits (256
// MiB as f32): computed 512 rows at a time (64 MiB), so no full-vocabulary
// logits buffer exists; each chunk reads a window of h and the labels and
// writes a window of dh.
// CHECK-LABEL: func.func @lm_head_grad
// CHECK-NOT: memref.alloc() : memref<2048x32000
// CHECK: memref.alloc() : memref<f32>
// CHECK: %[[LOSS:.*]] = memref.alloc() : memref<f32>
// CHECK: %[[DH:.*]] = memref.alloc() : memref<2048x64xbf16>
// CHECK: qtune.buffer_view %{{.*}} {offset = 0 : i64, size = 32768 : i64} : memref<?xbf16>
// CHECK: qtune.buffer_view %{{.*}} {offset = 0 : i64, size = 512 : i64} : memref<?xi32>
// CHECK: memref.alloc() : memref<512x32000xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@linear_bf16_n32000k64 blocks
// CHECK: memref.alloc() : memref<512x32000xbf16>
// CHECK: qtune.buffer_view %{{.*}} {offset = 0 : i64, size = 32768 : i64} : memref<?xbf16>
// CHECK: qtune.buffer_view %{{.*}} {offset = 98304 : i64, size = 32768 : i64} : memref<?xbf16>
// CHECK-NOT: memref.alloc() : memref<2048x32000
// CHECK: return %[[LOSS]], %[[DH]]
func.func @lm_head_grad(%h: tensor<2048x64xbf16>, %w: tensor<32000x64xbf16>, %labels: tensor<2048xi32>)
    -> (tensor<f32>, tensor<2048x64xbf16>) {
  %logits = qtune.linear %h, %w : tensor<2048x64xbf16>, tensor<32000x64xbf16> -> tensor<2048x32000xbf16>
  %l = qtune.cross_entropy %logits, %labels : tensor<2048x32000xbf16>, tensor<2048xi32> -> tensor<f32>
  %one = arith.constant dense<1.0> : tensor<f32>
  %dl = qtune.cross_entropy_grad %logits, %labels, %one : tensor<2048x32000xbf16>, tensor<2048xi32>, tensor<f32> -> tensor<2048x32000xbf16>
  %dh = qtune.linear_t %dl, %w : tensor<2048x32000xbf16>, tensor<32000x64xbf16> -> tensor<2048x64xbf16>
  return %l, %dh : tensor<f32>, tensor<2048x64xbf16>
}

// -----

// A weight gradient of training size on sm_90a runs on the wgmma template:
// gᵀ (M = 1024, rows 16-byte aligned) is staged MN-major by async copies into
// the flat core-matrix stages and read transposed (A col), as is x (B row),
// whose runs of 8 dense weights are single 16-byte loads and stores.
// CHECK-LABEL: func.func @weight_grad_wgmma
// CHECK: gpu.func @weight_grad_bf16_n256k2048_splitk4(
// CHECK: nvgpu.device_async_copy %arg0[%{{.*}}], %{{.*}}[%{{.*}}], 8, %{{.*}} : memref<?xbf16> to memref<{{[0-9]+}}xbf16, #gpu.address_space<workgroup>>
// CHECK: vector.load %arg1[%{{.*}}] {alignment = 16 : i64} : memref<?xbf16>, vector<8xbf16>
// CHECK: vector.store %{{.*}}, %{{.*}}[%{{.*}}] {alignment = 16 : i64} : memref<{{[0-9]+}}xbf16, #gpu.address_space<workgroup>>, vector<8xbf16>
// CHECK: nvvm.wgmma.mma_async {{.*}} A[<bf16>, <one>, <col>], B[<bf16>, <one>, <row>]
func.func @weight_grad_wgmma(%g: tensor<2048x1024xbf16>, %x: tensor<2048x256xbf16>) -> tensor<1024x256xbf16> {
  %dw = qtune.weight_grad %g, %x : tensor<2048x1024xbf16>, tensor<2048x256xbf16> -> tensor<1024x256xbf16>
  return %dw : tensor<1024x256xbf16>
}
