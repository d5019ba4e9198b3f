//===- qtune-opt.cpp - qtune optimizer driver -------------------------------===//
//
// Parses, verifies, transforms and prints qtune IR; all upstream dialects and
// passes are registered beside the qtune dialect.
//
//===----------------------------------------------------------------------===//

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "qtune/Dialect/QTune/IR/QTuneDialect.h"
#include "qtune/Conversion/Passes.h"
#include "qtune/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::registerAllPasses();
  qtune::registerQTunePasses();
  qtune::registerQTuneConversionPasses();
  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::registerAllToLLVMIRTranslations(registry);
  registry.insert<qtune::QTuneDialect>();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "qtune optimizer driver\n", registry));
}
