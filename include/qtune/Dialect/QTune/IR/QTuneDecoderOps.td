//===- QTuneDecoderOps.td - LLaMA-family decoder ops ---------*- tablegen -*-===//
//
// The graph ops of a LLaMA-family decoder besides linear layers: token
// embedding, RMSNorm, rotary position embedding, causal attention with grouped
// KV heads and SwiGLU, with the gradient ops their adjoints emit. Activations
// are [..., S, D] (batch dimensions, then the sequence, then features); the
// position of a token is its index along the sequence dimension. Semantics
// follow Hugging Face transformers' LLaMA implementation.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_DECODER_OPS_TD
#define QTUNE_DECODER_OPS_TD

def QTune_EmbeddingOp : QTune_Op<"embedding", [Pure,
    DeclareOpInterfaceMethods<DifferentiableOpInterface>]> {
  let summary = "Token embedding: rows of a V×D table gathered by i32 ids";
  let description = [{
    `table` is V×D, `ids` any shape `[...]` of i32 in [0, V); the result is
    `[..., D]` with the table's element type: result[i, :] = table[ids[i], :].

    ```mlir
    %h = qtune.embedding %table, %ids : tensor<256x64xbf16>, tensor<2x16xi32> -> tensor<2x16x64xbf16>
    ```
  }];
  let arguments = (ins QTune_FloatTensor:$table, RankedTensorOf<[I32]>:$ids);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = [{
    $table `,` $ids attr-dict `:` type($table) `,` type($ids) `->` type($result)
  }];
  let hasVerifier = 1;
}

def QTune_EmbeddingGradOp : QTune_Op<"embedding_grad", [Pure]> {
  let summary = "Gradient of embedding w.r.t. the table: g scattered and summed by id";
  let description = [{
    grad[v, :] = Σ over positions i with ids[i] = v of g[i, :]; `g` is
    `[..., D]`, the result V×D (f32 or the table's type).
  }];
  let arguments = (ins QTune_FloatTensor:$grad, RankedTensorOf<[I32]>:$ids);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $ids attr-dict `:` type($grad) `,` type($ids) `->` type($result)
  }];
}

def QTune_RmsNormOp : QTune_Op<"rms_norm", [Pure,
    DeclareOpInterfaceMethods<DifferentiableOpInterface>]> {
  let summary = "RMSNorm: x / sqrt(mean(x²) + eps) · weight over the last dimension";
  let description = [{
    `x` is `[..., D]`, `weight` is `[D]`; the result has the type of `x`. The
    mean runs over the last dimension (GPU kernels accumulate in f32, like
    Hugging Face's `LlamaRMSNorm`).

    ```mlir
    %y = qtune.rms_norm %x, %w {eps = 1.0e-5 : f64} : tensor<2x16x64xbf16>, tensor<64xbf16> -> tensor<2x16x64xbf16>
    ```
  }];
  let arguments = (ins QTune_FloatTensor:$input, QTune_FloatTensor:$weight,
                       DefaultValuedAttr<F64Attr, "1e-6">:$eps);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight attr-dict `:` type($input) `,` type($weight) `->` type($result)
  }];
  let hasVerifier = 1;
}

def QTune_RmsNormGradOp : QTune_Op<"rms_norm_grad", [Pure]> {
  let summary = "Input gradient of rms_norm";
  let description = [{
    With r = 1/sqrt(mean(x²) + eps) and u = g·weight (per row of D):
    dx = r·u − r³·x·(Σ u·x)/D.
  }];
  let arguments = (ins QTune_FloatTensor:$grad, QTune_FloatTensor:$input,
                       QTune_FloatTensor:$weight, F64Attr:$eps);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $input `,` $weight attr-dict `:` type($grad) `,` type($input) `,`
    type($weight) `->` type($result)
  }];
}

def QTune_RmsNormWeightGradOp : QTune_Op<"rms_norm_weight_grad", [Pure]> {
  let summary = "Weight gradient of rms_norm: Σ over rows of g·x·r";
  let arguments = (ins QTune_FloatTensor:$grad, QTune_FloatTensor:$input,
                       F64Attr:$eps);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $input attr-dict `:` type($grad) `,` type($input) `->` type($result)
  }];
}

def QTune_RopeOp : QTune_Op<"rope", [Pure, SameOperandsAndResultType,
    DeclareOpInterfaceMethods<DifferentiableOpInterface>]> {
  let summary = "Rotary position embedding over heads of `head_dim` features";
  let description = [{
    `x` is `[..., S, H·head_dim]`; the token at index p of the sequence
    dimension rotates each head's feature pairs (j, j + head_dim/2) by the
    angle p·f_j, f_j = theta^(−2j/head_dim) (Hugging Face's "rotate half"
    layout):

      y[j]              = x[j]·cos − x[j + head_dim/2]·sin
      y[j + head_dim/2] = x[j + head_dim/2]·cos + x[j]·sin

    `inverse` rotates by −p·f_j instead (the adjoint). GPU kernels compute the
    angles, cos and sin in f32.

    ```mlir
    %q2 = qtune.rope %q {head_dim = 16 : i64, theta = 10000.0 : f64} : tensor<2x16x64xbf16>
    ```
  }];
  let arguments = (ins QTune_FloatTensor:$input, I64Attr:$head_dim,
                       DefaultValuedAttr<F64Attr, "10000.0">:$theta,
                       UnitAttr:$inverse);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let hasVerifier = 1;
}

def QTune_AttentionOp : QTune_Op<"attention", [Pure,
    DeclareOpInterfaceMethods<DifferentiableOpInterface>]> {
  let summary = "Scaled dot-product attention with grouped KV heads, causal by default";
  let description = [{
    `q` is `[..., S, H·d]`, `k` and `v` are `[..., S, Hkv·d]` with H = `heads`,
    Hkv = `kv_heads` (H a multiple of Hkv; query head h reads KV head
    h / (H / Hkv)), d the head dimension. For each head and query position i:

      o[i] = Σ_j softmax_j(scale · q[i]·k[j]) · v[j],  j ≤ i when `causal`,

    with `scale` = 1/sqrt(d) unless given. The second result `lse` (f32,
    `[..., H, S]`) is each row's log-sum-exp of the scaled scores, kept for the
    backward pass. Kernels never hold the S×S score matrix in memory.

    With `segments` (i32 `[..., S]`, nondecreasing along the sequence: the
    documents packed into one row, one id each), query i sees key j only when
    both lie in the same segment, so packed documents never attend to each
    other; kernels then skip the key tiles of other documents.

    ```mlir
    %o, %lse = qtune.attention %q, %k, %v {heads = 4 : i64, kv_heads = 2 : i64}
        : tensor<2x16x64xbf16>, tensor<2x16x32xbf16>, tensor<2x16x32xbf16>
        -> tensor<2x16x64xbf16>, tensor<2x4x16xf32>
    %o2, %lse2 = qtune.attention %q, %k, %v segments %seg {heads = 4 : i64, kv_heads = 2 : i64}
        : tensor<2x16x64xbf16>, tensor<2x16x32xbf16>, tensor<2x16x32xbf16>, tensor<2x16xi32>
        -> tensor<2x16x64xbf16>, tensor<2x4x16xf32>
    ```
  }];
  let arguments = (ins QTune_FloatTensor:$query, QTune_FloatTensor:$key,
                       QTune_FloatTensor:$value,
                       Optional<RankedTensorOf<[I32]>>:$segments,
                       I64Attr:$heads,
                       I64Attr:$kv_heads, OptionalAttr<F64Attr>:$scale,
                       DefaultValuedAttr<BoolAttr, "true">:$causal);
  let results = (outs QTune_FloatTensor:$result, RankedTensorOf<[F32]>:$lse);
  let assemblyFormat = [{
    $query `,` $key `,` $value (`segments` $segments^)? attr-dict `:`
    type($query) `,` type($key) `,` type($value) (`,` type($segments)^)?
    `->` type($result) `,` type($lse)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getHeadDim() {
      return getQuery().getType().getShape().back() / getHeads();
    }
    /// The softmax scale: the attribute, or 1/sqrt(head dimension).
    double getScaleValue();
  }];
}

def QTune_AttentionGradOp : QTune_Op<"attention_grad", [Pure]> {
  let summary = "Gradients of attention w.r.t. q, k and v";
  let description = [{
    From the forward's operands, its output `o` and `lse`, and the output
    gradient `g`: with P the attention probabilities (recomputed from lse) and
    D_i = Σ g[i]·o[i], dS = P·(g·vᵀ − D); dq = scale·dS·k, dk = scale·dSᵀ·q
    (summed over the query heads sharing a KV head), dv = Pᵀ·g (likewise).
    `segments` as in qtune.attention.
  }];
  let arguments = (ins QTune_FloatTensor:$query, QTune_FloatTensor:$key,
                       QTune_FloatTensor:$value, QTune_FloatTensor:$output,
                       RankedTensorOf<[F32]>:$lse, QTune_FloatTensor:$grad,
                       Optional<RankedTensorOf<[I32]>>:$segments,
                       I64Attr:$heads, I64Attr:$kv_heads, F64Attr:$scale,
                       BoolAttr:$causal);
  let results = (outs QTune_FloatTensor:$grad_query, QTune_FloatTensor:$grad_key,
                      QTune_FloatTensor:$grad_value);
  let assemblyFormat = [{
    $query `,` $key `,` $value `,` $output `,` $lse `,` $grad
    (`segments` $segments^)? attr-dict `:`
    type($query) `,` type($key) `,` type($value) `,` type($output) `,`
    type($lse) `,` type($grad) (`,` type($segments)^)? `->` type(results)
  }];
  let hasVerifier = 1;
}

def QTune_SwigluOp : QTune_Op<"swiglu", [Pure, SameOperandsAndResultType,
    DeclareOpInterfaceMethods<DifferentiableOpInterface>]> {
  let summary = "SwiGLU: silu(gate) · up, elementwise";
  let description = [{
    silu(x) = x · sigmoid(x). `gate` and `up` have one type, the result's.

    ```mlir
    %h = qtune.swiglu %gate, %up : tensor<2x16x128xbf16>
    ```
  }];
  let arguments = (ins QTune_FloatTensor:$gate, QTune_FloatTensor:$up);
  let results = (outs QTune_FloatTensor:$result);
  let assemblyFormat = "$gate `,` $up attr-dict `:` type($result)";
}

def QTune_SwigluGradOp : QTune_Op<"swiglu_grad", [Pure,
    AllTypesMatch<["gate", "up", "grad"]>]> {
  let summary = "Gradients of swiglu w.r.t. gate and up";
  let description = [{
    With s = sigmoid(gate): dgate = g·up·s·(1 + gate·(1 − s)), dup = g·gate·s.
  }];
  let arguments = (ins QTune_FloatTensor:$gate, QTune_FloatTensor:$up,
                       QTune_FloatTensor:$grad);
  let results = (outs QTune_FloatTensor:$grad_gate, QTune_FloatTensor:$grad_up);
  let assemblyFormat = [{
    $gate `,` $up `,` $grad attr-dict `:` type($gate) `->` type(results)
  }];
}

#endif // QTUNE_DECODER_OPS_TD
