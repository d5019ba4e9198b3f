//===- QTuneDialect.td - qtune dialect definition ----------*- tablegen -*-===//

#ifndef QTUNE_DIALECT_TD
#define QTUNE_DIALECT_TD

include "mlir/IR/OpBase.td"

def QTune_Dialect : Dialect {
  let name = "qtune";
  let cppNamespace = "::qtune";
  let summary = "Quantized linear layers, adapters and training ops for LLM fine-tuning";
  let description = [{
    The `qtune` dialect describes models whose linear layers hold low-bit weights.
    A quantized weight is a value of type `!qtune.qweight<NxK, #format>`, assembled
    from its components (packed codes, scales, zero points, codebooks) by
    `qtune.qweight`. The format attribute implements `QuantFormatAttrInterface`:
    everything downstream asks the interface, so a new format is one attribute.

    Function arguments carry `qtune.role` (input, frozen, trainable,
    optimizer_state) so passes know what trains.
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
  private:
    void registerAttributes();
    void registerTypes();
  public:
  }];
}

class QTune_Op<string mnemonic, list<Trait> traits = []>
    : Op<QTune_Dialect, mnemonic, traits>;

#endif // QTUNE_DIALECT_TD
