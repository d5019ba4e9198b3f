//===- LlamaConfig.h - a LLaMA-family config.json ---------------*- C++ -*-===//
//
// The architecture fields qtune reads from a Hugging Face `config.json` of a
// LLaMA-family decoder (LLaMA 1/2/3, Mistral and others with RMSNorm, RoPE,
// grouped-query attention and SwiGLU), and the checks that refuse what qtune
// does not implement, naming the field.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_IMPORT_LLAMACONFIG_H
#define QTUNE_IMPORT_LLAMACONFIG_H

#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <optional>
#include <string>

namespace qtune::import {

struct LlamaConfig {
  std::string modelType; ///< "llama", "mistral", ...
  int64_t hiddenSize = 0, intermediateSize = 0, numLayers = 0;
  int64_t numHeads = 0, numKvHeads = 0, headDim = 0, vocabSize = 0;
  double rmsNormEps = 1e-6, ropeTheta = 10000.0;
  bool tieWordEmbeddings = false;
  /// Mistral's sliding window, if any (accepted only when it covers the
  /// compiled sequence length: then it changes nothing).
  std::optional<int64_t> slidingWindow;
  /// config["_name_or_path"] when present, else the directory.
  std::string nameOrPath;
};

/// Parses and checks `text` (the contents of config.json). On failure returns
/// nullopt and sets `error` naming the field, e.g. "config.json: rope_scaling
/// of type 'yarn' is not supported (supported: none, 'default')".
std::optional<LlamaConfig> parseLlamaConfig(llvm::StringRef text,
                                            std::string &error);

/// Checks what depends on the compiled sequence length (the sliding window).
bool checkSequenceLength(const LlamaConfig &config, int64_t seqLen,
                         std::string &error);

} // namespace qtune::import

#endif // QTUNE_IMPORT_LLAMACONFIG_H
