//===- QTuneDialect.td - qtune dialect definition ----------*- tablegen -*-===//

#ifndef QTUNE_DIALECT_TD
#define QTUNE_DIALECT_TD

include "mlir/IR/OpBase.td"

def QTune_Dialect : Dialect {
  let name = "qtune";
  let cppNamespace = "::qtune";
  let summary = "Quantized linear layers, adapters and training ops for LLM fine-tuning";
  let description = [{
    The `qtune` dialect describes models whose linear layers hold low-bit
    weights, the adapters trained on top of them, and (in later layers of the
    compiler) their training steps.

    **Quantized weights.** A weight of logical shape N×K (N output features, K
    input features) stored in a low-bit format is a value of type
    `!qtune.qweight<NxK, #format>`. `qtune.qweight` assembles it from the
    *components* that the format declares: packed integer codes, scales, zero
    points, codebooks. Components are ordinary tensor operands, not type
    parameters, so scale-only (PEQA) and full quantized tuning can train them.
    `qtune.dequant` materializes the dense weight (the reference path; fused
    kernels never do).

    **Formats** are attributes implementing `QuantFormatAttrInterface`
    (`#qtune.uniform`, `#qtune.nf4`, `#qtune.lut`). The interface gives the
    components of an N×K weight, the checks a shape must pass, host
    dequantization and round-to-nearest quantization, and the derivative of the
    dequantized weight with respect to each float component. Verifiers, the
    reference interpreter, the quantizer and the kernel templates talk only to
    the interface: a new format is one attribute (see `docs/adding-a-format.md`).
    Codes use one canonical packing (`docs/formats.md`).

    **Layers.** `qtune.linear` computes x · Wᵀ (+ bias) for a quantized or dense
    W and any number of leading batch dimensions of x; `qtune.lora` computes a
    LoRA adapter's term, added with `arith.addf`. A scale-only (PEQA) layer is a
    `qtune.qweight` marked `scale_only`: its codes and zero points must be
    frozen, its scales may train.

    **Decoders.** The rest of a LLaMA-family decoder is `qtune.embedding`,
    `qtune.rms_norm`, `qtune.rope`, `qtune.attention` (causal, grouped KV
    heads) and `qtune.swiglu`, on activations shaped `[..., S, D]`; residual
    adds are `arith.addf`, the lm head a dense `qtune.linear`, the loss
    `qtune.cross_entropy`. `qtune-import` writes such graphs from a model
    directory (`docs/import.md`).

    **Roles.** Function arguments carry `qtune.role = #qtune.role<...>`, one of
    `input`, `frozen`, `trainable`, `optimizer_state`; passes derive gradients for
    trainable arguments only. `qtune.name = "..."` names an argument or result in
    tensor files (the reference interpreter reads and writes by these names).
    `qtune.schedule = array<i64: tileM, tileN, tileK, warpsM, warpsN>` on a
    linear layer fixes the tiles of its GPU kernel (otherwise chosen by M).

    ```mlir
    !w = !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 64>>
    func.func @layer(%x: tensor<8x128xbf16> {qtune.role = #qtune.role<input>},
                     %codes: tensor<64x16xi32> {qtune.role = #qtune.role<frozen>},
                     %scales: tensor<64x2xbf16> {qtune.role = #qtune.role<frozen>},
                     %zeros: tensor<64x2xbf16> {qtune.role = #qtune.role<frozen>},
                     %a: tensor<16x128xbf16> {qtune.role = #qtune.role<trainable>},
                     %b: tensor<64x16xbf16> {qtune.role = #qtune.role<trainable>})
        -> tensor<8x64xbf16> {
      %w = qtune.qweight %codes, %scales, %zeros
          : tensor<64x16xi32>, tensor<64x2xbf16>, tensor<64x2xbf16> -> !w
      %y = qtune.linear %x, %w : tensor<8x128xbf16>, !w -> tensor<8x64xbf16>
      %d = qtune.lora %x, %a, %b {alpha = 32.0 : f64, rank = 16 : i64}
          : tensor<8x128xbf16>, tensor<16x128xbf16>, tensor<64x16xbf16> -> tensor<8x64xbf16>
      %r = arith.addf %y, %d : tensor<8x64xbf16>
      return %r : tensor<8x64xbf16>
    }
    ```
  }];
  let useDefaultAttributePrinterParser = 1;
  let useDefaultTypePrinterParser = 1;
  let hasRegionArgAttrVerify = 1;
  let hasRegionResultAttrVerify = 1;
  let hasOperationAttrVerify = 1;
  let extraClassDeclaration = [{
    /// Name of the argument attribute that gives an argument's role.
    static constexpr llvm::StringLiteral kRoleAttrName = "qtune.role";
    /// Name of the argument/result attribute naming a value in files.
    static constexpr llvm::StringLiteral kNameAttrName = "qtune.name";
    /// Name of the operation attribute that fixes a linear layer's GPU
    /// schedule: array<i64: tileM, tileN, tileK, warpsM, warpsN>.
    static constexpr llvm::StringLiteral kScheduleAttrName = "qtune.schedule";
    /// Result attribute: the index of the argument this result replaces (an
    /// in-place update of a parameter or optimizer state).
    static constexpr llvm::StringLiteral kUpdatesAttrName = "qtune.updates";
    /// Module attribute of an imported LoRA model: the adapter configuration
    /// a PEFT-compatible checkpoint records ({r, lora_alpha, lora_dropout,
    /// target_modules, base_model_name_or_path}); copied into the bundle.
    static constexpr llvm::StringLiteral kPeftAttrName = "qtune.peft";
    /// gpu.launch_func attribute: the family of ops a launch computes for
    /// (attention, quantized GEMM, ...), which the bundle records per launch
    /// and profiles group by.
    static constexpr llvm::StringLiteral kKernelFamilyAttrName =
        "qtune.kernel_family";
  private:
    void registerAttributes();
    void registerTypes();
  public:
  }];
}

class QTune_Op<string mnemonic, list<Trait> traits = []>
    : Op<QTune_Dialect, mnemonic, traits>;

#endif // QTUNE_DIALECT_TD
