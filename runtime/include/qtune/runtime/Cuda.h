//===- Cuda.h - CUDA driver API loaded at run time -------------*- C++ -*-===//
//
// The runtime talks to the GPU only through the CUDA driver API, which it loads
// with dlopen("libcuda.so.1") on first use. The few driver types used are
// declared here, so building needs no CUDA toolkit and binaries start (and can,
// e.g., inspect bundles) on machines without a GPU.
//
// Nothing here throws. Failures are messages such as
//   "cuMemAlloc(2.1 GiB) failed: CUDA_ERROR_OUT_OF_MEMORY (out of memory)"
// and, when no GPU can be used at all,
//   "no CUDA GPU available: <reason>".
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_CUDA_H
#define QTUNE_RUNTIME_CUDA_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace qtune::cuda {

// ---- the subset of cuda.h that the runtime uses --------------------------------
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st *;
using CUmodule = struct CUmod_st *;
using CUfunction = struct CUfunc_st *;
using CUstream = struct CUstream_st *;
using CUevent = struct CUevent_st *;
using CUgraph = struct CUgraph_st *;
using CUgraphExec = struct CUgraphExec_st *;
/// An encoded TMA descriptor: opaque, 128 bytes, 64-byte aligned.
struct alignas(64) CUtensorMap {
  uint64_t opaque[16];
};
static_assert(sizeof(CUtensorMap) == 128, "CUtensorMap is 128 bytes");

constexpr CUresult CUDA_SUCCESS = 0;
constexpr CUresult CUDA_ERROR_NOT_READY = 600;
constexpr int CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
constexpr int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
constexpr int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
constexpr int CU_JIT_INFO_LOG_BUFFER = 3;
constexpr int CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4;
constexpr int CU_JIT_ERROR_LOG_BUFFER = 5;
constexpr int CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;
// cuTensorMapEncodeTiled's enums (CUtensorMapDataType, ...).
constexpr int CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 = 9;
constexpr int CU_TENSOR_MAP_INTERLEAVE_NONE = 0;
constexpr int CU_TENSOR_MAP_SWIZZLE_NONE = 0;
constexpr int CU_TENSOR_MAP_SWIZZLE_32B = 1;
constexpr int CU_TENSOR_MAP_SWIZZLE_64B = 2;
constexpr int CU_TENSOR_MAP_SWIZZLE_128B = 3;
constexpr int CU_TENSOR_MAP_L2_PROMOTION_L2_128B = 2;
constexpr int CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE = 0; ///< out-of-bounds elements read as zero

/// Driver entry points, resolved from libcuda.so.1 (the _v2 symbols where the
/// driver API versions them).
struct Driver {
  CUresult (*cuInit)(unsigned flags);
  CUresult (*cuGetErrorName)(CUresult, const char **);
  CUresult (*cuGetErrorString)(CUresult, const char **);
  CUresult (*cuDeviceGetCount)(int *);
  CUresult (*cuDeviceGet)(CUdevice *, int ordinal);
  CUresult (*cuDeviceGetName)(char *, int len, CUdevice);
  CUresult (*cuDeviceGetAttribute)(int *, int attrib, CUdevice);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*cuDevicePrimaryCtxRelease)(CUdevice);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuCtxSynchronize)();
  CUresult (*cuMemGetInfo)(size_t *free, size_t *total);
  CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
  CUresult (*cuMemFree)(CUdeviceptr);
  CUresult (*cuMemcpyHtoD)(CUdeviceptr dst, const void *src, size_t);
  CUresult (*cuMemcpyDtoH)(void *dst, CUdeviceptr src, size_t);
  CUresult (*cuMemsetD8)(CUdeviceptr, unsigned char, size_t);
  CUresult (*cuModuleLoadData)(CUmodule *, const void *image);
  CUresult (*cuModuleLoadDataEx)(CUmodule *, const void *image, unsigned numOptions,
                                 int *options, void **optionValues);
  CUresult (*cuModuleUnload)(CUmodule);
  CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *name);
  CUresult (*cuFuncSetAttribute)(CUfunction, int attrib, int value);
  /// Optional (CUDA 12.4+ drivers); nullptr when the driver lacks it.
  CUresult (*cuFuncGetParamInfo)(CUfunction, size_t index, size_t *offset, size_t *size);
  /// Optional (CUDA 12.0+ drivers); nullptr when the driver lacks it, which
  /// matters only to bundles with tensor_map arguments. Dimensions are listed
  /// innermost first; globalStrides has rank - 1 entries, in bytes.
  CUresult (*cuTensorMapEncodeTiled)(CUtensorMap *tensorMap, int dataType, uint32_t rank,
                                     void *globalAddress, const uint64_t *globalDim,
                                     const uint64_t *globalStrides, const uint32_t *boxDim,
                                     const uint32_t *elementStrides, int interleave,
                                     int swizzle, int l2Promotion, int oobFill);
  CUresult (*cuLaunchKernel)(CUfunction, unsigned gx, unsigned gy, unsigned gz,
                             unsigned bx, unsigned by, unsigned bz, unsigned sharedBytes,
                             CUstream, void **params, void **extra);
  CUresult (*cuStreamCreate)(CUstream *, unsigned flags);
  CUresult (*cuStreamDestroy)(CUstream);
  CUresult (*cuStreamSynchronize)(CUstream);
  /// CUDA_SUCCESS when the stream's work is done, CUDA_ERROR_NOT_READY while it runs.
  CUresult (*cuStreamQuery)(CUstream);
  CUresult (*cuEventCreate)(CUevent *, unsigned flags);
  CUresult (*cuEventRecord)(CUevent, CUstream);
  CUresult (*cuEventSynchronize)(CUevent);
  CUresult (*cuEventElapsedTime)(float *ms, CUevent start, CUevent end);
  CUresult (*cuEventDestroy)(CUevent);
  /// CUDA graphs: an entry's launches captured from the stream once and
  /// replayed. Optional (CUDA 11.4+ drivers); all nullptr when the driver
  /// lacks one of them.
  CUresult (*cuStreamBeginCapture)(CUstream, int mode);
  CUresult (*cuStreamEndCapture)(CUstream, CUgraph *);
  CUresult (*cuGraphInstantiateWithFlags)(CUgraphExec *, CUgraph, unsigned long long flags);
  CUresult (*cuGraphLaunch)(CUgraphExec, CUstream);
  CUresult (*cuGraphExecDestroy)(CUgraphExec);
  CUresult (*cuGraphDestroy)(CUgraph);
  bool hasGraphs() const {
    return cuStreamBeginCapture && cuStreamEndCapture && cuGraphInstantiateWithFlags &&
           cuGraphLaunch && cuGraphExecDestroy && cuGraphDestroy;
  }

  /// "CUDA_ERROR_OUT_OF_MEMORY (out of memory)".
  std::string describe(CUresult r) const;
  /// True on success; otherwise sets `error` to "<call> failed: <describe(r)>".
  bool check(CUresult r, const std::string &call, std::string &error) const;
};

/// Loads libcuda.so.1 and runs cuInit(0), once per process. On failure returns
/// nullptr and sets `error` to "no CUDA GPU available: <reason>".
const Driver *loadDriver(std::string &error);

/// "512 B", "3.0 KiB", "2.1 GiB".
std::string formatBytes(uint64_t bytes);

/// The primary context of one device, made current on the creating thread.
class Context {
public:
  /// nullptr and "no CUDA GPU available: ..." if there is no usable GPU (no
  /// driver, cuInit fails, zero devices); other messages for a bad ordinal or
  /// a failing context.
  static std::unique_ptr<Context> create(int ordinal, std::string &error);
  ~Context();
  Context(const Context &) = delete;
  Context &operator=(const Context &) = delete;

  const Driver &driver() const { return *driver_; }
  int ordinal() const { return ordinal_; }
  CUdevice device() const { return device_; }
  const std::string &name() const { return name_; }
  /// Compute capability, e.g. 90 for sm_90.
  int computeCapability() const { return cc_; }
  /// The driver context (to make current on another thread).
  CUcontext handle() const { return ctx_; }

private:
  Context() = default;
  const Driver *driver_ = nullptr;
  int ordinal_ = 0;
  CUdevice device_ = 0;
  CUcontext ctx_ = nullptr;
  std::string name_;
  int cc_ = 0;
};

} // namespace qtune::cuda

#endif // QTUNE_RUNTIME_CUDA_H
