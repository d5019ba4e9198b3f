//===- TrainerTest.cpp - lr schedules, train-step convention, qtune-run train ---===//
//
// The schedule, entry selection and planning tests need no GPU. The qtune-run
// train tests check the errors found before the GPU is touched everywhere, and
// run a hand-written PTX train step where a GPU is available (they skip, or
// check the "no CUDA GPU available" error, elsewhere).
//
//===----------------------------------------------------------------------===//

#include "qtune/runtime/Bundle.h"
#include "qtune/runtime/Cuda.h"
#include "qtune/runtime/Float16.h"
#include "qtune/runtime/Trainer.h"

#include "TestSupport.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <vector>


namespace fs = std::filesystem;
using namespace qtune;
using namespace qtune::rt;

namespace {

using namespace qtune::rt::test;

// ---- schedule --------------------------------------------------------------------------------

LrSchedule schedule(ScheduleKind kind, double lr, double minLr, int64_t warmup, int64_t steps) {
  LrSchedule s;
  s.kind = kind;
  s.lr = lr;
  s.minLr = minLr;
  s.warmup = warmup;
  s.steps = steps;
  std::string error;
  EXPECT_TRUE(checkSchedule(s, error)) << error;
  return s;
}

TEST(TrainScheduleTest, Names) {
  EXPECT_EQ(parseSchedule("constant"), ScheduleKind::Constant);
  EXPECT_EQ(parseSchedule("cosine"), ScheduleKind::Cosine);
  EXPECT_EQ(parseSchedule("Cosine"), std::nullopt);
  EXPECT_EQ(parseSchedule("linear"), std::nullopt);
  EXPECT_EQ(scheduleName(ScheduleKind::Constant), "constant");
  EXPECT_EQ(scheduleName(ScheduleKind::Cosine), "cosine");
}

TEST(TrainScheduleTest, Constant) {
  const LrSchedule s = schedule(ScheduleKind::Constant, 1e-3, 0, 0, 5);
  for (int64_t t = 1; t <= 5; ++t)
    EXPECT_EQ(learningRate(s, t), 1e-3) << t;
}

TEST(TrainScheduleTest, ConstantWithWarmup) {
  const LrSchedule s = schedule(ScheduleKind::Constant, 1e-3, 0, 4, 10);
  EXPECT_DOUBLE_EQ(learningRate(s, 1), 2.5e-4); // lr / W
  EXPECT_DOUBLE_EQ(learningRate(s, 2), 5e-4);
  EXPECT_DOUBLE_EQ(learningRate(s, 3), 7.5e-4);
  EXPECT_EQ(learningRate(s, 4), 1e-3); // the last warmup step reaches lr
  for (int64_t t = 5; t <= 10; ++t)
    EXPECT_EQ(learningRate(s, t), 1e-3) << t;
  // Warmup over every step: the last one reaches lr.
  const LrSchedule all = schedule(ScheduleKind::Constant, 2.0, 0, 8, 8);
  EXPECT_EQ(learningRate(all, 1), 0.25);
  EXPECT_EQ(learningRate(all, 8), 2.0);
}

TEST(TrainScheduleTest, Cosine) {
  // No warmup: step 1 uses the peak, the last step min-lr, p = (t - 1) / (N - 1).
  const LrSchedule s = schedule(ScheduleKind::Cosine, 1.0, 0, 0, 101);
  EXPECT_EQ(learningRate(s, 1), 1.0);
  EXPECT_DOUBLE_EQ(learningRate(s, 26), 0.8535533905932737); // (1 + cos(pi/4)) / 2
  EXPECT_NEAR(learningRate(s, 51), 0.5, 1e-15);             // halfway
  EXPECT_EQ(learningRate(s, 101), 0.0);
  for (int64_t t = 2; t <= 101; ++t)
    EXPECT_LT(learningRate(s, t), learningRate(s, t - 1)) << t;
}

TEST(TrainScheduleTest, CosineWithWarmupAndMinLr) {
  // Warmup 10 up to 1.1, then down to 0.1 at step 110: p = (t - 10) / 100.
  const LrSchedule s = schedule(ScheduleKind::Cosine, 1.1, 0.1, 10, 110);
  EXPECT_DOUBLE_EQ(learningRate(s, 1), 0.11);
  EXPECT_DOUBLE_EQ(learningRate(s, 5), 0.55);
  EXPECT_DOUBLE_EQ(learningRate(s, 10), 1.1);
  EXPECT_DOUBLE_EQ(learningRate(s, 11), 1.0997532801828658);  // p = 0.01
  EXPECT_DOUBLE_EQ(learningRate(s, 60), 0.6);                 // p = 0.5
  EXPECT_DOUBLE_EQ(learningRate(s, 85), 0.24644660940672627); // p = 0.75
  EXPECT_DOUBLE_EQ(learningRate(s, 110), 0.1);
}

TEST(TrainScheduleTest, CosineDegenerate) {
  EXPECT_EQ(learningRate(schedule(ScheduleKind::Cosine, 0.5, 0.1, 0, 1), 1), 0.5);
  const LrSchedule two = schedule(ScheduleKind::Cosine, 0.5, 0.1, 0, 2);
  EXPECT_EQ(learningRate(two, 1), 0.5);
  EXPECT_DOUBLE_EQ(learningRate(two, 2), 0.1);
  const LrSchedule warm = schedule(ScheduleKind::Cosine, 0.5, 0.1, 3, 3); // warmup only
  EXPECT_DOUBLE_EQ(learningRate(warm, 1), 0.5 / 3);
  EXPECT_EQ(learningRate(warm, 3), 0.5);
  const LrSchedule zero = schedule(ScheduleKind::Cosine, 0, 0, 0, 4); // lr 0 is allowed
  EXPECT_EQ(learningRate(zero, 2), 0.0);
}

TEST(TrainScheduleTest, Checks) {
  LrSchedule s;
  s.lr = 1e-3;
  s.steps = 10;
  std::string error;
  EXPECT_TRUE(checkSchedule(s, error)) << error;
  auto bad = [&](LrSchedule x, const std::string &expected) {
    std::string e;
    EXPECT_FALSE(checkSchedule(x, e));
    EXPECT_EQ(e, expected);
  };
  LrSchedule x = s;
  x.steps = 0;
  bad(x, "--steps must be at least 1 (got 0)");
  x.steps = -3;
  bad(x, "--steps must be at least 1 (got -3)");
  x.steps = kMaxSteps + 1;
  bad(x, "--steps must be at most 16777216 (got 16777217): the step number is passed as an F32");
  x = s;
  x.lr = -1e-3;
  bad(x, "--lr must be finite and non-negative (got -0.001)");
  x.lr = std::numeric_limits<double>::quiet_NaN();
  bad(x, "--lr must be finite and non-negative (got nan)");
  x.lr = std::numeric_limits<double>::infinity();
  bad(x, "--lr must be finite and non-negative (got inf)");
  x = s;
  x.minLr = 2e-3;
  bad(x, "--min-lr (0.002) must not exceed --lr (0.001)");
  x.minLr = -1;
  bad(x, "--min-lr must be finite and non-negative (got -1)");
  x = s;
  x.warmup = 11;
  bad(x, "--warmup must be between 0 and --steps (10) (got 11)");
  x.warmup = -1;
  bad(x, "--warmup must be between 0 and --steps (10) (got -1)");
  x.warmup = 10;
  EXPECT_TRUE(checkSchedule(x, error)) << error;
}

// ---- the train-step convention ---------------------------------------------------------------

uint64_t align256(uint64_t v) { return (v + 255) / 256 * 256; }

constexpr int64_t kN = 8; ///< elements of every vector of the test model

/// A model in the train-step convention, for a kernel computing
///   loss = sum 0.5 (w - x)^2;  w -= lr * (w - x);  m += step
/// (see kTrainPtx): inputs x, lr, step; params scale (frozen BF16), codes
/// (frozen I32), w (trainable F32), w.m, w.v and w.q (optimizer states, F32,
/// F32 and I8; w.v and w.q are not touched); outputs loss and the updated w,
/// w.m and w.v (the params' own ids).
/// Also a "forward" entry that is not a train step.
struct TrainModel {
  BundleWriter w;
  int x, lr, step, scale, codes, wt, m, v, q, loss;
};

// train_step(f32 *w, f32 *m, f32 *x, f32 *lr, f32 *step, f32 *loss, i64 n), one thread:
//   for i < n: g = w[i] - x[i]; loss += 0.5 g^2; w[i] -= lr * g; m[i] += step
const char *const kTrainPtx = R"(
.version 7.0
.target sm_80
.address_size 64

.visible .entry train_step(.param .u64 p_w, .param .u64 p_m, .param .u64 p_x,
                           .param .u64 p_lr, .param .u64 p_step, .param .u64 p_loss,
                           .param .s64 p_n)
{
  .reg .pred %p<2>;
  .reg .f32 %f<12>;
  .reg .b64 %rd<16>;
  ld.param.u64 %rd1, [p_w];
  ld.param.u64 %rd2, [p_m];
  ld.param.u64 %rd3, [p_x];
  ld.param.u64 %rd4, [p_lr];
  ld.param.u64 %rd5, [p_step];
  ld.param.u64 %rd6, [p_loss];
  ld.param.s64 %rd7, [p_n];
  cvta.to.global.u64 %rd1, %rd1;
  cvta.to.global.u64 %rd2, %rd2;
  cvta.to.global.u64 %rd3, %rd3;
  cvta.to.global.u64 %rd4, %rd4;
  cvta.to.global.u64 %rd5, %rd5;
  cvta.to.global.u64 %rd6, %rd6;
  ld.global.f32 %f1, [%rd4];
  ld.global.f32 %f2, [%rd5];
  mov.f32 %f3, 0f00000000;
  mov.u64 %rd8, 0;
LOOP:
  setp.ge.s64 %p1, %rd8, %rd7;
  @%p1 bra DONE;
  shl.b64 %rd9, %rd8, 2;
  add.u64 %rd10, %rd1, %rd9;
  add.u64 %rd11, %rd2, %rd9;
  add.u64 %rd12, %rd3, %rd9;
  ld.global.f32 %f4, [%rd10];
  ld.global.f32 %f5, [%rd12];
  sub.rn.f32 %f6, %f4, %f5;
  mul.rn.f32 %f7, %f6, %f6;
  fma.rn.f32 %f3, %f7, 0f3F000000, %f3;
  mul.rn.f32 %f8, %f1, %f6;
  sub.rn.f32 %f4, %f4, %f8;
  st.global.f32 [%rd10], %f4;
  ld.global.f32 %f9, [%rd11];
  add.rn.f32 %f9, %f9, %f2;
  st.global.f32 [%rd11], %f9;
  add.s64 %rd8, %rd8, 1;
  bra LOOP;
DONE:
  st.global.f32 [%rd6], %f3;
  ret;
}
)";

TrainModel trainModel() {
  TrainModel t;
  BundleWriter &w = t.w;
  w.spec.target = "sm_80";
  const int ptx = w.addBlob(kTrainPtx);
  const int k = w.addKernel({"train_step", ptx, -1, {1, 1, 1}, 0});
  uint64_t off = 0;
  auto buffer = [&](const char *name, st::DType dt, std::vector<int64_t> shape, BufferRole role) {
    int64_t numel = 1;
    for (int64_t d : shape)
      numel *= d;
    const uint64_t bytes = numel * st::dtypeSize(dt);
    const int id = w.addBuffer({name, off, bytes, dt, std::move(shape), role});
    off = align256(off + bytes);
    return id;
  };
  t.x = buffer("x", st::DType::F32, {kN}, BufferRole::Input);
  t.lr = buffer("lr", st::DType::F32, {}, BufferRole::Input);
  t.step = buffer("step", st::DType::F32, {}, BufferRole::Input);
  t.scale = buffer("scale", st::DType::BF16, {kN}, BufferRole::Frozen);
  t.codes = buffer("codes", st::DType::I32, {2, kN / 2}, BufferRole::Frozen);
  t.wt = buffer("w", st::DType::F32, {kN}, BufferRole::Trainable);
  t.m = buffer("w.m", st::DType::F32, {kN}, BufferRole::OptimizerState);
  t.v = buffer("w.v", st::DType::F32, {kN}, BufferRole::OptimizerState);
  t.q = buffer("w.q", st::DType::I8, {kN}, BufferRole::OptimizerState);
  t.loss = buffer("loss", st::DType::F32, {}, BufferRole::Output);
  w.spec.arenaBytes = off;
  Entry &e = w.entry("layer_train_step");
  e.inputs = {t.x, t.lr, t.step};
  e.params = {t.scale, t.codes, t.wt, t.m, t.v, t.q};
  e.outputs = {t.loss, t.wt, t.m, t.v};
  e.launches.push_back({k, {1, 1, 1}, {1, 1, 1}, 0,
                        {Arg::ptr(t.wt), Arg::ptr(t.m), Arg::ptr(t.x), Arg::ptr(t.lr),
                         Arg::ptr(t.step), Arg::ptr(t.loss), Arg::i64(kN)}});
  Entry &f = w.entry("forward");
  f.inputs = {t.x};
  f.params = {t.wt};
  f.outputs = {t.loss};
  return t;
}

std::vector<std::string> names(const BundleSpec &spec, const std::vector<int> &ids) {
  std::vector<std::string> out;
  for (int id : ids)
    out.push_back(spec.buffers[id].name);
  return out;
}

using Names = std::vector<std::string>;

TEST(TrainConventionTest, TheModelIsAValidBundle) {
  TrainModel t = trainModel();
  std::string error;
  EXPECT_TRUE(validateBundleSpec(t.w.spec, t.w.blobs.size(), error)) << error;
}

TEST(TrainConventionTest, SelectEntry) {
  TrainModel t = trainModel();
  BundleSpec &spec = t.w.spec;
  std::string name, error;
  ASSERT_TRUE(selectTrainEntry(spec, "", name, error)) << error;
  EXPECT_EQ(name, "layer_train_step");
  ASSERT_TRUE(selectTrainEntry(spec, "forward", name, error)) << error; // asked for: any entry
  EXPECT_EQ(name, "forward");
  EXPECT_FALSE(selectTrainEntry(spec, "backward", name, error));
  EXPECT_EQ(error, "no entry 'backward' (entries: forward, layer_train_step)");

  spec.entries["mlp_train_step"] = spec.entries["layer_train_step"];
  EXPECT_FALSE(selectTrainEntry(spec, "", name, error));
  EXPECT_EQ(error, "2 entries end in '_train_step' (layer_train_step, mlp_train_step); choose "
                   "one with --entry");
  ASSERT_TRUE(selectTrainEntry(spec, "mlp_train_step", name, error)) << error;
  EXPECT_EQ(name, "mlp_train_step");

  spec.entries.erase("mlp_train_step");
  spec.entries.erase("layer_train_step");
  spec.entries["train_step_old"] = spec.entries["forward"]; // suffix only
  EXPECT_FALSE(selectTrainEntry(spec, "", name, error));
  EXPECT_EQ(error, "no entry ends in '_train_step' (entries: forward, train_step_old); choose "
                   "one with --entry");
  spec.entries.clear();
  EXPECT_FALSE(selectTrainEntry(spec, "", name, error));
  EXPECT_EQ(error, "no entry ends in '_train_step' (entries: none); choose one with --entry");
}

TEST(TrainConventionTest, Plan) {
  TrainModel t = trainModel();
  const BundleSpec &spec = t.w.spec;
  TrainPlan plan;
  std::string error;
  ASSERT_TRUE(planTraining(spec, "layer_train_step", plan, error)) << error;
  EXPECT_EQ(plan.entry, "layer_train_step");
  EXPECT_EQ(plan.lr, t.lr);
  EXPECT_EQ(plan.step, t.step);
  EXPECT_EQ(plan.loss, t.loss);
  EXPECT_EQ(names(spec, plan.batch), (Names{"x"})); // lr and step come from the trainer
  EXPECT_EQ(names(spec, plan.required), (Names{"scale", "codes", "w"}));
  EXPECT_EQ(names(spec, plan.optimizerStates), (Names{"w.m", "w.v", "w.q"}));
  EXPECT_EQ(names(spec, plan.saved), (Names{"scale", "codes", "w", "w.m", "w.v", "w.q"}));
  EXPECT_TRUE(plan.otherOutputs.empty()); // w, w.m, w.v are the params themselves
}

TEST(TrainConventionTest, PlanWithoutStepInputOrOptimizerState) {
  TrainModel t = trainModel();
  BundleSpec &spec = t.w.spec;
  Entry &e = spec.entries["layer_train_step"];
  e.inputs = {t.lr, t.x}; // SGD: no step, no states
  e.params = {t.wt};
  e.outputs = {t.wt, t.loss}; // the loss need not come first
  TrainPlan plan;
  std::string error;
  ASSERT_TRUE(planTraining(spec, "layer_train_step", plan, error)) << error;
  EXPECT_EQ(plan.step, -1);
  EXPECT_EQ(plan.loss, t.loss);
  EXPECT_EQ(names(spec, plan.batch), (Names{"x"}));
  EXPECT_EQ(names(spec, plan.required), (Names{"w"}));
  EXPECT_TRUE(plan.optimizerStates.empty());
  EXPECT_EQ(names(spec, plan.saved), (Names{"w"}));

  // An output that is not a param is noted, not saved.
  e.outputs.push_back(t.v);
  ASSERT_TRUE(planTraining(spec, "layer_train_step", plan, error)) << error;
  EXPECT_EQ(names(spec, plan.otherOutputs), (Names{"w.v"}));
}

TEST(TrainConventionTest, PlanErrors) {
  auto planError = [](const std::function<void(TrainModel &)> &edit) {
    TrainModel t = trainModel();
    edit(t);
    TrainPlan plan;
    std::string error;
    EXPECT_FALSE(planTraining(t.w.spec, "layer_train_step", plan, error));
    return error;
  };
  EXPECT_EQ(planError([](TrainModel &t) { t.w.spec.entries["layer_train_step"].inputs = {t.x}; }),
            "entry 'layer_train_step' has no input 'lr' (inputs: x); a train-step entry takes "
            "the learning rate as an F32 [] input named 'lr'");
  // lr as a param is not the convention either.
  EXPECT_EQ(planError([](TrainModel &t) {
              Entry &e = t.w.spec.entries["layer_train_step"];
              e.inputs = {t.x, t.step};
              e.params.push_back(t.lr);
            }),
            "entry 'layer_train_step' has no input 'lr' (inputs: x, step); a train-step entry "
            "takes the learning rate as an F32 [] input named 'lr'");
  EXPECT_EQ(planError([](TrainModel &t) {
              Buffer &b = t.w.spec.buffers[t.lr];
              b.shape = {2};
              b.bytes = 8;
            }),
            "entry 'layer_train_step': input 'lr' is F32 [2]; it must be a float scalar (F32 [])");
  EXPECT_EQ(planError([](TrainModel &t) { t.w.spec.buffers[t.step].dtype = st::DType::I32; }),
            "entry 'layer_train_step': input 'step' is I32 []; it must be a float scalar (F32 [])");
  EXPECT_EQ(planError([](TrainModel &t) {
              t.w.spec.entries["layer_train_step"].outputs = {t.wt, t.m};
            }),
            "entry 'layer_train_step' has no output 'loss' (outputs: w, w.m); a train-step entry "
            "writes its loss to an F32 [] output named 'loss'");
  EXPECT_EQ(planError([](TrainModel &t) { t.w.spec.entries["layer_train_step"].outputs = {}; }),
            "entry 'layer_train_step' has no output 'loss' (outputs: none); a train-step entry "
            "writes its loss to an F32 [] output named 'loss'");
  EXPECT_EQ(planError([](TrainModel &t) {
              Buffer &b = t.w.spec.buffers[t.loss];
              b.shape = {1, 2};
              b.bytes = 8;
            }),
            "entry 'layer_train_step': output 'loss' is F32 [1, 2]; it must be a float scalar "
            "(F32 [])");
  TrainPlan plan;
  std::string error;
  EXPECT_FALSE(planTraining(trainModel().w.spec, "nope", plan, error));
  EXPECT_EQ(error, "no entry 'nope'");

  // One element of another float dtype or rank is accepted (uploads convert).
  TrainModel t = trainModel();
  Buffer &b = t.w.spec.buffers[t.lr];
  b.dtype = st::DType::BF16;
  b.shape = {1};
  b.bytes = 2;
  EXPECT_TRUE(planTraining(t.w.spec, "layer_train_step", plan, error)) << error;
}

TEST(TrainConventionTest, SplitOptimizerStates) {
  TrainModel t = trainModel();
  const BundleSpec &spec = t.w.spec;
  TrainPlan plan;
  std::string error;
  ASSERT_TRUE(planTraining(spec, "layer_train_step", plan, error)) << error;
  std::vector<int> load, zero;
  splitOptimizerStates(spec, plan, nullptr, load, zero); // no params file
  EXPECT_TRUE(load.empty());
  EXPECT_EQ(names(spec, zero), (Names{"w.m", "w.v", "w.q"}));
  const std::set<std::string> file = {"w", "scale", "codes", "w.v"};
  splitOptimizerStates(spec, plan, [&](const std::string &n) { return file.count(n) > 0; }, load,
                       zero);
  EXPECT_EQ(names(spec, load), (Names{"w.v"}));
  EXPECT_EQ(names(spec, zero), (Names{"w.m", "w.q"}));
}


TEST(TrainReportTest, MetricsJsonl) {
  std::vector<StepRecord> records = {{1, 2.5, 0.001, 0.125, 0, false},
                                     {2, std::numeric_limits<double>::quiet_NaN(), 0.5, 2, 0, true},
                                     {2, 1.5, 0.5, 4, 1000, false}};
  EXPECT_EQ(metricsJsonl(records),
            "{\"step\":1,\"loss\":2.5,\"lr\":0.001,\"ms\":0.125,\"skipped\":false}\n"
            "{\"step\":2,\"loss\":null,\"lr\":0.5,\"ms\":2.0,\"skipped\":true}\n"
            "{\"step\":2,\"loss\":1.5,\"lr\":0.5,\"ms\":4.0,\"tokens_per_s\":250000.0,"
            "\"skipped\":false}\n");
  EXPECT_EQ(metricsJsonl({}), "");
}

TEST(TrainReportTest, FormatLoss) {
  EXPECT_EQ(formatLoss(2.302585093), "2.302585");
  EXPECT_EQ(formatLoss(0.012345), "0.012345");
  EXPECT_EQ(formatLoss(0), "0.000000");
  EXPECT_EQ(formatLoss(3.5e-7), "3.500000e-07");
  EXPECT_EQ(formatLoss(-2.5e7), "-2.500000e+07");
}

TEST(TrainReportTest, FormatDurationAndRate) {
  EXPECT_EQ(formatDuration(0.2), "0s");
  EXPECT_EQ(formatDuration(45.4), "45s");
  EXPECT_EQ(formatDuration(80), "1m20s");
  EXPECT_EQ(formatDuration(3599.6), "1h00m00s");
  EXPECT_EQ(formatDuration(7500), "2h05m00s");
  EXPECT_EQ(formatDuration(std::numeric_limits<double>::infinity()), "?");
  EXPECT_EQ(formatRate(812.3), "812");
  EXPECT_EQ(formatRate(12345), "12.3k");
  EXPECT_EQ(formatRate(4.56e6), "4.56M");
}

Progress progress(int64_t step, int64_t steps, double loss, double lr, double elapsed,
                  int64_t done, double tokPerS, int64_t skipped) {
  Progress p;
  p.step = step;
  p.steps = steps;
  p.loss = loss;
  p.lr = lr;
  p.elapsedSeconds = elapsed;
  p.stepsDone = done;
  p.tokensPerSecond = tokPerS;
  p.skipped = skipped;
  return p;
}

TEST(TrainReportTest, ProgressLine) {
  EXPECT_EQ(progressLine(progress(40, 200, 0.012345, 1e-3, 40 / 812.3, 40, 0, 0)),
            "step 40/200  loss 0.012345  lr 1.00e-03  812.3 steps/s  eta 0.2 s");
  EXPECT_EQ(progressLine(progress(200, 200, 3.5e-7, 2.5e-5, 2.0, 200, 0, 0)),
            "step 200/200  loss 3.500000e-07  lr 2.50e-05  100.0 steps/s  eta 0.0 s");
  // A resumed run: the rate counts this process's steps only.
  EXPECT_EQ(progressLine(progress(150, 200, 2.31, 1e-3, 5.0, 50, 12345, 2)),
            "step 150/200  loss 2.310000  lr 1.00e-03  10.0 steps/s  12.3k tok/s  eta 5.0 s  "
            "(2 skipped)");
}

TEST(TrainReportTest, ProgressBar) {
  EXPECT_EQ(progressBar(progress(40, 200, 2.31, 1e-3, 40.0, 40, 12345, 0), 10),
            "step 40/200 [##--------] loss 2.3100 | 12.3k tok/s | eta 2m40s");
  EXPECT_EQ(progressBar(progress(200, 200, 0.5, 1e-3, 10.0, 200, 0, 3), 4),
            "step 200/200 [####] loss 0.5000 | 20.0 steps/s | eta 0s | 3 skipped");
  EXPECT_EQ(progressBar(progress(0, 10, std::nan(""), 1e-3, 0, 0, 0, 0), 5),
            "step 0/10 [-----] loss nan | 0.0 steps/s | eta 0s");
}

// ---- qtune-run train ----------------------------------------------------------------------------




double xValue(int64_t i) { return 1.0 + static_cast<double>(i); }
double w0Value(int64_t i) { return 0.5 * static_cast<double>(i) - 1.0; }
double scaleValue(int64_t i) { return 1.0 / (3.0 + static_cast<double>(i)); } // not bf16-exact

class TrainToolTest : public TempDirTest {
protected:
  void SetUp() override {
    makeDir("qtune-train-test");
    std::string error;
    ASSERT_TRUE(trainModel().w.write(path("m.qtb"), error)) << error;
    std::vector<double> xs(kN), ws(kN), scales(kN), codes(kN);
    for (int64_t i = 0; i < kN; ++i) {
      xs[i] = xValue(i);
      ws[i] = w0Value(i);
      scales[i] = scaleValue(i);
      codes[i] = -1000 * static_cast<double>(i) - 7;
    }
    // lr and step in the batch file are ignored: the trainer supplies them.
    writeTensors("batch.safetensors", {tensor("x", st::DType::F32, xs, {kN}),
                                       tensor("lr", st::DType::F32, {123}, {})});
    writeTensors("params.safetensors", {tensor("w", st::DType::F32, ws, {kN}),
                                        tensor("scale", st::DType::F32, scales, {kN}),
                                        tensor("codes", st::DType::I32, codes, {2, kN / 2})});
  }
  std::string args(const std::string &extra, const std::string &bundle = "m.qtb",
                   const std::string &params = "params.safetensors") const {
    return "train " + path(bundle) + " --inputs " + path("batch.safetensors") + " --params " +
           path(params) + " --out " + path("out.safetensors") + " " + extra;
  }
  /// Expects exit 1 with exactly one line "qtune-run: error: <message>".
  void expectError(const std::string &arguments, const std::string &message) {
    std::string out;
    EXPECT_EQ(runQtuneRun(arguments, out), 1) << out;
    EXPECT_EQ(out, "qtune-run: error: " + message + "\n");
    EXPECT_FALSE(fs::exists(path("out.safetensors")));
  }
};

TEST_F(TrainToolTest, ErrorsBeforeTheGpu) {
  expectError(args("--steps 0 --lr 1e-3"), "--steps must be at least 1 (got 0)");
  expectError(args("--steps 10 --lr -0.5"), "--lr must be finite and non-negative (got -0.5)");
  expectError(args("--steps 10 --lr inf"), "--lr must be finite and non-negative (got inf)");
  expectError(args("--steps 10 --lr 1e-3 --warmup 11"),
              "--warmup must be between 0 and --steps (10) (got 11)");
  expectError(args("--steps 10 --lr 1e-3 --schedule linear"),
              "unknown --schedule 'linear' (expected constant or cosine)");
  expectError(args("--steps 10 --lr 1e-3 --min-lr 1e-4"),
              "--min-lr applies to --schedule cosine only");
  expectError(args("--steps 10 --lr 1e-3 --entry forward"),
              path("m.qtb") + ": entry 'forward' has no input 'lr' (inputs: x); a train-step "
                              "entry takes the learning rate as an F32 [] input named 'lr'");
  expectError(args("--steps 10 --lr 1e-3 --entry backward"),
              path("m.qtb") + ": no entry 'backward' (entries: forward, layer_train_step)");

  std::string out;
  EXPECT_EQ(runQtuneRun(args("--lr 1e-3"), out), 1); // --steps is required
  EXPECT_EQ(out.rfind("qtune-run: error: ", 0), 0u) << out;
  EXPECT_EQ(runQtuneRun(args("--steps 10 --lr 1e-3 --log-every 0"), out), 1);
  EXPECT_EQ(out.rfind("qtune-run: error: ", 0), 0u) << out;
  EXPECT_EQ(runQtuneRun(args("--steps ten --lr 1e-3"), out), 1);
  EXPECT_EQ(out.rfind("qtune-run: error: ", 0), 0u) << out;

  // Entry selection by suffix.
  TrainModel two = trainModel();
  two.w.spec.entries["mlp_train_step"] = two.w.spec.entries["layer_train_step"];
  std::string error;
  ASSERT_TRUE(two.w.write(path("two.qtb"), error)) << error;
  expectError(args("--steps 10 --lr 1e-3", "two.qtb"),
              path("two.qtb") + ": 2 entries end in '_train_step' (layer_train_step, "
                                "mlp_train_step); choose one with --entry");
  TrainModel none = trainModel();
  none.w.spec.entries.erase("layer_train_step");
  ASSERT_TRUE(none.w.write(path("none.qtb"), error)) << error;
  expectError(args("--steps 10 --lr 1e-3", "none.qtb"),
              path("none.qtb") +
                  ": no entry ends in '_train_step' (entries: forward); choose one with --entry");

  // The batch must hold every input but lr and step; the params file every
  // frozen and trainable param, but no optimizer state.
  writeTensors("nobatch.safetensors", {tensor("lr", st::DType::F32, {1}, {})});
  expectError("train " + path("m.qtb") + " --inputs " + path("nobatch.safetensors") +
                  " --params " + path("params.safetensors") + " --out " +
                  path("out.safetensors") + " --steps 3 --lr 1",
              path("nobatch.safetensors") +
                  ": missing 1 of the 1 inputs of entry 'layer_train_step': x (the file has: lr)");
  expectError("train " + path("m.qtb") + " --params " + path("params.safetensors") + " --out " +
                  path("out.safetensors") + " --steps 3 --lr 1",
              "entry 'layer_train_step' has 1 inputs; pass them with --inputs");
  writeTensors("p2.safetensors",
               {tensor("w", st::DType::F32, std::vector<double>(kN), {kN}),
                tensor("w.m", st::DType::F32, std::vector<double>(kN), {kN})});
  expectError(args("--steps 3 --lr 1", "m.qtb", "p2.safetensors"),
              path("p2.safetensors") +
                  ": missing 2 of the 3 params of entry 'layer_train_step': scale codes (the "
                  "file has: w w.m)");
  // A present optimizer state must fit its buffer.
  writeTensors("p3.safetensors",
               {tensor("w", st::DType::F32, std::vector<double>(kN), {kN}),
                tensor("scale", st::DType::F32, std::vector<double>(kN), {kN}),
                tensor("codes", st::DType::I32, std::vector<double>(kN), {2, kN / 2}),
                tensor("w.v", st::DType::F32, std::vector<double>(kN - 1), {kN - 1})});
  expectError(args("--steps 3 --lr 1", "m.qtb", "p3.safetensors"),
              path("p3.safetensors") +
                  ": tensor 'w.v' (F32 [7]) for buffer 'w.v' (F32 [8]): shapes differ");
  writeTensors("p4.safetensors",
               {tensor("w", st::DType::F32, std::vector<double>(kN), {kN}),
                tensor("scale", st::DType::F32, std::vector<double>(kN), {kN}),
                tensor("codes", st::DType::I32, std::vector<double>(kN), {2, kN / 2}),
                tensor("w.q", st::DType::F32, std::vector<double>(kN), {kN})});
  expectError(args("--steps 3 --lr 1", "m.qtb", "p4.safetensors"),
              path("p4.safetensors") +
                  ": tensor 'w.q' (F32 [8]) for buffer 'w.q' (I8 [8]): cannot convert F32 to I8 "
                  "(equal dtypes copy; floats convert to F16/BF16/F32/F64, I32/U32 to I32/U32)");
}

TEST_F(TrainToolTest, DataParallelOptionErrors) {
  expectError(args("--steps 3 --lr 1e-3 --rank 0"),
              "--rank, --world-size and --nccl-id go together (one rank of a data-parallel run; "
              "--gpus N starts the ranks of one host itself)");
  expectError(args("--steps 3 --lr 1e-3 --rank 2 --world-size 2 --nccl-id " + path("id")),
              "--rank 2 is outside --world-size 2");
  expectError(args("--steps 3 --lr 1e-3 --rank 0 --world-size 2 --nccl-id " + path("id")),
              "data-parallel training needs --data: every rank draws its shard of each batch "
              "from the token file");
  expectError(args("--steps 3 --lr 1e-3 --gpus 2 --device 1"),
              "--gpus N runs on GPUs 0..N-1; --device does not apply");
  expectError(args("--steps 3 --lr 1e-3 --gpus 2 --rank 0"),
              "--gpus starts the ranks itself; --rank, --world-size and --nccl-id are for runs "
              "started by hand");
  expectError(args("--steps 3 --lr 1e-3 --gpus 2"),
              "--gpus needs --data: every rank draws its shard of each batch from the token "
              "file");
}

TEST_F(TrainToolTest, NoGpu) {
  std::string why;
  if (haveGpu(why))
    GTEST_SKIP() << "a CUDA GPU is available here; the no-GPU path cannot be tested";
  std::string out;
  EXPECT_EQ(runQtuneRun(args("--steps 3 --lr 0.25"), out), 1);
  EXPECT_EQ(out.rfind("qtune-run: error: no CUDA GPU available: ", 0), 0u) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_FALSE(fs::exists(path("out.safetensors")));
}

TEST_F(TrainToolTest, DataParallelRankFailureStopsTheRun) {
  std::string why;
  if (haveGpu(why))
    GTEST_SKIP() << "a CUDA GPU is available here; the ranks would not fail";
  // Two ranks on a token file; each fails (no GPU), and the launcher reports
  // the first failure after its own line from the rank.
  std::vector<uint8_t> bytes(2 * 64);
  for (size_t i = 0; i < bytes.size(); i += 2)
    bytes[i] = static_cast<uint8_t>(i / 2 % 7);
  {
    std::ofstream f(path("tokens.u16"), std::ios::binary);
    f.write(reinterpret_cast<const char *>(bytes.data()), std::streamsize(bytes.size()));
  }
  std::string out;
  EXPECT_EQ(runQtuneRun("train " + path("m.qtb") + " --data " + path("tokens.u16") +
                            " --params " + path("params.safetensors") + " --out " +
                            path("out.safetensors") + " --steps 3 --lr 0.25 --gpus 2",
                        out),
            1);
  EXPECT_NE(out.find("qtune-run: error: data-parallel run of 2 ranks failed: rank "), std::string::npos)
      << out;
  EXPECT_NE(out.find("exited with status 1; the other ranks were stopped (checkpoints rank 0 "
                     "wrote before are intact)\n"),
            std::string::npos)
      << out;
  EXPECT_FALSE(fs::exists(path("out.safetensors")));
}

TEST(DataParallelTest, GradientBuckets) {
  BundleSpec spec;
  auto add = [&](uint64_t offset, uint64_t floats) {
    Buffer b;
    b.name = "g" + std::to_string(spec.buffers.size());
    b.offset = offset;
    b.bytes = floats * 4;
    b.shape = {int64_t(floats)};
    spec.buffers.push_back(b);
    return int(spec.buffers.size() - 1);
  };
  // 0: [0, 400) 100 floats; 1: [512, 912) after padding: adjacent; 2: [1024,
  // 1028) adjacent; 3: at 4096, after a gap (another buffer lies between).
  const int a = add(0, 100), b = add(512, 100), c = add(1024, 1), d = add(4096, 10);
  // Given out of arena order: buckets come in arena order.
  std::vector<GradientBucket> all = gradientBuckets(spec, {d, b, a, c}, 1 << 20);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].offset, 0u);
  EXPECT_EQ(all[0].count, 1028u / 4); // through c's last float, padding included
  EXPECT_EQ(all[1].offset, 4096u);
  EXPECT_EQ(all[1].count, 10u);
  // A 1000-byte cap splits before b (0..912 would fit, 0..1028 not).
  std::vector<GradientBucket> capped = gradientBuckets(spec, {a, b, c, d}, 1000);
  ASSERT_EQ(capped.size(), 3u);
  EXPECT_EQ(capped[0].count, 912u / 4);
  EXPECT_EQ(capped[1].offset, 1024u);
  EXPECT_EQ(capped[1].count, 1u);
  // A buffer above the cap is a bucket of its own.
  std::vector<GradientBucket> tiny = gradientBuckets(spec, {a, b}, 16);
  ASSERT_EQ(tiny.size(), 2u);
  EXPECT_EQ(tiny[0].count, 100u);
}

std::vector<std::string> lines(const std::string &text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

std::string readFile(const std::string &p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The kernel's arithmetic on the CPU, step by step, for lr schedule `s`.
struct Reference {
  std::vector<float> w, m;
  std::vector<float> losses;
  Reference(const LrSchedule &s, std::vector<float> w0, std::vector<float> m0)
      : w(std::move(w0)), m(std::move(m0)) {
    for (int64_t t = 1; t <= s.steps; ++t) {
      const float lr = static_cast<float>(learningRate(s, t));
      float loss = 0;
      for (int64_t i = 0; i < kN; ++i) {
        const float g = w[i] - static_cast<float>(xValue(i));
        loss = std::fma(g * g, 0.5f, loss);
        w[i] = w[i] - lr * g;
        m[i] = m[i] + static_cast<float>(t);
      }
      losses.push_back(loss);
    }
  }
};

TEST_F(TrainToolTest, TrainsOnGpu) {
  std::string why;
  if (!haveGpu(why))
    GTEST_SKIP() << why;
  std::string out;
  fs::path old = path("out.safetensors");
  ASSERT_EQ(runQtuneRun(args("--steps 10 --lr 0.5 --schedule cosine --min-lr 0.05 --warmup 2 "
                             "--log-every 4 --metrics " +
                             path("m.jsonl")),
                        out),
            0)
      << out;
  EXPECT_NE(out.find("optimizer state: 3 tensors start at zero (w.m, w.v, w.q)\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("\nstep 4/10  loss "), std::string::npos) << out;
  EXPECT_NE(out.find("\nstep 8/10  loss "), std::string::npos) << out;
  EXPECT_NE(out.find("\nstep 10/10  loss "), std::string::npos) << out;
  EXPECT_EQ(out.find("\nstep 5/10"), std::string::npos) << out;
  EXPECT_NE(out.find("trained 'layer_train_step' for 10 steps in "), std::string::npos) << out;
  EXPECT_NE(out.find("wrote " + path("out.safetensors") + ": 6 tensors (scale, codes, w, w.m, "
                                                          "w.v, w.q)\n"),
            std::string::npos)
      << out;

  LrSchedule s = schedule(ScheduleKind::Cosine, 0.5, 0.05, 2, 10);
  std::vector<float> w0(kN);
  for (int64_t i = 0; i < kN; ++i)
    w0[i] = static_cast<float>(w0Value(i));
  Reference ref(s, w0, std::vector<float>(kN, 0.0f));

  std::string error;
  auto f = st::File::open(path("out.safetensors"), error);
  ASSERT_NE(f, nullptr) << error;
  EXPECT_EQ(f->metadata(), (std::map<std::string, std::string>{{"entry", "layer_train_step"},
                                                               {"steps", "10"}}));
  ASSERT_EQ(f->tensors().size(), 6u);
  // Params keep their own dtypes; frozen ones come back bit for bit.
  const st::TensorInfo *scale = f->find("scale");
  ASSERT_NE(scale, nullptr);
  EXPECT_EQ(scale->dtype, st::DType::BF16);
  EXPECT_EQ(scale->shape, (std::vector<int64_t>{kN}));
  for (int64_t i = 0; i < kN; ++i) {
    uint16_t bits;
    std::memcpy(&bits, f->data(*scale) + 2 * i, 2);
    EXPECT_EQ(bits, doubleToBf16(scaleValue(i))) << i;
  }
  const st::TensorInfo *codes = f->find("codes");
  ASSERT_NE(codes, nullptr);
  EXPECT_EQ(codes->dtype, st::DType::I32);
  EXPECT_EQ(codes->shape, (std::vector<int64_t>{2, kN / 2}));
  const std::vector<double> cv = st::toDoubles(*codes, f->data(*codes));
  for (int64_t i = 0; i < kN; ++i)
    EXPECT_EQ(cv[i], -1000 * static_cast<double>(i) - 7) << i;
  const std::vector<double> w = st::toDoubles(*f->find("w"), f->data(*f->find("w")));
  const std::vector<double> m = st::toDoubles(*f->find("w.m"), f->data(*f->find("w.m")));
  const std::vector<double> v = st::toDoubles(*f->find("w.v"), f->data(*f->find("w.v")));
  for (int64_t i = 0; i < kN; ++i) {
    EXPECT_NEAR(w[i], ref.w[i], 1e-5 * (1 + std::fabs(ref.w[i]))) << i;
    EXPECT_EQ(m[i], 55.0) << i; // 1 + 2 + ... + 10: the step input, in place
    EXPECT_EQ(v[i], 0.0) << i;
  }

  // The metrics: one object per step, the schedule's lr and the loss.
  const std::vector<std::string> metrics = lines(readFile(path("m.jsonl")));
  ASSERT_EQ(metrics.size(), 10u);
  for (size_t k = 0; k < metrics.size(); ++k) {
    const std::string &line = metrics[k];
    EXPECT_EQ(line.rfind("{\"step\":" + std::to_string(k + 1) + ",\"loss\":", 0), 0u) << line;
    double loss = 0, lr = 0;
    ASSERT_EQ(std::sscanf(line.c_str() + line.find("\"loss\":") + 7, "%lf", &loss), 1) << line;
    ASSERT_EQ(std::sscanf(line.c_str() + line.find("\"lr\":") + 5, "%lf", &lr), 1) << line;
    EXPECT_NEAR(loss, ref.losses[k], 1e-5 * (1 + ref.losses[k])) << line;
    EXPECT_DOUBLE_EQ(lr, learningRate(s, static_cast<int64_t>(k + 1))) << line;
    EXPECT_NE(line.find(",\"ms\":"), std::string::npos) << line;
  }

  const st::TensorInfo *q = f->find("w.q");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, st::DType::I8);
  EXPECT_EQ(st::toDoubles(*q, f->data(*q)), std::vector<double>(kN, 0.0));

  // Resuming: the trained file's tensors, with an I8 state set by hand (it
  // goes up as it is: Executor::upload alone would refuse I8).
  std::vector<st::OwnedTensor> resume;
  for (const st::TensorInfo &info : f->tensors())
    resume.push_back({info.name, info.dtype, info.shape,
                      std::vector<uint8_t>(f->data(info), f->data(info) + info.bytes)});
  std::vector<double> qs(kN);
  for (int64_t i = 0; i < kN; ++i)
    qs[i] = static_cast<double>(i) * 31 - 128;
  for (st::OwnedTensor &rt : resume)
    if (rt.name == "w.q")
      rt = tensor("w.q", st::DType::I8, qs, {kN});
  ASSERT_TRUE(st::write(path("resume.safetensors"), resume, f->metadata(), error)) << error;
  ASSERT_EQ(runQtuneRun("train " + path("m.qtb") + " --inputs " + path("batch.safetensors") +
                            " --params " + path("resume.safetensors") + " --out " +
                            path("out2.safetensors") + " --steps 2 --lr 0.1",
                        out),
            0)
      << out;
  EXPECT_NE(out.find("optimizer state: 3 tensors loaded from " + path("resume.safetensors")),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("was written after 10 steps; step numbers restart at 1"), std::string::npos)
      << out;
  EXPECT_EQ(out.find("start at zero"), std::string::npos) << out;
  auto f2 = st::File::open(path("out2.safetensors"), error);
  ASSERT_NE(f2, nullptr) << error;
  EXPECT_EQ(f2->metadata().at("steps"), "2");
  const std::vector<double> m2 = st::toDoubles(*f2->find("w.m"), f2->data(*f2->find("w.m")));
  EXPECT_EQ(m2[0], 58.0); // 55 + 1 + 2
  const st::TensorInfo *q2 = f2->find("w.q");
  ASSERT_NE(q2, nullptr);
  EXPECT_EQ(q2->dtype, st::DType::I8);
  EXPECT_EQ(st::toDoubles(*q2, f2->data(*q2)), qs);
}

TEST_F(TrainToolTest, DivergenceStopsWithoutWriting) {
  std::string why;
  if (!haveGpu(why))
    GTEST_SKIP() << why;
  std::vector<double> ws(kN, 0.0);
  ws[3] = std::numeric_limits<double>::infinity();
  writeTensors("params.safetensors",
               {tensor("w", st::DType::F32, ws, {kN}),
                tensor("scale", st::DType::F32, std::vector<double>(kN), {kN}),
                tensor("codes", st::DType::I32, std::vector<double>(kN), {2, kN / 2})});
  {
    std::ofstream old(path("out.safetensors"));
    old << "earlier result";
  }
  std::string out;
  EXPECT_EQ(runQtuneRun(args("--steps 5 --lr 0.1 --metrics " + path("m.jsonl")), out), 1);
  EXPECT_NE(out.find("qtune-run: error: step 1: loss is inf; stopped without writing " +
                     path("out.safetensors") + " (the loss curve up to it is in " +
                     path("m.jsonl") + ")\n"),
            std::string::npos)
      << out;
  EXPECT_EQ(readFile(path("out.safetensors")), "earlier result");
  EXPECT_EQ(readFile(path("m.jsonl")).rfind("{\"step\":1,\"loss\":null,\"lr\":0.1,", 0), 0u);
}

} // namespace
