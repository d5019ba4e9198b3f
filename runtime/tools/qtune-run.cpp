//===- qtune-run.cpp - inspect and run qtune bundles ------------------------===//
//
//   qtune-run inspect model.qtb
//   qtune-run forward model.qtb --inputs in.safetensors --params params.safetensors
//                     --out out.safetensors [--entry NAME] [--poison] [--time N]
//                     [--profile N] [--no-cuda-graphs]
//   qtune-run train model.qtb (--inputs batch.safetensors | --data tokens.u16)
//                   --params params.safetensors --steps N --lr X
//                   [--out trained.safetensors] [--save-dir DIR [--save-every N]
//                   [--keep K]] [--resume PATH] [--entry NAME] [--warmup W]
//                   [--schedule constant|cosine] [--min-lr Y] [--max-skips K]
//                   [--batch-accum K]
//                   [--data-format u16|u32|text] [--seed S] [--no-shuffle]
//                   [--vocab V] [--metrics FILE.jsonl] [--log-every K] [--device D]
//                   [--gpus N | --rank R --world-size W --nccl-id FILE]
//                   [--nccl-timeout SECONDS] [--profile N] [--no-cuda-graphs]
//   qtune-run eval model.qtb --params P --data FILE [--entry E] [--max-batches N]
//                  [--json]
//   qtune-run generate model.qtb --params P --prompt TEXT [--max-new-tokens N]
//                      [--temperature T] [--top-p P] [--seed S]
//
// Any failure prints one line "qtune-run: error: ..." and exits with 1.
//
//===----------------------------------------------------------------------===//

#include "qtune/runtime/AtomicFile.h"
#include "qtune/runtime/Bundle.h"
#include "qtune/runtime/Checkpoint.h"
#include "qtune/runtime/Cuda.h"
#include "qtune/runtime/Executor.h"
#include "qtune/runtime/Profile.h"
#include "qtune/runtime/Float16.h"
#include "qtune/runtime/Nccl.h"
#include "qtune/runtime/Safetensors.h"
#include "qtune/runtime/Sampling.h"
#include "qtune/runtime/TokenData.h"
#include "qtune/runtime/Trainer.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

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
  case Arg::Kind::Ptr:
    return "ptr " + b.buffers[a.buffer].name + (a.ivalue ? "+" + std::to_string(a.ivalue) : "");
  case Arg::Kind::TensorMap: {
    // e.g. "tensor_map buffer 'x' +0 8192x4096 box 256x64 swizzle 128"; the
    // row pitch only where it is not the row's own bytes.
    const TensorMapSpec &m = a.map;
    std::string s = "tensor_map buffer '" + b.buffers[a.buffer].name + "' +" +
                    std::to_string(a.ivalue) + " " + std::to_string(m.rows) + "x" +
                    std::to_string(m.cols);
    if (m.rowBytes != m.cols * 2)
      s += " row_bytes " + std::to_string(m.rowBytes);
    return s + " box " + std::to_string(m.boxRows) + "x" + std::to_string(m.boxCols) +
           " swizzle " + std::to_string(m.swizzle);
  }
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
  if (b->peft) {
    std::string targets;
    for (const std::string &t : b->peft->targetModules)
      targets += (targets.empty() ? "" : ",") + t;
    std::printf("peft: r %lld, lora_alpha %g, lora_dropout %g, target_modules %s, base '%s'\n",
                static_cast<long long>(b->peft->r), b->peft->loraAlpha, b->peft->loraDropout,
                targets.c_str(), b->peft->baseModelNameOrPath.c_str());
  }
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
      std::printf("    [%zu] %s  grid %s  block %s  shared %u  args (%s)%s\n", i,
                  b->kernels[l.kernel].name.c_str(), dims(l.grid).c_str(), dims(l.block).c_str(),
                  l.sharedBytes, args.c_str(),
                  l.family.empty() ? "" : ("  family '" + l.family + "'").c_str());
    }
  }
}

// ---- forward ----------------------------------------------------------------------------

struct ForwardOptions {
  std::string bundle, inputs, params, out, entry;
  bool poison = false;
  int time = 0;
  int profile = 0; ///< --profile N: runs timed launch by launch
  int device = 0;
  bool noGraphs = false; ///< --no-cuda-graphs
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

/// The executor for `b` on GPU `device`, announced on `log`; entries run as
/// CUDA graphs unless `noGraphs`.
std::unique_ptr<Executor> openExecutor(const Bundle &b, int device, bool noGraphs,
                                       FILE *log = stdout) {
  std::string error;
  auto ex = Executor::create(b, device, error);
  if (!ex)
    fail(error);
  if (!ex->setGraphs(!noGraphs, error))
    fail(error + " (--no-cuda-graphs)");
  const cuda::Context &ctx = ex->context();
  std::fprintf(log, "device %d: %s (sm_%d), arena %s, %s\n", ctx.ordinal(), ctx.name().c_str(),
               ctx.computeCapability(), cuda::formatBytes(b.arenaBytes).c_str(),
               ex->graphs() ? "entries replayed as CUDA graphs" : "launches one by one");
  std::fflush(log);
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

/// `runs` runs of `entry` timed launch by launch, summed per family and
/// kernel (Profile.h), on stdout.
void printProfile(Executor &ex, const Bundle &b, const std::string &entry, int runs) {
  std::string error;
  std::vector<double> launchMs;
  if (!ex.profile(entry, runs, launchMs, error))
    fail("--profile: " + error);
  const EntryProfile p = summarize(b, b.entries.at(entry), launchMs);
  std::fputs(formatProfile(p, entry, runs).c_str(), stdout);
  std::fflush(stdout);
}

void forward(const ForwardOptions &o) {
  auto b = load(o.bundle);
  // Default: the bundle's only entry, else the one named "forward".
  std::string name = o.entry;
  if (name.empty())
    name = b->entries.size() == 1 ? b->entries.begin()->first : "forward";
  auto it = b->entries.find(name);
  if (it == b->entries.end()) {
    std::string names;
    for (const auto &[name, e] : b->entries)
      names += " " + name;
    fail(o.bundle + ": no entry '" + name + "' (entries:" + names + ")");
  }
  const Entry &entry = it->second;
  auto inputs = openTensors(*b, name, entry.inputs, o.inputs, "inputs");
  auto params = openTensors(*b, name, entry.params, o.params, "params");

  std::string error;
  auto ex = openExecutor(*b, o.device, o.noGraphs);

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
  if (!ex->run(name, error))
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
  if (!st::write(o.out, outs, {{"entry", name}}, error))
    fail(error);

  std::printf("entry '%s': %zu launches, %.3f ms (first run, wall clock)\n", name.c_str(),
              entry.launches.size(), wallMs);
  std::string written;
  for (const st::OwnedTensor &t : outs)
    written += (written.empty() ? " " : ", ") + t.name + " " +
               std::string(st::dtypeName(t.dtype)) + " " + st::shapeText(t.shape);
  std::printf("wrote %s:%s\n", o.out.c_str(), outs.empty() ? " no outputs" : written.c_str());
  if (o.profile > 0)
    printProfile(*ex, *b, name, o.profile);

  if (o.time > 0) {
    constexpr int kWarmup = 3;
    std::vector<double> ms;
    if (!ex->runTimed(name, kWarmup, o.time, ms, error))
      fail(error);
    std::sort(ms.begin(), ms.end());
    const size_t n = ms.size();
    const double median = n % 2 ? ms[n / 2] : (ms[n / 2 - 1] + ms[n / 2]) / 2;
    std::printf("time: median %.3f ms, min %.3f ms over %zu runs (after %d warm-ups)\n", median,
                ms.front(), n, kWarmup);
  }
}

// ---- tensors from several files --------------------------------------------------------------

/// The tensors of several safetensors files, a checkpoint directory (or a
/// save directory, meaning its latest checkpoint) standing for its
/// qtune_state.safetensors. A name is taken from the last file that has it, so
/// `--params base.safetensors --params out/checkpoint-200` reads the frozen
/// weights from the first and the trained ones from the second.
class TensorSources {
public:
  void open(const std::vector<std::string> &paths) {
    for (const std::string &p : paths) {
      std::error_code ec;
      std::string file = p, error;
      if (std::filesystem::is_directory(p, ec)) {
        std::string checkpoint;
        if (!resolveCheckpoint(p, checkpoint, error))
          fail(error);
        file = (std::filesystem::path(checkpoint) / kStateFile).string();
      }
      auto f = st::File::open(file, error);
      if (!f)
        fail(error);
      files_.push_back(std::move(f));
    }
  }
  bool empty() const { return files_.empty(); }
  /// The file that supplies `name`, or null.
  const st::File *holder(const std::string &name) const {
    for (auto it = files_.rbegin(); it != files_.rend(); ++it)
      if ((*it)->find(name))
        return it->get();
    return nullptr;
  }
  /// "a.safetensors" or "a.safetensors, b.safetensors".
  std::string label() const {
    std::string s;
    for (const auto &f : files_)
      s += (s.empty() ? "" : ", ") + f->path();
    return s;
  }
  /// The files' tensor names, for messages.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto &f : files_)
      for (const st::TensorInfo &t : f->tensors())
        out.push_back(t.name);
    return out;
  }
  size_t size() const { return files_.size(); }

private:
  std::vector<std::unique_ptr<st::File>> files_;
};

/// Checks that `sources` (opened from --params) hold every buffer of `ids`
/// with the buffer's shape and a dtype Executor::upload takes. Messages are
/// those of openTensors.
void checkSources(const Bundle &b, const std::string &entry, const std::vector<int> &ids,
                  const TensorSources &sources, const char *what) {
  if (ids.empty())
    return;
  if (sources.empty())
    fail("entry '" + entry + "' has " + std::to_string(ids.size()) + " " + what +
         "; pass them with --" + what);
  std::vector<std::string> missing;
  for (int id : ids)
    if (!sources.holder(b.buffers[id].name))
      missing.push_back(b.buffers[id].name);
  if (!missing.empty()) {
    std::string msg = sources.label() + ": missing " + std::to_string(missing.size()) +
                      " of the " + std::to_string(ids.size()) + " " + what + " of entry '" +
                      entry + "':";
    for (const std::string &m : missing)
      msg += " " + m;
    msg += sources.size() == 1 ? " (the file has:" : " (the files have:";
    const std::vector<std::string> names = sources.names();
    for (size_t i = 0; i < names.size() && i < 20; ++i)
      msg += " " + names[i];
    if (names.size() > 20)
      msg += " ... and " + std::to_string(names.size() - 20) + " more";
    if (names.empty())
      msg += " nothing";
    fail(msg + ")");
  }
  std::string error;
  for (int id : ids) {
    const st::File *f = sources.holder(b.buffers[id].name);
    if (!checkUpload(b.buffers[id], *f->find(b.buffers[id].name), error))
      fail(f->path() + ": " + error);
  }
}

void upload(Executor &ex, const std::vector<int> &ids, const TensorSources &sources) {
  std::string error;
  for (int id : ids) {
    const st::File *f = sources.holder(ex.bundle().buffers[id].name);
    const st::TensorInfo &t = *f->find(ex.bundle().buffers[id].name);
    if (!ex.upload(id, t, f->data(t), error))
      fail(f->path() + ": " + error);
  }
}

// ---- token data ---------------------------------------------------------------------------

/// Opens --data with --data-format (or the format its extension implies).
std::unique_ptr<TokenData> openData(const std::string &path, const std::string &formatName) {
  TokenFormat format = tokenFormatForPath(path);
  if (!formatName.empty()) {
    auto f = parseTokenFormat(formatName);
    if (!f)
      fail("unknown --data-format '" + formatName + "' (expected u16, u32 or text)");
    format = *f;
  }
  std::string error;
  auto data = TokenData::open(path, format, error);
  if (!data)
    fail(error);
  return data;
}

/// Checks the data against the vocabulary the bundle tells for `entry` (or
/// --vocab): a format that cannot be what the model reads (the format given,
/// or `implied` by the file name), and every token id; prints a note when
/// neither tells a vocabulary.
void checkDataVocab(const Bundle &b, const std::string &entry, const TokenData &data,
                    int64_t vocabOption, bool implied, FILE *log) {
  std::optional<int64_t> vocab = bundleVocab(b, entry);
  if (vocab && vocabOption > 0 && *vocab != vocabOption)
    fail("--vocab " + std::to_string(vocabOption) + " differs from the vocabulary of the "
         "bundle's logits entry (" + std::to_string(*vocab) + ")");
  if (!vocab && vocabOption > 0)
    vocab = vocabOption;
  if (auto why = data.formatProblem(vocab.value_or(0), implied))
    fail(*why);
  std::string error;
  if (vocab) {
    if (!data.checkVocab(*vocab, error))
      fail(error);
  } else {
    std::fprintf(log, "note: the bundle has no logits entry to tell the vocabulary size; token "
                      "ids are not checked (pass --vocab V to check them)\n");
  }
}

std::string tokenCount(uint64_t n) {
  char buf[64];
  if (n >= 10000000)
    std::snprintf(buf, sizeof buf, "%.1fM", static_cast<double>(n) / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%llu", static_cast<unsigned long long>(n));
  return buf;
}

// ---- train ---------------------------------------------------------------------------------

struct TrainOptions {
  std::string bundle, inputs, out, entry, metrics;
  std::vector<std::string> params;
  std::string schedule = "constant";
  int64_t steps = 0;
  double lr = std::nan("");
  double minLr = 0;
  int64_t warmup = 0;
  int64_t logEvery = 0; ///< 0: about 20 lines per run
  int profile = 0; ///< --profile N: step runs timed launch by launch after training
  int device = 0;
  bool noGraphs = false; ///< --no-cuda-graphs
  // token data
  std::string data, dataFormat;
  int64_t vocab = 0;
  uint64_t seed = 0;
  bool shuffle = true;
  int64_t maxSkips = -1; ///< -1: 10 with --data, 0 with --inputs
  int64_t batchAccum = 1; ///< micro-batches per step (gradient accumulation)
  // data parallel: --gpus starts the ranks; --rank/--world-size/--nccl-id are
  // one rank's (given by --gpus, or by hand for several hosts)
  int gpus = 0;
  int rank = -1, worldSize = 0;
  std::string ncclId;
  double ncclTimeout = 600;
  // checkpoints
  std::string saveDir, resume;
  int64_t saveEvery = 0, keep = 0;
  // which options the command line gave (a resumed run takes the others from
  // the checkpoint)
  bool stepsGiven = false, lrGiven = false, minLrGiven = false, warmupGiven = false,
       scheduleGiven = false, seedGiven = false, shuffleGiven = false, dataFormatGiven = false,
       vocabGiven = false;
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

std::string scheduleText(const LrSchedule &s) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%lld steps, lr %.3e, schedule %s",
                static_cast<long long>(s.steps), s.lr, std::string(scheduleName(s.kind)).c_str());
  std::string t = buf;
  if (s.kind == ScheduleKind::Cosine) {
    std::snprintf(buf, sizeof buf, " (min lr %.3e)", s.minLr);
    t += buf;
  }
  if (s.warmup > 0)
    t += ", warmup " + std::to_string(s.warmup);
  return t;
}

/// Progress on stderr: a bar redrawn in place when stderr is a terminal,
/// otherwise plain lines on stdout every `every` steps.
class ProgressReport {
public:
  ProgressReport(bool bar, int64_t every) : bar_(bar), every_(every) {}
  bool bar() const { return bar_; }

  void step(const Progress &p, bool last) {
    if (bar_) {
      const auto now = std::chrono::steady_clock::now();
      if (!last && shown_ && now - lastDraw_ < std::chrono::milliseconds(100))
        return;
      lastDraw_ = now;
      shown_ = true;
      std::fprintf(stderr, "\r%s\033[K", progressBar(p, 20).c_str());
      if (last) {
        std::fputc('\n', stderr);
        shown_ = false;
      }
      std::fflush(stderr);
      return;
    }
    if (p.step % every_ == 0 || last) {
      std::printf("%s\n", progressLine(p).c_str());
      std::fflush(stdout);
    }
  }

  /// Prints a message line on stdout, clearing the bar first.
  void message(const std::string &text) {
    if (bar_ && shown_) {
      std::fputs("\r\033[K", stderr);
      std::fflush(stderr);
      shown_ = false;
    }
    std::printf("%s\n", text.c_str());
    std::fflush(stdout);
  }

  /// Ends the bar's line (before an error message).
  void close() {
    if (bar_ && shown_) {
      std::fputc('\n', stderr);
      std::fflush(stderr);
      shown_ = false;
    }
  }

private:
  bool bar_;
  int64_t every_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point lastDraw_{};
};

/// The NCCL unique id of a data-parallel run, through the file `path` (which
/// every rank can read: a fresh one per run): rank 0 makes it and writes it
/// atomically; the others wait for it, at most `timeout` seconds.
bool exchangeNcclId(const nccl::Library &lib, const std::string &path, int rank, double timeout,
                    nccl::UniqueId &id, std::string &error) {
  if (rank == 0) {
    if (!nccl::makeUniqueId(lib, id, error))
      return false;
    const std::string text = nccl::toHex(id) + "\n";
    if (!writeFileAtomically(path, {text}, error)) {
      error = path + ": " + error;
      return false;
    }
    return true;
  }
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    std::ifstream in(path);
    std::string text;
    if (in && std::getline(in, text) && nccl::fromHex(text, id))
      return true;
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >
        timeout) {
      error = "no NCCL id from rank 0 in " + path + " after " + std::to_string(int(timeout)) +
              " s (is rank 0 running, and is the file on a filesystem every rank sees?)";
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

/// `qtune-run train --gpus N`: starts N ranks of this same command on GPUs
/// 0..N-1 (each re-executes qtune-run with --rank, --world-size, --nccl-id and
/// --device), shows rank 0's output (the others' stderr only), and waits. When
/// a rank fails, the others are stopped (SIGTERM, then SIGKILL after 10 s)
/// and the run fails naming it; what rank 0 saved before stays intact.
[[noreturn]] void launchRanks(int gpus, const std::vector<std::string> &args) {
  char dirTemplate[] = "/tmp/qtune-nccl-XXXXXX";
  if (!::mkdtemp(dirTemplate))
    fail(std::string("cannot create a directory for the NCCL id: ") + std::strerror(errno));
  const std::string dir = dirTemplate, idFile = dir + "/nccl-id";
  std::vector<pid_t> pids;
  auto stopAll = [&](int sig) {
    for (pid_t p : pids)
      if (p > 0)
        ::kill(p, sig);
  };
  for (int r = 0; r < gpus; ++r) {
    std::vector<std::string> a = args;
    for (const std::string &extra :
         {std::string("--rank"), std::to_string(r), std::string("--world-size"),
          std::to_string(gpus), std::string("--nccl-id"), idFile, std::string("--device"),
          std::to_string(r)})
      a.push_back(extra);
    const pid_t pid = ::fork();
    if (pid < 0) {
      stopAll(SIGKILL);
      fail(std::string("fork failed: ") + std::strerror(errno));
    }
    if (pid == 0) {
      if (r > 0) { // rank 0 speaks for the run; the others only report errors
        FILE *null = std::fopen("/dev/null", "w");
        if (null)
          ::dup2(::fileno(null), STDOUT_FILENO);
      }
      std::vector<char *> argv;
      for (std::string &x : a)
        argv.push_back(x.data());
      argv.push_back(nullptr);
      ::execv("/proc/self/exe", argv.data());
      std::fprintf(stderr, "qtune-run: error: rank %d: cannot start: %s\n", r,
                   std::strerror(errno));
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  std::string failure;
  int running = gpus;
  std::chrono::steady_clock::time_point killAt;
  bool killed = false;
  while (running > 0) {
    int status = 0;
    // Blocking until a rank fails; then polling, to SIGKILL the stragglers.
    const pid_t pid = ::waitpid(-1, &status, failure.empty() ? 0 : WNOHANG);
    if (pid < 0 && errno == EINTR)
      continue;
    if (pid < 0)
      break;
    if (pid == 0) {
      if (!killed && std::chrono::steady_clock::now() >= killAt) {
        stopAll(SIGKILL);
        killed = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    const auto it = std::find(pids.begin(), pids.end(), pid);
    if (it == pids.end())
      continue;
    const int rank = int(it - pids.begin());
    *it = -1;
    --running;
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (ok || !failure.empty())
      continue;
    failure = "rank " + std::to_string(rank) +
              (WIFSIGNALED(status) ? " was killed by signal " + std::to_string(WTERMSIG(status))
                                   : " exited with status " + std::to_string(WEXITSTATUS(status)));
    // Stop the others: politely, then for good after 10 s.
    stopAll(SIGTERM);
    killAt = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (!failure.empty())
    fail("data-parallel run of " + std::to_string(gpus) + " ranks failed: " + failure +
         "; the other ranks were stopped (checkpoints rank 0 wrote before are intact)");
  std::fflush(stdout);
  std::exit(0);
}

void train(const TrainOptions &given) {
  std::string error;
  TrainOptions o = given;
  // ---- options that need no file ----
  if (!o.data.empty() && !o.inputs.empty())
    fail("--data and --inputs exclude each other: --data draws input_ids and labels from a token "
         "file, --inputs reads a fixed batch");
  if (o.data.empty() &&
      (o.dataFormatGiven || o.vocabGiven || o.seedGiven || o.shuffleGiven))
    fail("--data-format, --vocab, --seed and --shuffle/--no-shuffle apply to --data only");
  if (o.out.empty() && o.saveDir.empty())
    fail("nothing would be saved: pass --out FILE, --save-dir DIR or both");
  if (o.saveDir.empty() && (o.saveEvery > 0 || o.keep > 0))
    fail("--save-every and --keep need --save-dir");
  const bool parallel = o.worldSize > 0;
  if (parallel != (o.rank >= 0) || parallel != !o.ncclId.empty())
    fail("--rank, --world-size and --nccl-id go together (one rank of a data-parallel run; "
         "--gpus N starts the ranks of one host itself)");
  if (parallel && o.rank >= o.worldSize)
    fail("--rank " + std::to_string(o.rank) + " is outside --world-size " +
         std::to_string(o.worldSize));
  if (parallel && o.data.empty())
    fail("data-parallel training needs --data: every rank draws its shard of each batch from "
         "the token file");
  if (!(o.ncclTimeout > 0))
    fail("--nccl-timeout must be positive");
  // Only rank 0 writes metrics, checkpoints and --out.
  const bool writer = !parallel || o.rank == 0;
  if (!writer) {
    o.metrics.clear();
    o.out.clear();
    o.saveDir.clear();
    o.saveEvery = o.keep = 0;
  }

  // ---- the checkpoint to resume from ----
  const bool resuming = !o.resume.empty();
  LoadedCheckpoint ckpt;
  if (resuming) {
    std::string dir;
    if (!resolveCheckpoint(o.resume, dir, error) || !loadCheckpoint(dir, ckpt, error))
      fail(error);
  }

  // ---- the schedule: the checkpoint's, with what the command line gives ----
  LrSchedule schedule = resuming ? ckpt.state.schedule : LrSchedule{};
  if (!resuming && !o.stepsGiven)
    fail("--steps is required (a run resumed with --resume takes it from the checkpoint)");
  if (!resuming && !o.lrGiven)
    fail("--lr is required (a run resumed with --resume takes it from the checkpoint)");
  if (o.scheduleGiven) {
    auto kind = parseSchedule(o.schedule);
    if (!kind)
      fail("unknown --schedule '" + o.schedule + "' (expected constant or cosine)");
    schedule.kind = *kind;
  }
  if (o.stepsGiven)
    schedule.steps = o.steps;
  if (o.lrGiven)
    schedule.lr = o.lr;
  if (o.minLrGiven)
    schedule.minLr = o.minLr;
  if (o.warmupGiven)
    schedule.warmup = o.warmup;
  if (resuming && !o.minLrGiven && schedule.kind == ScheduleKind::Constant)
    schedule.minLr = 0;
  if (!checkSchedule(schedule, error))
    fail(error);
  if (o.minLrGiven && o.minLr != 0 && schedule.kind != ScheduleKind::Cosine)
    fail("--min-lr applies to --schedule cosine only");
  const int64_t startStep = resuming ? ckpt.state.step : 0;
  if (startStep >= schedule.steps)
    fail(ckpt.dir + " is at step " + std::to_string(startStep) + " of " +
         std::to_string(schedule.steps) + " already; pass --steps above " +
         std::to_string(startStep) + " to train further");
  const int64_t maxSkips = o.maxSkips >= 0 ? o.maxSkips : (o.data.empty() ? 0 : 10);

  // ---- the bundle and its entry ----
  auto b = load(o.bundle);
  if (resuming && !o.entry.empty() && o.entry != ckpt.state.entry)
    fail(ckpt.dir + " trained entry '" + ckpt.state.entry + "', not --entry '" + o.entry + "'");
  std::string name;
  if (!selectTrainEntry(*b, resuming ? ckpt.state.entry : o.entry, name, error))
    fail(o.bundle + ": " + error);
  TrainPlan plan;
  if (!planTraining(*b, name, plan, error))
    fail(o.bundle + ": " + error);
  const Entry &entry = b->entries.at(name);
  const BundleFingerprint fingerprint = fingerprintBytes(b->fileBytes);
  auto fingerprintText = [](const BundleFingerprint &f) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%llu bytes, fnv1a64 %016llx",
                  static_cast<unsigned long long>(f.bytes),
                  static_cast<unsigned long long>(f.fnv1a64));
    return std::string(buf);
  };
  if (resuming && !(fingerprint == ckpt.state.bundle))
    fail(ckpt.dir + " was written for bundle " + ckpt.state.bundlePath + " (" +
         fingerprintText(ckpt.state.bundle) + "), but " + o.bundle + " differs (" +
         fingerprintText(fingerprint) + "); resume with the bundle it was trained with");

  // ---- the batches ----
  std::unique_ptr<TokenData> data;
  std::unique_ptr<BatchLoader> loader;
  std::unique_ptr<st::File> inputs;
  if (resuming && ckpt.state.data && o.data.empty())
    fail(ckpt.dir + " was trained on --data " + ckpt.state.data->path +
         "; pass --data to resume it");
  if (resuming && !ckpt.state.data && !o.data.empty())
    fail(ckpt.dir + " was trained on a fixed batch (--inputs), not on --data");
  if (!o.data.empty()) {
    if (!planTokenInputs(*b, name, plan.batch, /*needLabels=*/true, plan.tokens, error))
      fail(o.bundle + ": " + error);
    if (plan.batch.size() != 2)
      fail(o.bundle + ": entry '" + name + "' takes " + someNames(*b, plan.batch) +
           " besides lr and step; --data supplies only input_ids and labels");
    std::string formatName = o.dataFormat;
    if (resuming && formatName.empty())
      formatName = std::string(tokenFormatName(ckpt.state.data->format));
    data = openData(o.data, formatName);
    uint64_t seed = o.seed;
    bool shuffle = o.shuffle;
    if (resuming) {
      const DataState &d = *ckpt.state.data;
      if (data->format() != d.format || data->size() != d.tokens)
        fail(o.data + ": " + tokenCount(data->size()) + " " +
             std::string(tokenFormatName(data->format())) + " tokens, but " + ckpt.dir +
             " was trained on " + tokenCount(d.tokens) + " " +
             std::string(tokenFormatName(d.format)) + " tokens (" + d.path +
             "); resume with the same data");
      if (o.seedGiven && o.seed != d.loader.seed)
        fail("--seed " + std::to_string(o.seed) + " differs from the checkpoint's seed " +
             std::to_string(d.loader.seed) + "; leave it out to resume");
      if (o.shuffleGiven && o.shuffle != d.loader.shuffle)
        fail(std::string(o.shuffle ? "--shuffle" : "--no-shuffle") +
             " differs from the checkpoint (" + (d.loader.shuffle ? "shuffled" : "not shuffled") +
             "); leave it out to resume");
      seed = d.loader.seed;
      shuffle = d.loader.shuffle;
    }
    checkDataVocab(*b, name, *data, o.vocab, /*implied=*/formatName.empty(), stdout);
    loader = BatchLoader::create(*data, plan.tokens.batch, plan.tokens.seqLen, shuffle, seed,
                                 error);
    if (!loader)
      fail(error);
    if (resuming && !loader->restore(ckpt.state.data->loader, error))
      fail(ckpt.dir + ": " + error);
    if (parallel && !loader->shard(o.rank, o.worldSize, error))
      fail(error);
  } else {
    inputs = openTensors(*b, name, plan.batch, o.inputs, "inputs");
  }

  // ---- params: frozen from --params; trainable and optimizer states from
  // --params (or zero), or all from the checkpoint when resuming ----
  TensorSources params;
  params.open(o.params);
  const std::vector<int> checkpointed = checkpointedParams(*b, plan);
  std::vector<int> fromParams, loadStates, zeroStates;
  if (resuming) {
    for (int id : plan.required)
      if (b->buffers[id].role != BufferRole::Trainable)
        fromParams.push_back(id);
    checkSources(*b, name, fromParams, params, "params");
    for (int id : checkpointed) {
      const Buffer &buf = b->buffers[id];
      const st::TensorInfo *t = ckpt.tensors->find(buf.name);
      if (!t)
        fail(ckpt.tensors->path() + ": no tensor '" + buf.name + "' (" +
             std::string(roleName(buf.role)) + " " + std::string(st::dtypeName(buf.dtype)) + " " +
             st::shapeText(buf.shape) + ")");
      if (t->dtype != buf.dtype || t->shape != buf.shape)
        fail(ckpt.tensors->path() + ": tensor '" + buf.name + "' is " +
             std::string(st::dtypeName(t->dtype)) + " " + st::shapeText(t->shape) +
             ", but buffer '" + buf.name + "' is " + std::string(st::dtypeName(buf.dtype)) + " " +
             st::shapeText(buf.shape));
    }
  } else {
    fromParams = plan.required;
    checkSources(*b, name, fromParams, params, "params");
    splitOptimizerStates(*b, plan, [&](const std::string &n) { return params.holder(n) != nullptr; },
                         loadStates, zeroStates);
    for (int id : loadStates) {
      const st::File *f = params.holder(b->buffers[id].name);
      if (!checkUpload(b->buffers[id], *f->find(b->buffers[id].name), error))
        fail(f->path() + ": " + error);
    }
  }

  // ---- the PEFT adapter that checkpoints carry ----
  std::vector<int> lora;
  if (!o.saveDir.empty()) {
    std::vector<int> trainable;
    for (int id : plan.required)
      if (b->buffers[id].role == BufferRole::Trainable)
        trainable.push_back(id);
    if (b->peft) {
      if (!planAdapter(*b, trainable, *b->peft, lora, error))
        fail(o.bundle + ": " + error);
      if (lora.empty())
        std::printf("note: the bundle has a \"peft\" header but no trainable "
                    "*.lora_A.weight/*.lora_B.weight params; checkpoints hold no PEFT adapter\n");
    } else {
      bool anyLora = false;
      for (int id : trainable)
        anyLora = anyLora || isLoraParam(b->buffers[id].name);
      if (anyLora)
        std::printf("note: the bundle has LoRA params but no \"peft\" header; checkpoints "
                    "hold no PEFT adapter\n");
    }
  }

  // ---- the GPU (and the other ranks) ----
  auto ex = openExecutor(*b, o.device, o.noGraphs);
  std::unique_ptr<nccl::Communicator> comm;
  if (parallel) {
    const nccl::Library *lib = nccl::loadLibrary(error);
    if (!lib)
      fail(error);
    nccl::UniqueId id;
    if (!exchangeNcclId(*lib, o.ncclId, o.rank, o.ncclTimeout, id, error))
      fail("rank " + std::to_string(o.rank) + ": " + error);
    comm = nccl::Communicator::create(*lib, ex->context(), ex->stream(), o.rank, o.worldSize, id,
                                      o.ncclTimeout, error);
    if (!comm)
      fail(error);
    if (writer)
      std::printf("data parallel: %d ranks (NCCL %s), rank 0 on %s; each rank takes %lld of "
                  "the %lld sequences of every batch\n",
                  o.worldSize, nccl::version(*lib).c_str(), ex->context().name().c_str(),
                  static_cast<long long>(plan.tokens.batch),
                  static_cast<long long>(plan.tokens.batch * o.worldSize));
  }
  if (inputs)
    upload(*ex, plan.batch, inputs.get());
  upload(*ex, fromParams, params);
  if (resuming) {
    for (int id : checkpointed) {
      const st::TensorInfo &t = *ckpt.tensors->find(b->buffers[id].name);
      if (!ex->upload(id, t, ckpt.tensors->data(t), error))
        fail(ckpt.tensors->path() + ": " + error);
    }
  } else {
    upload(*ex, loadStates, params);
    for (int id : zeroStates) // the arena starts zeroed; say it explicitly all the same
      if (!ex->fill(id, 0, error))
        fail(error);
  }

  std::printf("entry '%s': %zu launches; %zu batch inputs, %zu params (%zu optimizer states)%s\n",
              name.c_str(), entry.launches.size(), plan.batch.size(), plan.saved.size(),
              plan.optimizerStates.size(), plan.step >= 0 ? "; step input" : "");
  if (resuming) {
    std::printf("resuming %s: step %lld, %zu trainable params and optimizer states\n",
                ckpt.dir.c_str(), static_cast<long long>(startStep), checkpointed.size());
    if (!(schedule.kind == ckpt.state.schedule.kind && schedule.lr == ckpt.state.schedule.lr &&
          schedule.minLr == ckpt.state.schedule.minLr &&
          schedule.warmup == ckpt.state.schedule.warmup &&
          schedule.steps == ckpt.state.schedule.steps))
      std::printf("note: the schedule differs from the checkpoint's (%s); the remaining steps "
                  "follow this run's\n",
                  scheduleText(ckpt.state.schedule).c_str());
  } else if (!plan.optimizerStates.empty()) {
    if (!zeroStates.empty())
      std::printf("optimizer state: %zu tensors start at zero (%s)\n", zeroStates.size(),
                  someNames(*b, zeroStates).c_str());
    if (!loadStates.empty()) {
      const st::File *f = params.holder(b->buffers[loadStates.front()].name);
      std::printf("optimizer state: %zu tensors loaded from %s\n", loadStates.size(),
                  params.label().c_str());
      auto it = f->metadata().find("steps");
      if (it != f->metadata().end())
        std::printf("note: %s was written after %s steps; step numbers restart at 1 (--resume "
                    "a checkpoint to continue them)\n",
                    f->path().c_str(), it->second.c_str());
    }
  }
  if (!plan.otherOutputs.empty())
    std::printf("note: outputs %s are neither 'loss' nor params; they are not saved\n",
                someNames(*b, plan.otherOutputs).c_str());
  if (loader)
    std::printf("data %s: %s %s tokens, %llu windows of %lld + 1, batches of %lld (%s, seed "
                "%llu)\n",
                data->path().c_str(), tokenCount(data->size()).c_str(),
                std::string(tokenFormatName(data->format())).c_str(),
                static_cast<unsigned long long>(loader->windows()),
                static_cast<long long>(plan.tokens.seqLen), static_cast<long long>(plan.tokens.batch),
                loader->state().shuffle ? "shuffled" : "in order",
                static_cast<unsigned long long>(loader->state().seed));
  std::printf("training %s%s\n", scheduleText(schedule).c_str(),
              resuming ? (", from step " + std::to_string(startStep + 1)).c_str() : "");
  std::fflush(stdout);

  // ---- the loop ----
  const int64_t runSteps = schedule.steps - startStep;
  const int64_t logEvery = o.logEvery > 0 ? o.logEvery : std::max<int64_t>(1, (runSteps + 19) / 20);
  ProgressReport report(::isatty(STDERR_FILENO) == 1, logEvery);
  std::vector<StepRecord> records; // every step for --metrics; otherwise none
  StepRecord first, last;
  bool haveFirst = false;
  int64_t tokensSeen = 0;
  auto writeMetrics = [&]() -> std::string {
    if (o.metrics.empty())
      return "";
    const std::string text = metricsJsonl(records);
    std::string why;
    if (!writeFileAtomically(o.metrics, {text}, why))
      return o.metrics + ": " + why;
    return "";
  };
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };

  auto saveCheckpoint = [&](const TrainProgress &p, std::string &why) -> bool {
    Checkpoint c;
    c.state.step = p.step;
    c.state.skipped = (resuming ? ckpt.state.skipped : 0) + p.skipped;
    c.state.entry = name;
    c.state.bundlePath = o.bundle;
    c.state.bundle = fingerprint;
    c.state.schedule = schedule;
    if (loader)
      c.state.data = DataState{o.data, data->format(), data->size(), plan.tokens.batch,
                               plan.tokens.seqLen, loader->state()};
    uint64_t bytes = 0;
    for (int id : checkpointed) {
      const Buffer &buf = b->buffers[id];
      st::OwnedTensor t{buf.name, buf.dtype, buf.shape, {}};
      if (!ex->downloadRaw(id, t.bytes, why))
        return false;
      bytes += t.bytes.size();
      c.tensors.push_back(std::move(t));
    }
    if (!lora.empty()) {
      c.peft = b->peft;
      for (int id : lora)
        c.adapterNames.push_back(b->buffers[id].name);
    }
    std::string written;
    if (!writeCheckpoint(o.saveDir, c, written, why))
      return false;
    std::vector<std::string> removed;
    if (o.keep > 0 && !pruneCheckpoints(o.saveDir, o.keep, written, removed, why))
      return false;
    std::string msg = "saved " + written + " (" + std::to_string(c.tensors.size()) +
                      " tensors, " + cuda::formatBytes(bytes) +
                      (lora.empty() ? "" : "; PEFT adapter of " + std::to_string(lora.size()) +
                                               " tensors") +
                      ")";
    for (const std::string &r : removed)
      msg += "; removed " + r;
    report.message(msg);
    const std::string metricsError = writeMetrics(); // the curve so far survives a crash
    if (!metricsError.empty()) {
      why = metricsError;
      return false;
    }
    return true;
  };

  TrainLoop loop(*ex, plan);
  TrainHooks hooks;
  hooks.step = [&](int64_t t, double lr, const TokenBatch *batch, StepRecord &r,
                   std::string &why) { return loop.step(t, lr, batch, r, why); };
  // Gradient accumulation: micro-batches through <fn>_accumulate, then <fn>_apply.
  AccumulationPlan accPlan;
  std::unique_ptr<AccumulationLoop> accLoop;
  if (o.batchAccum > 1 || parallel) {
    if (!loader)
      fail("--batch-accum needs --data (micro-batches come from the token file)");
    if (!planAccumulation(*b, name, accPlan, error))
      fail(error + (parallel ? "; data-parallel training sums the ranks' accumulated "
                               "gradients between the two"
                             : ""));
    accLoop = std::make_unique<AccumulationLoop>(*ex, accPlan, *loader, o.batchAccum, comm.get());
    if (!accLoop->reset(error))
      fail(error);
    if (o.batchAccum > 1 && writer)
      std::printf("gradient accumulation: %lld micro-batches of %lld x %lld tokens per step "
                "('%s', then '%s')\n",
                static_cast<long long>(o.batchAccum), static_cast<long long>(plan.tokens.batch),
                static_cast<long long>(plan.tokens.seqLen), accPlan.accumulate.c_str(),
                accPlan.apply.c_str());
    hooks.step = [&](int64_t t, double lr, const TokenBatch *batch, StepRecord &r,
                     std::string &why) { return accLoop->step(t, lr, *batch, r, why); };
  }
  if (!o.saveDir.empty())
    hooks.save = saveCheckpoint;
  hooks.onStep = [&](const StepRecord &r, const TrainProgress &p) {
    if (!o.metrics.empty())
      records.push_back(r);
    tokensSeen += r.tokens;
    if (r.skipped) {
      report.message("step " + std::to_string(r.step) + ": loss is " + formatLoss(r.loss) +
                     "; skipped (" + std::to_string(p.skipped) + " so far)");
      return;
    }
    if (!haveFirst) {
      first = r;
      haveFirst = true;
    }
    last = r;
    Progress pr;
    pr.step = p.step;
    pr.steps = schedule.steps;
    pr.loss = r.loss;
    pr.lr = r.lr;
    pr.elapsedSeconds = elapsed();
    pr.stepsDone = p.step - startStep;
    pr.tokensPerSecond =
        pr.elapsedSeconds > 0 ? static_cast<double>(tokensSeen) / pr.elapsedSeconds : 0;
    pr.skipped = p.skipped;
    report.step(pr, p.step == schedule.steps);
  };

  TrainRunConfig config;
  config.schedule = schedule;
  config.startStep = startStep;
  config.maxSkips = maxSkips;
  config.saveEvery = o.saveEvery;
  const TrainResult result = runTraining(config, loader.get(), hooks);
  const double seconds = elapsed();
  report.close();

  if (result.outcome == TrainOutcome::TooManySkips) {
    const std::string metricsError = writeMetrics();
    std::string what;
    if (!o.out.empty())
      what = o.out;
    if (!o.saveDir.empty())
      what += what.empty() ? "a checkpoint" : " or a checkpoint";
    fail(result.error + "; stopped without writing " + what +
         (o.metrics.empty() ? ""
          : metricsError.empty()
              ? " (the loss curve up to it is in " + o.metrics + ")"
              : " (and the loss curve could not be written: " + metricsError + ")"));
  }
  if (result.outcome == TrainOutcome::Failed) {
    (void)writeMetrics();
    fail(result.error);
  }

  // ---- the end: the last checkpoint, --out, the metrics ----
  if (!o.saveDir.empty() && !saveCheckpoint(result.progress, error))
    fail("checkpoint after step " + std::to_string(result.progress.step) + ": " + error);
  std::vector<st::OwnedTensor> outs;
  if (!o.out.empty()) {
    for (int id : plan.saved) {
      const Buffer &buf = b->buffers[id];
      st::OwnedTensor t{buf.name, buf.dtype, buf.shape, {}};
      if (!ex->downloadRaw(id, t.bytes, error))
        fail(error);
      outs.push_back(std::move(t));
    }
    if (!st::write(o.out, outs,
                   {{"entry", name}, {"steps", std::to_string(schedule.steps)}}, error))
      fail(error);
  }
  const std::string metricsError = writeMetrics();
  if (!metricsError.empty())
    fail(metricsError + (o.out.empty() ? "" : " (" + o.out + " was written)"));

  char wall[64];
  if (seconds < 1)
    std::snprintf(wall, sizeof wall, "%.1f ms", seconds * 1e3);
  else
    std::snprintf(wall, sizeof wall, "%.3f s", seconds);
  std::printf("trained '%s' for %lld steps in %s (%.1f steps/s", name.c_str(),
              static_cast<long long>(runSteps), wall,
              seconds > 0 ? static_cast<double>(runSteps) / seconds : 0.0);
  if (tokensSeen > 0)
    std::printf(", %s tok/s",
                formatRate(seconds > 0 ? static_cast<double>(tokensSeen) / seconds : 0).c_str());
  std::printf("); loss %s (step %lld) -> %s (step %lld)\n", formatLoss(first.loss).c_str(),
              static_cast<long long>(first.step), formatLoss(last.loss).c_str(),
              static_cast<long long>(last.step));
  if (result.progress.skipped > 0)
    std::printf("skipped %lld step%s with a non-finite loss\n",
                static_cast<long long>(result.progress.skipped),
                result.progress.skipped == 1 ? "" : "s");
  if (!o.out.empty())
    std::printf("wrote %s: %zu tensors (%s)\n", o.out.c_str(), outs.size(),
                outs.empty() ? "none" : someNames(*b, plan.saved).c_str());
  if (!o.metrics.empty())
    std::printf("wrote %s: %zu steps\n", o.metrics.c_str(), records.size());
  // After everything is written: these steps change only the GPU's copy.
  if (o.profile > 0)
    printProfile(*ex, *b, name, o.profile);
}

// ---- eval ---------------------------------------------------------------------------------

struct EvalOptions {
  std::string bundle, data, dataFormat, entry;
  std::vector<std::string> params;
  int64_t maxBatches = 0; ///< 0: every whole batch
  int64_t vocab = 0;
  bool json = false;
  int device = 0;
  bool noGraphs = false; ///< --no-cuda-graphs
};

void eval(const EvalOptions &o) {
  std::string error;
  FILE *log = o.json ? stderr : stdout; // --json: stdout holds the JSON line alone
  auto b = load(o.bundle);
  std::string name;
  if (!selectLossEntry(*b, o.entry, name, error))
    fail(o.bundle + ": " + error);
  LossPlan plan;
  if (!planLoss(*b, name, plan, error))
    fail(o.bundle + ": " + error);
  auto data = openData(o.data, o.dataFormat);
  checkDataVocab(*b, name, *data, o.vocab, /*implied=*/o.dataFormat.empty(), log);
  auto loader = BatchLoader::create(*data, plan.tokens.batch, plan.tokens.seqLen,
                                    /*shuffle=*/false, 0, error);
  if (!loader)
    fail(error);
  const uint64_t whole = loader->windows() / static_cast<uint64_t>(plan.tokens.batch);
  if (whole == 0)
    fail(o.data + ": " + std::to_string(loader->windows()) +
         (loader->windows() == 1 ? " window of " : " windows of ") +
         std::to_string(plan.tokens.seqLen + 1) + " tokens " +
         (loader->windows() == 1 ? "is" : "are") + " fewer than one batch of " +
         std::to_string(plan.tokens.batch));
  const uint64_t batches =
      o.maxBatches > 0 ? std::min<uint64_t>(whole, static_cast<uint64_t>(o.maxBatches)) : whole;
  TensorSources params;
  params.open(o.params);
  checkSources(*b, name, plan.params, params, "params");

  auto ex = openExecutor(*b, o.device, o.noGraphs, log);
  upload(*ex, plan.params, params);
  const auto start = std::chrono::steady_clock::now();
  double sum = 0;
  TokenBatch batch;
  for (uint64_t k = 0; k < batches; ++k) {
    loader->next(batch);
    std::vector<double> loss;
    if (!uploadTokens(*ex, plan.tokens, batch, error) || !ex->run(name, error) ||
        !ex->download(plan.loss, loss, error))
      fail("batch " + std::to_string(k + 1) + ": " + error);
    const double l = loss.empty() ? std::nan("") : loss.front();
    if (!std::isfinite(l))
      fail("batch " + std::to_string(k + 1) + " (windows " + std::to_string(k * plan.tokens.batch) +
           ".." + std::to_string((k + 1) * plan.tokens.batch - 1) + " of " + o.data +
           "): loss is " + formatLoss(l));
    sum += l;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double mean = sum / static_cast<double>(batches);
  const double ppl = std::exp(mean);
  const uint64_t tokens = batches * static_cast<uint64_t>(plan.tokens.batch * plan.tokens.seqLen);
  if (o.json) {
    nlohmann::ordered_json j;
    j["entry"] = name;
    j["data"] = o.data;
    j["batches"] = batches;
    j["tokens"] = tokens;
    j["loss"] = mean;
    j["perplexity"] = ppl; // null when it overflows
    j["seconds"] = seconds;
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  const uint64_t unused = loader->windows() - batches * static_cast<uint64_t>(plan.tokens.batch);
  std::printf("eval '%s': %llu batches of %lld x %lld tokens (%s tokens) from %s in %.3f s\n",
              name.c_str(), static_cast<unsigned long long>(batches),
              static_cast<long long>(plan.tokens.batch), static_cast<long long>(plan.tokens.seqLen),
              tokenCount(tokens).c_str(), o.data.c_str(), seconds);
  if (unused > 0)
    std::printf(unused == 1 ? "note: %llu of the %llu windows was not evaluated (%s)\n"
                            : "note: %llu of the %llu windows were not evaluated (%s)\n",
                static_cast<unsigned long long>(unused),
                static_cast<unsigned long long>(loader->windows()),
                batches < whole ? "--max-batches" : "not a whole batch");
  std::printf("loss %s  perplexity %.4f\n", formatLoss(mean).c_str(), ppl);
}

// ---- generate -----------------------------------------------------------------------------

struct GenerateOptions {
  std::string bundle, prompt, entry;
  std::vector<std::string> params;
  int64_t maxNewTokens = 64;
  double temperature = 1.0;
  double topP = 1.0;
  uint64_t seed = 0;
  int device = 0;
  bool noGraphs = false; ///< --no-cuda-graphs
};

void generate(const GenerateOptions &o) {
  std::string error;
  SamplingOptions sampling;
  sampling.temperature = o.temperature;
  sampling.topP = o.topP;
  if (!checkSampling(sampling, error))
    fail(error);
  if (o.maxNewTokens < 0)
    fail("--max-new-tokens must not be negative (got " + std::to_string(o.maxNewTokens) + ")");
  if (o.prompt.empty())
    fail("--prompt is empty; generation needs at least one byte of context");
  auto b = load(o.bundle);
  std::string name;
  if (!selectLogitsEntry(*b, o.entry, name, error))
    fail(o.bundle + ": " + error);
  LogitsPlan plan;
  if (!planLogits(*b, name, plan, error))
    fail(o.bundle + ": " + error);
  std::vector<int64_t> tokens;
  for (size_t i = 0; i < o.prompt.size(); ++i) {
    const int64_t t = static_cast<unsigned char>(o.prompt[i]);
    if (t >= plan.vocab) {
      char buf[160];
      std::snprintf(buf, sizeof buf,
                    "--prompt: byte 0x%02llx at offset %zu is out of range for the model's "
                    "vocabulary of %lld tokens",
                    static_cast<unsigned long long>(t), i, static_cast<long long>(plan.vocab));
      fail(buf);
    }
    tokens.push_back(t);
  }
  TensorSources params;
  params.open(o.params);
  checkSources(*b, name, plan.params, params, "params");

  auto ex = openExecutor(*b, o.device, o.noGraphs, stderr); // stdout holds the text alone
  upload(*ex, plan.params, params);
  const int64_t B = plan.tokens.batch, S = plan.tokens.seqLen, V = plan.vocab;
  const Buffer &logits = b->buffers[plan.logits];
  const uint64_t elem = st::dtypeSize(logits.dtype);
  TokenBatch batch;
  batch.batch = B;
  batch.seqLen = S;
  batch.inputIds.assign(static_cast<size_t>(B * S), 0);
  std::vector<uint8_t> raw;
  std::vector<float> row(static_cast<size_t>(V));
  Rng rng(o.seed);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t k = 0; k < o.maxNewTokens; ++k) {
    // Row 0 holds the last S tokens of the context, right-padded with 0.
    const int64_t len = std::min<int64_t>(S, static_cast<int64_t>(tokens.size()));
    std::fill(batch.inputIds.begin(), batch.inputIds.end(), 0);
    for (int64_t s = 0; s < len; ++s)
      batch.inputIds[static_cast<size_t>(s)] =
          static_cast<int32_t>(tokens[tokens.size() - static_cast<size_t>(len) + s]);
    const uint64_t offset = static_cast<uint64_t>(len - 1) * static_cast<uint64_t>(V) * elem;
    if (!uploadTokens(*ex, plan.tokens, batch, error) || !ex->run(name, error) ||
        !ex->downloadRange(plan.logits, offset, static_cast<uint64_t>(V) * elem, raw, error))
      fail("new token " + std::to_string(k + 1) + ": " + error);
    for (int64_t v = 0; v < V; ++v) {
      if (logits.dtype == st::DType::F32) {
        std::memcpy(&row[v], raw.data() + 4 * v, 4);
      } else {
        uint16_t bits;
        std::memcpy(&bits, raw.data() + 2 * v, 2);
        row[v] = bf16ToFloat(bits);
      }
    }
    int64_t next = 0;
    if (!sampleToken(row.data(), row.size(), sampling, rng, next, error))
      fail("new token " + std::to_string(k + 1) + ": " + error);
    tokens.push_back(next);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s\n", tokensToText(tokens).c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "generated %lld tokens in %.3f s (%.1f tok/s; temperature %g, top-p %g, "
                       "seed %llu)\n",
               static_cast<long long>(o.maxNewTokens), seconds,
               seconds > 0 ? static_cast<double>(o.maxNewTokens) / seconds : 0.0, o.temperature,
               o.topP, static_cast<unsigned long long>(o.seed));
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
  forwardCmd->add_option("--entry", fo.entry, "Entry to run (default: the only one, else forward)");
  forwardCmd->add_flag("--poison", fo.poison,
                       "Fill output and temporary buffers with 0xFF bytes (NaN) before running");
  forwardCmd->add_option("--time", fo.time, "Also time N runs (after 3 warm-ups)")
      ->check(CLI::PositiveNumber);
  forwardCmd->add_option("--device", fo.device, "CUDA device ordinal (default: 0)")
      ->check(CLI::NonNegativeNumber);
  forwardCmd->add_option("--profile", fo.profile,
                         "Then time N runs launch by launch and print the time per op family "
                         "and per kernel")
      ->check(CLI::PositiveNumber);
  forwardCmd->add_flag("--no-cuda-graphs", fo.noGraphs,
                  "Launch kernels one by one instead of replaying each entry as a CUDA graph");

  TrainOptions to;
  CLI::App *trainCmd =
      app.add_subcommand("train", "Run a bundle's train-step entry for N steps on the GPU");
  trainCmd->add_option("bundle", to.bundle, "Bundle file (.qtb)")->required();
  trainCmd->add_option("--inputs", to.inputs,
                       "Safetensors file with a fixed batch (every input but lr and step)");
  trainCmd->add_option("--data", to.data,
                       "Token file to draw input_ids and labels from, a new batch every step");
  CLI::Option *dataFormatOpt = trainCmd->add_option(
      "--data-format", to.dataFormat,
      "u16, u32 or text (default: from the extension: .u16/.bin u16, .u32 u32, else text)");
  CLI::Option *vocabOpt = trainCmd->add_option(
      "--vocab", to.vocab, "Vocabulary size to check token ids against when the bundle has no "
                           "logits entry")
      ->check(CLI::PositiveNumber);
  CLI::Option *seedOpt =
      trainCmd->add_option("--seed", to.seed, "Seed of the data order (default: 0)");
  CLI::Option *shuffleOpt = trainCmd->add_flag(
      "--shuffle,!--no-shuffle", to.shuffle,
      "Shuffle the windows of every epoch (default) or take them in file order");
  trainCmd->add_option("--params", to.params,
                       "Safetensors file (or checkpoint directory) with the frozen and "
                       "trainable params and optimizer states to start from; repeatable, a "
                       "tensor is taken from the last file that has it")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  CLI::Option *stepsOpt = trainCmd->add_option("--steps", to.steps, "Total number of steps");
  CLI::Option *lrOpt = trainCmd->add_option("--lr", to.lr, "Peak learning rate");
  trainCmd->add_option("--out", to.out,
                       "Safetensors file to write every param (frozen ones too) to at the end");
  trainCmd->add_option("--entry", to.entry,
                       "Entry to run (default: the one entry named *_train_step)");
  CLI::Option *warmupOpt =
      trainCmd->add_option("--warmup", to.warmup, "Linear warmup steps (default: 0)");
  CLI::Option *scheduleOpt =
      trainCmd->add_option("--schedule", to.schedule, "constant or cosine (default: constant)");
  CLI::Option *minLrOpt = trainCmd->add_option(
      "--min-lr", to.minLr, "Learning rate of the last step with --schedule cosine (default: 0)");
  trainCmd->add_option("--batch-accum", to.batchAccum,
                       "Micro-batches per optimizer step (gradient accumulation; needs --data "
                       "and the bundle's <fn>_accumulate and <fn>_apply entries)")
      ->check(CLI::PositiveNumber);
  trainCmd->add_option("--max-skips", to.maxSkips,
                       "Consecutive steps with a non-finite loss to skip before stopping "
                       "(default: 10 with --data, 0 with --inputs)")
      ->check(CLI::NonNegativeNumber);
  trainCmd->add_option("--save-dir", to.saveDir,
                       "Directory for checkpoints (checkpoint-<step>/), one written at the end");
  trainCmd->add_option("--save-every", to.saveEvery, "Also save a checkpoint every N steps")
      ->check(CLI::PositiveNumber);
  trainCmd->add_option("--keep", to.keep, "Keep only the last K checkpoints (default: all)")
      ->check(CLI::PositiveNumber);
  trainCmd->add_option("--resume", to.resume,
                       "Continue from a checkpoint directory, or the latest one in a --save-dir");
  trainCmd->add_option("--metrics", to.metrics,
                       "Write one JSON object per step to this file (.jsonl)");
  trainCmd->add_option("--log-every", to.logEvery,
                       "Print a progress line every K steps when stderr is not a terminal "
                       "(default: about 20 lines)")
      ->check(CLI::PositiveNumber);
  CLI::Option *trainDeviceOpt =
      trainCmd->add_option("--device", to.device, "CUDA device ordinal (default: 0)")
          ->check(CLI::NonNegativeNumber);
  trainCmd->add_option("--profile", to.profile,
                       "After training (outputs written), time N more steps launch by launch "
                       "and print the time per op family and per kernel (the GPU copy of the "
                       "parameters moves on; nothing more is saved)")
      ->check(CLI::PositiveNumber);
  trainCmd->add_flag("--no-cuda-graphs", to.noGraphs,
                  "Launch kernels one by one instead of replaying each entry as a CUDA graph");
  CLI::Option *gpusOpt =
      trainCmd->add_option("--gpus", to.gpus,
                           "Data-parallel training on GPUs 0..N-1 of this host: starts one rank "
                           "per GPU, each taking its shard of every batch (needs --data and NCCL)")
          ->check(CLI::PositiveNumber);
  trainCmd->add_option("--rank", to.rank,
                       "This process's rank in a data-parallel run started by hand (several "
                       "hosts; with --world-size and --nccl-id)")
      ->check(CLI::NonNegativeNumber);
  trainCmd->add_option("--world-size", to.worldSize, "Ranks of a data-parallel run")
      ->check(CLI::PositiveNumber);
  trainCmd->add_option("--nccl-id", to.ncclId,
                       "File through which rank 0 hands the NCCL id to the other ranks (on a "
                       "filesystem every rank sees; a fresh path per run)");
  trainCmd->add_option("--nccl-timeout", to.ncclTimeout,
                       "Seconds the ranks may take to join, and a collective to finish, "
                       "before the run stops, naming the rank (default: 600)");

  EvalOptions eo;
  CLI::App *evalCmd = app.add_subcommand(
      "eval", "Mean loss and perplexity of a bundle's loss entry over a token file");
  evalCmd->add_option("bundle", eo.bundle, "Bundle file (.qtb)")->required();
  evalCmd->add_option("--params", eo.params,
                      "Safetensors file or checkpoint directory with the entry's params; "
                      "repeatable, a tensor is taken from the last file that has it")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  evalCmd->add_option("--data", eo.data, "Token file")->required();
  evalCmd->add_option("--data-format", eo.dataFormat,
                      "u16, u32 or text (default: from the extension)");
  evalCmd->add_option("--entry", eo.entry,
                      "Loss entry (default: the one taking exactly input_ids and labels, writing only loss)");
  evalCmd->add_option("--max-batches", eo.maxBatches, "Evaluate at most N batches")
      ->check(CLI::PositiveNumber);
  evalCmd->add_option("--vocab", eo.vocab,
                      "Vocabulary size to check token ids against when the bundle has no "
                      "logits entry")
      ->check(CLI::PositiveNumber);
  evalCmd->add_flag("--json", eo.json, "Print one JSON line on stdout");
  evalCmd->add_option("--device", eo.device, "CUDA device ordinal (default: 0)")
      ->check(CLI::NonNegativeNumber);
  evalCmd->add_flag("--no-cuda-graphs", eo.noGraphs,
                  "Launch kernels one by one instead of replaying each entry as a CUDA graph");

  GenerateOptions go;
  CLI::App *generateCmd = app.add_subcommand(
      "generate", "Continue a prompt byte by byte with a bundle's logits entry");
  generateCmd->add_option("bundle", go.bundle, "Bundle file (.qtb)")->required();
  generateCmd->add_option("--params", go.params,
                          "Safetensors file or checkpoint directory with the entry's params; "
                          "repeatable, a tensor is taken from the last file that has it")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  generateCmd->add_option("--prompt", go.prompt, "Prompt text (its bytes are the tokens)")
      ->required();
  generateCmd->add_option("--entry", go.entry,
                          "Logits entry (default: the one entry named *_logits)");
  generateCmd->add_option("--max-new-tokens", go.maxNewTokens,
                          "Tokens to generate (default: 64)");
  generateCmd->add_option("--temperature", go.temperature,
                          "Sampling temperature; 0 is greedy (default: 1)");
  generateCmd->add_option("--top-p", go.topP,
                          "Nucleus sampling: keep the smallest set of tokens with probability "
                          ">= P (default: 1)");
  generateCmd->add_option("--seed", go.seed, "Sampling seed (default: 0)");
  generateCmd->add_option("--device", go.device, "CUDA device ordinal (default: 0)")
      ->check(CLI::NonNegativeNumber);
  generateCmd->add_flag("--no-cuda-graphs", go.noGraphs,
                  "Launch kernels one by one instead of replaying each entry as a CUDA graph");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp &e) {
    return app.exit(e);
  } catch (const CLI::ParseError &e) {
    std::fprintf(stderr, "qtune-run: error: %s (see qtune-run --help)\n", e.what());
    return 1;
  }
  to.stepsGiven = stepsOpt->count() > 0;
  to.lrGiven = lrOpt->count() > 0;
  to.minLrGiven = minLrOpt->count() > 0;
  to.warmupGiven = warmupOpt->count() > 0;
  to.scheduleGiven = scheduleOpt->count() > 0;
  to.seedGiven = seedOpt->count() > 0;
  to.shuffleGiven = shuffleOpt->count() > 0;
  to.dataFormatGiven = dataFormatOpt->count() > 0;
  to.vocabGiven = vocabOpt->count() > 0;
  try {
    if (*trainCmd && *gpusOpt) {
      if (*trainDeviceOpt)
        fail("--gpus N runs on GPUs 0..N-1; --device does not apply");
      if (to.rank >= 0 || to.worldSize > 0 || !to.ncclId.empty())
        fail("--gpus starts the ranks itself; --rank, --world-size and --nccl-id are for runs "
             "started by hand");
      if (to.data.empty())
        fail("--gpus needs --data: every rank draws its shard of each batch from the token "
             "file");
      // The same command for every rank, without --gpus.
      std::vector<std::string> args;
      for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--gpus") {
          ++i;
          continue;
        }
        if (a.rfind("--gpus=", 0) == 0)
          continue;
        args.push_back(a);
      }
      launchRanks(to.gpus, args);
    }
    if (*inspectCmd)
      inspect(inspectPath);
    else if (*trainCmd)
      train(to);
    else if (*evalCmd)
      eval(eo);
    else if (*generateCmd)
      generate(go);
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
