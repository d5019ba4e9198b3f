//===- qtune-import.cpp - a Hugging Face LLaMA-family model to qtune IR ----===//
//
//   qtune-import MODEL_DIR -o model.mlir [--params model.safetensors]
//   qtune-import MODEL_DIR -o model.mlir --shapes-only   (config.json alone)
//       [--method lora|peqa|qft|none] [--lora-r 16 --lora-alpha 32]
//       [--targets q,k,v,o,gate,up,down] [--format '#qtune.uniform<...>']
//       [--layer-format PATTERN=FORMAT ...] [--batch 1] [--seq-len 512]
//       [--lora-init peft|loftq [--loftq-rounds 1]]
//
// Reads config.json and the safetensors shards, quantizes the decoder's
// linear layers with round-to-nearest, and writes the graph (docs/import.md)
// and its parameters. Errors name the field, tensor or option.
//
//===----------------------------------------------------------------------===//

#include "qtune/Dialect/QTune/IR/QTuneDialect.h"
#include "qtune/Dialect/QTune/IR/QTuneOps.h"
#include "qtune/Import/LlamaImport.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Diagnostics.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/WithColor.h"

#include <chrono>

using namespace mlir;
namespace cl = llvm::cl;
using namespace qtune::import;

static cl::OptionCategory category("qtune-import options");
static cl::opt<std::string> modelDir(cl::Positional, cl::desc("<model-dir>"),
                                     cl::Required, cl::cat(category));
static cl::opt<std::string> outFile("o", cl::desc("Output graph (.mlir)"),
                                    cl::value_desc("file"), cl::Required,
                                    cl::cat(category));
static cl::opt<std::string> paramsFile(
    "params",
    cl::desc("Output parameters (.safetensors; default: the graph's path "
             "with .safetensors)"),
    cl::cat(category));
static cl::opt<Method> method(
    "method", cl::desc("Training method"), cl::init(Method::Lora),
    cl::values(clEnumValN(Method::Lora, "lora", "LoRA adapters on quantized weights"),
               clEnumValN(Method::Peqa, "peqa", "train the quantization scales"),
               clEnumValN(Method::Qft, "qft", "train INT8 weights with Lion"),
               clEnumValN(Method::None, "none", "nothing trainable (evaluation)"),
               clEnumValN(Method::Full, "full",
                          "every weight trains, dense bf16 (base models)")),
    cl::cat(category));
static cl::opt<int64_t> loraRank("lora-r", cl::desc("LoRA rank"), cl::init(16),
                                 cl::cat(category));
static cl::opt<double> loraAlpha("lora-alpha", cl::desc("LoRA alpha"),
                                 cl::init(32), cl::cat(category));
static cl::opt<double> loraDropout("lora-dropout", cl::desc("LoRA dropout"),
                                   cl::init(0), cl::cat(category));
static cl::opt<std::string> targets(
    "targets",
    cl::desc("Linear layers the method applies to, among q,k,v,o,gate,up,down"),
    cl::init("q,k,v,o,gate,up,down"), cl::cat(category));
static cl::opt<std::string> formatText(
    "format",
    cl::desc("Format of the decoder's linear layers (default '#qtune.uniform<"
             "bits = 4, group = 128>', for QFT '#qtune.uniform<bits = 8>'; "
             "'none' keeps them dense)"),
    cl::cat(category));
static cl::list<std::string> layerFormats(
    "layer-format",
    cl::desc("PATTERN=FORMAT: layers whose module path contains PATTERN take "
             "FORMAT ('none': dense); the last match wins"),
    cl::cat(category));
static cl::opt<int64_t> batch("batch", cl::desc("Sequences per step"),
                              cl::init(1), cl::cat(category));
static cl::opt<int64_t> seqLen("seq-len", cl::desc("Tokens per sequence"),
                               cl::init(512), cl::cat(category));
static cl::opt<uint64_t> seed("seed", cl::desc("Seed of the LoRA initialization"),
                              cl::init(0), cl::cat(category));
static cl::opt<ImportOptions::LoraInit> loraInit(
    "lora-init", cl::desc("LoRA initialization"),
    cl::init(ImportOptions::LoraInit::Peft),
    cl::values(clEnumValN(ImportOptions::LoraInit::Peft, "peft",
                          "PEFT's: A random, B zero"),
               clEnumValN(ImportOptions::LoraInit::Loftq, "loftq",
                          "LoftQ's: the rank-r SVD of the quantization residual")),
    cl::cat(category));
static cl::opt<int64_t> loftqRounds(
    "loftq-rounds",
    cl::desc("With --lora-init loftq: alternating rounds of quantization and "
             "SVD (1: quantize once, fit the residual)"),
    cl::init(1), cl::cat(category));
static cl::opt<std::string> quantizedFile(
    "quantized",
    cl::desc("Quantized layers written by qtune-quantize (e.g. GPTQ) to use "
             "instead of round-to-nearest; each layer's format must match"),
    cl::cat(category));
static cl::opt<bool> lrec(
    "lrec",
    cl::desc("Low-rank error correction: the loss is KL(teacher || student), "
             "the teacher being the model on its full-precision weights"),
    cl::cat(category));
static cl::opt<double> lrecCeWeight(
    "lrec-ce-weight",
    cl::desc("With --lrec: add this weight x the cross entropy of the labels"),
    cl::init(0), cl::cat(category));
static cl::opt<std::string> baseAdapter(
    "base-adapter",
    cl::desc("A trained PEFT LoRA adapter directory (e.g. an LREC run's "
             "checkpoint-<step>) added, frozen, to the layers it names, under "
             "the adapter that trains"),
    cl::value_desc("dir"), cl::cat(category));
static cl::opt<bool> noLogits("no-logits",
                              cl::desc("Do not emit the <name>_logits function"),
                              cl::cat(category));
static cl::opt<std::string> funcName("name", cl::desc("Name of the loss function"),
                                     cl::init("model"), cl::cat(category));
static cl::opt<bool> shapesOnly(
    "shapes-only",
    cl::desc("Build the graph from config.json alone: no weight is read, "
             "quantized or written (for benchmarks and memory plans of "
             "full-size models; parameters come from elsewhere, e.g. "
             "bench/random_params.py)"),
    cl::cat(category));

/// Prints `module` into a new temporary file beside `path` (renamed into
/// place by the caller once everything else is written).
static bool writeBeside(const std::string &path, ModuleOp module,
                        std::string &tmp, std::string &error) {
  llvm::SmallString<256> name;
  if (std::error_code ec =
          llvm::sys::fs::createUniqueFile(path + ".tmp-%%%%%%", name)) {
    error = path + ": cannot create a temporary file beside it: " + ec.message();
    return false;
  }
  tmp = std::string(name);
  std::error_code ec;
  llvm::raw_fd_ostream os(tmp, ec);
  if (!ec)
    module.print(os);
  os.close();
  if (ec || os.has_error()) {
    error = path + ": cannot write: " + (ec ? ec.message() : os.error().message());
    llvm::sys::fs::remove(tmp);
    return false;
  }
  return true;
}

static int fail(const llvm::Twine &message) {
  llvm::WithColor::error(llvm::errs(), "qtune-import") << message << "\n";
  return 1;
}


int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "qtune-import: a Hugging Face LLaMA-family model directory to a qtune "
      "graph and its quantized parameters\n");

  DialectRegistry registry;
  registry.insert<qtune::QTuneDialect, func::FuncDialect, arith::ArithDialect,
                  tensor::TensorDialect>();
  MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();

  ImportOptions options;
  options.method = method;
  options.loraRank = loraRank;
  options.loraAlpha = loraAlpha;
  options.loraDropout = loraDropout;
  options.batch = batch;
  options.seqLen = seqLen;
  options.seed = seed;
  options.loraInit = loraInit;
  options.quantized = quantizedFile;
  options.lrec = lrec;
  options.lrecCeWeight = lrecCeWeight;
  options.baseAdapter = baseAdapter;
  options.loftqRounds = loftqRounds;
  if (loftqRounds < 1)
    return fail("--loftq-rounds must be at least 1");
  if (loftqRounds.getNumOccurrences() && loraInit != ImportOptions::LoraInit::Loftq)
    return fail("--loftq-rounds needs --lora-init loftq");
  if (loraInit == ImportOptions::LoraInit::Loftq && method != Method::Lora)
    return fail("--lora-init loftq initializes LoRA adapters; it needs "
                "--method lora");
  options.logitsEntry = !noLogits;
  options.shapesOnly = shapesOnly;
  if (shapesOnly && !paramsFile.empty())
    return fail("--shapes-only writes no parameters; drop --params");
  options.name = funcName;
  options.targets.clear();
  llvm::SmallVector<llvm::StringRef> names;
  llvm::StringRef(targets).split(names, ',', -1, false);
  for (llvm::StringRef n : names) {
    n = n.trim();
    bool known = llvm::any_of(linearLayers(), [&](const LinearLayer &l) {
      return n == l.shortName;
    });
    if (!known)
      return fail("--targets: unknown layer '" + n +
                  "' (choose among q, k, v, o, gate, up, down)");
    options.targets.insert(n.str());
  }
  std::string error;
  std::string defaultFormat = method == Method::Qft
                                  ? "#qtune.uniform<bits = 8>"
                                  : "#qtune.uniform<bits = 4, group = 128>";
  if (!parseFormatOption(ctx, formatText.empty() ? defaultFormat : formatText,
                   options.format, error))
    return fail("--format: " + error);
  for (const std::string &spec : layerFormats) {
    auto [pattern, format] = llvm::StringRef(spec).split('=');
    if (pattern.empty() || format.empty())
      return fail("--layer-format '" + spec + "' must be PATTERN=FORMAT");
    qtune::QuantFormatAttrInterface f;
    if (!parseFormatOption(ctx, format.str(), f, error))
      return fail("--layer-format '" + spec + "': " + error);
    options.layerFormats.push_back({pattern.str(), f});
  }

  llvm::SmallString<256> configPath(modelDir.getValue());
  llvm::sys::path::append(configPath, "config.json");
  auto configText = llvm::MemoryBuffer::getFile(configPath);
  if (!configText)
    return fail(llvm::Twine(configPath) + ": " + configText.getError().message());
  std::optional<LlamaConfig> config =
      parseLlamaConfig((*configText)->getBuffer(), error);
  if (!config)
    return fail(error);
  if (config->nameOrPath.empty())
    config->nameOrPath = modelDir;
  // With --shapes-only nothing is read: an empty checkpoint.
  std::unique_ptr<HFCheckpoint> ckpt =
      shapesOnly ? std::make_unique<HFCheckpoint>()
                 : HFCheckpoint::open(modelDir, error);
  if (!ckpt)
    return fail(error);

  // Never write over a file this import reads (a model directory's own
  // model.safetensors, say), nor the graph over the parameters.
  {
    std::string params = paramsFile;
    if (params.empty() && !shapesOnly) {
      llvm::SmallString<256> p(outFile.getValue());
      llvm::sys::path::replace_extension(p, ".safetensors");
      params = std::string(p);
    }
    std::vector<std::string> reads{std::string(configPath)};
    llvm::SmallString<256> index(modelDir.getValue());
    llvm::sys::path::append(index, "model.safetensors.index.json");
    reads.push_back(std::string(index));
    for (const std::string &shard : ckpt->paths())
      reads.push_back(shard);
    if (!quantizedFile.empty())
      reads.push_back(quantizedFile);
    if (!baseAdapter.empty())
      for (const char *f : {"adapter_model.safetensors", "adapter_config.json"}) {
        llvm::SmallString<256> p(baseAdapter.getValue());
        llvm::sys::path::append(p, f);
        reads.push_back(std::string(p));
      }
    std::vector<std::pair<std::string, std::string>> outputs{{"-o", outFile}};
    if (!params.empty())
      outputs.push_back({paramsFile.empty() ? "the parameters" : "--params", params});
    for (const auto &[flag, out] : outputs)
      for (const std::string &in : reads)
        if (llvm::sys::fs::equivalent(out, in))
          return fail(flag + " " + out + " would overwrite " + in +
                      ", which this import reads; write the outputs elsewhere");
    if (outputs.size() == 2 &&
        (outFile == params || llvm::sys::fs::equivalent(outFile, params)))
      return fail("-o " + outFile + " and the parameters are one file; give "
                  "the graph a .mlir name or --params another path");
  }

  auto start = std::chrono::steady_clock::now();
  bool tty = llvm::errs().is_displayed();
  std::optional<ImportResult> result = importLlama(
      ctx, *config, *ckpt, options, error, [&](int64_t i, int64_t n) {
        if (shapesOnly) // nothing to read or quantize: no wait to report
          return;
        double s = std::chrono::duration<double>(
                       std::chrono::steady_clock::now() - start).count();
        // A terminal sees one line rewritten; a log, a line per layer.
        if (tty)
          llvm::errs() << llvm::formatv("\rquantizing layer {0}/{1} ({2:F1} s)", i,
                                        n, s);
        else
          llvm::errs() << llvm::formatv("qtune-import: layer {0}/{1} ({2:F1} s)\n",
                                        i, n, s);
      });
  if (tty)
    llvm::errs() << "\r\033[K";
  if (!result)
    return fail(error);

  if (shapesOnly) {
    std::string graphTmp;
    if (!writeBeside(outFile, *result->module, graphTmp, error))
      return fail(error);
    if (std::error_code ec = llvm::sys::fs::rename(graphTmp, outFile)) {
      llvm::sys::fs::remove(graphTmp);
      return fail(outFile + ": cannot write: " + ec.message());
    }
    uint64_t bytes = 0;
    size_t tensors = 0;
    result->module->walk([&](func::FuncOp f) {
      if (f.getName() != options.name)
        return;
      for (Type t : f.getArgumentTypes()) {
        auto rt = cast<RankedTensorType>(t);
        bytes += rt.getNumElements() * rt.getElementTypeBitWidth() / 8;
        ++tensors;
      }
    });
    llvm::outs() << llvm::formatv(
        "qtune-import: {0} ({1} layers, hidden {2}, heads {3}/{4}, vocab {5}) -> "
        "{6}, shapes only (no weights read)\n  {7} arguments, {8:F2} MiB; {9:N} "
        "trainable parameters; batch {10} x seq {11}\n",
        config->modelType, config->numLayers, config->hiddenSize,
        config->numHeads, config->numKvHeads, config->vocabSize, outFile,
        tensors, bytes / 1048576.0, result->numTrainable, batch, seqLen);
    return 0;
  }
  std::string params = paramsFile;
  if (params.empty()) {
    llvm::SmallString<256> p(outFile.getValue());
    llvm::sys::path::replace_extension(p, ".safetensors");
    params = std::string(p);
  }
  // The graph goes to a temporary file beside its place, the parameters are
  // written (atomically), then the graph takes its place: a failure leaves
  // every existing file as it was.
  std::string graphTmp;
  if (!writeBeside(outFile, *result->module, graphTmp, error))
    return fail(error);
  std::map<std::string, std::string> meta{{"format", "qtune"},
                                          {"graph", llvm::sys::path::filename(outFile).str()}};
  if (!qtune::st::write(params, result->params, meta, error)) {
    llvm::sys::fs::remove(graphTmp);
    return fail(error);
  }
  if (std::error_code ec = llvm::sys::fs::rename(graphTmp, outFile)) {
    llvm::sys::fs::remove(graphTmp);
    return fail(outFile + ": cannot write (" + ec.message() + "); " + params +
                " was written");
  }

  double seconds = std::chrono::duration<double>(
                       std::chrono::steady_clock::now() - start).count();
  uint64_t bytes = 0;
  for (const qtune::st::OwnedTensor &t : result->params)
    bytes += t.bytes.size();
  llvm::outs() << llvm::formatv(
      "qtune-import: {0} ({1} layers, hidden {2}, heads {3}/{4}, vocab {5}) -> "
      "{6} + {7}\n  {8} tensors, {9:F2} MiB; {10:N} trainable parameters; "
      "batch {11} x seq {12}; {13:F1} s\n",
      config->modelType, config->numLayers, config->hiddenSize,
      config->numHeads, config->numKvHeads, config->vocabSize, outFile, params,
      result->params.size(), bytes / 1048576.0, result->numTrainable, batch,
      seqLen, seconds);
  // "  WHAT: mean M, worst W (LAYER)" over per-layer errors.
  auto summarize = [](const std::string &what,
                      const std::vector<std::pair<std::string, double>> &errors) {
    if (errors.empty())
      return;
    double worst = 0, mean = 0;
    std::string worstLayer;
    for (const auto &[layer, e] : errors) {
      mean += e / errors.size();
      if (e >= worst)
        worst = e, worstLayer = layer;
    }
    llvm::outs() << llvm::formatv("  {0}: mean {1:E2}, worst {2:E2} ({3})\n",
                                  what, mean, worst, worstLayer);
  };
  summarize(quantizedFile.empty()
                ? std::string("round-to-nearest relative error")
                : "relative weight error of the layers in " + quantizedFile,
            result->quantError);
  summarize("with the LoftQ adapters (" + std::to_string(loftqRounds) +
                " round(s))",
            result->initError);
  if (result->baseAdapterLayers)
    llvm::outs() << llvm::formatv("  base adapter {0}: {1} layers, frozen\n",
                                  baseAdapter, result->baseAdapterLayers);
  return 0;
}
