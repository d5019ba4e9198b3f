//===- qtune-interp.cpp - run qtune IR on the CPU reference interpreter ----===//
//
//   qtune-interp model.mlir --entry NAME --inputs in.safetensors
//                [--params params.safetensors] --out out.safetensors [--print]
//   qtune-interp model.mlir --entry layer_train_step --inputs in.safetensors
//                --steps N --lr X --losses losses.json --out trained.safetensors
//
// Parses and verifies the module, reads one tensor per argument of the entry
// function (named by its `qtune.name` attribute, else argN), evaluates it in
// float64 and writes the results (named by `qtune.name`, else outN) as float32.
//
//===----------------------------------------------------------------------===//

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "qtune/Dialect/QTune/IR/FormatUtils.h"
#include "qtune/Dialect/QTune/IR/QTuneAttrs.h"
#include "qtune/Dialect/QTune/IR/QTuneDialect.h"
#include "qtune/Reference/Interpreter.h"
#include "qtune/Reference/TensorFiles.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <random>

using namespace mlir;
namespace cl = llvm::cl;

static cl::opt<std::string> inputFile(cl::Positional, cl::desc("<model.mlir>"),
                                      cl::Required);
static cl::opt<std::string>
    entryName("entry", cl::desc("Function to run (default: the only one)"));
static cl::opt<std::string>
    inputsFile("inputs", cl::desc("safetensors file with one tensor per "
                                  "argument"));
static cl::opt<std::string> paramsFile(
    "params", cl::desc("safetensors file with parameters: arguments found "
                       "here are read from it, the others from --inputs"));
static cl::opt<uint64_t> randomSeed(
    "random-inputs",
    cl::desc("Instead of --inputs, fill arguments with deterministic "
             "pseudo-random values from this seed (floats uniform in [-1, 1), "
             "integer words uniform)"));
static cl::opt<std::string> dumpInputs(
    "dump-inputs",
    cl::desc("Write the arguments (e.g. those made by --random-inputs) to this "
             "safetensors file, each in its own element type"));
static cl::opt<std::string> outFile("out",
                                    cl::desc("safetensors file for the results"));
static cl::opt<bool> printResults("print",
                                  cl::desc("Print the results on stdout"));
static cl::opt<unsigned> trainSteps(
    "steps",
    cl::desc("Run a train-step entry this many times: its arguments `lr` and "
             "`step` are set each time (step from 1), every result marked "
             "qtune.updates replaces the argument it names, and absent "
             "optimizer states start at zero"),
    cl::init(0));
static cl::opt<double> learningRate("lr", cl::desc("Learning rate for --steps"),
                                    cl::init(0));
static cl::opt<std::string> lossesFile(
    "losses", cl::desc("With --steps: write the loss of every step to this "
                       "file as a JSON array"));

static int fail(const Twine &message) {
  llvm::WithColor::error(llvm::errs(), "qtune-interp") << message << "\n";
  return 1;
}

/// Prints a tensor: all values when small, else its statistics.
static void printTensor(llvm::raw_ostream &os, StringRef name, Type type,
                        const qtune::HostTensor &t) {
  os << name << ": " << type;
  auto fmt = [&](double v) { os << llvm::format("%.6g", v); };
  if (t.data.size() <= 64) {
    os << " = ";
    std::function<void(size_t, size_t &)> rec = [&](size_t dim, size_t &i) {
      if (dim == t.shape.size()) {
        fmt(t.data[i++]);
        return;
      }
      os << "[";
      for (int64_t j = 0; j < t.shape[dim]; ++j) {
        if (j)
          os << ", ";
        rec(dim + 1, i);
      }
      os << "]";
    };
    size_t i = 0;
    rec(0, i);
    os << "\n";
    return;
  }
  double mn = INFINITY, mx = -INFINITY, sum = 0, sq = 0;
  for (double v : t.data) {
    mn = std::min(mn, v);
    mx = std::max(mx, v);
    sum += v;
    sq += v * v;
  }
  os << "  min ";
  fmt(mn);
  os << "  max ";
  fmt(mx);
  os << "  mean ";
  fmt(sum / t.data.size());
  os << "  rms ";
  fmt(std::sqrt(sq / t.data.size()));
  os << "  first [";
  for (size_t i = 0; i < 4; ++i) {
    if (i)
      os << ", ";
    fmt(t.data[i]);
  }
  os << ", ...]\n";
}

int main(int argc, char **argv) {
  llvm::InitLLVM y(argc, argv);
  cl::ParseCommandLineOptions(
      argc, argv,
      "qtune reference interpreter: evaluates qtune IR on the CPU in float64\n");

  if (inputsFile.empty() == (randomSeed.getNumOccurrences() == 0))
    return fail("give exactly one of --inputs FILE and --random-inputs SEED");
  if (outFile.empty() && !printResults)
    return fail("nothing to do: give --out FILE and/or --print");

  DialectRegistry registry;
  registry.insert<qtune::QTuneDialect, func::FuncDialect, arith::ArithDialect,
                  tensor::TensorDialect>();
  MLIRContext context(registry);
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

  func::FuncOp func;
  SmallVector<StringRef> names;
  module->walk([&](func::FuncOp f) {
    names.push_back(f.getSymName());
    if (entryName.empty() ? true : f.getSymName() == entryName)
      func = f;
  });
  if (entryName.empty() && names.size() != 1)
    return fail("'" + inputFile + "' has " + Twine(names.size()) +
                " functions (" + llvm::join(names, ", ") +
                "): choose one with --entry");
  if (!func)
    return fail("no function '" + entryName + "' in '" + inputFile +
                "' (it has: " + llvm::join(names, ", ") + ")");

  std::vector<std::pair<std::string, RankedTensorType>> wanted;
  for (auto [i, type] : llvm::enumerate(func.getArgumentTypes())) {
    auto rt = dyn_cast<RankedTensorType>(type);
    if (!rt || !rt.hasStaticShape())
      return fail("argument #" + Twine(i) + " of '" + func.getSymName() +
                  "' is not a statically shaped tensor");
    wanted.push_back({qtune::ref::argumentName(func, i), rt});
  }

  // In training mode lr, step and optimizer states need not be in the file.
  auto supplied = [&](StringRef name) {
    if (!trainSteps)
      return false;
    if (name == "lr" || name == "step")
      return true;
    for (unsigned i = 0; i < func.getNumArguments(); ++i)
      if (qtune::ref::argumentName(func, i) == name)
        if (auto role = func.getArgAttrOfType<qtune::RoleAttr>(
                i, qtune::QTuneDialect::kRoleAttrName))
          return role.getValue() == qtune::Role::optimizer_state;
    return false;
  };
  std::vector<qtune::HostTensor> args;
  if (!inputsFile.empty()) {
    // Arguments the params file holds come from it, the rest from --inputs.
    std::vector<bool> fromParams(wanted.size(), false);
    if (!paramsFile.empty()) {
      std::unique_ptr<qtune::st::File> params =
          qtune::st::File::open(paramsFile, error);
      if (!params)
        return fail(error);
      for (auto [i, w] : llvm::enumerate(wanted))
        fromParams[i] = params->find(w.first) != nullptr;
    }
    std::vector<std::pair<std::string, RankedTensorType>> split[2];
    for (auto [i, w] : llvm::enumerate(wanted))
      split[fromParams[i]].push_back(w);
    std::vector<qtune::HostTensor> read[2];
    if (failed(qtune::ref::readTensors(inputsFile, split[0], read[0], error,
                                       supplied)) ||
        (!split[1].empty() &&
         failed(qtune::ref::readTensors(paramsFile, split[1], read[1], error))))
      return fail(error);
    size_t next[2] = {0, 0};
    for (size_t i = 0; i < wanted.size(); ++i)
      args.push_back(std::move(read[fromParams[i]][next[fromParams[i]]++]));
  } else {
    std::mt19937_64 rng(randomSeed);
    for (auto &[name, type] : wanted) {
      std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
      qtune::HostTensor t(shape);
      Type elt = type.getElementType();
      for (double &v : t.data)
        v = isa<FloatType>(elt)
                ? qtune::format::roundTo(
                      std::uniform_real_distribution<double>(-1, 1)(rng), elt)
                : double(uint32_t(rng()) >>
                         (32 - std::min(32u, elt.getIntOrFloatBitWidth())));
      args.push_back(std::move(t));
    }
  }

  if (!dumpInputs.empty()) {
    std::vector<qtune::ref::NamedTensor> named;
    for (auto [i, t] : llvm::enumerate(args))
      named.push_back({wanted[i].first, wanted[i].second.getElementType(), t});
    if (failed(qtune::ref::writeTensors(dumpInputs, named, {},
                                        /*floatsAsF32=*/false, error)))
      return fail(error);
  }

  FailureOr<std::vector<qtune::HostTensor>> results;
  if (trainSteps) {
    if (!(learningRate >= 0) || !std::isfinite(learningRate))
      return fail("--lr must be a finite non-negative number");
    int lrArg = -1, stepArg = -1, lossResult = -1;
    for (unsigned i = 0; i < func.getNumArguments(); ++i) {
      std::string name = qtune::ref::argumentName(func, i);
      if (name == "lr")
        lrArg = i;
      else if (name == "step")
        stepArg = i;
    }
    SmallVector<std::pair<unsigned, unsigned>> updates; // result -> argument
    for (unsigned i = 0; i < func.getNumResults(); ++i) {
      if (qtune::ref::resultName(func, i) == "loss")
        lossResult = i;
      if (auto u = func.getResultAttrOfType<IntegerAttr>(
              i, qtune::QTuneDialect::kUpdatesAttrName))
        updates.push_back({i, unsigned(u.getInt())});
    }
    if (lrArg < 0 || lossResult < 0 || updates.empty())
      return fail("--steps needs a train-step entry (an `lr` argument, a "
                  "`loss` result and results marked qtune.updates); '" +
                  func.getSymName() + "' is not one");
    std::vector<double> losses;
    for (unsigned step = 1; step <= trainSteps; ++step) {
      args[lrArg].data.assign(1, learningRate);
      if (stepArg >= 0)
        args[stepArg].data.assign(1, double(step));
      results = qtune::ref::run(func, args);
      if (failed(results))
        return fail("evaluation of '" + func.getSymName() + "' failed at step " +
                    Twine(step));
      double loss = (*results)[lossResult].data[0];
      if (!std::isfinite(loss))
        return fail("the loss is not finite at step " + Twine(step));
      losses.push_back(loss);
      for (auto [r, a] : updates)
        args[a] = (*results)[r];
    }
    if (!lossesFile.empty()) {
      std::string text = "[";
      for (size_t i = 0; i < losses.size(); ++i)
        text += (i ? ", " : "") + llvm::formatv("{0:e9}", losses[i]).str();
      auto out = openOutputFile(lossesFile, &error);
      if (!out)
        return fail(error);
      out->os() << text << "]\n";
      out->keep();
    }
    llvm::errs() << llvm::format("qtune-interp: %u steps, loss %.6g -> %.6g\n",
                                 unsigned(trainSteps), losses.front(),
                                 losses.back());
  } else {
    results = qtune::ref::run(func, args);
  }
  if (failed(results))
    return fail("evaluation of '" + func.getSymName() + "' failed");

  std::vector<qtune::ref::NamedTensor> outputs;
  for (auto [i, t] : llvm::enumerate(*results))
    outputs.push_back({qtune::ref::resultName(func, i),
                       getElementTypeOrSelf(func.getResultTypes()[i]), t});
  if (printResults)
    for (auto [i, o] : llvm::enumerate(outputs))
      printTensor(llvm::outs(), o.name, func.getResultTypes()[i], o.value);
  if (!outFile.empty() &&
      failed(qtune::ref::writeTensors(outFile, outputs,
                                      {{"entry", func.getSymName().str()}},
                                      /*floatsAsF32=*/true, error)))
    return fail(error);
  return 0;
}
