//===- LlamaImport.cpp - LLaMA-family model directory to qtune IR ----------===//

#include "qtune/Import/LlamaImport.h"
#include "qtune/Import/BaseAdapter.h"
#include "qtune/Import/LowRankInit.h"

#include "qtune/Dialect/QTune/IR/QTuneOps.h"
#include "qtune/Reference/TensorFiles.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"
#include "mlir/AsmParser/AsmParser.h"
#include "llvm/ADT/StringSwitch.h"

#include <cmath>
#include <map>
#include <random>

using namespace mlir;

namespace qtune::import {

llvm::ArrayRef<LinearLayer> linearLayers() {
  static const LinearLayer kLayers[] = {
      {"q", "self_attn.q_proj"},   {"k", "self_attn.k_proj"},
      {"v", "self_attn.v_proj"},   {"o", "self_attn.o_proj"},
      {"gate", "mlp.gate_proj"},   {"up", "mlp.up_proj"},
      {"down", "mlp.down_proj"}};
  return kLayers;
}

std::pair<int64_t, int64_t> linearShape(const LlamaConfig &c,
                                        llvm::StringRef shortName) {
  int64_t D = c.hiddenSize, F = c.intermediateSize;
  int64_t qOut = c.numHeads * c.headDim, kvOut = c.numKvHeads * c.headDim;
  return llvm::StringSwitch<std::pair<int64_t, int64_t>>(shortName)
      .Case("q", {qOut, D})
      .Cases("k", "v", {kvOut, D})
      .Case("o", {D, qOut})
      .Cases("gate", "up", {F, D})
      .Case("down", {D, F})
      .Default({0, 0});
}

QuantFormatAttrInterface ImportOptions::formatOf(const std::string &path) const {
  QuantFormatAttrInterface f = format;
  for (const auto &[pattern, layerFormat] : layerFormats)
    if (path.find(pattern) != std::string::npos)
      f = layerFormat;
  return f;
}

bool parseFormatOption(MLIRContext &ctx, llvm::StringRef text,
                       QuantFormatAttrInterface &out, std::string &error) {
  llvm::StringRef t = text.trim();
  if (t == "none") {
    out = nullptr;
    return true;
  }
  std::string full = t.starts_with("#") ? t.str() : "#qtune." + t.str();
  std::string diag;
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &d) {
    diag = d.str();
    return success();
  });
  Attribute attr = parseAttribute(full, &ctx);
  out = llvm::dyn_cast_or_null<QuantFormatAttrInterface>(attr);
  if (!out) {
    error = "'" + text.str() + "' is not a qtune quantizer format" +
            (diag.empty() ? "" : " (" + diag + ")");
    return false;
  }
  return true;
}

namespace {

/// A function argument holding a parameter.
struct Param {
  std::string name;
  RankedTensorType type;
  Role role; ///< in the loss function (the logits function freezes all)
};

/// How one linear layer is built.
struct LayerPlan {
  std::string path; ///< "model.layers.0.self_attn.q_proj"
  int64_t n, k;
  QuantFormatAttrInterface format; ///< null: dense bf16 weight
  bool lora = false, scaleOnly = false;
  bool baseLora = false; ///< a frozen adapter from --base-adapter
};

class Importer {
public:
  Importer(MLIRContext &ctx, const LlamaConfig &c, HFCheckpoint &ckpt,
           const ImportOptions &o, std::string &error)
      : ctx(ctx), c(c), ckpt(ckpt), o(o), error(error), b(&ctx),
        bf16(b.getBF16Type()) {}

  std::optional<ImportResult>
  run(const std::function<void(int64_t, int64_t)> &progress);

private:
  bool checkOptions();
  bool dense(const std::string &name, std::vector<int64_t> shape, Role role);
  bool linear(const std::string &path, int64_t n, int64_t k, bool targeted);
  /// Layer `path`'s components from the --quantized file, which must hold it
  /// in `format`.
  bool readQuantized(const std::string &path, QuantFormatAttrInterface format,
                     int64_t n, int64_t k, SmallVector<HostTensor> &comps);
  bool addTensor(const std::string &name, Type elementType, HostTensor value,
                 Role role);
  /// Reads, quantizes (or takes from --quantized, or fits LoftQ's adapter
  /// to) and adds the components of a quantized layer.
  bool quantize(const LayerPlan &plan, ArrayRef<ComponentSpec> specs,
                function_ref<Role(size_t, const ComponentSpec &)> roleOf,
                std::optional<std::pair<HostTensor, HostTensor>> &adapter);
  /// A parameter of the graph (its value, if any, added by addTensor).
  void addParam(const std::string &name, RankedTensorType type, Role role);
  QuantFormatAttrInterface formatOf(const std::string &path) const;
  func::FuncOp buildFunction(ModuleOp module, bool withLoss);

  MLIRContext &ctx;
  const LlamaConfig &c;
  HFCheckpoint &ckpt;
  const ImportOptions &o;
  std::string &error;
  OpBuilder b;
  Type bf16;
  std::vector<Param> params;
  std::map<std::string, LayerPlan> layers;
  ImportResult result;
  std::unique_ptr<st::File> quantizedFile;
  std::unique_ptr<BaseAdapter> baseAdapter;
};

QuantFormatAttrInterface Importer::formatOf(const std::string &path) const {
  return o.formatOf(path);
}

bool Importer::checkOptions() {
  if (o.batch <= 0 || o.seqLen <= 0) {
    error = "--batch and --seq-len must be positive";
    return false;
  }
  if (!checkSequenceLength(c, o.seqLen, error))
    return false;
  if (o.method == Method::Lora) {
    if (o.loraRank <= 0) {
      error = "--lora-r must be positive (got " + std::to_string(o.loraRank) + ")";
      return false;
    }
    if (o.loraDropout != 0) {
      error = "--lora-dropout: LoRA dropout is not implemented yet; use 0";
      return false;
    }
  }
  if (o.method != Method::None && o.targets.empty()) {
    error = "--targets names no layer";
    return false;
  }
  if (o.method == Method::Full &&
      (o.format || llvm::any_of(o.layerFormats,
                                [](const auto &f) { return bool(f.second); }))) {
    error = "--method full trains every weight in bf16; give --format none";
    return false;
  }
  if (o.lrecCeWeight != 0 && !o.lrec) {
    error = "--lrec-ce-weight needs --lrec";
    return false;
  }
  if (o.lrecCeWeight < 0) {
    error = "--lrec-ce-weight must not be negative";
    return false;
  }
  if (o.lrec && o.method != Method::Lora) {
    error = "--lrec trains LoRA adapters against the full-precision teacher; "
            "it needs --method lora";
    return false;
  }
  if (o.shapesOnly &&
      (!o.quantized.empty() || !o.baseAdapter.empty() ||
       (o.method == Method::Lora && o.loraInit == ImportOptions::LoraInit::Loftq))) {
    error = "--shapes-only reads no weights; it cannot take --quantized, "
            "--base-adapter or --lora-init loftq";
    return false;
  }
  if (!o.quantized.empty() && o.method == Method::Lora &&
      o.loraInit == ImportOptions::LoraInit::Loftq) {
    error = "--lora-init loftq quantizes the layers itself; it cannot take "
            "--quantized";
    return false;
  }
  return true;
}

void Importer::addParam(const std::string &name, RankedTensorType type,
                        Role role) {
  params.push_back({name, type, role});
  if (role == Role::trainable)
    result.numTrainable += type.getNumElements();
}

bool Importer::addTensor(const std::string &name, Type elementType,
                         HostTensor value, Role role) {
  st::OwnedTensor owned;
  ref::NamedTensor named{name, elementType, std::move(value)};
  if (failed(ref::toOwnedTensor(named, /*floatsAsF32=*/false, owned, error)))
    return false;
  addParam(name, RankedTensorType::get(named.value.shape, elementType), role);
  result.params.push_back(std::move(owned));
  return true;
}

bool Importer::dense(const std::string &name, std::vector<int64_t> shape,
                     Role role) {
  if (o.method == Method::Full)
    role = Role::trainable;
  if (o.shapesOnly) {
    addParam(name, RankedTensorType::get(shape, bf16), role);
    return true;
  }
  std::vector<double> values;
  if (!ckpt.read(name, shape, values, error))
    return false;
  return addTensor(name, bf16, HostTensor(std::move(shape), std::move(values)),
                   role);
}

bool Importer::linear(const std::string &path, int64_t n, int64_t k,
                      bool targeted) {
  LayerPlan plan{path, n, k, formatOf(path)};
  plan.lora = targeted && o.method == Method::Lora;
  // LoftQ's adapter (A, B), set where the weight is quantized.
  std::optional<std::pair<HostTensor, HostTensor>> adapter;
  plan.scaleOnly = targeted && o.method == Method::Peqa;
  bool qft = targeted && o.method == Method::Qft;
  std::string weightName = path + ".weight";
  if (!plan.format) {
    if (plan.scaleOnly || qft) {
      error = path + ": " + (qft ? "QFT" : "PEQA") +
              " trains a quantized weight, but this layer's format keeps it "
              "dense; give it a format";
      return false;
    }
    if (plan.lora && o.loraInit == ImportOptions::LoraInit::Loftq) {
      error = path + ": --lora-init loftq fits the adapter to the quantization "
                     "residual, but this layer's format keeps it dense; give "
                     "it a format";
      return false;
    }
    if (!dense(weightName, {n, k}, Role::frozen))
      return false;
  } else {
    auto fail = [&](llvm::StringRef why) {
      std::string f;
      llvm::raw_string_ostream os(f);
      os << plan.format;
      error = path + ": format " + f + " " + why.str();
      return false;
    };
    if (qft && !isQftFormat(plan.format))
      return fail("cannot train with QFT (QFT needs an 8-bit #qtune.uniform "
                  "format, e.g. --format '#qtune.uniform<bits = 8>')");
    std::string diag;
    if (failed(plan.format.verifyShape(n, k, [&]() {
          return emitError(UnknownLoc::get(&ctx));
        })))
      return fail("does not fit its " + std::to_string(n) + "x" +
                  std::to_string(k) + " weight");
    // LREC's teacher runs on the full-precision weight, kept in bf16.
    if (o.lrec && !dense(weightName, {n, k}, Role::frozen))
      return false;
    SmallVector<ComponentSpec> specs = plan.format.getComponents(n, k);
    auto roleOf = [&](size_t i, const ComponentSpec &spec) {
      if (plan.scaleOnly && spec.kind == ComponentKind::Scale)
        return Role::trainable;
      return qft && i == 0 ? Role::trainable : Role::frozen;
    };
    if (plan.scaleOnly &&
        llvm::none_of(specs, [](const ComponentSpec &spec) {
          return spec.kind == ComponentKind::Scale;
        }))
      return fail("has no scale component for PEQA to train");
    if (o.shapesOnly) {
      for (auto [i, spec] : llvm::enumerate(specs))
        addParam(path + "." + spec.name,
                 RankedTensorType::get(spec.shape, spec.elementType),
                 roleOf(i, spec));
    } else if (!quantize(plan, specs, roleOf, adapter)) {
      return false;
    }
  }
  if (baseAdapter && baseAdapter->has(path)) {
    std::vector<double> a, bv;
    if (!baseAdapter->read(path, n, k, a, bv, error))
      return false;
    int64_t r = baseAdapter->rank();
    if (!addTensor(path + ".base_lora_A.weight", bf16, HostTensor({r, k}, std::move(a)),
                   Role::frozen) ||
        !addTensor(path + ".base_lora_B.weight", bf16, HostTensor({n, r}, std::move(bv)),
                   Role::frozen))
      return false;
    plan.baseLora = true;
    ++result.baseAdapterLayers;
  }
  if (plan.lora && o.shapesOnly) {
    addParam(path + ".lora_A.weight",
             RankedTensorType::get({o.loraRank, k}, bf16), Role::trainable);
    addParam(path + ".lora_B.weight",
             RankedTensorType::get({n, o.loraRank}, bf16), Role::trainable);
  } else if (plan.lora) {
    if (!adapter) {
      // PEFT's initialization: A Kaiming-uniform (bound 1/sqrt(in)), B zero.
      std::mt19937_64 rng(o.seed ^ std::hash<std::string>()(path));
      double bound = 1.0 / std::sqrt(double(k));
      HostTensor a({o.loraRank, k}), bz({n, o.loraRank});
      for (double &v : a.data)
        v = std::uniform_real_distribution<double>(-bound, bound)(rng);
      adapter = {std::move(a), std::move(bz)};
    }
    if (!addTensor(path + ".lora_A.weight", bf16, std::move(adapter->first),
                   Role::trainable) ||
        !addTensor(path + ".lora_B.weight", bf16, std::move(adapter->second),
                   Role::trainable))
      return false;
  }
  layers[path] = plan;
  return true;
}

bool Importer::quantize(
    const LayerPlan &plan, ArrayRef<ComponentSpec> specs,
    function_ref<Role(size_t, const ComponentSpec &)> roleOf,
    std::optional<std::pair<HostTensor, HostTensor>> &adapter) {
  const std::string &path = plan.path;
  int64_t n = plan.n, k = plan.k;
  std::vector<double> w;
  if (!ckpt.read(path + ".weight", {n, k}, w, error))
    return false;
  SmallVector<HostTensor> comps;
  if (!o.quantized.empty() ||
      !(plan.lora && o.loraInit == ImportOptions::LoraInit::Loftq)) {
    if (o.quantized.empty())
      comps = plan.format.quantize(n, k, w, {});
    else if (!readQuantized(path, plan.format, n, k, comps))
      return false;
    std::vector<double> back(n * k);
    plan.format.dequantize(n, k, comps, back);
    result.quantError.push_back({path, relativeError(w, back)});
  } else {
    LowRankInit init =
        lowRankInit(plan.format, n, k, w, o.loraRank, o.loraAlpha / o.loraRank,
                    o.loftqRounds, o.seed ^ std::hash<std::string>()(path));
    comps = std::move(init.components);
    result.quantError.push_back({path, init.rtnError});
    result.initError.push_back({path, init.error});
    adapter = {HostTensor({o.loraRank, k}, std::move(init.a)),
               HostTensor({n, o.loraRank}, std::move(init.b))};
  }
  for (auto [i, spec] : llvm::enumerate(specs))
    if (!addTensor(path + "." + spec.name, spec.elementType,
                   std::move(comps[i]), roleOf(i, spec)))
      return false;
  return true;
}

bool Importer::readQuantized(const std::string &path,
                             QuantFormatAttrInterface format, int64_t n,
                             int64_t k, SmallVector<HostTensor> &comps) {
  if (!quantizedFile) {
    quantizedFile = st::File::open(o.quantized, error);
    if (!quantizedFile)
      return false;
  }
  std::string want;
  llvm::raw_string_ostream(want) << format;
  const auto &meta = quantizedFile->metadata();
  auto held = meta.find("qtune.format." + path);
  if (held == meta.end()) {
    error = o.quantized + ": has no layer '" + path +
            "' (qtune-quantize writes every quantized layer)";
    return false;
  }
  if (held->second != want) {
    error = path + ": " + o.quantized + " holds it as " + held->second +
            ", but this import quantizes it as " + want;
    return false;
  }
  std::vector<std::pair<std::string, RankedTensorType>> wanted;
  for (const ComponentSpec &spec : format.getComponents(n, k))
    wanted.push_back({path + "." + spec.name,
                      RankedTensorType::get(spec.shape, spec.elementType)});
  std::vector<HostTensor> values;
  if (failed(ref::readTensors(o.quantized, wanted, values, error)))
    return false;
  comps.assign(values.begin(), values.end());
  return true;
}

func::FuncOp Importer::buildFunction(ModuleOp module, bool withLoss) {
  Location loc = UnknownLoc::get(&ctx);
  int64_t B = o.batch, S = o.seqLen, D = c.hiddenSize;
  auto ids = RankedTensorType::get({B, S}, b.getI32Type());
  auto act = [&](int64_t width) {
    return RankedTensorType::get({B, S, width}, bf16);
  };
  std::string name = withLoss ? o.name : o.name + "_logits";
  b.setInsertionPointToEnd(module.getBody());
  auto func = func::FuncOp::create(b, loc, name, b.getFunctionType({}, {}));
  Block *body = func.addEntryBlock();
  SmallVector<Type> argTypes;
  SmallVector<DictionaryAttr> argAttrs;
  auto addArg = [&](Type type, llvm::StringRef argName, Role role) {
    argTypes.push_back(type);
    argAttrs.push_back(b.getDictionaryAttr(
        {b.getNamedAttr(QTuneDialect::kNameAttrName, b.getStringAttr(argName)),
         b.getNamedAttr(QTuneDialect::kRoleAttrName, RoleAttr::get(&ctx, role))}));
    return body->addArgument(type, loc);
  };
  Value inputIds = addArg(ids, "input_ids", Role::input);
  Value labels = withLoss ? addArg(ids, "labels", Role::input) : Value();
  std::map<std::string, Value> arg;
  for (const Param &p : params)
    arg[p.name] = addArg(p.type, p.name, withLoss ? p.role : Role::frozen);

  b.setInsertionPointToStart(body);
  auto eps = b.getF64FloatAttr(c.rmsNormEps);
  auto norm = [&](Value x, const std::string &weight) -> Value {
    return RmsNormOp::create(b, loc, x.getType(), x, arg[weight], eps);
  };
  // The student (the quantized layers with their adapters) or, for LREC, the
  // teacher (every linear layer on its full-precision weight, no adapter).
  bool teacher = false;
  auto proj = [&](Value x, const std::string &path) -> Value {
    const LayerPlan &plan = layers.at(path);
    if (teacher)
      return LinearOp::create(b, loc, act(plan.n), x, arg[path + ".weight"],
                              Value());
    Value w;
    if (plan.format) {
      SmallVector<Value> comps;
      for (const ComponentSpec &spec : plan.format.getComponents(plan.n, plan.k))
        comps.push_back(arg[path + "." + spec.name]);
      w = QWeightOp::create(b, loc,
                            QWeightType::get(&ctx, plan.n, plan.k, plan.format),
                            comps, plan.scaleOnly);
    } else {
      w = arg[path + ".weight"];
    }
    Value y = LinearOp::create(b, loc, act(plan.n), x, w, Value());
    if (plan.baseLora)
      y = arith::AddFOp::create(
          b, loc, y,
          LoraOp::create(b, loc, act(plan.n), x, arg[path + ".base_lora_A.weight"],
                         arg[path + ".base_lora_B.weight"],
                         b.getF64FloatAttr(baseAdapter->alpha()),
                         b.getI64IntegerAttr(baseAdapter->rank()),
                         b.getF64FloatAttr(0.0)));
    if (!plan.lora)
      return y;
    Value d = LoraOp::create(b, loc, act(plan.n), x,
                             arg[path + ".lora_A.weight"],
                             arg[path + ".lora_B.weight"],
                             b.getF64FloatAttr(o.loraAlpha),
                             b.getI64IntegerAttr(o.loraRank),
                             b.getF64FloatAttr(o.loraDropout));
    return arith::AddFOp::create(b, loc, y, d);
  };
  auto theta = b.getF64FloatAttr(c.ropeTheta);
  auto headDim = b.getI64IntegerAttr(c.headDim);
  auto forward = [&]() -> Value {
  Value h = EmbeddingOp::create(b, loc, act(D), arg["model.embed_tokens.weight"],
                                inputIds);
  for (int64_t l = 0; l < c.numLayers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    Value x = norm(h, p + "input_layernorm.weight");
    Value q = RopeOp::create(b, loc, proj(x, p + "self_attn.q_proj"), headDim,
                             theta, UnitAttr());
    Value k = RopeOp::create(b, loc, proj(x, p + "self_attn.k_proj"), headDim,
                             theta, UnitAttr());
    Value v = proj(x, p + "self_attn.v_proj");
    auto lse = RankedTensorType::get({B, c.numHeads, S}, b.getF32Type());
    auto attn = AttentionOp::create(
        b, loc, TypeRange{act(c.numHeads * c.headDim), lse}, q, k, v,
        /*segments=*/Value(), b.getI64IntegerAttr(c.numHeads), b.getI64IntegerAttr(c.numKvHeads),
        FloatAttr(), b.getBoolAttr(true));
    h = arith::AddFOp::create(b, loc, h,
                              proj(attn.getResult(), p + "self_attn.o_proj"));
    x = norm(h, p + "post_attention_layernorm.weight");
    Value m = SwigluOp::create(b, loc, proj(x, p + "mlp.gate_proj"),
                               proj(x, p + "mlp.up_proj"));
    h = arith::AddFOp::create(b, loc, h, proj(m, p + "mlp.down_proj"));
  }
  h = norm(h, "model.norm.weight");
  Value head = arg[c.tieWordEmbeddings ? "model.embed_tokens.weight"
                                       : "lm_head.weight"];
  return LinearOp::create(b, loc, act(c.vocabSize), h, head, Value());
  };
  Value logits = forward();
  Value result = logits;
  auto scalarF32 = RankedTensorType::get({}, b.getF32Type());
  if (withLoss && o.lrec) {
    // LREC: the student learns the teacher's next-token distributions.
    teacher = true;
    Value teacherLogits = forward();
    result = KlDivOp::create(b, loc, scalarF32, logits, teacherLogits);
    if (o.lrecCeWeight != 0) {
      Value ce = CrossEntropyOp::create(b, loc, scalarF32, logits, labels);
      Value weight = arith::ConstantOp::create(
          b, loc, DenseElementsAttr::get(scalarF32, float(o.lrecCeWeight)));
      result = arith::AddFOp::create(
          b, loc, result, arith::MulFOp::create(b, loc, ce, weight));
    }
  } else if (withLoss) {
    result = CrossEntropyOp::create(b, loc, scalarF32, logits, labels);
  }
  func::ReturnOp::create(b, loc, result);
  func.setType(b.getFunctionType(argTypes, result.getType()));
  func.setAllArgAttrs(argAttrs);
  func.setResultAttr(0, QTuneDialect::kNameAttrName,
                     b.getStringAttr(withLoss ? "loss" : "logits"));
  return func;
}

std::optional<ImportResult>
Importer::run(const std::function<void(int64_t, int64_t)> &progress) {
  if (!checkOptions())
    return std::nullopt;
  int64_t D = c.hiddenSize;
  if (!o.baseAdapter.empty() &&
      !(baseAdapter = BaseAdapter::open(o.baseAdapter, error)))
    return std::nullopt;
  if (!dense("model.embed_tokens.weight", {c.vocabSize, D}, Role::frozen))
    return std::nullopt;
  for (int64_t l = 0; l < c.numLayers; ++l) {
    if (progress)
      progress(l + 1, c.numLayers);
    std::string p = "model.layers." + std::to_string(l) + ".";
    if (!dense(p + "input_layernorm.weight", {D}, Role::frozen))
      return std::nullopt;
    for (const LinearLayer &layer : linearLayers()) {
      auto [n, k] = linearShape(c, layer.shortName);
      if (!linear(p + layer.module, n, k, o.targets.count(layer.shortName)))
        return std::nullopt;
    }
    if (!dense(p + "post_attention_layernorm.weight", {D}, Role::frozen))
      return std::nullopt;
  }
  if (!dense("model.norm.weight", {D}, Role::frozen))
    return std::nullopt;
  if (!c.tieWordEmbeddings && !dense("lm_head.weight", {c.vocabSize, D}, Role::frozen))
    return std::nullopt;
  if (baseAdapter)
    if (std::vector<std::string> left = baseAdapter->unread(); !left.empty()) {
      error = o.baseAdapter + ": module '" + left.front() +
              "' is not a linear layer of this model (" +
              std::to_string(left.size()) + " such modules)";
      return std::nullopt;
    }
  // Anything left is something this architecture does not have (biases, q/k
  // norms, ...): refuse rather than drop it. Rotary inverse frequencies are
  // recomputed from rope_theta.
  for (const std::string &name : ckpt.unread())
    if (!o.shapesOnly && !llvm::StringRef(name).ends_with("rotary_emb.inv_freq")) {
      error = "the checkpoint has tensor '" + name +
              "', which a " + c.modelType +
              " decoder as qtune builds it does not use (biases and extra "
              "norms are not supported)";
      return std::nullopt;
    }

  result.module = ModuleOp::create(UnknownLoc::get(&ctx));
  ModuleOp module = *result.module;
  if (o.method == Method::Lora) {
    SmallVector<Attribute> targets;
    for (const LinearLayer &layer : linearLayers())
      if (o.targets.count(layer.shortName))
        targets.push_back(b.getStringAttr(
            llvm::StringRef(layer.module).rsplit('.').second));
    module->setAttr(
        QTuneDialect::kPeftAttrName,
        b.getDictionaryAttr(
            {b.getNamedAttr("r", b.getI64IntegerAttr(o.loraRank)),
             b.getNamedAttr("lora_alpha", b.getF64FloatAttr(o.loraAlpha)),
             b.getNamedAttr("lora_dropout", b.getF64FloatAttr(o.loraDropout)),
             b.getNamedAttr("target_modules", b.getArrayAttr(targets)),
             b.getNamedAttr("base_model_name_or_path",
                            b.getStringAttr(c.nameOrPath))}));
  }
  buildFunction(module, /*withLoss=*/true);
  if (o.logitsEntry)
    buildFunction(module, /*withLoss=*/false);
  if (failed(verify(module))) {
    error = "the imported graph does not verify (see the diagnostics above)";
    return std::nullopt;
  }
  return std::move(result);
}

} // namespace

std::optional<ImportResult>
importLlama(MLIRContext &context, const LlamaConfig &config,
            HFCheckpoint &checkpoint, const ImportOptions &options,
            std::string &error,
            const std::function<void(int64_t, int64_t)> &progress) {
  Importer importer(context, config, checkpoint, options, error);
  return importer.run(progress);
}

} // namespace qtune::import
