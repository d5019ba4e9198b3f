//===- HFCheckpoint.cpp - the weights of a Hugging Face model dir ----------===//

#include "qtune/Import/HFCheckpoint.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cmath>

namespace qtune::import {

std::unique_ptr<HFCheckpoint> HFCheckpoint::open(const std::string &dir,
                                                 std::string &error) {
  if (!llvm::sys::fs::is_directory(dir)) {
    error = "'" + dir + "' is not a directory";
    return nullptr;
  }
  std::vector<std::string> shards;
  llvm::SmallString<256> indexPath(dir);
  llvm::sys::path::append(indexPath, "model.safetensors.index.json");
  if (llvm::sys::fs::exists(indexPath)) {
    auto buffer = llvm::MemoryBuffer::getFile(indexPath);
    if (!buffer) {
      error = std::string(indexPath) + ": " + buffer.getError().message();
      return nullptr;
    }
    llvm::Expected<llvm::json::Value> json =
        llvm::json::parse((*buffer)->getBuffer());
    const llvm::json::Object *map =
        json && json->getAsObject() ? json->getAsObject()->getObject("weight_map")
                                    : nullptr;
    if (!map) {
      if (!json)
        llvm::consumeError(json.takeError());
      error = std::string(indexPath) + ": expected a JSON object with a "
                                       "'weight_map' object";
      return nullptr;
    }
    std::set<std::string> unique;
    for (const auto &kv : *map)
      if (auto file = kv.second.getAsString())
        unique.insert(file->str());
    shards.assign(unique.begin(), unique.end());
  } else {
    std::error_code ec;
    for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec;
         it.increment(ec))
      if (llvm::StringRef(it->path()).ends_with(".safetensors"))
        shards.push_back(llvm::sys::path::filename(it->path()).str());
    std::sort(shards.begin(), shards.end());
  }
  if (shards.empty()) {
    error = "'" + dir + "' holds no *.safetensors weights";
    return nullptr;
  }
  auto ckpt = std::unique_ptr<HFCheckpoint>(new HFCheckpoint());
  for (const std::string &shard : shards) {
    llvm::SmallString<256> path(dir);
    llvm::sys::path::append(path, shard);
    std::unique_ptr<st::File> file = st::File::open(std::string(path), error);
    if (!file)
      return nullptr;
    size_t idx = ckpt->files.size();
    for (const st::TensorInfo &t : file->tensors()) {
      auto [it, inserted] = ckpt->index.try_emplace(t.name, idx, &t);
      if (!inserted) {
        error = "tensor '" + t.name + "' is in two shards: " +
                ckpt->files[it->second.first]->path() + " and " + file->path();
        return nullptr;
      }
    }
    ckpt->files.push_back(std::move(file));
  }
  return ckpt;
}

bool HFCheckpoint::read(const std::string &name,
                        const std::vector<int64_t> &shape,
                        std::vector<double> &out, std::string &error) {
  auto it = index.find(name);
  if (it == index.end()) {
    error = "the checkpoint has no tensor '" + name + "'";
    return false;
  }
  const st::File &file = *files[it->second.first];
  const st::TensorInfo &t = *it->second.second;
  if (t.dtype != st::DType::F32 && t.dtype != st::DType::F16 &&
      t.dtype != st::DType::BF16) {
    error = file.path() + ": tensor '" + name + "' has dtype " +
            std::string(st::dtypeName(t.dtype)) +
            "; weights must be F32, F16 or BF16";
    return false;
  }
  if (t.shape != shape) {
    error = file.path() + ": tensor '" + name + "' has shape " +
            st::shapeText(t.shape) + " but config.json implies " +
            st::shapeText(shape);
    return false;
  }
  out = st::toDoubles(t, file.data(t));
  for (size_t i = 0; i < out.size(); ++i)
    if (!std::isfinite(out[i])) {
      error = file.path() + ": tensor '" + name + "' holds a non-finite value "
              "at flat index " + std::to_string(i);
      return false;
    }
  readNames.insert(name);
  return true;
}

std::vector<std::string> HFCheckpoint::unread() const {
  std::vector<std::string> names;
  for (const auto &kv : index)
    if (!readNames.count(kv.first))
      names.push_back(kv.first);
  return names;
}

uint64_t HFCheckpoint::bytes() const {
  uint64_t total = 0;
  for (const auto &f : files)
    total += f->dataSize();
  return total;
}

std::vector<std::string> HFCheckpoint::paths() const {
  std::vector<std::string> out;
  for (const auto &f : files)
    out.push_back(f->path());
  return out;
}

} // namespace qtune::import
