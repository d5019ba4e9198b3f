//===- Nccl.h - data-parallel collectives through NCCL ---------*- C++ -*-===//
//
// Data-parallel training sums the ranks' gradients with NCCL, which the
// runtime loads with dlopen like the CUDA driver: "libnccl.so.2", or the file
// named by the environment variable QTUNE_NCCL_LIBRARY. The few NCCL types
// used are declared here, so building needs no NCCL headers and binaries
// start without NCCL (only a data-parallel run needs it).
//
// Nothing here throws. A collective that does not finish within its timeout
// (a rank died or hangs) or that NCCL reports failed aborts the communicator,
// so no later call blocks, and returns an error naming the rank and the call.
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_NCCL_H
#define QTUNE_RUNTIME_NCCL_H

#include "qtune/runtime/Cuda.h"

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qtune::nccl {

/// The unique id rank 0 makes and every rank joins with (NCCL_UNIQUE_ID_BYTES).
using UniqueId = std::array<char, 128>;

/// "0a1b..." (256 hex digits) and back; fromHex fails on anything else.
std::string toHex(const UniqueId &id);
bool fromHex(const std::string &text, UniqueId &id);

/// Loads NCCL once per process. nullptr and "data-parallel training needs
/// NCCL: <reason> (install libnccl2 or set QTUNE_NCCL_LIBRARY)" on failure.
struct Library;
const Library *loadLibrary(std::string &error);
/// "2.27.7".
std::string version(const Library &lib);
/// A fresh unique id (rank 0 makes it; the others receive it).
bool makeUniqueId(const Library &lib, UniqueId &id, std::string &error);

/// One rank's communicator, bound to the GPU of `ctx` (current on the calling
/// thread) and to `stream`, on which every collective runs.
class Communicator {
public:
  /// Joins the world of `world` ranks as `rank`; blocks until every rank has
  /// joined, at most `timeoutSeconds` (then an error says that not every
  /// rank joined), which also bounds every later collective.
  static std::unique_ptr<Communicator> create(const Library &lib, const cuda::Context &ctx,
                                              cuda::CUstream stream, int rank, int world,
                                              const UniqueId &id, double timeoutSeconds,
                                              std::string &error);
  ~Communicator();
  Communicator(const Communicator &) = delete;
  Communicator &operator=(const Communicator &) = delete;

  /// In-place sums over the ranks of f32 device buffers (`counts[i]`
  /// elements at `buffers[i]`), issued as one group (NCCL fuses them), then
  /// waited for.
  bool allReduceSumF32(const std::vector<cuda::CUdeviceptr> &buffers,
                       const std::vector<size_t> &counts, std::string &error);
  /// In-place sums over the ranks of a few host values (through a small
  /// device buffer, as f64).
  bool allReduceSumHost(std::vector<double> &values, std::string &error);

private:
  Communicator() = default;
  /// Waits for the stream, polling NCCL's asynchronous error and the
  /// deadline; aborts the communicator on either.
  bool wait(const std::string &what, std::string &error);

  const Library *lib_ = nullptr;
  const cuda::Driver *driver_ = nullptr;
  cuda::CUstream stream_ = nullptr;
  void *comm_ = nullptr;
  bool aborted_ = false;
  int rank_ = 0;
  double timeout_ = 0;
  cuda::CUdeviceptr scratch_ = 0; ///< host sums (kScratchValues f64)
};

} // namespace qtune::nccl

#endif // QTUNE_RUNTIME_NCCL_H
