//===- Trainer.cpp - running a bundle's train-step entry --------------------===//

#include "qtune/runtime/Trainer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>

namespace qtune::rt {

std::string numberText(double v) {
  if (std::isnan(v))
    return "nan";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

namespace {

std::string nameList(const BundleSpec &spec, const std::vector<int> &ids) {
  std::string s;
  for (int id : ids)
    s += (s.empty() ? "" : ", ") + spec.buffers[id].name;
  return s.empty() ? "none" : s;
}

/// The id in `ids` of the buffer called `name`, or -1.
int findIn(const BundleSpec &spec, const std::vector<int> &ids, std::string_view name) {
  for (int id : ids)
    if (spec.buffers[id].name == name)
      return id;
  return -1;
}

/// A float buffer of one element (F32 [] by convention).
bool checkScalar(const BundleSpec &spec, const std::string &entry, int id, const char *what,
                 std::string &error) {
  const Buffer &b = spec.buffers[id];
  int64_t numel = 1;
  for (int64_t d : b.shape)
    numel *= d;
  if (st::isFloat(b.dtype) && numel == 1)
    return true;
  error = "entry '" + entry + "': " + what + " '" + b.name + "' is " +
          std::string(st::dtypeName(b.dtype)) + " " + st::shapeText(b.shape) +
          "; it must be a float scalar (F32 [])";
  return false;
}

} // namespace

// ---- schedule ------------------------------------------------------------------------------

std::string_view scheduleName(ScheduleKind kind) {
  switch (kind) {
  case ScheduleKind::Constant: return "constant";
  case ScheduleKind::Cosine: return "cosine";
  }
  return "?";
}

std::optional<ScheduleKind> parseSchedule(std::string_view name) {
  if (name == "constant")
    return ScheduleKind::Constant;
  if (name == "cosine")
    return ScheduleKind::Cosine;
  return std::nullopt;
}

bool checkSchedule(const LrSchedule &s, std::string &error) {
  if (s.steps < 1) {
    error = "--steps must be at least 1 (got " + std::to_string(s.steps) + ")";
    return false;
  }
  if (s.steps > kMaxSteps) {
    error = "--steps must be at most " + std::to_string(kMaxSteps) + " (got " +
            std::to_string(s.steps) + "): the step number is passed as an F32";
    return false;
  }
  if (!std::isfinite(s.lr) || s.lr < 0) {
    error = "--lr must be finite and non-negative (got " + numberText(s.lr) + ")";
    return false;
  }
  if (!std::isfinite(s.minLr) || s.minLr < 0) {
    error = "--min-lr must be finite and non-negative (got " + numberText(s.minLr) + ")";
    return false;
  }
  if (s.minLr > s.lr) {
    error = "--min-lr (" + numberText(s.minLr) + ") must not exceed --lr (" + numberText(s.lr) +
            ")";
    return false;
  }
  if (s.warmup < 0 || s.warmup > s.steps) {
    error = "--warmup must be between 0 and --steps (" + std::to_string(s.steps) + ") (got " +
            std::to_string(s.warmup) + ")";
    return false;
  }
  return true;
}

double learningRate(const LrSchedule &s, int64_t t) {
  if (s.warmup > 0 && t <= s.warmup)
    return s.lr * static_cast<double>(t) / static_cast<double>(s.warmup);
  if (s.kind == ScheduleKind::Constant)
    return s.lr;
  const int64_t s0 = std::max<int64_t>(s.warmup, 1);
  if (s.steps <= s0)
    return s.lr;
  const double p = static_cast<double>(t - s0) / static_cast<double>(s.steps - s0);
  constexpr double kPi = 3.14159265358979323846;
  return s.minLr + (s.lr - s.minLr) * 0.5 * (1.0 + std::cos(kPi * p));
}

// ---- convention ------------------------------------------------------------------------------

bool selectTrainEntry(const BundleSpec &spec, const std::string &requested, std::string &name,
                      std::string &error) {
  std::string all;
  for (const auto &[n, e] : spec.entries)
    all += (all.empty() ? "" : ", ") + n;
  if (all.empty())
    all = "none";
  if (!requested.empty()) {
    if (spec.entries.count(requested)) {
      name = requested;
      return true;
    }
    error = "no entry '" + requested + "' (entries: " + all + ")";
    return false;
  }
  std::vector<std::string> found;
  for (const auto &[n, e] : spec.entries)
    if (n.size() > kTrainStepSuffix.size() &&
        std::string_view(n).substr(n.size() - kTrainStepSuffix.size()) == kTrainStepSuffix)
      found.push_back(n);
  if (found.size() == 1) {
    name = found.front();
    return true;
  }
  if (found.empty()) {
    error = "no entry ends in '" + std::string(kTrainStepSuffix) + "' (entries: " + all +
            "); choose one with --entry";
    return false;
  }
  std::string list;
  for (const std::string &n : found)
    list += (list.empty() ? "" : ", ") + n;
  error = std::to_string(found.size()) + " entries end in '" + std::string(kTrainStepSuffix) +
          "' (" + list + "); choose one with --entry";
  return false;
}

bool planTraining(const BundleSpec &spec, const std::string &name, TrainPlan &plan,
                  std::string &error) {
  auto it = spec.entries.find(name);
  if (it == spec.entries.end()) {
    error = "no entry '" + name + "'";
    return false;
  }
  const Entry &e = it->second;
  plan = TrainPlan{};
  plan.entry = name;

  plan.lr = findIn(spec, e.inputs, kLrInput);
  if (plan.lr < 0) {
    error = "entry '" + name + "' has no input 'lr' (inputs: " + nameList(spec, e.inputs) +
            "); a train-step entry takes the learning rate as an F32 [] input named 'lr'";
    return false;
  }
  if (!checkScalar(spec, name, plan.lr, "input", error))
    return false;
  plan.step = findIn(spec, e.inputs, kStepInput);
  if (plan.step >= 0 && !checkScalar(spec, name, plan.step, "input", error))
    return false;
  for (int id : e.inputs)
    if (id != plan.lr && id != plan.step)
      plan.batch.push_back(id);

  plan.loss = findIn(spec, e.outputs, kLossOutput);
  if (plan.loss < 0) {
    error = "entry '" + name + "' has no output 'loss' (outputs: " + nameList(spec, e.outputs) +
            "); a train-step entry writes its loss to an F32 [] output named 'loss'";
    return false;
  }
  if (!checkScalar(spec, name, plan.loss, "output", error))
    return false;
  if (std::find(e.params.begin(), e.params.end(), plan.loss) != e.params.end() ||
      std::find(e.inputs.begin(), e.inputs.end(), plan.loss) != e.inputs.end()) {
    error = "entry '" + name + "': output 'loss' is also an input or param";
    return false;
  }

  for (int id : e.params) {
    plan.saved.push_back(id);
    if (spec.buffers[id].role == BufferRole::OptimizerState)
      plan.optimizerStates.push_back(id);
    else
      plan.required.push_back(id);
  }
  // Outputs other than the loss are, by the convention, params updated in
  // place: the same buffer ids, saved as params. Anything else is noted.
  for (int id : e.outputs)
    if (id != plan.loss && std::find(e.params.begin(), e.params.end(), id) == e.params.end())
      plan.otherOutputs.push_back(id);
  return true;
}

void splitOptimizerStates(const BundleSpec &spec, const TrainPlan &plan,
                          const std::function<bool(const std::string &)> &has,
                          std::vector<int> &load, std::vector<int> &zero) {
  load.clear();
  zero.clear();
  for (int id : plan.optimizerStates)
    (has && has(spec.buffers[id].name) ? load : zero).push_back(id);
}

std::vector<int> checkpointedParams(const BundleSpec &spec, const TrainPlan &plan) {
  std::vector<int> out;
  for (int id : plan.saved)
    if (spec.buffers[id].role == BufferRole::Trainable ||
        spec.buffers[id].role == BufferRole::OptimizerState)
      out.push_back(id);
  return out;
}

// ---- token-model entries -----------------------------------------------------------------

bool planTokenInputs(const BundleSpec &spec, const std::string &entry,
                     const std::vector<int> &inputs, bool needLabels, TokenInputs &tokens,
                     std::string &error) {
  tokens = TokenInputs{};
  tokens.inputIds = findIn(spec, inputs, kInputIds);
  if (tokens.inputIds < 0) {
    error = "entry '" + entry + "' has no input 'input_ids' (inputs: " + nameList(spec, inputs) +
            "); token batches go to an I32 [B, S] input named 'input_ids'";
    return false;
  }
  const Buffer &ids = spec.buffers[tokens.inputIds];
  if (ids.dtype != st::DType::I32 || ids.shape.size() != 2 || ids.shape[0] < 1 ||
      ids.shape[1] < 1) {
    error = "entry '" + entry + "': input 'input_ids' is " + std::string(st::dtypeName(ids.dtype)) +
            " " + st::shapeText(ids.shape) + "; it must be I32 [B, S] with B, S >= 1";
    return false;
  }
  tokens.batch = ids.shape[0];
  tokens.seqLen = ids.shape[1];
  if (!needLabels)
    return true;
  tokens.labels = findIn(spec, inputs, kLabels);
  if (tokens.labels < 0) {
    error = "entry '" + entry + "' has no input 'labels' (inputs: " + nameList(spec, inputs) +
            "); token batches go to I32 [B, S] inputs named 'input_ids' and 'labels'";
    return false;
  }
  const Buffer &labels = spec.buffers[tokens.labels];
  if (labels.dtype != st::DType::I32 || labels.shape != ids.shape) {
    error = "entry '" + entry + "': input 'labels' is " +
            std::string(st::dtypeName(labels.dtype)) + " " + st::shapeText(labels.shape) +
            "; it must be I32 [B, S] like input_ids (I32 " + st::shapeText(ids.shape) + ")";
    return false;
  }
  return true;
}

namespace {

bool endsWith(std::string_view s, std::string_view suffix) {
  return s.size() > suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string entryList(const BundleSpec &spec) {
  std::string all;
  for (const auto &[n, e] : spec.entries)
    all += (all.empty() ? "" : ", ") + n;
  return all.empty() ? "none" : all;
}

/// `requested` if it exists, else the one entry `matches` accepts; `one` and
/// `many` describe those entries in the errors ("ends in", "end in").
bool selectEntry(const BundleSpec &spec, const std::string &requested,
                 const std::function<bool(const std::string &, const Entry &)> &matches,
                 const std::string &one, const std::string &many, std::string &name,
                 std::string &error) {
  if (!requested.empty()) {
    if (spec.entries.count(requested)) {
      name = requested;
      return true;
    }
    error = "no entry '" + requested + "' (entries: " + entryList(spec) + ")";
    return false;
  }
  std::vector<std::string> found;
  for (const auto &[n, e] : spec.entries)
    if (matches(n, e))
      found.push_back(n);
  if (found.size() == 1) {
    name = found.front();
    return true;
  }
  if (found.empty()) {
    error = "no entry " + one + " (entries: " + entryList(spec) + "); choose one with --entry";
    return false;
  }
  std::string list;
  for (const std::string &n : found)
    list += (list.empty() ? "" : ", ") + n;
  error = std::to_string(found.size()) + " entries " + many + " (" + list +
          "); choose one with --entry";
  return false;
}

} // namespace

bool selectLossEntry(const BundleSpec &spec, const std::string &requested, std::string &name,
                     std::string &error) {
  // Exactly: a gradient entry (<fn>_grad) takes the same inputs but writes
  // gradients besides the loss.
  auto matches = [&](const std::string &, const Entry &e) {
    return e.inputs.size() == 2 && findIn(spec, e.inputs, kInputIds) >= 0 &&
           findIn(spec, e.inputs, kLabels) >= 0 && e.outputs.size() == 1 &&
           findIn(spec, e.outputs, kLossOutput) >= 0;
  };
  return selectEntry(spec, requested, matches,
                     "takes exactly 'input_ids' and 'labels' and writes only 'loss'",
                     "take exactly 'input_ids' and 'labels' and write only 'loss'", name, error);
}

/// Entry `name`, whose only inputs are its token inputs (input_ids, and
/// labels when `needLabels`), planned into `tokens`; null with `error`
/// (ending in `takes`) otherwise.
static const Entry *tokenEntry(const BundleSpec &spec, const std::string &name, bool needLabels,
                        TokenInputs &tokens, const char *takes, std::string &error) {
  auto it = spec.entries.find(name);
  if (it == spec.entries.end()) {
    error = "no entry '" + name + "'";
    return nullptr;
  }
  const Entry &e = it->second;
  if (!planTokenInputs(spec, name, e.inputs, needLabels, tokens, error))
    return nullptr;
  if (e.inputs.size() != (needLabels ? 2u : 1u)) {
    error = "entry '" + name + "' takes " + nameList(spec, e.inputs) + "; " + takes;
    return nullptr;
  }
  return &e;
}

bool planLoss(const BundleSpec &spec, const std::string &name, LossPlan &plan,
              std::string &error) {
  plan = LossPlan{};
  plan.entry = name;
  const Entry *found = tokenEntry(spec, name, /*needLabels=*/true, plan.tokens,
                                  "a loss entry takes exactly 'input_ids' and 'labels'", error);
  if (!found)
    return false;
  const Entry &e = *found;
  plan.loss = findIn(spec, e.outputs, kLossOutput);
  if (plan.loss < 0) {
    error = "entry '" + name + "' has no output 'loss' (outputs: " + nameList(spec, e.outputs) +
            ")";
    return false;
  }
  if (!checkScalar(spec, name, plan.loss, "output", error))
    return false;
  plan.params = e.params;
  return true;
}

bool selectLogitsEntry(const BundleSpec &spec, const std::string &requested, std::string &name,
                       std::string &error) {
  auto matches = [](const std::string &n, const Entry &) { return endsWith(n, kLogitsSuffix); };
  return selectEntry(spec, requested, matches, "ends in '_logits'", "end in '_logits'", name,
                     error);
}

bool planLogits(const BundleSpec &spec, const std::string &name, LogitsPlan &plan,
                std::string &error) {
  plan = LogitsPlan{};
  plan.entry = name;
  const Entry *found = tokenEntry(spec, name, /*needLabels=*/false, plan.tokens,
                                  "a logits entry takes exactly 'input_ids'", error);
  if (!found)
    return false;
  const Entry &e = *found;
  plan.logits = findIn(spec, e.outputs, kLogitsOutput);
  if (plan.logits < 0) {
    error = "entry '" + name + "' has no output 'logits' (outputs: " +
            nameList(spec, e.outputs) + ")";
    return false;
  }
  const Buffer &l = spec.buffers[plan.logits];
  const int64_t b = plan.tokens.batch, s = plan.tokens.seqLen;
  const bool shapeOk = (l.shape.size() == 3 && l.shape[0] == b && l.shape[1] == s) ||
                       (l.shape.size() == 2 && l.shape[0] == b * s);
  if ((l.dtype != st::DType::F32 && l.dtype != st::DType::BF16) || !shapeOk ||
      l.shape.back() < 1) {
    error = "entry '" + name + "': output 'logits' is " + std::string(st::dtypeName(l.dtype)) +
            " " + st::shapeText(l.shape) + "; it must be F32 or BF16 [" + std::to_string(b) +
            ", " + std::to_string(s) + ", V] or [" + std::to_string(b * s) +
            ", V] for input_ids " + st::shapeText(spec.buffers[plan.tokens.inputIds].shape);
    return false;
  }
  plan.vocab = l.shape.back();
  plan.params = e.params;
  return true;
}

std::optional<int64_t> bundleVocab(const BundleSpec &spec, const std::string &entry) {
  std::string fn = entry;
  if (endsWith(fn, kTrainStepSuffix))
    fn.resize(fn.size() - kTrainStepSuffix.size());
  std::string name = fn + std::string(kLogitsSuffix), error;
  if (!spec.entries.count(name) && !selectLogitsEntry(spec, "", name, error))
    return std::nullopt;
  LogitsPlan plan;
  if (!planLogits(spec, name, plan, error))
    return std::nullopt;
  return plan.vocab;
}

// ---- loop ----------------------------------------------------------------------------------------

std::string metricsJsonl(const std::vector<StepRecord> &records) {
  std::string out;
  for (const StepRecord &r : records) {
    nlohmann::ordered_json j;
    j["step"] = r.step;
    j["loss"] = r.loss; // nlohmann writes NaN and infinities as null
    j["lr"] = r.lr;
    j["ms"] = r.ms;
    if (r.tokens > 0)
      j["tokens_per_s"] = r.ms > 0 ? static_cast<double>(r.tokens) * 1e3 / r.ms : 0.0;
    j["skipped"] = r.skipped;
    out += j.dump();
    out += '\n';
  }
  return out;
}

std::string formatLoss(double loss) {
  char buf[64];
  const double a = std::fabs(loss);
  if (!std::isfinite(loss) || loss == 0 || (a >= 1e-4 && a < 1e6))
    std::snprintf(buf, sizeof buf, "%.6f", loss);
  else
    std::snprintf(buf, sizeof buf, "%.6e", loss);
  return buf;
}

std::string formatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0)
    return "?";
  const long long t = std::llround(std::min(seconds, 1e12));
  char buf[64];
  if (t < 60)
    std::snprintf(buf, sizeof buf, "%llds", t);
  else if (t < 3600)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%lldh%02lldm%02llds", t / 3600, t / 60 % 60, t % 60);
  return buf;
}

std::string formatRate(double v) {
  char buf[64];
  if (!std::isfinite(v) || v < 0)
    return "?";
  if (v < 1e3)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else if (v < 1e6)
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  return buf;
}

namespace {

/// Counted steps per second of this process, and the seconds left.
void rates(const Progress &p, double &stepsPerSecond, double &eta) {
  stepsPerSecond =
      p.elapsedSeconds > 0 ? static_cast<double>(p.stepsDone) / p.elapsedSeconds : 0;
  eta = stepsPerSecond > 0 ? static_cast<double>(p.steps - p.step) / stepsPerSecond : 0;
}

} // namespace

std::string progressLine(const Progress &p) {
  double rate, eta;
  rates(p, rate, eta);
  char buf[320];
  std::snprintf(buf, sizeof buf, "step %lld/%lld  loss %s  lr %.2e  %.1f steps/s",
                static_cast<long long>(p.step), static_cast<long long>(p.steps),
                formatLoss(p.loss).c_str(), p.lr, rate);
  std::string line = buf;
  if (p.tokensPerSecond > 0)
    line += "  " + formatRate(p.tokensPerSecond) + " tok/s";
  std::snprintf(buf, sizeof buf, "  eta %.1f s", eta);
  line += buf;
  if (p.skipped > 0)
    line += "  (" + std::to_string(p.skipped) + " skipped)";
  return line;
}

std::string progressBar(const Progress &p, int width) {
  double rate, eta;
  rates(p, rate, eta);
  width = std::max(width, 1);
  const double frac =
      p.steps > 0 ? std::clamp(static_cast<double>(p.step) / static_cast<double>(p.steps), 0.0, 1.0)
                  : 0.0;
  const int filled = static_cast<int>(frac * width);
  char buf[128];
  std::snprintf(buf, sizeof buf, "step %lld/%lld [", static_cast<long long>(p.step),
                static_cast<long long>(p.steps));
  std::string line = buf;
  line += std::string(static_cast<size_t>(filled), '#');
  line += std::string(static_cast<size_t>(width - filled), '-');
  if (std::isfinite(p.loss))
    std::snprintf(buf, sizeof buf, "] loss %.4f", p.loss);
  else
    std::snprintf(buf, sizeof buf, "] loss %s", formatLoss(p.loss).c_str());
  line += buf;
  if (p.tokensPerSecond > 0) {
    line += " | " + formatRate(p.tokensPerSecond) + " tok/s";
  } else {
    std::snprintf(buf, sizeof buf, " | %.1f steps/s", rate);
    line += buf;
  }
  line += " | eta " + formatDuration(eta);
  if (p.skipped > 0)
    line += " | " + std::to_string(p.skipped) + " skipped";
  return line;
}

TrainResult runTraining(const TrainRunConfig &c, BatchLoader *loader, const TrainHooks &hooks) {
  TrainResult result;
  TrainProgress &p = result.progress;
  p.step = c.startStep;
  TokenBatch batch;
  try {
    while (p.step < c.schedule.steps) {
      const int64_t t = p.step + 1;
      StepRecord r;
      r.step = t;
      r.lr = learningRate(c.schedule, t);
      if (loader)
        loader->next(batch);
      std::string error;
      if (!hooks.step(t, r.lr, loader ? &batch : nullptr, r, error)) {
        result.outcome = TrainOutcome::Failed;
        result.error = error.rfind("step ", 0) == 0 ? error : "step " + std::to_string(t) + ": " + error;
        return result;
      }
      r.step = t;
      ++p.attempts;
      if (!std::isfinite(r.loss)) {
        r.skipped = true;
        ++p.skipped;
        ++p.consecutiveSkips;
        if (hooks.onStep)
          hooks.onStep(r, p);
        if (p.consecutiveSkips > c.maxSkips) {
          result.outcome = TrainOutcome::TooManySkips;
          result.error = "step " + std::to_string(t) + ": loss is " + numberText(r.loss);
          if (c.maxSkips > 0)
            result.error += " for " + std::to_string(p.consecutiveSkips) +
                            " consecutive steps (more than --max-skips " +
                            std::to_string(c.maxSkips) + ")";
          return result;
        }
        continue;
      }
      r.skipped = false;
      p.consecutiveSkips = 0;
      p.step = t;
      if (hooks.onStep)
        hooks.onStep(r, p);
      if (hooks.save && c.saveEvery > 0 && t % c.saveEvery == 0 && t < c.schedule.steps) {
        if (!hooks.save(p, error)) {
          result.outcome = TrainOutcome::Failed;
          result.error = "checkpoint after step " + std::to_string(t) + ": " + error;
          return result;
        }
      }
    }
  } catch (const std::exception &e) { // out of memory drawing a batch, say
    result.outcome = TrainOutcome::Failed;
    result.error = "step " + std::to_string(p.step + 1) + ": " + e.what();
    return result;
  }
  result.outcome = TrainOutcome::Finished;
  return result;
}

bool TrainLoop::uploadScalar(int buffer, double value, std::string &error) {
  // The value goes up as an F64 tensor of the buffer's shape; upload() rounds
  // it once to the buffer's dtype.
  st::TensorInfo t;
  t.name = ex_.bundle().buffers[buffer].name;
  t.dtype = st::DType::F64;
  t.shape = ex_.bundle().buffers[buffer].shape;
  t.bytes = sizeof value;
  return ex_.upload(buffer, t, reinterpret_cast<const uint8_t *>(&value), error);
}

bool uploadTokens(Executor &ex, const TokenInputs &tokens, const TokenBatch &batch,
                  std::string &error) {
  auto up = [&](int id, const std::vector<int32_t> &values) {
    const Buffer &b = ex.bundle().buffers[id];
    st::TensorInfo t;
    t.name = b.name;
    t.dtype = st::DType::I32;
    t.shape = {batch.batch, batch.seqLen};
    t.bytes = values.size() * sizeof(int32_t);
    return ex.upload(id, t, reinterpret_cast<const uint8_t *>(values.data()), error);
  };
  return up(tokens.inputIds, batch.inputIds) &&
         (tokens.labels < 0 || up(tokens.labels, batch.labels));
}

bool TrainLoop::step(int64_t t, double lr, const TokenBatch *batch, StepRecord &record,
                     std::string &error) {
  const auto start = std::chrono::steady_clock::now();
  record.step = t;
  record.lr = lr;
  std::vector<double> loss;
  if ((batch && !uploadTokens(ex_, plan_.tokens, *batch, error)) ||
      !uploadScalar(plan_.lr, lr, error) ||
      (plan_.step >= 0 && !uploadScalar(plan_.step, static_cast<double>(t), error)) ||
      !ex_.run(plan_.entry, error) || !ex_.download(plan_.loss, loss, error)) {
    error = "step " + std::to_string(t) + ": " + error;
    return false;
  }
  record.loss = loss.empty() ? std::nan("") : loss.front();
  record.tokens = batch ? batch->batch * batch->seqLen : 0;
  record.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                  .count();
  return true;
}

namespace {
bool uploadF64(Executor &ex, int buffer, double value, std::string &error) {
  st::TensorInfo t;
  t.name = ex.bundle().buffers[buffer].name;
  t.dtype = st::DType::F64;
  t.shape = ex.bundle().buffers[buffer].shape;
  t.bytes = sizeof value;
  return ex.upload(buffer, t, reinterpret_cast<const uint8_t *>(&value), error);
}
} // namespace

bool planAccumulation(const BundleSpec &spec, const std::string &trainEntry,
                      AccumulationPlan &plan, std::string &error) {
  std::string base = trainEntry;
  if (endsWith(base, kTrainStepSuffix))
    base.resize(base.size() - kTrainStepSuffix.size());
  plan.accumulate = base + "_accumulate";
  plan.apply = base + "_apply";
  auto acc = spec.entries.find(plan.accumulate), apply = spec.entries.find(plan.apply);
  if (acc == spec.entries.end() || apply == spec.entries.end()) {
    error = "--batch-accum needs the entries '" + plan.accumulate + "' and '" + plan.apply +
            "', which this bundle lacks (qtune-compile --train adds them, except for QFT, "
            "whose gradient is fused into the update)";
    return false;
  }
  if (!planTokenInputs(spec, plan.accumulate, acc->second.inputs, /*needLabels=*/true,
                       plan.tokens, error))
    return false;
  plan.loss = findIn(spec, acc->second.outputs, kLossOutput);
  plan.lr = findIn(spec, apply->second.inputs, kLrInput);
  plan.step = findIn(spec, apply->second.inputs, kStepInput);
  plan.count = findIn(spec, apply->second.inputs, "accum_count");
  if (plan.loss < 0 || plan.lr < 0 || plan.count < 0) {
    error = "entries '" + plan.accumulate + "'/'" + plan.apply +
            "' do not follow the accumulation convention (a 'loss' output; 'lr' and "
            "'accum_count' inputs)";
    return false;
  }
  if (!checkScalar(spec, plan.apply, plan.lr, "input", error) ||
      !checkScalar(spec, plan.apply, plan.count, "input", error) ||
      !checkScalar(spec, plan.accumulate, plan.loss, "output", error))
    return false;
  for (int id : acc->second.params)
    if (endsWith(spec.buffers[id].name, ".grad_acc"))
      plan.accumulators.push_back(id);
  return true;
}

AccumulationLoop::AccumulationLoop(Executor &ex, const AccumulationPlan &plan,
                                   BatchLoader &loader, int64_t micro,
                                   nccl::Communicator *comm)
    : ex_(ex), plan_(plan), loader_(loader), micro_(micro), comm_(comm) {
  if (!comm_)
    return;
  for (const GradientBucket &bucket :
       gradientBuckets(ex_.bundle(), plan_.accumulators, kGradientBucketBytes)) {
    bucketAddresses_.push_back(ex_.arena() + bucket.offset);
    bucketCounts_.push_back(bucket.count);
  }
}

bool AccumulationLoop::reset(std::string &error) {
  for (int id : plan_.accumulators)
    if (!ex_.fill(id, 0, error))
      return false;
  return true;
}

bool AccumulationLoop::step(int64_t t, double lr, const TokenBatch &first, StepRecord &record,
                            std::string &error) {
  const auto start = std::chrono::steady_clock::now();
  record.step = t;
  record.lr = lr;
  record.tokens = 0;
  double sum = 0;
  int64_t finite = 0;
  TokenBatch batch;
  for (int64_t k = 0; k < micro_; ++k) {
    if (k > 0)
      loader_.next(batch);
    const TokenBatch &b = k == 0 ? first : batch;
    std::vector<double> loss;
    if (!uploadTokens(ex_, plan_.tokens, b, error) || !ex_.run(plan_.accumulate, error) ||
        !ex_.download(plan_.loss, loss, error)) {
      error = "step " + std::to_string(t) + ", micro-batch " + std::to_string(k + 1) + ": " + error;
      return false;
    }
    record.tokens += b.batch * b.seqLen;
    if (!loss.empty() && std::isfinite(loss.front())) {
      sum += loss.front();
      ++finite;
    }
  }
  if (comm_) {
    std::vector<double> totals{sum, double(finite), double(record.tokens)};
    if (!comm_->allReduceSumHost(totals, error)) {
      error = "step " + std::to_string(t) + ": " + error;
      return false;
    }
    sum = totals[0];
    finite = static_cast<int64_t>(totals[1]);
    record.tokens = static_cast<int64_t>(totals[2]);
    if (finite) {
      if (!comm_->allReduceSumF32(bucketAddresses_, bucketCounts_, error)) {
        error = "step " + std::to_string(t) + ": " + error;
        return false;
      }
    }
  }
  record.loss = finite ? sum / double(finite) : std::nan("");
  if (finite && (!uploadF64(ex_, plan_.lr, lr, error) ||
                 (plan_.step >= 0 && !uploadF64(ex_, plan_.step, double(t), error)) ||
                 !uploadF64(ex_, plan_.count, double(finite), error) ||
                 !ex_.run(plan_.apply, error))) {
    error = "step " + std::to_string(t) + ": " + error;
    return false;
  }
  record.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                  .count();
  return true;
}

std::vector<GradientBucket> gradientBuckets(const BundleSpec &spec, const std::vector<int> &ids,
                                            uint64_t maxBytes) {
  std::vector<int> sorted = ids;
  std::sort(sorted.begin(), sorted.end(), [&](int a, int b) {
    return spec.buffers[a].offset < spec.buffers[b].offset;
  });
  std::vector<GradientBucket> buckets;
  uint64_t end = 0; // arena byte past the last bucket's last buffer
  for (int id : sorted) {
    const Buffer &b = spec.buffers[id];
    const uint64_t alignedEnd = (end + kBufferAlignment - 1) / kBufferAlignment * kBufferAlignment;
    const bool adjacent = !buckets.empty() && b.offset == alignedEnd;
    const uint64_t grown = b.offset + b.bytes - (buckets.empty() ? 0 : buckets.back().offset);
    if (adjacent && grown <= maxBytes) {
      buckets.back().count = grown / sizeof(float);
    } else {
      buckets.push_back({b.offset, b.bytes / sizeof(float)});
    }
    end = b.offset + b.bytes;
  }
  return buckets;
}

} // namespace qtune::rt
