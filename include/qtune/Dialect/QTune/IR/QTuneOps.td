//===- QTuneOps.td - qtune operations -----------------------*- tablegen -*-===//

#ifndef QTUNE_OPS_TD
#define QTUNE_OPS_TD

include "mlir/IR/OpBase.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "qtune/Dialect/QTune/IR/QTuneDialect.td"
include "qtune/Dialect/QTune/IR/QTuneAttrs.td"
include "qtune/Dialect/QTune/IR/QTuneTypes.td"

def QTune_FloatTensor : RankedTensorOf<[AnyFloat]>;

//===----------------------------------------------------------------------===//
// qtune.qweight
//===----------------------------------------------------------------------===//

def QTune_QWeightOp : QTune_Op<"qweight", [Pure,
    DeclareOpInterfaceMethods<DifferentiableOpInterface>]> {
  let summary = "Assembles a quantized weight from its components";
  let description = [{
    Takes the components that the result's format declares, in order (for
    `#qtune.uniform` asymmetric: `codes`, `scales`, `zeros`), and yields a
    `!qtune.qweight`. The verifier checks each component's shape and element type.

    `scale_only` marks a PEQA layer: only the format's scale components may train;
    codes and zero points must be frozen (they may not come from an argument whose
    `qtune.role` is `trainable`).

    ```mlir
    %w = qtune.qweight %codes, %scales, %zeros
        : tensor<64x16xi32>, tensor<64x2xbf16>, tensor<64x2xbf16>
        -> !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 64>>
    %p = qtune.qweight scale_only %codes, %scales, %zeros : ... -> ...
    ```
  }];
  let arguments = (ins Variadic<AnyRankedTensor>:$components,
                       UnitAttr:$scale_only);
  let results = (outs QTune_QWeightType:$result);
  let assemblyFormat = [{
    (`scale_only` $scale_only^)? $components attr-dict `:` type($components)
    `->` qualified(type($result))
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// qtune.dequant
//===----------------------------------------------------------------------===//

def QTune_DequantOp : QTune_Op<"dequant", [Pure]> {
  let summary = "Materializes a quantized weight as a dense N×K tensor";
  let description = [{
    Reconstructs the weight through its format's dequantization. Used by the
    reference interpreter and fallbacks; fused kernels never materialize it.

    ```mlir
    %d = qtune.dequant %w : !qtune.qweight<64x128, #qtune.nf4<block = 64>> -> tensor<64x128xf32>
    ```
  }];
  let arguments = (ins QTune_QWeightType:$weight);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = "$weight attr-dict `:` qualified(type($weight)) `->` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// qtune.linear
//===----------------------------------------------------------------------===//

def QTune_LinearOp : QTune_Op<"linear", [Pure,
    DeclareOpInterfaceMethods<DifferentiableOpInterface>]> {
  let summary = "Linear layer x · Wᵀ (+ bias) with a quantized or dense W";
  let description = [{
    `x` has shape `[..., K]` (any number of leading batch dimensions); the weight is
    a `!qtune.qweight<NxK, ...>` or a dense `tensor<NxK>`; the optional `bias` is
    `tensor<N>`. The result has shape `[..., N]` and the element type of `x`.

    ```mlir
    %y = qtune.linear %x, %w : tensor<2x8x128xbf16>, !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 64>> -> tensor<2x8x64xbf16>
    %z = qtune.linear %x, %d, %b : tensor<8x128xf32>, tensor<64x128xf32>, tensor<64xf32> -> tensor<8x64xf32>
    ```
  }];
  let arguments = (ins QTune_FloatTensor:$input,
                       AnyTypeOf<[QTune_QWeightType, QTune_FloatTensor]>:$weight,
                       Optional<QTune_FloatTensor>:$bias);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`,` $bias^)? attr-dict `:` type($input) `,` type($weight)
    (`,` type($bias)^)? `->` type($result)
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
}

//===----------------------------------------------------------------------===//
// qtune.lora
//===----------------------------------------------------------------------===//

def QTune_LoraOp : QTune_Op<"lora", [Pure,
    DeclareOpInterfaceMethods<DifferentiableOpInterface>]> {
  let summary = "LoRA adapter term (alpha / rank) · (x · Aᵀ) · Bᵀ";
  let description = [{
    `A` is `rank`×K, `B` is N×`rank`; `x` has shape `[..., K]` and the result
    `[..., N]`. `dropout` is the probability of dropping elements of `x` on the
    adapter path while training (identity at evaluation; training with it is
    not implemented, and `qtune-autodiff` rejects a nonzero dropout). The term
    is added to a `qtune.linear` by `arith.addf`; fusion passes merge the two.

    ```mlir
    %d = qtune.lora %x, %A, %B {alpha = 16.0 : f64, rank = 8 : i64}
        : tensor<8x128xf32>, tensor<8x128xf32>, tensor<64x8xf32> -> tensor<8x64xf32>
    ```
  }];
  let arguments = (ins QTune_FloatTensor:$input, QTune_FloatTensor:$a,
                       QTune_FloatTensor:$b, F64Attr:$alpha, I64Attr:$rank,
                       DefaultValuedAttr<F64Attr, "0.0">:$dropout);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $a `,` $b attr-dict `:` type($input) `,` type($a) `,` type($b)
    `->` type($result)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// alpha / rank.
    double getScaling() { return getAlpha().convertToDouble() / getRank(); }
  }];
}

//===----------------------------------------------------------------------===//
// qtune.fused_linear
//===----------------------------------------------------------------------===//

def QTune_FusedLinearOp : QTune_Op<"fused_linear",
    [Pure, AttrSizedOperandSegments]> {
  let summary = "Linear layer with its epilogue: bias, LoRA term and residual";
  let description = [{
    y = x · Wᵀ (+ bias) (+ (lora_alpha / lora_rank) · (x · Aᵀ) · Bᵀ) (+ residual),
    computed by one matrix kernel whose epilogue applies the additions. Produced by
    `qtune-fuse` from `qtune.linear`, `qtune.lora` and `arith.addf`; each part is
    optional and has the semantics of the op it came from.

    ```mlir
    %y = qtune.fused_linear %x, %w bias(%b : tensor<64xf32>)
        lora(%A, %B : tensor<8x128xf32>, tensor<64x8xf32>)
        residual(%r : tensor<4x64xf32>) {lora_alpha = 16.0 : f64, lora_rank = 8 : i64}
        : tensor<4x128xf32>, !qtune.qweight<64x128, #qtune.nf4<block = 64>> -> tensor<4x64xf32>
    ```
  }];
  let arguments = (ins QTune_FloatTensor:$input,
                       AnyTypeOf<[QTune_QWeightType, QTune_FloatTensor]>:$weight,
                       Optional<QTune_FloatTensor>:$bias,
                       Optional<QTune_FloatTensor>:$lora_a,
                       Optional<QTune_FloatTensor>:$lora_b,
                       Optional<QTune_FloatTensor>:$residual,
                       OptionalAttr<F64Attr>:$lora_alpha,
                       OptionalAttr<I64Attr>:$lora_rank,
                       DefaultValuedAttr<F64Attr, "0.0">:$lora_dropout);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight
    (`bias` `(` $bias^ `:` type($bias) `)`)?
    (`lora` `(` $lora_a^ `,` $lora_b `:` type($lora_a) `,` type($lora_b) `)`)?
    (`residual` `(` $residual^ `:` type($residual) `)`)?
    attr-dict `:` type($input) `,` type($weight) `->` type($result)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// lora_alpha / lora_rank (0 without an adapter).
    double getLoraScaling() {
      if (!getLoraA())
        return 0.0;
      return getLoraAlpha()->convertToDouble() / *getLoraRank();
    }
  }];
}

//===----------------------------------------------------------------------===//
// Gradient building blocks (produced by qtune-autodiff)
//===----------------------------------------------------------------------===//

def QTune_LinearTOp : QTune_Op<"linear_t", [Pure]> {
  let summary = "Input gradient of a linear layer: scale · g · W";
  let description = [{
    `g` has shape `[..., N]`, the weight is N×K (quantized or dense); the result
    `[..., K]`. Through a quantized weight the dequantization is recomputed (in
    kernels: the same fused prologue with the weight transposed), never stored.
  }];
  let arguments = (ins QTune_FloatTensor:$grad,
                       AnyTypeOf<[QTune_QWeightType, QTune_FloatTensor]>:$weight,
                       DefaultValuedAttr<F64Attr, "1.0">:$scale);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $weight attr-dict `:` type($grad) `,` type($weight) `->` type($result)
  }];
  let hasVerifier = 1;
}

def QTune_WeightGradOp : QTune_Op<"weight_grad", [Pure]> {
  let summary = "Weight gradient of a linear layer: scale · gᵀ · x";
  let description = [{
    `g` is `[..., N]`, `x` is `[..., K]` with the same leading dimensions; the
    result N×K sums over all of them. Used for dense weights and adapters; for a
    quantized weight it only ever feeds `qtune.qweight`'s adjoint, which
    replaces it by `qtune.component_grad` (no N×K gradient survives).
  }];
  let arguments = (ins QTune_FloatTensor:$grad, QTune_FloatTensor:$input,
                       DefaultValuedAttr<F64Attr, "1.0">:$scale);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $input attr-dict `:` type($grad) `,` type($input) `->` type($result)
  }];
  let hasVerifier = 1;
}

def QTune_BiasGradOp : QTune_Op<"bias_grad", [Pure]> {
  let summary = "Bias gradient of a linear layer: g summed over leading dims";
  let arguments = (ins QTune_FloatTensor:$grad);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = "$grad attr-dict `:` type($grad) `->` type($result)";
}

def QTune_ComponentGradOp : QTune_Op<"component_grad", [Pure]> {
  let summary = "Gradient of one float component of a quantized weight";
  let description = [{
    For y = x · dequant(W)ᵀ: ∂L/∂component = VJP of dequantization applied to
    gᵀ · x, through the format's derivative. For the scales of `#qtune.uniform`
    (PEQA): grad_s[n, g] = Σ_m Σ_{k∈g} g[m, n] · x[m, k] · (q[n, k] − z[n, g]).
    Kernels reduce per group in the GEMM's epilogue; no N×K gradient exists.
  }];
  let arguments = (ins QTune_FloatTensor:$grad, QTune_FloatTensor:$input,
                       QTune_QWeightType:$weight, I64Attr:$component);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $input `,` $weight attr-dict `:` type($grad) `,` type($input) `,`
    qualified(type($weight)) `->` type($result)
  }];
  let hasVerifier = 1;
}

def QTune_MseLossOp : QTune_Op<"mse_loss", [Pure,
    DeclareOpInterfaceMethods<DifferentiableOpInterface>]> {
  let summary = "Mean squared error: mean((prediction − target)²) as a 0-d f32";
  let arguments = (ins QTune_FloatTensor:$prediction, QTune_FloatTensor:$target);
  let results = (outs 0DTensorOf<[F32]>:$result);
  let assemblyFormat = [{
    $prediction `,` $target attr-dict `:` type($prediction) `,` type($target)
    `->` type($result)
  }];
  let hasVerifier = 1;
}

def QTune_MseLossGradOp : QTune_Op<"mse_loss_grad", [Pure]> {
  let summary = "Gradient of mse_loss w.r.t. the prediction: 2·(p − t)/n · g";
  let arguments = (ins QTune_FloatTensor:$prediction, QTune_FloatTensor:$target,
                       0DTensorOf<[F32]>:$grad);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = [{
    $prediction `,` $target `,` $grad attr-dict `:` type($prediction) `,`
    type($target) `,` type($grad) `->` type($result)
  }];
}

def QTune_CrossEntropyOp : QTune_Op<"cross_entropy", [Pure,
    DeclareOpInterfaceMethods<DifferentiableOpInterface>]> {
  let summary = "Mean cross entropy of logits against integer labels, a 0-d f32";
  let description = [{
    `logits` is `[..., V]`, `labels` `[...]` (i32, each in [0, V)); the result
    is the mean over rows of logsumexp(logits[row]) − logits[row, label].
  }];
  let arguments = (ins QTune_FloatTensor:$logits,
                       RankedTensorOf<[I32]>:$labels);
  let results = (outs 0DTensorOf<[F32]>:$result);
  let assemblyFormat = [{
    $logits `,` $labels attr-dict `:` type($logits) `,` type($labels) `->`
    type($result)
  }];
  let hasVerifier = 1;
}

def QTune_CrossEntropyGradOp : QTune_Op<"cross_entropy_grad", [Pure]> {
  let summary = "Gradient of cross_entropy: (softmax(logits) − onehot(labels)) / rows · g";
  let arguments = (ins QTune_FloatTensor:$logits,
                       RankedTensorOf<[I32]>:$labels, 0DTensorOf<[F32]>:$grad);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = [{
    $logits `,` $labels `,` $grad attr-dict `:` type($logits) `,`
    type($labels) `,` type($grad) `->` type($result)
  }];
}

def QTune_KlDivOp : QTune_Op<"kl_div", [Pure,
    DeclareOpInterfaceMethods<DifferentiableOpInterface>]> {
  let summary = "Mean KL(teacher ‖ student) of next-token distributions, a 0-d f32";
  let description = [{
    `student` and `teacher` are logits `[..., V]` of one shape; with
    p = softmax(teacher) and q = softmax(student) per row, the result is the
    mean over rows of Σ_v p_v · (log p_v − log q_v). The loss of low-rank
    error correction (LREC): a quantized student with adapters learns the
    full-precision teacher's distributions. The teacher is a fixed target:
    no gradient flows into it, whatever it is computed from.

    ```mlir
    %kl = qtune.kl_div %student, %teacher : tensor<2x8x1000xbf16>, tensor<2x8x1000xbf16> -> tensor<f32>
    ```
  }];
  let arguments = (ins QTune_FloatTensor:$student, QTune_FloatTensor:$teacher);
  let results = (outs 0DTensorOf<[F32]>:$result);
  let assemblyFormat = [{
    $student `,` $teacher attr-dict `:` type($student) `,` type($teacher) `->`
    type($result)
  }];
  let hasVerifier = 1;
}

def QTune_KlDivGradOp : QTune_Op<"kl_div_grad", [Pure]> {
  let summary = "Gradient of kl_div in the student: (softmax(student) − softmax(teacher)) / rows · g";
  let arguments = (ins QTune_FloatTensor:$student, QTune_FloatTensor:$teacher,
                       0DTensorOf<[F32]>:$grad);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = [{
    $student `,` $teacher `,` $grad attr-dict `:` type($student) `,`
    type($teacher) `,` type($grad) `->` type($result)
  }];
}

include "qtune/Dialect/QTune/IR/QTuneDecoderOps.td"

//===----------------------------------------------------------------------===//
// Optimizers (produced by qtune-optimizer)
//===----------------------------------------------------------------------===//

def QTune_ClipGradNormOp : QTune_Op<"clip_grad_norm", [Pure]> {
  let summary = "Scales gradients so their joint L2 norm is at most max_norm";
  let description = [{
    All operands together have norm ‖g‖ = sqrt(Σ g²); each is multiplied by
    min(1, max_norm / (‖g‖ + 1e-6)).
  }];
  let arguments = (ins Variadic<QTune_FloatTensor>:$grads, F64Attr:$max_norm);
  let results = (outs Variadic<QTune_FloatTensor>:$results);
  let assemblyFormat = "$grads attr-dict `:` type($grads) `->` type($results)";
  let hasVerifier = 1;
}

def QTune_AdamWOp : QTune_Op<"adamw", [Pure, AllTypesMatch<["param", "new_param"]>,
    AllTypesMatch<["m", "new_m"]>, AllTypesMatch<["v", "new_v"]>]> {
  let summary = "One AdamW step with bias correction and decoupled weight decay";
  let description = [{
    m' = β1·m + (1−β1)·g;  v' = β2·v + (1−β2)·g²;
    p' = p − lr·(m'/(1−β1^t) / (sqrt(v'/(1−β2^t)) + ε) + wd·p),
    with `lr` and the step number `t` (from 1) runtime scalars, so one compiled
    step serves a whole schedule. Moments are f32.

    With `if_finite(%loss)` the update is guarded: when the 0-d f32 `loss` is
    NaN or infinite, every result equals its input (nothing changes), so a
    step with a non-finite loss can be skipped after the fact.
  }];
  let arguments = (ins QTune_FloatTensor:$param, QTune_FloatTensor:$grad,
                       QTune_FloatTensor:$m, QTune_FloatTensor:$v,
                       0DTensorOf<[F32]>:$lr, 0DTensorOf<[F32]>:$step,
                       Optional<0DTensorOf<[F32]>>:$guard,
                       DefaultValuedAttr<F64Attr, "0.9">:$beta1,
                       DefaultValuedAttr<F64Attr, "0.999">:$beta2,
                       DefaultValuedAttr<F64Attr, "1e-8">:$eps,
                       DefaultValuedAttr<F64Attr, "0.0">:$weight_decay);
  let results = (outs QTune_FloatTensor:$new_param, QTune_FloatTensor:$new_m,
                      QTune_FloatTensor:$new_v);
  let assemblyFormat = [{
    $param `,` $grad `,` $m `,` $v `,` $lr `,` $step
    (`if_finite` `(` $guard^ `:` type($guard) `)`)? attr-dict `:`
    type($param) `,` type($grad) `,` type($m) `,` type($v) `,` type($lr) `,`
    type($step)
  }];
  let hasVerifier = 1;
}

def QTune_LionOp : QTune_Op<"lion", [Pure, AttrSizedOperandSegments]> {
  let summary = "One Lion step; momentum in f32, bf16, or int8 with per-block scales";
  let description = [{
    c = β1·m + (1−β1)·g;  p' = p − lr·(sign(c) + wd·p);  m' = β2·m + (1−β2)·g.
    With `momentum = #qtune.state<int8>` the momentum is i8 codes with one f32
    scale per `block` consecutive elements (m = code·scale; requantized by
    absmax/127 after the update); the scales are an extra operand and result.

    With `if_finite(%loss)` the update is guarded: when the 0-d f32 `loss` is
    NaN or infinite, every result equals its input (nothing changes), so a
    step with a non-finite loss can be skipped after the fact.
  }];
  let arguments = (ins QTune_FloatTensor:$param, QTune_FloatTensor:$grad,
                       AnyRankedTensor:$m, Optional<RankedTensorOf<[F32]>>:$m_scales,
                       0DTensorOf<[F32]>:$lr,
                       Optional<0DTensorOf<[F32]>>:$guard,
                       DefaultValuedAttr<F64Attr, "0.9">:$beta1,
                       DefaultValuedAttr<F64Attr, "0.99">:$beta2,
                       DefaultValuedAttr<F64Attr, "0.0">:$weight_decay,
                       QTune_StateFormatAttr:$momentum,
                       DefaultValuedAttr<I64Attr, "256">:$block);
  let results = (outs QTune_FloatTensor:$new_param, AnyRankedTensor:$new_m,
                      Optional<RankedTensorOf<[F32]>>:$new_m_scales);
  let assemblyFormat = [{
    $param `,` $grad `,` $m (`scales` `(` $m_scales^ `:` type($m_scales) `)`)? `,` $lr
    (`if_finite` `(` $guard^ `:` type($guard) `)`)?
    attr-dict `:` type($param) `,` type($grad) `,` type($m) `,` type($lr)
    `->` type(results)
  }];
  let hasVerifier = 1;
}

def QTune_QftLionOp : QTune_Op<"qft_lion", [Pure, AttrSizedOperandSegments]> {
  let summary = "QFT: one Lion step on 8-bit weight codes, fused with their gradient";
  let description = [{
    Quantized full-parameter tuning. The weight W = dequant(codes, scales
    [, zeros]) of an 8-bit `#qtune.uniform` format trains in its integer
    storage, with no floating-point copy: with dW = scale · gᵀ · x (`g` is
    `[..., N]`, `x` is `[..., K]`; summed over the leading dimensions),

      m = code_m · m_scale (int8 momentum, one f32 scale per `block`
      consecutive elements of the row-major N×K momentum);
      c = β1·m + (1−β1)·dW;  w' = w − lr·(sign(c) + wd·w);
      q' = clamp(round_half_even(w'/s + z), 0, 255)  (z = 128 when symmetric);
      m' = β2·m + (1−β2)·dW, requantized per block by absmax/127.

    The scales and zeros stay fixed, so an update moves a code only when lr is
    at least about half a quantization step. On the GPU the weight-gradient GEMM
    applies this in its epilogue tile by tile: the full N×K gradient is never
    held. Results: the new codes, momentum and momentum scales (in place).

    With `if_finite(%loss)` the update is guarded: when the 0-d f32 `loss` is
    NaN or infinite, every result equals its input (nothing changes), so a
    step with a non-finite loss can be skipped after the fact.
  }];
  let arguments = (ins QTune_FloatTensor:$grad, QTune_FloatTensor:$input,
                       RankedTensorOf<[I32]>:$codes,
                       Variadic<QTune_FloatTensor>:$params,
                       RankedTensorOf<[I8]>:$m, RankedTensorOf<[F32]>:$m_scales,
                       0DTensorOf<[F32]>:$lr,
                       Optional<0DTensorOf<[F32]>>:$guard,
                       QTune_UniformFormatAttr:$format,
                       DefaultValuedAttr<F64Attr, "1.0">:$scale,
                       DefaultValuedAttr<F64Attr, "0.9">:$beta1,
                       DefaultValuedAttr<F64Attr, "0.99">:$beta2,
                       DefaultValuedAttr<F64Attr, "0.0">:$weight_decay,
                       DefaultValuedAttr<I64Attr, "128">:$block);
  let results = (outs RankedTensorOf<[I32]>:$new_codes,
                      RankedTensorOf<[I8]>:$new_m,
                      RankedTensorOf<[F32]>:$new_m_scales);
  let assemblyFormat = [{
    $grad `,` $input `,` $codes `,` `params` `(` $params `:` type($params) `)` `,`
    $m `,` $m_scales `,` $lr (`if_finite` `(` $guard^ `:` type($guard) `)`)?
    attr-dict `:` type($grad) `,` type($input) `,`
    type($codes) `,` type($m) `,` type($m_scales) `,` type($lr) `->` type(results)
  }];
  let hasVerifier = 1;
}

def QTune_GradAccumulateOp : QTune_Op<"grad_accumulate", [Pure,
    AllTypesMatch<["acc", "new_acc"]>]> {
  let summary = "Adds a gradient into its f32 accumulator (gradient accumulation)";
  let description = [{
    new_acc = acc + grad, in place on the accumulator. With `if_finite(%loss)`
    nothing is added when the micro-batch's loss is NaN or infinite.
  }];
  let arguments = (ins RankedTensorOf<[F32]>:$acc, QTune_FloatTensor:$grad,
                       Optional<0DTensorOf<[F32]>>:$guard);
  let results = (outs RankedTensorOf<[F32]>:$new_acc);
  let assemblyFormat = [{
    $acc `,` $grad (`if_finite` `(` $guard^ `:` type($guard) `)`)? attr-dict `:`
    type($acc) `,` type($grad)
  }];
  let hasVerifier = 1;
}

def QTune_GradTakeOp : QTune_Op<"grad_take", [Pure,
    AllTypesMatch<["acc", "grad", "new_acc"]>]> {
  let summary = "The mean of accumulated gradients, and the accumulator reset";
  let description = [{
    grad = acc / count (count: the micro-batches accumulated, a runtime
    scalar); new_acc = 0, in place.
  }];
  let arguments = (ins RankedTensorOf<[F32]>:$acc, 0DTensorOf<[F32]>:$count);
  let results = (outs RankedTensorOf<[F32]>:$grad, RankedTensorOf<[F32]>:$new_acc);
  let assemblyFormat = "$acc `,` $count attr-dict `:` type($acc) `,` type($count)";
}

//===----------------------------------------------------------------------===//
// Host launch plans (produced by qtune-lower-to-gpu)
//===----------------------------------------------------------------------===//

def QTune_BufferViewOp : QTune_Op<"buffer_view",
    [Pure, SameOperandsAndResultType]> {
  let summary = "A window of a flat buffer, for a kernel launch";
  let description = [{
    The `size` elements of the flat buffer `source` that start at element
    `offset`, as a flat buffer of their own (no copy). Host launch plans pass
    it to kernels that work on part of a tensor (e.g. the lm head and its loss,
    a chunk of rows at a time); the bundle turns it into a pointer offset.

    ```mlir
    %rows = qtune.buffer_view %h {offset = 1048576 : i64, size = 524288 : i64} : memref<?xbf16>
    ```
  }];
  let arguments = (ins MemRefRankOf<[AnyType], [1]>:$source, I64Attr:$offset,
                       I64Attr:$size);
  let results = (outs MemRefRankOf<[AnyType], [1]>:$result);
  let assemblyFormat = "$source attr-dict `:` type($source)";
  let hasVerifier = 1;
}

def QTune_TensorMapOp : QTune_Op<"tensor_map", [Pure]> {
  let summary = "A TMA tensor map over a flat bf16 buffer, for a kernel launch";
  let description = [{
    The `rows` × `cols` row-major bf16 matrix held in the flat buffer `source`
    (rows `cols` elements apart), as a kernel reads it with TMA copies: boxes
    of `box_rows` × `box_cols` elements into shared memory, `swizzle` bytes
    of swizzle (0, 32, 64 or 128), elements outside the matrix read as zero.
    The result is the kernel parameter, the device address of the 128-byte
    map, which the runtime encodes once (bundle argument kind `tensor_map`).
    Host launch plans only.

    ```mlir
    %map = qtune.tensor_map %x {rows = 8192 : i64, cols = 4096 : i64, box_rows = 256 : i64, box_cols = 64 : i64, swizzle = 128 : i64} : memref<?xbf16>
    ```
  }];
  let arguments = (ins MemRefRankOf<[BF16], [1]>:$source, I64Attr:$rows,
                       I64Attr:$cols, I64Attr:$box_rows, I64Attr:$box_cols,
                       I64Attr:$swizzle);
  let results = (outs I64:$result);
  let assemblyFormat = "$source attr-dict `:` type($source)";
  let hasVerifier = 1;
}

#endif // QTUNE_OPS_TD
