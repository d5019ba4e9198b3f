//===- HFCheckpoint.h - the weights of a Hugging Face model dir -*- C++ -*-===//
//
// The safetensors shards of a model directory: `model.safetensors.index.json`'s
// weight map when present, else every `*.safetensors` file in the directory.
// Tensors are read by name as doubles (F32, F16 or BF16), shape-checked, and
// the reader remembers which were read so importers can refuse tensors they
// would otherwise silently ignore.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_IMPORT_HFCHECKPOINT_H
#define QTUNE_IMPORT_HFCHECKPOINT_H

#include "qtune/runtime/Safetensors.h"

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace qtune::import {

class HFCheckpoint {
public:
  /// Opens the shards of `dir`; nullptr and `error` on failure (no shard,
  /// an unreadable or corrupt shard, a tensor in two shards, an index naming a
  /// missing file).
  static std::unique_ptr<HFCheckpoint> open(const std::string &dir,
                                            std::string &error);

  bool has(const std::string &name) const { return index.count(name); }
  /// Reads tensor `name`, which must have `shape` and a float dtype and hold
  /// finite values; false and `error` (naming the tensor and its shard)
  /// otherwise.
  bool read(const std::string &name, const std::vector<int64_t> &shape,
            std::vector<double> &out, std::string &error);
  /// Names of the tensors never read, sorted.
  std::vector<std::string> unread() const;
  /// Total bytes of the shards' data sections.
  uint64_t bytes() const;
  /// The shard files it reads.
  std::vector<std::string> paths() const;

private:
  std::vector<std::unique_ptr<st::File>> files;
  std::map<std::string, std::pair<size_t, const st::TensorInfo *>> index;
  std::set<std::string> readNames;
};

} // namespace qtune::import

#endif // QTUNE_IMPORT_HFCHECKPOINT_H
