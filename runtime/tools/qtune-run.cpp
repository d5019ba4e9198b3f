//===- qtune-run.cpp - inspect and run qtune bundles ------------------------===//
//
//   qtune-run inspect model.qtb
//   qtune-run forward model.qtb --inputs in.safetensors --params params.safetensors
//                     --out out.safetensors [--entry forward] [--poison] [--time N]
//
// Any failure prints one line "qtune-run: error: ..." and exits with 1.
//
//===----------------------------------------------------------------------===//

#include "qtune/runtime/Bundle.h"
#include "qtune/runtime/Cuda.h"
#include "qtune/runtime/Executor.h"
#include "qtune/runtime/Safetensors.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <set>

using namespace qtune;
using namespace qtune::rt;

namespace {

/// Thrown by fail(); caught in main(), which prints it and exits 1.
struct Failure {
  std::string message;
};

[[noreturn]] void fail(const std::string &message) { throw Failure{message}; }

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string dims(const std::array<uint32_t, 3> &d) {
  return "[" + std::to_string(d[0]) + "," + std::to_string(d[1]) + "," + std::to_string(d[2]) + "]";
}

std::string argText(const Bundle &b, const Arg &a) {
  char buf[64];
  switch (a.kind) {
  case Arg::Kind::Ptr: return "ptr " + b.buffers[a.buffer].name;
  case Arg::Kind::I64: return "i64 " + std::to_string(a.ivalue);
  case Arg::Kind::I32: return "i32 " + std::to_string(a.ivalue);
  case Arg::Kind::F32: std::snprintf(buf, sizeof buf, "f32 %g", a.fvalue); return buf;
  }
  return "?";
}

std::string bufferNames(const Bundle &b, const std::vector<int> &ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i)
    s += (i ? ", " : "") + b.buffers[ids[i]].name;
  return s + "]";
}

std::unique_ptr<Bundle> load(const std::string &path) {
  std::string error;
  auto bundle = loadBundle(path, error);
  if (!bundle)
    fail(error);
  return bundle;
}

// ---- inspect --------------------------------------------------------------------------

void inspect(const std::string &path) {
  auto b = load(path);
  std::printf("bundle %s: version %u, %zu bytes\n", path.c_str(), b->version, b->fileBytes.size());
  std::printf("target: %s\n", b->target.c_str());
  std::printf("arena: %llu bytes (%s)\n", static_cast<unsigned long long>(b->arenaBytes),
              cuda::formatBytes(b->arenaBytes).c_str());
  std::printf("kernels (%zu):\n", b->kernels.size());
  for (size_t i = 0; i < b->kernels.size(); ++i) {
    const Kernel &k = b->kernels[i];
    std::string cubin = k.cubin < 0 ? "none" : std::to_string(b->blob(k.cubin).size()) + " B";
    std::printf("  [%zu] %s  block %s  shared %u  ptx %zu B  cubin %s\n", i, k.name.c_str(),
                dims(k.block).c_str(), k.sharedBytes, b->blob(k.ptx).size(), cubin.c_str());
  }
  std::printf("buffers (%zu):\n", b->buffers.size());
  for (size_t i = 0; i < b->buffers.size(); ++i) {
    const Buffer &x = b->buffers[i];
    std::printf("  [%zu] %s  %s  %s %s  offset %llu  bytes %llu\n", i, x.name.c_str(),
                std::string(roleName(x.role)).c_str(), std::string(st::dtypeName(x.dtype)).c_str(),
                shapeText(x.shape).c_str(), static_cast<unsigned long long>(x.offset),
                static_cast<unsigned long long>(x.bytes));
  }
  std::printf("entries (%zu):\n", b->entries.size());
  for (const auto &[name, e] : b->entries) {
    std::printf("  %s: inputs %s, params %s, outputs %s, %zu launches\n", name.c_str(),
                bufferNames(*b, e.inputs).c_str(), bufferNames(*b, e.params).c_str(),
                bufferNames(*b, e.outputs).c_str(), e.launches.size());
    for (size_t i = 0; i < e.launches.size(); ++i) {
      const Launch &l = e.launches[i];
      std::string args;
      for (size_t a = 0; a < l.args.size(); ++a)
        args += (a ? ", " : "") + argText(*b, l.args[a]);
      std::printf("    [%zu] %s  grid %s  block %s  shared %u  args (%s)\n", i,
                  b->kernels[l.kernel].name.c_str(), dims(l.grid).c_str(), dims(l.block).c_str(),
                  l.sharedBytes, args.c_str());
    }
  }
}

// ---- forward ----------------------------------------------------------------------------

struct ForwardOptions {
  std::string bundle, inputs, params, out, entry = "forward";
  bool poison = false;
  int time = 0;
  int device = 0;
};

/// Opens `path` (if the entry needs it) and checks that it holds every buffer
/// in `ids` with the buffer's shape and a convertible dtype.
std::unique_ptr<st::File> openTensors(const Bundle &b, const std::string &entry,
                                      const std::vector<int> &ids, const std::string &path,
                                      const char *what) {
  if (ids.empty())
    return nullptr;
  if (path.empty())
    fail("entry '" + entry + "' has " + std::to_string(ids.size()) + " " + what +
         "; pass them with --" + what);
  std::string error;
  auto file = st::File::open(path, error);
  if (!file)
    fail(error);
  std::vector<std::string> missing;
  for (int id : ids)
    if (!file->find(b.buffers[id].name))
      missing.push_back(b.buffers[id].name);
  if (!missing.empty()) {
    std::string msg = path + ": missing " + std::to_string(missing.size()) + " of the " +
                      std::to_string(ids.size()) + " " + what + " of entry '" + entry + "':";
    for (const std::string &m : missing)
      msg += " " + m;
    msg += " (the file has:";
    const auto &tensors = file->tensors();
    for (size_t i = 0; i < tensors.size() && i < 20; ++i)
      msg += " " + tensors[i].name;
    if (tensors.size() > 20)
      msg += " ... and " + std::to_string(tensors.size() - 20) + " more";
    if (tensors.empty())
      msg += " nothing";
    fail(msg + ")");
  }
  for (int id : ids)
    if (!checkUpload(b.buffers[id], *file->find(b.buffers[id].name), error))
      fail(path + ": " + error);
  return file;
}

void forward(const ForwardOptions &o) {
  auto b = load(o.bundle);
  auto it = b->entries.find(o.entry);
  if (it == b->entries.end()) {
    std::string names;
    for (const auto &[name, e] : b->entries)
      names += " " + name;
    fail(o.bundle + ": no entry '" + o.entry + "' (entries:" + names + ")");
  }
  const Entry &entry = it->second;
  auto inputs = openTensors(*b, o.entry, entry.inputs, o.inputs, "inputs");
  auto params = openTensors(*b, o.entry, entry.params, o.params, "params");

  std::string error;
  auto ex = Executor::create(*b, o.device, error);
  if (!ex)
    fail(error);
  const cuda::Context &ctx = ex->context();
  std::printf("device %d: %s (sm_%d), arena %s\n", ctx.ordinal(), ctx.name().c_str(),
              ctx.computeCapability(), cuda::formatBytes(b->arenaBytes).c_str());

  if (o.poison) { // outputs and temporaries start as NaN / all ones
    std::set<int> poison(entry.outputs.begin(), entry.outputs.end());
    for (size_t i = 0; i < b->buffers.size(); ++i)
      if (b->buffers[i].role == BufferRole::Output || b->buffers[i].role == BufferRole::Temporary)
        poison.insert(static_cast<int>(i));
    for (int id : poison)
      if (!ex->fill(id, 0xFF, error))
        fail(error);
  }
  auto upload = [&](const std::vector<int> &ids, const st::File *file) {
    for (int id : ids) {
      const st::TensorInfo &t = *file->find(b->buffers[id].name);
      if (!ex->upload(id, t, file->data(t), error))
        fail(file->path() + ": " + error);
    }
  };
  upload(entry.inputs, inputs.get());
  upload(entry.params, params.get());

  const auto start = std::chrono::steady_clock::now();
  if (!ex->run(o.entry, error))
    fail(error);
  const double wallMs =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  std::vector<st::OwnedTensor> outs;
  for (int id : entry.outputs) {
    const Buffer &buf = b->buffers[id];
    st::OwnedTensor t{buf.name, st::isFloat(buf.dtype) ? st::DType::F32 : st::DType::I32,
                      buf.shape, {}};
    if (buf.dtype == t.dtype) {
      if (!ex->downloadRaw(id, t.bytes, error))
        fail(error);
    } else {
      std::vector<double> values;
      if (!ex->download(id, values, error) || !st::fromDoubles(values, t.dtype, t.bytes, error))
        fail("output '" + buf.name + "': " + error);
    }
    outs.push_back(std::move(t));
  }
  if (!st::write(o.out, outs, {{"entry", o.entry}}, error))
    fail(error);

  std::printf("entry '%s': %zu launches, %.3f ms (first run, wall clock)\n", o.entry.c_str(),
              entry.launches.size(), wallMs);
  std::string written;
  for (const st::OwnedTensor &t : outs)
    written += (written.empty() ? " " : ", ") + t.name + " " +
               std::string(st::dtypeName(t.dtype)) + " " + shapeText(t.shape);
  std::printf("wrote %s:%s\n", o.out.c_str(), outs.empty() ? " no outputs" : written.c_str());

  if (o.time > 0) {
    constexpr int kWarmup = 3;
    std::vector<double> ms;
    if (!ex->runTimed(o.entry, kWarmup, o.time, ms, error))
      fail(error);
    std::sort(ms.begin(), ms.end());
    const size_t n = ms.size();
    const double median = n % 2 ? ms[n / 2] : (ms[n / 2 - 1] + ms[n / 2]) / 2;
    std::printf("time: median %.3f ms, min %.3f ms over %zu runs (after %d warm-ups)\n", median,
                ms.front(), n, kWarmup);
  }
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"qtune-run: inspect and run qtune bundles (.qtb)"};
  app.require_subcommand(1);

  std::string inspectPath;
  CLI::App *inspectCmd = app.add_subcommand("inspect", "Print a bundle's kernels, buffers and entries");
  inspectCmd->add_option("bundle", inspectPath, "Bundle file (.qtb)")->required();

  ForwardOptions fo;
  CLI::App *forwardCmd = app.add_subcommand("forward", "Run an entry of a bundle on the GPU");
  forwardCmd->add_option("bundle", fo.bundle, "Bundle file (.qtb)")->required();
  forwardCmd->add_option("--inputs", fo.inputs, "Safetensors file with the entry's inputs");
  forwardCmd->add_option("--params", fo.params, "Safetensors file with the entry's params");
  forwardCmd->add_option("--out", fo.out, "Safetensors file to write the outputs to")->required();
  forwardCmd->add_option("--entry", fo.entry, "Entry to run (default: forward)");
  forwardCmd->add_flag("--poison", fo.poison,
                       "Fill output and temporary buffers with 0xFF bytes (NaN) before running");
  forwardCmd->add_option("--time", fo.time, "Also time N runs (after 3 warm-ups)")
      ->check(CLI::PositiveNumber);
  forwardCmd->add_option("--device", fo.device, "CUDA device ordinal (default: 0)")
      ->check(CLI::NonNegativeNumber);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp &e) {
    return app.exit(e);
  } catch (const CLI::ParseError &e) {
    std::fprintf(stderr, "qtune-run: error: %s (see qtune-run --help)\n", e.what());
    return 1;
  }
  try {
    if (*inspectCmd)
      inspect(inspectPath);
    else
      forward(fo);
  } catch (const Failure &f) {
    std::fflush(stdout);
    std::fprintf(stderr, "qtune-run: error: %s\n", f.message.c_str());
    return 1;
  } catch (const std::exception &e) {
    std::fflush(stdout);
    std::fprintf(stderr, "qtune-run: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
