//===- Random.h - a small deterministic random number generator -*- C++ -*-===//
//
// SplitMix64 (Steele, Lea and Flood), with unbiased bounded integers and
// 53-bit doubles. The standard library's distributions differ between
// implementations; these give the same sequence for the same seed on every
// platform and compiler, which data order and sampling rely on (a resumed run
// must see the batches the uninterrupted run would have seen).
//
// Header-only; nothing here throws.
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_RANDOM_H
#define QTUNE_RUNTIME_RANDOM_H

#include <cstdint>

namespace qtune::rt {

/// One SplitMix64 output for state `x` (also a good 64-bit mixing function).
inline uint64_t splitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

class Rng {
public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    const uint64_t out = splitMix64(state_);
    state_ += 0x9E3779B97F4A7C15ull;
    return out;
  }

  /// Uniform in [0, n), without modulo bias (rejection); 0 when n is 0.
  uint64_t below(uint64_t n) {
    if (n == 0)
      return 0;
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n; // multiple of n
    uint64_t x;
    do
      x = next();
    while (x >= limit);
    return x % n;
  }

  /// Uniform in [0, 1), 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

private:
  uint64_t state_;
};

} // namespace qtune::rt

#endif // QTUNE_RUNTIME_RANDOM_H
