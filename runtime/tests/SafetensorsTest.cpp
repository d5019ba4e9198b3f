//===- SafetensorsTest.cpp - tests for the safetensors library ------------===//

#include "qtune/runtime/Float16.h"
#include "qtune/runtime/Safetensors.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace qtune;
using namespace qtune::st;

namespace {

// ---- helpers -------------------------------------------------------------------

uint32_t floatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float bitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::string le64(uint64_t v) {
  std::string s;
  for (int i = 0; i < 8; ++i)
    s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}

/// 8-byte little-endian length + header + `dataSize` zero bytes.
std::string rawFile(const std::string &header, size_t dataSize) {
  return le64(header.size()) + header + std::string(dataSize, '\0');
}

template <typename T> std::vector<uint8_t> toBytes(const std::vector<T> &v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!b.empty())
    std::memcpy(b.data(), v.data(), b.size());
  return b;
}

class TempDir : public ::testing::Test {
protected:
  void SetUp() override {
    std::string tmpl =
        (fs::temp_directory_path() / "qtune-st-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string path(const std::string &name) const {
    return (dir_ / name).string();
  }

  void writeRaw(const std::string &p, const std::string &bytes) const {
    std::ofstream os(p, std::ios::binary | std::ios::trunc);
    os.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(os.good());
  }

  std::string readRaw(const std::string &p) const {
    std::ifstream is(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(is), {});
  }

  std::vector<std::string> listDir() const {
    std::vector<std::string> names;
    for (const auto &e : fs::directory_iterator(dir_))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

  /// Opens raw bytes written to a fresh file; expects failure and that the
  /// error names the file and contains every `needles` entry.
  void expectOpenError(const std::string &bytes,
                       const std::vector<std::string> &needles) {
    const std::string p = path("bad-" + std::to_string(counter_++) +
                               ".safetensors");
    writeRaw(p, bytes);
    std::string error;
    std::unique_ptr<File> f = File::open(p, error);
    EXPECT_EQ(f, nullptr);
    EXPECT_NE(error.find(p), std::string::npos) << error;
    for (const std::string &n : needles)
      EXPECT_NE(error.find(n), std::string::npos)
          << "error '" << error << "' lacks '" << n << "'";
  }

  fs::path dir_;
  int counter_ = 0;
};

using SafetensorsTest = TempDir;

// ---- dtypes ----------------------------------------------------------------------

TEST(DTypeTest, NamesSizesAndParse) {
  const std::vector<std::pair<DType, std::pair<const char *, size_t>>> all = {
      {DType::BOOL, {"BOOL", 1}}, {DType::U8, {"U8", 1}},
      {DType::I8, {"I8", 1}},     {DType::I16, {"I16", 2}},
      {DType::U16, {"U16", 2}},   {DType::F16, {"F16", 2}},
      {DType::BF16, {"BF16", 2}}, {DType::I32, {"I32", 4}},
      {DType::U32, {"U32", 4}},   {DType::F32, {"F32", 4}},
      {DType::F64, {"F64", 8}},   {DType::I64, {"I64", 8}},
      {DType::U64, {"U64", 8}},
  };
  for (const auto &[dt, ns] : all) {
    EXPECT_EQ(dtypeName(dt), ns.first);
    EXPECT_EQ(dtypeSize(dt), ns.second);
    ASSERT_TRUE(parseDType(ns.first).has_value());
    EXPECT_EQ(*parseDType(ns.first), dt);
  }
  EXPECT_FALSE(parseDType("f32").has_value());
  EXPECT_FALSE(parseDType("F8_E4M3").has_value());
  EXPECT_FALSE(parseDType("").has_value());
  EXPECT_TRUE(isFloat(DType::F16));
  EXPECT_TRUE(isFloat(DType::BF16));
  EXPECT_TRUE(isFloat(DType::F32));
  EXPECT_TRUE(isFloat(DType::F64));
  EXPECT_FALSE(isFloat(DType::I32));
  EXPECT_FALSE(isFloat(DType::BOOL));
  EXPECT_FALSE(isFloat(DType::U8));
}

TEST(DTypeTest, Numel) {
  TensorInfo t;
  EXPECT_EQ(t.numel(), 1); // 0-d
  t.shape = {2, 3, 4};
  EXPECT_EQ(t.numel(), 24);
  t.shape = {5, 0, 7};
  EXPECT_EQ(t.numel(), 0);
  t.shape = {-1};
  EXPECT_EQ(t.numel(), -1);
  t.shape = {int64_t(1) << 32, int64_t(1) << 32};
  EXPECT_EQ(t.numel(), -1);
}

// ---- Float16.h -------------------------------------------------------------------

TEST(Float16Test, Bf16KnownPatterns) {
  EXPECT_EQ(floatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(floatToBf16(-2.0f), 0xC000);
  EXPECT_EQ(floatToBf16(0.0f), 0x0000);
  EXPECT_EQ(floatToBf16(-0.0f), 0x8000);
  EXPECT_EQ(floatToBf16(0.1f), 0x3DCD);     // 0x3DCCCCCD rounds up
  EXPECT_EQ(floatToBf16(3.14159f), 0x4049); // 0x40490FD0 rounds down
  // Ties to even.
  EXPECT_EQ(floatToBf16(bitsFloat(0x3F808000)), 0x3F80); // tie, even down
  EXPECT_EQ(floatToBf16(bitsFloat(0x3F818000)), 0x3F82); // tie, even up
  EXPECT_EQ(floatToBf16(bitsFloat(0x3F808001)), 0x3F81); // above tie
  EXPECT_EQ(floatToBf16(bitsFloat(0x3F807FFF)), 0x3F80); // below tie
  // Overflow: the largest float rounds to infinity.
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(floatToBf16(bitsFloat(0x7F7F7FFF)), 0x7F7F);
  // Inf and NaN.
  EXPECT_EQ(floatToBf16(INFINITY), 0x7F80);
  EXPECT_EQ(floatToBf16(-INFINITY), 0xFF80);
  EXPECT_EQ(floatToBf16(bitsFloat(0x7FC00000)), 0x7FC0);
  EXPECT_EQ(floatToBf16(bitsFloat(0xFFC00000)), 0xFFC0);
  // A signalling NaN whose payload is only in the low bits must not become
  // infinity (plain truncation would give 0x7F80).
  EXPECT_EQ(floatToBf16(bitsFloat(0x7F800001)), 0x7FC0);
  // Float subnormals map to bf16 subnormals.
  EXPECT_EQ(floatToBf16(bitsFloat(0x00010000)), 0x0001);
  EXPECT_EQ(floatToBf16(bitsFloat(0x00008000)), 0x0000); // tie, even
  EXPECT_EQ(floatToBf16(bitsFloat(0x00018000)), 0x0002); // tie, even up

  EXPECT_EQ(bf16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(bf16ToFloat(0xC000), -2.0f);
  EXPECT_EQ(floatBits(bf16ToFloat(0x8000)), 0x80000000u);
  EXPECT_TRUE(std::isinf(bf16ToFloat(0x7F80)));
  EXPECT_TRUE(std::isnan(bf16ToFloat(0x7FC1)));
}

TEST(Float16Test, HalfKnownPatterns) {
  EXPECT_EQ(floatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(floatToHalf(-2.0f), 0xC000);
  EXPECT_EQ(floatToHalf(0.0f), 0x0000);
  EXPECT_EQ(floatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(floatToHalf(0.1f), 0x2E66);
  EXPECT_EQ(floatToHalf(3.14159f), 0x4248);
  // Largest finite half and overflow.
  EXPECT_EQ(floatToHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(floatToHalf(65519.0f), 0x7BFF);
  EXPECT_EQ(floatToHalf(65520.0f), 0x7C00); // tie rounds to even = inf
  EXPECT_EQ(floatToHalf(1e6f), 0x7C00);
  EXPECT_EQ(floatToHalf(-1e6f), 0xFC00);
  // Subnormals.
  EXPECT_EQ(floatToHalf(1e-7f), 0x0002); // 1e-7 / 2^-24 = 1.68 -> 2
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -25)), 0x0000);        // tie, even
  EXPECT_EQ(floatToHalf(std::ldexp(1.5f, -25)), 0x0001);        // above tie
  EXPECT_EQ(floatToHalf(std::ldexp(3.0f, -25)), 0x0002);        // tie, even up
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_EQ(floatToHalf(-std::ldexp(1.0f, -26)), 0x8000);
  EXPECT_EQ(floatToHalf(6.1e-5f), 0x03FF);                      // largest subnormal
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -14)), 0x0400);        // smallest normal
  EXPECT_EQ(floatToHalf(std::ldexp(1023.5f, -24)), 0x0400);     // rounds up into normal
  // Ties to even in the normal range.
  EXPECT_EQ(floatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(floatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_EQ(floatToHalf(2047.0f + 0.5f), 0x6800); // 2047.5 -> 2048 (even)
  // Inf / NaN.
  EXPECT_EQ(floatToHalf(INFINITY), 0x7C00);
  EXPECT_EQ(floatToHalf(-INFINITY), 0xFC00);
  uint16_t nan = floatToHalf(NAN);
  EXPECT_EQ(nan & 0x7C00, 0x7C00);
  EXPECT_NE(nan & 0x03FF, 0);
  EXPECT_NE(nan & 0x0200, 0); // quiet
  EXPECT_EQ(floatToHalf(bitsFloat(0x7F800001)) & 0x7E00, 0x7E00);

  EXPECT_EQ(halfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(halfToFloat(0xC000), -2.0f);
  EXPECT_EQ(halfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(halfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(halfToFloat(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(halfToFloat(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(floatBits(halfToFloat(0x8000)), 0x80000000u);
  EXPECT_EQ(halfToFloat(0x7C00), INFINITY);
  EXPECT_EQ(halfToFloat(0xFC00), -INFINITY);
  EXPECT_TRUE(std::isnan(halfToFloat(0x7E00)));
  EXPECT_TRUE(std::isnan(halfToFloat(0x7C01)));
}

TEST(Float16Test, ExhaustiveRoundTrip) {
  for (uint32_t i = 0; i < 0x10000; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    const bool halfNan = (h & 0x7C00) == 0x7C00 && (h & 0x03FF) != 0;
    const bool bfNan = (h & 0x7F80) == 0x7F80 && (h & 0x007F) != 0;
    if (halfNan) {
      EXPECT_TRUE(std::isnan(halfToFloat(h)));
      const uint16_t back = floatToHalf(halfToFloat(h));
      EXPECT_EQ(back & 0x7E00, 0x7E00) << std::hex << i;
      EXPECT_EQ(back & 0x8000, h & 0x8000);
    } else {
      EXPECT_EQ(floatToHalf(halfToFloat(h)), h) << std::hex << i;
      EXPECT_EQ(doubleToHalf(halfToFloat(h)), h) << std::hex << i;
    }
    if (bfNan) {
      const uint16_t back = floatToBf16(bf16ToFloat(h));
      EXPECT_EQ(back & 0x7FC0, 0x7FC0) << std::hex << i;
      EXPECT_EQ(back & 0x8000, h & 0x8000);
    } else {
      EXPECT_EQ(floatToBf16(bf16ToFloat(h)), h) << std::hex << i;
      EXPECT_EQ(doubleToBf16(bf16ToFloat(h)), h) << std::hex << i;
    }
  }
}

/// Reference round-to-nearest-even for bf16 of a finite float: choose between
/// the truncation and the next value up by comparing distances exactly.
uint16_t referenceBf16(float f) {
  const uint32_t u = floatBits(f);
  const uint16_t lo = static_cast<uint16_t>(u >> 16);
  const uint16_t hi = static_cast<uint16_t>(lo + 1);
  const double x = std::fabs(static_cast<double>(f));
  const double dlo = x - std::fabs(static_cast<double>(bf16ToFloat(lo)));
  const double dhi = std::fabs(static_cast<double>(bf16ToFloat(hi))) - x;
  if ((hi & 0x7F80) == 0x7F80) { // next value up is infinity
    const double maxv = std::fabs(static_cast<double>(bf16ToFloat(lo)));
    const double ulp = std::ldexp(1.0, 127 - 7);
    return x >= maxv + ulp / 2 ? hi : lo;
  }
  if (dlo < dhi)
    return lo;
  if (dhi < dlo)
    return hi;
  return (lo & 1) ? hi : lo;
}

TEST(Float16Test, RandomFloatsAgainstReference) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<uint32_t> dist;
  for (int i = 0; i < 500000; ++i) {
    uint32_t u = dist(rng);
    if (i % 4 == 0)
      u = (u & 0xFFFF0000u) | 0x8000u; // exact bf16 ties
    const float f = bitsFloat(u);
    if (!std::isfinite(f))
      continue;
    ASSERT_EQ(floatToBf16(f), referenceBf16(f)) << std::hex << u;
#if defined(__FLT16_MAX__)
    // The compiler's own float -> _Float16 conversion is correctly rounded.
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t hb;
    std::memcpy(&hb, &h, 2);
    ASSERT_EQ(floatToHalf(f), hb) << std::hex << u;
#endif
  }
#if defined(__FLT16_MAX__)
  // Dense sweep of the half range including all halfway points.
  for (uint32_t u = 0x33000000u; u < 0x47800000u; u += 0x1000u) {
    for (uint32_t s : {0u, 0x80000000u}) {
      const float f = bitsFloat(u | s);
      const _Float16 h = static_cast<_Float16>(f);
      uint16_t hb;
      std::memcpy(&hb, &h, 2);
      ASSERT_EQ(floatToHalf(f), hb) << std::hex << (u | s);
    }
  }
#endif
}

TEST(Float16Test, DoubleRoundingAvoided) {
  // Just above the half tie between 1 and 1 + 2^-10. Via float the 2^-40
  // would be lost and the tie would round down to even.
  const double x = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  EXPECT_EQ(floatToHalf(static_cast<float>(x)), 0x3C00);
  EXPECT_EQ(doubleToHalf(x), 0x3C01);
  EXPECT_EQ(roundToHalf(x), 1.0 + std::ldexp(1.0, -10));
  const double y = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40);
  EXPECT_EQ(floatToBf16(static_cast<float>(y)), 0x3F80);
  EXPECT_EQ(doubleToBf16(y), 0x3F81);
  EXPECT_EQ(roundToBf16(y), 1.0 + std::ldexp(1.0, -7));
}

TEST(Float16Test, RoundHelpers) {
  EXPECT_EQ(roundToBf16(1.0), 1.0);
  EXPECT_EQ(roundToBf16(0.1), static_cast<double>(bf16ToFloat(0x3DCD)));
  EXPECT_EQ(roundToHalf(0.1), static_cast<double>(halfToFloat(0x2E66)));
  EXPECT_EQ(roundToHalf(1e-7), std::ldexp(2.0, -24));
  EXPECT_EQ(roundToHalf(1e5), INFINITY);
  EXPECT_EQ(roundToHalf(65504.0), 65504.0);
  EXPECT_EQ(roundToFloat(0.1), static_cast<double>(0.1f));
  EXPECT_EQ(roundToFloat(1.0), 1.0);
  EXPECT_TRUE(std::isnan(roundToHalf(NAN)));
  EXPECT_TRUE(std::isnan(roundToBf16(NAN)));
  EXPECT_EQ(roundToBf16(1e300), INFINITY);
  EXPECT_EQ(roundToBf16(-1e-300), 0.0);
  EXPECT_TRUE(std::signbit(roundToBf16(-1e-300)));
}

// ---- round trip ----------------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTripManyDTypes) {
  std::vector<OwnedTensor> tensors;
  tensors.push_back({"model.w", DType::F32, {2, 3},
                     toBytes<float>({1.5f, -2.f, 0.f, 3.25f, 1e-3f, -7.f})});
  tensors.push_back({"b16", DType::BF16, {4},
                     toBytes<uint16_t>({0x3F80, 0xC000, 0x7F80, 0x0001})});
  tensors.push_back({"h16", DType::F16, {2, 2},
                     toBytes<uint16_t>({0x3C00, 0x7BFF, 0x0001, 0x8000})});
  tensors.push_back({"scalar", DType::I64, {}, toBytes<int64_t>({-42})});
  tensors.push_back({"empty", DType::U8, {0}, {}});
  tensors.push_back({"empty2d", DType::F32, {3, 0}, {}});
  tensors.push_back({"mask", DType::BOOL, {3}, {1, 0, 1}});
  tensors.push_back({"i8", DType::I8, {2}, toBytes<int8_t>({-128, 127})});
  tensors.push_back({"i16", DType::I16, {1, 2}, toBytes<int16_t>({-300, 300})});
  tensors.push_back({"u16", DType::U16, {1}, toBytes<uint16_t>({65535})});
  tensors.push_back({"i32", DType::I32, {2}, toBytes<int32_t>({-5, 7})});
  tensors.push_back({"u32", DType::U32, {1}, toBytes<uint32_t>({4000000000u})});
  tensors.push_back({"u64", DType::U64, {1}, toBytes<uint64_t>({1ull << 60})});
  tensors.push_back({"f64", DType::F64, {1, 1, 1}, toBytes<double>({0.1})});
  const std::map<std::string, std::string> meta = {{"format", "pt"},
                                                   {"note", "héllo \"q\""}};

  const std::string p = path("model.safetensors");
  std::string error;
  ASSERT_TRUE(write(p, tensors, meta, error)) << error;
  EXPECT_EQ(listDir(), std::vector<std::string>{"model.safetensors"});

  std::unique_ptr<File> f = File::open(p, error);
  ASSERT_NE(f, nullptr) << error;
  EXPECT_EQ(f->path(), p);
  EXPECT_EQ(f->metadata(), meta);
  EXPECT_EQ(f->headerSize() % 8, 0u);
  ASSERT_EQ(f->tensors().size(), tensors.size());
  uint64_t expectedOffset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo &t = f->tensors()[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, tensors[i].name); // file order == write order
    EXPECT_EQ(t.dtype, tensors[i].dtype);
    EXPECT_EQ(t.shape, tensors[i].shape);
    EXPECT_EQ(t.offset, expectedOffset);
    EXPECT_EQ(t.bytes, tensors[i].bytes.size());
    expectedOffset += t.bytes;
    EXPECT_EQ(f->find(t.name), &t);
    const std::vector<uint8_t> got(f->data(t), f->data(t) + t.bytes);
    EXPECT_EQ(got, tensors[i].bytes);
  }
  EXPECT_EQ(f->dataSize(), expectedOffset);
  EXPECT_EQ(f->find("missing"), nullptr);
  EXPECT_EQ(f->find("scalar")->numel(), 1);
  EXPECT_EQ(f->find("empty")->numel(), 0);

  // Values.
  EXPECT_EQ(toDoubles(*f->find("model.w"), f->data(*f->find("model.w"))),
            (std::vector<double>{1.5, -2, 0, 3.25, static_cast<double>(1e-3f), -7}));
  const std::vector<double> b16 =
      toDoubles(*f->find("b16"), f->data(*f->find("b16")));
  EXPECT_EQ(b16, (std::vector<double>{1.0, -2.0, INFINITY,
                                      std::ldexp(1.0, -133)}));
  EXPECT_EQ(toDoubles(*f->find("h16"), f->data(*f->find("h16"))),
            (std::vector<double>{1.0, 65504.0, std::ldexp(1.0, -24), -0.0}));
  EXPECT_EQ(toDoubles(*f->find("scalar"), f->data(*f->find("scalar"))),
            std::vector<double>{-42.0});
  EXPECT_TRUE(toDoubles(*f->find("empty"), f->data(*f->find("empty"))).empty());
}

TEST_F(SafetensorsTest, EmptyFileAndOverwrite) {
  const std::string p = path("x.safetensors");
  std::string error;
  ASSERT_TRUE(write(p, {}, {}, error)) << error;
  auto f = File::open(p, error);
  ASSERT_NE(f, nullptr) << error;
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_TRUE(f->metadata().empty());
  EXPECT_EQ(readRaw(p), le64(8) + "{}      ");

  // Overwriting an existing file replaces it.
  ASSERT_TRUE(write(p, {{"a", DType::F32, {1}, toBytes<float>({2.f})}}, {},
                    error))
      << error;
  f = File::open(p, error);
  ASSERT_NE(f, nullptr) << error;
  ASSERT_EQ(f->tensors().size(), 1u);
  EXPECT_EQ(f->tensors()[0].name, "a");
  EXPECT_EQ(listDir(), std::vector<std::string>{"x.safetensors"});
}

TEST_F(SafetensorsTest, WriterProducesSpecBytes) {
  const std::string p = path("spec.safetensors");
  std::string error;
  std::vector<OwnedTensor> ts = {
      {"x", DType::F32, {1}, toBytes<float>({1.0f})},
      {"s", DType::BF16, {}, toBytes<uint16_t>({0x3F80})},
  };
  ASSERT_TRUE(write(p, ts, {{"format", "pt"}}, error)) << error;
  const std::string header =
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
      "\"s\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[4,6]}}";
  ASSERT_EQ(header.size(), 138u);
  const std::string expected = le64(144) + header + std::string(6, ' ') +
                               std::string("\x00\x00\x80\x3f", 4) +
                               std::string("\x80\x3f", 2);
  EXPECT_EQ(readRaw(p), expected);
}

TEST_F(SafetensorsTest, ReadsHandMadeSpecFile) {
  // Built byte by byte following the spec: unpadded header (so the data
  // section starts at an unaligned offset), metadata after tensors, a gap-free
  // data section with little-endian values.
  const std::string header =
      "{\"w\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
      "\"h\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[16,22]},"
      "\"__metadata__\":{\"foo\":\"bar\"}}";
  ASSERT_NE(header.size() % 8, 0u);
  std::string bytes;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    bytes.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  bytes += header;
  const unsigned char data[] = {
      0x01, 0x00, 0x00, 0x00, // 1
      0xFE, 0xFF, 0xFF, 0xFF, // -2
      0x03, 0x00, 0x00, 0x00, // 3
      0xFF, 0xFF, 0xFF, 0x7F, // INT32_MAX
      0x00, 0x3C,             // half 1.0
      0x00, 0xC0,             // half -2.0
      0xFF, 0x7B,             // half 65504
  };
  bytes.append(reinterpret_cast<const char *>(data), sizeof data);
  const std::string p = path("hand.safetensors");
  writeRaw(p, bytes);

  std::string error;
  auto f = File::open(p, error);
  ASSERT_NE(f, nullptr) << error;
  EXPECT_EQ(f->headerSize(), n);
  EXPECT_EQ(f->dataSize(), sizeof data);
  EXPECT_EQ(f->metadata(),
            (std::map<std::string, std::string>{{"foo", "bar"}}));
  ASSERT_EQ(f->tensors().size(), 2u);
  const TensorInfo &w = f->tensors()[0];
  const TensorInfo &h = f->tensors()[1];
  EXPECT_EQ(w.name, "w");
  EXPECT_EQ(w.dtype, DType::I32);
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(w.offset, 0u);
  EXPECT_EQ(w.bytes, 16u);
  EXPECT_EQ(h.name, "h");
  EXPECT_EQ(h.dtype, DType::F16);
  EXPECT_EQ(h.offset, 16u);
  EXPECT_EQ(h.bytes, 6u);
  EXPECT_EQ(std::memcmp(f->data(w), data, 16), 0);
  EXPECT_EQ(f->data(h) - f->data(w), 16);
  EXPECT_EQ(toDoubles(w, f->data(w)),
            (std::vector<double>{1, -2, 3, 2147483647}));
  EXPECT_EQ(toDoubles(h, f->data(h)), (std::vector<double>{1, -2, 65504}));
}

TEST_F(SafetensorsTest, TensorOrderIsByOffset) {
  // Header order differs from data order; zero-size ties keep header order.
  const std::string header =
      "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]},"
      "\"z2\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,2]},"
      "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
      "\"z1\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,2]}}";
  const std::string p = path("order.safetensors");
  writeRaw(p, rawFile(header, 4));
  std::string error;
  auto f = File::open(p, error);
  ASSERT_NE(f, nullptr) << error;
  std::vector<std::string> names;
  for (const TensorInfo &t : f->tensors())
    names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "z2", "z1", "b"}));
}

// ---- conversions ---------------------------------------------------------------------

TEST(ConversionTest, ToDoublesIntegers) {
  auto check = [](DType dt, const std::vector<uint8_t> &bytes,
                  const std::vector<double> &expected) {
    TensorInfo t;
    t.name = "t";
    t.dtype = dt;
    t.shape = {static_cast<int64_t>(expected.size())};
    t.bytes = bytes.size();
    EXPECT_EQ(toDoubles(t, bytes.data()), expected) << dtypeName(dt);
  };
  check(DType::BOOL, {0, 1, 7}, {0, 1, 1});
  check(DType::U8, {0, 255}, {0, 255});
  check(DType::I8, toBytes<int8_t>({-128, 127, -1}), {-128, 127, -1});
  check(DType::I16, toBytes<int16_t>({-32768, 32767}), {-32768, 32767});
  check(DType::U16, toBytes<uint16_t>({0, 65535}), {0, 65535});
  check(DType::I32, toBytes<int32_t>({std::numeric_limits<int32_t>::min(), 5}),
        {-2147483648.0, 5});
  check(DType::U32, toBytes<uint32_t>({4294967295u}), {4294967295.0});
  check(DType::I64, toBytes<int64_t>({-(int64_t(1) << 53), int64_t(1) << 62}),
        {-9007199254740992.0, 4611686018427387904.0});
  check(DType::U64, toBytes<uint64_t>({uint64_t(1) << 63, 12345}),
        {9223372036854775808.0, 12345});
  check(DType::F64, toBytes<double>({0.1, -0.0}), {0.1, -0.0});

  // Unaligned source pointer.
  std::vector<uint8_t> buf(1 + 8);
  const int32_t v[2] = {-7, 9};
  std::memcpy(buf.data() + 1, v, 8);
  TensorInfo t;
  t.dtype = DType::I32;
  t.shape = {2};
  t.bytes = 8;
  EXPECT_EQ(toDoubles(t, buf.data() + 1), (std::vector<double>{-7, 9}));
}

TEST(ConversionTest, FromDoublesRoundTrip) {
  std::string error;
  std::vector<uint8_t> out;
  ASSERT_TRUE(fromDoubles({1.0, -2.0, 0.1, 65504, 1e6}, DType::F16, out, error));
  EXPECT_EQ(out, toBytes<uint16_t>({0x3C00, 0xC000, 0x2E66, 0x7BFF, 0x7C00}));
  ASSERT_TRUE(fromDoubles({1.0, 0.1, 3.14159}, DType::BF16, out, error));
  EXPECT_EQ(out, toBytes<uint16_t>({0x3F80, 0x3DCD, 0x4049}));
  // Single rounding from double.
  ASSERT_TRUE(fromDoubles({1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40)},
                          DType::F16, out, error));
  EXPECT_EQ(out, toBytes<uint16_t>({0x3C01}));
  ASSERT_TRUE(fromDoubles({0.1, -1.5}, DType::F32, out, error));
  EXPECT_EQ(out, toBytes<float>({0.1f, -1.5f}));
  ASSERT_TRUE(fromDoubles({0.1, NAN}, DType::F64, out, error));
  EXPECT_EQ(std::memcmp(out.data(), toBytes<double>({0.1}).data(), 8), 0);

  ASSERT_TRUE(fromDoubles({-128, 127}, DType::I8, out, error));
  EXPECT_EQ(out, toBytes<int8_t>({-128, 127}));
  ASSERT_TRUE(fromDoubles({0, 255}, DType::U8, out, error));
  ASSERT_TRUE(fromDoubles({65535}, DType::U16, out, error));
  ASSERT_TRUE(fromDoubles({-32768}, DType::I16, out, error));
  ASSERT_TRUE(fromDoubles({4294967295.0}, DType::U32, out, error));
  ASSERT_TRUE(fromDoubles({-2147483648.0}, DType::I32, out, error));
  ASSERT_TRUE(fromDoubles({-9223372036854775808.0}, DType::I64, out, error));
  EXPECT_EQ(out, toBytes<int64_t>({std::numeric_limits<int64_t>::min()}));
  ASSERT_TRUE(fromDoubles({18446744073709549568.0}, DType::U64, out, error));
  EXPECT_EQ(out, toBytes<uint64_t>({18446744073709549568ull}));
  ASSERT_TRUE(fromDoubles({0, 1, -0.0}, DType::BOOL, out, error));
  EXPECT_EQ(out, (std::vector<uint8_t>{0, 1, 0}));
  ASSERT_TRUE(fromDoubles({}, DType::I32, out, error));
  EXPECT_TRUE(out.empty());

  // Round trip through toDoubles for every dtype.
  const std::vector<double> vals = {0, 1, 2, 100};
  for (DType dt : {DType::BOOL, DType::U8, DType::I8, DType::I16, DType::U16,
                   DType::F16, DType::BF16, DType::I32, DType::U32, DType::F32,
                   DType::F64, DType::I64, DType::U64}) {
    const std::vector<double> in =
        dt == DType::BOOL ? std::vector<double>{0, 1, 1, 0} : vals;
    ASSERT_TRUE(fromDoubles(in, dt, out, error)) << error;
    TensorInfo t;
    t.dtype = dt;
    t.shape = {4};
    t.bytes = out.size();
    EXPECT_EQ(toDoubles(t, out.data()), in) << dtypeName(dt);
  }
}

TEST(ConversionTest, FromDoublesErrors) {
  std::string error;
  std::vector<uint8_t> out;
  auto fails = [&](std::vector<double> v, DType dt,
                   std::vector<std::string> needles) {
    error.clear();
    out = {1, 2, 3};
    EXPECT_FALSE(fromDoubles(v, dt, out, error)) << dtypeName(dt);
    EXPECT_TRUE(out.empty());
    for (const auto &n : needles)
      EXPECT_NE(error.find(n), std::string::npos)
          << "error '" << error << "' lacks '" << n << "'";
  };
  fails({1, 2.5}, DType::I32, {"2.5", "index 1", "not an integer", "I32"});
  fails({NAN}, DType::I64, {"not an integer"});
  fails({INFINITY}, DType::U8, {"not an integer"});
  fails({256}, DType::U8, {"256", "out of range", "U8"});
  fails({-1}, DType::U32, {"out of range", "U32"});
  fails({128}, DType::I8, {"out of range"});
  fails({-129}, DType::I8, {"out of range"});
  fails({65536}, DType::U16, {"out of range"});
  fails({32768}, DType::I16, {"out of range"});
  fails({2147483648.0}, DType::I32, {"out of range"});
  fails({9223372036854775808.0}, DType::I64, {"out of range", "I64"});
  fails({18446744073709551616.0}, DType::U64, {"out of range", "U64"});
  fails({0, 2}, DType::BOOL, {"not 0 or 1", "index 1", "BOOL"});
  fails({0.5}, DType::BOOL, {"not 0 or 1"});
}

// ---- validation ------------------------------------------------------------------------

TEST_F(SafetensorsTest, FileShorterThanPrefix) {
  expectOpenError("", {"0 bytes", "shorter than the 8-byte"});
  expectOpenError(std::string("\x02\x00\x00", 3), {"3 bytes", "shorter"});
  expectOpenError(std::string(7, '\0'), {"7 bytes", "shorter"});
}

TEST_F(SafetensorsTest, MissingFile) {
  std::string error;
  EXPECT_EQ(File::open(path("nope.safetensors"), error), nullptr);
  EXPECT_NE(error.find("nope.safetensors"), std::string::npos);
  EXPECT_NE(error.find("cannot open"), std::string::npos) << error;
  error.clear();
  EXPECT_EQ(File::open(dir_.string(), error), nullptr);
  EXPECT_NE(error.find("not a regular file"), std::string::npos) << error;
}

TEST_F(SafetensorsTest, HeaderLengthLargerThanFile) {
  expectOpenError(le64(100) + "{}", {"header length 100", "larger than the file"});
  expectOpenError(le64(~uint64_t(0)) + "{}",
                  {"header length 18446744073709551615", "larger than the file"});
  expectOpenError(le64(3) + "{}", {"larger than the file"});
}

TEST_F(SafetensorsTest, HeaderValidation) {
  struct Case {
    const char *what;
    std::string header;
    size_t dataSize;
    std::vector<std::string> needles;
  };
  const std::string okEntry =
      "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}";
  const std::vector<Case> cases = {
      {"empty header", "", 0, {"not valid JSON"}},
      {"invalid JSON", "{\"a\": ", 0, {"not valid JSON"}},
      {"trailing garbage", "{} x", 0, {"not valid JSON"}},
      {"not an object", "[1, 2]", 0, {"header is an array", "expected a JSON object"}},
      {"string header", "\"hi\"", 0, {"header is a string"}},
      {"metadata not object", "{\"__metadata__\": [1]}", 0,
       {"__metadata__ is an array", "expected an object of string"}},
      {"metadata value not string", "{\"__metadata__\": {\"k\": 1}}", 0,
       {"__metadata__ value for key 'k'", "is an integer", "expected a string"}},
      {"entry not object", "{\"t\": 5}", 0,
       {"tensor 't'", "is an integer", "expected an object"}},
      {"missing dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
       {"tensor 't'", "missing field 'dtype'"}},
      {"missing shape", "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
       {"tensor 't'", "missing field 'shape'"}},
      {"missing data_offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
       {"tensor 't'", "missing field 'data_offsets'"}},
      {"dtype not string",
       "{\"t\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
       {"tensor 't'", "field 'dtype' is an integer", "expected a string"}},
      {"unknown dtype",
       "{\"t\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
       {"tensor 't'", "unknown dtype 'F7'"}},
      {"shape not array",
       "{\"t\":{\"dtype\":\"F32\",\"shape\":\"x\",\"data_offsets\":[0,4]}}", 4,
       {"tensor 't'", "field 'shape' is a string", "expected an array"}},
      {"shape element float",
       "{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
       {"tensor 't'", "shape[0] is a floating-point number"}},
      {"shape element string",
       "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,\"2\"],\"data_offsets\":[0,4]}}",
       4, {"tensor 't'", "shape[1] is a string"}},
      {"negative dim",
       "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", 4,
       {"tensor 't'", "shape[1] = -1 is negative"}},
      {"huge dim",
       "{\"t\":{\"dtype\":\"U8\",\"shape\":[18446744073709551615],"
       "\"data_offsets\":[0,4]}}",
       4, {"tensor 't'", "shape[0]", "too large"}},
      {"data_offsets not array",
       "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":4}}", 4,
       {"tensor 't'", "field 'data_offsets' is an integer", "[begin, end]"}},
      {"data_offsets wrong length",
       "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
       {"tensor 't'", "array of 1 elements", "[begin, end]"}},
      {"data_offsets float",
       "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4,
       {"tensor 't'", "data_offsets[1] (end) is a floating-point number"}},
      {"data_offsets negative",
       "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,4]}}", 4,
       {"tensor 't'", "data_offsets[0] (begin) = -4 is negative"}},
      {"begin after end",
       "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8,
       {"tensor 't'", "[8, 4]", "begin > end"}},
      {"end beyond data",
       "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
       {"tensor 't'", "end 8", "exceeds the data section size 4"}},
      {"size mismatch",
       "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8,
       {"tensor 't'", "span 4 bytes", "[2] of F32 needs 8 bytes",
        "size mismatch"}},
      {"numel overflow",
       "{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],"
       "\"data_offsets\":[0,0]}}",
       0, {"tensor 't'", "element count", "overflows"}},
      {"byte size overflow",
       "{\"t\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],"
       "\"data_offsets\":[0,0]}}",
       0, {"tensor 't'", "byte size", "overflows"}},
      {"overlap",
       "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
       "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}",
       12, {"'a' [0, 8)", "'b' [4, 12)", "overlapping"}},
      {"identical ranges",
       "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
       "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
       4, {"'a'", "'b'", "overlapping"}},
      {"duplicate key", "{\"t\":" + okEntry + ",\"t\":" + okEntry + "}", 4,
       {"duplicate key 't'"}},
  };
  for (const Case &c : cases) {
    SCOPED_TRACE(c.what);
    expectOpenError(rawFile(c.header, c.dataSize), c.needles);
  }
}

TEST_F(SafetensorsTest, ZeroSizeTensorsAndGapsAreAccepted) {
  // Zero-size tensors may sit anywhere (even inside another tensor's range),
  // trailing spaces after the JSON are allowed.
  const std::string header =
      "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
      "\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[4,4]},"
      "\"s\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[8,10]}}   ";
  const std::string p = path("ok.safetensors");
  writeRaw(p, rawFile(header, 10));
  std::string error;
  auto f = File::open(p, error);
  ASSERT_NE(f, nullptr) << error;
  ASSERT_EQ(f->tensors().size(), 3u);
  EXPECT_EQ(f->find("e")->numel(), 0);
  EXPECT_EQ(f->find("s")->numel(), 1);
}

TEST_F(SafetensorsTest, TruncatedFile) {
  const std::string p = path("t.safetensors");
  std::string error;
  ASSERT_TRUE(write(p,
                    {{"a", DType::F32, {2}, toBytes<float>({1.f, 2.f})},
                     {"b", DType::I32, {3}, toBytes<int32_t>({1, 2, 3})}},
                    {}, error))
      << error;
  ASSERT_NE(File::open(p, error), nullptr) << error;
  std::string bytes = readRaw(p);
  bytes.pop_back();
  writeRaw(p, bytes);
  error.clear();
  EXPECT_EQ(File::open(p, error), nullptr);
  EXPECT_NE(error.find(p), std::string::npos) << error;
  EXPECT_NE(error.find("tensor 'b'"), std::string::npos) << error;
  EXPECT_NE(error.find("exceeds the data section size 19"), std::string::npos)
      << error;

  // Truncated inside the header.
  writeRaw(p, bytes.substr(0, 20));
  error.clear();
  EXPECT_EQ(File::open(p, error), nullptr);
  EXPECT_NE(error.find("larger than the file"), std::string::npos) << error;
}

// ---- atomic write -----------------------------------------------------------------------

TEST_F(SafetensorsTest, FailedWriteLeavesPreviousFileIntact) {
  const std::string p = path("keep.safetensors");
  std::string error;
  ASSERT_TRUE(write(p, {{"w", DType::F32, {1}, toBytes<float>({42.f})}},
                    {{"v", "1"}}, error))
      << error;
  const std::string before = readRaw(p);

  // Duplicate names.
  error.clear();
  EXPECT_FALSE(write(p,
                     {{"x", DType::U8, {1}, {1}}, {"x", DType::U8, {1}, {2}}},
                     {}, error));
  EXPECT_NE(error.find(p), std::string::npos) << error;
  EXPECT_NE(error.find("duplicate tensor name 'x'"), std::string::npos) << error;
  EXPECT_EQ(readRaw(p), before);

  // Byte count mismatch.
  error.clear();
  EXPECT_FALSE(write(p, {{"x", DType::F32, {2, 2}, std::vector<uint8_t>(15)}},
                     {}, error));
  EXPECT_NE(error.find("tensor 'x'"), std::string::npos) << error;
  EXPECT_NE(error.find("has 15 bytes"), std::string::npos) << error;
  EXPECT_NE(error.find("needs 16 bytes"), std::string::npos) << error;
  EXPECT_EQ(readRaw(p), before);

  // Negative dims, reserved and empty names.
  error.clear();
  EXPECT_FALSE(write(p, {{"x", DType::F32, {-1}, {}}}, {}, error));
  EXPECT_NE(error.find("negative"), std::string::npos) << error;
  error.clear();
  EXPECT_FALSE(write(p, {{"__metadata__", DType::U8, {0}, {}}}, {}, error));
  EXPECT_NE(error.find("reserved"), std::string::npos) << error;
  error.clear();
  EXPECT_FALSE(write(p, {{"", DType::U8, {0}, {}}}, {}, error));
  EXPECT_NE(error.find("must not be empty"), std::string::npos) << error;
  // Invalid UTF-8 in a name.
  error.clear();
  EXPECT_FALSE(write(p, {{"bad\xff", DType::U8, {0}, {}}}, {}, error));
  EXPECT_NE(error.find("UTF-8"), std::string::npos) << error;
  EXPECT_EQ(readRaw(p), before);

  // No temporary files are left behind.
  EXPECT_EQ(listDir(), std::vector<std::string>{"keep.safetensors"});
  auto f = File::open(p, error);
  ASSERT_NE(f, nullptr) << error;
  EXPECT_EQ(f->metadata().at("v"), "1");
}

TEST_F(SafetensorsTest, WriteErrorsFromTheFileSystem) {
  std::string error;
  // Directory does not exist.
  const std::string missing = path("no/such/dir/x.safetensors");
  EXPECT_FALSE(write(missing, {}, {}, error));
  EXPECT_NE(error.find(missing), std::string::npos) << error;
  EXPECT_NE(error.find("cannot create temporary file"), std::string::npos)
      << error;

  // Destination is a non-empty directory: rename fails, temp file removed.
  const std::string d = path("adir");
  fs::create_directory(d);
  fs::create_directory(d + "/child");
  error.clear();
  EXPECT_FALSE(write(d, {{"a", DType::U8, {1}, {7}}}, {}, error));
  EXPECT_NE(error.find("rename"), std::string::npos) << error;
  EXPECT_EQ(listDir(), std::vector<std::string>{"adir"});
  EXPECT_TRUE(fs::is_directory(d + "/child"));
}

} // namespace
