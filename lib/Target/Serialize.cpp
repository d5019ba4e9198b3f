//===- Serialize.cpp - GPU modules to PTX and cubin -------------------------===//

#include "qtune/Target/Serialize.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Pass/PassManager.h"

using namespace mlir;

namespace qtune {

FailureOr<std::string> serializeKernels(ModuleOp module, StringRef format,
                                        StringRef toolkitPath) {
  OwningOpRef<ModuleOp> clone(module.clone());
  PassManager pm(module.getContext());
  GpuModuleToBinaryPassOptions options;
  options.compilationTarget = format.str();
  options.toolkitPath = toolkitPath.str();
  pm.addPass(createGpuModuleToBinaryPass(options));
  if (failed(pm.run(*clone)))
    return module.emitError() << "serializing the kernels to '" << format
                              << "' failed"
                              << (format == "bin"
                                      ? " (is ptxas from the CUDA toolkit "
                                        "installed? see --cuda-path)"
                                      : "");
  for (auto binary : clone->getOps<gpu::BinaryOp>()) {
    auto objects = binary.getObjects();
    if (objects.size() != 1)
      break;
    auto object = cast<gpu::ObjectAttr>(objects[0]);
    return object.getObject().getValue().str();
  }
  return module.emitError("serialization produced no gpu.binary with one "
                          "object");
}

} // namespace qtune
