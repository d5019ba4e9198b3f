//===- BundleTest.cpp - tests for the .qtb loader and writer ----------------===//

#include "qtune/runtime/Bundle.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace qtune;
using namespace qtune::rt;
using Json = nlohmann::ordered_json;

namespace {

/// A small valid bundle: two kernels sharing a PTX blob, one with a cubin.
BundleWriter sampleWriter() {
  BundleWriter w;
  w.spec.target = "sm_90a";
  const int ptx = w.addBlob(".version 8.0\n.target sm_90a\n// kernels\n");
  const int cubin = w.addBlob(std::string("\x7f" "ELF\0\1\2\3", 8) + std::string(100, 'c'));
  const int k0 = w.addKernel({"qtune_gemm_0", ptx, cubin, {128, 1, 1}, 0});
  const int k1 = w.addKernel({"qtune_add_1", ptx, -1, {256, 1, 1}, 64 * 1024});
  const int x = w.addBuffer({"x", 0, 4 * 8 * 2, st::DType::BF16, {4, 8}, BufferRole::Input});
  const int wt = w.addBuffer({"w", 256, 8 * 8 * 4, st::DType::F32, {8, 8}, BufferRole::Frozen});
  const int t = w.addBuffer({"t", 512, 4 * 8 * 4, st::DType::F32, {4, 8}, BufferRole::Temporary});
  const int y = w.addBuffer({"y", 768, 4 * 8 * 4, st::DType::F32, {4, 8}, BufferRole::Output});
  w.spec.arenaBytes = 1024;
  Entry &e = w.entry("forward");
  e.inputs = {x};
  e.params = {wt};
  e.outputs = {y};
  e.launches.push_back({k0, {4, 1, 1}, {128, 1, 1}, 0,
                        {Arg::ptr(x), Arg::ptr(wt), Arg::ptr(t), Arg::i64(4), Arg::i32(-8)},
                        "quantized GEMM"});
  e.launches.push_back({k1, {1, 2, 3}, {256, 1, 1}, 64 * 1024,
                        {Arg::ptr(t), Arg::ptr(y), Arg::f32(0.1f),
                         Arg::f32(-std::numeric_limits<float>::infinity()),
                         Arg::f32(std::numeric_limits<float>::quiet_NaN())}});
  return w;
}

std::string le32(uint32_t v) { return std::string(reinterpret_cast<const char *>(&v), 4); }
std::string le64(uint64_t v) { return std::string(reinterpret_cast<const char *>(&v), 8); }

class BundleFileTest : public ::testing::Test {
protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "qtune-bundle-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string &name) const { return (dir_ / name).string(); }

  void writeRaw(const std::string &p, const std::string &bytes) const {
    std::ofstream os(p, std::ios::binary | std::ios::trunc);
    os.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(os.good());
  }
  std::string readRaw(const std::string &p) const {
    std::ifstream is(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(is), {});
  }

  /// The sample bundle as written by writeBundle, with its header parsed and
  /// then moved into kHeaderSpace bytes (the blobs shifted to match), so that
  /// tests can edit the header without moving the blobs.
  static constexpr uint64_t kHeaderSpace = 4096 - 24;
  void sample(std::string &file, Json &header) {
    const std::string p = path("sample.qtb");
    std::string error;
    ASSERT_TRUE(sampleWriter().write(p, error)) << error;
    const std::string written = readRaw(p);
    uint64_t h;
    std::memcpy(&h, written.data() + 16, 8);
    header = Json::parse(written.substr(24, h));
    const uint64_t oldStart = 24 + h, newStart = 24 + kHeaderSpace;
    ASSERT_EQ(oldStart % 64, 0u);
    for (Json &b : header["blobs"])
      b["offset"] = b["offset"].get<uint64_t>() - oldStart + newStart;
    file = written.substr(0, 16) + le64(kHeaderSpace) + std::string(kHeaderSpace, ' ') +
           written.substr(oldStart);
    file = withHeader(file, header.dump());
    ASSERT_NE(loadBundle(p, error), nullptr) << error;
  }

  /// Replaces the header text of a sample() file, keeping the blobs in place.
  static std::string withHeader(const std::string &file, const std::string &text) {
    EXPECT_LE(text.size(), kHeaderSpace);
    std::string out = file.substr(0, 24) + text;
    out.resize(24 + kHeaderSpace, ' ');
    return out + file.substr(24 + kHeaderSpace);
  }

  /// Loads `bytes`; expects failure with an error that starts with the file
  /// name and contains `needle`.
  std::string expectError(const std::string &bytes, const std::string &needle) {
    const std::string p = path("bad-" + std::to_string(counter_++) + ".qtb");
    writeRaw(p, bytes);
    std::string error;
    EXPECT_EQ(loadBundle(p, error), nullptr);
    EXPECT_EQ(error.rfind(p + ": ", 0), 0u) << error;
    EXPECT_NE(error.find(needle), std::string::npos)
        << "error '" << error << "' lacks '" << needle << "'";
    return error;
  }

  /// Applies `edit` to the sample header and expects the loader to fail with
  /// a message containing `needle`.
  std::string expectHeaderError(const std::function<void(Json &)> &edit, const std::string &needle) {
    std::string file;
    Json header;
    sample(file, header);
    edit(header);
    return expectError(withHeader(file, header.dump()), needle);
  }

  fs::path dir_;
  int counter_ = 0;
};

// ---- round trip ----------------------------------------------------------------------

TEST_F(BundleFileTest, WriterLoaderRoundTrip) {
  const BundleWriter w = sampleWriter();
  const std::string p = path("m.qtb");
  std::string error;
  ASSERT_TRUE(w.write(p, error)) << error;
  auto b = loadBundle(p, error);
  ASSERT_NE(b, nullptr) << error;

  EXPECT_EQ(b->path, p);
  EXPECT_EQ(b->version, kBundleVersion);
  EXPECT_EQ(b->target, "sm_90a");
  ASSERT_EQ(b->blobs.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(b->blobs[i].offset % 64, 0u);
    EXPECT_EQ(b->blob(static_cast<int>(i)), w.blobs[i]);
  }
  EXPECT_EQ(b->blob(2), "");
  EXPECT_EQ(b->blob(-1), "");

  ASSERT_EQ(b->kernels.size(), 2u);
  EXPECT_EQ(b->kernels[0].name, "qtune_gemm_0");
  EXPECT_EQ(b->kernels[0].ptx, 0);
  EXPECT_EQ(b->kernels[0].cubin, 1);
  EXPECT_EQ(b->kernels[1].cubin, -1);
  EXPECT_EQ(b->kernels[1].block, (std::array<uint32_t, 3>{256, 1, 1}));
  EXPECT_EQ(b->kernels[1].sharedBytes, 64u * 1024);

  EXPECT_EQ(b->arenaBytes, 1024u);
  ASSERT_EQ(b->buffers.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const Buffer &x = b->buffers[i], &y = w.spec.buffers[i];
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.offset, y.offset);
    EXPECT_EQ(x.bytes, y.bytes);
    EXPECT_EQ(x.dtype, y.dtype);
    EXPECT_EQ(x.shape, y.shape);
    EXPECT_EQ(x.role, y.role);
  }
  EXPECT_EQ(b->findBuffer("t"), 2);
  EXPECT_EQ(b->findBuffer("nope"), -1);

  ASSERT_EQ(b->entries.size(), 1u);
  const Entry &e = b->entries.at("forward");
  EXPECT_EQ(e.inputs, std::vector<int>{0});
  EXPECT_EQ(e.params, std::vector<int>{1});
  EXPECT_EQ(e.outputs, std::vector<int>{3});
  ASSERT_EQ(e.launches.size(), 2u);
  const Launch &l0 = e.launches[0], &l1 = e.launches[1];
  EXPECT_EQ(l0.kernel, 0);
  EXPECT_EQ(l0.grid, (std::array<uint32_t, 3>{4, 1, 1}));
  ASSERT_EQ(l0.args.size(), 5u);
  EXPECT_EQ(l0.args[2].kind, Arg::Kind::Ptr);
  EXPECT_EQ(l0.args[2].buffer, 2);
  EXPECT_EQ(l0.args[3].kind, Arg::Kind::I64);
  EXPECT_EQ(l0.args[3].ivalue, 4);
  EXPECT_EQ(l0.args[4].kind, Arg::Kind::I32);
  EXPECT_EQ(l0.args[4].ivalue, -8);
  EXPECT_EQ(l0.family, "quantized GEMM");
  EXPECT_EQ(l1.family, ""); // optional
  EXPECT_EQ(l1.grid, (std::array<uint32_t, 3>{1, 2, 3}));
  EXPECT_EQ(l1.sharedBytes, 64u * 1024);
  ASSERT_EQ(l1.args.size(), 5u);
  EXPECT_EQ(l1.args[2].kind, Arg::Kind::F32);
  EXPECT_EQ(l1.args[2].fvalue, 0.1f); // exact through JSON
  EXPECT_EQ(l1.args[3].fvalue, -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(l1.args[4].fvalue));
}

TEST_F(BundleFileTest, ContainerLayout) {
  BundleWriter w = sampleWriter();
  for (int i = 0; i < 40; ++i) // odd sizes, enough blobs to need a long header
    w.addBlob(std::string(static_cast<size_t>(i * 7 + 1), static_cast<char>('a' + i % 26)));
  const std::string p = path("m.qtb");
  std::string error;
  ASSERT_TRUE(w.write(p, error)) << error;
  const std::string file = readRaw(p);
  ASSERT_GE(file.size(), 24u);
  EXPECT_EQ(file.substr(0, 8), "QTUNEBDL");
  EXPECT_EQ(file.substr(8, 4), le32(1));
  EXPECT_EQ(file.substr(12, 4), le32(0));
  uint64_t h;
  std::memcpy(&h, file.data() + 16, 8);
  const Json header = Json::parse(file.substr(24, h)); // padding is whitespace
  EXPECT_EQ(header.begin().key(), "target");
  uint64_t end = 24 + h;
  ASSERT_EQ(header["blobs"].size(), w.blobs.size());
  EXPECT_EQ(header["blobs"][0]["offset"].get<uint64_t>(), (24 + h + 63) / 64 * 64);
  for (size_t i = 0; i < w.blobs.size(); ++i) {
    const uint64_t off = header["blobs"][i]["offset"].get<uint64_t>();
    EXPECT_EQ(off % 64, 0u);
    EXPECT_GE(off, end);
    EXPECT_LT(off - end, 64u); // no more padding than needed
    EXPECT_EQ(file.substr(off, w.blobs[i].size()), w.blobs[i]);
    end = off + w.blobs[i].size();
  }
  EXPECT_EQ(file.size(), end);
  auto b = loadBundle(p, error);
  ASSERT_NE(b, nullptr) << error;
  EXPECT_EQ(b->blob(41), w.blobs[41]);
  // bundleHeaderJson is the same header without the padding.
  EXPECT_EQ(Json::parse(bundleHeaderJson(w.spec, w.blobs))["kernels"], header["kernels"]);
}

TEST_F(BundleFileTest, EmptyBundle) {
  BundleWriter w;
  w.spec.target = "sm_80";
  const std::string p = path("empty.qtb");
  std::string error;
  ASSERT_TRUE(w.write(p, error)) << error;
  auto b = loadBundle(p, error);
  ASSERT_NE(b, nullptr) << error;
  EXPECT_TRUE(b->kernels.empty());
  EXPECT_TRUE(b->buffers.empty());
  EXPECT_TRUE(b->entries.empty());
  EXPECT_EQ(b->arenaBytes, 0u);
}

TEST_F(BundleFileTest, WriterRejectsInvalidSpecAndKeepsOldFile) {
  const std::string p = path("m.qtb");
  writeRaw(p, "old");
  BundleWriter w = sampleWriter();
  w.spec.buffers[3].offset = 1024; // past the arena
  std::string error;
  EXPECT_FALSE(w.write(p, error));
  EXPECT_EQ(error, p + ": buffers[3] ('y'): [1024, 1024 + 128) lies outside the arena (1024 bytes)");
  EXPECT_EQ(readRaw(p), "old");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);

  w = sampleWriter();
  w.spec.kernels[0].ptx = 7;
  EXPECT_FALSE(w.write(p, error));
  EXPECT_EQ(error, p + ": kernels[0].ptx: blob id 7 out of range (2 blobs)");

  w = sampleWriter();
  w.spec.target.clear();
  EXPECT_FALSE(w.write(p, error));
  EXPECT_NE(error.find("target"), std::string::npos) << error;

  w = sampleWriter();
  ASSERT_TRUE(w.write(p, error)) << error; // replaces the old file
  EXPECT_NE(loadBundle(p, error), nullptr) << error;
  EXPECT_FALSE(w.write(path("no-such-dir/m.qtb"), error));
  EXPECT_NE(error.find("no-such-dir/m.qtb: cannot create temporary file"), std::string::npos)
      << error;
}

TEST(BundleSpecTest, ValidateWithoutFile) {
  BundleWriter w = sampleWriter();
  std::string error;
  EXPECT_TRUE(validateBundleSpec(w.spec, w.blobs.size(), error)) << error;
  EXPECT_FALSE(validateBundleSpec(w.spec, 1, error));
  EXPECT_EQ(error, "kernels[0].cubin: blob id 1 out of range (1 blob)");
  w.spec.entries["forward"].launches[0].args[4] = Arg::i64(int64_t(1) << 40);
  w.spec.entries["forward"].launches[0].args[4].kind = Arg::Kind::I32;
  EXPECT_FALSE(validateBundleSpec(w.spec, 2, error));
  EXPECT_EQ(error, "entries.forward.launches[0].args[4]: i32 value 1099511627776 does not fit in 32 bits");
}

TEST(BundleSpecTest, RoleNames) {
  for (BufferRole r : {BufferRole::Input, BufferRole::Frozen, BufferRole::Trainable,
                       BufferRole::OptimizerState, BufferRole::Output, BufferRole::Temporary})
    EXPECT_EQ(parseRole(roleName(r)), r);
  EXPECT_EQ(roleName(BufferRole::OptimizerState), "optimizer_state");
  EXPECT_FALSE(parseRole("Input").has_value());
}

// ---- container errors ---------------------------------------------------------------------

TEST_F(BundleFileTest, ContainerErrors) {
  std::string file;
  Json header;
  sample(file, header);
  uint64_t h;
  std::memcpy(&h, file.data() + 16, 8);

  expectError("NOTABUNDLEATALL" + file.substr(15), "magic: not a qtune bundle");
  expectError(file.substr(0, 8) + le32(2) + file.substr(12), "version: unsupported bundle version 2");
  expectError(file.substr(0, 12) + le32(5) + file.substr(16), "reserved: expected 0, got 5");
  expectError("", "file is 0 bytes, shorter than the 24-byte fixed header");
  expectError(file.substr(0, 4), "shorter than the 24-byte fixed header");
  expectError(file.substr(0, 20), "file is 20 bytes");
  expectError(file.substr(0, 24), "header: length " + std::to_string(h) + " extends past the end");
  expectError(file.substr(0, 24 + h / 2), "header: length");
  // Truncated inside the last blob (the cubin).
  const uint64_t cubinOff = header["blobs"][1]["offset"].get<uint64_t>();
  expectError(file.substr(0, cubinOff + 10), "blobs[1]: [" + std::to_string(cubinOff) + ", " +
                                                 std::to_string(cubinOff) +
                                                 " + 108) extends past the end of the file");
  // Truncated between the blobs: the cubin starts past the end.
  expectError(file.substr(0, cubinOff - 1), "blobs[1]");
}

TEST_F(BundleFileTest, HeaderNotJson) {
  std::string file;
  Json header;
  sample(file, header);
  expectError(withHeader(file, "{\"target\": "), "header: not valid JSON");
  expectError(withHeader(file, ""), "header: not valid JSON");
  expectError(withHeader(file, "[1, 2]"), "header: expected an object, got an array");
}

// ---- header errors ---------------------------------------------------------------------------

TEST_F(BundleFileTest, HeaderTypeErrors) {
  expectHeaderError([](Json &j) { j.erase("kernels"); }, "header: missing key 'kernels'");
  expectHeaderError([](Json &j) { j["target"] = 90; }, "target: expected a string, got an integer");
  expectHeaderError([](Json &j) { j["arena_bytes"] = "big"; },
                    "arena_bytes: expected an integer, got a string");
  expectHeaderError([](Json &j) { j["arena_bytes"] = -1; }, "arena_bytes: -1 is out of range");
  expectHeaderError([](Json &j) { j["arena_bytes"] = 1.5; },
                    "arena_bytes: expected an integer, got a non-integer number");
  expectHeaderError([](Json &j) { j["blobs"] = Json::object(); },
                    "blobs: expected an array, got an object");
  expectHeaderError([](Json &j) { j["blobs"][0].erase("bytes"); }, "blobs[0]: missing key 'bytes'");
  expectHeaderError([](Json &j) { j["kernels"][1]["block"] = {1, 2}; },
                    "kernels[1].block: expected 3 integers, got 2");
  expectHeaderError([](Json &j) { j["kernels"][1]["block"][2] = 5000000000LL; },
                    "kernels[1].block[2]: 5000000000 is out of range");
  expectHeaderError([](Json &j) { j["buffers"][2]["dtype"] = "F8"; },
                    "buffers[2].dtype: unknown dtype 'F8'");
  expectHeaderError([](Json &j) { j["buffers"][2]["role"] = "scratch"; },
                    "buffers[2].role: unknown role 'scratch'");
  expectHeaderError([](Json &j) { j["buffers"][0]["shape"][1] = "8"; },
                    "buffers[0].shape[1]: expected an integer, got a string");
  expectHeaderError([](Json &j) { j["entries"] = Json::array(); },
                    "entries: expected an object, got an array");
  expectHeaderError([](Json &j) { j["entries"]["forward"].erase("params"); },
                    "entries.forward: missing key 'params'");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["launches"][0]["args"][3]["kind"] = "u8"; },
                    "entries.forward.launches[0].args[3].kind: unknown argument kind 'u8'");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["launches"][0]["args"][0].erase("buffer"); },
                    "entries.forward.launches[0].args[0]: missing key 'buffer'");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["launches"][1]["args"][2]["value"] = "1.0"; },
                    "entries.forward.launches[1].args[2].value: expected a number, \"nan\", \"inf\" or \"-inf\"");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["launches"][1]["args"][2]["value"] = 1e300; },
                    "entries.forward.launches[1].args[2].value: value overflows f32");
}

TEST_F(BundleFileTest, BlobErrors) {
  expectHeaderError([](Json &j) { j["blobs"][1]["offset"] = j["blobs"][1]["offset"].get<uint64_t>() + 8; },
                    "blobs[1].offset: " ); // misaligned
  expectHeaderError([](Json &j) { j["blobs"][0]["offset"] = 64; }, "lies inside the header");
  expectHeaderError([](Json &j) { j["blobs"][1]["bytes"] = 1u << 20; },
                    "extends past the end of the file");
  expectHeaderError([](Json &j) { j["blobs"][1]["offset"] = ~uint64_t(0) - 63; },
                    "blobs[1]: [");
  std::string file;
  Json header;
  sample(file, header);
  header["blobs"][1]["offset"] = header["blobs"][1]["offset"].get<uint64_t>() + 8;
  const std::string e = expectError(withHeader(file, header.dump()), "blobs[1].offset");
  EXPECT_NE(e.find("is not a multiple of 64"), std::string::npos) << e;
}

TEST_F(BundleFileTest, KernelErrors) {
  const std::string e = expectHeaderError([](Json &j) { j["kernels"][0]["ptx"] = 5; }, "");
  EXPECT_NE(e.find(": kernels[0].ptx: blob id 5 out of range (2 blobs)"), std::string::npos) << e;
  expectHeaderError([](Json &j) { j["kernels"][1]["cubin"] = -2; },
                    "kernels[1].cubin: blob id -2 out of range (2 blobs)");
  expectHeaderError([](Json &j) { j["kernels"][1]["ptx"] = -1; },
                    "kernels[1].ptx: blob id -1 out of range");
  expectHeaderError([](Json &j) { j["kernels"][0]["block"] = {1024, 2, 1}; },
                    "kernels[0].block: block [1024, 2, 1] has 2048 threads (at most 1024)");
  expectHeaderError([](Json &j) { j["kernels"][0]["block"] = {0, 1, 1}; },
                    "kernels[0].block: block [0, 1, 1] has a zero dimension");
  expectHeaderError([](Json &j) { j["kernels"][0]["shared_bytes"] = 227 * 1024 + 1; },
                    "kernels[0].shared_bytes: 232449 bytes of shared memory exceed the limit");
  expectHeaderError([](Json &j) { j["kernels"][0]["name"] = ""; }, "kernels[0].name: must not be empty");
}

TEST_F(BundleFileTest, BufferErrors) {
  expectHeaderError([](Json &j) { j["buffers"][3]["offset"] = 1024; },
                    "buffers[3] ('y'): [1024, 1024 + 128) lies outside the arena (1024 bytes)");
  expectHeaderError([](Json &j) { j["arena_bytes"] = 800; }, "buffers[3] ('y'): [768, 768 + 128) lies outside the arena (800 bytes)");
  expectHeaderError([](Json &j) { j["buffers"][1]["offset"] = 128; },
                    "buffers[1] ('w'): offset 128 is not a multiple of 256");
  expectHeaderError([](Json &j) { j["buffers"][0]["bytes"] = 32; },
                    "buffers[0] ('x'): bytes 32 != 32 elements x 2 bytes (BF16)");
  expectHeaderError([](Json &j) { j["buffers"][0]["shape"] = {4, 9}; },
                    "buffers[0] ('x'): bytes 64 != 36 elements x 2 bytes (BF16)");
  expectHeaderError([](Json &j) { j["buffers"][0]["shape"] = {-4, -8}; },
                    "buffers[0] ('x'): shape has a negative dimension");
}

TEST_F(BundleFileTest, EntryErrors) {
  const std::string e = expectHeaderError(
      [](Json &j) { j["entries"]["forward"]["launches"][0]["args"][2]["buffer"] = 17; }, "");
  EXPECT_NE(e.find(".qtb: entries.forward.launches[0].args[2]: buffer id 17 out of range (4 buffers)"),
            std::string::npos) << e;
  expectHeaderError([](Json &j) { j["entries"]["forward"]["launches"][1]["kernel"] = 9; },
                    "entries.forward.launches[1].kernel: kernel id 9 out of range (2 kernels)");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["inputs"] = {4}; },
                    "entries.forward.inputs[0]: buffer id 4 out of range (4 buffers)");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["outputs"] = {3, -1}; },
                    "entries.forward.outputs[1]: buffer id -1 out of range (4 buffers)");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["params"] = {1, 0}; },
                    "entries.forward.params[1]: buffer 'x' is listed twice");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["outputs"] = {3, 3}; },
                    "entries.forward.outputs[1]: buffer 'y' is listed twice");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["launches"][0]["grid"] = {4, 0, 1}; },
                    "entries.forward.launches[0].grid: grid [4, 0, 1] has a zero dimension");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["launches"][0]["grid"] = {1, 65536, 1}; },
                    "entries.forward.launches[0].grid: grid [1, 65536, 1] exceeds CUDA's limits");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["launches"][0]["block"] = {33, 32, 1}; },
                    "entries.forward.launches[0].block: block [33, 32, 1] has 1056 threads (at most 1024)");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["launches"][0]["block"] = {1, 1, 65}; },
                    "entries.forward.launches[0].block: block.z 65 exceeds 64");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["launches"][0]["shared_bytes"] = 300000; },
                    "entries.forward.launches[0].shared_bytes: 300000 bytes");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["launches"][0]["args"][4]["value"] = 1LL << 33; },
                    "entries.forward.launches[0].args[4]: i32 value 8589934592 does not fit in 32 bits");
  expectHeaderError([](Json &j) {
                      const Json forward = j["entries"]["forward"];
                      j["entries"][""] = forward;
                    },
                    "entries: an entry has an empty name");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["launches"][0]["family"] = 3; },
                    "entries.forward.launches[0].family: expected a string, got an integer");
  // A window of a buffer: 16-byte aligned, inside the buffer ('t' has 128 bytes).
  expectHeaderError([](Json &j) { j["entries"]["forward"]["launches"][0]["args"][2]["offset"] = 24; },
                    "entries.forward.launches[0].args[2]: offset 24 into buffer 't' (128 bytes) "
                    "must be a multiple of 16 inside the buffer");
  expectHeaderError([](Json &j) { j["entries"]["forward"]["launches"][0]["args"][2]["offset"] = 128; },
                    "offset 128 into buffer 't' (128 bytes)");
}

TEST_F(BundleFileTest, PointerOffsetsRoundTrip) {
  BundleWriter w = sampleWriter();
  w.spec.entries["forward"].launches[0].args[2] = Arg::ptr(2, 64);
  const std::string p = path("offset.qtb");
  std::string error;
  ASSERT_TRUE(w.write(p, error)) << error;
  auto b = loadBundle(p, error);
  ASSERT_NE(b, nullptr) << error;
  const Arg &a = b->entries.at("forward").launches[0].args[2];
  EXPECT_EQ(a.kind, Arg::Kind::Ptr);
  EXPECT_EQ(a.buffer, 2);
  EXPECT_EQ(a.ivalue, 64);
  EXPECT_EQ(b->entries.at("forward").launches[0].args[0].ivalue, 0);
}

// ---- tensor_map arguments -----------------------------------------------------------

/// The sample bundle plus a BF16 buffer 'a' of 16 x 64 elements (2 KiB, rows
/// of 128 bytes) read by a tensor_map argument appended to launch 0.
BundleWriter tensorMapWriter(const TensorMapSpec &m, int64_t offset = 0) {
  BundleWriter w = sampleWriter();
  const int a = w.addBuffer({"a", 1024, 16 * 64 * 2, st::DType::BF16, {16, 64}, BufferRole::Input});
  w.spec.arenaBytes = 1024 + 2048;
  w.spec.entries["forward"].launches[0].args.push_back(Arg::tensorMap(a, offset, m));
  return w;
}

TensorMapSpec sampleMap() {
  TensorMapSpec m;
  m.rows = 15;
  m.cols = 48;
  m.rowBytes = 128;
  m.boxRows = 8;
  m.boxCols = 64;
  m.swizzle = 128;
  return m;
}

TEST_F(BundleFileTest, TensorMapRoundTrip) {
  const BundleWriter w = tensorMapWriter(sampleMap(), 128);
  const std::string p = path("tmap.qtb");
  std::string error;
  ASSERT_TRUE(w.write(p, error)) << error;
  auto b = loadBundle(p, error);
  ASSERT_NE(b, nullptr) << error;
  const auto &args = b->entries.at("forward").launches[0].args;
  ASSERT_EQ(args.size(), 6u);
  const Arg &a = args[5];
  EXPECT_EQ(a.kind, Arg::Kind::TensorMap);
  EXPECT_EQ(a.buffer, 4);
  EXPECT_EQ(a.ivalue, 128);
  EXPECT_EQ(a.map.rows, 15u);
  EXPECT_EQ(a.map.cols, 48u);
  EXPECT_EQ(a.map.rowBytes, 128u);
  EXPECT_EQ(a.map.boxRows, 8u);
  EXPECT_EQ(a.map.boxCols, 64u);
  EXPECT_EQ(a.map.swizzle, 128u);

  const Json h = Json::parse(bundleHeaderJson(w.spec, w.blobs));
  EXPECT_EQ(h["entries"]["forward"]["launches"][0]["args"][5],
            Json::parse(R"({"kind": "tensor_map", "buffer": 4, "offset": 128, "rows": 15,
                            "cols": 48, "row_bytes": 128, "box_rows": 8, "box_cols": 64,
                            "swizzle": 128})"));

  // "offset" is optional (0); no swizzle and a box wider than the matrix are fine.
  TensorMapSpec m = sampleMap();
  m.swizzle = 0;
  m.rows = 16;
  m.boxCols = 256;
  const BundleWriter w2 = tensorMapWriter(m);
  EXPECT_FALSE(Json::parse(bundleHeaderJson(w2.spec, w2.blobs))["entries"]["forward"]["launches"]
                   [0]["args"][5]
                       .contains("offset"));
  ASSERT_TRUE(w2.write(p, error)) << error;
  b = loadBundle(p, error);
  ASSERT_NE(b, nullptr) << error;
  const Arg &a2 = b->entries.at("forward").launches[0].args[5];
  EXPECT_EQ(a2.kind, Arg::Kind::TensorMap);
  EXPECT_EQ(a2.ivalue, 0);
  EXPECT_EQ(a2.map.swizzle, 0u);
  EXPECT_EQ(a2.map.boxCols, 256u);
}

TEST(BundleSpecTest, TensorMapErrors) {
  const std::string f = "entries.forward.launches[0].args[5]: ";
  auto check = [&](const std::function<void(TensorMapSpec &)> &edit, const std::string &want,
                   int64_t offset = 0) {
    TensorMapSpec m = sampleMap();
    edit(m);
    const BundleWriter w = tensorMapWriter(m, offset);
    std::string error;
    EXPECT_FALSE(validateBundleSpec(w.spec, w.blobs.size(), error)) << want;
    EXPECT_EQ(error, f + want);
  };
  {
    const BundleWriter w = tensorMapWriter(sampleMap());
    std::string error;
    EXPECT_TRUE(validateBundleSpec(w.spec, w.blobs.size(), error)) << error;
  }
  check([](TensorMapSpec &m) { m.swizzle = 48; }, "tensor_map swizzle 48 must be 0, 32, 64 or 128");
  check([](TensorMapSpec &m) { m.boxRows = 257; }, "tensor_map box_rows 257 must be in [1, 256]");
  check([](TensorMapSpec &m) { m.boxRows = 0; }, "tensor_map box_rows 0 must be in [1, 256]");
  check([](TensorMapSpec &m) { m.boxCols = 264; m.swizzle = 0; },
        "tensor_map box_cols 264 must be in [1, 256]");
  check([](TensorMapSpec &m) { m.boxCols = 12; },
        "tensor_map box_cols 12 (24 bytes) must span a multiple of 16 bytes");
  check([](TensorMapSpec &m) { m.boxCols = 64; m.swizzle = 64; },
        "tensor_map box_cols 64 (128 bytes) exceed the 64-byte swizzle span");
  check([](TensorMapSpec &m) { m.boxCols = 32; m.swizzle = 32; },
        "tensor_map box_cols 32 (64 bytes) exceed the 32-byte swizzle span");
  check([](TensorMapSpec &m) { m.rows = 0; }, "tensor_map rows 0 must be in [1, 2^32]");
  check([](TensorMapSpec &m) { m.cols = 0; }, "tensor_map cols 0 must be in [1, 2^32]");
  check([](TensorMapSpec &m) { m.cols = 65; },
        "tensor_map cols 65 (130 bytes) exceed row_bytes 128");
  check([](TensorMapSpec &m) { m.rowBytes = 120; },
        "tensor_map row_bytes 120 must be a positive multiple of 16 below 2^40");
  check([](TensorMapSpec &m) { m.rowBytes = uint64_t(1) << 40; },
        "tensor_map row_bytes 1099511627776 must be a positive multiple of 16 below 2^40");
  // Past the end of 'a' (2048 bytes): 16 full rows from offset 128, one row too many
  // rows, a too long row pitch, and a product that overflows 64 bits.
  check([](TensorMapSpec &m) { m.rows = 16; },
        "tensor_map 16x48 with row_bytes 128 at offset 128 ends at byte 2144, past the end "
        "of buffer 'a' (2048 bytes)",
        128);
  check([](TensorMapSpec &m) { m.rows = 17; },
        "tensor_map 17x48 with row_bytes 128 at offset 0 ends at byte 2144, past the end of "
        "buffer 'a' (2048 bytes)");
  check([](TensorMapSpec &m) { m.rowBytes = 256; },
        "tensor_map 15x48 with row_bytes 256 at offset 0 ends at byte 3680, past the end of "
        "buffer 'a' (2048 bytes)");
  check([](TensorMapSpec &m) { m.rows = uint64_t(1) << 32; m.rowBytes = uint64_t(1) << 39; },
        "tensor_map 4294967296x48 with row_bytes 549755813888 at offset 0 ends at byte 2^64 or "
        "more, past the end of buffer 'a' (2048 bytes)");
  check([](TensorMapSpec &) {},
        "offset 24 into buffer 'a' (2048 bytes) must be a multiple of 16 inside the buffer", 24);
  check([](TensorMapSpec &) {},
        "offset 2048 into buffer 'a' (2048 bytes) must be a multiple of 16 inside the buffer",
        2048);

  // The buffer must hold BF16 ('t' is F32), and exist.
  BundleWriter w = tensorMapWriter(sampleMap());
  w.spec.entries["forward"].launches[0].args[5].buffer = 2;
  std::string error;
  EXPECT_FALSE(validateBundleSpec(w.spec, w.blobs.size(), error));
  EXPECT_EQ(error, f + "tensor_map buffer 't' has dtype F32 (tensor maps read BF16 buffers)");
  w.spec.entries["forward"].launches[0].args[5].buffer = 5;
  EXPECT_FALSE(validateBundleSpec(w.spec, w.blobs.size(), error));
  EXPECT_EQ(error, f + "buffer id 5 out of range (5 buffers)");
}

TEST_F(BundleFileTest, TensorMapHeaderErrors) {
  auto withMap = [](const std::function<void(Json &)> &edit) {
    return [edit](Json &j) {
      j["buffers"].push_back({{"name", "a"}, {"offset", 1024}, {"bytes", 2048},
                              {"dtype", "BF16"}, {"shape", {16, 64}}, {"role", "input"}});
      j["arena_bytes"] = 3072;
      Json &args = j["entries"]["forward"]["launches"][0]["args"];
      args.push_back({{"kind", "tensor_map"}, {"buffer", 4}, {"rows", 16}, {"cols", 64},
                      {"row_bytes", 128}, {"box_rows", 8}, {"box_cols", 64}, {"swizzle", 128}});
      edit(args[5]);
    };
  };
  expectHeaderError(withMap([](Json &a) { a.erase("box_cols"); }),
                    "entries.forward.launches[0].args[5]: missing key 'box_cols'");
  expectHeaderError(withMap([](Json &a) { a["swizzle"] = "128B"; }),
                    "entries.forward.launches[0].args[5].swizzle: expected an integer, got a string");
  expectHeaderError(withMap([](Json &a) { a["rows"] = -1; }),
                    "entries.forward.launches[0].args[5].rows: -1 is out of range");
  expectHeaderError(withMap([](Json &a) { a["box_rows"] = 1LL << 33; }),
                    "entries.forward.launches[0].args[5].box_rows: 8589934592 is out of range");
  expectHeaderError(withMap([](Json &a) { a["offset"] = 2.5; }),
                    "entries.forward.launches[0].args[5].offset: expected an integer");
  expectHeaderError(withMap([](Json &a) { a["swizzle"] = 16; }),
                    "entries.forward.launches[0].args[5]: tensor_map swizzle 16 must be 0, 32, 64 or 128");
  expectHeaderError(withMap([](Json &a) { a["box_rows"] = 512; }),
                    "entries.forward.launches[0].args[5]: tensor_map box_rows 512 must be in [1, 256]");
  expectHeaderError(withMap([](Json &a) { a["offset"] = 16; }),
                    "entries.forward.launches[0].args[5]: tensor_map 16x64 with row_bytes 128 at "
                    "offset 16 ends at byte 2064, past the end of buffer 'a' (2048 bytes)");
  expectHeaderError(withMap([](Json &a) { a["buffer"] = 1; }),
                    "entries.forward.launches[0].args[5]: tensor_map buffer 'w' has dtype F32");
  expectHeaderError(withMap([](Json &a) { a["swizzle"] = 64; }),
                    "entries.forward.launches[0].args[5]: tensor_map box_cols 64 (128 bytes) "
                    "exceed the 64-byte swizzle span");
  // The sample with the map loads.
  std::string file;
  Json header;
  sample(file, header);
  withMap([](Json &) {})(header);
  const std::string p = path("tmap-ok.qtb");
  writeRaw(p, withHeader(file, header.dump()));
  std::string error;
  auto b = loadBundle(p, error);
  ASSERT_NE(b, nullptr) << error;
  EXPECT_EQ(b->entries.at("forward").launches[0].args[5].map.rows, 16u);
}

TEST_F(BundleFileTest, ExtraKeysAndOutputInPlace) {
  // Unknown keys are ignored; a buffer may be both a param and an output
  // (updated in place).
  std::string file;
  Json header;
  sample(file, header);
  header["producer"] = "test";
  header["entries"]["forward"]["outputs"] = {3, 1};
  const std::string p = path("ok.qtb");
  writeRaw(p, withHeader(file, header.dump()));
  std::string error;
  auto b = loadBundle(p, error);
  ASSERT_NE(b, nullptr) << error;
  EXPECT_EQ(b->entries.at("forward").outputs, (std::vector<int>{3, 1}));
}

TEST_F(BundleFileTest, MissingFile) {
  std::string error;
  EXPECT_EQ(loadBundle(path("absent.qtb"), error), nullptr);
  EXPECT_NE(error.find("absent.qtb: cannot open"), std::string::npos) << error;
}

} // namespace

// ---- the optional "peft" object -----------------------------------------------------------

namespace {

PeftConfig samplePeft() {
  PeftConfig c;
  c.r = 16;
  c.loraAlpha = 32;
  c.loraDropout = 0.05;
  c.targetModules = {"q_proj", "v_proj"};
  c.baseModelNameOrPath = "meta-llama/Llama-3.2-1B";
  return c;
}

TEST_F(BundleFileTest, PeftRoundTrip) {
  BundleWriter w = sampleWriter();
  w.spec.peft = samplePeft();
  const std::string p = path("peft.qtb");
  std::string error;
  ASSERT_TRUE(w.write(p, error)) << error;
  auto b = loadBundle(p, error);
  ASSERT_NE(b, nullptr) << error;
  ASSERT_TRUE(b->peft.has_value());
  EXPECT_EQ(b->peft->r, 16);
  EXPECT_EQ(b->peft->loraAlpha, 32);
  EXPECT_EQ(b->peft->loraDropout, 0.05);
  EXPECT_EQ(b->peft->targetModules, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(b->peft->baseModelNameOrPath, "meta-llama/Llama-3.2-1B");
  const Json h = Json::parse(bundleHeaderJson(w.spec, w.blobs));
  EXPECT_TRUE(h["peft"]["lora_alpha"].is_number_integer()); // as PEFT writes it
  EXPECT_EQ(h["peft"]["target_modules"], Json::array({"q_proj", "v_proj"}));

  // Optional fields: no dropout means 0, a null or absent base model means unknown.
  std::string file;
  Json header;
  sample(file, header);
  header["peft"] = {{"r", 8}, {"lora_alpha", 2.5}, {"target_modules", {"o_proj"}},
                    {"base_model_name_or_path", nullptr}};
  const std::string q = path("peft2.qtb");
  writeRaw(q, withHeader(file, header.dump()));
  b = loadBundle(q, error);
  ASSERT_NE(b, nullptr) << error;
  ASSERT_TRUE(b->peft.has_value());
  EXPECT_EQ(b->peft->loraAlpha, 2.5);
  EXPECT_EQ(b->peft->loraDropout, 0.0);
  EXPECT_TRUE(b->peft->baseModelNameOrPath.empty());
}

TEST_F(BundleFileTest, NoPeftByDefault) {
  std::string error;
  ASSERT_TRUE(sampleWriter().write(path("plain.qtb"), error)) << error;
  auto b = loadBundle(path("plain.qtb"), error);
  ASSERT_NE(b, nullptr) << error;
  EXPECT_FALSE(b->peft.has_value());
  const BundleWriter w = sampleWriter();
  EXPECT_FALSE(Json::parse(bundleHeaderJson(w.spec, w.blobs)).contains("peft"));
}

TEST_F(BundleFileTest, PeftErrors) {
  auto withPeft = [](const std::function<void(Json &)> &edit) {
    return [edit](Json &j) {
      j["peft"] = {{"r", 16}, {"lora_alpha", 32}, {"lora_dropout", 0.0},
                   {"target_modules", {"q_proj", "v_proj"}}};
      edit(j["peft"]);
    };
  };
  expectHeaderError([](Json &j) { j["peft"] = Json::array(); },
                    "peft: expected an object, got an array");
  expectHeaderError(withPeft([](Json &p) { p.erase("r"); }), "peft: missing key 'r'");
  expectHeaderError(withPeft([](Json &p) { p["r"] = "16"; }),
                    "peft.r: expected an integer, got a string");
  expectHeaderError(withPeft([](Json &p) { p["r"] = 0; }),
                    "peft.r: must be a positive integer (got 0)");
  expectHeaderError(withPeft([](Json &p) { p["lora_alpha"] = "32"; }),
                    "peft.lora_alpha: expected a number, got a string");
  expectHeaderError(withPeft([](Json &p) { p["lora_alpha"] = -1; }),
                    "peft.lora_alpha: must be finite and positive (got -1)");
  expectHeaderError(withPeft([](Json &p) { p["lora_dropout"] = 1.0; }),
                    "peft.lora_dropout: must be in [0, 1) (got 1)");
  expectHeaderError(withPeft([](Json &p) { p["target_modules"] = "q_proj"; }),
                    "peft.target_modules: expected an array, got a string");
  expectHeaderError(withPeft([](Json &p) { p["target_modules"] = Json::array(); }),
                    "peft.target_modules: must name at least one module");
  expectHeaderError(withPeft([](Json &p) { p["target_modules"] = {"q_proj", 3}; }),
                    "peft.target_modules[1]: expected a string, got an integer");
  expectHeaderError(withPeft([](Json &p) { p["target_modules"] = {"q_proj", ""}; }),
                    "peft.target_modules[1]: must not be empty");
  expectHeaderError(withPeft([](Json &p) { p["target_modules"] = {"q_proj", "q_proj"}; }),
                    "peft.target_modules[1]: 'q_proj' is listed twice");
  expectHeaderError(withPeft([](Json &p) { p["base_model_name_or_path"] = 5; }),
                    "peft.base_model_name_or_path: expected a string, got an integer");

  // The writer runs the same checks and leaves no file.
  BundleWriter w = sampleWriter();
  w.spec.peft = samplePeft();
  w.spec.peft->loraDropout = -0.5;
  std::string error;
  EXPECT_FALSE(w.write(path("bad-peft.qtb"), error));
  EXPECT_EQ(error, path("bad-peft.qtb") + ": peft.lora_dropout: must be in [0, 1) (got -0.5)");
  EXPECT_FALSE(fs::exists(path("bad-peft.qtb")));
  PeftConfig c = samplePeft();
  EXPECT_TRUE(validatePeftConfig(c, error)) << error;
  c.loraAlpha = std::numeric_limits<double>::infinity();
  EXPECT_FALSE(validatePeftConfig(c, error));
  EXPECT_EQ(error, "lora_alpha: must be finite and positive (got inf)");
}

} // namespace
