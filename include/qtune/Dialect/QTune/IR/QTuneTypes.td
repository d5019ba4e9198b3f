//===- QTuneTypes.td - qtune types --------------------------*- tablegen -*-===//

#ifndef QTUNE_TYPES_TD
#define QTUNE_TYPES_TD

include "mlir/IR/AttrTypeBase.td"
include "qtune/Dialect/QTune/IR/QTuneDialect.td"
include "qtune/Dialect/QTune/IR/QTuneInterfaces.td"

def QTune_QWeightType : TypeDef<QTune_Dialect, "QWeight"> {
  let mnemonic = "qweight";
  let summary = "A quantized N×K weight in a given format";
  let description = [{
    A logical `N`×`K` weight (N output features, K input features) stored in the
    components that its format declares. It is assembled by `qtune.qweight` and
    consumed by `qtune.linear` (or materialized by `qtune.dequant`).

    ```mlir
    !qtune.qweight<4096x4096, #qtune.uniform<bits = 4, group = 128>>
    ```
  }];
  let parameters = (ins "int64_t":$n, "int64_t":$k,
                        "::qtune::QuantFormatAttrInterface":$format);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// The components of this weight, in operand order.
    llvm::SmallVector<ComponentSpec> getComponents() const {
      return getFormat().getComponents(getN(), getK());
    }
  }];
}

#endif // QTUNE_TYPES_TD
