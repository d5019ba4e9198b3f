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

def QTuneOptimizer : Pass<"qtune-optimizer", "mlir::ModuleOp"> {
  let summary = "Append optimizer updates: <name>_grad becomes <name>_train_step";
  let description = [{
    For every gradient function made by `qtune-autodiff` (results `loss`,
    `grad_<p>`…), adds `<name>_train_step`: the same arguments, then the
    optimizer state of each trainable parameter (`qtune.role` optimizer_state;
    AdamW: `<p>.m`, `<p>.v` in f32; Lion: `<p>.m` in the chosen format, plus
    `<p>.m_scales` for int8), then the runtime scalars `lr` (and `step` for
    AdamW, counted from 1). Gradients are optionally clipped by their joint
    norm. It returns the loss, each updated parameter and each updated state;
    the result attribute `qtune.updates = i` names the argument a result
    replaces, so the runtime updates it in place.

    With `accumulate` (the default) it also adds the two halves of a step for
    gradient accumulation: `<name>_accumulate` (the gradient function's
    arguments plus one f32 accumulator `<p>.grad_acc` per trainable
    parameter; adds each gradient into its accumulator in place, skipped when
    the micro-batch's loss is not finite; returns the loss) and `<name>_apply`
    (the trainable parameters, their states and accumulators, `lr`, `step`
    and `accum_count`; updates the parameters with the mean accumulated
    gradient and resets the accumulators). QFT fuses its gradient into the
    update, so with a QFT weight neither is added.
  }];
  let options = [
    Option<"optimizer", "optimizer", "std::string", "\"adamw\"",
           "adamw or lion">,
    Option<"momentum", "momentum", "std::string", "\"f32\"",
           "Lion momentum storage: f32, bf16 or int8">,
    Option<"block", "block", "int64_t", "256",
           "Elements per scale of int8 momentum">,
    Option<"beta1", "beta1", "double", "0.9", "β1">,
    Option<"beta2", "beta2", "double", "0.0",
           "β2 (0: the optimizer's default, 0.999 for AdamW, 0.99 for Lion)">,
    Option<"eps", "eps", "double", "1e-8", "AdamW ε">,
    Option<"weightDecay", "weight-decay", "double", "0.0",
           "Decoupled weight decay">,
    Option<"maxGradNorm", "max-grad-norm", "double", "0.0",
           "Clip the joint gradient norm to this (0: no clipping)">,
    Option<"accumulate", "accumulate", "bool", "true",
           "Also add <name>_accumulate and <name>_apply (gradient accumulation)">,
  ];
  let dependentDialects = ["::qtune::QTuneDialect"];
}

#endif // QTUNE_TRANSFORMS_PASSES_TD
