//===- qtune-run.cpp - inspect and run qtune bundles ------------------------===//
//
//   qtune-run inspect model.qtb
//   qtune-run forward model.qtb --inputs in.safetensors --params params.safetensors
//                     --out out.safetensors [--entry forward] [--poison] [--time N]
//   qtune-run train model.qtb --inputs batch.safetensors --params params.safetensors
//                   --steps N --lr X --out trained.safetensors [--entry NAME]
//                   [--warmup W] [--schedule constant|cosine] [--min-lr Y]
//                   [--metrics FILE.jsonl] [--log-every K] [--device D]
//
// Any failure prints one line "qtune-run: error: ..." and exits with 1.
//
//===----------------------------------------------------------------------===//

#include "qtune/runtime/AtomicFile.h"
#include "qtune/runtime/Bundle.h"
#include "qtune/runtime/Cuda.h"
#include "qtune/runtime/Executor.h"
#include "qtune/runtime/Safetensors.h"
#include "qtune/runtime/Trainer.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
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
                st::shapeText(x.shape).c_str(), static_cast<unsigned long long>(x.offset),
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
/// in `ids` with the buffer's shape and a dtype `check` accepts (by default
/// one Executor::upload converts).
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

/// The executor for `b` on GPU `device`, announced on stdout.
std::unique_ptr<Executor> openExecutor(const Bundle &b, int device) {
  std::string error;
  auto ex = Executor::create(b, device, error);
  if (!ex)
    fail(error);
  const cuda::Context &ctx = ex->context();
  std::printf("device %d: %s (sm_%d), arena %s\n", ctx.ordinal(), ctx.name().c_str(),
              ctx.computeCapability(), cuda::formatBytes(b.arenaBytes).c_str());
  return ex;
}

/// Uploads the buffers `ids` from `file` (checked by openTensors).
void upload(Executor &ex, const std::vector<int> &ids, const st::File *file) {
  std::string error;
  for (int id : ids) {
    const st::TensorInfo &t = *file->find(ex.bundle().buffers[id].name);
    if (!ex.upload(id, t, file->data(t), error))
      fail(file->path() + ": " + error);
  }
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
  auto ex = openExecutor(*b, o.device);

  if (o.poison) { // outputs and temporaries start as NaN / all ones
    std::set<int> poison(entry.outputs.begin(), entry.outputs.end());
    for (size_t i = 0; i < b->buffers.size(); ++i)
      if (b->buffers[i].role == BufferRole::Output || b->buffers[i].role == BufferRole::Temporary)
        poison.insert(static_cast<int>(i));
    for (int id : poison)
      if (!ex->fill(id, 0xFF, error))
        fail(error);
  }
  upload(*ex, entry.inputs, inputs.get());
  upload(*ex, entry.params, params.get());

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
               std::string(st::dtypeName(t.dtype)) + " " + st::shapeText(t.shape);
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

// ---- train ---------------------------------------------------------------------------------

struct TrainOptions {
  std::string bundle, inputs, params, out, entry, metrics;
  std::string schedule = "constant";
  int64_t steps = 0;
  double lr = std::nan("");
  double minLr = 0;
  int64_t warmup = 0;
  int64_t logEvery = 0; ///< 0: about 20 lines per run
  int device = 0;
};

/// "a, b, c" with at most `max` names, then "... and N more".
std::string someNames(const Bundle &b, const std::vector<int> &ids, size_t max = 8) {
  std::string s;
  for (size_t i = 0; i < ids.size() && i < max; ++i)
    s += (i ? ", " : "") + b.buffers[ids[i]].name;
  if (ids.size() > max)
    s += ", ... and " + std::to_string(ids.size() - max) + " more";
  return s;
}

void train(const TrainOptions &o) {
  // Everything that can be checked without a GPU comes first.
  LrSchedule schedule;
  auto kind = parseSchedule(o.schedule);
  if (!kind)
    fail("unknown --schedule '" + o.schedule + "' (expected constant or cosine)");
  schedule.kind = *kind;
  schedule.lr = o.lr;
  schedule.minLr = o.minLr;
  schedule.warmup = o.warmup;
  schedule.steps = o.steps;
  std::string error;
  if (!checkSchedule(schedule, error))
    fail(error);
  if (o.minLr != 0 && schedule.kind != ScheduleKind::Cosine)
    fail("--min-lr applies to --schedule cosine only");

  auto b = load(o.bundle);
  std::string name;
  if (!selectTrainEntry(*b, o.entry, name, error))
    fail(o.bundle + ": " + error);
  TrainPlan plan;
  if (!planTraining(*b, name, plan, error))
    fail(o.bundle + ": " + error);
  const Entry &entry = b->entries.at(name);

  auto inputs = openTensors(*b, name, plan.batch, o.inputs, "inputs");
  auto params = openTensors(*b, name, plan.required, o.params, "params");
  if (!params && !o.params.empty()) { // only optimizer states: the file may still hold some
    params = st::File::open(o.params, error);
    if (!params)
      fail(error);
  }
  std::vector<int> loadStates, zeroStates;
  splitOptimizerStates(*b, plan, [&](const std::string &n) { return params && params->find(n); },
                       loadStates, zeroStates);
  for (int id : loadStates)
    if (!checkUpload(b->buffers[id], *params->find(b->buffers[id].name), error))
      fail(params->path() + ": " + error);

  auto ex = openExecutor(*b, o.device);

  upload(*ex, plan.batch, inputs.get());
  upload(*ex, plan.required, params.get());
  upload(*ex, loadStates, params.get());
  for (int id : zeroStates) // the arena starts zeroed; say it explicitly all the same
    if (!ex->fill(id, 0, error))
      fail(error);

  std::printf("entry '%s': %zu launches; %zu batch inputs, %zu params (%zu optimizer states)%s\n",
              name.c_str(), entry.launches.size(), plan.batch.size(), plan.saved.size(),
              plan.optimizerStates.size(), plan.step >= 0 ? "; step input" : "");
  if (!plan.optimizerStates.empty()) {
    if (!zeroStates.empty())
      std::printf("optimizer state: %zu tensors start at zero (%s)\n", zeroStates.size(),
                  someNames(*b, zeroStates).c_str());
    if (!loadStates.empty()) {
      std::printf("optimizer state: %zu tensors loaded from %s\n", loadStates.size(),
                  params->path().c_str());
      auto it = params->metadata().find("steps");
      if (it != params->metadata().end())
        std::printf("note: %s was written after %s steps; step numbers restart at 1\n",
                    params->path().c_str(), it->second.c_str());
    }
  }
  if (!plan.otherOutputs.empty())
    std::printf("note: outputs %s are neither 'loss' nor params; they are not saved\n",
                someNames(*b, plan.otherOutputs).c_str());
  std::printf("training %lld steps, lr %.3e, schedule %s", static_cast<long long>(o.steps), o.lr,
              o.schedule.c_str());
  if (schedule.kind == ScheduleKind::Cosine)
    std::printf(" (min lr %.3e)", o.minLr);
  if (o.warmup > 0)
    std::printf(", warmup %lld", static_cast<long long>(o.warmup));
  std::printf("\n");
  std::fflush(stdout);

  const int64_t logEvery = o.logEvery > 0 ? o.logEvery : std::max<int64_t>(1, (o.steps + 19) / 20);
  std::vector<StepRecord> records; // every step for --metrics; otherwise none
  if (!o.metrics.empty())
    records.reserve(static_cast<size_t>(o.steps));
  StepRecord first, last;
  auto writeMetrics = [&]() -> std::string {
    if (o.metrics.empty())
      return "";
    const std::string text = metricsJsonl(records);
    std::string why;
    if (!writeFileAtomically(o.metrics, {text}, why))
      return o.metrics + ": " + why;
    return "";
  };

  TrainLoop loop(*ex, plan, schedule);
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  for (int64_t t = 1; t <= o.steps; ++t) {
    StepRecord r;
    const bool ok = loop.step(t, r, error);
    if (!ok && r.step == t && !std::isfinite(r.loss)) { // diverged: keep the curve for a look
      if (!o.metrics.empty())
        records.push_back(r);
      const std::string metricsError = writeMetrics();
      fail(error + "; stopped without writing " + o.out +
           (o.metrics.empty() ? ""
            : metricsError.empty()
                ? " (the loss curve up to it is in " + o.metrics + ")"
                : " (and the loss curve could not be written: " + metricsError + ")"));
    }
    if (!ok)
      fail(error);
    if (!o.metrics.empty())
      records.push_back(r);
    if (t == 1)
      first = r;
    last = r;
    if (t % logEvery == 0 || t == o.steps) {
      std::printf("%s\n", progressLine(r, o.steps, elapsed()).c_str());
      std::fflush(stdout);
    }
  }
  const double seconds = elapsed();

  std::vector<st::OwnedTensor> outs;
  for (int id : plan.saved) {
    const Buffer &buf = b->buffers[id];
    st::OwnedTensor t{buf.name, buf.dtype, buf.shape, {}};
    if (!ex->downloadRaw(id, t.bytes, error))
      fail(error);
    outs.push_back(std::move(t));
  }
  if (!st::write(o.out, outs, {{"entry", name}, {"steps", std::to_string(o.steps)}}, error))
    fail(error);
  const std::string metricsError = writeMetrics();
  if (!metricsError.empty())
    fail(metricsError + " (" + o.out + " was written)");

  char wall[64];
  if (seconds < 1)
    std::snprintf(wall, sizeof wall, "%.1f ms", seconds * 1e3);
  else
    std::snprintf(wall, sizeof wall, "%.3f s", seconds);
  std::printf("trained '%s' for %lld steps in %s (%.1f steps/s); loss %s (step 1) -> %s (step "
              "%lld)\n",
              name.c_str(), static_cast<long long>(o.steps), wall,
              seconds > 0 ? static_cast<double>(o.steps) / seconds : 0.0,
              formatLoss(first.loss).c_str(), formatLoss(last.loss).c_str(),
              static_cast<long long>(o.steps));
  std::printf("wrote %s: %zu tensors (%s)\n", o.out.c_str(), outs.size(),
              outs.empty() ? "none" : someNames(*b, plan.saved).c_str());
  if (!o.metrics.empty())
    std::printf("wrote %s: %zu steps\n", o.metrics.c_str(), records.size());
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

  TrainOptions to;
  CLI::App *trainCmd =
      app.add_subcommand("train", "Run a bundle's train-step entry for N steps on the GPU");
  trainCmd->add_option("bundle", to.bundle, "Bundle file (.qtb)")->required();
  trainCmd->add_option("--inputs", to.inputs,
                       "Safetensors file with the batch (every input but lr and step)");
  trainCmd->add_option("--params", to.params,
                       "Safetensors file with the frozen and trainable params (and optimizer "
                       "states to resume from)");
  trainCmd->add_option("--steps", to.steps, "Number of steps")->required();
  trainCmd->add_option("--lr", to.lr, "Peak learning rate")->required();
  trainCmd->add_option("--out", to.out, "Safetensors file to write the trained params to")
      ->required();
  trainCmd->add_option("--entry", to.entry,
                       "Entry to run (default: the one entry named *_train_step)");
  trainCmd->add_option("--warmup", to.warmup, "Linear warmup steps (default: 0)");
  trainCmd->add_option("--schedule", to.schedule, "constant or cosine (default: constant)");
  trainCmd->add_option("--min-lr", to.minLr,
                       "Learning rate of the last step with --schedule cosine (default: 0)");
  trainCmd->add_option("--metrics", to.metrics,
                       "Write one JSON object per step to this file (.jsonl)");
  trainCmd->add_option("--log-every", to.logEvery,
                       "Print a progress line every K steps (default: about 20 lines)")
      ->check(CLI::PositiveNumber);
  trainCmd->add_option("--device", to.device, "CUDA device ordinal (default: 0)")
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
    else if (*trainCmd)
      train(to);
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
