//===- qtune-compile.cpp - qtune IR to a .qtb bundle -----------------------===//
//
//   qtune-compile model.mlir -o model.qtb [--target sm_90a|sm_80]
//                 [--emit bundle|ptx|mlir] [--no-cubin] [--cuda-path DIR]
//                 [--mlir-print-ir-after-all] ...
//
// Pipeline: qtune-fuse → qtune-lower-to-gpu → NVVM lowering of the kernels →
// gpu-module-to-binary (PTX, and cubin through ptxas) → bundle writer. Every
// public function of the module becomes an entry point of the same name.
//
//===----------------------------------------------------------------------===//

#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "qtune/Conversion/Passes.h"
#include "qtune/Dialect/QTune/IR/QTuneDialect.h"
#include "qtune/Target/Bundle.h"
#include "qtune/Target/Serialize.h"
#include "qtune/Transforms/Passes.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"

#include <chrono>

using namespace mlir;
namespace cl = llvm::cl;

static cl::opt<std::string> inputFile(cl::Positional, cl::desc("<model.mlir>"),
                                      cl::Required);
static cl::opt<std::string> outputFile("o", cl::desc("Output file"),
                                       cl::value_desc("file"), cl::init("-"));
static cl::opt<std::string> target("target",
                                   cl::desc("GPU architecture (sm_80, sm_90a)"),
                                   cl::init("sm_90a"));
enum class Emit { Bundle, Ptx, Mlir };
static cl::opt<Emit> emit(
    "emit", cl::desc("What to write"), cl::init(Emit::Bundle),
    cl::values(clEnumValN(Emit::Bundle, "bundle", "a .qtb bundle (default)"),
               clEnumValN(Emit::Ptx, "ptx", "the kernels' PTX"),
               clEnumValN(Emit::Mlir, "mlir",
                          "the lowered module (host plan and NVVM kernels)")));
static cl::opt<bool> noCubin("no-cubin",
                             cl::desc("Keep PTX only (the driver JIT-compiles "
                                      "it); no ptxas needed"));
static cl::opt<std::string> cudaPath(
    "cuda-path", cl::desc("CUDA toolkit holding bin/ptxas (default: "
                          "$CUDA_HOME, else /usr/local/cuda, else PATH)"));
static cl::opt<int64_t> tileM("tile-m",
                              cl::desc("GEMM block tile rows (0: by M)"),
                              cl::init(0));
static cl::opt<int64_t> tileN("tile-n",
                              cl::desc("GEMM block tile columns (0: by M)"),
                              cl::init(0));
static cl::opt<int64_t> tileK("tile-k", cl::desc("GEMM K step (0: by M)"),
                              cl::init(0));
static cl::opt<int64_t> warpsM("warps-m",
                               cl::desc("Warps along M per block (0: by M)"),
                               cl::init(0));
static cl::opt<int64_t> logitsChunkBytes(
    "logits-chunk-bytes",
    cl::desc("Largest f32 logits buffer of an lm head feeding a cross entropy; "
             "larger ones are computed a chunk of rows at a time"),
    cl::init(64 << 20));
static cl::opt<int64_t> warpsN("warps-n",
                               cl::desc("Warps along N per block (0: by M)"),
                               cl::init(0));
static cl::opt<std::string> mma(
    "mma",
    cl::desc("Tensor-core instructions of the GEMMs: auto (wgmma for "
             "training-sized M on sm_90a, else mma.sync) or sync"),
    cl::init("auto"));
static cl::opt<bool> quiet("quiet", cl::desc("No summary on stderr"));
static cl::opt<bool> train(
    "train",
    cl::desc("Also derive the training entries: qtune-autodiff makes "
             "<fn>_grad from every function returning a scalar loss, and "
             "qtune-optimizer makes <fn>_train_step from it"));
static cl::opt<std::string> optimizerOptions(
    "optimizer-options",
    cl::desc("Options of qtune-optimizer with --train, e.g. "
             "\"optimizer=lion momentum=int8 block=256 max-grad-norm=1.0\""));

static int fail(const Twine &message) {
  llvm::WithColor::error(llvm::errs(), "qtune-compile") << message << "\n";
  return 1;
}

static std::string defaultCudaPath() {
  if (!cudaPath.empty())
    return cudaPath;
  if (const char *home = std::getenv("CUDA_HOME"))
    return home;
  if (llvm::sys::fs::exists("/usr/local/cuda/bin/ptxas"))
    return "/usr/local/cuda";
  return "";
}

int main(int argc, char **argv) {
  llvm::InitLLVM y(argc, argv);
  registerAllPasses();
  qtune::registerQTunePasses();
  registerPassManagerCLOptions();
  registerMLIRContextCLOptions();
  cl::ParseCommandLineOptions(argc, argv,
                              "qtune compiler: qtune IR to a GPU bundle\n");
  auto start = std::chrono::steady_clock::now();

  DialectRegistry registry;
  registerAllDialects(registry);
  registerAllExtensions(registry);
  registerAllToLLVMIRTranslations(registry);
  registry.insert<qtune::QTuneDialect>();
  MLIRContext context(registry);
  context.loadAllAvailableDialects();

  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler handler(sourceMgr, &context);
  std::string error;
  auto buffer = openInputFile(inputFile, &error);
  if (!buffer)
    return fail(error);
  sourceMgr.AddNewSourceBuffer(std::move(buffer), llvm::SMLoc());
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &context);
  if (!module)
    return fail("could not parse or verify '" + inputFile + "'");

  PassManager pm(&context);
  if (failed(applyPassManagerCLOptions(pm)))
    return fail("bad pass manager options");
  if (!optimizerOptions.empty() && !train)
    return fail("--optimizer-options needs --train");
  if (train &&
      failed(parsePassPipeline("qtune-autodiff,qtune-optimizer{" +
                                   optimizerOptions + "}",
                               pm)))
    return fail("bad --optimizer-options '" + optimizerOptions + "'");
  pm.addPass(qtune::createQTuneFuse());
  qtune::QTuneLowerToGPUOptions lowerOptions;
  lowerOptions.chip = target;
  lowerOptions.tileM = tileM;
  lowerOptions.tileN = tileN;
  lowerOptions.tileK = tileK;
  lowerOptions.warpsM = warpsM;
  lowerOptions.warpsN = warpsN;
  lowerOptions.mma = mma;
  lowerOptions.logitsChunkBytes = logitsChunkBytes;
  pm.addPass(qtune::createQTuneLowerToGPU(lowerOptions));
  if (failed(parsePassPipeline("gpu.module(convert-nvgpu-to-nvvm,"
                               "convert-scf-to-cf,convert-gpu-to-nvvm,"
                               "convert-nvvm-to-llvm,"
                               "canonicalize,cse,reconcile-unrealized-casts)",
                               pm)))
    return fail("internal error: bad kernel lowering pipeline");
  if (failed(pm.run(*module)))
    return fail("compilation of '" + inputFile + "' failed");

  // Text outputs (the bundle is written atomically on its own).
  auto writeText = [&](llvm::function_ref<void(llvm::raw_ostream &)> print) {
    auto out = openOutputFile(outputFile, &error);
    if (!out)
      return fail(error);
    print(out->os());
    out->keep();
    return 0;
  };
  if (emit == Emit::Mlir)
    return writeText([&](llvm::raw_ostream &os) { module->print(os); });

  FailureOr<std::string> ptx = qtune::serializeKernels(*module, "isa", "");
  if (failed(ptx))
    return fail("PTX generation failed");
  if (emit == Emit::Ptx)
    return writeText([&](llvm::raw_ostream &os) { os << *ptx; });
  std::string cubin;
  if (!noCubin) {
    FailureOr<std::string> bin =
        qtune::serializeKernels(*module, "bin", defaultCudaPath());
    if (failed(bin))
      return fail("cubin generation failed (ptxas is needed; give "
                  "--cuda-path, or --no-cubin to keep PTX only)");
    cubin = std::move(*bin);
  }

  qtune::rt::BundleWriter writer;
  writer.spec.target = target;
  int ptxBlob = writer.addBlob(*ptx);
  int cubinBlob = noCubin ? -1 : writer.addBlob(cubin);
  if (failed(qtune::buildBundle(*module, ptxBlob, cubinBlob, writer)))
    return fail("could not build the bundle's launch plan");
  if (outputFile == "-")
    return fail("a bundle is binary: give -o FILE");
  if (!writer.write(outputFile, error))
    return fail(error);

  if (!quiet) {
    double seconds = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - start)
                         .count();
    size_t launches = 0;
    for (auto &[name, entry] : writer.spec.entries)
      launches += entry.launches.size();
    llvm::errs() << llvm::format(
        "qtune-compile: %s: %zu entries, %zu kernels, %zu launches, arena "
        "%.1f MiB, PTX %zu B, cubin %zu B, %.1f s\n",
        outputFile.c_str(), writer.spec.entries.size(),
        writer.spec.kernels.size(), launches,
        writer.spec.arenaBytes / 1048576.0, ptx->size(), cubin.size(), seconds);
  }
  return 0;
}
