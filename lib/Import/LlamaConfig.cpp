//===- LlamaConfig.cpp - a LLaMA-family config.json ------------------------===//

#include "qtune/Import/LlamaConfig.h"

#include "llvm/Support/JSON.h"

namespace qtune::import {

namespace {
class Reader {
public:
  Reader(const llvm::json::Object &o, std::string &error) : o(o), error(error) {}

  /// A required positive integer field.
  bool positive(llvm::StringRef key, int64_t &out) {
    if (!o.get(key)) {
      error = "config.json: missing '" + key.str() + "'";
      return false;
    }
    return optionalPositive(key, out);
  }
  /// An optional positive integer field (null or absent keeps `out`).
  bool optionalPositive(llvm::StringRef key, int64_t &out) {
    const llvm::json::Value *v = o.get(key);
    if (!v || v->getAsNull())
      return true;
    std::optional<int64_t> i = v->getAsInteger();
    if (!i || *i <= 0) {
      error = "config.json: '" + key.str() + "' must be a positive integer";
      return false;
    }
    out = *i;
    return true;
  }
  bool optionalNumber(llvm::StringRef key, double &out) {
    const llvm::json::Value *v = o.get(key);
    if (!v || v->getAsNull())
      return true;
    std::optional<double> d = v->getAsNumber();
    if (!d || !(*d > 0)) {
      error = "config.json: '" + key.str() + "' must be a positive number";
      return false;
    }
    out = *d;
    return true;
  }
  /// A boolean field that qtune supports only with value `supported`.
  bool flag(llvm::StringRef key, bool supported, llvm::StringRef why) {
    const llvm::json::Value *v = o.get(key);
    if (!v || v->getAsNull())
      return true;
    std::optional<bool> b = v->getAsBoolean();
    if (!b) {
      error = "config.json: '" + key.str() + "' must be true or false";
      return false;
    }
    if (*b != supported) {
      error = "config.json: " + key.str() + " = " + (*b ? "true" : "false") +
              " is not supported (" + why.str() + ")";
      return false;
    }
    return true;
  }

private:
  const llvm::json::Object &o;
  std::string &error;
};
} // namespace

std::optional<LlamaConfig> parseLlamaConfig(llvm::StringRef text,
                                            std::string &error) {
  llvm::Expected<llvm::json::Value> parsed = llvm::json::parse(text);
  if (!parsed) {
    error = "config.json is not valid JSON: " + llvm::toString(parsed.takeError());
    return std::nullopt;
  }
  const llvm::json::Object *o = parsed->getAsObject();
  if (!o) {
    error = "config.json must hold a JSON object";
    return std::nullopt;
  }
  LlamaConfig c;
  Reader r(*o, error);
  if (auto type = o->getString("model_type"))
    c.modelType = type->str();
  if (c.modelType != "llama" && c.modelType != "mistral") {
    error = "config.json: model_type '" + c.modelType +
            "' is not supported (supported: llama, mistral)";
    return std::nullopt;
  }
  if (!r.positive("hidden_size", c.hiddenSize) ||
      !r.positive("intermediate_size", c.intermediateSize) ||
      !r.positive("num_hidden_layers", c.numLayers) ||
      !r.positive("num_attention_heads", c.numHeads) ||
      !r.positive("vocab_size", c.vocabSize))
    return std::nullopt;
  c.numKvHeads = c.numHeads;
  if (!r.optionalPositive("num_key_value_heads", c.numKvHeads))
    return std::nullopt;
  if (c.hiddenSize % c.numHeads != 0 && !o->get("head_dim")) {
    error = "config.json: hidden_size (" + std::to_string(c.hiddenSize) +
            ") is not a multiple of num_attention_heads (" +
            std::to_string(c.numHeads) + ") and there is no head_dim";
    return std::nullopt;
  }
  c.headDim = c.hiddenSize / c.numHeads;
  if (!r.optionalPositive("head_dim", c.headDim))
    return std::nullopt;
  if (c.numHeads % c.numKvHeads != 0) {
    error = "config.json: num_attention_heads (" + std::to_string(c.numHeads) +
            ") must be a multiple of num_key_value_heads (" +
            std::to_string(c.numKvHeads) + ")";
    return std::nullopt;
  }
  if (c.headDim % 2 != 0) {
    error = "config.json: the head dimension (" + std::to_string(c.headDim) +
            ") must be even for rotary embeddings";
    return std::nullopt;
  }
  if (!r.optionalNumber("rms_norm_eps", c.rmsNormEps) ||
      !r.optionalNumber("rope_theta", c.ropeTheta))
    return std::nullopt;
  if (!r.flag("attention_bias", false, "the LLaMA family has no attention biases") ||
      !r.flag("mlp_bias", false, "the LLaMA family has no MLP biases"))
    return std::nullopt;
  if (const llvm::json::Value *t = o->get("tie_word_embeddings"))
    c.tieWordEmbeddings = t->getAsBoolean().value_or(false);
  if (auto act = o->getString("hidden_act"); act && *act != "silu") {
    error = "config.json: hidden_act '" + act->str() +
            "' is not supported (SwiGLU needs 'silu')";
    return std::nullopt;
  }
  if (const llvm::json::Value *rs = o->get("rope_scaling"); rs && !rs->getAsNull()) {
    const llvm::json::Object *ro = rs->getAsObject();
    std::optional<llvm::StringRef> kind =
        ro ? (ro->getString("rope_type") ? ro->getString("rope_type")
                                         : ro->getString("type"))
           : std::nullopt;
    if (!kind || *kind != "default") {
      error = "config.json: rope_scaling of type '" +
              (kind ? kind->str() : std::string("?")) +
              "' is not supported (supported: none, 'default')";
      return std::nullopt;
    }
  }
  if (const llvm::json::Value *sw = o->get("sliding_window"); sw && !sw->getAsNull()) {
    std::optional<int64_t> w = sw->getAsInteger();
    if (!w || *w <= 0) {
      error = "config.json: 'sliding_window' must be a positive integer or null";
      return std::nullopt;
    }
    c.slidingWindow = *w;
  }
  if (auto n = o->getString("_name_or_path"))
    c.nameOrPath = n->str();
  return c;
}

bool checkSequenceLength(const LlamaConfig &config, int64_t seqLen,
                         std::string &error) {
  if (config.slidingWindow && *config.slidingWindow < seqLen) {
    error = "config.json: sliding_window = " +
            std::to_string(*config.slidingWindow) +
            " is shorter than the sequence length " + std::to_string(seqLen) +
            "; sliding-window attention is not supported (compile with "
            "--seq-len <= " + std::to_string(*config.slidingWindow) + ")";
    return false;
  }
  return true;
}

} // namespace qtune::import
