//===- Bundle.h - the .qtb bundle: model, loader and writer ----*- C++ -*-===//
//
// A bundle holds everything the runtime needs to execute a compiled model:
// kernels (PTX and cubin blobs), the layout of one device arena (a buffer per
// tensor) and entry points made of kernel launches. The format is described in
// docs/bundle.md:
//
//   [0, 8)    magic "QTUNEBDL"
//   [8, 12)   version, little-endian u32 (kBundleVersion)
//   [12, 16)  reserved, 0
//   [16, 24)  H, little-endian u64
//   [24, 24+H) JSON header
//   ...       blobs, each at a 64-byte aligned absolute file offset
//
// Nothing here throws and nothing needs a GPU. The header compiles without
// exceptions or RTTI, so tools built that way can include it.
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_BUNDLE_H
#define QTUNE_RUNTIME_BUNDLE_H

#include "qtune/runtime/Safetensors.h"

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qtune::rt {

constexpr char kBundleMagic[8] = {'Q', 'T', 'U', 'N', 'E', 'B', 'D', 'L'};
constexpr uint32_t kBundleVersion = 1;
constexpr uint64_t kBundleFixedHeaderBytes = 24; ///< magic..H
constexpr uint64_t kBlobAlignment = 64;
constexpr uint64_t kBufferAlignment = 256;
// CUDA limits checked by the validator.
constexpr uint32_t kMaxThreadsPerBlock = 1024;
constexpr uint32_t kMaxBlockDimZ = 64;
constexpr uint32_t kMaxGridDimX = 2147483647u;
constexpr uint32_t kMaxGridDimYZ = 65535;
constexpr uint32_t kMaxSharedBytes = 227 * 1024;

enum class BufferRole { Input, Frozen, Trainable, OptimizerState, Output, Temporary };

/// "input", "frozen", "trainable", "optimizer_state", "output", "temporary".
std::string_view roleName(BufferRole role);
std::optional<BufferRole> parseRole(std::string_view name);

struct Kernel {
  std::string name;   ///< entry symbol in both the PTX and the cubin
  int ptx = -1;       ///< blob id (required)
  int cubin = -1;     ///< blob id, or -1 when only PTX exists
  std::array<uint32_t, 3> block{1, 1, 1};
  uint32_t sharedBytes = 0; ///< dynamic shared memory the kernel needs
};

struct Buffer {
  std::string name;
  uint64_t offset = 0; ///< in the arena, multiple of kBufferAlignment
  uint64_t bytes = 0;  ///< numel * dtypeSize(dtype)
  st::DType dtype = st::DType::F32;
  std::vector<int64_t> shape;
  BufferRole role = BufferRole::Temporary;
};

/// A TMA tensor map over a window of a buffer (Arg::Kind::TensorMap): a 2-D
/// row-major bf16 matrix of `rows` × `cols` elements whose rows lie
/// `rowBytes` apart, read in boxes of `boxRows` × `boxCols` elements into
/// shared memory with the given swizzle (0 for none, or 32, 64, 128 bytes);
/// elements outside the matrix read as zero. The runtime encodes it once
/// (cuTensorMapEncodeTiled) into device memory; the kernel parameter is the
/// device address of the 128-byte map.
struct TensorMapSpec {
  uint64_t rows = 0, cols = 0;
  uint64_t rowBytes = 0;
  uint32_t boxRows = 0, boxCols = 0;
  uint32_t swizzle = 0;
};

/// One kernel argument, in kernel parameter order.
struct Arg {
  enum class Kind { Ptr, I64, I32, F32, TensorMap };
  Kind kind = Kind::I64;
  int buffer = -1;    ///< Ptr, TensorMap: buffer id (the device address of the buffer)
  /// I64 and I32 (I32 must fit in int32); Ptr, TensorMap: a byte offset into
  /// the buffer (a window of it: 0 <= offset < bytes, a multiple of 16).
  int64_t ivalue = 0;
  float fvalue = 0;   ///< F32
  TensorMapSpec map;  ///< TensorMap

  static Arg ptr(int bufferId, int64_t byteOffset = 0) {
    Arg a; a.kind = Kind::Ptr; a.buffer = bufferId; a.ivalue = byteOffset; return a;
  }
  static Arg tensorMap(int bufferId, int64_t byteOffset, const TensorMapSpec &m) {
    Arg a; a.kind = Kind::TensorMap; a.buffer = bufferId; a.ivalue = byteOffset; a.map = m;
    return a;
  }
  static Arg i64(int64_t v) { Arg a; a.kind = Kind::I64; a.ivalue = v; return a; }
  static Arg i32(int32_t v) { Arg a; a.kind = Kind::I32; a.ivalue = v; return a; }
  static Arg f32(float v) { Arg a; a.kind = Kind::F32; a.fvalue = v; return a; }
};

struct Launch {
  int kernel = -1;
  std::array<uint32_t, 3> grid{1, 1, 1};
  std::array<uint32_t, 3> block{1, 1, 1};
  uint32_t sharedBytes = 0;
  std::vector<Arg> args;
  /// The family of ops the launch computes for ("attention", "quantized
  /// GEMM", ...; optional "family" in the header, empty when absent): what
  /// profiles group time by.
  std::string family;
};

struct Entry {
  std::vector<int> inputs;  ///< buffer ids read from the --inputs file
  std::vector<int> params;  ///< buffer ids read from the --params file
  std::vector<int> outputs; ///< buffer ids written to the output file
  std::vector<Launch> launches; ///< run in order on one stream
};

/// The LoRA configuration of a model whose trainable params are LoRA adapters
/// (the optional header object "peft"); the trainer writes it into a
/// checkpoint's adapter_config.json so that PEFT can load the adapter.
struct PeftConfig {
  int64_t r = 0;          ///< "r": the adapters' rank, at least 1
  double loraAlpha = 0;   ///< "lora_alpha": finite, > 0 (scaling = lora_alpha / r)
  double loraDropout = 0; ///< "lora_dropout": in [0, 1)
  /// "target_modules": module names the adapters wrap, e.g. {"q_proj", "v_proj"};
  /// at least one, none empty or repeated.
  std::vector<std::string> targetModules;
  /// "base_model_name_or_path": the base model (Hugging Face id or path); may be empty.
  std::string baseModelNameOrPath;
};

/// The header without the blobs table: what a compiler produces.
struct BundleSpec {
  std::string target; ///< e.g. "sm_90a"
  std::vector<Kernel> kernels;
  uint64_t arenaBytes = 0;
  std::vector<Buffer> buffers;
  std::map<std::string, Entry> entries;
  /// Optional: the LoRA configuration ("peft" in the header).
  std::optional<PeftConfig> peft;

  /// Id of the first buffer called `name`, or -1.
  int findBuffer(std::string_view name) const;
};

struct BlobRef {
  uint64_t offset = 0; ///< absolute file offset
  uint64_t bytes = 0;
};

/// A loaded, fully validated bundle.
struct Bundle : BundleSpec {
  std::string path;
  uint32_t version = kBundleVersion;
  std::vector<BlobRef> blobs;
  std::string fileBytes; ///< the whole file

  /// Bytes of blob `id` (a view into fileBytes); empty if `id` is out of range.
  std::string_view blob(int id) const;
};

/// Reads and validates a bundle (everything in docs/bundle.md "Validation").
/// On failure returns nullptr and sets `error` to one line naming the file and
/// the field, e.g. "m.qtb: entries.forward.launches[3].args[2]: buffer id 17
/// out of range (12 buffers)".
std::unique_ptr<Bundle> loadBundle(const std::string &path, std::string &error);

/// Validates `spec` as if it were written with `numBlobs` blobs (the checks of
/// loadBundle that do not concern the container). Messages name the field,
/// without a file name.
bool validateBundleSpec(const BundleSpec &spec, size_t numBlobs, std::string &error);

/// Checks a "peft" object's values (r >= 1, lora_alpha finite and > 0,
/// lora_dropout in [0, 1), target_modules non-empty without empty or repeated
/// names). Messages name the field without the "peft." prefix, e.g.
/// "r: must be a positive integer (got 0)"; validateBundleSpec adds it.
bool validatePeftConfig(const PeftConfig &config, std::string &error);

/// Writes `spec` and `blobs` as a bundle, atomically (temporary file in the
/// same directory, fsync, rename). Blobs are laid out in order at 64-byte
/// aligned offsets after the header; the blobs table is filled in here. The
/// spec is validated first with exactly the loader's checks, so a successful
/// write always produces a file loadBundle accepts. On failure returns false,
/// sets `error` and leaves `path` untouched.
bool writeBundle(const std::string &path, const BundleSpec &spec,
                 const std::vector<std::string> &blobs, std::string &error);

/// The JSON header text writeBundle would write (no padding), for debugging
/// and tests. Blob offsets assume the header is followed directly by the blobs.
std::string bundleHeaderJson(const BundleSpec &spec,
                             const std::vector<std::string> &blobs);

/// Incremental construction of a bundle, for compilers:
///
///   BundleWriter w;
///   w.spec.target = "sm_90a";
///   int ptx = w.addBlob(ptxText);
///   int k = w.addKernel({"linear_uniform4g128_n4096k4096", ptx, -1, {128, 1, 1}, 0});
///   int x = w.addBuffer({"x", 0, 32768, st::DType::BF16, {4, 4096}, BufferRole::Input});
///   w.spec.arenaBytes = 32768;
///   Entry &fwd = w.entry("forward");
///   fwd.inputs.push_back(x);
///   fwd.launches.push_back({k, {64, 2, 1}, {128, 1, 1}, 0, {Arg::ptr(x), Arg::i64(4)}});
///   if (!w.write("model.qtb", error)) ...
class BundleWriter {
public:
  BundleSpec spec;
  std::vector<std::string> blobs;

  /// Each returns the id of the new element.
  int addBlob(std::string bytes);
  int addKernel(Kernel kernel);
  int addBuffer(Buffer buffer);
  /// The entry called `name`, created empty if absent.
  Entry &entry(const std::string &name);

  bool write(const std::string &path, std::string &error) const {
    return writeBundle(path, spec, blobs, error);
  }
};

} // namespace qtune::rt

#endif // QTUNE_RUNTIME_BUNDLE_H
