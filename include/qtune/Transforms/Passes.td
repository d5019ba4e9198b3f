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

#endif // QTUNE_TRANSFORMS_PASSES_TD
