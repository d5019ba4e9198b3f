//===- Interpreter.h - CPU reference interpreter of qtune IR ------*- C++ -*-===//
//
// Evaluates qtune-level IR (qtune ops plus func/arith/tensor basics) on the CPU in
// float64. It is the numerical oracle: kernels and passes are checked against it.
//
// Semantics: every floating-point op computes in float64; element types matter
// only where a value is explicitly converted (arith.truncf / arith.extf round to
// the result type) and when results are written out. `qtune.lora` evaluates in
// inference mode (dropout is the identity).
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_REFERENCE_INTERPRETER_H
#define QTUNE_REFERENCE_INTERPRETER_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Support/LLVM.h"
#include "qtune/Support/HostTensor.h"

#include <functional>

namespace qtune::ref {

/// Runs `func` on `args` (one tensor per argument, shaped like its type).
/// On failure, reports an error at the offending operation (or the function)
/// through the context's diagnostic handler and returns failure.
/// Called before each op of the function run (not of functions it calls)
/// with its operands' tensors (null for a quantized-weight operand): lets a
/// tool see intermediate values, e.g. the inputs of every linear layer for a
/// quantizer's calibration.
using Observer = std::function<void(mlir::Operation *,
                                    llvm::ArrayRef<const HostTensor *>)>;

mlir::FailureOr<std::vector<HostTensor>> run(mlir::func::FuncOp func,
                                             llvm::ArrayRef<HostTensor> args,
                                             const Observer &observe = nullptr);

/// Name under which argument `index` of `func` is read from files: its
/// `qtune.name` attribute, else "argN".
std::string argumentName(mlir::func::FuncOp func, unsigned index);
/// Name under which result `index` of `func` is written: its `qtune.name`
/// attribute, else "outN".
std::string resultName(mlir::func::FuncOp func, unsigned index);

} // namespace qtune::ref

#endif // QTUNE_REFERENCE_INTERPRETER_H
