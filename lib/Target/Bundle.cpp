//===- Bundle.cpp - compiled modules to .qtb bundles ------------------------===//

#include "qtune/Target/Bundle.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/Matchers.h"
#include "qtune/Dialect/QTune/IR/QTuneAttrs.h"
#include "qtune/Dialect/QTune/IR/QTuneDialect.h"

using namespace mlir;
namespace rt = qtune::rt;

namespace qtune {

namespace {

FailureOr<st::DType> dtypeOf(Operation *op, Type element) {
  if (element.isBF16())
    return st::DType::BF16;
  if (element.isF16())
    return st::DType::F16;
  if (element.isF32())
    return st::DType::F32;
  if (element.isF64())
    return st::DType::F64;
  if (element.isInteger(32))
    return st::DType::I32;
  if (element.isInteger(64))
    return st::DType::I64;
  if (element.isInteger(8))
    return st::DType::I8;
  return op->emitError() << "bundle: no buffer dtype for element type "
                         << element;
}

rt::BufferRole roleOf(std::optional<Role> role) {
  switch (role.value_or(Role::input)) {
  case Role::input:
    return rt::BufferRole::Input;
  case Role::frozen:
    return rt::BufferRole::Frozen;
  case Role::trainable:
    return rt::BufferRole::Trainable;
  case Role::optimizer_state:
    return rt::BufferRole::OptimizerState;
  }
  return rt::BufferRole::Input;
}

/// Lays out the buffers of one host function and translates its launches.
class EntryBuilder {
public:
  EntryBuilder(rt::BundleWriter &w, int ptxBlob, int cubinBlob,
               llvm::StringMap<int> &kernels)
      : w(w), ptxBlob(ptxBlob), cubinBlob(cubinBlob), kernels(kernels) {}

  LogicalResult build(func::FuncOp func);

private:
  FailureOr<int> addBuffer(Operation *op, Value v, std::string name,
                           rt::BufferRole role);
  /// The buffer a (possibly reshaped or cast) memref value views.
  FailureOr<int> bufferOf(Operation *user, Value v);
  FailureOr<int64_t> constantOf(Operation *user, Value v);
  LogicalResult addLaunch(gpu::LaunchFuncOp launch, rt::Entry &entry);

  rt::BundleWriter &w;
  int ptxBlob, cubinBlob;
  llvm::StringMap<int> &kernels;
  DenseMap<Value, int> buffers;
};

FailureOr<int> EntryBuilder::addBuffer(Operation *op, Value v,
                                       std::string name, rt::BufferRole role) {
  auto type = dyn_cast<MemRefType>(v.getType());
  if (!type || !type.hasStaticShape() || !type.getLayout().isIdentity())
    return op->emitError() << "bundle: buffers must be statically shaped, "
                              "contiguous memrefs, got "
                           << v.getType();
  FailureOr<st::DType> dtype = dtypeOf(op, type.getElementType());
  if (failed(dtype))
    return failure();
  rt::Buffer buf;
  buf.name = std::move(name);
  buf.dtype = *dtype;
  buf.shape.assign(type.getShape().begin(), type.getShape().end());
  buf.bytes = uint64_t(type.getNumElements()) * st::dtypeSize(*dtype);
  buf.offset = w.spec.arenaBytes;
  buf.role = role;
  w.spec.arenaBytes += (buf.bytes + rt::kBufferAlignment - 1) /
                       rt::kBufferAlignment * rt::kBufferAlignment;
  int id = w.addBuffer(buf);
  buffers[v] = id;
  return id;
}

FailureOr<int> EntryBuilder::bufferOf(Operation *user, Value v) {
  while (true) {
    auto it = buffers.find(v);
    if (it != buffers.end())
      return it->second;
    Operation *def = v.getDefiningOp();
    if (auto cast = dyn_cast_or_null<memref::CastOp>(def))
      v = cast.getSource();
    else if (auto collapse = dyn_cast_or_null<memref::CollapseShapeOp>(def))
      v = collapse.getSrc();
    else if (auto expand = dyn_cast_or_null<memref::ExpandShapeOp>(def))
      v = expand.getSrc();
    else
      return user->emitError("bundle: kernel argument is not a view of a "
                             "function argument or allocation");
  }
}

FailureOr<int64_t> EntryBuilder::constantOf(Operation *user, Value v) {
  APInt value;
  if (!matchPattern(v, m_ConstantInt(&value)))
    return user->emitError("bundle: launch sizes and scalar arguments must "
                           "be constants (shapes are static per bundle)");
  return value.getSExtValue();
}

LogicalResult EntryBuilder::addLaunch(gpu::LaunchFuncOp launch,
                                      rt::Entry &entry) {
  std::string name = launch.getKernelName().str();
  rt::Launch l;
  std::array<Value, 3> grid{launch.getGridSizeX(), launch.getGridSizeY(),
                            launch.getGridSizeZ()};
  std::array<Value, 3> block{launch.getBlockSizeX(), launch.getBlockSizeY(),
                             launch.getBlockSizeZ()};
  for (int i = 0; i < 3; ++i) {
    FailureOr<int64_t> g = constantOf(launch, grid[i]);
    FailureOr<int64_t> b = constantOf(launch, block[i]);
    if (failed(g) || failed(b))
      return failure();
    l.grid[i] = uint32_t(*g);
    l.block[i] = uint32_t(*b);
  }
  if (Value shared = launch.getDynamicSharedMemorySize()) {
    FailureOr<int64_t> bytes = constantOf(launch, shared);
    if (failed(bytes))
      return failure();
    l.sharedBytes = uint32_t(*bytes);
  }
  auto [it, inserted] = kernels.try_emplace(name, -1);
  if (inserted)
    it->second = w.addKernel({name, ptxBlob, cubinBlob, l.block, l.sharedBytes});
  l.kernel = it->second;
  rt::Kernel &k = w.spec.kernels[l.kernel];
  k.sharedBytes = std::max(k.sharedBytes, l.sharedBytes);
  for (Value arg : launch.getKernelOperands()) {
    if (auto type = dyn_cast<MemRefType>(arg.getType())) {
      // A memref<?xT> kernel parameter is a descriptor: allocated and aligned
      // pointers, offset, size, stride.
      if (type.getRank() != 1)
        return launch.emitError("bundle: kernels take flat memref<?xT> "
                                "arguments");
      FailureOr<int> buf = bufferOf(launch, arg);
      if (failed(buf))
        return failure();
      const rt::Buffer &b = w.spec.buffers[*buf];
      int64_t numel = int64_t(b.bytes / st::dtypeSize(b.dtype));
      l.args.push_back(rt::Arg::ptr(*buf));
      l.args.push_back(rt::Arg::ptr(*buf));
      l.args.push_back(rt::Arg::i64(0));
      l.args.push_back(rt::Arg::i64(numel));
      l.args.push_back(rt::Arg::i64(1));
      continue;
    }
    FailureOr<int64_t> v = constantOf(launch, arg);
    if (failed(v))
      return failure();
    l.args.push_back(rt::Arg::i64(*v));
  }
  entry.launches.push_back(std::move(l));
  return success();
}

LogicalResult EntryBuilder::build(func::FuncOp func) {
  rt::Entry &entry = w.entry(func.getName().str());
  for (BlockArgument arg : func.getArguments()) {
    unsigned i = arg.getArgNumber();
    std::string name = "arg" + std::to_string(i);
    if (auto n = func.getArgAttrOfType<StringAttr>(i, QTuneDialect::kNameAttrName))
      name = n.str();
    std::optional<Role> role;
    if (auto r = func.getArgAttrOfType<RoleAttr>(i, QTuneDialect::kRoleAttrName))
      role = r.getValue();
    rt::BufferRole bufferRole = roleOf(role);
    FailureOr<int> id = addBuffer(func, arg, name, bufferRole);
    if (failed(id))
      return failure();
    (bufferRole == rt::BufferRole::Input ? entry.inputs : entry.params)
        .push_back(*id);
  }
  auto ret = cast<func::ReturnOp>(func.getBody().front().getTerminator());
  DenseMap<Value, std::string> resultNames;
  for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
    std::string name = "out" + std::to_string(i);
    if (auto n = func.getResultAttrOfType<StringAttr>(i, QTuneDialect::kNameAttrName))
      name = n.str();
    // A parameter or state updated in place is returned as its argument.
    if (auto arg = dyn_cast<BlockArgument>(v)) {
      auto updates =
          func.getResultAttrOfType<IntegerAttr>(i, QTuneDialect::kUpdatesAttrName);
      if (!updates || updates.getInt() != arg.getArgNumber())
        return ret.emitError()
               << "bundle: result #" << i << " returns argument #"
               << arg.getArgNumber() << " without '"
               << QTuneDialect::kUpdatesAttrName << " = "
               << arg.getArgNumber() << "'";
      continue;
    }
    if (!v.getDefiningOp<memref::AllocOp>() || resultNames.count(v))
      return ret.emitError() << "bundle: result #" << i
                             << " must be a distinct buffer the function "
                                "computes";
    resultNames[v] = name;
  }
  int temporaries = 0;
  for (Operation &op : func.getBody().front()) {
    if (auto alloc = dyn_cast<memref::AllocOp>(op)) {
      auto it = resultNames.find(alloc.getResult());
      bool isResult = it != resultNames.end();
      FailureOr<int> id = addBuffer(
          alloc, alloc.getResult(),
          isResult ? it->second : "tmp" + std::to_string(temporaries++),
          isResult ? rt::BufferRole::Output : rt::BufferRole::Temporary);
      if (failed(id))
        return failure();
      continue;
    }
    if (auto launch = dyn_cast<gpu::LaunchFuncOp>(op)) {
      if (failed(addLaunch(launch, entry)))
        return failure();
      continue;
    }
    if (isa<memref::CastOp, memref::CollapseShapeOp, memref::ExpandShapeOp,
            arith::ConstantOp, func::ReturnOp>(op))
      continue;
    return op.emitError() << "bundle: '" << op.getName()
                          << "' cannot run in a host launch plan";
  }
  for (Value v : ret.getOperands())
    entry.outputs.push_back(buffers[v]);
  return success();
}

} // namespace

LogicalResult buildBundle(ModuleOp module, int ptxBlob, int cubinBlob,
                          rt::BundleWriter &writer) {
  llvm::StringMap<int> kernels;
  for (auto func : module.getOps<func::FuncOp>()) {
    if (func.isExternal())
      continue;
    EntryBuilder builder(writer, ptxBlob, cubinBlob, kernels);
    if (failed(builder.build(func)))
      return failure();
  }
  if (writer.spec.entries.empty())
    return module.emitError("bundle: the module has no function to compile");
  // An imported LoRA model's adapter configuration, for PEFT-compatible
  // checkpoints (the dialect verified the attribute's fields).
  if (auto peft = module->getAttrOfType<DictionaryAttr>(QTuneDialect::kPeftAttrName)) {
    rt::PeftConfig c;
    c.r = peft.getAs<IntegerAttr>("r").getInt();
    c.loraAlpha = peft.getAs<FloatAttr>("lora_alpha").getValueAsDouble();
    c.loraDropout = peft.getAs<FloatAttr>("lora_dropout").getValueAsDouble();
    for (Attribute t : peft.getAs<ArrayAttr>("target_modules"))
      c.targetModules.push_back(cast<StringAttr>(t).str());
    c.baseModelNameOrPath =
        peft.getAs<StringAttr>("base_model_name_or_path").str();
    std::string error;
    if (!rt::validatePeftConfig(c, error))
      return module.emitError() << "bundle: '" << QTuneDialect::kPeftAttrName
                                << "': " << error;
    writer.spec.peft = std::move(c);
  }
  return success();
}

} // namespace qtune
