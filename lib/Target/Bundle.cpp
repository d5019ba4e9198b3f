//===- Bundle.cpp - compiled modules to .qtb bundles ------------------------===//

#include "qtune/Target/Bundle.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/Matchers.h"
#include "qtune/Dialect/QTune/IR/QTuneAttrs.h"
#include "qtune/Dialect/QTune/IR/QTuneDialect.h"
#include "qtune/Dialect/QTune/IR/QTuneOps.h"

#include <algorithm>
#include <map>

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

/// The memory plan. Function arguments (parameters, optimizer states,
/// inputs) persist: one buffer per name, shared by every entry that takes it,
/// laid out first. Each entry's allocations are temporaries, live from the
/// first to the last launch that touches them (outputs: to the entry's end);
/// they are packed into one scratch region by their live ranges, and since
/// entries never run at the same time, every entry reuses the same region.
class MemoryPlan {
public:
  /// A persistent buffer: the existing one with this name, dtype and shape,
  /// or a new one.
  int persistent(rt::BundleWriter &w, rt::Buffer buf) {
    std::string key = buf.name + "|" + std::string(st::dtypeName(buf.dtype)) +
                      "|" + st::shapeText(buf.shape);
    auto [it, inserted] = shared.try_emplace(key, -1);
    if (!inserted) {
      // One buffer, several views: keep the role that asks the most of the
      // runtime (trainable over frozen over input).
      rt::Buffer &old = w.spec.buffers[it->second];
      if (rank(buf.role) > rank(old.role))
        old.role = buf.role;
      return it->second;
    }
    it->second = w.addBuffer(buf);
    persistentIds.push_back(it->second);
    return it->second;
  }
  /// A temporary of entry `entry`; its live range is set with touch().
  int temporary(rt::BundleWriter &w, rt::Buffer buf, int entry) {
    int id = w.addBuffer(buf);
    temps.push_back({id, entry, INT64_MAX, -1});
    tempIndex[id] = temps.size() - 1;
    return id;
  }
  /// Buffer `id` is used at step `t` of its entry (launch index).
  void touch(int id, int64_t t) {
    auto it = tempIndex.find(id);
    if (it == tempIndex.end())
      return;
    Temp &tmp = temps[it->second];
    tmp.first = std::min(tmp.first, t);
    tmp.last = std::max(tmp.last, t);
  }
  /// Assigns every offset and the arena size.
  void layout(rt::BundleWriter &w);

private:
  struct Temp {
    int id, entry;
    int64_t first, last;
  };
  static int rank(rt::BufferRole r) {
    switch (r) {
    case rt::BufferRole::Trainable: return 3;
    case rt::BufferRole::OptimizerState: return 2;
    case rt::BufferRole::Frozen: return 1;
    default: return 0;
    }
  }
  llvm::StringMap<int> shared;
  std::vector<int> persistentIds;
  std::vector<Temp> temps;
  DenseMap<int, size_t> tempIndex;
};

uint64_t aligned(uint64_t bytes) {
  return (bytes + rt::kBufferAlignment - 1) / rt::kBufferAlignment *
         rt::kBufferAlignment;
}

void MemoryPlan::layout(rt::BundleWriter &w) {
  uint64_t offset = 0;
  for (int id : persistentIds) {
    w.spec.buffers[id].offset = offset;
    offset += aligned(w.spec.buffers[id].bytes);
  }
  uint64_t scratch = offset, peak = 0;
  // Per entry, largest first: the lowest offset whose range is free of every
  // placed temporary with an overlapping live range.
  std::map<int, std::vector<Temp *>> byEntry;
  for (Temp &t : temps) {
    if (t.last < 0) // never touched by a launch: live throughout
      t.first = 0, t.last = INT64_MAX;
    byEntry[t.entry].push_back(&t);
  }
  for (auto &[entry, list] : byEntry) {
    std::stable_sort(list.begin(), list.end(), [&](Temp *a, Temp *b) {
      return w.spec.buffers[a->id].bytes > w.spec.buffers[b->id].bytes;
    });
    std::vector<std::pair<Temp *, uint64_t>> placed;
    for (Temp *t : list) {
      uint64_t size = aligned(w.spec.buffers[t->id].bytes);
      std::vector<std::pair<uint64_t, uint64_t>> busy;
      for (auto &[other, at] : placed)
        if (other->first <= t->last && t->first <= other->last)
          busy.push_back({at, at + aligned(w.spec.buffers[other->id].bytes)});
      std::sort(busy.begin(), busy.end());
      uint64_t at = 0;
      for (auto [begin, end] : busy) {
        if (at + size <= begin)
          break;
        at = std::max(at, end);
      }
      placed.push_back({t, at});
      w.spec.buffers[t->id].offset = scratch + at;
      peak = std::max(peak, at + size);
    }
  }
  w.spec.arenaBytes = scratch + peak;
}

/// Lays out the buffers of one host function and translates its launches.
class EntryBuilder {
public:
  EntryBuilder(rt::BundleWriter &w, int ptxBlob, int cubinBlob,
               llvm::StringMap<int> &kernels, MemoryPlan &plan, int index)
      : w(w), ptxBlob(ptxBlob), cubinBlob(cubinBlob), kernels(kernels),
        plan(plan), index(index) {}

  LogicalResult build(func::FuncOp func);

private:
  FailureOr<int> addBuffer(Operation *op, Value v, std::string name,
                           rt::BufferRole role);
  /// The buffer a (possibly reshaped, cast or windowed) memref value views;
  /// `byteOffset` and `numel` describe a window (qtune.buffer_view).
  FailureOr<int> bufferOf(Operation *user, Value v, int64_t *byteOffset = nullptr,
                          int64_t *numel = nullptr);
  /// The buffer of a launch operand that is a window of one (a flat view or
  /// a tensor map's source), used by the launch about to join `entry`: its
  /// byte offset, which must be 16-byte aligned, and its element count.
  FailureOr<int> windowOf(gpu::LaunchFuncOp launch, Value v,
                          const rt::Entry &entry, int64_t &byteOffset,
                          int64_t *numel = nullptr);
  FailureOr<int64_t> constantOf(Operation *user, Value v);
  LogicalResult addLaunch(gpu::LaunchFuncOp launch, rt::Entry &entry);

  rt::BundleWriter &w;
  int ptxBlob, cubinBlob;
  llvm::StringMap<int> &kernels;
  MemoryPlan &plan;
  int index; ///< of the entry, for the memory plan
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
  buf.role = role;
  bool temporary =
      role == rt::BufferRole::Output || role == rt::BufferRole::Temporary;
  int id = temporary ? plan.temporary(w, buf, index) : plan.persistent(w, buf);
  buffers[v] = id;
  return id;
}

FailureOr<int> EntryBuilder::bufferOf(Operation *user, Value v,
                                      int64_t *byteOffset, int64_t *numel) {
  int64_t elements = 0, window = -1;
  while (true) {
    auto it = buffers.find(v);
    if (it != buffers.end()) {
      const rt::Buffer &b = w.spec.buffers[it->second];
      int64_t size = int64_t(st::dtypeSize(b.dtype));
      if (byteOffset)
        *byteOffset = elements * size;
      if (numel)
        *numel = window >= 0 ? window : int64_t(b.bytes) / size;
      return it->second;
    }
    Operation *def = v.getDefiningOp();
    if (auto cast = dyn_cast_or_null<memref::CastOp>(def))
      v = cast.getSource();
    else if (auto collapse = dyn_cast_or_null<memref::CollapseShapeOp>(def))
      v = collapse.getSrc();
    else if (auto expand = dyn_cast_or_null<memref::ExpandShapeOp>(def))
      v = expand.getSrc();
    else if (auto view = dyn_cast_or_null<BufferViewOp>(def)) {
      if (window < 0)
        window = view.getSize();
      elements += view.getOffset();
      v = view.getSource();
    } else
      return user->emitError("bundle: kernel argument is not a view of a "
                             "function argument or allocation");
  }
}

FailureOr<int> EntryBuilder::windowOf(gpu::LaunchFuncOp launch, Value v,
                                      const rt::Entry &entry,
                                      int64_t &byteOffset, int64_t *numel) {
  FailureOr<int> buf = bufferOf(launch, v, &byteOffset, numel);
  if (failed(buf))
    return failure();
  plan.touch(*buf, int64_t(entry.launches.size()));
  if (byteOffset % 16 != 0)
    return launch.emitError() << "bundle: a window of a buffer must start "
                                 "16-byte aligned, got byte offset "
                              << byteOffset;
  return buf;
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
      int64_t offset = 0, numel = 0;
      FailureOr<int> buf = windowOf(launch, arg, entry, offset, &numel);
      if (failed(buf))
        return failure();
      l.args.push_back(rt::Arg::ptr(*buf, offset));
      l.args.push_back(rt::Arg::ptr(*buf, offset));
      l.args.push_back(rt::Arg::i64(0));
      l.args.push_back(rt::Arg::i64(numel));
      l.args.push_back(rt::Arg::i64(1));
      continue;
    }
    if (auto map = arg.getDefiningOp<TensorMapOp>()) {
      // A TMA tensor map over a window of a buffer: the runtime encodes it
      // and passes its device address.
      int64_t offset = 0;
      FailureOr<int> buf = windowOf(launch, map.getSource(), entry, offset);
      if (failed(buf))
        return failure();
      rt::TensorMapSpec spec;
      spec.rows = uint64_t(map.getRows());
      spec.cols = uint64_t(map.getCols());
      spec.rowBytes = spec.cols * 2;
      spec.boxRows = uint32_t(map.getBoxRows());
      spec.boxCols = uint32_t(map.getBoxCols());
      spec.swizzle = uint32_t(map.getSwizzle());
      l.args.push_back(rt::Arg::tensorMap(*buf, offset, spec));
      continue;
    }
    FailureOr<int64_t> v = constantOf(launch, arg);
    if (failed(v))
      return failure();
    l.args.push_back(rt::Arg::i64(*v));
  }
  if (auto family = launch->getAttrOfType<StringAttr>(
          QTuneDialect::kKernelFamilyAttrName))
    l.family = family.getValue().str();
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
            BufferViewOp, TensorMapOp, arith::ConstantOp, func::ReturnOp>(op))
      continue;
    return op.emitError() << "bundle: '" << op.getName()
                          << "' cannot run in a host launch plan";
  }
  int64_t end = int64_t(entry.launches.size());
  for (Value v : ret.getOperands()) {
    entry.outputs.push_back(buffers[v]);
    plan.touch(buffers[v], end); // read by the runtime after the last launch
  }
  return success();
}

} // namespace

LogicalResult buildBundle(ModuleOp module, int ptxBlob, int cubinBlob,
                          rt::BundleWriter &writer) {
  llvm::StringMap<int> kernels;
  MemoryPlan plan;
  int index = 0;
  for (auto func : module.getOps<func::FuncOp>()) {
    if (func.isExternal())
      continue;
    EntryBuilder builder(writer, ptxBlob, cubinBlob, kernels, plan, index++);
    if (failed(builder.build(func)))
      return failure();
  }
  plan.layout(writer);
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
