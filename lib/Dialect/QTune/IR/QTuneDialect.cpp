//===- QTuneDialect.cpp - qtune dialect ------------------------------------===//

#include "qtune/Dialect/QTune/IR/QTuneDialect.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "qtune/Dialect/QTune/IR/QTuneOps.h"

#include "mlir/IR/BuiltinOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/Interfaces/FunctionInterfaces.h"

using namespace mlir;
using namespace qtune;

#include "qtune/Dialect/QTune/IR/QTuneOpsDialect.cpp.inc"

void QTuneDialect::initialize() {
  registerAttributes();
  registerTypes();
  addOperations<
#define GET_OP_LIST
#include "qtune/Dialect/QTune/IR/QTuneOps.cpp.inc"
      >();
}

/// `qtune.role` must be a #qtune.role and `qtune.name` a string.
static LogicalResult verifyQTuneAttr(Operation *op, NamedAttribute attr,
                                     StringRef where) {
  if (attr.getName() == QTuneDialect::kRoleAttrName) {
    if (!isa<RoleAttr>(attr.getValue()))
      return op->emitError() << "'" << QTuneDialect::kRoleAttrName << "' on "
                             << where
                             << " must be #qtune.role<input|frozen|trainable|"
                                "optimizer_state>, got "
                             << attr.getValue();
    return success();
  }
  if (attr.getName() == QTuneDialect::kNameAttrName) {
    if (!isa<StringAttr>(attr.getValue()))
      return op->emitError() << "'" << QTuneDialect::kNameAttrName << "' on "
                             << where << " must be a string, got "
                             << attr.getValue();
    return success();
  }
  return op->emitError() << "unknown qtune attribute '" << attr.getName().getValue()
                         << "' on " << where;
}

LogicalResult QTuneDialect::verifyRegionArgAttribute(Operation *op,
                                                     unsigned regionIndex,
                                                     unsigned argIndex,
                                                     NamedAttribute attr) {
  return verifyQTuneAttr(op, attr, "argument #" + std::to_string(argIndex));
}

LogicalResult QTuneDialect::verifyRegionResultAttribute(Operation *op,
                                                        unsigned regionIndex,
                                                        unsigned resultIndex,
                                                        NamedAttribute attr) {
  if (attr.getName() == kRoleAttrName)
    return op->emitError() << "'" << kRoleAttrName
                           << "' applies to arguments, not to result #"
                           << resultIndex;
  if (attr.getName() == kUpdatesAttrName) {
    auto index = dyn_cast<IntegerAttr>(attr.getValue());
    auto func = dyn_cast<FunctionOpInterface>(op);
    if (!index || !func || index.getInt() < 0 ||
        index.getInt() >= (int64_t)func.getNumArguments())
      return op->emitError() << "'" << kUpdatesAttrName << "' on result #"
                             << resultIndex
                             << " must be the index of an argument";
    if (func.getArgumentTypes()[index.getInt()] !=
        func.getResultTypes()[resultIndex])
      return op->emitError() << "result #" << resultIndex
                             << " updates argument #" << index.getInt()
                             << " in place but their types differ";
    return success();
  }
  return verifyQTuneAttr(op, attr, "result #" + std::to_string(resultIndex));
}

LogicalResult QTuneDialect::verifyOperationAttribute(Operation *op,
                                                     NamedAttribute attr) {
  if (attr.getName() == kScheduleAttrName) {
    auto schedule = dyn_cast<DenseI64ArrayAttr>(attr.getValue());
    if (!isa<LinearOp, FusedLinearOp>(op))
      return op->emitError() << "'" << kScheduleAttrName
                             << "' applies to qtune.linear and "
                                "qtune.fused_linear only";
    if (!schedule || schedule.size() != 5 ||
        llvm::any_of(schedule.asArrayRef(), [](int64_t v) { return v <= 0; }))
      return op->emitError() << "'" << kScheduleAttrName
                             << "' must be array<i64: tileM, tileN, tileK, "
                                "warpsM, warpsN> of positive values, got "
                             << attr.getValue();
    return success();
  }
  if (attr.getName() == kPeftAttrName) {
    auto dict = dyn_cast<DictionaryAttr>(attr.getValue());
    auto fail = [&](llvm::StringRef what) {
      return op->emitError() << "'" << kPeftAttrName << "' " << what;
    };
    if (!isa<ModuleOp>(op))
      return fail("applies to the module only");
    if (!dict)
      return fail("must be a dictionary");
    auto r = dict.getAs<IntegerAttr>("r");
    if (!r || r.getInt() <= 0)
      return fail("needs a positive integer 'r'");
    if (!dict.getAs<FloatAttr>("lora_alpha") ||
        !dict.getAs<FloatAttr>("lora_dropout"))
      return fail("needs float 'lora_alpha' and 'lora_dropout'");
    auto targets = dict.getAs<ArrayAttr>("target_modules");
    if (!targets || !llvm::all_of(targets, llvm::IsaPred<StringAttr>))
      return fail("needs 'target_modules', an array of strings");
    if (!dict.getAs<StringAttr>("base_model_name_or_path"))
      return fail("needs a string 'base_model_name_or_path'");
    return success();
  }
  if (attr.getName() == kKernelFamilyAttrName) {
    auto family = dyn_cast<StringAttr>(attr.getValue());
    if (!family || family.getValue().empty())
      return op->emitError() << "'" << kKernelFamilyAttrName
                             << "' must be a non-empty string";
    return success();
  }
  if (attr.getName() == kKernelFamilyAttrName) {
    if (!isa<gpu::LaunchFuncOp>(op))
      return op->emitError() << "'" << kKernelFamilyAttrName
                             << "' applies to gpu.launch_func only";
    auto family = dyn_cast<StringAttr>(attr.getValue());
    if (!family || family.getValue().empty())
      return op->emitError() << "'" << kKernelFamilyAttrName
                             << "' must be a non-empty string";
    return success();
  }
  return op->emitError() << "unknown qtune attribute '" << attr.getName().getValue()
                         << "' on an operation";
}

std::optional<Role> qtune::getArgumentRole(Value value) {
  auto arg = dyn_cast<BlockArgument>(value);
  if (!arg)
    return std::nullopt;
  auto func = dyn_cast_or_null<FunctionOpInterface>(
      arg.getOwner()->getParentOp());
  if (!func || arg.getOwner() != &func.getFunctionBody().front())
    return std::nullopt;
  if (auto role = func.getArgAttrOfType<RoleAttr>(arg.getArgNumber(),
                                                  QTuneDialect::kRoleAttrName))
    return role.getValue();
  return std::nullopt;
}
