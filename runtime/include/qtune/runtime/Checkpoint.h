//===- Checkpoint.h - training checkpoints and resuming ---------*- C++ -*-===//
//
// A checkpoint is a directory DIR/checkpoint-<step>/ holding
//
//   qtune_state.safetensors    every trainable param and optimizer state of
//                              the train step, bit for bit in its own dtype
//   trainer_state.json         the step, the learning-rate schedule, the data
//                              loader's state, the entry and the bundle's size
//                              and hash (a resume against another bundle is
//                              refused)
//   adapter_model.safetensors  when the bundle has LoRA params and a "peft"
//   adapter_config.json        header: the adapter as PEFT saves it, keys
//                              "base_model.model.<param name>", so that
//                              peft.PeftModel.from_pretrained loads it
//
// It is written atomically: into a temporary sibling directory, each file
// fsync'ed, the directory fsync'ed and renamed into place (an existing
// checkpoint of the same step is swapped out, then removed). A crash leaves
// the earlier checkpoints as they were, and at worst a ".checkpoint-*.tmp.*"
// directory, which nothing reads.
//
// Nothing here throws or needs a GPU.
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_CHECKPOINT_H
#define QTUNE_RUNTIME_CHECKPOINT_H

#include "qtune/runtime/Bundle.h"
#include "qtune/runtime/Safetensors.h"
#include "qtune/runtime/TokenData.h"
#include "qtune/runtime/Trainer.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qtune::rt {

constexpr std::string_view kCheckpointPrefix = "checkpoint-";
constexpr std::string_view kStateFile = "qtune_state.safetensors";
constexpr std::string_view kTrainerStateFile = "trainer_state.json";
constexpr std::string_view kAdapterFile = "adapter_model.safetensors";
constexpr std::string_view kAdapterConfigFile = "adapter_config.json";
/// PEFT's key of a param of the base model: this prefix + the param's name.
constexpr std::string_view kPeftKeyPrefix = "base_model.model.";
constexpr int kTrainerStateVersion = 1;

// ---- trainer state ----------------------------------------------------------------------

/// A bundle file's identity: its size and the FNV-1a 64 hash of its bytes.
struct BundleFingerprint {
  uint64_t bytes = 0;
  uint64_t fnv1a64 = 0;
  bool operator==(const BundleFingerprint &o) const {
    return bytes == o.bytes && fnv1a64 == o.fnv1a64;
  }
};
BundleFingerprint fingerprintBytes(std::string_view bytes);

/// The data a run draws its batches from, and where it is.
struct DataState {
  std::string path; ///< as given on the command line (for messages)
  TokenFormat format = TokenFormat::U16;
  uint64_t tokens = 0; ///< tokens in the file: a resume must see the same number
  int64_t batch = 0;   ///< B
  int64_t seqLen = 0;  ///< S
  LoaderState loader;
};

struct TrainerState {
  int64_t step = 0;    ///< steps counted (the next run starts at step + 1)
  int64_t skipped = 0; ///< steps skipped so far, over every resumed run
  std::string entry;   ///< the train-step entry
  std::string bundlePath;
  BundleFingerprint bundle;
  LrSchedule schedule;
  std::optional<DataState> data; ///< absent when the batch came from --inputs
};

/// trainer_state.json (pretty-printed, ends in a newline):
///   {"format": "qtune-trainer-state", "version": 1, "step": 50, "skipped": 0,
///    "entry": "m_train_step",
///    "bundle": {"path": "m.qtb", "bytes": 123, "fnv1a64": "0123456789abcdef"},
///    "schedule": {"kind": "cosine", "lr": 0.001, "min_lr": 0.0, "warmup": 10,
///                 "steps": 200},
///    "data": {"path": "d.u16", "format": "u16", "tokens": 100000, "batch": 8,
///             "seq_len": 128, "seed": 0, "shuffle": true, "epoch": 0,
///             "position": 400}}
/// with "data": null for --inputs runs. Learning rates round-trip exactly.
std::string trainerStateJson(const TrainerState &state);
/// Parses and checks trainer_state.json; messages name the field
/// ("schedule.lr: expected a number, got a string").
bool parseTrainerState(std::string_view text, TrainerState &state, std::string &error);

// ---- the PEFT adapter ---------------------------------------------------------------------

/// Whether `name` is a LoRA param: it ends in ".lora_A.weight" or ".lora_B.weight".
bool isLoraParam(std::string_view name);

/// The LoRA params among `params` (in their order), checked against `peft`:
/// every "<m>.lora_A.weight" is 2-D [r, in] with r = peft.r and has a
/// "<m>.lora_B.weight" [out, r] (and the other way round), both float, and
/// <m> is one of peft.target_modules or ends in "." + one of them (PEFT's
/// rule). Errors name the param.
bool planAdapter(const BundleSpec &spec, const std::vector<int> &params, const PeftConfig &peft,
                 std::vector<int> &lora, std::string &error);

/// adapter_config.json: peft_type "LORA", task_type "CAUSAL_LM", r,
/// lora_alpha, lora_dropout, target_modules, bias "none", fan_in_fan_out
/// false, base_model_name_or_path (null when unknown), inference_mode true.
std::string adapterConfigJson(const PeftConfig &peft);

// ---- checkpoint directories ------------------------------------------------------------------

/// "checkpoint-<step>".
std::string checkpointName(int64_t step);

/// What writeCheckpoint writes.
struct Checkpoint {
  TrainerState state;
  /// Trainable params and optimizer states, in their own dtypes.
  std::vector<st::OwnedTensor> tensors;
  /// With a non-empty adapterNames, the adapter files are written too.
  std::optional<PeftConfig> peft;
  /// Names (among `tensors`) of the LoRA params that form the adapter.
  std::vector<std::string> adapterNames;
};

/// Writes DIR/checkpoint-<state.step>/ atomically (DIR is created when
/// missing); `written` receives its path. On failure nothing of the earlier
/// checkpoints changes and the temporary directory is removed.
bool writeCheckpoint(const std::string &dir, const Checkpoint &checkpoint, std::string &written,
                     std::string &error);

struct CheckpointDir {
  int64_t step = 0;
  std::string path;
};

/// The checkpoint-<step> directories of `dir`, by increasing step.
bool listCheckpoints(const std::string &dir, std::vector<CheckpointDir> &out,
                     std::string &error);

/// Keeps `keep` checkpoints of `dir` (keep >= 1; 0 keeps all): `protect` (the
/// one just written; may be empty) and the others with the highest steps, and
/// removes the rest. Protecting matters when a run resumed from an earlier
/// checkpoint into a directory that still holds later ones. Each is renamed
/// away before it is deleted, so a crash never leaves a partial
/// checkpoint-<step>. `removed` receives their paths.
bool pruneCheckpoints(const std::string &dir, int64_t keep, const std::string &protect,
                      std::vector<std::string> &removed, std::string &error);

/// `path` itself when it holds trainer_state.json, otherwise its checkpoint
/// with the highest step.
bool resolveCheckpoint(const std::string &path, std::string &checkpoint, std::string &error);

struct LoadedCheckpoint {
  std::string dir;
  TrainerState state;
  std::unique_ptr<st::File> tensors; ///< qtune_state.safetensors
};

/// Reads trainer_state.json and opens qtune_state.safetensors of checkpoint
/// directory `dir`.
bool loadCheckpoint(const std::string &dir, LoadedCheckpoint &checkpoint, std::string &error);

} // namespace qtune::rt

#endif // QTUNE_RUNTIME_CHECKPOINT_H
