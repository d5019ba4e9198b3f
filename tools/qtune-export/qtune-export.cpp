//===- qtune-export.cpp - a fine-tuned qtune model out -------------------===//
//
//   qtune-export GRAPH.mlir --params P.safetensors [--params CKPT.safetensors]
//       -o OUT_DIR [--to hf|qtune] [--config MODEL_DIR/config.json]
//       [--entry model]
//
// hf: OUT_DIR/model.safetensors in bf16 (quantized layers dequantized, LoRA
// merged) and config.json; qtune: OUT_DIR/model.mlir without adapters and
// OUT_DIR/model.safetensors with each adapter merged into its layer. Later
// --params files override earlier ones (an import's parameters, then a
// checkpoint's trained tensors). See docs/export.md.
//
//===----------------------------------------------------------------------===//

#include "qtune/Dialect/QTune/IR/QTuneDialect.h"
#include "qtune/Export/ModelExport.h"
#include "qtune/Reference/TensorFiles.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"

#include <nlohmann/json.hpp>

using namespace mlir;
namespace cl = llvm::cl;
using namespace qtune::exporter;

enum class Target { Hf, Qtune };

static cl::OptionCategory category("qtune-export options");
static cl::opt<std::string> graphFile(cl::Positional, cl::desc("<graph.mlir>"),
                                      cl::Required, cl::cat(category));
static cl::list<std::string> paramFiles(
    "params",
    cl::desc("Parameter files (.safetensors); a tensor comes from the last "
             "that holds it"),
    cl::OneOrMore, cl::cat(category));
static cl::opt<std::string> outDir("o", cl::desc("Output directory"),
                                   cl::value_desc("dir"), cl::Required,
                                   cl::cat(category));
static cl::opt<Target> target(
    "to", cl::desc("What to write"), cl::init(Target::Hf),
    cl::values(clEnumValN(Target::Hf, "hf",
                          "Hugging Face safetensors in bf16, adapters merged"),
               clEnumValN(Target::Qtune, "qtune",
                          "a qtune quantized model, adapters merged")),
    cl::cat(category));
static cl::opt<std::string> configFile(
    "config",
    cl::desc("The base model's config.json, copied (torch_dtype bfloat16) "
             "next to the hf weights"),
    cl::cat(category));
static cl::opt<std::string> entry("entry", cl::desc("Function to export"),
                                  cl::init("model"), cl::cat(category));

static int fail(const llvm::Twine &message) {
  llvm::WithColor::error(llvm::errs(), "qtune-export") << message << "\n";
  return 1;
}

static std::string inDir(llvm::StringRef name) {
  llvm::SmallString<256> p(outDir.getValue());
  llvm::sys::path::append(p, name);
  return std::string(p);
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(argc, argv,
                              "qtune-export: a fine-tuned qtune model as Hugging "
                              "Face safetensors or a merged quantized model\n");

  DialectRegistry registry;
  registry.insert<qtune::QTuneDialect, func::FuncDialect, arith::ArithDialect,
                  tensor::TensorDialect>();
  MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();
  llvm::SourceMgr sourceMgr;
  std::string error;
  auto buffer = openInputFile(graphFile, &error);
  if (!buffer)
    return fail(error);
  sourceMgr.AddNewSourceBuffer(std::move(buffer), llvm::SMLoc());
  SourceMgrDiagnosticHandler handler(sourceMgr, &ctx);
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &ctx);
  if (!module)
    return fail("could not parse or verify '" + graphFile + "'");

  std::optional<ModelLayout> layout = readLayout(*module, entry, error);
  if (!layout)
    return fail(graphFile + ": " + error);
  std::map<std::string, qtune::HostTensor> params;
  std::vector<std::string> files(paramFiles.begin(), paramFiles.end());
  if (!readParams(*layout, files, params, error))
    return fail(error);
  if (auto ec = llvm::sys::fs::create_directories(outDir))
    return fail(outDir + ": " + ec.message());

  int merged = 0;
  for (const LinearLayer &l : layout->linears)
    merged += l.adapters.size();

  if (target == Target::Hf) {
    // The config first (small, checked): the weights are only written with it.
    if (!configFile.empty()) {
      auto text = llvm::MemoryBuffer::getFile(configFile);
      if (!text)
        return fail(configFile + ": " + text.getError().message());
      nlohmann::json config =
          nlohmann::json::parse((*text)->getBuffer(), nullptr, false);
      if (config.is_discarded() || !config.is_object())
        return fail(configFile + ": not a JSON object");
      config["torch_dtype"] = "bfloat16";
      std::string ioError;
      auto out = openOutputFile(inDir("config.json"), &ioError);
      if (!out)
        return fail(ioError);
      out->os() << config.dump(2) << "\n";
      out->keep();
    }
    std::vector<qtune::ref::NamedTensor> tensors;
    Type bf16 = BFloat16Type::get(&ctx);
    for (auto &[name, value] : hfTensors(*layout, params))
      tensors.push_back({name, bf16, std::move(value)});
    if (failed(qtune::ref::writeTensors(inDir("model.safetensors"), tensors,
                                        {{"format", "pt"}}, false, error)))
      return fail(error);
    llvm::outs() << llvm::formatv(
        "qtune-export: {0} -> {1} (Hugging Face, bf16): {2} tensors, {3} "
        "linear layers dequantized, {4} adapters merged\n",
        graphFile, outDir, tensors.size(), layout->linears.size(), merged);
    return 0;
  }

  std::vector<MergeReport> reports = mergeAdapters(*layout, params);
  stripAdapters(*module);
  std::optional<ModelLayout> stripped = readLayout(*module, entry, error);
  if (!stripped)
    return fail(error);
  std::vector<qtune::ref::NamedTensor> tensors;
  for (const auto &[name, type] : stripped->params)
    tensors.push_back({name, type.getElementType(), params.at(name)});
  std::map<std::string, std::string> meta{{"format", "qtune"},
                                          {"graph", "model.mlir"}};
  // Parameters first: the graph is only written when its data is.
  if (failed(qtune::ref::writeTensors(inDir("model.safetensors"), tensors, meta,
                                      false, error)))
    return fail(error);
  std::string ioError;
  auto out = openOutputFile(inDir("model.mlir"), &ioError);
  if (!out)
    return fail(ioError);
  module->print(out->os());
  out->keep();
  int exact = 0;
  double worst = 0, mean = 0;
  std::string worstLayer;
  for (const MergeReport &r : reports) {
    exact += r.exact;
    mean += r.error / reports.size();
    if (r.error >= worst)
      worst = r.error, worstLayer = r.layer;
  }
  llvm::outs() << llvm::formatv(
      "qtune-export: {0} -> {1} (qtune): {2} tensors, {3} adapters merged ({4} "
      "exactly, {5} by requantization)\n",
      graphFile, outDir, tensors.size(), reports.size(), exact,
      reports.size() - exact);
  if (!reports.empty())
    llvm::outs() << llvm::formatv(
        "  merge error (relative to dequant + adapter): mean {0:E2}, worst "
        "{1:E2} ({2})\n",
        mean, worst, worstLayer);
  return 0;
}
