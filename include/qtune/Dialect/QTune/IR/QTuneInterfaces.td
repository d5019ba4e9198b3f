//===- QTuneInterfaces.td - quantizer format interface ------*- tablegen -*-===//

#ifndef QTUNE_INTERFACES_TD
#define QTUNE_INTERFACES_TD

include "mlir/IR/OpBase.td"

def QuantFormatAttrInterface : AttrInterface<"QuantFormatAttrInterface"> {
  let cppNamespace = "::qtune";
  let description = [{
    A quantizer format: how a logical N×K weight is stored as components and how
    it is reconstructed. Verifiers, the reference interpreter, the quantizer, autodiff
    and kernel templates talk only to this interface.

    Components are listed in a fixed order; `qtune.qweight` takes them as operands in
    that order. Integer components hold packed codes (canonical packing: row n is one
    little-endian bit stream, element k at bits [k·b, k·b+b), in 32-bit words, each
    row padded to a whole word). Float components (scales, zero points, tables) are
    operands, so they can be trained.
  }];

  let methods = [
    InterfaceMethod<[{
        Bits per stored code. Each format provides `unsigned getBits() const`
        (a parameter or a constant).
      }], "unsigned", "getBits", (ins), [{ return $_attr.getBits(); }]>,
    InterfaceMethod<[{
        Number of consecutive weights of a row that share float parameters, for a
        row length `k` (per-channel formats return `k`).
      }], "int64_t", "getGroupSize", (ins "int64_t":$k)>,
    InterfaceMethod<[{
        Checks that the format can hold a weight of `n`×`k`; reports through
        `emitError` naming what does not fit.
      }], "::llvm::LogicalResult", "verifyShape",
      (ins "int64_t":$n, "int64_t":$k,
           "::llvm::function_ref<::mlir::InFlightDiagnostic()>":$emitError)>,
    InterfaceMethod<[{
        The components of an `n`×`k` weight, in operand order.
      }], "::llvm::SmallVector<::qtune::ComponentSpec>", "getComponents",
      (ins "int64_t":$n, "int64_t":$k)>,
    InterfaceMethod<[{
        Host dequantization: reconstructs the `n`×`k` weight (row-major) from its
        components, given in `getComponents` order as row-major doubles (packed words
        as their unsigned 32-bit values).
      }], "void", "dequantize",
      (ins "int64_t":$n, "int64_t":$k,
           "::llvm::ArrayRef<::qtune::HostTensor>":$components,
           "::llvm::MutableArrayRef<double>":$out)>,
    InterfaceMethod<[{
        Host round-to-nearest quantization of a row-major `n`×`k` matrix. Float
        parameters that may be supplied instead of fitted (a lut codebook) are
        taken from `given` (indexed like the components) when present there;
        otherwise the format fits them. Returns the components in
        `getComponents` order.
      }], "::llvm::SmallVector<::qtune::HostTensor>", "quantize",
      (ins "int64_t":$n, "int64_t":$k, "::llvm::ArrayRef<double>":$weight,
           "::llvm::ArrayRef<::qtune::HostTensor>":$given)>,
    InterfaceMethod<[{
        Vector-Jacobian product of dequantization with respect to float component
        `index`: given `grad` = ∂L/∂W (row-major `n`×`k`), returns ∂L/∂component,
        shaped like the component. Integer components have no derivative.
      }], "::qtune::HostTensor", "dequantizeVJP",
      (ins "int64_t":$n, "int64_t":$k, "unsigned":$index,
           "::llvm::ArrayRef<::qtune::HostTensor>":$components,
           "::llvm::ArrayRef<double>":$grad)>,
    InterfaceMethod<[{
        Emits IR computing the dequantized weight at (`row`, `col`) (index
        values) of an `n`×`k` weight, as an f32 value. Component elements are
        read through `access`, so kernel templates decide where components live
        (global or shared memory) while the format decides only the arithmetic.
        Must agree with `dequantize`.
      }], "::mlir::Value", "emitDequant",
      (ins "::mlir::OpBuilder &":$b, "::mlir::Location":$loc,
           "::mlir::Value":$row, "::mlir::Value":$col, "int64_t":$n,
           "int64_t":$k, "::qtune::ComponentAccess &":$access)>,
    InterfaceMethod<[{
        Emits IR for the derivative of the dequantized weight at (`row`,
        `col`) with respect to float component `component`: returns the f32
        value ∂w[row, col]/∂c[i] and the flat index i of the one element of the
        component it depends on (every format's weight element depends on one
        element of each float component). Kernels reduce gradients with it;
        it must agree with `dequantizeVJP`.
      }], "std::pair<::mlir::Value, ::mlir::Value>", "emitDerivative",
      (ins "::mlir::OpBuilder &":$b, "::mlir::Location":$loc,
           "::mlir::Value":$row, "::mlir::Value":$col, "int64_t":$n,
           "int64_t":$k, "unsigned":$component,
           "::qtune::ComponentAccess &":$access)>,
  ];
}

def DifferentiableOpInterface : OpInterface<"DifferentiableOpInterface"> {
  let cppNamespace = "::qtune";
  let description = [{
    An op whose vector-Jacobian product the autodiff pass can build. Given the
    gradients of the loss with respect to the op's results, `buildAdjoint` emits
    IR computing the gradients with respect to the operands that need one.
  }];
  let methods = [
    InterfaceMethod<[{
        Emits the vector-Jacobian product. `resultGrads[i]` is ∂L/∂result i
        (null when the result does not reach the loss); `needGrad[j]` says
        whether operand j needs a gradient. Fills `operandGrads` (one entry per
        operand, null where none is produced). Fails, with a diagnostic, when a
        needed gradient cannot be expressed (e.g. of integer codes).
      }], "::llvm::LogicalResult", "buildAdjoint",
      (ins "::mlir::OpBuilder &":$b, "::llvm::ArrayRef<::mlir::Value>":$resultGrads,
           "::llvm::ArrayRef<bool>":$needGrad,
           "::llvm::SmallVectorImpl<::mlir::Value> &":$operandGrads)>,
  ];
}

#endif // QTUNE_INTERFACES_TD
