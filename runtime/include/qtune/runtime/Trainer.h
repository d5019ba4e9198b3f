//===- Trainer.h - running a bundle's train-step entry ----------*- C++ -*-===//
//
// The runtime side of training: the learning-rate schedule, the checks that a
// bundle's entry follows the train-step convention (docs/bundle.md, "Train-step
// entries"), and the loop that runs it step after step on an Executor.
//
// A train-step entry `<fn>_train_step` takes its batch tensors plus two scalars
// the trainer supplies itself as inputs (`lr`, and `step` where the optimizer
// needs it), the model's frozen and trainable tensors and the optimizer states
// as params, and writes a scalar `loss` output; the updated params are outputs
// with the same buffer ids as the params, updated in place, so running the
// entry again continues training from where the arena is.
//
// Everything but TrainLoop is pure and needs no GPU. Nothing here throws.
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_TRAINER_H
#define QTUNE_RUNTIME_TRAINER_H

#include "qtune/runtime/Bundle.h"
#include "qtune/runtime/Executor.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qtune::rt {

/// Entries whose name ends in this are train steps.
constexpr std::string_view kTrainStepSuffix = "_train_step";
/// Names of the scalar inputs the trainer supplies and of the loss output.
constexpr std::string_view kLrInput = "lr";
constexpr std::string_view kStepInput = "step";
constexpr std::string_view kLossOutput = "loss";
/// The `step` input is an F32: step numbers above 2^24 would not be exact.
constexpr int64_t kMaxSteps = int64_t(1) << 24;

// ---- learning-rate schedule ----------------------------------------------------------

enum class ScheduleKind { Constant, Cosine };

/// "constant", "cosine".
std::string_view scheduleName(ScheduleKind kind);
std::optional<ScheduleKind> parseSchedule(std::string_view name);

/// The learning rate of every step t = 1..steps:
///
///  - warmup (t <= warmup): lr * t / warmup, from lr/warmup up to lr at t = warmup;
///  - then, constant: lr;
///  - then, cosine: minLr + (lr - minLr) * (1 + cos(pi * p)) / 2 with
///    p = (t - s0) / (steps - s0) and s0 = max(warmup, 1): the peak lr is used
///    exactly once (at the last warmup step, or at step 1 without warmup) and
///    the last step uses minLr. With steps == s0 the peak is the only value.
struct LrSchedule {
  ScheduleKind kind = ScheduleKind::Constant;
  double lr = 0;      ///< peak learning rate
  double minLr = 0;   ///< cosine only: the learning rate of the last step
  int64_t warmup = 0; ///< linear warmup steps
  int64_t steps = 0;  ///< total steps
};

/// Checks 1 <= steps <= kMaxSteps, lr and minLr finite and >= 0, minLr <= lr
/// and 0 <= warmup <= steps. Messages name the command-line options
/// ("--steps must be at least 1 (got 0)").
bool checkSchedule(const LrSchedule &s, std::string &error);

/// The learning rate of 1-based step `t` (see LrSchedule); `s` must pass
/// checkSchedule and 1 <= t <= s.steps.
double learningRate(const LrSchedule &s, int64_t t);

// ---- the train-step convention ---------------------------------------------------------

/// The entry to train: `requested` when non-empty (it must exist), otherwise
/// the one entry whose name ends in "_train_step". Errors list the entries, e.g.
/// "no entry ends in '_train_step' (entries: backward, forward); choose one with
/// --entry" or "2 entries end in '_train_step' (a_train_step, b_train_step);
/// choose one with --entry".
bool selectTrainEntry(const BundleSpec &spec, const std::string &requested, std::string &name,
                      std::string &error);

/// The buffers of a train-step entry, sorted by what the trainer does with them.
struct TrainPlan {
  std::string entry;
  int lr = -1;   ///< input `lr`: uploaded before every step
  int step = -1; ///< input `step` (1-based step number), or -1 when the entry has none
  int loss = -1; ///< output `loss`: read after every step
  /// Inputs other than lr and step: read from the inputs file (uploaded once).
  std::vector<int> batch;
  /// Params the params file must hold: every param that is not an optimizer
  /// state (frozen and trainable ones).
  std::vector<int> required;
  /// Params with role optimizer_state: loaded where the params file holds
  /// them, zero otherwise.
  std::vector<int> optimizerStates;
  /// Every param, in entry order: what is saved after training.
  std::vector<int> saved;
  /// Outputs that are neither `loss` nor a param (not saved; normally none).
  std::vector<int> otherOutputs;
};

/// Checks that entry `name` of `spec` follows the convention and sorts its
/// buffers: an input `lr` and optionally an input `step`, each a float scalar
/// (one element; F32 [] by convention), and an output `loss`, a float scalar.
/// Outputs that are params are the params updated in place, never separate
/// buffers. Errors name the entry and what is wrong, e.g. "entry
/// 'layer_train_step' has no input 'lr' (inputs: x, target); a train-step entry
/// takes the learning rate as an F32 [] input named 'lr'".
bool planTraining(const BundleSpec &spec, const std::string &name, TrainPlan &plan,
                  std::string &error);

/// Splits plan.optimizerStates by whether the params file has a tensor of that
/// buffer's name (`has`; may be empty when there is no params file): `load`
/// receives those it has, `zero` the others, both in entry order.
void splitOptimizerStates(const BundleSpec &spec, const TrainPlan &plan,
                          const std::function<bool(const std::string &)> &has,
                          std::vector<int> &load, std::vector<int> &zero);

// ---- the loop ----------------------------------------------------------------------------

struct StepRecord {
  int64_t step = 0; ///< 1-based
  double loss = 0;
  double lr = 0;
  double ms = 0; ///< wall clock of the step: lr/step upload, launches, loss download
};

/// One JSON object per line: {"step":1,"loss":2.5,"lr":0.001,"ms":0.12}
/// (a non-finite loss is written as null).
std::string metricsJsonl(const std::vector<StepRecord> &records);

/// A loss for people: "%.6f" between 1e-4 and 1e6 (and for 0 and non-finite
/// values), "%.6e" otherwise: "0.012345", "3.500000e-07".
std::string formatLoss(double loss);

/// "step 40/200  loss 0.012345  lr 1.00e-03  812.3 steps/s  eta 0.2 s", where
/// steps/s and eta come from `elapsedSeconds`, the wall time of steps 1..r.step.
std::string progressLine(const StepRecord &r, int64_t steps, double elapsedSeconds);

/// Runs the steps of a planned train-step entry on an executor whose batch
/// and params are already uploaded.
class TrainLoop {
public:
  /// `ex`, `plan` and `schedule` must outlive the loop; `plan` must come from
  /// planTraining on ex.bundle() and `schedule` pass checkSchedule.
  TrainLoop(Executor &ex, const TrainPlan &plan, const LrSchedule &schedule)
      : ex_(ex), plan_(plan), schedule_(schedule) {}

  /// Step t: uploads learningRate(schedule, t) into `lr` and t into `step`
  /// (if the entry has it), runs the entry and reads `loss`. A non-finite loss
  /// fails with "step t: loss is nan" (the record is still filled in).
  bool step(int64_t t, StepRecord &record, std::string &error);

private:
  bool uploadScalar(int buffer, double value, std::string &error);

  Executor &ex_;
  const TrainPlan &plan_;
  const LrSchedule &schedule_;
};

} // namespace qtune::rt

#endif // QTUNE_RUNTIME_TRAINER_H
