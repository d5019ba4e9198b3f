//===- BaseAdapter.cpp - a trained LoRA adapter kept frozen ---------------===//

#include "qtune/Import/BaseAdapter.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <cmath>

namespace qtune::import {
namespace {
constexpr llvm::StringLiteral kPrefix = "base_model.model.";
constexpr llvm::StringLiteral kA = ".lora_A.weight", kB = ".lora_B.weight";

std::string join(const std::string &dir, llvm::StringRef name) {
  llvm::SmallString<256> p(dir);
  llvm::sys::path::append(p, name);
  return std::string(p);
}
} // namespace

std::unique_ptr<BaseAdapter> BaseAdapter::open(const std::string &dir,
                                               std::string &error) {
  std::string configPath = join(dir, "adapter_config.json");
  auto buffer = llvm::MemoryBuffer::getFile(configPath);
  if (!buffer) {
    error = configPath + ": " + buffer.getError().message() +
            " (a base adapter is a PEFT LoRA adapter directory, e.g. a "
            "qtune-run checkpoint-<step>)";
    return nullptr;
  }
  llvm::Expected<llvm::json::Value> json = llvm::json::parse((*buffer)->getBuffer());
  if (!json) {
    error = configPath + ": " + llvm::toString(json.takeError());
    return nullptr;
  }
  const llvm::json::Object *config = json->getAsObject();
  if (!config) {
    error = configPath + ": not a JSON object";
    return nullptr;
  }
  auto adapter = std::unique_ptr<BaseAdapter>(new BaseAdapter());
  adapter->dir = dir;
  if (auto type = config->getString("peft_type"); type && *type != "LORA") {
    error = configPath + ": peft_type is '" + type->str() + "'; only LORA adapters can be a base";
    return nullptr;
  }
  for (llvm::StringRef flag : {"use_dora", "use_rslora"})
    if (config->getBoolean(flag).value_or(false)) {
      error = configPath + ": " + flag.str() +
              " is set; a base adapter must be plain LoRA (alpha / r scaling)";
      return nullptr;
    }
  std::optional<int64_t> r = config->getInteger("r");
  std::optional<double> alpha = config->getNumber("lora_alpha");
  if (!r || *r <= 0 || !alpha || !std::isfinite(*alpha)) {
    error = configPath + ": needs a positive integer 'r' and a number 'lora_alpha'";
    return nullptr;
  }
  adapter->r = *r;
  adapter->alphaValue = *alpha;
  adapter->file = st::File::open(join(dir, "adapter_model.safetensors"), error);
  if (!adapter->file)
    return nullptr;
  std::set<std::string> as, bs;
  for (const st::TensorInfo &t : adapter->file->tensors()) {
    llvm::StringRef name(t.name);
    llvm::StringRef module = name;
    if (!module.consume_front(kPrefix) ||
        !(module.consume_back(kA) || module.consume_back(kB))) {
      error = adapter->file->path() + ": tensor '" + t.name +
              "' is not 'base_model.model.<module>.lora_{A,B}.weight'";
      return nullptr;
    }
    (name.ends_with(kA) ? as : bs).insert(module.str());
  }
  if (as != bs) {
    std::set<std::string> &more = as.size() >= bs.size() ? as : bs;
    std::set<std::string> &less = &more == &as ? bs : as;
    for (const std::string &m : more)
      if (!less.count(m)) {
        error = adapter->file->path() + ": module '" + m + "' has lora_" +
                (&more == &as ? "A" : "B") + " but not lora_" +
                (&more == &as ? "B" : "A");
        return nullptr;
      }
  }
  if (as.empty()) {
    error = adapter->file->path() + ": holds no adapter";
    return nullptr;
  }
  adapter->modules = std::move(as);
  return adapter;
}

bool BaseAdapter::has(const std::string &module) const {
  return modules.count(module) != 0;
}

bool BaseAdapter::read(const std::string &module, int64_t n, int64_t k,
                       std::vector<double> &a, std::vector<double> &b,
                       std::string &error) {
  auto one = [&](llvm::StringRef suffix, std::vector<int64_t> shape,
                 std::vector<double> &out) {
    std::string name = kPrefix.str() + module + suffix.str();
    const st::TensorInfo *t = file->find(name);
    if (t->dtype != st::DType::F32 && t->dtype != st::DType::F16 &&
        t->dtype != st::DType::BF16) {
      error = file->path() + ": tensor '" + name + "' has dtype " +
              std::string(st::dtypeName(t->dtype)) + "; adapters must be F32, F16 or BF16";
      return false;
    }
    if (t->shape != shape) {
      error = file->path() + ": tensor '" + name + "' has shape " +
              st::shapeText(t->shape) + " but the layer and r = " +
              std::to_string(r) + " (adapter_config.json) need " + st::shapeText(shape);
      return false;
    }
    out = st::toDoubles(*t, file->data(*t));
    for (size_t i = 0; i < out.size(); ++i)
      if (!std::isfinite(out[i])) {
        error = file->path() + ": tensor '" + name +
                "' holds a non-finite value at flat index " + std::to_string(i);
        return false;
      }
    return true;
  };
  if (!one(kA, {r, k}, a) || !one(kB, {n, r}, b))
    return false;
  readModules.insert(module);
  return true;
}

std::vector<std::string> BaseAdapter::unread() const {
  std::vector<std::string> out;
  for (const std::string &m : modules)
    if (!readModules.count(m))
      out.push_back(m);
  return out;
}

} // namespace qtune::import
