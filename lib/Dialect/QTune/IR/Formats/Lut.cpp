//===- Lut.cpp - #qtune.lut: codes index a codebook given as an operand ----===//
//
// w = table[q] (per tensor) or w = table[n, g, q] (per group of a row).
//
//===----------------------------------------------------------------------===//

#include "qtune/Dialect/QTune/IR/FormatUtils.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

#include <algorithm>
#include <cmath>

using namespace mlir;
using namespace qtune;
using namespace qtune::format;

LogicalResult LutFormatAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                    unsigned bits, int64_t group) {
  if (bits < 1 || bits > 8)
    return emitError() << "#qtune.lut: bits must be in [1, 8], got " << bits;
  if (group < 0)
    return emitError() << "#qtune.lut: group must be positive (or 0 for one "
                          "table per tensor), got "
                       << group;
  return success();
}

int64_t LutFormatAttr::getGroupSize(int64_t k) const {
  return getGroup() == 0 ? k : getGroup();
}

LogicalResult
LutFormatAttr::verifyShape(int64_t n, int64_t k,
                           function_ref<InFlightDiagnostic()> emitError) const {
  return verifyGroupDivides(k, getGroup(), "#qtune.lut: group", emitError);
}

SmallVector<ComponentSpec> LutFormatAttr::getComponents(int64_t n,
                                                        int64_t k) const {
  MLIRContext *ctx = getContext();
  int64_t entries = int64_t(1) << getBits();
  SmallVector<int64_t> tableShape{entries};
  if (getGroup() != 0)
    tableShape = {n, k / getGroup(), entries};
  return {codesSpec(ctx, n, k, getBits()),
          {"table", ComponentKind::Table, Float32Type::get(ctx), tableShape}};
}

namespace {
/// Offset of the table serving element (r, c).
int64_t tableOffset(LutFormatAttr f, int64_t k, int64_t r, int64_t c) {
  if (f.getGroup() == 0)
    return 0;
  return ((r * (k / f.getGroup())) + c / f.getGroup()) << f.getBits();
}
} // namespace

void LutFormatAttr::dequantize(int64_t n, int64_t k,
                               ArrayRef<HostTensor> components,
                               MutableArrayRef<double> out) const {
  const std::vector<double> &table = components[1].data;
  forEachCode(components[0], n, k, getBits(),
              [&](int64_t r, int64_t c, uint32_t q) {
                out[r * k + c] = table[tableOffset(*this, k, r, c) + q];
              });
}

namespace {
/// Fits an ascending codebook of `entries` values to `values` by k-means
/// (Lloyd's iterations from evenly spaced quantiles).
std::vector<double> fitCodebook(std::vector<double> values, int64_t entries) {
  std::sort(values.begin(), values.end());
  size_t m = values.size();
  std::vector<double> table(entries);
  for (int64_t j = 0; j < entries; ++j)
    table[j] = values[std::min(m - 1, size_t((j + 0.5) * m / entries))];
  for (int iter = 0; iter < 16; ++iter) {
    std::vector<double> sum(entries, 0.0);
    std::vector<size_t> count(entries, 0);
    for (double v : values) {
      uint32_t j = nearestIndex(table, v);
      sum[j] += v;
      ++count[j];
    }
    for (int64_t j = 0; j < entries; ++j)
      if (count[j])
        table[j] = sum[j] / count[j];
    std::sort(table.begin(), table.end());
  }
  return table;
}
} // namespace

SmallVector<HostTensor> LutFormatAttr::quantize(int64_t n, int64_t k,
                                                ArrayRef<double> weight,
                                                ArrayRef<HostTensor> given) const {
  unsigned bits = getBits();
  int64_t entries = int64_t(1) << bits;
  int64_t gs = getGroupSize(k);
  Type f32 = Float32Type::get(getContext());
  SmallVector<ComponentSpec> specs = getComponents(n, k);
  HostTensor table(std::vector<int64_t>(specs[1].shape.begin(),
                                        specs[1].shape.end()));
  bool haveTable = given.size() > 1 && !given[1].data.empty();
  int64_t numTables = table.numElements() / entries;
  for (int64_t t = 0; t < numTables; ++t) {
    std::vector<double> fitted;
    if (haveTable) {
      fitted.assign(given[1].data.begin() + t * entries,
                    given[1].data.begin() + (t + 1) * entries);
    } else {
      std::vector<double> values;
      if (getGroup() == 0)
        values.assign(weight.begin(), weight.end());
      else {
        int64_t groups = k / gs, r = t / groups, g = t % groups;
        values.assign(weight.begin() + r * k + g * gs,
                      weight.begin() + r * k + (g + 1) * gs);
      }
      fitted = fitCodebook(std::move(values), entries);
    }
    for (int64_t j = 0; j < entries; ++j)
      table.data[t * entries + j] = roundTo(fitted[j], f32);
  }

  std::vector<uint32_t> codes(n * k);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) {
      const double *tab = &table.data[tableOffset(*this, k, r, c)];
      // The table need not be sorted when given: search it exhaustively.
      uint32_t best = 0;
      for (int64_t j = 1; j < entries; ++j)
        if (std::fabs(weight[r * k + c] - tab[j]) <
            std::fabs(weight[r * k + c] - tab[best]))
          best = j;
      codes[r * k + c] = best;
    }
  return {tensorOfWords(packCodes(codes, n, k, bits),
                        {n, packedWordsPerRow(k, bits)}),
          std::move(table)};
}

HostTensor LutFormatAttr::dequantizeVJP(int64_t n, int64_t k, unsigned index,
                                        ArrayRef<HostTensor> components,
                                        ArrayRef<double> grad) const {
  HostTensor result(components[index].shape);
  if (index == 0) // codes: not differentiable
    return result;
  // ∂w[r,c]/∂table[t, j] = [q[r,c] = j] for the table t serving (r, c).
  forEachCode(components[0], n, k, getBits(),
              [&](int64_t r, int64_t c, uint32_t q) {
                result.data[tableOffset(*this, k, r, c) + q] += grad[r * k + c];
              });
  return result;
}

namespace {
/// Flat index into the table component of the entry that (row, col) reads:
/// its code, offset by its table when there is one per group.
Value emitTableIndex(LutFormatAttr f, OpBuilder &b, Location loc, Value row,
                     Value col, int64_t k, ComponentAccess &access) {
  unsigned bits = f.getBits();
  Value q = access.loadCode(b, loc, 0, row, col, bits,
                            packedWordsPerRow(k, bits));
  Value index = arith::IndexCastUIOp::create(b, loc, b.getIndexType(), q);
  if (f.getGroup() == 0)
    return index;
  Value table = groupIndex(b, loc, row, col, f.getGroup(), k / f.getGroup());
  Value base = arith::MulIOp::create(b, loc, table,
                                     indexConst(b, loc, int64_t(1) << bits));
  return arith::AddIOp::create(b, loc, base, index);
}
} // namespace

Value LutFormatAttr::emitDequant(OpBuilder &b, Location loc, Value row,
                                 Value col, int64_t n, int64_t k,
                                 ComponentAccess &access) const {
  return access.loadFloat(b, loc, 1, emitTableIndex(*this, b, loc, row, col, k, access));
}

std::pair<Value, Value> LutFormatAttr::emitDerivative(
    OpBuilder &b, Location loc, Value row, Value col, int64_t n, int64_t k,
    unsigned component, ComponentAccess &access) const {
  // ∂w/∂table[t, j] = 1 for the entry j = q of the table t serving (row, col).
  return {f32Const(b, loc, 1.0),
          emitTableIndex(*this, b, loc, row, col, k, access)};
}
