//===- Serialize.h - GPU modules to PTX and cubin ------------------*- C++ -*-===//

#ifndef QTUNE_TARGET_SERIALIZE_H
#define QTUNE_TARGET_SERIALIZE_H

#include "mlir/IR/BuiltinOps.h"

#include <string>

namespace qtune {

/// Serializes the (already NVVM-lowered) gpu.module `@qtune_kernels` of
/// `module` with `gpu-module-to-binary`, on a clone: `format` is "isa" (PTX
/// text) or "bin" (cubin; runs ptxas from `toolkitPath`/bin, or from PATH when
/// empty). Returns the object's bytes, or failure after reporting why.
mlir::FailureOr<std::string> serializeKernels(mlir::ModuleOp module,
                                              llvm::StringRef format,
                                              llvm::StringRef toolkitPath);

} // namespace qtune

#endif // QTUNE_TARGET_SERIALIZE_H
