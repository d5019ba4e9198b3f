//===- Safetensors.h - safetensors reader/writer ---------------*- C++ -*-===//
//
// A small, dependency-light implementation of the safetensors format
// (https://github.com/huggingface/safetensors):
//
//   [8 bytes: N, little-endian u64]
//   [N bytes: UTF-8 JSON object header]
//   [data section: raw little-endian tensor bytes]
//
// Each header entry maps a tensor name to
//   {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
// with offsets relative to the start of the data section. The optional key
// "__metadata__" maps to an object of string -> string.
//
// Nothing in this API throws: failures are reported through a bool/nullptr
// return value plus a human-readable message naming the file and the field.
// Tensor bytes are little-endian as in the spec; the library assumes a
// little-endian host.
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_SAFETENSORS_H
#define QTUNE_RUNTIME_SAFETENSORS_H

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qtune::st {

enum class DType { BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

/// Spec name of a dtype ("F32", "BF16", ...).
std::string_view dtypeName(DType dtype);
/// A shape as messages print it: "[2, 3]".
std::string shapeText(const std::vector<int64_t> &shape);
/// Inverse of dtypeName (exact, case-sensitive match); nullopt if unknown.
std::optional<DType> parseDType(std::string_view name);
/// Size of one element in bytes.
size_t dtypeSize(DType dtype);
/// True for F16, BF16, F32 and F64.
bool isFloat(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t offset = 0; ///< begin, relative to the start of the data section
  uint64_t bytes = 0;  ///< end - begin
  /// Product of the dims (1 for a 0-d tensor); -1 if a dim is negative or the
  /// product overflows int64 (never the case for tensors from File::open).
  int64_t numel() const;
};

/// Read-only, memory-mapped view of a .safetensors file. Everything in the
/// header is validated by open(); accessors never fail afterwards.
class File {
public:
  /// Opens and validates `path`. Returns nullptr and sets `error` on failure.
  static std::unique_ptr<File> open(const std::string &path, std::string &error);

  /// All tensors sorted by data offset (ties, i.e. zero-size tensors, keep
  /// the header order).
  const std::vector<TensorInfo> &tensors() const { return tensors_; }
  /// nullptr if no tensor has this name.
  const TensorInfo *find(std::string_view name) const;
  /// Pointer to the first byte of `t` in the mapping. `t` must come from this
  /// file. The pointer is not necessarily aligned for the element type.
  const uint8_t *data(const TensorInfo &t) const;
  /// Contents of "__metadata__" (empty if absent).
  const std::map<std::string, std::string> &metadata() const { return metadata_; }
  const std::string &path() const { return path_; }
  /// Size in bytes of the JSON header (the N of the 8-byte prefix).
  uint64_t headerSize() const { return headerSize_; }
  /// Size in bytes of the data section (file size - 8 - N).
  uint64_t dataSize() const { return dataSize_; }

  File(const File &) = delete;
  File &operator=(const File &) = delete;
  ~File(); // munmap

private:
  File() = default;

  std::string path_;
  const uint8_t *map_ = nullptr;
  size_t mapSize_ = 0;
  uint64_t headerSize_ = 0;
  uint64_t dataSize_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

/// Converts the t.bytes / dtypeSize(t.dtype) elements at `data` to doubles.
/// Floats (bf16/f16 included) are widened exactly; integers are converted
/// with the usual double rounding for |v| > 2^53; BOOL gives 0 or 1 (any
/// nonzero byte is true). `data` need not be aligned.
std::vector<double> toDoubles(const TensorInfo &t, const uint8_t *data);

/// Encodes `values` as little-endian `dtype` bytes into `out` (replacing its
/// contents). Floating dtypes round to nearest even (overflow gives inf, NaN
/// and inf pass through). Integer dtypes require every value to be integral
/// and in range, BOOL requires 0 or 1; otherwise returns false, sets `error`
/// (naming the index and value) and clears `out`.
bool fromDoubles(const std::vector<double> &values, DType dtype,
                 std::vector<uint8_t> &out, std::string &error);

struct OwnedTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

/// Writes a safetensors file atomically: the data go to a temporary file in
/// the same directory, which is fsync'ed and renamed over `path`. Tensors are
/// laid out in the given order; the header is padded with spaces so the data
/// section starts at an 8-byte aligned file offset. Names must be non-empty,
/// unique and not "__metadata__"; dims non-negative; bytes.size() must equal
/// numel * dtypeSize. Metadata (if non-empty) is written as "__metadata__".
/// On any error returns false, sets `error`, and leaves `path` untouched.
bool write(const std::string &path, const std::vector<OwnedTensor> &tensors,
           const std::map<std::string, std::string> &metadata,
           std::string &error);

} // namespace qtune::st

#endif // QTUNE_RUNTIME_SAFETENSORS_H
