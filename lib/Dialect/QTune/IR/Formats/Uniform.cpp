//===- Uniform.cpp - #qtune.uniform: integer codes with scale (and zero) -===//
//
// asymmetric: w = s[n,g] · (q − z[n,g]);  symmetric: w = s[n,g] · (q − 2^(b−1)).
//
//===----------------------------------------------------------------------===//

#include "qtune/Dialect/QTune/IR/FormatUtils.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

#include <algorithm>
#include <cmath>

using namespace mlir;
using namespace qtune;
using namespace qtune::format;

LogicalResult
UniformFormatAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                          unsigned bits, int64_t group, bool symmetric,
                          Type scaleType) {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
    return emitError() << "#qtune.uniform: bits must be 2, 3, 4 or 8, got "
                       << bits;
  if (group < 0)
    return emitError() << "#qtune.uniform: group must be positive (or 0 for per "
                          "channel), got "
                       << group;
  if (!isa<FloatType>(scaleType))
    return emitError() << "#qtune.uniform: scale_type must be a float type, got "
                       << scaleType;
  return success();
}

int64_t UniformFormatAttr::getGroupSize(int64_t k) const {
  return getGroup() == 0 ? k : getGroup();
}

LogicalResult
UniformFormatAttr::verifyShape(int64_t n, int64_t k,
                               function_ref<InFlightDiagnostic()> emitError) const {
  return verifyGroupDivides(k, getGroup(), "#qtune.uniform: group", emitError);
}

SmallVector<ComponentSpec> UniformFormatAttr::getComponents(int64_t n,
                                                            int64_t k) const {
  int64_t groups = k / getGroupSize(k);
  SmallVector<ComponentSpec> specs;
  specs.push_back(codesSpec(getContext(), n, k, getBits()));
  specs.push_back({"scales", ComponentKind::Scale, getScaleType(), {n, groups}});
  if (!getSymmetric())
    specs.push_back({"zeros", ComponentKind::Zero, getScaleType(), {n, groups}});
  return specs;
}

namespace {
/// Zero point of group (row, g): the stored zero, or 2^(b−1) when symmetric.
double zeroPoint(UniformFormatAttr f, ArrayRef<HostTensor> c, int64_t idx) {
  return f.getSymmetric() ? double(1u << (f.getBits() - 1)) : c[2].data[idx];
}
} // namespace

void UniformFormatAttr::dequantize(int64_t n, int64_t k,
                                   ArrayRef<HostTensor> components,
                                   MutableArrayRef<double> out) const {
  int64_t gs = getGroupSize(k), groups = k / gs;
  const std::vector<double> &scales = components[1].data;
  forEachCode(components[0], n, k, getBits(),
              [&](int64_t r, int64_t c, uint32_t q) {
                int64_t gi = r * groups + c / gs;
                out[r * k + c] =
                    scales[gi] * (q - zeroPoint(*this, components, gi));
              });
}

std::pair<double, double>
UniformFormatAttr::fitGroup(ArrayRef<double> weights) const {
  unsigned bits = getBits();
  double qmax = double((1u << bits) - 1);
  Type st = getScaleType();
  auto [mnIt, mxIt] = std::minmax_element(weights.begin(), weights.end());
  double mn = *mnIt, mx = *mxIt;
  // Scales round up to the stored type, so the grid still covers the range
  // and every weight lands within half a step of its code.
  if (getSymmetric()) {
    double absmax = std::max(std::fabs(mn), std::fabs(mx));
    double s = absmax > 0 ? roundTo(2 * absmax / qmax, st, /*roundUp=*/true) : 1.0;
    return {s, double(1u << (bits - 1))};
  }
  // The range always includes 0, so z = round(−min/s) lies in [0, qmax]: an
  // integer every scale type holds exactly.
  mn = std::min(mn, 0.0);
  mx = std::max(mx, 0.0);
  double s = mx > mn ? roundTo((mx - mn) / qmax, st, /*roundUp=*/true) : 1.0;
  return {s, std::clamp(std::nearbyint(-mn / s), 0.0, qmax)};
}

uint32_t UniformFormatAttr::codeOf(double w, double scale, double zero) const {
  double qmax = double((1u << getBits()) - 1);
  return static_cast<uint32_t>(
      std::clamp(std::nearbyint(w / scale + zero), 0.0, qmax));
}

SmallVector<HostTensor>
UniformFormatAttr::fromCodes(int64_t n, int64_t k,
                             const std::vector<uint32_t> &codes,
                             HostTensor scales, HostTensor zeros) const {
  SmallVector<HostTensor> result;
  result.push_back(tensorOfWords(packCodes(codes, n, k, getBits()),
                                 {n, packedWordsPerRow(k, getBits())}));
  result.push_back(std::move(scales));
  if (!getSymmetric())
    result.push_back(std::move(zeros));
  return result;
}

SmallVector<HostTensor> UniformFormatAttr::quantize(int64_t n, int64_t k,
                                                    ArrayRef<double> weight,
                                                    ArrayRef<HostTensor>) const {
  int64_t gs = getGroupSize(k), groups = k / gs;
  HostTensor scales({n, groups}), zeros({n, groups});
  std::vector<uint32_t> codes(n * k);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      ArrayRef<double> w = weight.slice(r * k + g * gs, gs);
      auto [s, z] = fitGroup(w);
      scales.data[r * groups + g] = s;
      zeros.data[r * groups + g] = z;
      for (int64_t i = 0; i < gs; ++i)
        codes[r * k + g * gs + i] = codeOf(w[i], s, z);
    }
  return fromCodes(n, k, codes, std::move(scales), std::move(zeros));
}

HostTensor UniformFormatAttr::dequantizeVJP(int64_t n, int64_t k, unsigned index,
                                            ArrayRef<HostTensor> components,
                                            ArrayRef<double> grad) const {
  if (index == 0) // codes: not differentiable
    return HostTensor(components[0].shape);
  int64_t gs = getGroupSize(k), groups = k / gs;
  HostTensor result({n, groups});
  const std::vector<double> &scales = components[1].data;
  forEachCode(components[0], n, k, getBits(),
              [&](int64_t r, int64_t c, uint32_t q) {
                int64_t gi = r * groups + c / gs;
                double g = grad[r * k + c];
                if (index == 1) // ∂w/∂s = q − z
                  result.data[gi] += g * (q - zeroPoint(*this, components, gi));
                else // ∂w/∂z = −s
                  result.data[gi] -= g * scales[gi];
              });
  return result;
}

Value UniformFormatAttr::emitDequant(OpBuilder &b, Location loc, Value row,
                                     Value col, int64_t n, int64_t k,
                                     ComponentAccess &access) const {
  unsigned bits = getBits();
  int64_t gs = getGroupSize(k);
  Value q = codeToF32(b, loc,
                      access.loadCode(b, loc, 0, row, col, bits,
                                      packedWordsPerRow(k, bits)));
  Value gi = groupIndex(b, loc, row, col, gs, k / gs);
  Value s = access.loadFloat(b, loc, 1, gi);
  Value z = getSymmetric() ? f32Const(b, loc, double(1u << (bits - 1)))
                           : access.loadFloat(b, loc, 2, gi);
  // s·(q − z) = q·s − s·z: s·z is shared by a group's weights, so kernels
  // computing runs of a row evaluate it once and fuse the rest into an fma.
  Value sz = arith::MulFOp::create(b, loc, s, z);
  return arith::SubFOp::create(b, loc, arith::MulFOp::create(b, loc, q, s), sz);
}

std::pair<Value, Value> UniformFormatAttr::emitDerivative(
    OpBuilder &b, Location loc, Value row, Value col, int64_t n, int64_t k,
    unsigned component, ComponentAccess &access) const {
  unsigned bits = getBits();
  int64_t gs = getGroupSize(k);
  Value gi = groupIndex(b, loc, row, col, gs, k / gs);
  if (component == 2) // ∂w/∂z = −s
    return {arith::NegFOp::create(b, loc, access.loadFloat(b, loc, 1, gi)), gi};
  // ∂w/∂s = q − z
  Value q = codeToF32(b, loc,
                      access.loadCode(b, loc, 0, row, col, bits,
                                      packedWordsPerRow(k, bits)));
  Value z = getSymmetric() ? f32Const(b, loc, double(1u << (bits - 1)))
                           : access.loadFloat(b, loc, 2, gi);
  return {arith::SubFOp::create(b, loc, q, z), gi};
}
