//===- Cuda.cpp - CUDA driver API loaded at run time ------------------------===//

#include "qtune/runtime/Cuda.h"
#include "qtune/runtime/DynamicLibrary.h"

#include <cstdio>
#include <mutex>

#include <dlfcn.h>

namespace qtune::cuda {

namespace {

const char *const kLibrary = "libcuda.so.1";

/// Resolves every entry point; the first missing one is reported.
bool resolve(void *lib, Driver &d, std::string &missing) {
  SymbolResolver r(lib);
  r.get(d.cuInit, "cuInit");
  r.get(d.cuGetErrorName, "cuGetErrorName");
  r.get(d.cuGetErrorString, "cuGetErrorString");
  r.get(d.cuDeviceGetCount, "cuDeviceGetCount");
  r.get(d.cuDeviceGet, "cuDeviceGet");
  r.get(d.cuDeviceGetName, "cuDeviceGetName");
  r.get(d.cuDeviceGetAttribute, "cuDeviceGetAttribute");
  r.get(d.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
  r.get(d.cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
  r.get(d.cuCtxSetCurrent, "cuCtxSetCurrent");
  r.get(d.cuCtxSynchronize, "cuCtxSynchronize");
  r.get(d.cuMemGetInfo, "cuMemGetInfo_v2");
  r.get(d.cuMemAlloc, "cuMemAlloc_v2");
  r.get(d.cuMemFree, "cuMemFree_v2");
  r.get(d.cuMemcpyHtoD, "cuMemcpyHtoD_v2");
  r.get(d.cuMemcpyDtoH, "cuMemcpyDtoH_v2");
  r.get(d.cuMemsetD8, "cuMemsetD8_v2");
  r.get(d.cuModuleLoadData, "cuModuleLoadData");
  r.get(d.cuModuleLoadDataEx, "cuModuleLoadDataEx");
  r.get(d.cuModuleUnload, "cuModuleUnload");
  r.get(d.cuModuleGetFunction, "cuModuleGetFunction");
  r.get(d.cuFuncSetAttribute, "cuFuncSetAttribute");
  r.get(d.cuLaunchKernel, "cuLaunchKernel");
  r.get(d.cuStreamCreate, "cuStreamCreate");
  r.get(d.cuStreamDestroy, "cuStreamDestroy_v2");
  r.get(d.cuStreamSynchronize, "cuStreamSynchronize");
  r.get(d.cuStreamQuery, "cuStreamQuery");
  r.get(d.cuEventCreate, "cuEventCreate");
  r.get(d.cuEventRecord, "cuEventRecord");
  r.get(d.cuEventSynchronize, "cuEventSynchronize");
  r.get(d.cuEventElapsedTime, "cuEventElapsedTime");
  r.get(d.cuEventDestroy, "cuEventDestroy_v2");
  d.cuFuncGetParamInfo = reinterpret_cast<decltype(d.cuFuncGetParamInfo)>(
      ::dlsym(lib, "cuFuncGetParamInfo")); // optional
  r.getOptional(d.cuTensorMapEncodeTiled, "cuTensorMapEncodeTiled"); // CUDA 12.0+
  r.getOptional(d.cuStreamBeginCapture, "cuStreamBeginCapture_v2"); // CUDA 11.4+
  r.getOptional(d.cuStreamEndCapture, "cuStreamEndCapture");
  r.getOptional(d.cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags");
  r.getOptional(d.cuGraphLaunch, "cuGraphLaunch");
  r.getOptional(d.cuGraphExecDestroy, "cuGraphExecDestroy");
  r.getOptional(d.cuGraphDestroy, "cuGraphDestroy");
  missing = r.missing();
  return r.ok();
}

} // namespace

std::string Driver::describe(CUresult r) const {
  const char *name = nullptr, *text = nullptr;
  if (cuGetErrorName(r, &name) != CUDA_SUCCESS || !name)
    return "CUDA error " + std::to_string(r);
  std::string s = name;
  if (cuGetErrorString(r, &text) == CUDA_SUCCESS && text)
    s += std::string(" (") + text + ")";
  return s;
}

bool Driver::check(CUresult r, const std::string &call, std::string &error) const {
  if (r == CUDA_SUCCESS)
    return true;
  error = call + " failed: " + describe(r);
  return false;
}

const Driver *loadDriver(std::string &error) {
  static std::once_flag once;
  static Driver driver;
  static const Driver *loaded = nullptr;
  static std::string failure;
  std::call_once(once, [] {
    void *lib = ::dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char *why = ::dlerror();
      failure = std::string("cannot load the CUDA driver: ") + (why ? why : kLibrary);
      return;
    }
    std::string missing;
    if (!resolve(lib, driver, missing)) {
      failure = std::string(kLibrary) + " lacks " + missing + " (driver too old?)";
      return; // the library stays loaded; harmless
    }
    if (!driver.check(driver.cuInit(0), "cuInit", failure))
      return;
    loaded = &driver;
  });
  if (!loaded)
    error = "no CUDA GPU available: " + failure;
  return loaded;
}

std::string formatBytes(uint64_t bytes) {
  if (bytes < 1024)
    return std::to_string(bytes) + " B";
  const char *units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024;
  int u = 0;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

std::unique_ptr<Context> Context::create(int ordinal, std::string &error) {
  const Driver *d = loadDriver(error);
  if (!d)
    return nullptr;
  int count = 0;
  if (!d->check(d->cuDeviceGetCount(&count), "cuDeviceGetCount", error)) {
    error = "no CUDA GPU available: " + error;
    return nullptr;
  }
  if (count == 0) {
    error = "no CUDA GPU available: the driver reports no devices";
    return nullptr;
  }
  if (ordinal < 0 || ordinal >= count) {
    error = "CUDA device " + std::to_string(ordinal) + " does not exist (" +
            std::to_string(count) + (count == 1 ? " device)" : " devices)");
    return nullptr;
  }
  std::unique_ptr<Context> c(new Context());
  c->driver_ = d;
  c->ordinal_ = ordinal;
  if (!d->check(d->cuDeviceGet(&c->device_, ordinal), "cuDeviceGet", error))
    return nullptr;
  char name[256] = {};
  if (!d->check(d->cuDeviceGetName(name, sizeof name - 1, c->device_), "cuDeviceGetName", error))
    return nullptr;
  c->name_ = name;
  int major = 0, minor = 0;
  if (!d->check(d->cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                                        c->device_), "cuDeviceGetAttribute", error) ||
      !d->check(d->cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                                        c->device_), "cuDeviceGetAttribute", error))
    return nullptr;
  c->cc_ = major * 10 + minor;
  CUcontext ctx = nullptr;
  if (!d->check(d->cuDevicePrimaryCtxRetain(&ctx, c->device_), "cuDevicePrimaryCtxRetain", error))
    return nullptr;
  c->ctx_ = ctx; // released by the destructor from here on
  if (!d->check(d->cuCtxSetCurrent(ctx), "cuCtxSetCurrent", error))
    return nullptr;
  return c;
}

Context::~Context() {
  if (ctx_) {
    driver_->cuCtxSynchronize();
    driver_->cuDevicePrimaryCtxRelease(device_);
  }
}

} // namespace qtune::cuda
