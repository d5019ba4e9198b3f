//===- Passes.td - qtune conversion passes ------------------*- tablegen -*-===//

#ifndef QTUNE_CONVERSION_PASSES_TD
#define QTUNE_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

def QTuneLowerToGPU : Pass<"qtune-lower-to-gpu", "mlir::ModuleOp"> {
  let summary = "Lower qtune linear layers to GPU kernels and a host launch plan";
  let description = [{
    Turns every function of qtune graph ops (after `qtune-fuse`) into

    - a `gpu.module @qtune_kernels` (targeting `#nvvm.target<chip = ...>`) whose
      kernels are built by the GEMM template (`GemmTemplate.h`): one kernel per
      distinct (format, N, K, epilogue, schedule), with M a kernel argument;
    - a host function of the same name over memrefs: one buffer per argument,
      `memref.alloc` for results and intermediates, and `gpu.launch_func` per
      kernel launch, which the bundle writer turns into the launch plan.

    A linear layer with a LoRA term takes two launches: T = (alpha/rank)·x·Aᵀ,
    then y = x·Wᵀ + T·Bᵀ (+ bias, + residual) with T·Bᵀ as a second K segment
    of the same tensor-core loop. Activations must be bf16 with static shapes;
    anything else is reported with the op that needs it.

    An lm head whose logits would exceed `logits-chunk-bytes` (as f32) and
    feed only a cross entropy (and its gradient, which feeds only the input
    gradient through the same frozen weight) is computed a chunk of rows at a
    time: each chunk's logits, loss, logit gradient and input gradient, in
    buffers of one chunk (`qtune.buffer_view` windows of the activations), so
    full-vocabulary logits for every token are never held at once.
  }];
  let options = [
    Option<"chip", "chip", "std::string", "\"sm_90a\"",
           "Target GPU (sm_80 or newer: the kernels use mma.sync and cp.async)">,
    Option<"tileM", "tile-m", "int64_t", "0", "Block tile rows (M); 0 chooses by M">,
    Option<"tileN", "tile-n", "int64_t", "0", "Block tile columns (N); 0 chooses by M">,
    Option<"tileK", "tile-k", "int64_t", "0", "K step of the main loop; 0 chooses by M">,
    Option<"warpsM", "warps-m", "int64_t", "0", "Warps along M per block; 0 chooses by M">,
    Option<"warpsN", "warps-n", "int64_t", "0", "Warps along N per block; 0 chooses by M">,
    Option<"mma", "mma", "std::string", "\"auto\"",
           "Tensor-core instructions of the GEMMs: auto (warpgroup wgmma for training-sized M on sm_90a, warp-level mma.sync otherwise) or sync (always mma.sync)">,
    Option<"logitsChunkBytes", "logits-chunk-bytes", "int64_t", "64 << 20",
           "Largest f32 logits buffer of an lm head with a cross entropy; larger ones are chunked by rows">,
  ];
  let dependentDialects = [
    "::mlir::gpu::GPUDialect", "::mlir::nvgpu::NVGPUDialect",
    "::mlir::NVVM::NVVMDialect", "::mlir::memref::MemRefDialect",
    "::mlir::scf::SCFDialect", "::mlir::vector::VectorDialect",
    "::mlir::arith::ArithDialect", "::mlir::func::FuncDialect"
  ];
}

#endif // QTUNE_CONVERSION_PASSES_TD
