//===- Trainer.cpp - running a bundle's train-step entry --------------------===//

#include "qtune/runtime/Trainer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>

namespace qtune::rt {

namespace {


std::string numberText(double v) {
  if (std::isnan(v))
    return "nan";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

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

// ---- loop ----------------------------------------------------------------------------------------

std::string metricsJsonl(const std::vector<StepRecord> &records) {
  std::string out;
  for (const StepRecord &r : records) {
    nlohmann::ordered_json j;
    j["step"] = r.step;
    j["loss"] = r.loss; // nlohmann writes NaN and infinities as null
    j["lr"] = r.lr;
    j["ms"] = r.ms;
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

std::string progressLine(const StepRecord &r, int64_t steps, double elapsedSeconds) {
  const std::string loss = formatLoss(r.loss);
  const double rate = elapsedSeconds > 0 ? static_cast<double>(r.step) / elapsedSeconds : 0;
  const double eta = rate > 0 ? static_cast<double>(steps - r.step) / rate : 0;
  char buf[256];
  std::snprintf(buf, sizeof buf, "step %lld/%lld  loss %s  lr %.2e  %.1f steps/s  eta %.1f s",
                static_cast<long long>(r.step), static_cast<long long>(steps), loss.c_str(), r.lr, rate,
                eta);
  return buf;
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

bool TrainLoop::step(int64_t t, StepRecord &record, std::string &error) {
  const auto start = std::chrono::steady_clock::now();
  record = StepRecord{};
  record.step = t;
  record.lr = learningRate(schedule_, t);
  std::vector<double> loss;
  if (!uploadScalar(plan_.lr, record.lr, error) ||
      (plan_.step >= 0 && !uploadScalar(plan_.step, static_cast<double>(t), error)) ||
      !ex_.run(plan_.entry, error) || !ex_.download(plan_.loss, loss, error)) {
    error = "step " + std::to_string(t) + ": " + error;
    return false;
  }
  record.loss = loss.empty() ? std::nan("") : loss.front();
  record.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                  .count();
  if (!std::isfinite(record.loss)) {
    error = "step " + std::to_string(t) + ": loss is " + numberText(record.loss);
    return false;
  }
  return true;
}

} // namespace qtune::rt
