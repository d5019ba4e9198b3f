//===- TrainRunTest.cpp - the training loop and token-model entries ---------===//
//
// runTraining drives a step function on the CPU here: skipping non-finite
// steps, periodic saves, and resuming from a serialized trainer state with the
// same result as the uninterrupted run. The planning of token entries (loss,
// logits, train step) is checked on hand-made specs. No GPU needed.
//
//===----------------------------------------------------------------------===//

#include "qtune/runtime/Checkpoint.h"
#include "qtune/runtime/TokenData.h"
#include "qtune/runtime/Trainer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

using namespace qtune;
using namespace qtune::rt;

namespace {

constexpr int32_t kPoison = 99; ///< a label the fake model answers with a NaN loss

/// A CPU stand-in for a train step with AdamW-like dependence on the step
/// number: it leaves its state untouched on a non-finite loss, as the
/// compiler's train steps do.
struct FakeModel {
  std::vector<float> w = std::vector<float>(100, 0.0f);
  std::vector<float> m = std::vector<float>(100, 0.0f);
  std::vector<std::vector<int32_t>> seen; ///< input_ids of every batch it ran

  bool step(int64_t t, double lr, const TokenBatch *batch, StepRecord &r, std::string &) {
    seen.push_back(batch->inputIds);
    double loss = 0;
    bool poisoned = false;
    for (size_t i = 0; i < batch->labels.size(); ++i) {
      const float g = w[batch->inputIds[i]] - 0.01f * static_cast<float>(batch->labels[i]);
      loss += 0.5 * g * g;
      poisoned = poisoned || batch->labels[i] == kPoison;
    }
    r.loss = poisoned ? std::nan("") : loss;
    r.tokens = batch->batch * batch->seqLen;
    if (poisoned)
      return true;
    const float bias = 1.0f - std::pow(0.9f, static_cast<float>(t)); // needs the true t
    for (size_t i = 0; i < batch->labels.size(); ++i) {
      const int32_t id = batch->inputIds[i];
      const float g = w[id] - 0.01f * static_cast<float>(batch->labels[i]);
      m[id] = 0.9f * m[id] + 0.1f * g;
      w[id] -= static_cast<float>(lr) * m[id] / bias;
    }
    return true;
  }
};

std::unique_ptr<TokenData> data(std::vector<uint32_t> v) {
  std::string error;
  auto d = TokenData::fromTokens(std::move(v), "mem", error);
  EXPECT_NE(d, nullptr) << error;
  return d;
}

/// 0..n-1 as tokens, with the poison label at the given positions.
std::vector<uint32_t> tokenRange(size_t n, std::vector<size_t> poison = {}) {
  std::vector<uint32_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<uint32_t>(i % 90);
  for (size_t p : poison)
    v[p] = kPoison;
  return v;
}

LrSchedule cosine(int64_t steps) {
  LrSchedule s;
  s.kind = ScheduleKind::Cosine;
  s.lr = 0.05;
  s.minLr = 0.001;
  s.warmup = 3;
  s.steps = steps;
  return s;
}

TEST(TrainRunTest, RunsEveryStepWithTheSchedule) {
  auto d = data(tokenRange(200));
  std::string error;
  auto loader = BatchLoader::create(*d, 2, 4, true, 7, error);
  ASSERT_NE(loader, nullptr) << error;
  FakeModel model;
  std::vector<StepRecord> records;
  TrainHooks hooks;
  hooks.step = [&](int64_t t, double lr, const TokenBatch *b, StepRecord &r, std::string &e) {
    return model.step(t, lr, b, r, e);
  };
  hooks.onStep = [&](const StepRecord &r, const TrainProgress &) { records.push_back(r); };
  TrainRunConfig config;
  config.schedule = cosine(12);
  const TrainResult result = runTraining(config, loader.get(), hooks);
  ASSERT_EQ(result.outcome, TrainOutcome::Finished) << result.error;
  EXPECT_EQ(result.progress.step, 12);
  EXPECT_EQ(result.progress.attempts, 12);
  EXPECT_EQ(result.progress.skipped, 0);
  ASSERT_EQ(records.size(), 12u);
  for (size_t k = 0; k < records.size(); ++k) {
    EXPECT_EQ(records[k].step, static_cast<int64_t>(k + 1));
    EXPECT_EQ(records[k].lr, learningRate(config.schedule, static_cast<int64_t>(k + 1)));
    EXPECT_EQ(records[k].tokens, 8);
    EXPECT_FALSE(records[k].skipped);
  }
  EXPECT_EQ(model.seen.size(), 12u);
}

TEST(TrainRunTest, NonFiniteStepsAreSkippedNotCounted) {
  // 81 tokens, S = 4: 20 windows; window 2 ([8, 12]) has the poison as a label.
  auto d = data(tokenRange(81, {10}));
  std::string error;
  auto loader = BatchLoader::create(*d, 1, 4, /*shuffle=*/false, 0, error);
  ASSERT_NE(loader, nullptr) << error;
  FakeModel model;
  std::vector<StepRecord> records;
  std::vector<int64_t> saves;
  TrainHooks hooks;
  hooks.step = [&](int64_t t, double lr, const TokenBatch *b, StepRecord &r, std::string &e) {
    return model.step(t, lr, b, r, e);
  };
  hooks.onStep = [&](const StepRecord &r, const TrainProgress &) { records.push_back(r); };
  hooks.save = [&](const TrainProgress &p, std::string &) {
    saves.push_back(p.step);
    return true;
  };
  TrainRunConfig config;
  config.schedule = cosine(10);
  config.maxSkips = 10;
  config.saveEvery = 3;
  const TrainResult result = runTraining(config, loader.get(), hooks);
  ASSERT_EQ(result.outcome, TrainOutcome::Finished) << result.error;
  EXPECT_EQ(result.progress.step, 10);
  EXPECT_EQ(result.progress.attempts, 11);
  EXPECT_EQ(result.progress.skipped, 1);
  ASSERT_EQ(records.size(), 11u);
  // The third batch is skipped; step 3 is tried again with the next batch at
  // the same learning rate.
  EXPECT_EQ(records[2].step, 3);
  EXPECT_TRUE(records[2].skipped);
  EXPECT_TRUE(std::isnan(records[2].loss));
  EXPECT_EQ(records[3].step, 3);
  EXPECT_FALSE(records[3].skipped);
  EXPECT_EQ(records[3].lr, records[2].lr);
  EXPECT_EQ(records[10].step, 10);
  // Saves after steps 3, 6 and 9; the last step's is the caller's.
  EXPECT_EQ(saves, (std::vector<int64_t>{3, 6, 9}));
}

TEST(TrainRunTest, TooManyConsecutiveSkipsStop) {
  // Every window has a poison label: nothing can be counted.
  std::vector<size_t> poison;
  for (size_t i = 1; i < 41; i += 2)
    poison.push_back(i);
  auto d = data(tokenRange(41, poison));
  std::string error;
  auto loader = BatchLoader::create(*d, 1, 4, false, 0, error);
  ASSERT_NE(loader, nullptr) << error;
  FakeModel model;
  int saves = 0;
  TrainHooks hooks;
  hooks.step = [&](int64_t t, double lr, const TokenBatch *b, StepRecord &r, std::string &e) {
    return model.step(t, lr, b, r, e);
  };
  hooks.save = [&](const TrainProgress &, std::string &) { return ++saves > 0; };
  TrainRunConfig config;
  config.schedule = cosine(10);
  config.maxSkips = 3;
  config.saveEvery = 1;
  TrainResult result = runTraining(config, loader.get(), hooks);
  EXPECT_EQ(result.outcome, TrainOutcome::TooManySkips);
  EXPECT_EQ(result.error,
            "step 1: loss is nan for 4 consecutive steps (more than --max-skips 3)");
  EXPECT_EQ(result.progress.step, 0);
  EXPECT_EQ(result.progress.attempts, 4);
  EXPECT_EQ(saves, 0); // nothing new is saved

  config.maxSkips = 0; // the first non-finite loss stops the run
  result = runTraining(config, loader.get(), hooks);
  EXPECT_EQ(result.outcome, TrainOutcome::TooManySkips);
  EXPECT_EQ(result.error, "step 1: loss is nan");
  EXPECT_EQ(result.progress.attempts, 1);
}

TEST(TrainRunTest, SkipsResetWhenAStepCounts) {
  // Poison labels in windows 1 and 2, then 4: two in a row at most.
  auto d = data(tokenRange(41, {5, 9, 17}));
  std::string error;
  auto loader = BatchLoader::create(*d, 1, 4, false, 0, error);
  ASSERT_NE(loader, nullptr) << error;
  FakeModel model;
  TrainHooks hooks;
  hooks.step = [&](int64_t t, double lr, const TokenBatch *b, StepRecord &r, std::string &e) {
    return model.step(t, lr, b, r, e);
  };
  TrainRunConfig config;
  config.schedule = cosine(5);
  config.maxSkips = 2;
  const TrainResult result = runTraining(config, loader.get(), hooks);
  ASSERT_EQ(result.outcome, TrainOutcome::Finished) << result.error;
  EXPECT_EQ(result.progress.skipped, 3);
  EXPECT_EQ(result.progress.attempts, 8);
}

TEST(TrainRunTest, HookFailuresNameTheStep) {
  TrainHooks hooks;
  hooks.step = [](int64_t t, double, const TokenBatch *, StepRecord &r, std::string &e) {
    r.loss = 1;
    if (t == 4) {
      e = "cuLaunchKernel failed";
      return false;
    }
    return true;
  };
  hooks.save = [](const TrainProgress &, std::string &e) {
    e = "disk full";
    return false;
  };
  TrainRunConfig config;
  config.schedule = cosine(10);
  TrainResult result = runTraining(config, nullptr, hooks);
  EXPECT_EQ(result.outcome, TrainOutcome::Failed);
  EXPECT_EQ(result.error, "step 4: cuLaunchKernel failed");
  EXPECT_EQ(result.progress.step, 3);
  config.saveEvery = 2;
  result = runTraining(config, nullptr, hooks);
  EXPECT_EQ(result.outcome, TrainOutcome::Failed);
  EXPECT_EQ(result.error, "checkpoint after step 2: disk full");
}

/// Runs `steps` of the fake model from a fresh start, or from `from` (state
/// and model), saving the trainer state after step `saveAt`.
struct FakeRun {
  FakeModel model;
  TrainerState saved;
  FakeModel savedModel;
};

FakeRun trainFake(const TokenData &d, int64_t steps, const TrainerState *from,
              const FakeModel *fromModel, int64_t saveAt) {
  FakeRun run;
  std::string error;
  auto loader = BatchLoader::create(d, 3, 4, true, 2024, error);
  EXPECT_NE(loader, nullptr) << error;
  TrainRunConfig config;
  config.schedule = cosine(steps);
  config.maxSkips = 10;
  config.saveEvery = saveAt;
  if (from) {
    // What --resume does: the step, the schedule and the loader come from the
    // trainer state, read back from its JSON.
    TrainerState s;
    EXPECT_TRUE(parseTrainerState(trainerStateJson(*from), s, error)) << error;
    config.schedule = s.schedule;
    config.startStep = s.step;
    EXPECT_TRUE(loader->restore(s.data->loader, error)) << error;
    run.model = *fromModel;
    run.model.seen.clear();
  }
  TrainHooks hooks;
  hooks.step = [&](int64_t t, double lr, const TokenBatch *b, StepRecord &r, std::string &e) {
    return run.model.step(t, lr, b, r, e);
  };
  hooks.save = [&](const TrainProgress &p, std::string &) {
    run.saved.step = p.step;
    run.saved.skipped = p.skipped;
    run.saved.entry = "fake_train_step";
    run.saved.schedule = config.schedule;
    run.saved.data = DataState{"mem", TokenFormat::U32, d.size(), 3, 4, loader->state()};
    run.savedModel = run.model;
    return true;
  };
  const TrainResult result = runTraining(config, loader.get(), hooks);
  EXPECT_EQ(result.outcome, TrainOutcome::Finished) << result.error;
  return run;
}

TEST(TrainRunTest, ResumingGivesTheUninterruptedResult) {
  // 61 tokens, S = 4: 15 windows, 5 batches an epoch; 20 steps span 4+
  // epochs, and one poisoned window makes a step skipped in every epoch.
  auto d = data(tokenRange(61, {22}));
  const FakeRun straight = trainFake(*d, 20, nullptr, nullptr, 0);
  const FakeRun first = trainFake(*d, 20, nullptr, nullptr, 10); // saves at 10 (and continues)
  ASSERT_EQ(first.saved.step, 10);
  EXPECT_GT(first.saved.skipped, 0);
  const FakeRun resumed = trainFake(*d, 20, &first.saved, &first.savedModel, 0);

  // Bit for bit: the same params and states, and the same batches after the
  // checkpoint as the uninterrupted run drew.
  ASSERT_EQ(std::memcmp(resumed.model.w.data(), straight.model.w.data(), 100 * sizeof(float)), 0);
  ASSERT_EQ(std::memcmp(resumed.model.m.data(), straight.model.m.data(), 100 * sizeof(float)), 0);
  const size_t before = first.savedModel.seen.size();
  ASSERT_EQ(straight.model.seen.size(), before + resumed.model.seen.size());
  for (size_t k = 0; k < resumed.model.seen.size(); ++k)
    EXPECT_EQ(resumed.model.seen[k], straight.model.seen[before + k]) << k;

  // Restarting the step count at 1 instead (the old behaviour) would differ.
  TrainerState wrong = first.saved;
  wrong.step = 0;
  wrong.schedule.steps = 10;
  const FakeRun restarted = trainFake(*d, 10, &wrong, &first.savedModel, 0);
  EXPECT_NE(std::memcmp(restarted.model.w.data(), straight.model.w.data(), 100 * sizeof(float)),
            0);
}

// ---- token-model entries -------------------------------------------------------------------

struct SpecBuilder {
  BundleSpec spec;
  int add(const std::string &name, st::DType dt, std::vector<int64_t> shape, BufferRole role) {
    spec.buffers.push_back({name, 0, 0, dt, std::move(shape), role});
    return static_cast<int>(spec.buffers.size() - 1);
  }
};

/// llama (loss), llama_logits and llama_train_step, B = 2, S = 8, V = 300.
SpecBuilder tokenSpec() {
  SpecBuilder s;
  s.spec.target = "sm_90a";
  const int ids = s.add("input_ids", st::DType::I32, {2, 8}, BufferRole::Input);
  const int labels = s.add("labels", st::DType::I32, {2, 8}, BufferRole::Input);
  const int lr = s.add("lr", st::DType::F32, {}, BufferRole::Input);
  const int step = s.add("step", st::DType::F32, {}, BufferRole::Input);
  const int w = s.add("embed", st::DType::BF16, {300, 4}, BufferRole::Frozen);
  const int a = s.add("lora_A", st::DType::F32, {4, 4}, BufferRole::Trainable);
  const int am = s.add("lora_A.m", st::DType::F32, {4, 4}, BufferRole::OptimizerState);
  const int loss = s.add("loss", st::DType::F32, {}, BufferRole::Output);
  const int logits = s.add("logits", st::DType::BF16, {2, 8, 300}, BufferRole::Output);
  s.spec.entries["llama"] = {{ids, labels}, {w, a}, {loss}, {}};
  s.spec.entries["llama_logits"] = {{ids}, {w, a}, {logits}, {}};
  s.spec.entries["llama_train_step"] = {{ids, labels, lr, step}, {w, a, am}, {loss, a, am}, {}};
  // A gradient entry takes the same inputs as the loss entry; it is not one.
  const int grad = s.add("grad_lora_A", st::DType::F32, {4, 4}, BufferRole::Output);
  s.spec.entries["llama_grad"] = {{ids, labels}, {w, a}, {loss, grad}, {}};
  return s;
}

TEST(TokenEntriesTest, PlanTheThreeEntries) {
  SpecBuilder s = tokenSpec();
  std::string name, error;
  ASSERT_TRUE(selectLossEntry(s.spec, "", name, error)) << error;
  EXPECT_EQ(name, "llama");
  LossPlan loss;
  ASSERT_TRUE(planLoss(s.spec, name, loss, error)) << error;
  EXPECT_EQ(loss.tokens.inputIds, 0);
  EXPECT_EQ(loss.tokens.labels, 1);
  EXPECT_EQ(loss.tokens.batch, 2);
  EXPECT_EQ(loss.tokens.seqLen, 8);
  EXPECT_EQ(loss.loss, 7);
  EXPECT_EQ(loss.params, (std::vector<int>{4, 5}));

  ASSERT_TRUE(selectLogitsEntry(s.spec, "", name, error)) << error;
  EXPECT_EQ(name, "llama_logits");
  LogitsPlan logits;
  ASSERT_TRUE(planLogits(s.spec, name, logits, error)) << error;
  EXPECT_EQ(logits.vocab, 300);
  EXPECT_EQ(logits.tokens.labels, -1);
  EXPECT_EQ(logits.logits, 8);

  EXPECT_EQ(bundleVocab(s.spec, "llama_train_step"), 300);
  EXPECT_EQ(bundleVocab(s.spec, "llama"), 300);

  TrainPlan plan;
  ASSERT_TRUE(planTraining(s.spec, "llama_train_step", plan, error)) << error;
  ASSERT_TRUE(planTokenInputs(s.spec, "llama_train_step", plan.batch, true, plan.tokens, error))
      << error;
  EXPECT_EQ(plan.batch, (std::vector<int>{0, 1}));
  EXPECT_EQ(checkpointedParams(s.spec, plan), (std::vector<int>{5, 6})); // not the frozen embed

  // [B*S, V] logits are fine too.
  s.spec.buffers[8].shape = {16, 300};
  ASSERT_TRUE(planLogits(s.spec, "llama_logits", logits, error)) << error;
  EXPECT_EQ(logits.vocab, 300);
}

TEST(TokenEntriesTest, Errors) {
  SpecBuilder s = tokenSpec();
  std::string name, error;
  TokenInputs tokens;
  s.spec.buffers[1].dtype = st::DType::F32;
  EXPECT_FALSE(planTokenInputs(s.spec, "llama", {0, 1}, true, tokens, error));
  EXPECT_EQ(error, "entry 'llama': input 'labels' is F32 [2, 8]; it must be I32 [B, S] like "
                   "input_ids (I32 [2, 8])");
  s = tokenSpec();
  s.spec.buffers[0].shape = {16};
  EXPECT_FALSE(planTokenInputs(s.spec, "llama", {0, 1}, true, tokens, error));
  EXPECT_EQ(error, "entry 'llama': input 'input_ids' is I32 [16]; it must be I32 [B, S] with "
                   "B, S >= 1");
  s = tokenSpec();
  EXPECT_FALSE(planTokenInputs(s.spec, "x", {1, 2}, true, tokens, error));
  EXPECT_EQ(error, "entry 'x' has no input 'input_ids' (inputs: labels, lr); token batches go "
                   "to an I32 [B, S] input named 'input_ids'");
  EXPECT_FALSE(planTokenInputs(s.spec, "x", {0, 2}, true, tokens, error));
  EXPECT_EQ(error, "entry 'x' has no input 'labels' (inputs: input_ids, lr); token batches go "
                   "to I32 [B, S] inputs named 'input_ids' and 'labels'");

  s.spec.buffers[8].shape = {2, 9, 300};
  LogitsPlan logits;
  EXPECT_FALSE(planLogits(s.spec, "llama_logits", logits, error));
  EXPECT_EQ(error, "entry 'llama_logits': output 'logits' is BF16 [2, 9, 300]; it must be F32 or "
                   "BF16 [2, 8, V] or [16, V] for input_ids [2, 8]");
  EXPECT_EQ(bundleVocab(s.spec, "llama"), std::nullopt);
  s = tokenSpec();
  s.spec.entries.erase("llama_logits");
  EXPECT_EQ(bundleVocab(s.spec, "llama"), std::nullopt);
  EXPECT_FALSE(selectLogitsEntry(s.spec, "", name, error));
  EXPECT_EQ(error, "no entry ends in '_logits' (entries: llama, llama_grad, llama_train_step); "
                   "choose one with --entry");

  s = tokenSpec();
  s.spec.entries["other"] = s.spec.entries["llama"];
  EXPECT_FALSE(selectLossEntry(s.spec, "", name, error));
  EXPECT_EQ(error, "2 entries take exactly 'input_ids' and 'labels' and write only 'loss' "
                   "(llama, other); choose one with --entry");
  EXPECT_TRUE(selectLossEntry(s.spec, "other", name, error));
  LossPlan loss;
  EXPECT_FALSE(planLoss(s.spec, "llama_train_step", loss, error));
  EXPECT_EQ(error, "entry 'llama_train_step' takes input_ids, labels, lr, step; a loss entry "
                   "takes exactly 'input_ids' and 'labels'");
}

} // namespace
