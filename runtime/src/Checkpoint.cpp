//===- Checkpoint.cpp - training checkpoints and resuming -----------------===//

#include "qtune/runtime/Checkpoint.h"

#include "qtune/runtime/AtomicFile.h"

#include <nlohmann/json.hpp>

#include "JsonType.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <new>
#include <set>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace qtune::rt {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

std::atomic<uint64_t> gCounter{0};

std::string hex64(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

bool endsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}


/// Typed reads of trainer_state.json; the first failure is kept.
struct Reader {
  std::string error;
  bool fail(const std::string &field, const std::string &why) {
    error = field + ": " + why;
    return false;
  }
  const Json *member(const Json &obj, const std::string &prefix, const char *key) {
    const std::string field = prefix.empty() ? key : prefix + "." + key;
    if (!obj.is_object()) {
      fail(prefix.empty() ? "trainer state" : prefix,
           std::string("expected an object, got ") + jsonType(obj));
      return nullptr;
    }
    auto it = obj.find(key);
    if (it == obj.end()) {
      fail(field, "missing");
      return nullptr;
    }
    return &*it;
  }
  bool i64(const Json &obj, const std::string &prefix, const char *key, int64_t &out) {
    const Json *j = member(obj, prefix, key);
    if (!j)
      return false;
    const std::string field = prefix.empty() ? key : prefix + "." + key;
    if (!j->is_number_integer() ||
        (j->is_number_unsigned() &&
         j->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())))
      return fail(field, std::string("expected an integer, got ") + jsonType(*j));
    out = j->get<int64_t>();
    if (out < 0)
      return fail(field, "must not be negative (got " + std::to_string(out) + ")");
    return true;
  }
  bool u64(const Json &obj, const std::string &prefix, const char *key, uint64_t &out) {
    const Json *j = member(obj, prefix, key);
    if (!j)
      return false;
    const std::string field = prefix.empty() ? key : prefix + "." + key;
    if (j->is_number_unsigned()) {
      out = j->get<uint64_t>();
      return true;
    }
    if (j->is_number_integer() && j->get<int64_t>() >= 0) {
      out = static_cast<uint64_t>(j->get<int64_t>());
      return true;
    }
    return fail(field, std::string("expected a non-negative integer, got ") + jsonType(*j));
  }
  bool number(const Json &obj, const std::string &prefix, const char *key, double &out) {
    const Json *j = member(obj, prefix, key);
    if (!j)
      return false;
    if (!j->is_number())
      return fail(prefix + "." + key, std::string("expected a number, got ") + jsonType(*j));
    out = j->get<double>();
    return true;
  }
  bool string(const Json &obj, const std::string &prefix, const char *key, std::string &out) {
    const Json *j = member(obj, prefix, key);
    if (!j)
      return false;
    if (!j->is_string())
      return fail(prefix.empty() ? key : prefix + "." + key,
                  std::string("expected a string, got ") + jsonType(*j));
    out = j->get<std::string>();
    return true;
  }
  bool boolean(const Json &obj, const std::string &prefix, const char *key, bool &out) {
    const Json *j = member(obj, prefix, key);
    if (!j)
      return false;
    if (!j->is_boolean())
      return fail(prefix + "." + key, std::string("expected a boolean, got ") + jsonType(*j));
    out = j->get<bool>();
    return true;
  }
};

int fsyncPath(const std::string &path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return errno;
  const int rc = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return rc;
}

/// A fresh name in `dir` for a temporary or doomed directory.
std::string scratchName(const std::string &dir, const std::string &base, const char *kind) {
  return (fs::path(dir) / ("." + base + "." + kind + "." + std::to_string(::getpid()) + "." +
                           std::to_string(gCounter.fetch_add(1))))
      .string();
}

/// Atomically swaps two paths (Linux renameat2 RENAME_EXCHANGE); errno-style
/// result, ENOSYS/EINVAL where the system or file system cannot.
int exchangePaths(const std::string &a, const std::string &b) {
#if defined(SYS_renameat2)
  constexpr unsigned kRenameExchange = 1u << 1; // RENAME_EXCHANGE
  if (::syscall(SYS_renameat2, AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), kRenameExchange) == 0)
    return 0;
  return errno;
#else
  (void)a;
  (void)b;
  return ENOSYS;
#endif
}

/// Parses "checkpoint-<digits>"; -1 when `name` is not one.
int64_t checkpointStep(const std::string &name) {
  if (name.size() <= kCheckpointPrefix.size() || name.compare(0, kCheckpointPrefix.size(),
                                                              kCheckpointPrefix) != 0)
    return -1;
  const std::string digits = name.substr(kCheckpointPrefix.size());
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(),
                                         [](char c) { return c >= '0' && c <= '9'; }))
    return -1;
  return std::stoll(digits);
}

} // namespace

// ---- trainer state ----------------------------------------------------------------------

BundleFingerprint fingerprintBytes(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return {bytes.size(), h};
}

std::string trainerStateJson(const TrainerState &s) {
  try {
    Json j = Json::object();
    j["format"] = "qtune-trainer-state";
    j["version"] = kTrainerStateVersion;
    j["step"] = s.step;
    j["skipped"] = s.skipped;
    j["entry"] = s.entry;
    j["bundle"] = {{"path", s.bundlePath},
                   {"bytes", s.bundle.bytes},
                   {"fnv1a64", hex64(s.bundle.fnv1a64)}};
    j["schedule"] = {{"kind", std::string(scheduleName(s.schedule.kind))},
                     {"lr", s.schedule.lr},
                     {"min_lr", s.schedule.minLr},
                     {"warmup", s.schedule.warmup},
                     {"steps", s.schedule.steps}};
    if (s.data) {
      const DataState &d = *s.data;
      j["data"] = {{"path", d.path},
                   {"format", std::string(tokenFormatName(d.format))},
                   {"tokens", d.tokens},
                   {"batch", d.batch},
                   {"seq_len", d.seqLen},
                   {"seed", d.loader.seed},
                   {"shuffle", d.loader.shuffle},
                   {"epoch", d.loader.epoch},
                   {"position", d.loader.position}};
    } else {
      j["data"] = nullptr;
    }
    return j.dump(2) + "\n";
  } catch (const std::exception &) {
    return std::string();
  }
}

bool parseTrainerState(std::string_view text, TrainerState &s, std::string &error) {
  try {
    const Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      error = "not valid JSON";
      return false;
    }
    Reader r;
    s = TrainerState{};
    std::string format, kind, hash, dataFormat;
    int64_t version = 0;
    if (!r.string(j, "", "format", format) || !r.i64(j, "", "version", version)) {
      error = r.error;
      return false;
    }
    if (format != "qtune-trainer-state") {
      error = "format: expected \"qtune-trainer-state\", got \"" + format + "\"";
      return false;
    }
    if (version != kTrainerStateVersion) {
      error = "version: unsupported trainer state version " + std::to_string(version) +
              " (this runtime reads " + std::to_string(kTrainerStateVersion) + ")";
      return false;
    }
    const Json *bundle = nullptr, *schedule = nullptr, *data = nullptr;
    if (!r.i64(j, "", "step", s.step) || !r.i64(j, "", "skipped", s.skipped) ||
        !r.string(j, "", "entry", s.entry) || !(bundle = r.member(j, "", "bundle")) ||
        !r.string(*bundle, "bundle", "path", s.bundlePath) ||
        !r.u64(*bundle, "bundle", "bytes", s.bundle.bytes) ||
        !r.string(*bundle, "bundle", "fnv1a64", hash) ||
        !(schedule = r.member(j, "", "schedule")) ||
        !r.string(*schedule, "schedule", "kind", kind) ||
        !r.number(*schedule, "schedule", "lr", s.schedule.lr) ||
        !r.number(*schedule, "schedule", "min_lr", s.schedule.minLr) ||
        !r.i64(*schedule, "schedule", "warmup", s.schedule.warmup) ||
        !r.i64(*schedule, "schedule", "steps", s.schedule.steps) ||
        !(data = r.member(j, "", "data"))) {
      error = r.error;
      return false;
    }
    if (hash.size() != 16 || hash.find_first_not_of("0123456789abcdef") != std::string::npos) {
      error = "bundle.fnv1a64: expected 16 lowercase hex digits, got \"" + hash + "\"";
      return false;
    }
    s.bundle.fnv1a64 = std::stoull(hash, nullptr, 16);
    auto k = parseSchedule(kind);
    if (!k) {
      error = "schedule.kind: unknown schedule '" + kind + "' (expected constant or cosine)";
      return false;
    }
    s.schedule.kind = *k;
    std::string why;
    if (!checkSchedule(s.schedule, why)) {
      error = "schedule: " + why;
      return false;
    }
    if (s.step > s.schedule.steps) {
      error = "step: " + std::to_string(s.step) + " is past schedule.steps (" +
              std::to_string(s.schedule.steps) + ")";
      return false;
    }
    if (!data->is_null()) {
      DataState d;
      int64_t batch = 0, seqLen = 0;
      if (!r.string(*data, "data", "path", d.path) ||
          !r.string(*data, "data", "format", dataFormat) ||
          !r.u64(*data, "data", "tokens", d.tokens) || !r.i64(*data, "data", "batch", batch) ||
          !r.i64(*data, "data", "seq_len", seqLen) ||
          !r.u64(*data, "data", "seed", d.loader.seed) ||
          !r.boolean(*data, "data", "shuffle", d.loader.shuffle) ||
          !r.u64(*data, "data", "epoch", d.loader.epoch) ||
          !r.u64(*data, "data", "position", d.loader.position)) {
        error = r.error;
        return false;
      }
      auto f = parseTokenFormat(dataFormat);
      if (!f) {
        error = "data.format: unknown format '" + dataFormat + "' (expected u16, u32 or text)";
        return false;
      }
      d.format = *f;
      if (batch < 1 || seqLen < 1) {
        error = "data: batch and seq_len must be at least 1";
        return false;
      }
      d.batch = batch;
      d.seqLen = seqLen;
      s.data = d;
    }
    return true;
  } catch (const std::exception &e) {
    error = e.what();
    return false;
  }
}

// ---- the PEFT adapter ---------------------------------------------------------------------

namespace {
constexpr std::string_view kLoraA = ".lora_A.weight";
constexpr std::string_view kLoraB = ".lora_B.weight";
} // namespace

bool isLoraParam(std::string_view name) {
  return (endsWith(name, kLoraA) && name.size() > kLoraA.size()) ||
         (endsWith(name, kLoraB) && name.size() > kLoraB.size());
}

bool planAdapter(const BundleSpec &spec, const std::vector<int> &params, const PeftConfig &peft,
                 std::vector<int> &lora, std::string &error) {
  lora.clear();
  std::map<std::string, int> byName;
  for (int id : params)
    byName[spec.buffers[id].name] = id;
  auto targeted = [&](const std::string &module) {
    for (const std::string &t : peft.targetModules)
      if (module == t || endsWith(module, "." + t))
        return true;
    return false;
  };
  for (int id : params) {
    const Buffer &b = spec.buffers[id];
    if (!isLoraParam(b.name))
      continue;
    const bool isA = endsWith(b.name, kLoraA);
    const std::string module = b.name.substr(0, b.name.size() - kLoraA.size());
    const std::string partner = module + std::string(isA ? kLoraB : kLoraA);
    auto fail = [&](const std::string &why) {
      error = "LoRA param '" + b.name + "' (" + std::string(st::dtypeName(b.dtype)) + " " +
              st::shapeText(b.shape) + "): " + why;
      return false;
    };
    if (!st::isFloat(b.dtype))
      return fail("a LoRA param must be a float tensor");
    if (b.shape.size() != 2)
      return fail(std::string("a LoRA param must be 2-D, ") +
                  (isA ? "[r, in_features]" : "[out_features, r]"));
    const int64_t rank = isA ? b.shape[0] : b.shape[1];
    if (rank != peft.r)
      return fail("its rank " + std::to_string(rank) + " is not the bundle's peft.r (" +
                  std::to_string(peft.r) + ")");
    if (!byName.count(partner))
      return fail("'" + partner + "' is missing; PEFT needs both lora_A and lora_B");
    if (!targeted(module)) {
      std::string list;
      for (const std::string &t : peft.targetModules)
        list += (list.empty() ? "" : ", ") + t;
      return fail("module '" + module + "' is not among peft.target_modules (" + list + ")");
    }
    lora.push_back(id);
  }
  return true;
}

std::string adapterConfigJson(const PeftConfig &peft) {
  try {
    Json j = Json::object();
    j["base_model_name_or_path"] =
        peft.baseModelNameOrPath.empty() ? Json(nullptr) : Json(peft.baseModelNameOrPath);
    j["bias"] = "none";
    j["fan_in_fan_out"] = false;
    j["inference_mode"] = true;
    const double a = peft.loraAlpha;
    if (a == std::floor(a) && std::fabs(a) < 9007199254740992.0)
      j["lora_alpha"] = static_cast<int64_t>(a);
    else
      j["lora_alpha"] = a;
    j["lora_dropout"] = peft.loraDropout;
    j["peft_type"] = "LORA";
    j["r"] = peft.r;
    j["target_modules"] = peft.targetModules;
    j["task_type"] = "CAUSAL_LM";
    return j.dump(2) + "\n";
  } catch (const std::exception &) {
    return std::string();
  }
}

// ---- checkpoint directories ------------------------------------------------------------------

std::string checkpointName(int64_t step) {
  return std::string(kCheckpointPrefix) + std::to_string(step);
}

bool writeCheckpoint(const std::string &dir, const Checkpoint &c, std::string &written,
                     std::string &error) {
  const std::string name = checkpointName(c.state.step);
  const std::string final = (fs::path(dir) / name).string();
  std::string tmp;
  auto fail = [&](const std::string &why) {
    error = final + ": " + why;
    if (!tmp.empty()) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
    }
    return false;
  };
  try {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
      return fail("cannot create " + dir + ": " + ec.message());
    const std::string candidate = scratchName(dir, name, "tmp");
    if (::mkdir(candidate.c_str(), 0777) != 0)
      return fail("cannot create a temporary directory in " + dir + ": " + std::strerror(errno));
    tmp = candidate;

    std::string why;
    const std::map<std::string, std::string> meta = {{"entry", c.state.entry},
                                                     {"step", std::to_string(c.state.step)}};
    if (!st::write((fs::path(tmp) / kStateFile).string(), c.tensors, meta, why))
      return fail(why);

    if (c.peft && !c.adapterNames.empty()) {
      std::vector<st::OwnedTensor> adapter;
      for (const std::string &n : c.adapterNames) {
        auto it = std::find_if(c.tensors.begin(), c.tensors.end(),
                               [&](const st::OwnedTensor &t) { return t.name == n; });
        if (it == c.tensors.end())
          return fail("adapter tensor '" + n + "' is not among the checkpoint's tensors");
        adapter.push_back({std::string(kPeftKeyPrefix) + n, it->dtype, it->shape, it->bytes});
      }
      if (!st::write((fs::path(tmp) / kAdapterFile).string(), adapter, {{"format", "pt"}}, why))
        return fail(why);
      const std::string config = adapterConfigJson(*c.peft);
      if (config.empty() ||
          !writeFileAtomically((fs::path(tmp) / kAdapterConfigFile).string(), {config}, why))
        return fail(std::string(kAdapterConfigFile) + ": " + (config.empty() ? "out of memory" : why));
    }

    const std::string state = trainerStateJson(c.state);
    if (state.empty() ||
        !writeFileAtomically((fs::path(tmp) / kTrainerStateFile).string(), {state}, why))
      return fail(std::string(kTrainerStateFile) + ": " + (state.empty() ? "out of memory" : why));
    if (const int err = fsyncPath(tmp))
      return fail("fsync of the temporary directory failed: " + std::string(std::strerror(err)));

    // Into place. An existing checkpoint of this step is swapped out
    // atomically where the system can, else moved aside first; either way
    // it is removed only once the new one is in place.
    if (::rename(tmp.c_str(), final.c_str()) != 0) {
      const int err = errno;
      if (err != EEXIST && err != ENOTEMPTY && err != EISDIR && err != ENOTDIR)
        return fail("rename of the temporary directory failed: " + std::string(std::strerror(err)));
      if (exchangePaths(tmp, final) != 0) {
        const std::string old = scratchName(dir, name, "old");
        if (::rename(final.c_str(), old.c_str()) != 0)
          return fail("cannot move the existing " + name + " aside: " + std::strerror(errno));
        if (::rename(tmp.c_str(), final.c_str()) != 0) {
          const int err2 = errno;
          (void)::rename(old.c_str(), final.c_str()); // put the old one back
          return fail("rename of the temporary directory failed: " +
                      std::string(std::strerror(err2)));
        }
        tmp = old;
      }
      std::error_code rmEc; // tmp now holds the old checkpoint
      fs::remove_all(tmp, rmEc);
    }
    tmp.clear();
    (void)fsyncPath(dir); // best effort: the rename is done
    written = final;
    return true;
  } catch (const std::bad_alloc &) {
    return fail("out of memory");
  } catch (const std::exception &e) {
    return fail(e.what());
  }
}

bool listCheckpoints(const std::string &dir, std::vector<CheckpointDir> &out,
                     std::string &error) {
  out.clear();
  try {
    std::error_code ec;
    fs::directory_iterator it(dir, ec), end;
    if (ec) {
      error = dir + ": " + ec.message();
      return false;
    }
    for (; it != end; it.increment(ec)) {
      if (ec) {
        error = dir + ": " + ec.message();
        return false;
      }
      const int64_t step = checkpointStep(it->path().filename().string());
      std::error_code dirEc;
      if (step >= 0 && it->is_directory(dirEc))
        out.push_back({step, it->path().string()});
    }
    std::sort(out.begin(), out.end(),
              [](const CheckpointDir &a, const CheckpointDir &b) { return a.step < b.step; });
    return true;
  } catch (const std::exception &e) {
    error = dir + ": " + e.what();
    return false;
  }
}

bool pruneCheckpoints(const std::string &dir, int64_t keep, const std::string &protect,
                      std::vector<std::string> &removed, std::string &error) {
  removed.clear();
  if (keep < 1)
    return true; // keep everything
  std::vector<CheckpointDir> all;
  if (!listCheckpoints(dir, all, error))
    return false;
  try {
    std::error_code ec;
    std::vector<CheckpointDir> others;
    int64_t kept = 0;
    for (const CheckpointDir &c : all) {
      if (!protect.empty() && fs::equivalent(c.path, protect, ec))
        ++kept;
      else
        others.push_back(c);
    }
    // `others` is sorted by step: the last ones stay.
    const int64_t keepOthers = std::max<int64_t>(0, keep - kept);
    const size_t remove =
        others.size() > static_cast<size_t>(keepOthers) ? others.size() - keepOthers : 0;
    for (size_t i = 0; i < remove; ++i) {
      const std::string doomed =
          scratchName(dir, fs::path(others[i].path).filename().string(), "old");
      if (::rename(others[i].path.c_str(), doomed.c_str()) != 0) {
        error = others[i].path + ": cannot remove: " + std::strerror(errno);
        return false;
      }
      fs::remove_all(doomed, ec);
      removed.push_back(others[i].path);
    }
    return true;
  } catch (const std::exception &e) {
    error = dir + ": " + e.what();
    return false;
  }
}

bool resolveCheckpoint(const std::string &path, std::string &checkpoint, std::string &error) {
  try {
    std::error_code ec;
    if (!fs::is_directory(path, ec)) {
      error = path + ": not a directory (--resume takes a checkpoint directory, or the "
                     "--save-dir that holds them)";
      return false;
    }
    if (fs::exists(fs::path(path) / kTrainerStateFile, ec)) {
      checkpoint = path;
      return true;
    }
    std::vector<CheckpointDir> all;
    if (!listCheckpoints(path, all, error))
      return false;
    if (all.empty()) {
      error = path + ": no " + std::string(kTrainerStateFile) + " and no " +
              std::string(kCheckpointPrefix) + "<step> directories";
      return false;
    }
    checkpoint = all.back().path;
    return true;
  } catch (const std::exception &e) {
    error = path + ": " + e.what();
    return false;
  }
}

bool loadCheckpoint(const std::string &dir, LoadedCheckpoint &c, std::string &error) {
  const std::string statePath = (fs::path(dir) / kTrainerStateFile).string();
  try {
    c = LoadedCheckpoint{};
    c.dir = dir;
    std::ifstream in(statePath, std::ios::binary);
    if (!in) {
      error = statePath + ": cannot open: " + std::strerror(errno);
      return false;
    }
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::string why;
    if (!parseTrainerState(text, c.state, why)) {
      error = statePath + ": " + why;
      return false;
    }
    c.tensors = st::File::open((fs::path(dir) / kStateFile).string(), error);
    return c.tensors != nullptr;
  } catch (const std::exception &e) {
    error = statePath + ": " + e.what();
    return false;
  }
}

} // namespace qtune::rt
