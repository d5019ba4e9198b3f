//===- CheckpointTest.cpp - trainer state, PEFT adapters, checkpoint dirs ---===//
//
// No GPU needed.
//
//===----------------------------------------------------------------------===//

#include "qtune/runtime/Checkpoint.h"
#include "qtune/runtime/Float16.h"

#include "TestSupport.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

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

std::string readFile(const std::string &p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TrainerState sampleState(bool withData) {
  TrainerState s;
  s.step = 50;
  s.skipped = 2;
  s.entry = "llama_train_step";
  s.bundlePath = "out/llama.qtb";
  s.bundle = fingerprintBytes("bundle bytes");
  s.schedule.kind = ScheduleKind::Cosine;
  s.schedule.lr = 3e-4;
  s.schedule.minLr = 1.0 / 3.0 * 1e-5; // not a short decimal: must round-trip exactly
  s.schedule.warmup = 10;
  s.schedule.steps = 200;
  if (withData) {
    DataState d;
    d.path = "data/train.u16";
    d.format = TokenFormat::U16;
    d.tokens = 123456789;
    d.batch = 8;
    d.seqLen = 512;
    d.loader.seed = 0xFEDCBA9876543210ull; // above 2^63
    d.loader.shuffle = true;
    d.loader.epoch = 3;
    d.loader.position = 17;
    s.data = d;
  }
  return s;
}

TEST(TrainerStateTest, Fingerprint) {
  // FNV-1a 64 reference values.
  EXPECT_EQ(fingerprintBytes("").fnv1a64, 0xcbf29ce484222325ull);
  EXPECT_EQ(fingerprintBytes("a").fnv1a64, 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(fingerprintBytes("foobar").fnv1a64, 0x85944171f73967e8ull);
  EXPECT_EQ(fingerprintBytes("foobar").bytes, 6u);
}

TEST(TrainerStateTest, RoundTrip) {
  for (bool withData : {true, false}) {
    const TrainerState s = sampleState(withData);
    const std::string text = trainerStateJson(s);
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
    TrainerState back;
    std::string error;
    ASSERT_TRUE(parseTrainerState(text, back, error)) << error << "\n" << text;
    EXPECT_EQ(back.step, 50);
    EXPECT_EQ(back.skipped, 2);
    EXPECT_EQ(back.entry, "llama_train_step");
    EXPECT_EQ(back.bundlePath, "out/llama.qtb");
    EXPECT_EQ(back.bundle, s.bundle);
    EXPECT_EQ(back.schedule.kind, ScheduleKind::Cosine);
    EXPECT_EQ(back.schedule.lr, s.schedule.lr); // bit for bit
    EXPECT_EQ(back.schedule.minLr, s.schedule.minLr);
    EXPECT_EQ(back.schedule.warmup, 10);
    EXPECT_EQ(back.schedule.steps, 200);
    ASSERT_EQ(back.data.has_value(), withData);
    if (withData) {
      EXPECT_EQ(back.data->path, "data/train.u16");
      EXPECT_EQ(back.data->format, TokenFormat::U16);
      EXPECT_EQ(back.data->tokens, 123456789u);
      EXPECT_EQ(back.data->batch, 8);
      EXPECT_EQ(back.data->seqLen, 512);
      EXPECT_EQ(back.data->loader.seed, 0xFEDCBA9876543210ull);
      EXPECT_TRUE(back.data->loader.shuffle);
      EXPECT_EQ(back.data->loader.epoch, 3u);
      EXPECT_EQ(back.data->loader.position, 17u);
    }
    // The documented layout.
    const Json j = Json::parse(text);
    EXPECT_EQ(j["format"], "qtune-trainer-state");
    EXPECT_EQ(j["version"], 1);
    EXPECT_EQ(j["bundle"]["fnv1a64"].get<std::string>().size(), 16u);
    EXPECT_EQ(j["schedule"]["kind"], "cosine");
    EXPECT_EQ(j["data"].is_null(), !withData);
  }
}

TEST(TrainerStateTest, ParseErrors) {
  auto expectError = [](const std::function<void(Json &)> &edit, const std::string &expected) {
    Json j = Json::parse(trainerStateJson(sampleState(true)));
    edit(j);
    TrainerState s;
    std::string error;
    EXPECT_FALSE(parseTrainerState(j.dump(), s, error));
    EXPECT_EQ(error, expected);
  };
  TrainerState s;
  std::string error;
  EXPECT_FALSE(parseTrainerState("{\"step\": ", s, error));
  EXPECT_EQ(error, "not valid JSON");
  EXPECT_FALSE(parseTrainerState("[]", s, error));
  EXPECT_EQ(error, "trainer state: expected an object, got an array");
  expectError([](Json &j) { j.erase("step"); }, "step: missing");
  expectError([](Json &j) { j["step"] = "50"; }, "step: expected an integer, got a string");
  expectError([](Json &j) { j["step"] = -1; }, "step: must not be negative (got -1)");
  expectError([](Json &j) { j["step"] = 201; }, "step: 201 is past schedule.steps (200)");
  expectError([](Json &j) { j["format"] = "other"; },
              "format: expected \"qtune-trainer-state\", got \"other\"");
  expectError([](Json &j) { j["version"] = 2; },
              "version: unsupported trainer state version 2 (this runtime reads 1)");
  expectError([](Json &j) { j["schedule"]["lr"] = "fast"; },
              "schedule.lr: expected a number, got a string");
  expectError([](Json &j) { j["schedule"]["kind"] = "linear"; },
              "schedule.kind: unknown schedule 'linear' (expected constant or cosine)");
  expectError([](Json &j) { j["schedule"]["warmup"] = 500; },
              "schedule: --warmup must be between 0 and --steps (200) (got 500)");
  expectError([](Json &j) { j["bundle"]["fnv1a64"] = "xyz"; },
              "bundle.fnv1a64: expected 16 lowercase hex digits, got \"xyz\"");
  expectError([](Json &j) { j["bundle"] = 3; }, "bundle: expected an object, got an integer");
  expectError([](Json &j) { j["data"]["format"] = "u8"; },
              "data.format: unknown format 'u8' (expected u16, u32 or text)");
  expectError([](Json &j) { j["data"]["shuffle"] = 1; },
              "data.shuffle: expected a boolean, got an integer");
  expectError([](Json &j) { j["data"]["position"] = -4; },
              "data.position: expected a non-negative integer, got an integer");
  expectError([](Json &j) { j["data"].erase("seed"); }, "data.seed: missing");
}

// ---- PEFT ----------------------------------------------------------------------------------

PeftConfig peft() {
  PeftConfig c;
  c.r = 4;
  c.loraAlpha = 8;
  c.loraDropout = 0.05;
  c.targetModules = {"q_proj", "v_proj"};
  c.baseModelNameOrPath = "meta-llama/Llama-3.2-1B";
  return c;
}

/// A spec with LoRA buffers for q_proj and v_proj of layer 0 (in 16, out 12)
/// and a frozen base weight.
BundleSpec loraSpec(std::vector<int> &trainable) {
  BundleSpec spec;
  spec.target = "sm_90a";
  auto add = [&](const std::string &name, std::vector<int64_t> shape, BufferRole role,
                 st::DType dt = st::DType::F32) {
    spec.buffers.push_back({name, 0, 0, dt, std::move(shape), role});
    return static_cast<int>(spec.buffers.size() - 1);
  };
  add("model.layers.0.self_attn.q_proj.weight", {12, 16}, BufferRole::Frozen);
  trainable = {add("model.layers.0.self_attn.q_proj.lora_A.weight", {4, 16}, BufferRole::Trainable),
               add("model.layers.0.self_attn.q_proj.lora_B.weight", {12, 4}, BufferRole::Trainable),
               add("model.layers.0.self_attn.v_proj.lora_A.weight", {4, 16}, BufferRole::Trainable,
                   st::DType::BF16),
               add("model.layers.0.self_attn.v_proj.lora_B.weight", {12, 4}, BufferRole::Trainable,
                   st::DType::BF16),
               add("model.norm.weight", {16}, BufferRole::Trainable)};
  return spec;
}

TEST(PeftAdapterTest, LoraNames) {
  EXPECT_TRUE(isLoraParam("model.layers.0.self_attn.q_proj.lora_A.weight"));
  EXPECT_TRUE(isLoraParam("x.lora_B.weight"));
  EXPECT_FALSE(isLoraParam(".lora_A.weight"));
  EXPECT_FALSE(isLoraParam("model.layers.0.self_attn.q_proj.lora_A.weight.m"));
  EXPECT_FALSE(isLoraParam("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_FALSE(isLoraParam("lora_A"));
}

TEST(PeftAdapterTest, PlanAdapter) {
  std::vector<int> trainable, lora;
  BundleSpec spec = loraSpec(trainable);
  std::string error;
  ASSERT_TRUE(planAdapter(spec, trainable, peft(), lora, error)) << error;
  EXPECT_EQ(lora, (std::vector<int>{1, 2, 3, 4})); // not the norm

  PeftConfig c = peft();
  c.r = 8;
  EXPECT_FALSE(planAdapter(spec, trainable, c, lora, error));
  EXPECT_EQ(error, "LoRA param 'model.layers.0.self_attn.q_proj.lora_A.weight' (F32 [4, 16]): "
                   "its rank 4 is not the bundle's peft.r (8)");
  c = peft();
  c.targetModules = {"q_proj"};
  EXPECT_FALSE(planAdapter(spec, trainable, c, lora, error));
  EXPECT_EQ(error, "LoRA param 'model.layers.0.self_attn.v_proj.lora_A.weight' (BF16 [4, 16]): "
                   "module 'model.layers.0.self_attn.v_proj' is not among "
                   "peft.target_modules (q_proj)");
  c.targetModules = {"self_attn.q_proj", "model.layers.0.self_attn.v_proj"}; // suffixes match
  EXPECT_TRUE(planAdapter(spec, trainable, c, lora, error)) << error;
  c.targetModules = {"proj"}; // only whole name components
  EXPECT_FALSE(planAdapter(spec, trainable, c, lora, error));

  std::vector<int> noB = {trainable[0], trainable[2], trainable[3]};
  EXPECT_FALSE(planAdapter(spec, noB, peft(), lora, error));
  EXPECT_EQ(error, "LoRA param 'model.layers.0.self_attn.q_proj.lora_A.weight' (F32 [4, 16]): "
                   "'model.layers.0.self_attn.q_proj.lora_B.weight' is missing; PEFT needs "
                   "both lora_A and lora_B");
  spec.buffers[2].shape = {12, 4, 1};
  EXPECT_FALSE(planAdapter(spec, trainable, peft(), lora, error));
  EXPECT_EQ(error, "LoRA param 'model.layers.0.self_attn.q_proj.lora_B.weight' (F32 [12, 4, "
                   "1]): a LoRA param must be 2-D, [out_features, r]");
  spec.buffers[2].shape = {12, 4};
  spec.buffers[2].dtype = st::DType::I8;
  EXPECT_FALSE(planAdapter(spec, trainable, peft(), lora, error));
  EXPECT_NE(error.find("a LoRA param must be a float tensor"), std::string::npos) << error;
}

TEST(PeftAdapterTest, AdapterConfig) {
  const Json j = Json::parse(adapterConfigJson(peft()));
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["task_type"], "CAUSAL_LM");
  EXPECT_EQ(j["r"], 4);
  EXPECT_TRUE(j["lora_alpha"].is_number_integer()); // PEFT writes an int
  EXPECT_EQ(j["lora_alpha"], 8);
  EXPECT_DOUBLE_EQ(j["lora_dropout"].get<double>(), 0.05);
  EXPECT_EQ(j["target_modules"], Json::array({"q_proj", "v_proj"}));
  EXPECT_EQ(j["bias"], "none");
  EXPECT_EQ(j["base_model_name_or_path"], "meta-llama/Llama-3.2-1B");
  EXPECT_EQ(j["inference_mode"], true);
  EXPECT_EQ(j["fan_in_fan_out"], false);
  PeftConfig c = peft();
  c.loraAlpha = 2.5;
  c.baseModelNameOrPath.clear();
  const Json k = Json::parse(adapterConfigJson(c));
  EXPECT_EQ(k["lora_alpha"], 2.5);
  EXPECT_TRUE(k["base_model_name_or_path"].is_null());
}

// ---- checkpoint directories --------------------------------------------------------------------

class CheckpointDirTest : public TempDirTest {
protected:
  void SetUp() override { makeDir("qtune-checkpoint-test"); }

  Checkpoint sample(int64_t step) {
    Checkpoint c;
    c.state = sampleState(true);
    c.state.step = step;
    c.tensors.push_back(tensor("model.layers.0.self_attn.q_proj.lora_A.weight", st::DType::F32,
                               {0.1, -0.2, 0.3, 1e-30}, {1, 4}));
    c.tensors.push_back(tensor("model.layers.0.self_attn.q_proj.lora_B.weight", st::DType::BF16,
                               {1.5, -2.0}, {2, 1}));
    c.tensors.push_back(tensor("model.layers.0.self_attn.q_proj.lora_A.weight.m", st::DType::I8,
                               {-128, 0, 5, 127}, {1, 4}));
    c.peft = peft();
    c.peft->r = 1;
    c.adapterNames = {"model.layers.0.self_attn.q_proj.lora_A.weight",
                      "model.layers.0.self_attn.q_proj.lora_B.weight"};
    return c;
  }
  std::vector<std::string> entries(const std::string &dir) {
    std::vector<std::string> out;
    for (const auto &e : fs::directory_iterator(dir))
      out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

TEST_F(CheckpointDirTest, WritesEveryFile) {
  const std::string dir = path("run");
  const Checkpoint c = sample(50);
  std::string written, error;
  ASSERT_TRUE(writeCheckpoint(dir, c, written, error)) << error;
  EXPECT_EQ(written, (fs::path(dir) / "checkpoint-50").string());
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"checkpoint-50"})); // no temporaries left
  EXPECT_EQ(entries(written),
            (std::vector<std::string>{"adapter_config.json", "adapter_model.safetensors",
                                      "qtune_state.safetensors", "trainer_state.json"}));

  // qtune_state: every tensor, bit for bit, in its dtype.
  auto state = st::File::open(written + "/qtune_state.safetensors", error);
  ASSERT_NE(state, nullptr) << error;
  ASSERT_EQ(state->tensors().size(), 3u);
  for (const st::OwnedTensor &t : c.tensors) {
    const st::TensorInfo *info = state->find(t.name);
    ASSERT_NE(info, nullptr) << t.name;
    EXPECT_EQ(info->dtype, t.dtype);
    EXPECT_EQ(info->shape, t.shape);
    EXPECT_EQ(std::vector<uint8_t>(state->data(*info), state->data(*info) + info->bytes), t.bytes);
  }
  EXPECT_EQ(state->metadata().at("step"), "50");
  EXPECT_EQ(state->metadata().at("entry"), "llama_train_step");

  // The adapter: PEFT keys, the params' dtypes, no optimizer state.
  auto adapter = st::File::open(written + "/adapter_model.safetensors", error);
  ASSERT_NE(adapter, nullptr) << error;
  ASSERT_EQ(adapter->tensors().size(), 2u);
  const st::TensorInfo *a =
      adapter->find("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  const st::TensorInfo *b =
      adapter->find("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->dtype, st::DType::F32);
  EXPECT_EQ(b->dtype, st::DType::BF16);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(st::toDoubles(*a, adapter->data(*a)),
            st::toDoubles(*state->find(c.tensors[0].name), state->data(*state->find(c.tensors[0].name))));
  EXPECT_EQ(adapter->metadata().at("format"), "pt");
  const Json config = Json::parse(readFile(written + "/adapter_config.json"));
  EXPECT_EQ(config["r"], 1);
  EXPECT_EQ(config["peft_type"], "LORA");

  LoadedCheckpoint loaded;
  ASSERT_TRUE(loadCheckpoint(written, loaded, error)) << error;
  EXPECT_EQ(loaded.state.step, 50);
  EXPECT_EQ(loaded.state.data->loader.position, 17u);
  EXPECT_NE(loaded.tensors->find(c.tensors[2].name), nullptr);
}

TEST_F(CheckpointDirTest, NoAdapterWithoutPeft) {
  Checkpoint c = sample(3);
  c.peft.reset();
  std::string written, error;
  ASSERT_TRUE(writeCheckpoint(path("run"), c, written, error)) << error;
  EXPECT_EQ(entries(written),
            (std::vector<std::string>{"qtune_state.safetensors", "trainer_state.json"}));
}

TEST_F(CheckpointDirTest, ReplacingAndFailingKeepTheOldCheckpoint) {
  const std::string dir = path("run");
  std::string written, error;
  Checkpoint c = sample(10);
  ASSERT_TRUE(writeCheckpoint(dir, c, written, error)) << error;
  const std::string before = readFile(written + "/qtune_state.safetensors");

  // A checkpoint that cannot be written (a tensor with the wrong byte count):
  // the one there stays as it was, and no temporary directory remains.
  Checkpoint bad = sample(10);
  bad.tensors[0].bytes.pop_back();
  EXPECT_FALSE(writeCheckpoint(dir, bad, written, error));
  EXPECT_EQ(error.rfind((fs::path(dir) / "checkpoint-10").string() + ": ", 0), 0u) << error;
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"checkpoint-10"}));
  EXPECT_EQ(readFile(dir + "/checkpoint-10/qtune_state.safetensors"), before);

  // The same step written again replaces it whole.
  Checkpoint again = sample(10);
  again.tensors.pop_back();
  again.peft.reset();
  ASSERT_TRUE(writeCheckpoint(dir, again, written, error)) << error;
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"checkpoint-10"}));
  EXPECT_EQ(entries(written),
            (std::vector<std::string>{"qtune_state.safetensors", "trainer_state.json"}));
  auto f = st::File::open(written + "/qtune_state.safetensors", error);
  ASSERT_NE(f, nullptr) << error;
  EXPECT_EQ(f->tensors().size(), 2u);

  // An adapter name that is not a tensor is an error, too.
  Checkpoint odd = sample(11);
  odd.adapterNames.push_back("nothing.lora_A.weight");
  EXPECT_FALSE(writeCheckpoint(dir, odd, written, error));
  EXPECT_NE(error.find("adapter tensor 'nothing.lora_A.weight' is not among"), std::string::npos)
      << error;
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"checkpoint-10"}));
}

TEST_F(CheckpointDirTest, ListPruneAndResolve) {
  const std::string dir = path("run");
  std::string written, error;
  for (int64_t step : {5, 10, 9, 100})
    ASSERT_TRUE(writeCheckpoint(dir, sample(step), written, error)) << error;
  // Things that are not checkpoints.
  fs::create_directories(dir + "/.checkpoint-200.tmp.1.2");
  fs::create_directories(dir + "/checkpoint-x1");
  fs::create_directories(dir + "/checkpoint-");
  std::ofstream(dir + "/checkpoint-300") << "a file";

  std::vector<CheckpointDir> all;
  ASSERT_TRUE(listCheckpoints(dir, all, error)) << error;
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].step, 5);
  EXPECT_EQ(all[1].step, 9);
  EXPECT_EQ(all[2].step, 10); // numeric order, not text order
  EXPECT_EQ(all[3].step, 100);

  std::string resolved;
  ASSERT_TRUE(resolveCheckpoint(dir, resolved, error)) << error;
  EXPECT_EQ(resolved, (fs::path(dir) / "checkpoint-100").string());
  ASSERT_TRUE(resolveCheckpoint(dir + "/checkpoint-9", resolved, error)) << error;
  EXPECT_EQ(resolved, dir + "/checkpoint-9");

  std::vector<std::string> removed;
  ASSERT_TRUE(pruneCheckpoints(dir, 0, "", removed, error)) << error; // 0 keeps all
  EXPECT_TRUE(removed.empty());
  // A run resumed from checkpoint-9 just wrote checkpoint-10: it stays even
  // though checkpoint-100 (of an earlier, longer run) has a higher step.
  ASSERT_TRUE(pruneCheckpoints(dir, 2, dir + "/checkpoint-10", removed, error)) << error;
  EXPECT_EQ(removed, (std::vector<std::string>{(fs::path(dir) / "checkpoint-5").string(),
                                               (fs::path(dir) / "checkpoint-9").string()}));
  ASSERT_TRUE(listCheckpoints(dir, all, error)) << error;
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].step, 10);
  EXPECT_EQ(all[1].step, 100);
  ASSERT_TRUE(pruneCheckpoints(dir, 1, dir + "/checkpoint-10", removed, error)) << error;
  EXPECT_EQ(removed, (std::vector<std::string>{(fs::path(dir) / "checkpoint-100").string()}));
  ASSERT_TRUE(listCheckpoints(dir, all, error)) << error;
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].step, 10);
  ASSERT_TRUE(pruneCheckpoints(dir, 5, "", removed, error)) << error;
  EXPECT_TRUE(removed.empty());
  // Nothing left behind by the removals.
  for (const auto &e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".old."), std::string::npos) << e.path();

  // Errors.
  EXPECT_FALSE(resolveCheckpoint(path("absent"), resolved, error));
  EXPECT_EQ(error, path("absent") + ": not a directory (--resume takes a checkpoint directory, "
                                    "or the --save-dir that holds them)");
  fs::create_directories(path("empty"));
  EXPECT_FALSE(resolveCheckpoint(path("empty"), resolved, error));
  EXPECT_EQ(error, path("empty") + ": no trainer_state.json and no checkpoint-<step> directories");
  LoadedCheckpoint loaded;
  EXPECT_FALSE(loadCheckpoint(path("empty"), loaded, error));
  EXPECT_EQ(error.rfind(path("empty") + "/trainer_state.json: cannot open", 0), 0u) << error;
  ASSERT_TRUE(writeCheckpoint(dir, sample(11), written, error)) << error;
  std::ofstream(dir + "/checkpoint-11/trainer_state.json") << "{\"format\": 1}";
  EXPECT_FALSE(loadCheckpoint(dir + "/checkpoint-11", loaded, error));
  EXPECT_EQ(error, dir + "/checkpoint-11/trainer_state.json: format: expected a string, got an "
                         "integer");
  fs::remove(dir + "/checkpoint-10/qtune_state.safetensors");
  EXPECT_FALSE(loadCheckpoint(dir + "/checkpoint-10", loaded, error));
  EXPECT_NE(error.find("qtune_state.safetensors"), std::string::npos) << error;
}

} // namespace

namespace {

/// The adapter of a tiny Llama (hidden 16, 2 layers, LoRA r 4 on q_proj and
/// v_proj), written where $QTUNE_PEFT_EXPORT_DIR says (else into the test's
/// temporary directory). tests/check_peft_adapter.py loads that directory
/// with peft.PeftModel.from_pretrained on a machine with PyTorch and PEFT.
TEST_F(CheckpointDirTest, PeftAdapterForATinyLlama) {
  const char *exportDir = std::getenv("QTUNE_PEFT_EXPORT_DIR");
  const std::string dir = exportDir ? exportDir : path("export");
  Checkpoint c;
  c.state = sampleState(false);
  c.state.step = 7;
  c.peft = peft(); // r 4, alpha 8, q_proj and v_proj
  int k = 0;
  for (int layer = 0; layer < 2; ++layer)
    for (const char *proj : {"q_proj", "v_proj"}) {
      const std::string base =
          "model.layers." + std::to_string(layer) + ".self_attn." + proj + ".lora_";
      std::vector<double> a(4 * 16), b(16 * 4);
      for (size_t i = 0; i < a.size(); ++i)
        a[i] = 0.01 * static_cast<double>((i * 7 + k) % 23) - 0.1;
      for (size_t i = 0; i < b.size(); ++i)
        b[i] = 0.015625 * static_cast<double>((i * 5 + k) % 17) - 0.125; // bf16-exact
      ++k;
      // Layer 0 in F32, layer 1's B in BF16: the adapter keeps the dtypes.
      c.tensors.push_back(tensor(base + "A.weight", st::DType::F32, a, {4, 16}));
      c.tensors.push_back(
          tensor(base + "B.weight", layer == 0 ? st::DType::F32 : st::DType::BF16, b, {16, 4}));
      c.adapterNames.push_back(base + "A.weight");
      c.adapterNames.push_back(base + "B.weight");
    }
  std::string written, error;
  ASSERT_TRUE(writeCheckpoint(dir, c, written, error)) << error;
  auto adapter = st::File::open(written + "/adapter_model.safetensors", error);
  ASSERT_NE(adapter, nullptr) << error;
  EXPECT_EQ(adapter->tensors().size(), 8u);
  for (const std::string &n : c.adapterNames)
    EXPECT_NE(adapter->find("base_model.model." + n), nullptr) << n;
  EXPECT_EQ(adapter->find("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")->dtype,
            st::DType::BF16);
}

} // namespace
