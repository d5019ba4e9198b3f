//===- BaseAdapter.h - a trained LoRA adapter kept frozen -------*- C++ -*-===//
//
// A PEFT LoRA adapter directory (adapter_config.json and
// adapter_model.safetensors, keys "base_model.model.<module>.lora_A.weight"
// and "...lora_B.weight"; every qtune checkpoint-<step> of a LoRA bundle is
// one) read so that its adapters become frozen parts of an imported model:
// an LREC correction, say, under a new task adapter that trains.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_IMPORT_BASEADAPTER_H
#define QTUNE_IMPORT_BASEADAPTER_H

#include "qtune/runtime/Safetensors.h"

#include <memory>
#include <set>
#include <string>
#include <vector>

namespace qtune::import {

class BaseAdapter {
public:
  /// Opens `dir`; nullptr with `error` naming the file or key that is
  /// missing or not a plain LoRA adapter (DoRA and rsLoRA are refused).
  static std::unique_ptr<BaseAdapter> open(const std::string &dir,
                                           std::string &error);

  int64_t rank() const { return r; }
  double alpha() const { return alphaValue; }
  const std::string &path() const { return dir; }

  /// Whether the adapter has module `module` ("model.layers.0.self_attn.q_proj").
  bool has(const std::string &module) const;
  /// Reads module `module`'s A ([r, k]) and B ([n, r]) of the n x k layer;
  /// false with `error` on a wrong shape, dtype or a non-finite value.
  bool read(const std::string &module, int64_t n, int64_t k,
            std::vector<double> &a, std::vector<double> &b, std::string &error);
  /// Modules of the adapter that were never read.
  std::vector<std::string> unread() const;

private:
  BaseAdapter() = default;
  std::string dir;
  int64_t r = 0;
  double alphaValue = 0;
  std::unique_ptr<st::File> file;
  std::set<std::string> modules, readModules;
};

} // namespace qtune::import

#endif // QTUNE_IMPORT_BASEADAPTER_H
