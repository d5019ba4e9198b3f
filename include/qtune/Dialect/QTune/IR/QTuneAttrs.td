//===- QTuneAttrs.td - qtune attributes: roles and formats --*- tablegen -*-===//
//
// Each quantizer format is one AttrDef implementing QuantFormatAttrInterface; its
// interface methods live in lib/Dialect/QTune/IR/Formats/<Format>.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_ATTRS_TD
#define QTUNE_ATTRS_TD

include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"
include "mlir/IR/EnumAttr.td"
include "qtune/Dialect/QTune/IR/QTuneDialect.td"
include "qtune/Dialect/QTune/IR/QTuneInterfaces.td"

//===----------------------------------------------------------------------===//
// Argument roles
//===----------------------------------------------------------------------===//

def QTune_RoleInput : I32EnumAttrCase<"input", 0>;
def QTune_RoleFrozen : I32EnumAttrCase<"frozen", 1>;
def QTune_RoleTrainable : I32EnumAttrCase<"trainable", 2>;
def QTune_RoleOptimizerState : I32EnumAttrCase<"optimizer_state", 3>;

def QTune_Role : I32EnumAttr<"Role", "role of a function argument",
    [QTune_RoleInput, QTune_RoleFrozen, QTune_RoleTrainable,
     QTune_RoleOptimizerState]> {
  let cppNamespace = "::qtune";
  let genSpecializedAttr = 0;
}

def QTune_RoleAttr : EnumAttr<QTune_Dialect, QTune_Role, "role"> {
  let summary = "Role of a function argument: input, frozen, trainable or optimizer_state";
  let assemblyFormat = "`<` $value `>`";
}

//===----------------------------------------------------------------------===//
// Optimizer state formats
//===----------------------------------------------------------------------===//

def QTune_StateF32 : I32EnumAttrCase<"f32", 0>;
def QTune_StateBF16 : I32EnumAttrCase<"bf16", 1>;
def QTune_StateInt8 : I32EnumAttrCase<"int8", 2>;

def QTune_StateFormat : I32EnumAttr<"StateFormat",
    "storage of an optimizer moment", [QTune_StateF32, QTune_StateBF16,
                                        QTune_StateInt8]> {
  let cppNamespace = "::qtune";
  let genSpecializedAttr = 0;
}

def QTune_StateFormatAttr : EnumAttr<QTune_Dialect, QTune_StateFormat, "state"> {
  let summary = "Storage of an optimizer moment: f32, bf16, or int8 with per-block scales";
  let assemblyFormat = "`<` $value `>`";
}

//===----------------------------------------------------------------------===//
// Quantizer formats
//===----------------------------------------------------------------------===//

class QTune_FormatAttr<string name, string mnemonicName>
    : AttrDef<QTune_Dialect, name, [DeclareAttrInterfaceMethods<
          QuantFormatAttrInterface>]> {
  let mnemonic = mnemonicName;
  let genVerifyDecl = 1;
}

def QTune_UniformFormatAttr : QTune_FormatAttr<"UniformFormat", "uniform"> {
  let summary = "Uniform integer quantization, per group or per channel";
  let description = [{
    Integer codes q ∈ [0, 2^bits) with one scale (and, when asymmetric, one zero
    point) per `group` consecutive weights of a row; `group = 0` means per channel
    (one group per row).

    - asymmetric: w = s · (q − z), components `codes`, `scales`, `zeros`;
    - symmetric:  w = s · (q − 2^(bits−1)), components `codes`, `scales`.

    `scale_type` is the element type of scales and zeros (bf16 by default).

    ```mlir
    #qtune.uniform<bits = 4, group = 128>
    #qtune.uniform<bits = 3, group = 0, symmetric = true, scale_type = f32>
    ```
  }];
  let parameters = (ins
    "unsigned":$bits,
    DefaultValuedParameter<"int64_t", "0">:$group,
    DefaultValuedParameter<"bool", "false">:$symmetric,
    DefaultValuedParameter<"::mlir::Type",
        "::mlir::BFloat16Type::get($_ctxt)">:$scale_type
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let extraClassDeclaration = [{
    /// Round-to-nearest parameters (scale, zero point) of one group of
    /// weights, as `quantize` fits them.
    std::pair<double, double> fitGroup(::llvm::ArrayRef<double> weights) const;
    /// The code of weight `w` on the grid (scale, zero).
    uint32_t codeOf(double w, double scale, double zero) const;
    /// The components of an n × k weight from its codes (row-major, one per
    /// weight) and its scales and zero points ([n, groups]; the zeros are
    /// left out when symmetric).
    ::llvm::SmallVector<::qtune::HostTensor>
    fromCodes(int64_t n, int64_t k, const std::vector<uint32_t> &codes,
              ::qtune::HostTensor scales, ::qtune::HostTensor zeros) const;
  }];
}

def QTune_NF4FormatAttr : QTune_FormatAttr<"NF4Format", "nf4"> {
  let summary = "4-bit NormalFloat (QLoRA) with absmax per block";
  let description = [{
    4-bit codes index the 16-value NormalFloat table of QLoRA; each `block`
    consecutive weights of a row share an absmax: w = absmax · NF4[q].

    With `double_quant`, the absmax values themselves are stored as 8-bit codes
    c ∈ [0, 256), one f32 scale per `dq_block` absmax values of a row and one f32
    offset for the tensor: absmax = offset + s2 · (c − 128). Components:
    `codes`, `absmax` — or, with double quantization, `codes`, `absmax_codes`,
    `absmax_scales`, `absmax_offset`.

    ```mlir
    #qtune.nf4<block = 64>
    #qtune.nf4<block = 64, double_quant = true, dq_block = 256>
    ```
  }];
  let parameters = (ins
    DefaultValuedParameter<"int64_t", "64">:$block,
    DefaultValuedParameter<"bool", "false">:$double_quant,
    DefaultValuedParameter<"int64_t", "256">:$dq_block
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let extraClassDeclaration = [{
    /// The 16 NormalFloat values of QLoRA, ascending.
    static llvm::ArrayRef<double> getTable();
    /// NF4 codes are 4 bits wide.
    unsigned getBits() const { return 4; }
    /// Number of first-level blocks (absmax values) per row of a K-wide weight.
    int64_t getNumBlocks(int64_t k) const { return k / getBlock(); }
  }];
}

def QTune_LutFormatAttr : QTune_FormatAttr<"LutFormat", "lut"> {
  let summary = "Codebook (look-up table) quantization";
  let description = [{
    Codes q ∈ [0, 2^bits) index a codebook of 2^bits values given as an operand:
    w = table[q]. With `group = 0` one table serves the whole tensor (component
    `table: f32[2^bits]`); otherwise each `group` consecutive weights of a row have
    their own table (`table: f32[N, K/group, 2^bits]`; `group = K` is one table per
    row). Covers NormalFloat-k, k-means codebooks and per-group learned tables.

    ```mlir
    #qtune.lut<bits = 3>
    #qtune.lut<bits = 4, group = 128>
    ```
  }];
  let parameters = (ins
    "unsigned":$bits,
    DefaultValuedParameter<"int64_t", "0">:$group
  );
  let assemblyFormat = "`<` struct(params) `>`";
}

#endif // QTUNE_ATTRS_TD
