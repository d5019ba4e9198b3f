//===- Executor.cpp - runs a bundle's entries on a GPU ----------------------===//

#include "qtune/runtime/Executor.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <limits>
#include <new>

namespace qtune::rt {

using namespace qtune::cuda;

namespace {


bool isIntegerDType(st::DType d) { return d == st::DType::I32 || d == st::DType::U32; }

constexpr uint32_t kDefaultSharedLimit = 48 * 1024;

} // namespace

bool checkUpload(const Buffer &b, const st::TensorInfo &t, std::string &error) {
  const std::string what = "tensor '" + t.name + "' (" + std::string(st::dtypeName(t.dtype)) +
                           " " + st::shapeText(t.shape) + ") for buffer '" + b.name + "' (" +
                           std::string(st::dtypeName(b.dtype)) + " " + st::shapeText(b.shape) + ")";
  if (t.shape != b.shape) {
    error = what + ": shapes differ";
    return false;
  }
  if (t.dtype == b.dtype) // copied as it is (any dtype, e.g. I8 optimizer states)
    return true;
  const bool floats = st::isFloat(t.dtype) && st::isFloat(b.dtype);
  const bool ints = isIntegerDType(t.dtype) && isIntegerDType(b.dtype);
  if (!floats && !ints) {
    error = what + ": cannot convert " + std::string(st::dtypeName(t.dtype)) + " to " +
            std::string(st::dtypeName(b.dtype)) +
            " (equal dtypes copy; floats convert to F16/BF16/F32/F64, I32/U32 to I32/U32)";
    return false;
  }
  return true;
}

bool convertTensor(const st::TensorInfo &t, const uint8_t *data, st::DType to,
                   std::vector<uint8_t> &out, std::string &error) {
  try {
    const size_t from = st::dtypeSize(t.dtype);
    const size_t n = t.bytes / from;
    if (t.dtype == to) {
      out.assign(data, data + t.bytes);
      return true;
    }
    if (isIntegerDType(t.dtype) && isIntegerDType(to)) {
      // I32 <-> U32 copy the bits: integer buffers hold packed code words,
      // which are bit patterns, not numbers.
      out.assign(data, data + t.bytes);
      return true;
    }
    // Floats: widen to double and round once, a chunk at a time.
    out.clear();
    out.reserve(n * st::dtypeSize(to));
    constexpr size_t kChunk = size_t(1) << 20;
    std::vector<uint8_t> piece;
    for (size_t start = 0; start < n; start += kChunk) {
      st::TensorInfo chunk = t;
      const size_t count = std::min(kChunk, n - start);
      chunk.shape = {static_cast<int64_t>(count)};
      chunk.bytes = count * from;
      if (!st::fromDoubles(st::toDoubles(chunk, data + start * from), to, piece, error))
        return false;
      out.insert(out.end(), piece.begin(), piece.end());
    }
    return true;
  } catch (const std::bad_alloc &) {
    error = "tensor '" + t.name + "': out of host memory converting it";
    return false;
  }
}

// ---- Executor ------------------------------------------------------------------------

std::unique_ptr<Executor> Executor::create(const Bundle &bundle, int ordinal,
                                           std::string &error) {
  try {
    std::unique_ptr<Executor> ex(new Executor(bundle));
    ex->ctx_ = Context::create(ordinal, error);
    if (!ex->ctx_ || !ex->prepare(error))
      return nullptr;
    ex->graphs_ = ex->ctx_->driver().hasGraphs();
    return ex;
  } catch (const std::bad_alloc &) {
    error = "out of host memory";
    return nullptr;
  }
}

bool Executor::prepare(std::string &error) {
  const Driver &d = ctx_->driver();
  if (!d.check(d.cuStreamCreate(&stream_, 0), "cuStreamCreate", error))
    return false;

  // The arena.
  if (bundle_.arenaBytes > 0) {
    const std::string size = formatBytes(bundle_.arenaBytes);
    const CUresult r = d.cuMemAlloc(&arena_, bundle_.arenaBytes);
    if (r != CUDA_SUCCESS) {
      arena_ = 0;
      d.check(r, "cuMemAlloc(" + size + ")", error);
      error += "; the arena needs " + std::to_string(bundle_.arenaBytes) + " bytes";
      size_t free = 0, total = 0;
      if (d.cuMemGetInfo(&free, &total) == CUDA_SUCCESS)
        error += ", the GPU has " + formatBytes(free) + " free of " + formatBytes(total);
      return false;
    }
    if (!d.check(d.cuMemsetD8(arena_, 0, bundle_.arenaBytes), "cuMemsetD8(arena, " + size + ")",
                 error))
      return false;
  }

  // Kernels: one module per blob, shared by kernels that name the same blob.
  auto loadModule = [&](int blob, bool ptx, std::string &why) -> CUmodule {
    auto it = modules_.find(blob);
    if (it != modules_.end())
      return it->second;
    const std::string image(bundle_.blob(blob)); // NUL-terminated copy
    CUmodule m = nullptr;
    CUresult r;
    char log[8192] = {};
    if (ptx) {
      int options[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
      void *values[] = {log, reinterpret_cast<void *>(uintptr_t(sizeof log - 1))};
      r = d.cuModuleLoadDataEx(&m, image.c_str(), 2, options, values);
    } else {
      r = d.cuModuleLoadData(&m, image.data());
    }
    if (!d.check(r, ptx ? "cuModuleLoadDataEx(PTX)" : "cuModuleLoadData(cubin)", why)) {
      if (log[0])
        why += "; JIT log: " + std::string(log);
      return nullptr;
    }
    modules_[blob] = m;
    return m;
  };
  functions_.assign(bundle_.kernels.size(), nullptr);
  for (size_t i = 0; i < bundle_.kernels.size(); ++i) {
    const Kernel &k = bundle_.kernels[i];
    const std::string field = "kernels[" + std::to_string(i) + "] ('" + k.name + "')";
    std::string cubinWhy, ptxWhy;
    CUmodule m = k.cubin >= 0 ? loadModule(k.cubin, false, cubinWhy) : nullptr;
    if (!m)
      m = loadModule(k.ptx, true, ptxWhy);
    if (!m) {
      error = field + ": " + (cubinWhy.empty() ? "" : cubinWhy + "; falling back to PTX: ") + ptxWhy;
      return false;
    }
    if (!d.check(d.cuModuleGetFunction(&functions_[i], m, k.name.c_str()),
                 field + ": cuModuleGetFunction", error))
      return false;
  }
  // Dynamic shared memory above 48 KiB must be enabled per function.
  std::vector<uint32_t> shared(bundle_.kernels.size());
  for (size_t i = 0; i < bundle_.kernels.size(); ++i)
    shared[i] = bundle_.kernels[i].sharedBytes;
  for (const auto &[name, entry] : bundle_.entries)
    for (const Launch &l : entry.launches)
      shared[l.kernel] = std::max(shared[l.kernel], l.sharedBytes);
  for (size_t i = 0; i < shared.size(); ++i)
    if (shared[i] > kDefaultSharedLimit &&
        !d.check(d.cuFuncSetAttribute(functions_[i], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                      static_cast<int>(shared[i])),
                 "kernels[" + std::to_string(i) + "] ('" + bundle_.kernels[i].name +
                     "'): cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES, " +
                     std::to_string(shared[i]) + ")",
                 error))
      return false;

  // Tensor maps: encoded once on the host (identical ones shared) into one
  // device allocation of 128 bytes per map; a tensor_map argument's slot is
  // the device address of its map.
  using MapKey = std::array<uint64_t, 7>;
  auto mapKey = [&](const Arg &a) {
    const TensorMapSpec &m = a.map;
    return MapKey{address(a.buffer) + static_cast<uint64_t>(a.ivalue), m.rows, m.cols,
                  m.rowBytes, m.boxRows, m.boxCols, m.swizzle};
  };
  std::map<MapKey, size_t> mapIndex;
  std::vector<CUtensorMap> maps;
  for (const auto &[name, entry] : bundle_.entries) {
    for (size_t i = 0; i < entry.launches.size(); ++i) {
      const Launch &l = entry.launches[i];
      for (size_t j = 0; j < l.args.size(); ++j) {
        const Arg &a = l.args[j];
        if (a.kind != Arg::Kind::TensorMap)
          continue;
        const MapKey key = mapKey(a);
        if (mapIndex.count(key))
          continue;
        const std::string field = "entries." + name + ".launches[" + std::to_string(i) +
                                  "].args[" + std::to_string(j) + "] (kernel '" +
                                  bundle_.kernels[l.kernel].name + "')";
        if (!d.cuTensorMapEncodeTiled) {
          error = field + ": tensor_map arguments need cuTensorMapEncodeTiled, which this CUDA "
                          "driver lacks (CUDA 12.0 or newer is needed)";
          return false;
        }
        const TensorMapSpec &m = a.map;
        const uint64_t globalDim[2] = {m.cols, m.rows}; // innermost first
        const uint64_t globalStrides[1] = {m.rowBytes};
        const uint32_t boxDim[2] = {m.boxCols, m.boxRows};
        const uint32_t elementStrides[2] = {1, 1};
        const int swizzle = m.swizzle == 32    ? CU_TENSOR_MAP_SWIZZLE_32B
                            : m.swizzle == 64  ? CU_TENSOR_MAP_SWIZZLE_64B
                            : m.swizzle == 128 ? CU_TENSOR_MAP_SWIZZLE_128B
                                               : CU_TENSOR_MAP_SWIZZLE_NONE;
        CUtensorMap map{};
        const CUresult r = d.cuTensorMapEncodeTiled(
            &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
            reinterpret_cast<void *>(static_cast<uintptr_t>(key[0])), globalDim, globalStrides,
            boxDim, elementStrides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
            CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
        if (!d.check(r,
                     field + ": cuTensorMapEncodeTiled(buffer '" +
                         bundle_.buffers[a.buffer].name + "' +" + std::to_string(a.ivalue) +
                         ", " + std::to_string(m.rows) + "x" + std::to_string(m.cols) +
                         ", row_bytes " + std::to_string(m.rowBytes) + ", box " +
                         std::to_string(m.boxRows) + "x" + std::to_string(m.boxCols) +
                         ", swizzle " + std::to_string(m.swizzle) + ")",
                     error))
          return false;
        mapIndex.emplace(key, maps.size());
        maps.push_back(map);
      }
    }
  }
  if (!maps.empty()) {
    const size_t bytes = maps.size() * sizeof(CUtensorMap);
    const std::string what = "tensor maps, " + formatBytes(bytes);
    const CUresult r = d.cuMemAlloc(&tensorMaps_, bytes); // at least 256-byte aligned
    if (r != CUDA_SUCCESS) {
      tensorMaps_ = 0;
      d.check(r, "cuMemAlloc(" + what + ")", error);
      return false;
    }
    if (!d.check(d.cuMemcpyHtoD(tensorMaps_, maps.data(), bytes), "cuMemcpyHtoD(" + what + ")",
                 error))
      return false;
  }

  // Kernel parameters never change: build them once. Where the driver can
  // tell, check them against the kernel's parameter list first.
  for (const auto &[name, entry] : bundle_.entries) {
    std::vector<PreparedLaunch> &launches = entries_[name];
    for (size_t i = 0; i < entry.launches.size(); ++i) {
      const Launch &l = entry.launches[i];
      if (!checkParams(l, "entries." + name + ".launches[" + std::to_string(i) + "]", error))
        return false;
      PreparedLaunch p;
      p.function = functions_[l.kernel];
      p.launch = &l;
      for (const Arg &a : l.args) {
        uint64_t slot = 0; // little-endian: 4-byte values sit in the low bytes
        switch (a.kind) {
        case Arg::Kind::Ptr: slot = address(a.buffer) + static_cast<uint64_t>(a.ivalue); break;
        case Arg::Kind::TensorMap:
          slot = tensorMaps_ + mapIndex.at(mapKey(a)) * sizeof(CUtensorMap);
          break;
        case Arg::Kind::I64: slot = static_cast<uint64_t>(a.ivalue); break;
        case Arg::Kind::I32: {
          const int32_t v = static_cast<int32_t>(a.ivalue);
          std::memcpy(&slot, &v, 4);
          break;
        }
        case Arg::Kind::F32: std::memcpy(&slot, &a.fvalue, 4); break;
        }
        p.slots.push_back(slot);
      }
      launches.push_back(std::move(p));
    }
  }
  return true;
}

bool Executor::checkParams(const Launch &l, const std::string &field, std::string &error) const {
  const Driver &d = ctx_->driver();
  if (!d.cuFuncGetParamInfo)
    return true;
  const std::string kernel = "kernel '" + bundle_.kernels[l.kernel].name + "'";
  size_t count = 0, offset = 0, size = 0;
  for (; d.cuFuncGetParamInfo(functions_[l.kernel], count, &offset, &size) == CUDA_SUCCESS; ++count) {
    if (count >= l.args.size())
      continue; // counted, reported below
    // Ptr, I64 and TensorMap (the address of the map in device memory) are 8 bytes.
    const Arg::Kind kind = l.args[count].kind;
    const size_t want = kind == Arg::Kind::I32 || kind == Arg::Kind::F32 ? 4 : 8;
    if (size != want) {
      error = field + ".args[" + std::to_string(count) + "]: " + kernel + " takes a " +
              std::to_string(size) + "-byte parameter here, the argument has " +
              std::to_string(want) + " bytes";
      if (kind == Arg::Kind::TensorMap && size == sizeof(CUtensorMap))
        error += " (a tensor_map argument passes a pointer to the map in device memory, "
                 "not the 128-byte map by value)";
      return false;
    }
  }
  if (count == 0 && !l.args.empty())
    return true; // the driver gave no information
  if (count != l.args.size()) {
    error = field + ": " + kernel + " takes " + std::to_string(count) + " parameters, the launch passes " +
            std::to_string(l.args.size());
    return false;
  }
  return true;
}

Executor::~Executor() {
  if (!ctx_)
    return;
  const Driver &d = ctx_->driver();
  if (stream_)
    d.cuStreamSynchronize(stream_);
  dropGraphs();
  if (stream_)
    d.cuStreamDestroy(stream_);
  for (const auto &[blob, m] : modules_)
    d.cuModuleUnload(m);
  if (arena_)
    d.cuMemFree(arena_);
  if (tensorMaps_)
    d.cuMemFree(tensorMaps_);
}

CUdeviceptr Executor::address(int buffer) const {
  return arena_ + bundle_.buffers[buffer].offset;
}

bool Executor::checkBuffer(int buffer, std::string &error) const {
  if (buffer >= 0 && static_cast<size_t>(buffer) < bundle_.buffers.size())
    return true;
  error = "buffer id " + std::to_string(buffer) + " out of range (" +
          std::to_string(bundle_.buffers.size()) + " buffers)";
  return false;
}

bool Executor::upload(int buffer, const st::TensorInfo &t, const uint8_t *data,
                      std::string &error) {
  if (!checkBuffer(buffer, error))
    return false;
  const Buffer &b = bundle_.buffers[buffer];
  std::vector<uint8_t> converted;
  if (!checkUpload(b, t, error))
    return false;
  if (t.dtype != b.dtype) {
    if (!convertTensor(t, data, b.dtype, converted, error))
      return false;
    data = converted.data();
  }
  const Driver &d = ctx_->driver();
  return b.bytes == 0 ||
         d.check(d.cuMemcpyHtoD(address(buffer), data, b.bytes),
                 "cuMemcpyHtoD(buffer '" + b.name + "', " + formatBytes(b.bytes) + ")", error);
}

bool Executor::fill(int buffer, uint8_t byte, std::string &error) {
  if (!checkBuffer(buffer, error))
    return false;
  const Buffer &b = bundle_.buffers[buffer];
  const Driver &d = ctx_->driver();
  return b.bytes == 0 || d.check(d.cuMemsetD8(address(buffer), byte, b.bytes),
                                 "cuMemsetD8(buffer '" + b.name + "')", error);
}

const std::vector<Executor::PreparedLaunch> *Executor::find(const std::string &entry,
                                                            std::string &error) const {
  auto it = entries_.find(entry);
  if (it != entries_.end())
    return &it->second;
  error = "the bundle has no entry '" + entry + "' (entries:";
  for (const auto &[name, e] : bundle_.entries)
    error += " " + name;
  error += ")";
  return nullptr;
}

bool Executor::enqueue(const std::string &entry, const std::vector<PreparedLaunch> &launches,
                       std::string &error, size_t first, size_t count) {
  const Driver &d = ctx_->driver();
  std::vector<void *> params;
  const size_t end = std::min(launches.size(), count > launches.size() ? launches.size()
                                                                       : first + count);
  for (size_t i = first; i < end; ++i) {
    const PreparedLaunch &p = launches[i];
    const Launch &l = *p.launch;
    params.clear();
    for (const uint64_t &slot : p.slots)
      params.push_back(const_cast<uint64_t *>(&slot));
    const CUresult r = d.cuLaunchKernel(p.function, l.grid[0], l.grid[1], l.grid[2], l.block[0],
                                        l.block[1], l.block[2], l.sharedBytes, stream_,
                                        params.data(), nullptr);
    if (!d.check(r, "entries." + entry + ".launches[" + std::to_string(i) + "] (kernel '" +
                        bundle_.kernels[l.kernel].name + "'): cuLaunchKernel",
                 error))
      return false;
  }
  return true;
}

bool Executor::setGraphs(bool on, std::string &error) {
  if (on && !ctx_->driver().hasGraphs()) {
    error = "this CUDA driver cannot capture and replay graphs (CUDA 11.4 or "
            "later is needed); run without CUDA graphs";
    return false;
  }
  if (!on)
    dropGraphs();
  graphs_ = on;
  return true;
}

void Executor::dropGraphs() {
  for (const auto &[entry, exec] : graphExecs_)
    ctx_->driver().cuGraphExecDestroy(exec);
  graphExecs_.clear();
}

bool Executor::capture(const std::string &entry, const std::vector<PreparedLaunch> &launches,
                       CUgraphExec &exec, std::string &error) {
  const Driver &d = ctx_->driver();
  const std::string what = "capturing entry '" + entry + "' as a CUDA graph: ";
  if (!d.check(d.cuStreamBeginCapture(stream_, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
               what + "cuStreamBeginCapture", error))
    return false;
  std::string launchError;
  const bool launched = enqueue(entry, launches, launchError);
  // The capture ends whatever happened, so the stream stays usable.
  CUgraph graph = nullptr;
  const CUresult ended = d.cuStreamEndCapture(stream_, &graph);
  if (!launched) {
    error = launchError;
    if (graph)
      d.cuGraphDestroy(graph);
    return false;
  }
  if (!d.check(ended, what + "cuStreamEndCapture", error))
    return false;
  const bool ok = d.check(d.cuGraphInstantiateWithFlags(&exec, graph, 0),
                          what + "cuGraphInstantiateWithFlags", error);
  d.cuGraphDestroy(graph);
  return ok;
}

bool Executor::submit(const std::string &entry, const std::vector<PreparedLaunch> &launches,
                      std::string &error) {
  if (!graphs_ || launches.empty())
    return enqueue(entry, launches, error);
  auto it = graphExecs_.find(entry);
  if (it == graphExecs_.end()) {
    CUgraphExec exec = nullptr;
    if (!capture(entry, launches, exec, error))
      return false;
    it = graphExecs_.emplace(entry, exec).first;
  }
  const Driver &d = ctx_->driver();
  return d.check(d.cuGraphLaunch(it->second, stream_),
                 "cuGraphLaunch of entry '" + entry + "'", error);
}

bool Executor::run(const std::string &entry, std::string &error) {
  const auto *launches = find(entry, error);
  const Driver &d = ctx_->driver();
  return launches && submit(entry, *launches, error) &&
         d.check(d.cuStreamSynchronize(stream_),
                 "cuStreamSynchronize after the launches of entry '" + entry + "'", error);
}

bool Executor::runTimed(const std::string &entry, int warmup, int iters, std::vector<double> &ms,
                        std::string &error) {
  ms.clear();
  const auto *launches = find(entry, error);
  if (!launches)
    return false;
  for (int i = 0; i < warmup; ++i)
    if (!run(entry, error))
      return false;
  const Driver &d = ctx_->driver();
  CUevent start = nullptr, stop = nullptr;
  bool ok = d.check(d.cuEventCreate(&start, 0), "cuEventCreate", error) &&
            d.check(d.cuEventCreate(&stop, 0), "cuEventCreate", error);
  for (int i = 0; ok && i < iters; ++i) {
    float elapsed = 0;
    ok = d.check(d.cuEventRecord(start, stream_), "cuEventRecord", error) &&
         submit(entry, *launches, error) &&
         d.check(d.cuEventRecord(stop, stream_), "cuEventRecord", error) &&
         d.check(d.cuEventSynchronize(stop),
                 "cuEventSynchronize after the launches of entry '" + entry + "'", error) &&
         d.check(d.cuEventElapsedTime(&elapsed, start, stop), "cuEventElapsedTime", error);
    if (ok)
      ms.push_back(elapsed);
  }
  if (start)
    d.cuEventDestroy(start);
  if (stop)
    d.cuEventDestroy(stop);
  return ok;
}

bool Executor::profile(const std::string &entry, int runs, std::vector<double> &launchMs,
                       std::string &error) {
  launchMs.clear();
  const auto *launches = find(entry, error);
  if (!launches || !run(entry, error)) // warm-up
    return false;
  const Driver &d = ctx_->driver();
  std::vector<CUevent> events(launches->size() + 1, nullptr);
  bool ok = true;
  for (CUevent &e : events)
    ok = ok && d.check(d.cuEventCreate(&e, 0), "cuEventCreate", error);
  launchMs.assign(launches->size(), 0.0);
  for (int r = 0; ok && r < runs; ++r) {
    ok = d.check(d.cuEventRecord(events[0], stream_), "cuEventRecord", error);
    for (size_t i = 0; ok && i < launches->size(); ++i)
      ok = enqueue(entry, *launches, error, i, 1) &&
           d.check(d.cuEventRecord(events[i + 1], stream_), "cuEventRecord", error);
    ok = ok && d.check(d.cuEventSynchronize(events.back()),
                       "cuEventSynchronize after the launches of entry '" + entry + "'", error);
    for (size_t i = 0; ok && i < launches->size(); ++i) {
      float ms = 0;
      ok = d.check(d.cuEventElapsedTime(&ms, events[i], events[i + 1]), "cuEventElapsedTime",
                   error);
      launchMs[i] += ms / runs;
    }
  }
  for (CUevent e : events)
    if (e)
      d.cuEventDestroy(e);
  return ok;
}

bool Executor::downloadRaw(int buffer, std::vector<uint8_t> &bytes, std::string &error) {
  if (!checkBuffer(buffer, error))
    return false;
  const Buffer &b = bundle_.buffers[buffer];
  try {
    bytes.resize(b.bytes);
  } catch (const std::bad_alloc &) {
    error = "out of host memory downloading buffer '" + b.name + "'";
    return false;
  }
  const Driver &d = ctx_->driver();
  return b.bytes == 0 ||
         d.check(d.cuMemcpyDtoH(bytes.data(), address(buffer), b.bytes),
                 "cuMemcpyDtoH(buffer '" + b.name + "', " + formatBytes(b.bytes) + ")", error);
}

bool Executor::downloadRange(int buffer, uint64_t offset, uint64_t size,
                             std::vector<uint8_t> &bytes, std::string &error) {
  if (!checkBuffer(buffer, error))
    return false;
  const Buffer &b = bundle_.buffers[buffer];
  if (offset > b.bytes || size > b.bytes - offset) {
    error = "bytes [" + std::to_string(offset) + ", " + std::to_string(offset) + " + " +
            std::to_string(size) + ") lie outside buffer '" + b.name + "' (" +
            std::to_string(b.bytes) + " bytes)";
    return false;
  }
  try {
    bytes.resize(size);
  } catch (const std::bad_alloc &) {
    error = "out of host memory downloading buffer '" + b.name + "'";
    return false;
  }
  const Driver &d = ctx_->driver();
  return size == 0 ||
         d.check(d.cuMemcpyDtoH(bytes.data(), address(buffer) + offset, size),
                 "cuMemcpyDtoH(buffer '" + b.name + "', " + formatBytes(size) + " at " +
                     std::to_string(offset) + ")",
                 error);
}

bool Executor::download(int buffer, std::vector<double> &values, std::string &error) {
  std::vector<uint8_t> bytes;
  if (!downloadRaw(buffer, bytes, error))
    return false;
  const Buffer &b = bundle_.buffers[buffer];
  st::TensorInfo t;
  t.name = b.name;
  t.dtype = b.dtype;
  t.shape = b.shape;
  t.bytes = b.bytes;
  try {
    values = st::toDoubles(t, bytes.data());
  } catch (const std::bad_alloc &) {
    error = "out of host memory converting buffer '" + b.name + "'";
    return false;
  }
  return true;
}

} // namespace qtune::rt
