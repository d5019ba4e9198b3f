//===- TensorFiles.h - host tensors to and from safetensors files -*- C++ -*-===//

#ifndef QTUNE_REFERENCE_TENSORFILES_H
#define QTUNE_REFERENCE_TENSORFILES_H

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/Support/LLVM.h"
#include "qtune/Support/HostTensor.h"
#include "qtune/runtime/Safetensors.h"

#include <map>
#include <string>

namespace qtune::ref {

/// A tensor to write: its values and the element type it is stored as.
struct NamedTensor {
  std::string name;
  mlir::Type elementType;
  HostTensor value;
};

/// Reads the requested tensors of one safetensors file. Each must exist, have
/// its type's shape and a dtype that stores the element type exactly (i32 accepts
/// I32 and U32) and, for floats, hold only finite values. On failure `error`
/// names the file, the tensor and what differs. A tensor for which
/// `zeroIfMissing(name)` holds may be absent; it reads as zeros.
mlir::LogicalResult
readTensors(const std::string &path,
            llvm::ArrayRef<std::pair<std::string, mlir::RankedTensorType>> wanted,
            std::vector<HostTensor> &out, std::string &error,
            llvm::function_ref<bool(llvm::StringRef)> zeroIfMissing = nullptr);

/// Encodes one tensor as safetensors bytes: floats as F32 (`floatsAsF32`) or
/// as their own element type, integers as I32/I64 (packed code words, held
/// as unsigned values, keep their bit patterns).
mlir::LogicalResult toOwnedTensor(const NamedTensor &tensor, bool floatsAsF32,
                                  st::OwnedTensor &out, std::string &error);

/// Writes tensors atomically; floats as F32 (`floatsAsF32`) or as their own
/// element type, integers as I32/I64.
mlir::LogicalResult writeTensors(const std::string &path,
                                 llvm::ArrayRef<NamedTensor> tensors,
                                 const std::map<std::string, std::string> &meta,
                                 bool floatsAsF32, std::string &error);

} // namespace qtune::ref

#endif // QTUNE_REFERENCE_TENSORFILES_H
