//===- DynamicLibrary.h - entry points of a dlopen'ed library ---*- C++ -*-===//
//
// The runtime loads the CUDA driver and NCCL with dlopen, so it builds and
// starts without either. SymbolResolver fills a table of function pointers
// from such a library and remembers the first symbol it lacks, for the error.
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_DYNAMICLIBRARY_H
#define QTUNE_RUNTIME_DYNAMICLIBRARY_H

#include <string>
#include <type_traits>

#include <dlfcn.h>

namespace qtune {

class SymbolResolver {
public:
  explicit SymbolResolver(void *library) : library_(library) {}

  /// Points `fn` at `symbol` (nullptr when the library lacks it).
  template <typename Fn> void get(Fn &fn, const char *symbol) {
    void *p = ::dlsym(library_, symbol);
    if (!p && missing_.empty())
      missing_ = symbol;
    fn = reinterpret_cast<std::remove_reference_t<Fn>>(p);
  }
  /// Points `fn` at `symbol`, or nullptr: an entry point only some versions
  /// have, whose absence is no error.
  template <typename Fn> void getOptional(Fn &fn, const char *symbol) {
    fn = reinterpret_cast<std::remove_reference_t<Fn>>(::dlsym(library_, symbol));
  }
  /// Every get() found its symbol.
  bool ok() const { return missing_.empty(); }
  /// The first symbol get() did not find.
  const std::string &missing() const { return missing_; }

private:
  void *library_;
  std::string missing_;
};

} // namespace qtune

#endif // QTUNE_RUNTIME_DYNAMICLIBRARY_H
