// RUN: qtune-opt %s -qtune-fuse -qtune-lower-to-gpu -split-input-file -verify-diagnostics | FileCheck %s

// A quantized linear with a LoRA adapter: two launches (T = s·x·Aᵀ, then the
// fused GEMM with T·Bᵀ as a second K segment); the weight is never dequantized
// into a buffer (the only allocations are T and y).
!w = !qtune.qweight<1000x384, #qtune.uniform<bits = 3, group = 128>>
// CHECK-LABEL: func.func @forward
// CHECK-SAME: %[[X:.*]]: memref<7x384xbf16> {qtune.name = "x"
// CHECK-NOT: memref.alloc() : memref<1000x384
// CHECK: %[[T:.*]] = memref.alloc() : memref<7x8xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@qtune_gemm_0 blocks in (%{{.*}}, %{{.*}}, %{{.*}}) threads in (%{{.*}}, %{{.*}}, %{{.*}}) args(%{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %{{.*}} : memref<?xbf16>, %{{.*}} : index)
// CHECK: %[[Y:.*]] = memref.alloc() : memref<7x1000xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@qtune_gemm_1 {{.*}} args({{.*}} : memref<?xbf16>, {{.*}} : memref<?xi32>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : memref<?xbf16>, {{.*}} : index)
// CHECK-NOT: memref.alloc() : memref<1000x384
// CHECK: return %[[Y]]
// CHECK: gpu.module @qtune_kernels [#nvvm.target<O = 3, chip = "sm_90a">]
// CHECK: gpu.func @qtune_gemm_0(
// CHECK-SAME: workgroup(%{{.*}} : memref<2x32x72xbf16, #gpu.address_space<workgroup>>, %{{.*}} : memref<2x64x72xbf16, #gpu.address_space<workgroup>>) kernel
// CHECK: nvgpu.device_async_copy
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 4 : i32, transpose = false}
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 2 : i32, transpose = false}
// CHECK: nvvm.mma.sync {{.*}} {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<bf16>, multiplicandBPtxType = #nvvm.mma_type<bf16>, shape = #nvvm.shape<m = 16, n = 8, k = 16>}
// CHECK: gpu.func @qtune_gemm_1(
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

// Two layers in a chain share one kernel (same format, N, K, epilogue); the
// first layer's output is a temporary the second reads; bias and residual are
// kernel arguments.
!w = !qtune.qweight<64x64, #qtune.nf4<block = 64>>
// CHECK-LABEL: func.func @chain
// CHECK: gpu.launch_func @qtune_kernels::@qtune_gemm_0
// CHECK: gpu.launch_func @qtune_kernels::@qtune_gemm_0
// CHECK-NOT: gpu.launch_func
// CHECK: gpu.func @qtune_gemm_0
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
  // expected-error @+1 {{qtune-lower-to-gpu: 'arith.mulf' has no GPU lowering yet}}
  %y = arith.mulf %x, %x : tensor<2x64xbf16>
  return %y : tensor<2x64xbf16>
}

// -----

// A layer's qtune.schedule (kept through qtune-fuse) fixes its kernel's tiles.
// CHECK-LABEL: func.func @scheduled
// CHECK: gpu.launch_func @qtune_kernels::@qtune_gemm_0 blocks in (%{{.*}}, %{{.*}}, %{{.*}}) threads in (%[[T:.*]], %{{.*}}, %{{.*}})
// CHECK: gpu.func @qtune_gemm_0(
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
// CHECK: gpu.launch_func @qtune_kernels::@qtune_gemm_0 blocks in (%{{.*}}, %{{.*}}, %{{.*}})
// CHECK: %[[DW:.*]] = memref.alloc() : memref<64x32xbf16>
// CHECK: gpu.launch_func @qtune_kernels::@qtune_gemm_1
// CHECK: return %[[DX]], %[[DW]]
// g's rows are contiguous (async copies); gᵀ's are not (element loads).
// CHECK: gpu.func @qtune_gemm_0(
// CHECK: nvgpu.device_async_copy
// CHECK: nvvm.mma.sync
// CHECK: gpu.func @qtune_gemm_1(
// CHECK-NOT: nvgpu.device_async_copy
// CHECK: nvvm.mma.sync
func.func @gradients(%g: tensor<2x3x64xbf16>, %x: tensor<2x3x32xbf16>, %c: tensor<64x4xi32>,
                     %s: tensor<64x1xbf16>, %z: tensor<64x1xbf16>) -> (tensor<2x3x32xbf16>, tensor<64x32xbf16>) {
  %w = qtune.qweight %c, %s, %z : tensor<64x4xi32>, tensor<64x1xbf16>, tensor<64x1xbf16> -> !w
  %dx = qtune.linear_t %g, %w : tensor<2x3x64xbf16>, !w -> tensor<2x3x32xbf16>
  %dw = qtune.weight_grad %g, %x : tensor<2x3x64xbf16>, tensor<2x3x32xbf16> -> tensor<64x32xbf16>
  return %dx, %dw : tensor<2x3x32xbf16>, tensor<64x32xbf16>
}

// -----

// PEQA scale gradient: zero an f32 accumulator, one GEMM (gᵀ · x) whose
// epilogue multiplies by ∂w/∂s = q − z and adds atomically per group, then
// convert to the scales' bf16. No N×K gradient buffer exists.
!w = !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 32>>
// CHECK-LABEL: func.func @peqa
// CHECK: %[[R:.*]] = memref.alloc() : memref<64x4xbf16>
// CHECK: %[[ACC:.*]] = memref.alloc() : memref<64x4xf32>
// CHECK: gpu.launch_func @qtune_kernels::@qtune_elementwise_0
// CHECK-NOT: memref.alloc() : memref<64x128
// CHECK: gpu.launch_func @qtune_kernels::@qtune_gemm_1
// CHECK: gpu.launch_func @qtune_kernels::@qtune_elementwise_2
// CHECK: return %[[R]]
// CHECK: gpu.func @qtune_gemm_1(
// CHECK: memref.atomic_rmw addf
func.func @peqa(%g: tensor<8x64xbf16>, %x: tensor<8x128xbf16>, %c: tensor<64x16xi32>,
                %s: tensor<64x4xbf16>, %z: tensor<64x4xbf16>) -> tensor<64x4xbf16> {
  %w = qtune.qweight scale_only %c, %s, %z : tensor<64x16xi32>, tensor<64x4xbf16>, tensor<64x4xbf16> -> !w
  %ds = qtune.component_grad %g, %x, %w {component = 1 : i64} : tensor<8x64xbf16>, tensor<8x128xbf16>, !w -> tensor<64x4xbf16>
  return %ds : tensor<64x4xbf16>
}
