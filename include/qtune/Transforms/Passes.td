//===- Passes.td - qtune transformation passes --------------*- tablegen -*-===//

#ifndef QTUNE_TRANSFORMS_PASSES_TD
#define QTUNE_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def QTuneFuse : Pass<"qtune-fuse", "mlir::ModuleOp"> {
  let summary = "Fuse linear + LoRA + bias + residual adds into qtune.fused_linear";
  let description = [{
    Rewrites `arith.addf` chains around a `qtune.linear` into one
    `qtune.fused_linear` whose epilogue carries the additions, so code generation
    emits one matrix kernel per layer:

    - `addf(linear(x, W[, b]), lora(x, A, B))` (either operand order) becomes
      `fused_linear(x, W [bias b] lora(A, B))`;
    - `addf(linear-or-fused, r)` with `r` of the result's type becomes a
      `residual(r)` of the fused op.

    A part fuses only when the value it replaces has no other use (otherwise
    it would be computed twice), the LoRA input is the linear's input, and types
    match exactly (no broadcasting). A LoRA term is preferred over a residual
    when both could absorb the same addition.
  }];
  let dependentDialects = ["::qtune::QTuneDialect", "::mlir::arith::ArithDialect"];
}

def QTuneAutodiff : Pass<"qtune-autodiff", "mlir::ModuleOp"> {
  let summary = "Derive the gradients of a scalar loss w.r.t. trainable arguments";
  let description = [{
    For every function that returns one 0-d f32 loss and has arguments whose
    `qtune.role` is `trainable`, adds a function `<name>_grad` with the same
    arguments that returns the loss and then ∂loss/∂argument for each trainable
    argument, in argument order (results named `loss` and `grad_<name>`).

    Reverse mode over the function's ops, through `DifferentiableOpInterface`
    (plus `arith.addf`/`subf`/`negf`); only values that depend on a trainable
    argument and reach the loss get gradients. Through a frozen quantized weight
    the input gradient is `qtune.linear_t` (dequantization recomputed, never
    stored); scale-only (PEQA) weights get `qtune.component_grad`, the
    format's derivative applied group by group, so no N×K gradient remains.
  }];
  let dependentDialects = ["::qtune::QTuneDialect", "::mlir::arith::ArithDialect"];
}

#endif // QTUNE_TRANSFORMS_PASSES_TD
