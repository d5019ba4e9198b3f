//===- Executor.h - runs a bundle's entries on a GPU -----------*- C++ -*-===//
//
// An Executor owns, for one bundle on one GPU: the device arena (one
// allocation holding every buffer), the loaded kernel modules and a stream.
// It uploads tensors into buffers (converting dtypes), runs entries (their
// launches in order on the stream) and downloads buffers. Nothing throws;
// every failure is a message naming the call, the buffer or the launch.
//
// Every buffer lives at a fixed place in the arena and every launch argument
// is fixed per bundle, so an entry's launches are captured once as a CUDA
// graph (on its first run) and replayed after: one driver call per run
// instead of one per launch (thousands for a whole model). Uploads between
// runs change the buffers' contents, which the graph reads as any launch.
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_EXECUTOR_H
#define QTUNE_RUNTIME_EXECUTOR_H

#include "qtune/runtime/Bundle.h"
#include "qtune/runtime/Cuda.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace qtune::rt {

/// Whether tensor `t` can be uploaded into buffer `b` (no GPU needed): the
/// shapes must be equal, and either both dtypes are floating (F16, BF16, F32,
/// F64; converted with round to nearest even) or both are I32/U32 (copied
/// exactly; a value the target cannot hold is an error at upload time).
bool checkUpload(const Buffer &b, const st::TensorInfo &t, std::string &error);

/// Converts the elements of `t` (at `data`) to `to`, as upload() does.
bool convertTensor(const st::TensorInfo &t, const uint8_t *data, st::DType to,
                   std::vector<uint8_t> &out, std::string &error);

class Executor {
public:
  /// Opens GPU `ordinal`, allocates the arena (filled with zeros), loads every
  /// kernel (the cubin if there is one and it loads, otherwise the PTX, which
  /// the driver compiles) and raises the dynamic shared memory limit of
  /// kernels that need more than 48 KiB, and encodes the TMA descriptors of
  /// tensor_map arguments into device memory (which needs a driver with
  /// cuTensorMapEncodeTiled). `bundle` must outlive the executor.
  static std::unique_ptr<Executor> create(const Bundle &bundle, int ordinal,
                                          std::string &error);
  ~Executor();
  Executor(const Executor &) = delete;
  Executor &operator=(const Executor &) = delete;

  const cuda::Context &context() const { return *ctx_; }
  const Bundle &bundle() const { return bundle_; }
  /// The stream every launch runs on.
  cuda::CUstream stream() const { return stream_; }
  /// Device address of the arena (every buffer lies at arena() + its offset).
  cuda::CUdeviceptr arena() const { return arena_; }
  /// Device address of a buffer (arena base + offset).
  cuda::CUdeviceptr address(int buffer) const;

  /// Copies tensor `t` (bytes at `data`) into `buffer`, converting the dtype
  /// (see checkUpload).
  bool upload(int buffer, const st::TensorInfo &t, const uint8_t *data, std::string &error);
  /// Sets every byte of `buffer` to `byte` (0xFF poisons floats with NaN).
  bool fill(int buffer, uint8_t byte, std::string &error);
  /// Runs the launches of `entry` and waits for them.
  bool run(const std::string &entry, std::string &error);
  /// Whether entries run as CUDA graphs (the default; needs a CUDA 11.4+
  /// driver) or as separate launches. Turning them off drops the graphs.
  bool setGraphs(bool on, std::string &error);
  bool graphs() const { return graphs_; }
  /// Runs `entry` `warmup` times, then `iters` times, each timed with events;
  /// `ms` receives the per-iteration milliseconds.
  bool runTimed(const std::string &entry, int warmup, int iters, std::vector<double> &ms,
                std::string &error);
  /// Runs `entry` `runs` times with its launches one by one (not as a graph),
  /// a CUDA event between every two, after one warm-up; `launchMs` receives
  /// each launch's mean milliseconds (see Profile.h).
  bool profile(const std::string &entry, int runs, std::vector<double> &launchMs,
               std::string &error);
  /// The buffer's bytes, in its own dtype.
  bool downloadRaw(int buffer, std::vector<uint8_t> &bytes, std::string &error);
  /// Bytes [offset, offset + size) of the buffer (which must lie inside it).
  bool downloadRange(int buffer, uint64_t offset, uint64_t size, std::vector<uint8_t> &bytes,
                     std::string &error);
  /// The buffer's elements widened to double.
  bool download(int buffer, std::vector<double> &values, std::string &error);

private:
  struct PreparedLaunch {
    cuda::CUfunction function = nullptr;
    const Launch *launch = nullptr;
    std::vector<uint64_t> slots; ///< one 8-byte slot per kernel argument
  };

  explicit Executor(const Bundle &bundle) : bundle_(bundle) {}
  bool prepare(std::string &error);
  const std::vector<PreparedLaunch> *find(const std::string &entry, std::string &error) const;
  /// Launches `count` of `launches` from `first` (all by default) on the stream.
  bool enqueue(const std::string &entry, const std::vector<PreparedLaunch> &launches,
               std::string &error, size_t first = 0, size_t count = SIZE_MAX);
  /// enqueue, or the replay of the entry's graph (captured on first use).
  bool submit(const std::string &entry, const std::vector<PreparedLaunch> &launches,
              std::string &error);
  bool capture(const std::string &entry, const std::vector<PreparedLaunch> &launches,
               cuda::CUgraphExec &exec, std::string &error);
  void dropGraphs();
  bool checkBuffer(int buffer, std::string &error) const;
  bool checkParams(const Launch &launch, const std::string &field, std::string &error) const;

  const Bundle &bundle_;
  std::unique_ptr<cuda::Context> ctx_; // destroyed last
  cuda::CUdeviceptr arena_ = 0;
  /// The encoded tensor maps of tensor_map arguments, 128 bytes each (0 when none).
  cuda::CUdeviceptr tensorMaps_ = 0;
  cuda::CUstream stream_ = nullptr;
  std::map<int, cuda::CUmodule> modules_; ///< by blob id
  std::vector<cuda::CUfunction> functions_; ///< by kernel id
  std::map<std::string, std::vector<PreparedLaunch>> entries_;
  bool graphs_ = false;
  std::map<std::string, cuda::CUgraphExec> graphExecs_; ///< by entry
};

} // namespace qtune::rt

#endif // QTUNE_RUNTIME_EXECUTOR_H
