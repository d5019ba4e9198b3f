//===- ModelExport.h - fine-tuned models out of qtune ------------*- C++ -*-===//
//
// Reads a graph (as qtune-import writes it: arguments named like the Hugging
// Face tensors) and its parameters, and writes the fine-tuned model:
//
//  - as Hugging Face safetensors in bf16: every quantized linear layer
//    dequantized, with its LoRA adapter merged (W + (alpha/r)·B·A), every
//    other parameter copied; loadable by transformers with the model's
//    config.json;
//  - as a qtune quantized model: the graph without its adapters and the
//    parameters with each adapter merged into its layer's codes by
//    requantization (reporting the error it introduces), or exactly into the
//    zero points where the adapter's term is constant within every
//    quantization group of an asymmetric uniform format. PEQA's scales are
//    parameters of the quantized model already, so they carry over exactly.
//
// See docs/export.md.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_EXPORT_MODELEXPORT_H
#define QTUNE_EXPORT_MODELEXPORT_H

#include "qtune/Dialect/QTune/IR/QTuneAttrs.h"
#include "qtune/Support/HostTensor.h"

#include "mlir/IR/BuiltinOps.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace qtune::exporter {

/// One linear layer of the graph.
struct LinearLayer {
  /// The Hugging Face weight name: "<module>.weight" for a quantized layer
  /// whose codes are "<module>.codes", else the dense weight's argument name.
  std::string weightName;
  int64_t n = 0, k = 0;
  /// Null for a dense weight.
  QuantFormatAttrInterface format;
  /// Argument names of the format's components (or of the dense weight).
  std::vector<std::string> components;
  /// The adapters added to the layer's output (a chain of arith.addf of
  /// qtune.lora terms on the layer's input: a frozen base adapter and the
  /// trained one, say): argument names of A (r × k) and B (n × r), and
  /// alpha / r.
  struct Adapter {
    std::string a, b;
    double scale = 0;
  };
  std::vector<Adapter> adapters;
};

/// A model's parameters and its linear layers, from function `entry`.
struct ModelLayout {
  /// Every argument that is not an input, in order: name and type.
  std::vector<std::pair<std::string, mlir::RankedTensorType>> params;
  std::vector<LinearLayer> linears;
};

/// Reads the layout; nullopt with `error` naming the function or argument
/// when `entry` is missing or an argument lacks its name.
std::optional<ModelLayout> readLayout(mlir::ModuleOp module,
                                      llvm::StringRef entry, std::string &error);

/// Reads every parameter of `layout`, each from the last of `files` that
/// holds it; false with `error` naming the tensor (missing everywhere, wrong
/// shape or dtype, non-finite) or the file.
bool readParams(const ModelLayout &layout, llvm::ArrayRef<std::string> files,
                std::map<std::string, HostTensor> &params, std::string &error);

/// A layer's merged weight: dequant(W) (+ alpha/r · B·A), row-major n × k.
std::vector<double> mergedWeight(const LinearLayer &layer,
                                 const std::map<std::string, HostTensor> &params);

/// Hugging Face tensors (name → bf16 values): merged linear weights and the
/// other parameters, adapters left out.
std::vector<std::pair<std::string, HostTensor>>
hfTensors(const ModelLayout &layout,
          const std::map<std::string, HostTensor> &params);

/// How an adapter was merged into its quantized layer.
struct MergeReport {
  std::string layer;
  bool exact = false;
  /// ‖dequant(Q') − (dequant(Q) + s·B·A)‖ / ‖dequant(Q) + s·B·A‖.
  double error = 0;
};

/// Merges every adapter of a quantized layer into its components (in
/// `params`, replaced); adapters on dense layers merge into the weight.
std::vector<MergeReport> mergeAdapters(const ModelLayout &layout,
                                       std::map<std::string, HostTensor> &params);

/// Removes every qtune.lora op of every function (its term is merged) and the
/// adapter arguments, and marks every remaining parameter frozen.
void stripAdapters(mlir::ModuleOp module);

} // namespace qtune::exporter

#endif // QTUNE_EXPORT_MODELEXPORT_H
