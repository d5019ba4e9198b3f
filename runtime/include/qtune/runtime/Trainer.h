//===- Trainer.h - running a bundle's train-step entry ----------*- C++ -*-===//
//
// The runtime side of training: the learning-rate schedule, the checks that a
// bundle's entry follows the train-step convention (docs/bundle.md, "Train-step
// entries"), the token-model entries (loss, logits), and the loop that runs a
// train step step after step, skipping steps whose loss is not finite and
// saving checkpoints.
//
// A train-step entry `<fn>_train_step` takes its batch tensors plus two scalars
// the trainer supplies itself as inputs (`lr`, and `step` where the optimizer
// needs it), the model's frozen and trainable tensors and the optimizer states
// as params, and writes a scalar `loss` output; the updated params are outputs
// with the same buffer ids as the params, updated in place, so running the
// entry again continues training from where the arena is. Token models take
// the batch as `input_ids` and `labels`, both I32 [B, S].
//
// Everything but TrainLoop is pure and needs no GPU: runTraining drives any
// step function (tests use one on the CPU). Nothing here throws.
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_TRAINER_H
#define QTUNE_RUNTIME_TRAINER_H

#include "qtune/runtime/Bundle.h"
#include "qtune/runtime/Executor.h"
#include "qtune/runtime/Nccl.h"
#include "qtune/runtime/TokenData.h"

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
/// Token models: the batch inputs, the logits output and its entry's suffix.
constexpr std::string_view kInputIds = "input_ids";
constexpr std::string_view kLabels = "labels";
constexpr std::string_view kLogitsOutput = "logits";
constexpr std::string_view kLogitsSuffix = "_logits";

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

/// The token inputs of an entry: `input_ids` and `labels`, both I32 [B, S].
struct TokenInputs {
  int inputIds = -1; ///< buffer id, -1 when absent
  int labels = -1;   ///< buffer id, -1 when absent (logits entries have none)
  int64_t batch = 0; ///< B
  int64_t seqLen = 0; ///< S
};

/// Finds `input_ids` and, when `needLabels`, `labels` among `inputs` of entry
/// `entry`: each must be an I32 buffer of shape [B, S] with B, S >= 1, the two
/// of the same shape. Errors name the entry and the buffer, e.g. "entry
/// 'm_train_step': input 'labels' is F32 [4, 128]; it must be I32 [B, S] like
/// input_ids (I32 [4, 128])".
bool planTokenInputs(const BundleSpec &spec, const std::string &entry,
                     const std::vector<int> &inputs, bool needLabels, TokenInputs &tokens,
                     std::string &error);

/// The buffers of a train-step entry, sorted by what the trainer does with them.
struct TrainPlan {
  std::string entry;
  int lr = -1;   ///< input `lr`: uploaded before every step
  int step = -1; ///< input `step` (1-based step number), or -1 when the entry has none
  int loss = -1; ///< output `loss`: read after every step
  /// Inputs other than lr and step: the batch (from the inputs file, uploaded
  /// once, or input_ids and labels from a token file, uploaded every step).
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
  /// The token inputs when the batch comes from a token file (set by the
  /// caller with planTokenInputs; inputIds is -1 otherwise).
  TokenInputs tokens;
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

/// The trainable params and optimizer states of a plan (in entry order): what
/// a checkpoint holds. Frozen params come from the params file again.
std::vector<int> checkpointedParams(const BundleSpec &spec, const TrainPlan &plan);

// ---- token-model entries: loss and logits ----------------------------------------------------

/// An entry `<fn>` computing the mean cross entropy of a batch: inputs exactly
/// `input_ids` and `labels` (I32 [B, S]), output `loss` (float scalar).
struct LossPlan {
  std::string entry;
  TokenInputs tokens;
  int loss = -1;
  std::vector<int> params; ///< every param: read from the params files
};

/// The loss entry: `requested` when non-empty, otherwise the one entry whose
/// inputs are exactly input_ids and labels and whose only output is `loss`
/// (so not `<fn>_grad`, which writes gradients too).
bool selectLossEntry(const BundleSpec &spec, const std::string &requested, std::string &name,
                     std::string &error);
bool planLoss(const BundleSpec &spec, const std::string &name, LossPlan &plan,
              std::string &error);

/// An entry `<fn>_logits`: input exactly `input_ids` (I32 [B, S]), output
/// `logits`, F32 or BF16 of shape [B, S, V] or [B*S, V].
struct LogitsPlan {
  std::string entry;
  TokenInputs tokens;
  int logits = -1;
  int64_t vocab = 0; ///< V
  std::vector<int> params;
};

/// The logits entry: `requested` when non-empty, otherwise the one entry whose
/// name ends in "_logits".
bool selectLogitsEntry(const BundleSpec &spec, const std::string &requested, std::string &name,
                       std::string &error);
bool planLogits(const BundleSpec &spec, const std::string &name, LogitsPlan &plan,
                std::string &error);

/// The vocabulary size the bundle tells for entry `entry` (a train step
/// `<fn>_train_step` or a loss entry `<fn>`): the last dim of the `logits`
/// output of `<fn>_logits`, or of the bundle's only "_logits" entry; nullopt
/// when there is none (or it does not follow the convention).
std::optional<int64_t> bundleVocab(const BundleSpec &spec, const std::string &entry);

// ---- the loop ----------------------------------------------------------------------------

struct StepRecord {
  int64_t step = 0; ///< 1-based; a skipped step's number is tried again
  double loss = 0;
  double lr = 0;
  double ms = 0;      ///< wall clock of the step: uploads, launches, loss download
  int64_t tokens = 0; ///< tokens in the step's batch (B*S); 0 when not a token batch
  bool skipped = false; ///< the loss was not finite: the step was not counted
};

/// One JSON object per line:
/// {"step":1,"loss":2.5,"lr":0.001,"ms":0.12,"tokens_per_s":5000.0,"skipped":false}
/// (a non-finite loss is written as null; tokens_per_s, tokens / step time,
/// only for token batches).
std::string metricsJsonl(const std::vector<StepRecord> &records);

/// A number in error messages: "%g", "nan" for NaN ("inf", "-inf" as printf).
std::string numberText(double v);

/// A loss for people: "%.6f" between 1e-4 and 1e6 (and for 0 and non-finite
/// values), "%.6e" otherwise: "0.012345", "3.500000e-07".
std::string formatLoss(double loss);
/// A duration for people: "45s", "1m20s", "2h05m00s" (rounded to seconds).
std::string formatDuration(double seconds);
/// A rate for people: "812", "12.3k", "4.56M".
std::string formatRate(double perSecond);

/// What a progress report shows.
struct Progress {
  int64_t step = 0;  ///< steps counted so far (of the whole run, resumed ones included)
  int64_t steps = 0; ///< the run's total (--steps)
  double loss = 0;   ///< of the last step
  double lr = 0;     ///< of the last step
  double elapsedSeconds = 0; ///< since this process started training
  int64_t stepsDone = 0;     ///< steps counted by this process
  double tokensPerSecond = 0; ///< 0 when unknown
  int64_t skipped = 0;        ///< skipped by this process
};

/// "step 40/200  loss 0.012345  lr 1.00e-03  812.3 steps/s  eta 0.2 s", plus
/// "  12.3k tok/s" before eta when tokensPerSecond > 0 and "  (2 skipped)" at
/// the end when steps were skipped. Rates come from stepsDone and elapsed.
std::string progressLine(const Progress &p);
/// "step 40/200 [#####-----] loss 2.3100 | 12.3k tok/s | eta 1m20s" (steps/s
/// instead of tok/s when unknown; "| 2 skipped" when steps were skipped);
/// `width` is the number of cells of the bar.
std::string progressBar(const Progress &p, int width);

/// How runTraining runs.
struct TrainRunConfig {
  LrSchedule schedule;   ///< its `steps` is the run's total
  int64_t startStep = 0; ///< steps already done (resuming): the first step is startStep + 1
  /// Consecutive steps with a non-finite loss that are skipped; one more
  /// stops the run. 0: the first non-finite loss stops it.
  int64_t maxSkips = 0;
  /// Call `save` after every saveEvery-th step but the last (0: never).
  int64_t saveEvery = 0;
};

/// Where a run is.
struct TrainProgress {
  int64_t step = 0;    ///< steps counted so far (startStep included)
  int64_t attempts = 0; ///< train-step runs by this process, skipped ones included
  int64_t skipped = 0;  ///< steps skipped by this process
  int64_t consecutiveSkips = 0;
};

struct TrainHooks {
  /// Runs step `t` (learning rate `lr`) on `batch` (null when the batch is not
  /// drawn from a loader) and fills record.loss, ms and tokens; false on a
  /// failure (`error` says why). A non-finite loss is no failure: the step is
  /// skipped.
  std::function<bool(int64_t t, double lr, const TokenBatch *batch, StepRecord &record,
                     std::string &error)>
      step;
  /// Saves a checkpoint after step progress.step (may be empty).
  std::function<bool(const TrainProgress &progress, std::string &error)> save;
  /// Called after every step, skipped ones included (may be empty).
  std::function<void(const StepRecord &record, const TrainProgress &progress)> onStep;
};

enum class TrainOutcome {
  Finished,     ///< every step up to schedule.steps was counted
  TooManySkips, ///< more than maxSkips consecutive non-finite losses
  Failed        ///< a hook failed
};

struct TrainResult {
  TrainOutcome outcome = TrainOutcome::Failed;
  TrainProgress progress;
  /// Failed: "step 7: <hook's error>" or "checkpoint after step 50: <error>".
  /// TooManySkips with maxSkips 0: "step 63: loss is nan"; otherwise "step 63:
  /// loss is nan for 11 consecutive steps (more than --max-skips 10)".
  std::string error;
};

/// Runs steps startStep + 1 .. schedule.steps: draws the step's batch from
/// `loader` (may be null), calls hooks.step with the schedule's learning
/// rate, and counts the step when its loss is finite. A step with a
/// non-finite loss is skipped: not counted (the next attempt runs the same
/// step number, with the next batch, and the same learning rate), which is
/// right when the train step leaves every param untouched on a non-finite
/// loss, as the compiler's do. Periodic saves follow TrainRunConfig::saveEvery;
/// the final save is the caller's.
TrainResult runTraining(const TrainRunConfig &config, BatchLoader *loader,
                        const TrainHooks &hooks);

/// Runs the steps of a planned train-step entry on an executor whose params
/// (and batch, unless it comes from a token file) are already uploaded.
class TrainLoop {
public:
  /// `ex` and `plan` must outlive the loop; `plan` must come from planTraining
  /// on ex.bundle() (with plan.tokens set for token batches).
  TrainLoop(Executor &ex, const TrainPlan &plan) : ex_(ex), plan_(plan) {}

  /// Step t: uploads `batch` into input_ids and labels (when given), `lr` into
  /// `lr` and t into `step` (if the entry has it), runs the entry and reads
  /// `loss` into record.loss (which may be non-finite). Fails only when the
  /// GPU does ("step t: ...").
  bool step(int64_t t, double lr, const TokenBatch *batch, StepRecord &record,
            std::string &error);

private:
  bool uploadScalar(int buffer, double value, std::string &error);

  Executor &ex_;
  const TrainPlan &plan_;
};

/// Uploads a batch's input_ids and (when `tokens.labels` >= 0) labels.
bool uploadTokens(Executor &ex, const TokenInputs &tokens, const TokenBatch &batch,
                  std::string &error);

// ---- gradient accumulation -----------------------------------------------------------------

/// The two entries `qtune-compile --train` adds beside `<fn>_train_step`:
/// `<fn>_accumulate` (a micro-batch's loss; adds its gradients into the f32
/// accumulators `<p>.grad_acc`, unless the loss is not finite) and
/// `<fn>_apply` (inputs `lr`, `step`, `accum_count`: one optimizer step with
/// the mean accumulated gradient; resets the accumulators).
struct AccumulationPlan {
  std::string accumulate, apply;
  TokenInputs tokens; ///< the accumulate entry's input_ids and labels
  int loss = -1;      ///< the accumulate entry's `loss` output
  int lr = -1, step = -1, count = -1; ///< the apply entry's inputs (step: -1 if none)
  std::vector<int> accumulators;      ///< every `*.grad_acc` buffer
};

/// Finds the entries for train entry `trainEntry` ("model_train_step" ->
/// "model_accumulate", "model_apply") and checks their convention. Errors say
/// what is missing, e.g. "--batch-accum needs the entries 'model_accumulate'
/// and 'model_apply', which this bundle lacks (qtune-compile --train adds them,
/// except for QFT, whose gradient is fused into the update)".
bool planAccumulation(const BundleSpec &spec, const std::string &trainEntry,
                      AccumulationPlan &plan, std::string &error);

/// Steps made of `micro` micro-batches: accumulate on each (the first is the
/// batch the loop drew, the others come from `loader`), then apply with the
/// number of micro-batches whose loss was finite. record.loss is their mean
/// loss, NaN when none was finite (then nothing changed and the step counts
/// as skipped); record.tokens counts every micro-batch.
///
/// Data parallel (`comm` given): every rank accumulates its own shard's
/// micro-batches, then the ranks sum their accumulators (f32, in buckets, see
/// gradientBuckets), their finite-loss counts, loss sums and token counts, and
/// every rank applies the same mean gradient, so the parameters stay
/// identical; record.loss and record.tokens are the whole world's.
class AccumulationLoop {
public:
  /// With `comm`, plans the gradient buckets once (see gradientBuckets).
  AccumulationLoop(Executor &ex, const AccumulationPlan &plan, BatchLoader &loader,
                   int64_t micro, nccl::Communicator *comm = nullptr);
  /// Zeroes the accumulators (before the first step).
  bool reset(std::string &error);
  bool step(int64_t t, double lr, const TokenBatch &first, StepRecord &record,
            std::string &error);

private:
  Executor &ex_;
  const AccumulationPlan &plan_;
  BatchLoader &loader_;
  int64_t micro_;
  nccl::Communicator *comm_;
  /// Data parallel: the accumulators' all-reduce buckets (device address,
  /// f32 count).
  std::vector<cuda::CUdeviceptr> bucketAddresses_;
  std::vector<size_t> bucketCounts_;
};

/// Largest gradient bucket of data-parallel training.
constexpr uint64_t kGradientBucketBytes = uint64_t(64) << 20;

/// One all-reduce of data-parallel training: `count` f32 elements from arena
/// byte `offset`.
struct GradientBucket {
  uint64_t offset = 0;
  uint64_t count = 0;
};

/// The accumulators `ids` (f32 buffers) as buckets of at most `maxBytes`
/// (a buffer larger than that is a bucket of its own): buffers that follow
/// each other in the arena (only alignment padding between them, which the
/// sum may overwrite: nothing reads it) share a bucket, so a model's many
/// small adapter gradients cost a few collectives. In arena order.
std::vector<GradientBucket> gradientBuckets(const BundleSpec &spec, const std::vector<int> &ids,
                                            uint64_t maxBytes);

} // namespace qtune::rt

#endif // QTUNE_RUNTIME_TRAINER_H
