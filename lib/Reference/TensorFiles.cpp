//===- TensorFiles.cpp - host tensors to and from safetensors files --------===//

#include "qtune/Reference/TensorFiles.h"

#include "mlir/IR/BuiltinTypes.h"
#include "qtune/runtime/Safetensors.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>

using namespace mlir;
namespace st = qtune::st;

namespace qtune::ref {

namespace {
std::string typeStr(Type t) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << t;
  return s;
}

std::string shapeStr(ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// Whether `dtype` stores values of `elementType` exactly.
bool dtypeMatches(st::DType dtype, Type elementType) {
  if (elementType.isF32())
    return dtype == st::DType::F32;
  if (elementType.isF64())
    return dtype == st::DType::F64;
  if (elementType.isBF16())
    return dtype == st::DType::BF16;
  if (elementType.isF16())
    return dtype == st::DType::F16;
  if (elementType.isInteger(32))
    return dtype == st::DType::I32 || dtype == st::DType::U32;
  if (elementType.isInteger(64))
    return dtype == st::DType::I64;
  if (elementType.isInteger(8))
    return dtype == st::DType::I8 || dtype == st::DType::U8;
  if (elementType.isInteger(16))
    return dtype == st::DType::I16 || dtype == st::DType::U16;
  return false;
}

st::DType dtypeFor(Type elementType, bool floatsAsF32) {
  if (isa<FloatType>(elementType)) {
    if (floatsAsF32 || elementType.isF32())
      return st::DType::F32;
    if (elementType.isF64())
      return st::DType::F64;
    if (elementType.isBF16())
      return st::DType::BF16;
    if (elementType.isF16())
      return st::DType::F16;
    return st::DType::F32;
  }
  return elementType.getIntOrFloatBitWidth() > 32 ? st::DType::I64
                                                  : st::DType::I32;
}
} // namespace

LogicalResult
readTensors(const std::string &path,
            ArrayRef<std::pair<std::string, RankedTensorType>> wanted,
            std::vector<HostTensor> &out, std::string &error,
            function_ref<bool(StringRef)> zeroIfMissing) {
  std::unique_ptr<st::File> file = st::File::open(path, error);
  if (!file)
    return failure();
  out.clear();
  for (const auto &[name, type] : wanted) {
    const st::TensorInfo *info = file->find(name);
    if (!info && zeroIfMissing && zeroIfMissing(name)) {
      out.push_back(HostTensor(std::vector<int64_t>(type.getShape().begin(),
                                                    type.getShape().end())));
      continue;
    }
    if (!info) {
      std::string have;
      for (const st::TensorInfo &t : file->tensors())
        have += (have.empty() ? "" : ", ") + t.name;
      error = path + ": no tensor '" + name + "' (needed as " + typeStr(type) +
              "); the file has: " + (have.empty() ? "nothing" : have);
      return failure();
    }
    if (ArrayRef<int64_t>(info->shape) != type.getShape()) {
      error = path + ": tensor '" + name + "' has shape " +
              shapeStr(info->shape) + " but " + typeStr(type) + " expects " +
              shapeStr(type.getShape());
      return failure();
    }
    if (!dtypeMatches(info->dtype, type.getElementType())) {
      error = path + ": tensor '" + name + "' has dtype " +
              std::string(st::dtypeName(info->dtype)) + " but " +
              typeStr(type) + " needs " +
              std::string(st::dtypeName(dtypeFor(type.getElementType(), false)));
      return failure();
    }
    HostTensor t(info->shape, st::toDoubles(*info, file->data(*info)));
    if (st::isFloat(info->dtype))
      for (size_t i = 0; i < t.data.size(); ++i)
        if (!std::isfinite(t.data[i])) {
          error = path + ": tensor '" + name + "' holds a non-finite value (" +
                  std::to_string(t.data[i]) + ") at flat index " +
                  std::to_string(i);
          return failure();
        }
    out.push_back(std::move(t));
  }
  return success();
}

LogicalResult toOwnedTensor(const NamedTensor &t, bool floatsAsF32,
                            st::OwnedTensor &out, std::string &error) {
  out.name = t.name;
  out.dtype = dtypeFor(t.elementType, floatsAsF32);
  out.shape = t.value.shape;
  std::vector<double> values = t.value.data;
  if (out.dtype == st::DType::I32) // packed code words are bit patterns
    for (double &v : values)
      if (v >= 2147483648.0 && v < 4294967296.0)
        v -= 4294967296.0;
  if (!st::fromDoubles(values, out.dtype, out.bytes, error)) {
    error = "tensor '" + t.name + "': " + error;
    return failure();
  }
  return success();
}

LogicalResult writeTensors(const std::string &path, ArrayRef<NamedTensor> tensors,
                           const std::map<std::string, std::string> &meta,
                           bool floatsAsF32, std::string &error) {
  std::vector<st::OwnedTensor> owned(tensors.size());
  for (auto [t, o] : llvm::zip(tensors, owned))
    if (failed(toOwnedTensor(t, floatsAsF32, o, error))) {
      error = path + ": " + error;
      return failure();
    }
  return success(st::write(path, owned, meta, error));
}

} // namespace qtune::ref
