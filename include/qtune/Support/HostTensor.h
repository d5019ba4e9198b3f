//===- HostTensor.h - a dense row-major float64 tensor on the host -*- C++ -*-===//
//
// The value type of the reference interpreter and of the formats' host routines.
// Integers (packed code words included) are held exactly as doubles.
// No MLIR dependency.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_SUPPORT_HOSTTENSOR_H
#define QTUNE_SUPPORT_HOSTTENSOR_H

#include <cstdint>
#include <cmath>
#include <vector>

namespace qtune {

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<double> data;

  HostTensor() = default;
  HostTensor(std::vector<int64_t> shape, double fill = 0.0)
      : shape(std::move(shape)), data(numElements(this->shape), fill) {}
  HostTensor(std::vector<int64_t> shape, std::vector<double> data)
      : shape(std::move(shape)), data(std::move(data)) {}

  static int64_t numElements(const std::vector<int64_t> &shape) {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    return n;
  }
  int64_t numElements() const { return numElements(shape); }
  int64_t rank() const { return static_cast<int64_t>(shape.size()); }
};

/// ‖approx − ref‖ / ‖ref‖ (Frobenius; the absolute norm when ref is zero).
inline double relativeError(const std::vector<double> &ref,
                            const std::vector<double> &approx) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (approx[i] - ref[i]) * (approx[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(den > 0 ? num / den : num);
}

} // namespace qtune

#endif // QTUNE_SUPPORT_HOSTTENSOR_H
