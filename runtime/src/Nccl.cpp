//===- Nccl.cpp - data-parallel collectives through NCCL --------------------===//

#include "qtune/runtime/Nccl.h"
#include "qtune/runtime/DynamicLibrary.h"

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>

#include <dlfcn.h>

namespace qtune::nccl {

namespace {
// ---- the subset of nccl.h that the runtime uses ------------------------------------
using ncclResult_t = int;
constexpr ncclResult_t ncclSuccess = 0;
constexpr ncclResult_t ncclInProgress = 7;
constexpr int ncclFloat32 = 7;
constexpr int ncclFloat64 = 8;
constexpr int ncclSum = 0;
struct ncclUniqueId {
  char internal[128];
};
using ncclComm_t = void *;

/// Host values one allReduceSumHost call takes at most.
constexpr size_t kScratchValues = 16;
} // namespace

struct Library {
  ncclResult_t (*ncclGetVersion)(int *);
  ncclResult_t (*ncclGetUniqueId)(ncclUniqueId *);
  ncclResult_t (*ncclCommInitRank)(ncclComm_t *, int nranks, ncclUniqueId, int rank);
  ncclResult_t (*ncclCommDestroy)(ncclComm_t);
  ncclResult_t (*ncclCommAbort)(ncclComm_t);
  ncclResult_t (*ncclCommGetAsyncError)(ncclComm_t, ncclResult_t *);
  const char *(*ncclGetErrorString)(ncclResult_t);
  ncclResult_t (*ncclAllReduce)(const void *, void *, size_t, int dtype, int op, ncclComm_t,
                                cuda::CUstream);
  ncclResult_t (*ncclGroupStart)();
  ncclResult_t (*ncclGroupEnd)();
  /// NCCL >= 2.13 only (nullptr before): the last error's details.
  const char *(*ncclGetLastError)(ncclComm_t) = nullptr;

  std::string describe(ncclResult_t r) const {
    const char *s = ncclGetErrorString(r);
    std::string text = s ? std::string(s) : "NCCL error " + std::to_string(r);
    const char *last = ncclGetLastError ? ncclGetLastError(nullptr) : nullptr;
    if (last && *last)
      text += " (" + std::string(last) + ")";
    return text;
  }
  bool check(ncclResult_t r, const std::string &call, std::string &error) const {
    if (r == ncclSuccess)
      return true;
    error = call + " failed: " + describe(r);
    return false;
  }
};

namespace {
bool resolve(void *lib, Library &l, std::string &missing) {
  SymbolResolver r(lib);
  r.get(l.ncclGetVersion, "ncclGetVersion");
  r.get(l.ncclGetUniqueId, "ncclGetUniqueId");
  r.get(l.ncclCommInitRank, "ncclCommInitRank");
  r.get(l.ncclCommDestroy, "ncclCommDestroy");
  r.get(l.ncclCommAbort, "ncclCommAbort");
  r.get(l.ncclCommGetAsyncError, "ncclCommGetAsyncError");
  r.get(l.ncclGetErrorString, "ncclGetErrorString");
  r.get(l.ncclAllReduce, "ncclAllReduce");
  r.get(l.ncclGroupStart, "ncclGroupStart");
  r.get(l.ncclGroupEnd, "ncclGroupEnd");
  r.getOptional(l.ncclGetLastError, "ncclGetLastError");
  missing = r.missing();
  return r.ok();
}
} // namespace

std::string toHex(const UniqueId &id) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (char c : id) {
    const auto u = static_cast<unsigned char>(c);
    s += digits[u >> 4];
    s += digits[u & 15];
  }
  return s;
}

bool fromHex(const std::string &text, UniqueId &id) {
  if (text.size() != 2 * id.size())
    return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < id.size(); ++i) {
    const int hi = nibble(text[2 * i]), lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    id[i] = static_cast<char>(hi << 4 | lo);
  }
  return true;
}

const Library *loadLibrary(std::string &error) {
  static std::once_flag once;
  static Library lib;
  static bool ok = false;
  static std::string why;
  std::call_once(once, [] {
    const char *override = std::getenv("QTUNE_NCCL_LIBRARY");
    const std::string path = override && *override ? override : "libnccl.so.2";
    void *handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char *e = ::dlerror();
      why = "cannot load " + path + (e ? std::string(": ") + e : std::string());
      return;
    }
    std::string missing;
    if (!resolve(handle, lib, missing)) {
      why = path + " lacks " + missing + " (NCCL 2.x is needed)";
      return;
    }
    ok = true;
  });
  if (!ok) {
    error = "data-parallel training needs NCCL: " + why +
            " (install libnccl2 or set QTUNE_NCCL_LIBRARY to libnccl.so.2)";
    return nullptr;
  }
  return &lib;
}

std::string version(const Library &lib) {
  int v = 0;
  if (lib.ncclGetVersion(&v) != ncclSuccess)
    return "unknown";
  // NCCL >= 2.9 encodes major * 10000 + minor * 100 + patch.
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100);
}

bool makeUniqueId(const Library &lib, UniqueId &id, std::string &error) {
  ncclUniqueId raw;
  if (!lib.check(lib.ncclGetUniqueId(&raw), "ncclGetUniqueId", error))
    return false;
  std::copy(std::begin(raw.internal), std::end(raw.internal), id.begin());
  return true;
}

std::unique_ptr<Communicator> Communicator::create(const Library &lib, const cuda::Context &ctx,
                                                   cuda::CUstream stream, int rank, int world,
                                                   const UniqueId &id, double timeoutSeconds,
                                                   std::string &error) {
  if (world < 1 || rank < 0 || rank >= world) {
    error = "rank " + std::to_string(rank) + " is outside a world of " + std::to_string(world);
    return nullptr;
  }
  std::unique_ptr<Communicator> c(new Communicator);
  c->lib_ = &lib;
  c->driver_ = &ctx.driver();
  c->stream_ = stream;
  c->rank_ = rank;
  c->timeout_ = timeoutSeconds;
  if (!c->driver_->check(c->driver_->cuMemAlloc(&c->scratch_, kScratchValues * sizeof(double)),
                         "cuMemAlloc(NCCL scratch)", error))
    return nullptr;
  ncclUniqueId raw;
  std::copy(id.begin(), id.end(), raw.internal);
  // ncclCommInitRank blocks until every rank has joined, so a rank that never
  // starts (a host of a hand-started world, a wrong --nccl-id) would hang it.
  // It runs on a helper thread with this context current; the caller waits
  // at most the timeout. Past it the helper stays behind, blocked in NCCL,
  // until the process (which stops on the error) exits.
  struct Init {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    ncclResult_t result = ncclSuccess;
    ncclComm_t comm = nullptr;
  };
  auto init = std::make_shared<Init>();
  const cuda::Driver *driver = c->driver_;
  cuda::CUcontext context = ctx.handle();
  const Library *l = &lib;
  std::thread([init, driver, context, l, world, raw, rank] {
    ncclComm_t comm = nullptr;
    ncclResult_t r = driver->cuCtxSetCurrent(context) == cuda::CUDA_SUCCESS
                         ? l->ncclCommInitRank(&comm, world, raw, rank)
                         : ncclResult_t(1); // ncclUnhandledCudaError
    std::lock_guard<std::mutex> lock(init->m);
    init->result = r;
    init->comm = comm;
    init->done = true;
    init->cv.notify_all();
  }).detach();
  const std::string who =
      "rank " + std::to_string(rank) + ": ncclCommInitRank(world " + std::to_string(world) + ")";
  std::unique_lock<std::mutex> lock(init->m);
  if (!init->cv.wait_for(lock, std::chrono::duration<double>(timeoutSeconds),
                         [&] { return init->done; })) {
    error = who + " did not finish within " + std::to_string(int(timeoutSeconds)) +
            " s: every rank of the world must start, with the same NCCL id (--nccl-timeout "
            "sets the limit)";
    return nullptr;
  }
  if (!lib.check(init->result, who, error))
    return nullptr;
  c->comm_ = init->comm;
  return c;
}

Communicator::~Communicator() {
  if (comm_)
    (aborted_ ? lib_->ncclCommAbort : lib_->ncclCommDestroy)(comm_);
  if (scratch_)
    driver_->cuMemFree(scratch_);
}

bool Communicator::wait(const std::string &what, std::string &error) {
  const auto start = std::chrono::steady_clock::now();
  const std::string who = "rank " + std::to_string(rank_) + ": " + what;
  for (;;) {
    const cuda::CUresult r = driver_->cuStreamQuery(stream_);
    if (r == cuda::CUDA_SUCCESS)
      return true;
    if (r != cuda::CUDA_ERROR_NOT_READY)
      return driver_->check(r, who, error);
    ncclResult_t async = ncclSuccess;
    if (lib_->ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess &&
        async != ncclInProgress) {
      lib_->ncclCommAbort(comm_);
      comm_ = nullptr;
      error = who + " failed: " + lib_->describe(async) + " (the communicator was aborted)";
      return false;
    }
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waited > timeout_) {
      lib_->ncclCommAbort(comm_);
      comm_ = nullptr;
      error = who + " did not finish within " + std::to_string(int(timeout_)) +
              " s: another rank died or hangs (the communicator was aborted)";
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

bool Communicator::allReduceSumF32(const std::vector<cuda::CUdeviceptr> &buffers,
                                   const std::vector<size_t> &counts, std::string &error) {
  if (!comm_) {
    error = "rank " + std::to_string(rank_) + ": the communicator was aborted";
    return false;
  }
  const std::string what = "all-reduce of " + std::to_string(buffers.size()) + " gradients";
  if (!lib_->check(lib_->ncclGroupStart(), "ncclGroupStart", error))
    return false;
  ncclResult_t first = ncclSuccess;
  for (size_t i = 0; i < buffers.size(); ++i) {
    void *p = reinterpret_cast<void *>(static_cast<uintptr_t>(buffers[i]));
    const ncclResult_t r =
        lib_->ncclAllReduce(p, p, counts[i], ncclFloat32, ncclSum, comm_, stream_);
    if (first == ncclSuccess)
      first = r;
  }
  const ncclResult_t end = lib_->ncclGroupEnd();
  if (!lib_->check(first != ncclSuccess ? first : end, "rank " + std::to_string(rank_) + ": " + what,
                   error))
    return false;
  return wait(what, error);
}

bool Communicator::allReduceSumHost(std::vector<double> &values, std::string &error) {
  if (!comm_) {
    error = "rank " + std::to_string(rank_) + ": the communicator was aborted";
    return false;
  }
  if (values.size() > kScratchValues) {
    error = "allReduceSumHost takes at most " + std::to_string(kScratchValues) + " values";
    return false;
  }
  const size_t bytes = values.size() * sizeof(double);
  if (!driver_->check(driver_->cuMemcpyHtoD(scratch_, values.data(), bytes), "cuMemcpyHtoD",
                      error))
    return false;
  void *p = reinterpret_cast<void *>(static_cast<uintptr_t>(scratch_));
  if (!lib_->check(lib_->ncclAllReduce(p, p, values.size(), ncclFloat64, ncclSum, comm_, stream_),
                   "rank " + std::to_string(rank_) + ": all-reduce of the step's loss", error) ||
      !wait("all-reduce of the step's loss", error))
    return false;
  return driver_->check(driver_->cuMemcpyDtoH(values.data(), scratch_, bytes), "cuMemcpyDtoH",
                        error);
}

} // namespace qtune::nccl
