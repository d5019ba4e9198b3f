//===- qtune-quantize.cpp - quantize a model's linear layers --------------===//
//
//   qtune-quantize MODEL_DIR -o quantized.safetensors [--format F]
//       [--layer-format PATTERN=F ...] [--method rtn|gptq]
//       [--calib BATCH.safetensors [--calib-samples N] | --hessians H.safetensors ...]
//       [--damp 0.01] [--act-order] [--block 128] [--dump-hessians H.safetensors]
//   qtune-quantize MODEL_DIR --calib BATCH.safetensors --emit-calibration calib.mlir
//
// Hessians come from the reference interpreter (--calib; small models) or
// from a compiled calibration entry run on the GPU: --emit-calibration writes
// that graph (calib.mlir, its params calib.safetensors and its input
// calib.inputs.safetensors); `qtune-compile` and `qtune-run forward` turn them
// into a Hessians file for --hessians.
//
// Quantizes every decoder linear layer of a LLaMA-family model directory
// with round-to-nearest or GPTQ and writes the layers' components, with a
// metadata entry "qtune.format.<module>" naming each layer's format;
// `qtune-import MODEL_DIR --quantized quantized.safetensors` builds the
// graph on them. Prints per-layer errors. See docs/quantize.md.
//
//===----------------------------------------------------------------------===//

#include "qtune/Dialect/QTune/IR/QTuneDialect.h"
#include "qtune/Import/LlamaImport.h"
#include "qtune/Quantize/Calibration.h"
#include "qtune/Quantize/Gptq.h"
#include "qtune/Reference/TensorFiles.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/WithColor.h"

#include <cmath>

using namespace mlir;
namespace cl = llvm::cl;
using namespace qtune;

enum class QuantMethod { Rtn, Gptq };

static cl::OptionCategory category("qtune-quantize options");
static cl::opt<std::string> modelDir(cl::Positional, cl::desc("<model-dir>"),
                                     cl::Required, cl::cat(category));
static cl::opt<std::string> outFile("o", cl::desc("Output (.safetensors)"),
                                    cl::value_desc("file"), cl::cat(category));
static cl::opt<std::string> formatText(
    "format",
    cl::desc("Format of the decoder's linear layers (default "
             "'#qtune.uniform<bits = 4, group = 128>')"),
    cl::init("#qtune.uniform<bits = 4, group = 128>"), cl::cat(category));
static cl::list<std::string> layerFormats(
    "layer-format",
    cl::desc("PATTERN=FORMAT: layers whose module path contains PATTERN take "
             "FORMAT ('none': left dense); the last match wins"),
    cl::cat(category));
static cl::opt<QuantMethod> method(
    "method", cl::desc("Quantizer"), cl::init(QuantMethod::Rtn),
    cl::values(clEnumValN(QuantMethod::Rtn, "rtn", "round-to-nearest"),
               clEnumValN(QuantMethod::Gptq, "gptq",
                          "GPTQ / OPTQ on calibration Hessians (#qtune.uniform)")),
    cl::cat(category));
static cl::opt<std::string> calibFile(
    "calib",
    cl::desc("Calibration token ids: a safetensors file with input_ids "
             "[sequences, length] (i32)"),
    cl::cat(category));
static cl::opt<int64_t> calibSamples(
    "calib-samples", cl::desc("Sequences of --calib to use (0: all)"),
    cl::init(0), cl::cat(category));
static cl::list<std::string> hessianFiles(
    "hessians",
    cl::desc("Layer Hessians (hessian.<module>, F32 K x K) computed by the "
             "calibration graph on the GPU, instead of --calib; several files "
             "(equal-size batches) are averaged"),
    cl::value_desc("file"), cl::cat(category));
static cl::opt<std::string> emitCalibration(
    "emit-calibration",
    cl::desc("Write the calibration graph for the --calib sequences (GRAPH.mlir, "
             "its params GRAPH.safetensors, its input GRAPH.inputs.safetensors) "
             "and stop"),
    cl::value_desc("graph.mlir"), cl::cat(category));
static cl::opt<std::string> dumpHessians(
    "dump-hessians",
    cl::desc("Also write the Hessians used (hessian.<module>, F32)"),
    cl::value_desc("file"), cl::cat(category));
static cl::opt<double> damp("damp",
                            cl::desc("GPTQ dampening: this fraction of the "
                                     "Hessian's mean diagonal is added to it"),
                            cl::init(0.01), cl::cat(category));
static cl::opt<bool> actOrder("act-order",
                              cl::desc("GPTQ: quantize columns by decreasing "
                                       "Hessian diagonal (static groups)"),
                              cl::cat(category));
static cl::opt<int64_t> block("block", cl::desc("GPTQ: columns per lazy update"),
                              cl::init(128), cl::cat(category));

static int fail(const llvm::Twine &message) {
  llvm::WithColor::error(llvm::errs(), "qtune-quantize") << message << "\n";
  return 1;
}

/// The input_ids rows of a calibration file.
static bool readCalibration(std::vector<std::vector<int32_t>> &out,
                            std::string &error) {
  auto file = st::File::open(calibFile, error);
  if (!file)
    return false;
  const st::TensorInfo *ids = file->find("input_ids");
  if (!ids || ids->shape.size() != 2 ||
      (ids->dtype != st::DType::I32 && ids->dtype != st::DType::I64)) {
    error = calibFile + ": needs an i32 or i64 tensor 'input_ids' of shape "
                        "[sequences, length]";
    return false;
  }
  std::vector<double> values = st::toDoubles(*ids, file->data(*ids));
  int64_t count = ids->shape[0], length = ids->shape[1];
  if (calibSamples > 0)
    count = std::min<int64_t>(count, calibSamples);
  for (int64_t s = 0; s < count; ++s)
    out.emplace_back(values.begin() + s * length,
                     values.begin() + (s + 1) * length);
  return true;
}

/// Writes the calibration graph, its params and its input (the sequences,
/// one batch) next to --emit-calibration.
static int writeCalibrationGraph(MLIRContext &ctx, const import::LlamaConfig &config,
                                 import::HFCheckpoint &ckpt,
                                 const std::vector<std::vector<int32_t>> &sequences) {
  std::string error;
  if (sequences.empty())
    return fail(calibFile + ": holds no calibration sequence");
  int64_t batch = sequences.size(), seqLen = sequences.front().size();
  for (auto [s, seq] : llvm::enumerate(sequences))
    for (int32_t t : seq)
      if (t < 0 || t >= config.vocabSize)
        return fail(calibFile + ": sequence " + std::to_string(s) + " holds token " +
                    std::to_string(t) + ", outside the vocabulary of " +
                    std::to_string(config.vocabSize));
  std::optional<quantize::CalibrationGraph> graph =
      quantize::buildCalibrationGraph(ctx, config, ckpt, batch, seqLen, error);
  if (!graph)
    return fail(error);
  llvm::StringRef stem = emitCalibration;
  stem.consume_back(".mlir");
  std::string paramsPath = (stem + ".safetensors").str();
  std::string inputsPath = (stem + ".inputs.safetensors").str();
  std::error_code ec;
  llvm::raw_fd_ostream os(emitCalibration, ec);
  if (ec)
    return fail(emitCalibration + ": " + ec.message());
  graph->module->print(os);
  os.close();
  if (os.has_error())
    return fail(emitCalibration + ": write failed");
  if (!st::write(paramsPath, graph->params, {{"format", "qtune"}}, error))
    return fail(error);
  HostTensor ids({batch, seqLen});
  for (int64_t s = 0; s < batch; ++s)
    for (int64_t i = 0; i < seqLen; ++i)
      ids.data[s * seqLen + i] = sequences[s][i];
  if (failed(ref::writeTensors(inputsPath,
                               {{"input_ids", IntegerType::get(&ctx, 32), ids}}, {},
                               false, error)))
    return fail(error);
  llvm::outs() << llvm::formatv(
      "qtune-quantize: calibration graph for {0} x {1} tokens -> {2} (params {3}, "
      "input {4}); compile it, run it with qtune-run forward, and pass the "
      "output to --hessians\n",
      batch, seqLen, emitCalibration, paramsPath, inputsPath);
  return 0;
}

/// The --hessians files' Hessians of `layers`, averaged.
template <typename Layers>
static std::optional<quantize::Hessians> readHessians(const Layers &layers,
                                                      std::string &error) {
  std::vector<std::pair<std::string, mlir::RankedTensorType>> wanted;
  for (const auto &layer : layers)
    wanted.push_back({quantize::hessianName(layer.path),
                      RankedTensorType::get({layer.k, layer.k},
                                            Float32Type::get(layer.format.getContext()))});
  quantize::Hessians sum;
  for (const std::string &path : hessianFiles) {
    std::vector<HostTensor> values;
    if (failed(ref::readTensors(path, wanted, values, error)))
      return std::nullopt;
    for (auto [layer, value] : llvm::zip(layers, values)) {
      for (auto [i, v] : llvm::enumerate(value.data))
        if (!std::isfinite(v)) {
          error = path + ": '" + quantize::hessianName(layer.path) +
                  "' holds a non-finite value at flat index " + std::to_string(i);
          return std::nullopt;
        }
      std::vector<double> &h = sum[layer.path];
      if (h.empty())
        h.assign(value.data.size(), 0.0);
      for (size_t i = 0; i < h.size(); ++i)
        h[i] += value.data[i] / double(hessianFiles.size());
    }
  }
  return sum;
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "qtune-quantize: quantize a LLaMA-family model's linear layers "
      "(round-to-nearest or GPTQ)\n");

  DialectRegistry registry;
  registry.insert<QTuneDialect, func::FuncDialect, arith::ArithDialect,
                  tensor::TensorDialect>();
  MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();
  std::string error;

  import::ImportOptions formats;
  if (!import::parseFormatOption(ctx, formatText, formats.format, error))
    return fail("--format: " + error);
  for (const std::string &spec : layerFormats) {
    auto [pattern, text] = llvm::StringRef(spec).split('=');
    if (pattern.empty() || text.empty())
      return fail("--layer-format '" + spec + "' must be PATTERN=FORMAT");
    QuantFormatAttrInterface f;
    if (!import::parseFormatOption(ctx, text, f, error))
      return fail("--layer-format '" + spec + "': " + error);
    formats.layerFormats.push_back({pattern.str(), f});
  }
  if (!emitCalibration.empty() && calibFile.empty())
    return fail("--emit-calibration needs the calibration sequences (--calib)");
  if (emitCalibration.empty() && outFile.empty())
    return fail("no output: give -o (or --emit-calibration)");
  if (!calibFile.empty() && !hessianFiles.empty() && emitCalibration.empty())
    return fail("--calib and --hessians both give the Hessians; choose one");
  if (method == QuantMethod::Gptq && calibFile.empty() && hessianFiles.empty())
    return fail("--method gptq needs calibration data (--calib or --hessians)");
  if (damp < 0 || block <= 0)
    return fail("--damp must be non-negative and --block positive");

  llvm::SmallString<256> configPath(modelDir.getValue());
  llvm::sys::path::append(configPath, "config.json");
  auto configText = llvm::MemoryBuffer::getFile(configPath);
  if (!configText)
    return fail(llvm::Twine(configPath) + ": " + configText.getError().message());
  std::optional<import::LlamaConfig> config =
      import::parseLlamaConfig((*configText)->getBuffer(), error);
  if (!config)
    return fail(error);
  auto ckpt = import::HFCheckpoint::open(modelDir, error);
  if (!ckpt)
    return fail(error);

  // The calibration graph does not depend on the formats.
  if (!emitCalibration.empty()) {
    std::vector<std::vector<int32_t>> sequences;
    if (!readCalibration(sequences, error))
      return fail(error);
    return writeCalibrationGraph(ctx, *config, *ckpt, sequences);
  }

  // GPTQ needs each layer in a uniform format; check before any work.
  struct Layer {
    std::string path;
    int64_t n, k;
    QuantFormatAttrInterface format;
  };
  std::vector<Layer> layers;
  for (int64_t l = 0; l < config->numLayers; ++l)
    for (const import::LinearLayer &linear : import::linearLayers()) {
      std::string path =
          "model.layers." + std::to_string(l) + "." + linear.module;
      QuantFormatAttrInterface f = formats.formatOf(path);
      if (!f)
        continue; // left dense
      auto [n, k] = import::linearShape(*config, linear.shortName);
      if (failed(f.verifyShape(n, k, [&]() { return emitError(UnknownLoc::get(&ctx)); })))
        return fail(path + ": its format does not fit its " + std::to_string(n) +
                    "x" + std::to_string(k) + " weight");
      if (method == QuantMethod::Gptq && !isa<UniformFormatAttr>(f)) {
        std::string text;
        llvm::raw_string_ostream(text) << f;
        return fail(path + ": GPTQ quantizes #qtune.uniform formats; this "
                           "layer's is " + text);
      }
      layers.push_back({path, n, k, f});
    }

  std::optional<quantize::Hessians> hessians;
  if (!hessianFiles.empty()) {
    hessians = readHessians(layers, error);
    if (!hessians)
      return fail(error);
  } else if (!calibFile.empty()) {
    std::vector<std::vector<int32_t>> sequences;
    if (!readCalibration(sequences, error))
      return fail(error);
    bool tty = llvm::errs().is_displayed();
    hessians = quantize::collectHessians(
        ctx, *config, *ckpt, sequences, error, [&](int64_t i, int64_t n) {
          if (tty)
            llvm::errs() << llvm::formatv("\rcalibration sequence {0}/{1}", i, n);
        });
    if (tty)
      llvm::errs() << "\r\033[K";
    if (!hessians)
      return fail(error);
  }

  if (hessians && !dumpHessians.empty()) {
    std::vector<ref::NamedTensor> out;
    for (const auto &[module, h] : *hessians) {
      int64_t k = std::llround(std::sqrt(double(h.size())));
      out.push_back({quantize::hessianName(module), Float32Type::get(&ctx),
                     HostTensor({k, k}, h)});
    }
    if (failed(ref::writeTensors(dumpHessians, out, {}, false, error)))
      return fail(error);
  }

  std::vector<ref::NamedTensor> tensors;
  std::map<std::string, std::string> meta{
      {"format", "qtune"}, {"qtune.method", method == QuantMethod::Gptq ? "gptq" : "rtn"}};
  llvm::outs() << llvm::formatv("{0,-40} {1,-44} {2,11} {3,11}\n", "layer", "format",
                                "rtn error", method == QuantMethod::Gptq ? "gptq error" : "");
  double meanRtn = 0, meanOut = 0;
  for (const Layer &layer : layers) {
    std::vector<double> w;
    if (!ckpt->read(layer.path + ".weight", {layer.n, layer.k}, w, error))
      return fail(error);
    SmallVector<HostTensor> comps;
    double rtnError = 0, outError = 0;
    const std::vector<double> *hessian = nullptr;
    if (hessians) {
      auto h = hessians->find(layer.path);
      if (h == hessians->end())
        return fail(layer.path + ": the calibration forward never reached "
                                 "this layer");
      hessian = &h->second;
    }
    if (method == QuantMethod::Gptq) {
      quantize::GptqOptions options;
      options.damp = damp;
      options.actOrder = actOrder;
      options.block = block;
      auto result = quantize::gptq(cast<UniformFormatAttr>(layer.format), layer.n,
                                   layer.k, w, *hessian, options, error);
      if (!result)
        return fail(layer.path + ": " + error);
      comps = std::move(result->components);
      rtnError = result->rtnError;
      outError = result->error;
    } else {
      comps = layer.format.quantize(layer.n, layer.k, w, {});
      std::vector<double> back(layer.n * layer.k);
      layer.format.dequantize(layer.n, layer.k, comps, back);
      // With calibration data: the output error, as GPTQ reports it; else
      // the weight's relative error.
      if (hessian) {
        rtnError = quantize::outputError(layer.n, layer.k, w, back, *hessian);
      } else {
        rtnError = relativeError(w, back);
      }
    }
    std::string text;
    llvm::raw_string_ostream(text) << layer.format;
    meta["qtune.format." + layer.path] = text;
    for (auto [spec, value] :
         llvm::zip(layer.format.getComponents(layer.n, layer.k), comps))
      tensors.push_back({layer.path + "." + spec.name, spec.elementType, value});
    meanRtn += rtnError / layers.size();
    meanOut += outError / layers.size();
    llvm::outs() << llvm::formatv("{0,-40} {1,-44} {2,11:E2} {3,11}\n", layer.path,
                                  text, rtnError,
                                  method == QuantMethod::Gptq
                                      ? llvm::formatv("{0:E2}", outError).str()
                                      : "");
  }
  if (failed(ref::writeTensors(outFile, tensors, meta, false, error)))
    return fail(error);
  llvm::outs() << llvm::formatv(
      "qtune-quantize: {0} layers -> {1}; mean {2} error: round-to-nearest "
      "{3:E2}{4}\n",
      layers.size(), outFile, hessians ? "output" : "weight", meanRtn,
      method == QuantMethod::Gptq ? llvm::formatv(", GPTQ {0:E2}", meanOut).str()
                                  : std::string());
  return 0;
}
