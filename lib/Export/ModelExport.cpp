//===- ModelExport.cpp - fine-tuned models out of qtune -------------------===//

#include "qtune/Export/ModelExport.h"
#include "qtune/Dialect/QTune/IR/FormatUtils.h"
#include "qtune/Dialect/QTune/IR/QTuneDialect.h"
#include "qtune/Dialect/QTune/IR/QTuneOps.h"
#include "qtune/Reference/TensorFiles.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringRef.h"

#include <algorithm>
#include <cmath>
#include <set>

using namespace mlir;

namespace qtune::exporter {

namespace {
std::string argName(func::FuncOp func, unsigned i) {
  if (auto n = func.getArgAttrOfType<StringAttr>(i, QTuneDialect::kNameAttrName))
    return n.str();
  return "";
}

bool isInput(func::FuncOp func, unsigned i) {
  auto r = func.getArgAttrOfType<RoleAttr>(i, QTuneDialect::kRoleAttrName);
  return r && r.getValue() == Role::input;
}

/// The name of a value that is a function argument, else "".
std::string nameOf(func::FuncOp func, Value v) {
  auto arg = dyn_cast<BlockArgument>(v);
  if (!arg || arg.getOwner() != &func.getBody().front())
    return "";
  return argName(func, arg.getArgNumber());
}

/// Σ s·B·A (n × k) over a layer's adapters.
std::vector<double> adapterTerm(const LinearLayer &layer,
                                const std::map<std::string, HostTensor> &params) {
  int64_t n = layer.n, k = layer.k;
  std::vector<double> term(n * k, 0.0);
  for (const LinearLayer::Adapter &adapter : layer.adapters) {
    const HostTensor &a = params.at(adapter.a);
    const HostTensor &b = params.at(adapter.b);
    int64_t r = a.shape[0];
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < r; ++j) {
        double bij = adapter.scale * b.data[i * r + j];
        if (bij == 0)
          continue;
        const double *arow = &a.data[j * k];
        double *out = &term[i * k];
        for (int64_t c = 0; c < k; ++c)
          out[c] += bij * arow[c];
      }
  }
  return term;
}

std::vector<double> dequantized(const LinearLayer &layer,
                                const std::map<std::string, HostTensor> &params) {
  if (!layer.format)
    return params.at(layer.components[0]).data;
  SmallVector<HostTensor> comps;
  for (const std::string &c : layer.components)
    comps.push_back(params.at(c));
  std::vector<double> w(layer.n * layer.k);
  layer.format.dequantize(layer.n, layer.k, comps, w);
  return w;
}
} // namespace

std::optional<ModelLayout> readLayout(ModuleOp module, StringRef entry,
                                      std::string &error) {
  auto func = module.lookupSymbol<func::FuncOp>(entry);
  if (!func) {
    error = "the graph has no function '" + entry.str() + "'";
    return std::nullopt;
  }
  ModelLayout layout;
  for (unsigned i = 0; i < func.getNumArguments(); ++i) {
    if (isInput(func, i))
      continue;
    std::string name = argName(func, i);
    auto type = dyn_cast<RankedTensorType>(func.getArgument(i).getType());
    if (name.empty() || !type) {
      error = "argument " + std::to_string(i) + " of '" + entry.str() +
              "' is a parameter without a qtune.name or a ranked tensor type";
      return std::nullopt;
    }
    layout.params.push_back({name, type});
  }
  std::string failure;
  func.walk([&](LinearOp linear) {
    LinearLayer layer;
    Value w = linear.getWeight();
    if (auto qw = w.getDefiningOp<QWeightOp>()) {
      auto type = cast<QWeightType>(qw.getType());
      layer.n = type.getN();
      layer.k = type.getK();
      layer.format = type.getFormat();
      for (Value c : qw.getComponents())
        layer.components.push_back(nameOf(func, c));
      StringRef codes = layer.components.front();
      StringRef module = codes.contains('.') ? codes.rsplit('.').first : codes;
      layer.weightName = (module + ".weight").str();
    } else {
      auto type = cast<RankedTensorType>(w.getType());
      layer.n = type.getDimSize(0);
      layer.k = type.getDimSize(1);
      layer.components.push_back(nameOf(func, w));
      layer.weightName = layer.components.front();
    }
    if (llvm::is_contained(layer.components, std::string())) {
      failure = "a linear layer's weight is computed, not an argument; "
                "export handles weights that are parameters";
      return;
    }
    // The adapters: qtune.lora terms on the same input added, one after
    // the other, to this layer's output.
    Value sum = linear.getResult();
    for (bool more = true; more;) {
      more = false;
      for (Operation *user : sum.getUsers()) {
        auto add = dyn_cast<arith::AddFOp>(user);
        if (!add)
          continue;
        Value other = add.getLhs() == sum ? add.getRhs() : add.getLhs();
        auto lora = other.getDefiningOp<LoraOp>();
        if (!lora || lora.getInput() != linear.getInput())
          continue;
        layer.adapters.push_back(
            {nameOf(func, lora.getA()), nameOf(func, lora.getB()),
             lora.getAlpha().convertToDouble() / double(lora.getRank())});
        sum = add.getResult();
        more = true;
        break;
      }
    }
    layout.linears.push_back(std::move(layer));
  });
  if (!failure.empty()) {
    error = failure;
    return std::nullopt;
  }
  return layout;
}

bool readParams(const ModelLayout &layout, ArrayRef<std::string> files,
                std::map<std::string, HostTensor> &params, std::string &error) {
  // Each tensor from the last file that holds it.
  std::vector<std::unique_ptr<st::File>> opened;
  for (const std::string &path : files) {
    opened.push_back(st::File::open(path, error));
    if (!opened.back())
      return false;
  }
  std::vector<std::vector<std::pair<std::string, RankedTensorType>>> perFile(
      files.size());
  for (const auto &[name, type] : layout.params) {
    int64_t from = -1;
    for (size_t f = 0; f < files.size(); ++f)
      if (opened[f]->find(name))
        from = int64_t(f);
    if (from < 0) {
      error = "no parameter file holds '" + name + "'";
      return false;
    }
    perFile[from].push_back({name, type});
  }
  for (size_t f = 0; f < files.size(); ++f) {
    std::vector<HostTensor> values;
    if (perFile[f].empty())
      continue;
    if (failed(ref::readTensors(files[f], perFile[f], values, error)))
      return false;
    for (auto [wanted, value] : llvm::zip(perFile[f], values))
      params[wanted.first] = std::move(value);
  }
  return true;
}

std::vector<double>
mergedWeight(const LinearLayer &layer,
             const std::map<std::string, HostTensor> &params) {
  std::vector<double> w = dequantized(layer, params);
  if (!layer.adapters.empty()) {
    std::vector<double> term = adapterTerm(layer, params);
    for (size_t i = 0; i < w.size(); ++i)
      w[i] += term[i];
  }
  return w;
}

std::vector<std::pair<std::string, HostTensor>>
hfTensors(const ModelLayout &layout,
          const std::map<std::string, HostTensor> &params) {
  std::set<std::string> consumed; // components and adapters
  std::map<std::string, HostTensor> out;
  for (const LinearLayer &layer : layout.linears) {
    for (const std::string &c : layer.components)
      consumed.insert(c);
    for (const LinearLayer::Adapter &adapter : layer.adapters) {
      consumed.insert(adapter.a);
      consumed.insert(adapter.b);
    }
    // A weight shared by two linears (tied embeddings) is written once.
    if (!out.count(layer.weightName))
      out[layer.weightName] =
          HostTensor({layer.n, layer.k}, mergedWeight(layer, params));
  }
  for (const auto &[name, type] : layout.params)
    if (!consumed.count(name) && !out.count(name))
      out[name] = params.at(name);
  return {out.begin(), out.end()};
}

std::vector<MergeReport>
mergeAdapters(const ModelLayout &layout,
              std::map<std::string, HostTensor> &params) {
  std::vector<MergeReport> reports;
  for (const LinearLayer &layer : layout.linears) {
    if (layer.adapters.empty())
      continue;
    MergeReport report{layer.weightName};
    std::vector<double> target = mergedWeight(layer, params);
    if (!layer.format) {
      params[layer.components[0]].data = target;
      report.exact = true;
      reports.push_back(report);
      continue;
    }
    std::vector<double> term = adapterTerm(layer, params);
    int64_t n = layer.n, k = layer.k;
    // Exact: an asymmetric uniform layer whose adapter term is one constant c
    // per (row, group): s·(q − z) + c = s·(q − (z − c/s)).
    auto uniform = dyn_cast<UniformFormatAttr>(Attribute(layer.format));
    bool constantPerGroup = uniform && !uniform.getSymmetric();
    int64_t gs = layer.format.getGroupSize(k), groups = k / gs;
    for (int64_t r = 0; r < n && constantPerGroup; ++r)
      for (int64_t g = 0; g < groups && constantPerGroup; ++g) {
        const double *t = &term[r * k + g * gs];
        auto [lo, hi] = std::minmax_element(t, t + gs);
        constantPerGroup = *hi - *lo <= 1e-12 * std::max(1.0, std::fabs(*hi));
      }
    if (constantPerGroup) {
      HostTensor &scales = params[layer.components[1]];
      HostTensor &zeros = params[layer.components[2]];
      Type zeroType = layer.format.getComponents(n, k)[2].elementType;
      for (int64_t r = 0; r < n; ++r)
        for (int64_t g = 0; g < groups; ++g) {
          double c = term[r * k + g * gs], s = scales.data[r * groups + g];
          double &z = zeros.data[r * groups + g];
          z = format::roundTo(z - c / s, zeroType);
        }
      report.exact = true;
    } else {
      SmallVector<HostTensor> comps = layer.format.quantize(n, k, target, {});
      for (auto [name, value] : llvm::zip(layer.components, comps))
        params[name] = std::move(value);
    }
    report.error = relativeError(target, dequantized(layer, params));
    reports.push_back(report);
  }
  return reports;
}

void stripAdapters(ModuleOp module) {
  module.walk([&](func::FuncOp func) {
    SmallVector<LoraOp> loras;
    func.walk([&](LoraOp lora) { loras.push_back(lora); });
    for (LoraOp lora : loras) {
      // Only a term added to its layer's output is merged (and so removed).
      if (!llvm::all_of(lora->getUsers(),
                        [](Operation *u) { return isa<arith::AddFOp>(u); }))
        continue;
      for (Operation *user : llvm::make_early_inc_range(lora->getUsers())) {
        auto add = cast<arith::AddFOp>(user);
        Value other =
            add.getLhs() == lora.getResult() ? add.getRhs() : add.getLhs();
        add.getResult().replaceAllUsesWith(other);
        add.erase();
      }
      lora.erase();
    }
    llvm::BitVector unused(func.getNumArguments());
    for (unsigned i = 0; i < func.getNumArguments(); ++i) {
      if (func.getArgument(i).use_empty() && !isInput(func, i))
        unused.set(i);
      else if (!isInput(func, i))
        func.setArgAttr(i, QTuneDialect::kRoleAttrName,
                        RoleAttr::get(func.getContext(), Role::frozen));
    }
    (void)func.eraseArguments(unused);
  });
  module->removeAttr("qtune.peft");
}

} // namespace qtune::exporter
