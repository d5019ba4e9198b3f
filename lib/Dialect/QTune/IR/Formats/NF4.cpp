//===- NF4.cpp - #qtune.nf4: 4-bit NormalFloat with absmax per block -------===//
//
// w = absmax[n,b] · NF4[q]; with double quantization the absmax values are 8-bit
// codes c: absmax = offset + s2[n, b / dq_block] · (c − 128).
//
//===----------------------------------------------------------------------===//

#include "qtune/Dialect/QTune/IR/FormatUtils.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

#include <algorithm>
#include <cmath>

using namespace mlir;
using namespace qtune;
using namespace qtune::format;

ArrayRef<double> NF4FormatAttr::getTable() {
  // The NormalFloat-4 table of QLoRA (arXiv 2305.14314, appendix E).
  static const double table[16] = {
      -1.0,
      -0.6961928009986877,
      -0.5250730514526367,
      -0.39491748809814453,
      -0.28444138169288635,
      -0.18477343022823334,
      -0.09105003625154495,
      0.0,
      0.07958029955625534,
      0.16093020141124725,
      0.24611230194568634,
      0.33791524171829224,
      0.44070982933044434,
      0.5626170039176941,
      0.7229568362236023,
      1.0};
  return table;
}

LogicalResult NF4FormatAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                    int64_t block, bool doubleQuant,
                                    int64_t dqBlock) {
  if (block <= 0)
    return emitError() << "#qtune.nf4: block must be positive, got " << block;
  if (dqBlock <= 0)
    return emitError() << "#qtune.nf4: dq_block must be positive, got "
                       << dqBlock;
  return success();
}

int64_t NF4FormatAttr::getGroupSize(int64_t) const { return getBlock(); }

LogicalResult
NF4FormatAttr::verifyShape(int64_t n, int64_t k,
                           function_ref<InFlightDiagnostic()> emitError) const {
  return verifyGroupDivides(k, getBlock(), "#qtune.nf4: block", emitError);
}

SmallVector<ComponentSpec> NF4FormatAttr::getComponents(int64_t n,
                                                        int64_t k) const {
  MLIRContext *ctx = getContext();
  Type f32 = Float32Type::get(ctx);
  int64_t nb = getNumBlocks(k);
  SmallVector<ComponentSpec> specs;
  specs.push_back(codesSpec(ctx, n, k, 4));
  if (!getDoubleQuant()) {
    specs.push_back({"absmax", ComponentKind::Scale, f32, {n, nb}});
    return specs;
  }
  specs.push_back({"absmax_codes", ComponentKind::Codes,
                   IntegerType::get(ctx, 32), {n, packedWordsPerRow(nb, 8)}});
  specs.push_back({"absmax_scales", ComponentKind::Scale, f32,
                   {n, (nb + getDqBlock() - 1) / getDqBlock()}});
  specs.push_back({"absmax_offset", ComponentKind::Zero, f32, {1}});
  return specs;
}

namespace {
/// First-level absmax values (n × numBlocks), decoding double quantization.
std::vector<double> absmaxOf(NF4FormatAttr f, int64_t n, int64_t k,
                             ArrayRef<HostTensor> c) {
  if (!f.getDoubleQuant())
    return c[1].data;
  int64_t nb = f.getNumBlocks(k), dq = f.getDqBlock();
  int64_t wpr = packedWordsPerRow(nb, 8), spr = (nb + dq - 1) / dq;
  std::vector<uint32_t> words = wordsOf(c[1]);
  std::vector<double> absmax(n * nb);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      double code = extractCode(&words[r * wpr], b, 8);
      absmax[r * nb + b] =
          c[3].data[0] + c[2].data[r * spr + b / dq] * (code - 128.0);
    }
  return absmax;
}
} // namespace

void NF4FormatAttr::dequantize(int64_t n, int64_t k,
                               ArrayRef<HostTensor> components,
                               MutableArrayRef<double> out) const {
  ArrayRef<double> table = getTable();
  int64_t bs = getBlock(), nb = getNumBlocks(k);
  std::vector<double> absmax = absmaxOf(*this, n, k, components);
  forEachCode(components[0], n, k, 4, [&](int64_t r, int64_t c, uint32_t q) {
    out[r * k + c] = absmax[r * nb + c / bs] * table[q];
  });
}

SmallVector<HostTensor> NF4FormatAttr::quantize(int64_t n, int64_t k,
                                                ArrayRef<double> weight,
                                                ArrayRef<HostTensor>) const {
  Type f32 = Float32Type::get(getContext());
  int64_t bs = getBlock(), nb = getNumBlocks(k);
  std::vector<double> absmax(n * nb);
  for (int64_t i = 0; i < n * nb; ++i) {
    double m = 0;
    for (int64_t j = 0; j < bs; ++j)
      m = std::max(m, std::fabs(weight[(i / nb) * k + (i % nb) * bs + j]));
    absmax[i] = roundTo(m, f32, /*roundUp=*/true);
  }

  SmallVector<HostTensor> result;
  result.emplace_back(); // codes, filled below with the final absmax
  if (!getDoubleQuant()) {
    result.push_back(HostTensor({n, nb}, absmax));
  } else {
    int64_t dq = getDqBlock(), spr = (nb + dq - 1) / dq;
    double offset = 0;
    for (double a : absmax)
      offset += a;
    offset = roundTo(offset / absmax.size(), f32);
    HostTensor scales({n, spr});
    std::vector<uint32_t> codes(n * nb);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < spr; ++j) {
        int64_t b0 = j * dq, b1 = std::min(nb, b0 + dq);
        double dev = 0;
        for (int64_t b = b0; b < b1; ++b)
          dev = std::max(dev, std::fabs(absmax[r * nb + b] - offset));
        double s2 = dev > 0 ? roundTo(dev / 127.0, f32, /*roundUp=*/true) : 1.0;
        scales.data[r * spr + j] = s2;
        for (int64_t b = b0; b < b1; ++b) {
          double c = std::clamp(
              std::nearbyint((absmax[r * nb + b] - offset) / s2) + 128.0, 0.0,
              255.0);
          codes[r * nb + b] = static_cast<uint32_t>(c);
          absmax[r * nb + b] = offset + s2 * (c - 128.0); // what is stored
        }
      }
    result.push_back(tensorOfWords(packCodes(codes, n, nb, 8),
                                   {n, packedWordsPerRow(nb, 8)}));
    result.push_back(std::move(scales));
    result.push_back(HostTensor({1}, {offset}));
  }

  ArrayRef<double> table = getTable();
  std::vector<uint32_t> codes(n * k);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) {
      double a = absmax[r * nb + c / bs];
      codes[r * k + c] =
          a != 0 ? nearestIndex(table, weight[r * k + c] / a) : 7; // table[7] = 0
    }
  result[0] = tensorOfWords(packCodes(codes, n, k, 4),
                            {n, packedWordsPerRow(k, 4)});
  return result;
}

HostTensor NF4FormatAttr::dequantizeVJP(int64_t n, int64_t k, unsigned index,
                                        ArrayRef<HostTensor> components,
                                        ArrayRef<double> grad) const {
  if (index == 0 ||
      (getDoubleQuant() && index == 1))
    return HostTensor(components[index].shape); // codes: not differentiable
  ArrayRef<double> table = getTable();
  int64_t bs = getBlock(), nb = getNumBlocks(k);
  // ∂L/∂absmax[n,b] = Σ_{k∈b} g · NF4[q]
  std::vector<double> gAbsmax(n * nb, 0.0);
  forEachCode(components[0], n, k, 4, [&](int64_t r, int64_t c, uint32_t q) {
    gAbsmax[r * nb + c / bs] += grad[r * k + c] * table[q];
  });
  if (!getDoubleQuant())
    return HostTensor({n, nb}, gAbsmax);
  HostTensor result(components[index].shape);
  int64_t dq = getDqBlock(), spr = (nb + dq - 1) / dq;
  int64_t cwpr = packedWordsPerRow(nb, 8);
  std::vector<uint32_t> cwords = wordsOf(components[1]);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      double g = gAbsmax[r * nb + b];
      if (index == 2) // ∂absmax/∂s2 = c − 128
        result.data[r * spr + b / dq] +=
            g * (double(extractCode(&cwords[r * cwpr], b, 8)) - 128.0);
      else // ∂absmax/∂offset = 1
        result.data[0] += g;
    }
  return result;
}

Value NF4FormatAttr::emitDequant(OpBuilder &b, Location loc, Value row,
                                 Value col, int64_t n, int64_t k,
                                 ComponentAccess &access) const {
  int64_t bs = getBlock(), nb = getNumBlocks(k);
  Value q = access.loadCode(b, loc, 0, row, col, 4, packedWordsPerRow(k, 4));
  Value value = selectFromTable(b, loc, q, getTable());
  Value absmax;
  if (!getDoubleQuant()) {
    absmax = access.loadFloat(b, loc, 1, groupIndex(b, loc, row, col, bs, nb));
  } else {
    int64_t dq = getDqBlock(), spr = (nb + dq - 1) / dq;
    Value block = arith::DivUIOp::create(b, loc, col, indexConst(b, loc, bs));
    Value c = codeToF32(b, loc,
                        access.loadCode(b, loc, 1, row, block, 8,
                                        packedWordsPerRow(nb, 8)));
    Value s2 =
        access.loadFloat(b, loc, 2, groupIndex(b, loc, row, block, dq, spr));
    Value offset = access.loadFloat(b, loc, 3, indexConst(b, loc, 0));
    Value centered = arith::SubFOp::create(b, loc, c, f32Const(b, loc, 128.0));
    absmax = arith::AddFOp::create(
        b, loc, offset, arith::MulFOp::create(b, loc, s2, centered));
  }
  return arith::MulFOp::create(b, loc, absmax, value);
}

std::pair<Value, Value> NF4FormatAttr::emitDerivative(
    OpBuilder &b, Location loc, Value row, Value col, int64_t n, int64_t k,
    unsigned component, ComponentAccess &access) const {
  int64_t bs = getBlock(), nb = getNumBlocks(k);
  Value q = access.loadCode(b, loc, 0, row, col, 4, packedWordsPerRow(k, 4));
  Value value = selectFromTable(b, loc, q, getTable());
  if (!getDoubleQuant()) // ∂w/∂absmax = NF4[q]
    return {value, groupIndex(b, loc, row, col, bs, nb)};
  if (component == 3) // ∂w/∂offset = NF4[q]
    return {value, indexConst(b, loc, 0)};
  // ∂w/∂s2 = NF4[q] · (c − 128)
  int64_t dq = getDqBlock(), spr = (nb + dq - 1) / dq;
  Value block = arith::DivUIOp::create(b, loc, col, indexConst(b, loc, bs));
  Value c = codeToF32(b, loc,
                      access.loadCode(b, loc, 1, row, block, 8,
                                      packedWordsPerRow(nb, 8)));
  Value centered = arith::SubFOp::create(b, loc, c, f32Const(b, loc, 128.0));
  return {arith::MulFOp::create(b, loc, value, centered),
          groupIndex(b, loc, row, block, dq, spr)};
}
