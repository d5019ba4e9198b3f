//===- TokenToolTest.cpp - qtune-run train --data, checkpoints, eval, generate ---===//
//
// A small token model written by hand in PTX: a table w of 256 floats, one
// per byte token.
//
//   tok_train_step  loss = mean over the B*S positions of 0.5 (w[id] - label/256)^2,
//                   NaN when a label is 255 (the "poison" byte); when the loss
//                   is finite, for each position in order:
//                     w[id] -= lr * (w[id] - label/256);  w.m[id] += step
//                   and nothing is written otherwise (as the compiler's train
//                   steps behave on a non-finite loss)
//   tok             the same loss, no update (the loss entry for eval)
//   tok_logits      logits[b, s, v] = w[v] + (v == (id + 1) % 256 ? 8 : 0), so
//                   greedy generation continues a prompt with the next bytes
//
// The train step also has a frozen param and two LoRA params (untouched by
// the kernel) and the bundle a "peft" header, so that checkpoints carry a PEFT
// adapter. Errors found before the GPU is touched are checked everywhere;
// the runs skip without a GPU.
//
//===----------------------------------------------------------------------===//

#include "qtune/runtime/Bundle.h"
#include "qtune/runtime/Checkpoint.h"
#include "qtune/runtime/Float16.h"
#include "qtune/runtime/Trainer.h"

#include "TestSupport.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace qtune;
using namespace qtune::rt;
using Json = nlohmann::json;

namespace {

using namespace qtune::rt::test;

constexpr int64_t kB = 2, kS = 4, kV = 256;

const char *const kTokenPtx = R"(
.version 7.0
.target sm_80
.address_size 64

.visible .entry tok_step(.param .u64 p_ids, .param .u64 p_labels, .param .u64 p_w,
                         .param .u64 p_m, .param .u64 p_lr, .param .u64 p_step,
                         .param .u64 p_loss, .param .s64 p_n, .param .s32 p_update)
{
  .reg .pred %p<8>;
  .reg .b32 %r<8>;
  .reg .f32 %f<16>;
  .reg .b64 %rd<24>;
  ld.param.u64 %rd1, [p_ids];
  ld.param.u64 %rd2, [p_labels];
  ld.param.u64 %rd3, [p_w];
  ld.param.u64 %rd4, [p_m];
  ld.param.u64 %rd5, [p_lr];
  ld.param.u64 %rd6, [p_step];
  ld.param.u64 %rd7, [p_loss];
  ld.param.s64 %rd8, [p_n];
  ld.param.s32 %r1, [p_update];
  cvta.to.global.u64 %rd1, %rd1;
  cvta.to.global.u64 %rd2, %rd2;
  cvta.to.global.u64 %rd3, %rd3;
  cvta.to.global.u64 %rd4, %rd4;
  cvta.to.global.u64 %rd5, %rd5;
  cvta.to.global.u64 %rd6, %rd6;
  cvta.to.global.u64 %rd7, %rd7;
  mov.f32 %f1, 0f00000000;
  mov.u32 %r2, 0;
  mov.u64 %rd9, 0;
LOSS:
  setp.ge.s64 %p1, %rd9, %rd8;
  @%p1 bra LOSS_DONE;
  shl.b64 %rd10, %rd9, 2;
  add.u64 %rd11, %rd1, %rd10;
  ld.global.s32 %r3, [%rd11];
  add.u64 %rd12, %rd2, %rd10;
  ld.global.s32 %r4, [%rd12];
  setp.eq.s32 %p2, %r4, 255;
  selp.b32 %r5, 1, 0, %p2;
  or.b32 %r2, %r2, %r5;
  cvt.s64.s32 %rd13, %r3;
  shl.b64 %rd13, %rd13, 2;
  add.u64 %rd14, %rd3, %rd13;
  ld.global.f32 %f2, [%rd14];
  cvt.rn.f32.s32 %f3, %r4;
  mul.rn.f32 %f3, %f3, 0f3B800000;
  sub.rn.f32 %f4, %f2, %f3;
  mul.rn.f32 %f5, %f4, %f4;
  fma.rn.f32 %f1, %f5, 0f3F000000, %f1;
  add.s64 %rd9, %rd9, 1;
  bra LOSS;
LOSS_DONE:
  cvt.rn.f32.s64 %f6, %rd8;
  div.rn.f32 %f1, %f1, %f6;
  setp.ne.s32 %p3, %r2, 0;
  selp.f32 %f1, 0f7FC00000, %f1, %p3;
  st.global.f32 [%rd7], %f1;
  setp.eq.s32 %p4, %r1, 0;
  @%p4 bra DONE;
  testp.finite.f32 %p5, %f1;
  @!%p5 bra DONE;
  ld.global.f32 %f7, [%rd5];
  ld.global.f32 %f8, [%rd6];
  mov.u64 %rd9, 0;
UPDATE:
  setp.ge.s64 %p1, %rd9, %rd8;
  @%p1 bra DONE;
  shl.b64 %rd10, %rd9, 2;
  add.u64 %rd11, %rd1, %rd10;
  ld.global.s32 %r3, [%rd11];
  add.u64 %rd12, %rd2, %rd10;
  ld.global.s32 %r4, [%rd12];
  cvt.s64.s32 %rd13, %r3;
  shl.b64 %rd13, %rd13, 2;
  add.u64 %rd14, %rd3, %rd13;
  add.u64 %rd15, %rd4, %rd13;
  ld.global.f32 %f2, [%rd14];
  cvt.rn.f32.s32 %f3, %r4;
  mul.rn.f32 %f3, %f3, 0f3B800000;
  sub.rn.f32 %f4, %f2, %f3;
  mul.rn.f32 %f9, %f7, %f4;
  sub.rn.f32 %f2, %f2, %f9;
  st.global.f32 [%rd14], %f2;
  ld.global.f32 %f10, [%rd15];
  add.rn.f32 %f10, %f10, %f8;
  st.global.f32 [%rd15], %f10;
  add.s64 %rd9, %rd9, 1;
  bra UPDATE;
DONE:
  ret;
}

.visible .entry tok_logits(.param .u64 p_ids, .param .u64 p_w, .param .u64 p_logits,
                           .param .s64 p_n, .param .s64 p_v)
{
  .reg .pred %p<4>;
  .reg .b32 %r<4>;
  .reg .f32 %f<4>;
  .reg .b64 %rd<20>;
  ld.param.u64 %rd1, [p_ids];
  ld.param.u64 %rd2, [p_w];
  ld.param.u64 %rd3, [p_logits];
  ld.param.s64 %rd4, [p_n];
  ld.param.s64 %rd5, [p_v];
  cvta.to.global.u64 %rd1, %rd1;
  cvta.to.global.u64 %rd2, %rd2;
  cvta.to.global.u64 %rd3, %rd3;
  mov.u64 %rd6, 0;
ROW:
  setp.ge.s64 %p1, %rd6, %rd4;
  @%p1 bra DONE;
  shl.b64 %rd7, %rd6, 2;
  add.u64 %rd8, %rd1, %rd7;
  ld.global.s32 %r1, [%rd8];
  cvt.s64.s32 %rd9, %r1;
  add.s64 %rd9, %rd9, 1;
  rem.s64 %rd9, %rd9, %rd5;
  mul.lo.s64 %rd10, %rd6, %rd5;
  mov.u64 %rd11, 0;
COL:
  setp.ge.s64 %p2, %rd11, %rd5;
  @%p2 bra COL_DONE;
  shl.b64 %rd12, %rd11, 2;
  add.u64 %rd13, %rd2, %rd12;
  ld.global.f32 %f1, [%rd13];
  setp.eq.s64 %p3, %rd11, %rd9;
  selp.f32 %f2, 0f41000000, 0f00000000, %p3;
  add.rn.f32 %f1, %f1, %f2;
  add.s64 %rd14, %rd10, %rd11;
  shl.b64 %rd14, %rd14, 2;
  add.u64 %rd15, %rd3, %rd14;
  st.global.f32 [%rd15], %f1;
  add.s64 %rd11, %rd11, 1;
  bra COL;
COL_DONE:
  add.s64 %rd6, %rd6, 1;
  bra ROW;
DONE:
  ret;
}
)";

uint64_t align256(uint64_t v) { return (v + 255) / 256 * 256; }

const char *const kLoraA = "model.layers.0.self_attn.q_proj.lora_A.weight";
const char *const kLoraB = "model.layers.0.self_attn.q_proj.lora_B.weight";

BundleWriter tokenModel() {
  BundleWriter w;
  w.spec.target = "sm_80";
  const int ptx = w.addBlob(kTokenPtx);
  const int kStep = w.addKernel({"tok_step", ptx, -1, {1, 1, 1}, 0});
  const int kLogits = w.addKernel({"tok_logits", ptx, -1, {1, 1, 1}, 0});
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
  const int ids = buffer("input_ids", st::DType::I32, {kB, kS}, BufferRole::Input);
  const int labels = buffer("labels", st::DType::I32, {kB, kS}, BufferRole::Input);
  const int lr = buffer("lr", st::DType::F32, {}, BufferRole::Input);
  const int step = buffer("step", st::DType::F32, {}, BufferRole::Input);
  const int scale = buffer("scale", st::DType::BF16, {4}, BufferRole::Frozen);
  const int wt = buffer("w", st::DType::F32, {kV}, BufferRole::Trainable);
  const int a = buffer(kLoraA, st::DType::F32, {4, 8}, BufferRole::Trainable);
  const int b = buffer(kLoraB, st::DType::BF16, {8, 4}, BufferRole::Trainable);
  const int m = buffer("w.m", st::DType::F32, {kV}, BufferRole::OptimizerState);
  const int loss = buffer("loss", st::DType::F32, {}, BufferRole::Output);
  const int logits = buffer("logits", st::DType::F32, {kB, kS, kV}, BufferRole::Output);
  w.spec.arenaBytes = off;
  auto stepLaunch = [&](int update) {
    return Launch{kStep, {1, 1, 1}, {1, 1, 1}, 0,
                  {Arg::ptr(ids), Arg::ptr(labels), Arg::ptr(wt), Arg::ptr(m), Arg::ptr(lr),
                   Arg::ptr(step), Arg::ptr(loss), Arg::i64(kB * kS), Arg::i32(update)}};
  };
  Entry &train = w.entry("tok_train_step");
  train.inputs = {ids, labels, lr, step};
  train.params = {scale, wt, a, b, m};
  train.outputs = {loss, wt, m};
  train.launches = {stepLaunch(1)};
  Entry &eval = w.entry("tok");
  eval.inputs = {ids, labels};
  eval.params = {wt};
  eval.outputs = {loss};
  eval.launches = {stepLaunch(0)};
  Entry &gen = w.entry("tok_logits");
  gen.inputs = {ids};
  gen.params = {wt};
  gen.outputs = {logits};
  gen.launches = {{kLogits, {1, 1, 1}, {1, 1, 1}, 0,
                   {Arg::ptr(ids), Arg::ptr(wt), Arg::ptr(logits), Arg::i64(kB * kS),
                    Arg::i64(kV)}}};
  PeftConfig peft;
  peft.r = 4;
  peft.loraAlpha = 8;
  peft.targetModules = {"q_proj"};
  peft.baseModelNameOrPath = "test/tok";
  w.spec.peft = peft;
  return w;
}

double w0(int64_t v) { return 0.001 * static_cast<double>(v % 7); }

std::string readFile(const std::string &p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The lines of qtune-run generate's output that are neither the device line
/// nor the summary (stderr and stdout are merged by runQtuneRun).
std::string generatedText(const std::string &out);

std::vector<std::string> lines(const std::string &text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

/// 121 tokens (30 windows of 4 + 1) of bytes 1..200; with `poison`, byte 255
/// at position 41: a label of window 10 only.
std::vector<uint16_t> trainTokens(bool poison) {
  std::vector<uint16_t> v(121);
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<uint16_t>(1 + (i * 37 + 11) % 200);
  if (poison)
    v[41] = 255;
  return v;
}

class TokenToolTest : public TempDirTest {
protected:
  void SetUp() override {
    makeDir("qtune-token-tool-test");
    std::string error;
    ASSERT_TRUE(tokenModel().write(path("m.qtb"), error)) << error;
    std::vector<double> w(kV), a(32), b(32);
    for (int64_t v = 0; v < kV; ++v)
      w[v] = w0(v);
    for (int i = 0; i < 32; ++i) {
      a[i] = 0.01 * i;
      b[i] = -0.5 + 0.03125 * i;
    }
    writeTensors("params.safetensors",
                 {tensor("scale", st::DType::F32, {1, 2, 3, 4}, {4}),
                  tensor("w", st::DType::F32, w, {kV}), tensor(kLoraA, st::DType::F32, a, {4, 8}),
                  tensor(kLoraB, st::DType::BF16, b, {8, 4})});
    writeU16("train.u16", trainTokens(true));
    writeU16("eval.u16", trainTokens(false));
  }
  void writeU16(const std::string &name, const std::vector<uint16_t> &v) {
    std::ofstream os(path(name), std::ios::binary | std::ios::trunc);
    os.write(reinterpret_cast<const char *>(v.data()),
             static_cast<std::streamsize>(v.size() * 2));
  }
  std::string train(const std::string &extra) const {
    return "train " + path("m.qtb") + " --params " + path("params.safetensors") + " " + extra;
  }
  /// Expects exit 1 with exactly one line "qtune-run: error: <message>".
  void expectError(const std::string &arguments, const std::string &message) {
    std::string out;
    EXPECT_EQ(runQtuneRun(arguments, out), 1) << out;
    EXPECT_EQ(out, "qtune-run: error: " + message + "\n");
  }
  /// A checkpoint written without the GPU, for the resume checks.
  void fakeCheckpoint(const std::string &dir, int64_t step, const std::string &bundleBytes,
                      bool withMomentum = true) {
    Checkpoint c;
    c.state.step = step;
    c.state.entry = "tok_train_step";
    c.state.bundlePath = path("m.qtb");
    c.state.bundle = fingerprintBytes(bundleBytes);
    c.state.schedule.lr = 0.05;
    c.state.schedule.steps = 20;
    c.state.data = DataState{path("train.u16"), TokenFormat::U16, 121, kB, kS, LoaderState{}};
    c.tensors.push_back(tensor("w", st::DType::F32, std::vector<double>(kV), {kV}));
    c.tensors.push_back(tensor(kLoraA, st::DType::F32, std::vector<double>(32), {4, 8}));
    c.tensors.push_back(tensor(kLoraB, st::DType::BF16, std::vector<double>(32), {8, 4}));
    if (withMomentum)
      c.tensors.push_back(tensor("w.m", st::DType::F32, std::vector<double>(kV), {kV}));
    std::string written, error;
    ASSERT_TRUE(writeCheckpoint(dir, c, written, error)) << error;
  }
};

TEST_F(TokenToolTest, TheModelIsAValidBundle) {
  std::string error;
  auto b = loadBundle(path("m.qtb"), error);
  ASSERT_NE(b, nullptr) << error;
  EXPECT_EQ(bundleVocab(*b, "tok_train_step"), kV);
  std::string name;
  ASSERT_TRUE(selectLossEntry(*b, "", name, error)) << error;
  EXPECT_EQ(name, "tok");
  ASSERT_TRUE(selectLogitsEntry(*b, "", name, error)) << error;
  EXPECT_EQ(name, "tok_logits");
}

TEST_F(TokenToolTest, TrainErrorsBeforeTheGpu) {
  const std::string data = " --data " + path("train.u16");
  const std::string save = " --save-dir " + path("run");
  expectError(train("--steps 4 --lr 0.1" + data + " --inputs " + path("params.safetensors") + save),
              "--data and --inputs exclude each other: --data draws input_ids and labels from a "
              "token file, --inputs reads a fixed batch");
  expectError(train("--steps 4 --lr 0.1" + data),
              "nothing would be saved: pass --out FILE, --save-dir DIR or both");
  expectError(train("--steps 4 --lr 0.1 --save-every 2 --out " + path("o.safetensors") + data),
              "--save-every and --keep need --save-dir");
  expectError(train("--steps 4 --lr 0.1 --seed 3 --inputs " + path("params.safetensors") + save),
              "--data-format, --vocab, --seed and --shuffle/--no-shuffle apply to --data only");
  expectError(train("--lr 0.1" + data + save),
              "--steps is required (a run resumed with --resume takes it from the checkpoint)");
  expectError(train("--steps 4" + data + save),
              "--lr is required (a run resumed with --resume takes it from the checkpoint)");
  expectError(train("--steps 4 --lr 0.1 --data-format u8" + data + save),
              "unknown --data-format 'u8' (expected u16, u32 or text)");
  expectError(train("--steps 4 --lr 0.1 --data " + path("absent.u16") + save),
              path("absent.u16") + ": cannot open: No such file or directory");
  {
    std::ofstream(path("odd.u16")) << "abc";
  }
  expectError(train("--steps 4 --lr 0.1 --data " + path("odd.u16") + save),
              path("odd.u16") + ": 3 bytes is not a whole number of u16 tokens (2 bytes each); "
                                "pass --data-format if this is not a u16 file");
  writeU16("short.u16", {1, 2, 3, 4});
  expectError(train("--steps 4 --lr 0.1 --data " + path("short.u16") + save),
              path("short.u16") + ": 4 tokens are fewer than one window of 5 (sequence length 4 + 1)");
  std::vector<uint16_t> big = trainTokens(false);
  big[7] = 300;
  writeU16("big.u16", big);
  expectError(train("--steps 4 --lr 0.1 --data " + path("big.u16") + save),
              path("big.u16") + ": token 300 at position 7 is out of range for a vocabulary of "
                                "256 tokens");
  expectError(train("--steps 4 --lr 0.1 --vocab 1000" + data + save),
              "--vocab 1000 differs from the vocabulary of the bundle's logits entry (256)");
  // Text data: the bytes are the tokens.
  {
    std::ofstream(path("short.txt")) << "abc";
  }
  expectError(train("--steps 4 --lr 0.1 --data " + path("short.txt") + save),
              path("short.txt") + ": 3 tokens are fewer than one window of 5 (sequence length 4 "
                                  "+ 1)");
  // Params.
  expectError("train " + path("m.qtb") + " --steps 4 --lr 0.1" + data + save,
              "entry 'tok_train_step' has 4 params; pass them with --params");
  EXPECT_FALSE(fs::exists(path("run")));
}

TEST_F(TokenToolTest, ResumeErrorsBeforeTheGpu) {
  const std::string data = " --data " + path("train.u16");
  const std::string bundleBytes = readFile(path("m.qtb"));
  // Every run saves into s (and none gets that far).
  auto train = [&](const std::string &extra) {
    return TokenToolTest::train(extra + " --save-dir " + path("s"));
  };
  expectError(train("--resume " + path("nowhere") + data),
              path("nowhere") + ": not a directory (--resume takes a checkpoint directory, or "
                                "the --save-dir that holds them)");

  fakeCheckpoint(path("other"), 5, "another bundle");
  std::string out;
  EXPECT_EQ(runQtuneRun(train("--resume " + path("other") + data), out), 1);
  EXPECT_EQ(out.rfind("qtune-run: error: " + path("other") + "/checkpoint-5 was written for "
                      "bundle " + path("m.qtb") + " (14 bytes, fnv1a64 ",
                      0),
            0u)
      << out;
  EXPECT_NE(out.find("resume with the bundle it was trained with\n"), std::string::npos) << out;

  fakeCheckpoint(path("run"), 20, bundleBytes);
  expectError(train("--resume " + path("run") + data),
              path("run") + "/checkpoint-20 is at step 20 of 20 already; pass --steps above 20 "
                            "to train further");
  fakeCheckpoint(path("run"), 8, bundleBytes);
  const std::string ckpt = path("run") + "/checkpoint-8";
  expectError(train("--resume " + ckpt),
              ckpt + " was trained on --data " + path("train.u16") + "; pass --data to resume it");
  writeU16("even.u16", std::vector<uint16_t>(122, 5));
  expectError(train("--resume " + ckpt + " --data " + path("even.u16") + " --data-format u32"),
              path("even.u16") + ": 61 u32 tokens, but " + ckpt +
                  " was trained on 121 u16 tokens (" + path("train.u16") +
                  "); resume with the same data");
  writeU16("longer.u16", std::vector<uint16_t>(200, 5));
  expectError(train("--resume " + ckpt + " --data " + path("longer.u16")),
              path("longer.u16") + ": 200 u16 tokens, but " + ckpt + " was trained on 121 u16 "
                                   "tokens (" + path("train.u16") + "); resume with the same data");
  expectError(train("--resume " + ckpt + " --seed 4" + data),
              "--seed 4 differs from the checkpoint's seed 0; leave it out to resume");
  expectError(train("--resume " + ckpt + " --no-shuffle" + data),
              "--no-shuffle differs from the checkpoint (shuffled); leave it out to resume");
  expectError(train("--resume " + ckpt + " --entry tok" + data),
              ckpt + " trained entry 'tok_train_step', not --entry 'tok'");
  fakeCheckpoint(path("nom"), 8, bundleBytes, /*withMomentum=*/false);
  expectError(train("--resume " + path("nom") + data),
              path("nom") + "/checkpoint-8/qtune_state.safetensors: no tensor 'w.m' "
                            "(optimizer_state F32 [256])");
  // Frozen params still come from --params.
  expectError("train " + path("m.qtb") + " --resume " + ckpt + data + " --save-dir " + path("s"),
              "entry 'tok_train_step' has 1 params; pass them with --params");
  EXPECT_FALSE(fs::exists(path("s")));
}

TEST_F(TokenToolTest, EvalAndGenerateErrorsBeforeTheGpu) {
  const std::string params = " --params " + path("params.safetensors");
  expectError("eval " + path("m.qtb") + params + " --data " + path("train.u16") + " --entry w",
              path("m.qtb") + ": no entry 'w' (entries: tok, tok_logits, tok_train_step)");
  expectError("eval " + path("m.qtb") + params + " --data " + path("train.u16") +
                  " --entry tok_train_step",
              path("m.qtb") + ": entry 'tok_train_step' takes input_ids, labels, lr, step; a loss "
                              "entry takes exactly 'input_ids' and 'labels'");
  writeU16("five.u16", {1, 2, 3, 4, 5, 6, 7, 8});
  expectError("eval " + path("m.qtb") + params + " --data " + path("five.u16"),
              path("five.u16") + ": 1 window of 5 tokens is fewer than one batch of 2");
  expectError("eval " + path("m.qtb") + " --data " + path("train.u16"),
              "entry 'tok' has 1 params; pass them with --params");
  std::vector<uint16_t> big = trainTokens(false);
  big[100] = 256;
  writeU16("big.u16", big);
  expectError("eval " + path("m.qtb") + params + " --data " + path("big.u16"),
              path("big.u16") + ": token 256 at position 100 is out of range for a vocabulary of "
                                "256 tokens");

  const std::string gen = "generate " + path("m.qtb") + params;
  expectError(gen + " --prompt ''", "--prompt is empty; generation needs at least one byte of "
                                    "context");
  expectError(gen + " --prompt hi --top-p 0", "--top-p must be in (0, 1] (got 0)");
  expectError(gen + " --prompt hi --temperature -1",
              "--temperature must be finite and non-negative (got -1)");
  expectError(gen + " --prompt hi --max-new-tokens -2",
              "--max-new-tokens must not be negative (got -2)");
  expectError("generate " + path("m.qtb") + " --prompt hi",
              "entry 'tok_logits' has 1 params; pass them with --params");
  expectError(gen + " --prompt hi --entry tok",
              path("m.qtb") + ": entry 'tok' takes input_ids, labels; a logits entry takes "
                              "exactly 'input_ids'");
  expectError("generate " + path("m.qtb") + " --params " + path("nothing-here") + " --prompt hi",
              path("nothing-here") + ": cannot open: No such file or directory");
  // A directory must be a checkpoint or hold some.
  fs::create_directories(path("empty"));
  expectError("generate " + path("m.qtb") + " --params " + path("empty") + " --prompt hi",
              path("empty") + ": no trainer_state.json and no checkpoint-<step> directories");
}

TEST_F(TokenToolTest, NoGpu) {
  std::string why;
  if (haveGpu(why))
    GTEST_SKIP() << "a CUDA GPU is available here; the no-GPU path cannot be tested";
  const std::string params = " --params " + path("params.safetensors");
  for (const std::string &args :
       {train("--steps 4 --lr 0.1 --data " + path("train.u16") + " --save-dir " + path("run")),
        "eval " + path("m.qtb") + params + " --data " + path("eval.u16"),
        "generate " + path("m.qtb") + params + " --prompt hi"}) {
    std::string out;
    EXPECT_EQ(runQtuneRun(args, out), 1) << args;
    EXPECT_NE(out.find("qtune-run: error: no CUDA GPU available: "), std::string::npos) << out;
  }
  EXPECT_FALSE(fs::exists(path("run")));
}

// ---- on the GPU ----------------------------------------------------------------------------

std::string generatedText(const std::string &out) {
  std::string text;
  for (const std::string &line : lines(out))
    if (line.rfind("device ", 0) != 0 && line.rfind("generated ", 0) != 0)
      text += line + "\n";
  return text;
}

/// The bytes of every tensor of a safetensors file, by name.
std::map<std::string, std::vector<uint8_t>> tensorBytes(const std::string &p) {
  std::map<std::string, std::vector<uint8_t>> out;
  std::string error;
  auto f = st::File::open(p, error);
  EXPECT_NE(f, nullptr) << error;
  if (f)
    for (const st::TensorInfo &t : f->tensors())
      out[t.name] = std::vector<uint8_t>(f->data(t), f->data(t) + t.bytes);
  return out;
}

Json trainerState(const std::string &checkpoint) {
  return Json::parse(readFile(checkpoint + "/trainer_state.json"));
}

TEST_F(TokenToolTest, ResumeIsBitIdenticalOnGpu) {
  std::string why;
  if (!haveGpu(why))
    GTEST_SKIP() << why;
  const std::string data = " --data " + path("train.u16");
  const std::string schedule = " --steps 20 --lr 0.5 --schedule cosine --warmup 3 --min-lr 0.01";
  std::string out;

  // 20 steps straight, saving at 10 and 20.
  ASSERT_EQ(runQtuneRun(train(schedule + data + " --save-dir " + path("a") +
                              " --save-every 10 --metrics " + path("a.jsonl")),
                        out),
            0)
      << out;
  EXPECT_NE(out.find("saved " + path("a") + "/checkpoint-10 (4 tensors, "), std::string::npos)
      << out;
  EXPECT_NE(out.find("PEFT adapter of 2 tensors"), std::string::npos) << out;
  EXPECT_NE(out.find("; skipped ("), std::string::npos) << out;
  EXPECT_NE(out.find("with a non-finite loss\n"), std::string::npos) << out;
  const Json a20 = trainerState(path("a") + "/checkpoint-20");
  EXPECT_EQ(a20["step"], 20);
  EXPECT_GT(a20["skipped"].get<int>(), 0); // the poisoned window came up
  // The metrics: a line per attempt, skipped ones with a null loss.
  int skippedLines = 0, countedLines = 0;
  for (const std::string &line : lines(readFile(path("a.jsonl")))) {
    const Json j = Json::parse(line);
    EXPECT_TRUE(j.contains("tokens_per_s")) << line;
    if (j["skipped"].get<bool>()) {
      ++skippedLines;
      EXPECT_TRUE(j["loss"].is_null()) << line;
    } else {
      ++countedLines;
    }
  }
  EXPECT_EQ(countedLines, 20);
  EXPECT_EQ(skippedLines, a20["skipped"].get<int>());

  // Resumed from step 10 (the schedule, data order and step come from the
  // checkpoint): the same parameters and states, bit for bit.
  ASSERT_EQ(runQtuneRun(train("--resume " + path("a") + "/checkpoint-10" + data +
                              " --save-dir " + path("b")),
                        out),
            0)
      << out;
  EXPECT_NE(out.find("resuming " + path("a") + "/checkpoint-10: step 10"), std::string::npos)
      << out;
  EXPECT_NE(out.find("from step 11"), std::string::npos) << out;
  const auto straight = tensorBytes(path("a") + "/checkpoint-20/qtune_state.safetensors");
  const auto resumed = tensorBytes(path("b") + "/checkpoint-20/qtune_state.safetensors");
  ASSERT_EQ(straight.size(), 4u);
  EXPECT_TRUE(straight == resumed) << "the resumed run's params differ from the straight run's";
  const Json b20 = trainerState(path("b") + "/checkpoint-20");
  EXPECT_EQ(b20["data"], a20["data"]);
  EXPECT_EQ(b20["skipped"], a20["skipped"]);
  // The step count continued: w.m sums the step numbers of the updates.
  std::string error;
  auto f = st::File::open(path("b") + "/checkpoint-20/qtune_state.safetensors", error);
  ASSERT_NE(f, nullptr) << error;
  const std::vector<double> m = st::toDoubles(*f->find("w.m"), f->data(*f->find("w.m")));
  double total = 0;
  for (double x : m)
    total += x;
  EXPECT_EQ(total, 8.0 * 210); // 8 positions x (1 + 2 + ... + 20)

  // The PEFT adapter.
  const auto adapter = tensorBytes(path("b") + "/checkpoint-20/adapter_model.safetensors");
  ASSERT_EQ(adapter.size(), 2u);
  EXPECT_TRUE(adapter.count(std::string("base_model.model.") + kLoraA));
  EXPECT_TRUE(adapter.at(std::string("base_model.model.") + kLoraB) == straight.at(kLoraB));
  const Json config = Json::parse(readFile(path("b") + "/checkpoint-20/adapter_config.json"));
  EXPECT_EQ(config["r"], 4);
  EXPECT_EQ(config["target_modules"], Json::array({"q_proj"}));

  // N/2 + resume + N/2 with a constant schedule, against 20 steps straight;
  // --resume DIR takes its latest checkpoint.
  ASSERT_EQ(runQtuneRun(train("--steps 10 --lr 0.3" + data + " --save-dir " + path("c")), out), 0)
      << out;
  ASSERT_EQ(runQtuneRun(train("--resume " + path("c") + " --steps 20" + data + " --save-dir " +
                              path("c") + " --keep 1"),
                        out),
            0)
      << out;
  EXPECT_NE(out.find("note: the schedule differs from the checkpoint's"), std::string::npos)
      << out;
  ASSERT_EQ(runQtuneRun(train("--steps 20 --lr 0.3" + data + " --save-dir " + path("d") +
                              " --out " + path("d.safetensors")),
                        out),
            0)
      << out;
  EXPECT_FALSE(fs::exists(path("c") + "/checkpoint-10")); // --keep 1
  EXPECT_TRUE(tensorBytes(path("c") + "/checkpoint-20/qtune_state.safetensors") ==
              tensorBytes(path("d") + "/checkpoint-20/qtune_state.safetensors"));
  // --out holds every param, the frozen one too.
  const auto outFile = tensorBytes(path("d.safetensors"));
  EXPECT_EQ(outFile.size(), 5u);
  EXPECT_TRUE(outFile.count("scale"));
}

TEST_F(TokenToolTest, TooManySkipsStopsWithoutSavingOnGpu) {
  std::string why;
  if (!haveGpu(why))
    GTEST_SKIP() << why;
  std::vector<uint16_t> v = trainTokens(false);
  for (size_t i = 1; i < v.size(); i += 4)
    v[i] = 255; // every window has a poisoned label
  writeU16("poison.u16", v);
  std::string out;
  EXPECT_EQ(runQtuneRun(train("--steps 5 --lr 0.1 --data " + path("poison.u16") +
                              " --save-dir " + path("run") + " --save-every 1 --max-skips 3 "
                              "--metrics " + path("m.jsonl")),
                        out),
            1);
  EXPECT_NE(out.find("qtune-run: error: step 1: loss is nan for 4 consecutive steps (more than "
                     "--max-skips 3); stopped without writing a checkpoint (the loss curve up to "
                     "it is in " + path("m.jsonl") + ")\n"),
            std::string::npos)
      << out;
  EXPECT_FALSE(fs::exists(path("run")));
  EXPECT_EQ(lines(readFile(path("m.jsonl"))).size(), 4u);
}

TEST_F(TokenToolTest, EvalOnGpu) {
  std::string why;
  if (!haveGpu(why))
    GTEST_SKIP() << why;
  std::string out;
  ASSERT_EQ(runQtuneRun("eval " + path("m.qtb") + " --params " + path("params.safetensors") +
                            " --data " + path("eval.u16") + " --json",
                        out),
            0)
      << out;
  // stdout and stderr are merged here: the JSON is the last line.
  const std::vector<std::string> ls = lines(out);
  ASSERT_FALSE(ls.empty());
  const Json j = Json::parse(ls.back());
  EXPECT_EQ(j["entry"], "tok");
  EXPECT_EQ(j["batches"], 15); // 30 windows, 2 a batch
  EXPECT_EQ(j["tokens"], 120);
  // The loss on the CPU: consecutive windows, mean over the batches.
  const std::vector<uint16_t> t = trainTokens(false);
  double sum = 0;
  for (int batch = 0; batch < 15; ++batch) {
    float l = 0;
    for (int p = 0; p < 8; ++p) {
      const size_t i = static_cast<size_t>(batch * 8 + p);
      const float g = static_cast<float>(w0(t[i])) - static_cast<float>(t[i + 1]) / 256.0f;
      l = std::fma(g * g, 0.5f, l);
    }
    sum += l / 8.0f;
  }
  EXPECT_NEAR(j["loss"].get<double>(), sum / 15, 1e-6);
  EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(sum / 15), 1e-6);

  ASSERT_EQ(runQtuneRun("eval " + path("m.qtb") + " --params " + path("params.safetensors") +
                            " --data " + path("eval.u16") + " --max-batches 4",
                        out),
            0)
      << out;
  EXPECT_NE(out.find("eval 'tok': 4 batches of 2 x 4 tokens (32 tokens) from "), std::string::npos)
      << out;
  EXPECT_NE(out.find("note: 22 of the 30 windows were not evaluated (--max-batches)"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("perplexity "), std::string::npos) << out;

  // A NaN loss names the batch.
  EXPECT_EQ(runQtuneRun("eval " + path("m.qtb") + " --params " + path("params.safetensors") +
                            " --data " + path("train.u16"),
                        out),
            1);
  EXPECT_NE(out.find("qtune-run: error: batch 6 (windows 10..11 of " + path("train.u16") +
                     "): loss is nan\n"),
            std::string::npos)
      << out;
}

TEST_F(TokenToolTest, GenerateOnGpu) {
  std::string why;
  if (!haveGpu(why))
    GTEST_SKIP() << why;
  const std::string gen = "generate " + path("m.qtb") + " --params " + path("params.safetensors");
  std::string out;
  // Greedy: each next byte is the last one + 1. The context (S = 4) keeps the
  // last 4 bytes, so the prompt's length does not matter.
  ASSERT_EQ(runQtuneRun(gen + " --prompt abc --max-new-tokens 5 --temperature 0", out), 0) << out;
  EXPECT_EQ(generatedText(out), "abcdefgh\n") << out;
  EXPECT_NE(out.find("\ngenerated 5 tokens in "), std::string::npos) << out;
  ASSERT_EQ(runQtuneRun(gen + " --prompt hello --max-new-tokens 3 --temperature 0", out), 0)
      << out;
  EXPECT_EQ(generatedText(out), "hellopqr\n") << out;
  // Bytes that are not printable come back escaped.
  ASSERT_EQ(runQtuneRun(gen + " --prompt '}~' --max-new-tokens 2 --temperature 0", out), 0)
      << out;
  EXPECT_EQ(generatedText(out), "}~\\x7f\\x80\n") << out;
  // Sampling: a fixed seed gives a fixed text.
  std::string first, second;
  const std::string sampled = gen + " --prompt abc --max-new-tokens 20 --temperature 3 "
                                    "--top-p 0.9 --seed 7";
  ASSERT_EQ(runQtuneRun(sampled, first), 0) << first;
  ASSERT_EQ(runQtuneRun(sampled, second), 0) << second;
  EXPECT_EQ(generatedText(first), generatedText(second));
  EXPECT_EQ(generatedText(first).rfind("abc", 0), 0u) << first;
  // Trained params from a checkpoint directory, layered over the params file.
  ASSERT_EQ(runQtuneRun(train("--steps 3 --lr 0.1 --data " + path("eval.u16") + " --save-dir " +
                              path("run")),
                        out),
            0)
      << out;
  ASSERT_EQ(runQtuneRun(gen + " --params " + path("run") + "/checkpoint-3 --prompt abc "
                              "--max-new-tokens 2 --temperature 0",
                        out),
            0)
      << out;
  EXPECT_NE(out.find("abcde\n"), std::string::npos) << out;
  // A save directory stands for its latest checkpoint.
  ASSERT_EQ(runQtuneRun(gen + " --params " + path("run") + " --prompt abc --max-new-tokens 2 "
                              "--temperature 0",
                        out),
            0)
      << out;
  EXPECT_NE(out.find("abcde\n"), std::string::npos) << out;
  EXPECT_NE(out.find("generated 2 tokens in "), std::string::npos) << out;
}

} // namespace
