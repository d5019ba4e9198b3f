//===- FormatsTest.cpp - quantizer formats: components, host routines ------===//
//
// Tests #qtune.uniform, #qtune.nf4 and #qtune.lut through QuantFormatAttrInterface:
// component lists, shape verification, host quantize / dequantize and the
// vector-Jacobian product of dequantization.
//
//===----------------------------------------------------------------------===//

#include "qtune/Dialect/QTune/IR/QTuneAttrs.h"
#include "qtune/Dialect/QTune/IR/QTuneDialect.h"
#include "qtune/Support/HostTensor.h"
#include "qtune/Support/Packing.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Location.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/ADT/APFloat.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

using namespace qtune;

namespace {

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

class FormatsTest : public ::testing::Test {
protected:
  FormatsTest() { ctx.loadDialect<QTuneDialect>(); }

  mlir::Type f32() { return mlir::Float32Type::get(&ctx); }
  mlir::Type f16() { return mlir::Float16Type::get(&ctx); }
  mlir::Type bf16() { return mlir::BFloat16Type::get(&ctx); }
  mlir::Type i32() { return mlir::IntegerType::get(&ctx, 32); }

  UniformFormatAttr uniform(unsigned bits, int64_t group, bool symmetric,
                            mlir::Type scaleType) {
    return UniformFormatAttr::get(&ctx, bits, group, symmetric, scaleType);
  }
  NF4FormatAttr nf4(int64_t block, bool doubleQuant = false,
                    int64_t dqBlock = 256) {
    return NF4FormatAttr::get(&ctx, block, doubleQuant, dqBlock);
  }
  LutFormatAttr lut(unsigned bits, int64_t group) {
    return LutFormatAttr::get(&ctx, bits, group);
  }

  mlir::MLIRContext ctx;
};

/// Row-major n×k Gaussian weights, fixed seed.
std::vector<double> gaussian(int64_t n, int64_t k, uint32_t seed,
                             double sigma = 1.0, double mean = 0.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> dist(mean, sigma);
  std::vector<double> w(n * k);
  for (double &x : w)
    x = dist(rng);
  return w;
}

/// The codes of an n×k codes component, unpacked.
std::vector<uint32_t> codesOf(const HostTensor &t, int64_t n, int64_t k,
                              unsigned bits) {
  std::vector<uint32_t> words(t.data.size());
  for (size_t i = 0; i < words.size(); ++i) {
    double v = t.data[i];
    EXPECT_EQ(v, std::floor(v)) << "packed word " << i << " is not an integer";
    EXPECT_GE(v, 0.0);
    EXPECT_LT(v, 4294967296.0);
    words[i] = static_cast<uint32_t>(v);
  }
  return unpackCodes(words, n, k, bits);
}

/// A codes component holding `codes` (n×k, packed canonically).
HostTensor codesTensor(const std::vector<uint32_t> &codes, int64_t n, int64_t k,
                       unsigned bits) {
  std::vector<uint32_t> words = packCodes(codes, n, k, bits);
  HostTensor t({n, packedWordsPerRow(k, bits)});
  for (size_t i = 0; i < words.size(); ++i)
    t.data[i] = words[i];
  return t;
}

/// True when `v` is exactly representable in the float type `type`.
bool representable(double v, mlir::Type type) {
  auto ft = llvm::cast<mlir::FloatType>(type);
  llvm::APFloat f(v);
  bool lost = false;
  llvm::APFloat::opStatus status = f.convert(
      ft.getFloatSemantics(), llvm::APFloat::rmNearestTiesToEven, &lost);
  return status == llvm::APFloat::opOK && !lost;
}

std::vector<int64_t> shapeOf(const ComponentSpec &spec) {
  return std::vector<int64_t>(spec.shape.begin(), spec.shape.end());
}

/// Checks that `components` match the format's component list for n×k.
void expectComponentShapes(QuantFormatAttrInterface fmt, int64_t n, int64_t k,
                           llvm::ArrayRef<HostTensor> components) {
  llvm::SmallVector<ComponentSpec> specs = fmt.getComponents(n, k);
  ASSERT_EQ(components.size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_EQ(components[i].shape, shapeOf(specs[i])) << specs[i].name;
    EXPECT_EQ(static_cast<int64_t>(components[i].data.size()),
              components[i].numElements())
        << specs[i].name;
  }
}

std::vector<double> dequantize(QuantFormatAttrInterface fmt, int64_t n,
                               int64_t k, llvm::ArrayRef<HostTensor> components) {
  std::vector<double> out(n * k, std::nan(""));
  fmt.dequantize(n, k, components, out);
  return out;
}

double meanSquaredError(const std::vector<double> &a,
                        const std::vector<double> &b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i)
    sum += (a[i] - b[i]) * (a[i] - b[i]);
  return sum / a.size();
}

std::string describe(mlir::Attribute attr) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << attr;
  return s;
}

std::string describe(mlir::Type type) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << type;
  return s;
}

/// Collects the message of the diagnostics emitted while it lives.
struct DiagnosticCapture {
  DiagnosticCapture(mlir::MLIRContext *ctx)
      : ctx(ctx), handler(ctx, [this](mlir::Diagnostic &diag) {
          messages.push_back(diag.str());
          return mlir::success();
        }) {}
  std::function<mlir::InFlightDiagnostic()> emitter() {
    return [this] { return mlir::emitError(mlir::UnknownLoc::get(ctx)); };
  }
  mlir::MLIRContext *ctx;
  std::vector<std::string> messages;
  mlir::ScopedDiagnosticHandler handler;
};

//===----------------------------------------------------------------------===//
// Components
//===----------------------------------------------------------------------===//

TEST_F(FormatsTest, UniformComponents) {
  // Asymmetric 3-bit per channel, K = 96: 9 words per row, one group per row.
  auto u3 = uniform(3, 0, false, bf16());
  EXPECT_EQ(u3.getBits(), 3u);
  EXPECT_EQ(u3.getGroupSize(96), 96);
  auto c = u3.getComponents(4, 96);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].name, "codes");
  EXPECT_EQ(c[0].kind, ComponentKind::Codes);
  EXPECT_TRUE(c[0].isInteger());
  EXPECT_TRUE(c[0].elementType == i32());
  EXPECT_EQ(shapeOf(c[0]), (std::vector<int64_t>{4, 9}));
  EXPECT_EQ(c[1].name, "scales");
  EXPECT_EQ(c[1].kind, ComponentKind::Scale);
  EXPECT_FALSE(c[1].isInteger());
  EXPECT_TRUE(c[1].elementType == bf16());
  EXPECT_EQ(shapeOf(c[1]), (std::vector<int64_t>{4, 1}));
  EXPECT_EQ(c[2].name, "zeros");
  EXPECT_EQ(c[2].kind, ComponentKind::Zero);
  EXPECT_TRUE(c[2].elementType == bf16());
  EXPECT_EQ(shapeOf(c[2]), (std::vector<int64_t>{4, 1}));

  // Symmetric 4-bit, group 32, f32 scales: no zero points.
  auto u4 = uniform(4, 32, true, f32());
  EXPECT_EQ(u4.getGroupSize(128), 32);
  c = u4.getComponents(8, 128);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].name, "codes");
  EXPECT_EQ(shapeOf(c[0]), (std::vector<int64_t>{8, 16}));
  EXPECT_EQ(c[1].name, "scales");
  EXPECT_TRUE(c[1].elementType == f32());
  EXPECT_EQ(shapeOf(c[1]), (std::vector<int64_t>{8, 4}));

  // 2-bit, group 16, f16 scales, K = 48.
  c = uniform(2, 16, false, f16()).getComponents(2, 48);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(shapeOf(c[0]), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(shapeOf(c[1]), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(shapeOf(c[2]), (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(c[1].elementType == f16());
  EXPECT_TRUE(c[2].elementType == f16());

  // 8-bit per channel, K = 100: 25 words per row.
  c = uniform(8, 0, true, bf16()).getComponents(3, 100);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(shapeOf(c[0]), (std::vector<int64_t>{3, 25}));
  EXPECT_EQ(shapeOf(c[1]), (std::vector<int64_t>{3, 1}));

  // The default scale type is bf16.
  auto parsed = llvm::cast<UniformFormatAttr>(
      mlir::parseAttribute("#qtune.uniform<bits = 4>", &ctx));
  EXPECT_TRUE(parsed.getScaleType() == bf16());
  EXPECT_EQ(parsed.getGroup(), 0);
  EXPECT_FALSE(parsed.getSymmetric());
}

TEST_F(FormatsTest, NF4Components) {
  auto f = nf4(64);
  EXPECT_EQ(f.getBits(), 4u);
  EXPECT_EQ(f.getGroupSize(128), 64);
  EXPECT_EQ(f.getNumBlocks(128), 2);
  auto c = f.getComponents(8, 128);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].name, "codes");
  EXPECT_EQ(c[0].kind, ComponentKind::Codes);
  EXPECT_TRUE(c[0].elementType == i32());
  EXPECT_EQ(shapeOf(c[0]), (std::vector<int64_t>{8, 16}));
  EXPECT_EQ(c[1].name, "absmax");
  EXPECT_EQ(c[1].kind, ComponentKind::Scale);
  EXPECT_TRUE(c[1].elementType == f32());
  EXPECT_EQ(shapeOf(c[1]), (std::vector<int64_t>{8, 2}));

  // Double quantization, K = 192, block 32: 6 absmax values per row, 8-bit codes
  // in ceil(48 / 32) = 2 words, ceil(6 / 4) = 2 second-level scales per row.
  auto dq = nf4(32, true, 4);
  c = dq.getComponents(4, 192);
  ASSERT_EQ(c.size(), 4u);
  EXPECT_EQ(c[0].name, "codes");
  EXPECT_EQ(shapeOf(c[0]), (std::vector<int64_t>{4, 24}));
  EXPECT_EQ(c[1].name, "absmax_codes");
  EXPECT_EQ(c[1].kind, ComponentKind::Codes);
  EXPECT_TRUE(c[1].isInteger());
  EXPECT_TRUE(c[1].elementType == i32());
  EXPECT_EQ(shapeOf(c[1]), (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(c[2].name, "absmax_scales");
  EXPECT_EQ(c[2].kind, ComponentKind::Scale);
  EXPECT_TRUE(c[2].elementType == f32());
  EXPECT_EQ(shapeOf(c[2]), (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(c[3].name, "absmax_offset");
  EXPECT_EQ(c[3].kind, ComponentKind::Zero);
  EXPECT_TRUE(c[3].elementType == f32());
  EXPECT_EQ(shapeOf(c[3]), (std::vector<int64_t>{1}));

  // Defaults: block 64, no double quantization, dq_block 256.
  auto parsed = llvm::cast<NF4FormatAttr>(mlir::parseAttribute("#qtune.nf4<>", &ctx));
  EXPECT_EQ(parsed.getBlock(), 64);
  EXPECT_FALSE(parsed.getDoubleQuant());
  EXPECT_EQ(parsed.getDqBlock(), 256);
}

TEST_F(FormatsTest, LutComponents) {
  auto perTensor = lut(3, 0);
  EXPECT_EQ(perTensor.getBits(), 3u);
  EXPECT_EQ(perTensor.getGroupSize(96), 96);
  auto c = perTensor.getComponents(4, 96);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].name, "codes");
  EXPECT_EQ(c[0].kind, ComponentKind::Codes);
  EXPECT_TRUE(c[0].elementType == i32());
  EXPECT_EQ(shapeOf(c[0]), (std::vector<int64_t>{4, 9}));
  EXPECT_EQ(c[1].name, "table");
  EXPECT_EQ(c[1].kind, ComponentKind::Table);
  EXPECT_FALSE(c[1].isInteger());
  EXPECT_TRUE(c[1].elementType == f32());
  EXPECT_EQ(shapeOf(c[1]), (std::vector<int64_t>{8}));

  auto perGroup = lut(4, 32);
  EXPECT_EQ(perGroup.getGroupSize(64), 32);
  c = perGroup.getComponents(4, 64);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(shapeOf(c[0]), (std::vector<int64_t>{4, 8}));
  EXPECT_EQ(shapeOf(c[1]), (std::vector<int64_t>{4, 2, 16}));

  // group = K: one table per row.
  c = lut(1, 7).getComponents(3, 7);
  EXPECT_EQ(shapeOf(c[0]), (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(shapeOf(c[1]), (std::vector<int64_t>{3, 1, 2}));
}

/// The interface answers like the attributes themselves.
TEST_F(FormatsTest, InterfaceDispatch) {
  QuantFormatAttrInterface fmts[] = {uniform(3, 32, false, f16()), nf4(16, true, 2),
                                     lut(5, 0)};
  unsigned bits[] = {3, 4, 5};
  int64_t groups[] = {32, 16, 64};
  size_t counts[] = {3, 4, 2};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(fmts[i].getBits(), bits[i]);
    EXPECT_EQ(fmts[i].getGroupSize(64), groups[i]);
    EXPECT_EQ(fmts[i].getComponents(2, 64).size(), counts[i]);
  }
}

//===----------------------------------------------------------------------===//
// Verification
//===----------------------------------------------------------------------===//

TEST_F(FormatsTest, VerifyShape) {
  DiagnosticCapture diags(&ctx);
  auto emit = diags.emitter();

  EXPECT_TRUE(mlir::succeeded(uniform(4, 32, false, bf16()).verifyShape(4, 128, emit)));
  EXPECT_TRUE(mlir::succeeded(uniform(3, 0, true, f32()).verifyShape(4, 100, emit)));
  EXPECT_TRUE(mlir::succeeded(nf4(64).verifyShape(4, 192, emit)));
  EXPECT_TRUE(mlir::succeeded(lut(3, 0).verifyShape(4, 33, emit)));
  EXPECT_TRUE(mlir::succeeded(lut(3, 33).verifyShape(4, 33, emit)));
  EXPECT_TRUE(diags.messages.empty());

  EXPECT_TRUE(mlir::failed(uniform(4, 32, false, bf16()).verifyShape(4, 100, emit)));
  EXPECT_TRUE(mlir::failed(nf4(64).verifyShape(4, 96, emit)));
  EXPECT_TRUE(mlir::failed(lut(4, 40).verifyShape(4, 100, emit)));
  ASSERT_EQ(diags.messages.size(), 3u);
  EXPECT_EQ(diags.messages[0], "#qtune.uniform: group = 32 does not divide K = 100");
  EXPECT_EQ(diags.messages[1], "#qtune.nf4: block = 64 does not divide K = 96");
  EXPECT_EQ(diags.messages[2], "#qtune.lut: group = 40 does not divide K = 100");
}

TEST_F(FormatsTest, VerifyParameters) {
  DiagnosticCapture diags(&ctx);
  auto emit = diags.emitter();

  // Arguments typed exactly as the generated builders take them.
  auto checkedUniform = [&](unsigned bits, int64_t group, mlir::Type st) {
    return UniformFormatAttr::getChecked(emit, &ctx, bits, group, false, st);
  };
  auto checkedNF4 = [&](int64_t block, bool dq, int64_t dqBlock) {
    return NF4FormatAttr::getChecked(emit, &ctx, block, dq, dqBlock);
  };
  auto checkedLut = [&](unsigned bits, int64_t group) {
    return LutFormatAttr::getChecked(emit, &ctx, bits, group);
  };

  for (unsigned bits : {2u, 3u, 4u, 8u})
    EXPECT_TRUE(checkedUniform(bits, 0, f32()));
  for (unsigned bits : {0u, 1u, 5u, 6u, 7u, 16u})
    EXPECT_FALSE(checkedUniform(bits, 0, f32())) << "bits = " << bits;
  EXPECT_FALSE(checkedUniform(4, -8, f32()));
  EXPECT_FALSE(checkedUniform(4, 0, i32()));

  EXPECT_TRUE(checkedNF4(1, true, 1));
  EXPECT_FALSE(checkedNF4(0, false, 256));
  EXPECT_FALSE(checkedNF4(-64, false, 256));
  EXPECT_FALSE(checkedNF4(64, true, 0));
  EXPECT_FALSE(checkedNF4(64, true, -1));

  for (unsigned bits = 1; bits <= 8; ++bits)
    EXPECT_TRUE(checkedLut(bits, 0));
  EXPECT_FALSE(checkedLut(0, 0));
  EXPECT_FALSE(checkedLut(9, 0));
  EXPECT_FALSE(checkedLut(4, -16));

  ASSERT_EQ(diags.messages.size(), 15u);
  EXPECT_EQ(diags.messages[0], "#qtune.uniform: bits must be 2, 3, 4 or 8, got 0");
  EXPECT_EQ(diags.messages[6],
            "#qtune.uniform: group must be positive (or 0 for per channel), got -8");
  EXPECT_EQ(diags.messages[7],
            "#qtune.uniform: scale_type must be a float type, got 'i32'");
  EXPECT_EQ(diags.messages[8], "#qtune.nf4: block must be positive, got 0");
  EXPECT_EQ(diags.messages[10], "#qtune.nf4: dq_block must be positive, got 0");
  EXPECT_EQ(diags.messages[12], "#qtune.lut: bits must be in [1, 8], got 0");
  EXPECT_EQ(diags.messages[14], "#qtune.lut: group must be positive (or 0 for one "
                                "table per tensor), got -16");
}

//===----------------------------------------------------------------------===//
// #qtune.uniform
//===----------------------------------------------------------------------===//

/// Round to nearest: every weight lands within half a step (its group's scale) of
/// its reconstruction.
TEST_F(FormatsTest, UniformQuantizeWithinHalfStep) {
  struct Shape {
    int64_t group, k;
  };
  const int64_t n = 6;
  uint32_t seed = 1;
  for (unsigned bits : {2u, 3u, 4u, 8u})
    for (Shape shape : {Shape{32, 128}, Shape{64, 128}, Shape{0, 100}, Shape{0, 37}})
      for (bool symmetric : {false, true})
        for (mlir::Type st : {f32(), bf16(), f16()}) {
          auto fmt = uniform(bits, shape.group, symmetric, st);
          int64_t k = shape.k, gs = fmt.getGroupSize(k), groups = k / gs;
          SCOPED_TRACE(describe(fmt) + " k = " + std::to_string(k));
          std::vector<double> w = gaussian(n, k, seed++, 0.05);
          llvm::SmallVector<HostTensor> comps = fmt.quantize(n, k, w, {});
          expectComponentShapes(fmt, n, k, comps);
          ASSERT_EQ(comps.size(), symmetric ? 2u : 3u);
          std::vector<uint32_t> codes = codesOf(comps[0], n, k, bits);
          for (uint32_t q : codes)
            ASSERT_LT(q, 1u << bits);
          for (size_t i = 1; i < comps.size(); ++i)
            for (double v : comps[i].data)
              EXPECT_TRUE(representable(v, st))
                  << "component " << i << " value " << v << " is not a "
                  << describe(st);
          std::vector<double> deq = dequantize(fmt, n, k, comps);
          for (int64_t r = 0; r < n; ++r)
            for (int64_t c = 0; c < k; ++c) {
              double s = comps[1].data[r * groups + c / gs];
              ASSERT_GT(s, 0.0);
              double err = std::fabs(w[r * k + c] - deq[r * k + c]);
              ASSERT_LE(err, 0.5 * s * (1 + 1e-9) + 1e-15)
                  << "row " << r << ", col " << c << ": w = " << w[r * k + c]
                  << ", dequantized " << deq[r * k + c] << ", step " << s;
            }
          // Symmetric: the zero point is 2^(bits-1) and zero is on the grid.
          if (symmetric) {
            std::vector<double> zeros(n * k, 0.0);
            llvm::SmallVector<HostTensor> z = fmt.quantize(n, k, zeros, {});
            for (double v : dequantize(fmt, n, k, z))
              EXPECT_EQ(v, 0.0);
          }
        }
}

/// Quantizes rows that are all positive, all negative, constant and zero (groups
/// whose zero point lies outside [0, 2^bits)) and checks the half-step bound.
void checkOffsetGroups(UniformFormatAttr fmt) {
  const int64_t n = 4, k = 64, gs = 32, groups = k / gs;
  SCOPED_TRACE(describe(fmt));
  std::vector<double> w = gaussian(n, k, 7 + fmt.getBits(), 0.01);
  for (int64_t c = 0; c < k; ++c) {
    w[0 * k + c] = 0.5 + std::fabs(w[0 * k + c]);
    w[1 * k + c] = -0.25 - std::fabs(w[1 * k + c]);
    w[2 * k + c] = 0.375;
    w[3 * k + c] = 0.0;
  }
  llvm::SmallVector<HostTensor> comps = fmt.quantize(n, k, w, {});
  std::vector<double> deq = dequantize(fmt, n, k, comps);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) {
      double s = comps[1].data[r * groups + c / gs];
      EXPECT_LE(std::fabs(w[r * k + c] - deq[r * k + c]),
                0.5 * s * (1 + 1e-9) + 1e-15)
          << "row " << r << ", col " << c << ": w = " << w[r * k + c]
          << ", dequantized " << deq[r * k + c] << ", step " << s << ", zero "
          << comps[2].data[r * groups + c / gs];
    }
  // A zero row is reconstructed exactly (the constant row 0.375 only within
  // half a step, checked above: the range always includes 0).
  for (int64_t c = 0; c < k; ++c)
    EXPECT_EQ(deq[3 * k + c], 0.0);
}

/// The half-step bound also holds for groups that do not contain zero
/// (asymmetric zero points outside [0, 2^bits)), with f32 scales and zeros.
TEST_F(FormatsTest, UniformQuantizeOffsetGroups) {
  for (unsigned bits : {2u, 3u, 4u, 8u})
    checkOffsetGroups(uniform(bits, 32, false, f32()));
}

/// Same with bf16 / f16 zero points: a group far from zero must not get an
/// integer zero point (e.g. -351) that bf16 cannot hold; the quantizer widens
/// each group's range to include 0 so z stays in [0, 2^bits).
TEST_F(FormatsTest, UniformQuantizeOffsetGroupsLowPrecisionZeros) {
  for (unsigned bits : {2u, 3u, 4u, 8u})
    for (mlir::Type st : {bf16(), f16()})
      checkOffsetGroups(uniform(bits, 32, false, st));
}

/// Dequantization of hand-built components: w = s · (q − z).
TEST_F(FormatsTest, UniformDequantizeAsymmetric) {
  auto fmt = uniform(4, 4, false, f32());
  const int64_t n = 2, k = 8;
  // Row 0 codes 0,1,2,3 | 15,14,13,12; row 1 codes 5,5,5,5 | 8,0,7,1: nibbles
  // from element 0 (lowest) up.
  HostTensor codes({2, 1}, std::vector<double>{double(0xCDEF3210u),
                                               double(0x17085555u)});
  HostTensor scales({2, 2}, std::vector<double>{0.5, 2.0, 0.25, -1.0});
  HostTensor zeros({2, 2}, std::vector<double>{1.0, 8.0, 4.0, 7.5});
  std::vector<double> expected = {
      0.5 * (0 - 1),   0.5 * (1 - 1),  0.5 * (2 - 1),   0.5 * (3 - 1),
      2.0 * (15 - 8),  2.0 * (14 - 8), 2.0 * (13 - 8),  2.0 * (12 - 8),
      0.25 * (5 - 4),  0.25 * (5 - 4), 0.25 * (5 - 4),  0.25 * (5 - 4),
      -1.0 * (8 - 7.5), -1.0 * (0 - 7.5), -1.0 * (7 - 7.5), -1.0 * (1 - 7.5)};
  EXPECT_EQ(expected[0], -0.5);
  EXPECT_EQ(expected[4], 14.0);
  EXPECT_EQ(expected[13], 7.5);
  std::vector<double> got = dequantize(fmt, n, k, {codes, scales, zeros});
  for (int64_t i = 0; i < n * k; ++i)
    EXPECT_DOUBLE_EQ(got[i], expected[i]) << "element " << i;

  // Packed words given as signed 32-bit values (as read from i32 data) mean the
  // same codes.
  HostTensor signedCodes({2, 1}, std::vector<double>{
                                     double(int32_t(0xCDEF3210u)),
                                     double(int32_t(0x17085555u))});
  ASSERT_LT(signedCodes.data[0], 0.0);
  got = dequantize(fmt, n, k, {signedCodes, scales, zeros});
  for (int64_t i = 0; i < n * k; ++i)
    EXPECT_DOUBLE_EQ(got[i], expected[i]) << "element " << i;
}

TEST_F(FormatsTest, UniformDequantizeSymmetric) {
  // 3 bits per channel, K = 11 (codes straddle words): w = s · (q − 4).
  auto fmt = uniform(3, 0, true, bf16());
  std::vector<uint32_t> q = {0, 1, 2, 3, 4, 5, 6, 7, 7, 0, 3};
  HostTensor scales({1, 1}, std::vector<double>{0.5});
  std::vector<double> got =
      dequantize(fmt, 1, 11, {codesTensor(q, 1, 11, 3), scales});
  std::vector<double> expected = {-2.0, -1.5, -1.0, -0.5, 0.0, 0.5,
                                  1.0,  1.5,  1.5,  -2.0, -0.5};
  for (int i = 0; i < 11; ++i)
    EXPECT_DOUBLE_EQ(got[i], expected[i]) << "element " << i;

  // 2 bits, group 2: w = s · (q − 2).
  auto f2 = uniform(2, 2, true, f32());
  std::vector<uint32_t> q2 = {0, 1, 2, 3};
  HostTensor s2({1, 2}, std::vector<double>{1.0, 0.125});
  got = dequantize(f2, 1, 4, {codesTensor(q2, 1, 4, 2), s2});
  EXPECT_DOUBLE_EQ(got[0], -2.0);
  EXPECT_DOUBLE_EQ(got[1], -1.0);
  EXPECT_DOUBLE_EQ(got[2], 0.0);
  EXPECT_DOUBLE_EQ(got[3], 0.125);

  // 8 bits: w = s · (q − 128).
  auto f8 = uniform(8, 0, true, f32());
  std::vector<uint32_t> q8 = {0, 127, 128, 255, 200};
  HostTensor s8({1, 1}, std::vector<double>{0.01});
  got = dequantize(f8, 1, 5, {codesTensor(q8, 1, 5, 8), s8});
  EXPECT_DOUBLE_EQ(got[0], -1.28);
  EXPECT_DOUBLE_EQ(got[1], -0.01);
  EXPECT_DOUBLE_EQ(got[2], 0.0);
  EXPECT_DOUBLE_EQ(got[3], 1.27);
  EXPECT_DOUBLE_EQ(got[4], 0.72);
}

//===----------------------------------------------------------------------===//
// #qtune.nf4
//===----------------------------------------------------------------------===//

TEST_F(FormatsTest, NF4Table) {
  llvm::ArrayRef<double> t = NF4FormatAttr::getTable();
  const double expected[16] = {-1.0,
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
  ASSERT_EQ(t.size(), 16u);
  for (int i = 0; i < 16; ++i)
    EXPECT_EQ(t[i], expected[i]) << "entry " << i;
  for (int i = 1; i < 16; ++i)
    EXPECT_LT(t[i - 1], t[i]) << "entry " << i;
  EXPECT_EQ(std::count(t.begin(), t.end(), 0.0), 1);
  EXPECT_EQ(t[7], 0.0);
  EXPECT_EQ(t.front(), -1.0);
  EXPECT_EQ(t.back(), 1.0);
}

TEST_F(FormatsTest, NF4DequantizeHandBuilt) {
  // Two blocks of 4: absmax 2 and 0.5.
  auto fmt = nf4(4);
  std::vector<uint32_t> q = {0, 7, 15, 8, 1, 14, 7, 0};
  HostTensor absmax({1, 2}, std::vector<double>{2.0, 0.5});
  std::vector<double> got =
      dequantize(fmt, 1, 8, {codesTensor(q, 1, 8, 4), absmax});
  std::vector<double> expected = {-2.0,
                                  0.0,
                                  2.0,
                                  2.0 * 0.07958029955625534,
                                  0.5 * -0.6961928009986877,
                                  0.5 * 0.7229568362236023,
                                  0.0,
                                  -0.5};
  for (int i = 0; i < 8; ++i)
    EXPECT_DOUBLE_EQ(got[i], expected[i]) << "element " << i;

  // Double quantization: block 4, dq_block 2, K = 12 (3 blocks, 2 second-level
  // scales). absmax = offset + s2 · (c − 128) = 1 + 0.5 · 2, 1 + 0.5 · (−2),
  // 1 + 0.125 · 4 = 2, 0, 1.5.
  auto dq = nf4(4, true, 2);
  std::vector<uint32_t> q12 = {15, 0, 7, 11, 15, 15, 0, 0, 13, 2, 15, 7};
  HostTensor acodes({1, 1}, std::vector<double>{
                                double(130u | (126u << 8) | (132u << 16))});
  HostTensor ascales({1, 2}, std::vector<double>{0.5, 0.125});
  HostTensor aoffset({1}, std::vector<double>{1.0});
  got = dequantize(dq, 1, 12,
                   {codesTensor(q12, 1, 12, 4), acodes, ascales, aoffset});
  expected = {2.0,  -2.0, 0.0, 2.0 * 0.33791524171829224,
              0.0,  0.0,  0.0, 0.0,
              1.5 * 0.5626170039176941, 1.5 * -0.5250730514526367, 1.5, 0.0};
  for (int i = 0; i < 12; ++i)
    EXPECT_DOUBLE_EQ(got[i], expected[i]) << "element " << i;
}

/// Each code is the table entry nearest to w / absmax, absmax being the block's
/// largest magnitude (rounded up to f32).
TEST_F(FormatsTest, NF4QuantizeNearest) {
  llvm::ArrayRef<double> t = NF4FormatAttr::getTable();
  const int64_t n = 3, k = 128, bs = 32, nb = k / bs;
  auto fmt = nf4(bs);
  std::vector<double> w = gaussian(n, k, 42, 0.02);
  for (int64_t c = 0; c < bs; ++c)
    w[2 * k + c] = 0.0; // a block of zeros
  llvm::SmallVector<HostTensor> comps = fmt.quantize(n, k, w, {});
  expectComponentShapes(fmt, n, k, comps);
  ASSERT_EQ(comps.size(), 2u);
  std::vector<uint32_t> codes = codesOf(comps[0], n, k, 4);
  std::vector<double> deq = dequantize(fmt, n, k, comps);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      double m = 0;
      for (int64_t j = 0; j < bs; ++j)
        m = std::max(m, std::fabs(w[r * k + b * bs + j]));
      double a = comps[1].data[r * nb + b];
      EXPECT_TRUE(representable(a, f32()));
      EXPECT_GE(a, m);
      EXPECT_LE(a, m * (1 + 1.2e-7));
      for (int64_t j = 0; j < bs; ++j) {
        int64_t i = r * k + b * bs + j;
        uint32_t q = codes[i];
        ASSERT_LT(q, 16u);
        if (a == 0) {
          EXPECT_EQ(q, 7u);
          EXPECT_EQ(deq[i], 0.0);
          continue;
        }
        double x = w[i] / a;
        for (int e = 0; e < 16; ++e)
          EXPECT_LE(std::fabs(x - t[q]), std::fabs(x - t[e]) + 1e-15)
              << "element " << i << " (x = " << x << ") has code " << q
              << " but entry " << e << " is nearer";
        if (std::fabs(w[i]) == m) {
          EXPECT_TRUE(q == 0 || q == 15);
        }
        EXPECT_DOUBLE_EQ(deq[i], a * t[q]);
      }
    }
}

/// Double quantization: the decoded absmax is within half a second-level step of
/// the true one, and the weight stays close to the one without it.
TEST_F(FormatsTest, NF4DoubleQuantRoundTrip) {
  const int64_t n = 3, bs = 16, k = bs * 10, nb = 10, dqb = 4;
  const int64_t spr = (nb + dqb - 1) / dqb; // 3 (the last block is partial)
  auto plain = nf4(bs);
  auto dq = nf4(bs, true, dqb);
  std::vector<double> w = gaussian(n, k, 5, 0.03);
  llvm::SmallVector<HostTensor> pc = plain.quantize(n, k, w, {});
  llvm::SmallVector<HostTensor> dc = dq.quantize(n, k, w, {});
  expectComponentShapes(dq, n, k, dc);
  ASSERT_EQ(dc.size(), 4u);
  ASSERT_EQ(dc[2].shape, (std::vector<int64_t>{n, spr}));

  std::vector<uint32_t> acodes = codesOf(dc[1], n, nb, 8);
  double offset = dc[3].data[0];
  EXPECT_TRUE(representable(offset, f32()));
  std::vector<double> decoded(n * nb);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      double s2 = dc[2].data[r * spr + b / dqb];
      EXPECT_TRUE(representable(s2, f32()));
      EXPECT_GT(s2, 0.0);
      ASSERT_LT(acodes[r * nb + b], 256u);
      double a = offset + s2 * (double(acodes[r * nb + b]) - 128.0);
      decoded[r * nb + b] = a;
      double trueAbsmax = 0;
      for (int64_t j = 0; j < bs; ++j)
        trueAbsmax = std::max(trueAbsmax, std::fabs(w[r * k + b * bs + j]));
      EXPECT_LE(std::fabs(a - pc[1].data[r * nb + b]), 0.5 * s2 * (1 + 1e-9))
          << "row " << r << ", block " << b;
      EXPECT_LE(std::fabs(a - trueAbsmax), 0.5 * s2 * (1 + 1e-9) + 1e-7 * trueAbsmax)
          << "row " << r << ", block " << b;
      // The second-level step is fine: a few thousandths of the absmax.
      EXPECT_LT(s2, 0.02 * trueAbsmax);
    }

  // Codes are the nearest entries to w / decoded absmax, and the reconstruction
  // is decoded absmax · NF4[q].
  llvm::ArrayRef<double> t = NF4FormatAttr::getTable();
  std::vector<uint32_t> codes = codesOf(dc[0], n, k, 4);
  std::vector<double> deqDQ = dequantize(dq, n, k, dc);
  std::vector<double> deqPlain = dequantize(plain, n, k, pc);
  double maxGap = 0;
  for (int i = 1; i < 16; ++i)
    maxGap = std::max(maxGap, t[i] - t[i - 1]);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) {
      int64_t i = r * k + c;
      double a = decoded[r * nb + c / bs];
      double x = w[i] / a;
      for (int e = 0; e < 16; ++e)
        EXPECT_LE(std::fabs(x - t[codes[i]]), std::fabs(x - t[e]) + 1e-15);
      EXPECT_NEAR(deqDQ[i], a * t[codes[i]], 1e-15);
      double s2 = dc[2].data[r * spr + (c / bs) / dqb];
      EXPECT_LE(std::fabs(deqDQ[i] - deqPlain[i]),
                0.5 * s2 + pc[1].data[r * nb + c / bs] * maxGap)
          << "element " << i;
    }
  // In aggregate the error barely grows.
  double msePlain = meanSquaredError(w, deqPlain);
  double mseDQ = meanSquaredError(w, deqDQ);
  EXPECT_LE(mseDQ, 1.05 * msePlain) << "plain " << msePlain << ", dq " << mseDQ;
  EXPECT_LE(meanSquaredError(deqDQ, deqPlain), 0.05 * msePlain);
}

//===----------------------------------------------------------------------===//
// #qtune.lut
//===----------------------------------------------------------------------===//

TEST_F(FormatsTest, LutDequantizePerTensor) {
  auto fmt = lut(3, 0);
  const double table[8] = {-2.0, -1.0, -0.5, 0.0, 0.25, 0.75, 1.5, 4.0};
  std::vector<uint32_t> q = {7, 0, 1, 2, 3, 4, 5, 6, 7, 3, 0,
                             1, 1, 6, 6, 2, 5, 0, 7, 4, 4, 3};
  HostTensor tab({8}, std::vector<double>(table, table + 8));
  std::vector<double> got =
      dequantize(fmt, 2, 11, {codesTensor(q, 2, 11, 3), tab});
  std::vector<double> expected = {4.0,  -2.0, -1.0, -0.5, 0.0,  0.25,
                                  0.75, 1.5,  4.0,  0.0,  -2.0, // row 0
                                  -1.0, -1.0, 1.5,  1.5,  -0.5, 0.75,
                                  -2.0, 4.0,  0.25, 0.25, 0.0}; // row 1
  for (int i = 0; i < 22; ++i)
    EXPECT_EQ(got[i], expected[i]) << "element " << i;
}

TEST_F(FormatsTest, LutDequantizePerGroup) {
  // 2 bits, group 4, K = 8: table[n, g, 4]. Tables need not be sorted.
  auto fmt = lut(2, 4);
  HostTensor tab({2, 2, 4}, std::vector<double>{
                                -1, 0, 1, 2,           // row 0, group 0
                                10, 20, 30, 40,        // row 0, group 1
                                0.5, -0.5, 0.25, -0.25, // row 1, group 0
                                100, 200, 300, 400});  // row 1, group 1
  // Row 0 codes 0,1,2,3,3,2,1,0 and row 1 codes 1,1,0,3,2,0,3,1, 2 bits each.
  HostTensor codes({2, 1}, std::vector<double>{
                               double(0u | 1u << 2 | 2u << 4 | 3u << 6 |
                                      3u << 8 | 2u << 10 | 1u << 12 | 0u << 14),
                               double(1u | 1u << 2 | 0u << 4 | 3u << 6 |
                                      2u << 8 | 0u << 10 | 3u << 12 | 1u << 14)});
  EXPECT_EQ(codes.data[0], double(0x1BE4));
  EXPECT_EQ(codes.data[1], double(0x72C5));
  std::vector<double> got = dequantize(fmt, 2, 8, {codes, tab});
  std::vector<double> expected = {-1,   0,    1,   2,     40,  30,  20,  10,
                                  -0.5, -0.5, 0.5, -0.25, 300, 100, 400, 200};
  for (int i = 0; i < 16; ++i)
    EXPECT_EQ(got[i], expected[i]) << "element " << i;
}

/// With a given table, each weight gets the nearest entry (tables unsorted).
TEST_F(FormatsTest, LutQuantizeGivenTable) {
  // Per tensor, 3 bits, values exact in f32, deliberately unsorted.
  {
    const int64_t n = 4, k = 33;
    auto fmt = lut(3, 0);
    std::vector<double> table = {0.5, -1.0, 0.125, 2.0, -0.25, 0.0, -3.0, 1.0};
    std::vector<double> w = gaussian(n, k, 11, 1.2);
    llvm::SmallVector<HostTensor> given = {HostTensor(), HostTensor({8}, table)};
    llvm::SmallVector<HostTensor> comps = fmt.quantize(n, k, w, given);
    expectComponentShapes(fmt, n, k, comps);
    EXPECT_EQ(comps[1].data, table);
    std::vector<uint32_t> codes = codesOf(comps[0], n, k, 3);
    std::vector<double> deq = dequantize(fmt, n, k, comps);
    for (int64_t i = 0; i < n * k; ++i) {
      for (int j = 0; j < 8; ++j)
        EXPECT_LE(std::fabs(w[i] - table[codes[i]]), std::fabs(w[i] - table[j]))
            << "element " << i;
      EXPECT_EQ(deq[i], table[codes[i]]);
    }
  }
  // Per group: each group is quantized with its own table.
  {
    const int64_t n = 2, k = 12, gs = 4, groups = 3;
    auto fmt = lut(2, gs);
    std::vector<double> table(n * groups * 4);
    for (int64_t t = 0; t < n * groups; ++t)
      for (int j = 0; j < 4; ++j)
        table[t * 4 + j] = (t + 1) * 0.25 * (j - 1.5) + 0.125 * t; // exact
    std::vector<double> w = gaussian(n, k, 12, 1.0);
    llvm::SmallVector<HostTensor> given = {HostTensor(),
                                           HostTensor({n, groups, 4}, table)};
    llvm::SmallVector<HostTensor> comps = fmt.quantize(n, k, w, given);
    expectComponentShapes(fmt, n, k, comps);
    EXPECT_EQ(comps[1].data, table);
    std::vector<uint32_t> codes = codesOf(comps[0], n, k, 2);
    std::vector<double> deq = dequantize(fmt, n, k, comps);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        int64_t i = r * k + c;
        const double *tab = &table[(r * groups + c / gs) * 4];
        for (int j = 0; j < 4; ++j)
          EXPECT_LE(std::fabs(w[i] - tab[codes[i]]), std::fabs(w[i] - tab[j]))
              << "element " << i;
        EXPECT_EQ(deq[i], tab[codes[i]]);
      }
  }
}

/// Without a table, quantize fits a codebook; on Gaussian data it reconstructs
/// better than uniform quantization with as many levels at the same granularity.
TEST_F(FormatsTest, LutFittedCodebookBeatsUniform) {
  const int64_t n = 8, k = 256;
  for (unsigned bits : {2u, 3u, 4u}) {
    std::vector<double> w = gaussian(n, k, 100 + bits);
    struct Pair {
      int64_t lutGroup, uniformGroup;
    };
    // One table per row vs one scale per row; one table per group of 64 vs one
    // scale per group of 64; one table for the tensor vs one scale per row.
    for (Pair p : {Pair{k, 0}, Pair{64, 64}, Pair{0, 0}}) {
      auto lf = lut(bits, p.lutGroup);
      auto uf = uniform(bits, p.uniformGroup, false, f32());
      SCOPED_TRACE(describe(lf) + " vs " + describe(uf));
      llvm::SmallVector<HostTensor> lc = lf.quantize(n, k, w, {});
      expectComponentShapes(lf, n, k, lc);
      int64_t entries = int64_t(1) << bits;
      // Fitted tables are ascending, f32 values.
      for (int64_t t = 0; t < lc[1].numElements() / entries; ++t)
        for (int64_t j = 0; j < entries; ++j) {
          double v = lc[1].data[t * entries + j];
          EXPECT_TRUE(representable(v, f32()));
          if (j > 0) {
            EXPECT_LE(lc[1].data[t * entries + j - 1], v);
          }
        }
      double mseLut = meanSquaredError(w, dequantize(lf, n, k, lc));
      double mseUniform =
          meanSquaredError(w, dequantize(uf, n, k, uf.quantize(n, k, w, {})));
      EXPECT_LT(mseLut, mseUniform) << "lut " << mseLut << ", uniform " << mseUniform;
    }
  }
}

/// An empty `given` table means "fit one".
TEST_F(FormatsTest, LutQuantizeEmptyGivenFits) {
  const int64_t n = 2, k = 32;
  auto fmt = lut(2, 0);
  std::vector<double> w = gaussian(n, k, 3);
  llvm::SmallVector<HostTensor> a = fmt.quantize(n, k, w, {});
  llvm::SmallVector<HostTensor> b =
      fmt.quantize(n, k, w, {HostTensor(), HostTensor()});
  EXPECT_EQ(a[0].data, b[0].data);
  EXPECT_EQ(a[1].data, b[1].data);
}

//===----------------------------------------------------------------------===//
// dequantizeVJP
//===----------------------------------------------------------------------===//

/// For every float component of every format, the VJP equals the central finite
/// difference of Σ grad · dequantize; integer components get zeros.
TEST_F(FormatsTest, DequantizeVJPMatchesFiniteDifferences) {
  struct Case {
    QuantFormatAttrInterface fmt;
    int64_t n, k;
  };
  std::vector<Case> cases = {
      {uniform(4, 32, false, f32()), 3, 64},
      {uniform(4, 16, true, f32()), 2, 48},
      {uniform(3, 0, false, bf16()), 3, 33},
      {uniform(3, 0, true, bf16()), 2, 33},
      {uniform(2, 16, false, f16()), 2, 48},
      {uniform(8, 0, false, bf16()), 2, 20},
      {uniform(8, 10, true, f32()), 2, 20},
      {nf4(16), 3, 64},
      {nf4(16, true, 3), 2, 160},
      {nf4(8, true, 256), 2, 24},
      {lut(3, 0), 3, 33},
      {lut(2, 8), 2, 32},
      {lut(4, 16), 2, 16},
  };
  uint32_t seed = 1000;
  for (const Case &tc : cases) {
    QuantFormatAttrInterface fmt = tc.fmt;
    int64_t n = tc.n, k = tc.k;
    SCOPED_TRACE(describe(fmt) + " " + std::to_string(n) + "x" +
                 std::to_string(k));
    std::vector<double> w = gaussian(n, k, seed++);
    llvm::SmallVector<HostTensor> comps = fmt.quantize(n, k, w, {});
    expectComponentShapes(fmt, n, k, comps);
    std::vector<double> grad = gaussian(n, k, seed++);
    llvm::SmallVector<ComponentSpec> specs = fmt.getComponents(n, k);

    auto loss = [&](llvm::ArrayRef<HostTensor> cs) {
      std::vector<double> d = dequantize(fmt, n, k, cs);
      double s = 0;
      for (int64_t i = 0; i < n * k; ++i)
        s += grad[i] * d[i];
      return s;
    };

    for (unsigned idx = 0; idx < specs.size(); ++idx) {
      SCOPED_TRACE("component " + specs[idx].name);
      HostTensor vjp = fmt.dequantizeVJP(n, k, idx, comps, grad);
      ASSERT_EQ(vjp.shape, comps[idx].shape);
      ASSERT_EQ(vjp.data.size(), comps[idx].data.size());
      if (specs[idx].isInteger()) {
        for (double v : vjp.data)
          EXPECT_EQ(v, 0.0);
        continue;
      }
      bool anyNonZero = false;
      for (size_t e = 0; e < comps[idx].data.size(); ++e) {
        const double h = 1e-3;
        llvm::SmallVector<HostTensor> plus(comps.begin(), comps.end());
        llvm::SmallVector<HostTensor> minus(comps.begin(), comps.end());
        plus[idx].data[e] += h;
        minus[idx].data[e] -= h;
        double fd = (loss(plus) - loss(minus)) / (2 * h);
        EXPECT_NEAR(vjp.data[e], fd, 1e-7 * (1 + std::fabs(fd)))
            << "element " << e;
        anyNonZero |= vjp.data[e] != 0.0;
      }
      EXPECT_TRUE(anyNonZero);
    }
  }
}

/// The VJP with respect to a per-tensor table is the histogram of grad by code.
TEST_F(FormatsTest, LutVJPHandComputed) {
  auto fmt = lut(2, 0);
  std::vector<uint32_t> q = {0, 1, 1, 3, 3, 3};
  HostTensor table({4}, std::vector<double>{-1, 0, 1, 2});
  std::vector<double> grad = {1, 2, 3, 4, 5, 6};
  llvm::SmallVector<HostTensor> comps = {codesTensor(q, 2, 3, 2), table};
  HostTensor g = fmt.dequantizeVJP(2, 3, 1, comps, grad);
  ASSERT_EQ(g.shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(g.data, (std::vector<double>{1, 5, 0, 15}));
  HostTensor gc = fmt.dequantizeVJP(2, 3, 0, comps, grad);
  EXPECT_EQ(gc.shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(gc.data, (std::vector<double>{0, 0}));
}

/// Uniform: ∂L/∂s = Σ g · (q − z) and ∂L/∂z = −s · Σ g, per group.
TEST_F(FormatsTest, UniformVJPHandComputed) {
  auto fmt = uniform(2, 2, false, f32());
  std::vector<uint32_t> q = {0, 3, 1, 2};
  llvm::SmallVector<HostTensor> comps = {
      codesTensor(q, 1, 4, 2), HostTensor({1, 2}, std::vector<double>{0.5, 2.0}),
      HostTensor({1, 2}, std::vector<double>{1.0, 1.5})};
  std::vector<double> grad = {1.0, -2.0, 0.5, 4.0};
  HostTensor gs = fmt.dequantizeVJP(1, 4, 1, comps, grad);
  HostTensor gz = fmt.dequantizeVJP(1, 4, 2, comps, grad);
  ASSERT_EQ(gs.shape, (std::vector<int64_t>{1, 2}));
  ASSERT_EQ(gz.shape, (std::vector<int64_t>{1, 2}));
  // Group 0: g = (1, −2), q − z = (−1, 2); group 1: g = (0.5, 4), q − z = (−0.5, 0.5).
  EXPECT_DOUBLE_EQ(gs.data[0], 1.0 * -1 + -2.0 * 2);
  EXPECT_DOUBLE_EQ(gs.data[1], 0.5 * -0.5 + 4.0 * 0.5);
  EXPECT_DOUBLE_EQ(gz.data[0], -0.5 * (1.0 - 2.0));
  EXPECT_DOUBLE_EQ(gz.data[1], -2.0 * (0.5 + 4.0));
}

} // namespace
