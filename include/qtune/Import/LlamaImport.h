//===- LlamaImport.h - LLaMA-family model directory to qtune IR -*- C++ -*-===//
//
// Builds the qtune graph of a LLaMA-family decoder for a training method and
// quantizes its linear layers with round-to-nearest through the format
// interface. The graph has one function `<name>` (input_ids, labels → mean
// cross-entropy loss) and, unless disabled, `<name>_logits` (input_ids →
// logits); both take the parameters as arguments named like the Hugging Face
// tensors they come from: a quantized layer `model.layers.0.self_attn.q_proj`
// has components `...q_proj.codes`, `...q_proj.scales`, ...; its LoRA adapter
// `...q_proj.lora_A.weight` and `...q_proj.lora_B.weight` (PEFT's names).
// See docs/import.md.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_IMPORT_LLAMAIMPORT_H
#define QTUNE_IMPORT_LLAMAIMPORT_H

#include "qtune/Dialect/QTune/IR/QTuneAttrs.h"
#include "qtune/Import/HFCheckpoint.h"
#include "qtune/Import/LlamaConfig.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <functional>
#include <set>

namespace qtune::import {

/// What trains: LoRA adapters, quantization scales (PEQA), 8-bit codes
/// (QFT), nothing, or every weight of a dense bf16 model (Full: training or
/// fine-tuning a base model).
enum class Method { None, Lora, Peqa, Qft, Full };

/// The seven linear layers of a decoder block, by their short names (q, k,
/// v, o, gate, up, down) and Hugging Face module paths.
struct LinearLayer {
  const char *shortName;
  const char *module; ///< "self_attn.q_proj", ...
};
llvm::ArrayRef<LinearLayer> linearLayers();
/// The weight shape (N, K) of linear layer `shortName` (q, k, ...) of a
/// decoder block of `config`.
std::pair<int64_t, int64_t> linearShape(const LlamaConfig &config,
                                        llvm::StringRef shortName);
/// A format option's text: "#qtune.uniform<bits = 4>" (the "#qtune." prefix
/// may be left out), or "none" (null: dense). False with `error` otherwise.
bool parseFormatOption(mlir::MLIRContext &ctx, llvm::StringRef text,
                       QuantFormatAttrInterface &out, std::string &error);

struct ImportOptions {
  Method method = Method::Lora;
  /// LoRA: rank, alpha, dropout; the layers it (and PEQA / QFT) applies to.
  int64_t loraRank = 16;
  double loraAlpha = 32;
  double loraDropout = 0;
  std::set<std::string> targets{"q", "k", "v", "o", "gate", "up", "down"};
  /// The format of every decoder linear layer; null keeps them dense (bf16).
  QuantFormatAttrInterface format;
  /// Per-layer overrides: the last pattern that is a substring of a layer's
  /// module path (e.g. "layers.0.mlp.down_proj", "mlp.") wins; a null format
  /// keeps that layer dense.
  std::vector<std::pair<std::string, QuantFormatAttrInterface>> layerFormats;
  /// The format of the linear layer at module path `path`.
  QuantFormatAttrInterface formatOf(const std::string &path) const;
  /// LREC (low-rank error correction): the loss function `<name>` becomes
  /// KL(teacher ‖ student) of the next-token distributions, the teacher being
  /// the same model on its full-precision weights (bf16, frozen, named like
  /// the Hugging Face weights) run in the same step; the labels input stays
  /// (unused) so token data trains it as any model.
  bool lrec = false;
  /// LREC: adds this weight × the cross entropy of the labels (0: none).
  double lrecCeWeight = 0;
  /// Components of the quantized layers (qtune-quantize's output) to use
  /// instead of round-to-nearest; empty: quantize here.
  std::string quantized;
  int64_t batch = 1, seqLen = 512;
  /// Seeds the LoRA A initialization (Kaiming-uniform, as PEFT; B is zero).
  uint64_t seed = 0;
  /// LoRA initialization: PEFT's (A random, B zero, the layer starts as the
  /// quantized weight), or LoftQ's (lowRankInit: the adapter starts as the
  /// rank-r SVD of the quantization residual, `loftqRounds` alternating
  /// rounds of quantization and SVD).
  enum class LoraInit { Peft, Loftq } loraInit = LoraInit::Peft;
  int64_t loftqRounds = 1;
  /// A PEFT LoRA adapter directory (BaseAdapter.h) whose adapters are added,
  /// frozen, to the layers they name (params "<module>.base_lora_A.weight"
  /// and "...base_lora_B.weight"), under the adapter that trains: a task LoRA
  /// stacked on LREC's correction. Empty: none.
  std::string baseAdapter;
  bool logitsEntry = true;
  std::string name = "model";
  /// The graph from the config alone: no tensor is read, quantized or made
  /// (ImportResult::params stays empty; the parameters' names, types and
  /// roles are the graph's arguments as ever). For benchmarks and memory
  /// plans of full-size models; not with --quantized, LoftQ or a base
  /// adapter, which need weights.
  bool shapesOnly = false;
};

struct ImportResult {
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::vector<st::OwnedTensor> params;
  /// Elements of the trainable tensors.
  int64_t numTrainable = 0;
  /// Per quantized layer: relative Frobenius error of its RTN weight.
  std::vector<std::pair<std::string, double>> quantError;
  /// Per LoftQ-initialized layer: relative error of dequant(Q) + s·B·A.
  std::vector<std::pair<std::string, double>> initError;
  /// Layers that took a frozen adapter from ImportOptions::baseAdapter.
  int64_t baseAdapterLayers = 0;
};

/// Imports; on failure returns nullopt with `error` naming the tensor,
/// option or field. `progress` (may be empty) hears "layer i/n" as layers
/// are quantized.
std::optional<ImportResult>
importLlama(mlir::MLIRContext &context, const LlamaConfig &config,
            HFCheckpoint &checkpoint, const ImportOptions &options,
            std::string &error,
            const std::function<void(int64_t, int64_t)> &progress = {});

} // namespace qtune::import

#endif // QTUNE_IMPORT_LLAMAIMPORT_H
