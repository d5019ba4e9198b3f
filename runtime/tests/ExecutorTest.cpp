//===- ExecutorTest.cpp - CUDA loader, executor and qtune-run tests ---------===//
//
// Tests that need a GPU skip themselves where none is available (no
// libcuda.so.1, cuInit fails or no devices); the others run everywhere.
//
//===----------------------------------------------------------------------===//

#include "qtune/runtime/Bundle.h"
#include "qtune/runtime/Cuda.h"
#include "qtune/runtime/Executor.h"
#include "qtune/runtime/Float16.h"

#include "TestSupport.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>


namespace fs = std::filesystem;
using namespace qtune;
using namespace qtune::rt;

namespace {

using namespace qtune::rt::test;


// Two hand-written kernels in one PTX module:
//   bf16_to_f32(u16 *x, f32 *t, i64 n):            t[i] = float(x[i])
//   axpy_smem(f32 *t, f32 *w, f32 *y, i64 n, f32 alpha, i32 bias):
//       y[i] = fma(alpha, w[i], t[i]) + float(bias), staged through dynamic
//       shared memory at byte 64 KiB + 4 * tid (so it needs > 48 KiB).
const char *const kPtx = R"(
.version 7.0
.target sm_80
.address_size 64

.visible .entry bf16_to_f32(.param .u64 p_x, .param .u64 p_t, .param .s64 p_n)
{
  .reg .pred %p<2>;
  .reg .b32 %r<6>;
  .reg .b16 %h<2>;
  .reg .b64 %rd<10>;
  ld.param.u64 %rd1, [p_x];
  ld.param.u64 %rd2, [p_t];
  ld.param.s64 %rd3, [p_n];
  mov.u32 %r1, %ctaid.x;
  mov.u32 %r2, %ntid.x;
  mov.u32 %r3, %tid.x;
  mad.lo.u32 %r4, %r1, %r2, %r3;
  cvt.u64.u32 %rd4, %r4;
  setp.ge.s64 %p1, %rd4, %rd3;
  @%p1 bra DONE;
  cvta.to.global.u64 %rd5, %rd1;
  shl.b64 %rd6, %rd4, 1;
  add.u64 %rd5, %rd5, %rd6;
  ld.global.u16 %h1, [%rd5];
  cvt.u32.u16 %r5, %h1;
  shl.b32 %r5, %r5, 16;
  cvta.to.global.u64 %rd7, %rd2;
  shl.b64 %rd8, %rd4, 2;
  add.u64 %rd7, %rd7, %rd8;
  st.global.u32 [%rd7], %r5;
DONE:
  ret;
}

.extern .shared .align 16 .b8 smem[];

.visible .entry axpy_smem(.param .u64 p_t, .param .u64 p_w, .param .u64 p_y,
                          .param .s64 p_n, .param .f32 p_alpha, .param .s32 p_bias)
{
  .reg .pred %p<2>;
  .reg .b32 %r<6>;
  .reg .f32 %f<8>;
  .reg .b64 %rd<14>;
  ld.param.u64 %rd1, [p_t];
  ld.param.u64 %rd2, [p_w];
  ld.param.u64 %rd3, [p_y];
  ld.param.s64 %rd4, [p_n];
  ld.param.f32 %f1, [p_alpha];
  ld.param.s32 %r1, [p_bias];
  mov.u32 %r2, %ctaid.x;
  mov.u32 %r3, %ntid.x;
  mov.u32 %r4, %tid.x;
  mad.lo.u32 %r5, %r2, %r3, %r4;
  cvt.u64.u32 %rd5, %r5;
  setp.ge.s64 %p1, %rd5, %rd4;
  @%p1 bra DONE;
  shl.b64 %rd6, %rd5, 2;
  cvta.to.global.u64 %rd7, %rd1;
  add.u64 %rd7, %rd7, %rd6;
  ld.global.f32 %f2, [%rd7];
  cvta.to.global.u64 %rd8, %rd2;
  add.u64 %rd8, %rd8, %rd6;
  ld.global.f32 %f3, [%rd8];
  fma.rn.f32 %f4, %f1, %f3, %f2;
  cvt.rn.f32.s32 %f5, %r1;
  add.rn.f32 %f4, %f4, %f5;
  mov.u64 %rd9, smem;
  cvt.u64.u32 %rd10, %r4;
  shl.b64 %rd10, %rd10, 2;
  add.u64 %rd9, %rd9, %rd10;
  add.u64 %rd9, %rd9, 65536;
  st.shared.f32 [%rd9], %f4;
  ld.shared.f32 %f6, [%rd9];
  cvta.to.global.u64 %rd11, %rd3;
  add.u64 %rd11, %rd11, %rd6;
  st.global.f32 [%rd11], %f6;
DONE:
  ret;
}
)";

constexpr int64_t kN = 1000;
constexpr float kAlpha = 0.5f;
constexpr int32_t kBias = 3;

uint64_t align256(uint64_t v) { return (v + 255) / 256 * 256; }

/// x (BF16 input) -> t (F32 temporary) -> y = alpha * w + t + bias (F32 output).
BundleWriter gpuBundle() {
  BundleWriter w;
  w.spec.target = "sm_80";
  const int ptx = w.addBlob(kPtx);
  const int junk = w.addBlob("not a cubin"); // fails to load: PTX fallback
  const int k0 = w.addKernel({"bf16_to_f32", ptx, junk, {256, 1, 1}, 0});
  const int k1 = w.addKernel({"axpy_smem", ptx, -1, {256, 1, 1}, 100 * 1024});
  uint64_t off = 0;
  auto buffer = [&](const char *name, st::DType dt, BufferRole role) {
    const uint64_t bytes = kN * st::dtypeSize(dt);
    const int id = w.addBuffer({name, off, bytes, dt, {kN}, role});
    off = align256(off + bytes);
    return id;
  };
  const int x = buffer("x", st::DType::BF16, BufferRole::Input);
  const int wt = buffer("w", st::DType::F32, BufferRole::Trainable);
  const int t = buffer("t", st::DType::F32, BufferRole::Temporary);
  const int y = buffer("y", st::DType::F32, BufferRole::Output);
  w.spec.arenaBytes = off;
  Entry &e = w.entry("forward");
  e.inputs = {x};
  e.params = {wt};
  e.outputs = {y};
  const uint32_t grid = (kN + 255) / 256;
  e.launches.push_back({k0, {grid, 1, 1}, {256, 1, 1}, 0, {Arg::ptr(x), Arg::ptr(t), Arg::i64(kN)}});
  e.launches.push_back({k1, {grid, 1, 1}, {256, 1, 1}, 100 * 1024,
                        {Arg::ptr(t), Arg::ptr(wt), Arg::ptr(y), Arg::i64(kN), Arg::f32(kAlpha),
                         Arg::i32(kBias)}});
  return w;
}

double xValue(int64_t i) { return (static_cast<double>(i) - 500) * 0.013; }
double wValue(int64_t i) { return std::sin(static_cast<double>(i)); }

float expectedY(int64_t i) {
  const float x = static_cast<float>(roundToBf16(static_cast<float>(xValue(i))));
  return std::fma(kAlpha, static_cast<float>(wValue(i)), x) + static_cast<float>(kBias);
}


class ExecutorFileTest : public TempDirTest {
protected:
  void SetUp() override {
    makeDir("qtune-exec-test");
    std::string error;
    ASSERT_TRUE(gpuBundle().write(path("m.qtb"), error)) << error;
    std::vector<double> xs(kN), ws(kN);
    for (int64_t i = 0; i < kN; ++i) {
      xs[i] = xValue(i);
      ws[i] = wValue(i);
    }
    writeTensors("in.safetensors", {tensor("x", st::DType::F32, xs, {kN})});
    writeTensors("params.safetensors", {tensor("w", st::DType::F64, ws, {kN})});
  }
  /// Uploads x and w from the test's files.
  void uploadInputs(const Bundle &b, Executor &ex) {
    std::string error;
    auto in = st::File::open(path("in.safetensors"), error);
    auto params = st::File::open(path("params.safetensors"), error);
    ASSERT_TRUE(in && params) << error;
    ASSERT_TRUE(ex.upload(b.findBuffer("x"), *in->find("x"), in->data(*in->find("x")), error))
        << error;
    ASSERT_TRUE(ex.upload(b.findBuffer("w"), *params->find("w"),
                          params->data(*params->find("w")), error))
        << error;
  }
  void checkOutput(const std::vector<double> &y) {
    ASSERT_EQ(y.size(), static_cast<size_t>(kN));
    for (int64_t i = 0; i < kN; ++i)
      ASSERT_EQ(static_cast<float>(y[i]), expectedY(i)) << "at " << i;
  }
};

// ---- conversions (no GPU) ------------------------------------------------------------------

TEST(ExecutorConvertTest, CheckUpload) {
  Buffer b{"w", 0, 4 * 8 * 2, st::DType::BF16, {4, 8}, BufferRole::Frozen};
  st::TensorInfo t;
  t.name = "w";
  t.dtype = st::DType::F32;
  t.shape = {4, 8};
  std::string error;
  EXPECT_TRUE(checkUpload(b, t, error)) << error;
  for (st::DType d : {st::DType::F16, st::DType::BF16, st::DType::F64}) {
    t.dtype = d;
    EXPECT_TRUE(checkUpload(b, t, error)) << error;
  }
  t.shape = {8, 4};
  EXPECT_FALSE(checkUpload(b, t, error));
  EXPECT_EQ(error, "tensor 'w' (F64 [8, 4]) for buffer 'w' (BF16 [4, 8]): shapes differ");
  t.shape = {4, 8};
  t.dtype = st::DType::I32;
  EXPECT_FALSE(checkUpload(b, t, error));
  EXPECT_NE(error.find("cannot convert I32 to BF16"), std::string::npos) << error;

  b.dtype = st::DType::I32;
  t.dtype = st::DType::U32;
  EXPECT_TRUE(checkUpload(b, t, error)) << error;
  t.dtype = st::DType::I64;
  EXPECT_FALSE(checkUpload(b, t, error));
  t.dtype = st::DType::F32;
  EXPECT_FALSE(checkUpload(b, t, error));
  b.dtype = st::DType::U8;
  t.dtype = st::DType::U8;
  EXPECT_TRUE(checkUpload(b, t, error)) << error; // equal dtypes copy as they are
  t.dtype = st::DType::I8;
  EXPECT_FALSE(checkUpload(b, t, error));
}

TEST(ExecutorConvertTest, ConvertTensor) {
  const std::vector<float> f = {1.0f, 1.00390625f /* tie: rounds to even (1.0) */,
                                1.01171875f /* tie: rounds up */, -3.3f, 70000.0f};
  st::TensorInfo t;
  t.name = "v";
  t.dtype = st::DType::F32;
  t.shape = {5};
  t.bytes = sizeof(float) * f.size();
  std::vector<uint8_t> out;
  std::string error;
  ASSERT_TRUE(convertTensor(t, reinterpret_cast<const uint8_t *>(f.data()), st::DType::BF16, out,
                            error)) << error;
  ASSERT_EQ(out.size(), 10u);
  std::vector<uint16_t> bf(5);
  std::memcpy(bf.data(), out.data(), 10);
  EXPECT_EQ(bf[0], 0x3f80);
  EXPECT_EQ(bf[1], 0x3f80);
  EXPECT_EQ(bf[2], 0x3f82);
  EXPECT_EQ(bf[3], floatToBf16(-3.3f));
  ASSERT_TRUE(convertTensor(t, reinterpret_cast<const uint8_t *>(f.data()), st::DType::F16, out,
                            error)) << error;
  std::memcpy(bf.data(), out.data(), 10);
  EXPECT_EQ(bf[4], 0x7c00); // overflow -> inf

  const std::vector<uint32_t> u = {1, 0x7fffffffu, 0x80000000u};
  t.dtype = st::DType::U32;
  t.shape = {3};
  t.bytes = 12;
  // Packed code words are bit patterns: U32 -> I32 keeps every bit.
  ASSERT_TRUE(convertTensor(t, reinterpret_cast<const uint8_t *>(u.data()), st::DType::I32, out,
                            error)) << error;
  EXPECT_EQ(std::memcmp(out.data(), u.data(), 12), 0);
}

TEST(CudaTest, FormatBytes) {
  EXPECT_EQ(cuda::formatBytes(512), "512 B");
  EXPECT_EQ(cuda::formatBytes(3 * 1024), "3.0 KiB");
  EXPECT_EQ(cuda::formatBytes(uint64_t(2254857830)), "2.1 GiB");
}

// ---- CUDA ------------------------------------------------------------------------------------

TEST(CudaTest, NoGpuGivesClearError) {
  std::string why;
  if (haveGpu(why))
    GTEST_SKIP() << "a CUDA GPU is available here; the no-GPU path cannot be tested";
  EXPECT_EQ(why.rfind("no CUDA GPU available: ", 0), 0u) << why;
  std::string error;
  EXPECT_EQ(cuda::Context::create(0, error), nullptr);
  EXPECT_EQ(error, why); // the failure is remembered, not retried differently
  BundleWriter w = gpuBundle();
  Bundle b;
  static_cast<BundleSpec &>(b) = w.spec;
  EXPECT_EQ(Executor::create(b, 0, error), nullptr);
  EXPECT_EQ(error.rfind("no CUDA GPU available: ", 0), 0u) << error;
}

TEST_F(ExecutorFileTest, RunsKernelsOnGpu) {
  std::string why;
  if (!haveGpu(why))
    GTEST_SKIP() << why;
  std::string error;
  auto b = loadBundle(path("m.qtb"), error);
  ASSERT_NE(b, nullptr) << error;
  auto ex = Executor::create(*b, 0, error);
  ASSERT_NE(ex, nullptr) << error;
  EXPECT_FALSE(ex->context().name().empty());

  auto in = st::File::open(path("in.safetensors"), error);
  auto params = st::File::open(path("params.safetensors"), error);
  ASSERT_TRUE(in && params) << error;
  const int x = b->findBuffer("x"), w = b->findBuffer("w"), y = b->findBuffer("y");
  ASSERT_TRUE(ex->fill(y, 0xFF, error)) << error;
  std::vector<double> v;
  ASSERT_TRUE(ex->download(y, v, error)) << error;
  EXPECT_TRUE(std::isnan(v[0]));
  ASSERT_TRUE(ex->upload(x, *in->find("x"), in->data(*in->find("x")), error)) << error;
  ASSERT_TRUE(ex->upload(w, *params->find("w"), params->data(*params->find("w")), error)) << error;
  ASSERT_TRUE(ex->download(x, v, error)) << error;
  EXPECT_EQ(v[7], roundToBf16(static_cast<float>(xValue(7))));

  ASSERT_TRUE(ex->run("forward", error)) << error;
  ASSERT_TRUE(ex->download(y, v, error)) << error;
  checkOutput(v);

  std::vector<double> ms;
  ASSERT_TRUE(ex->runTimed("forward", 1, 3, ms, error)) << error;
  ASSERT_EQ(ms.size(), 3u);
  for (double m : ms)
    EXPECT_GT(m, 0.0);
  EXPECT_FALSE(ex->run("backward", error));
  EXPECT_EQ(error, "the bundle has no entry 'backward' (entries: forward)");

  // Uploading a tensor of the wrong shape fails before touching the GPU.
  st::TensorInfo bad = *in->find("x");
  bad.shape = {10, 100};
  EXPECT_FALSE(ex->upload(x, bad, in->data(*in->find("x")), error));
  EXPECT_NE(error.find("shapes differ"), std::string::npos) << error;
}

TEST_F(ExecutorFileTest, GraphReplaySeesNewInputs) {
  std::string why;
  if (!haveGpu(why))
    GTEST_SKIP() << why;
  std::string error;
  auto b = loadBundle(path("m.qtb"), error);
  ASSERT_NE(b, nullptr) << error;
  auto ex = Executor::create(*b, 0, error);
  ASSERT_NE(ex, nullptr) << error;
  ASSERT_TRUE(ex->graphs()) << "entries run as CUDA graphs by default";
  const int w = b->findBuffer("w"), y = b->findBuffer("y");
  uploadInputs(*b, *ex);
  std::vector<double> first, replayed, launched;
  ASSERT_TRUE(ex->run("forward", error)) << error; // captured here
  ASSERT_TRUE(ex->download(y, first, error)) << error;
  checkOutput(first);
  // A replay reads what was uploaded since: w doubled.
  std::vector<double> w2(kN);
  for (int64_t i = 0; i < kN; ++i)
    w2[i] = 2 * wValue(i);
  writeTensors("w2.safetensors", {tensor("w", st::DType::F64, w2, {kN})});
  auto p2 = st::File::open(path("w2.safetensors"), error);
  ASSERT_TRUE(p2) << error;
  ASSERT_TRUE(ex->upload(w, *p2->find("w"), p2->data(*p2->find("w")), error)) << error;
  ASSERT_TRUE(ex->run("forward", error)) << error;
  ASSERT_TRUE(ex->download(y, replayed, error)) << error;
  for (int64_t i = 0; i < kN; ++i) {
    const float xr = static_cast<float>(roundToBf16(static_cast<float>(xValue(i))));
    ASSERT_EQ(static_cast<float>(replayed[i]),
              std::fma(kAlpha, static_cast<float>(w2[i]), xr) + static_cast<float>(kBias))
        << "at " << i;
  }
  // Launched one by one: the same bits.
  ASSERT_TRUE(ex->setGraphs(false, error)) << error;
  EXPECT_FALSE(ex->graphs());
  ASSERT_TRUE(ex->fill(y, 0xFF, error)) << error;
  ASSERT_TRUE(ex->run("forward", error)) << error;
  ASSERT_TRUE(ex->download(y, launched, error)) << error;
  EXPECT_EQ(launched, replayed);
}

TEST_F(ExecutorFileTest, ArenaOutOfMemory) {
  std::string why;
  if (!haveGpu(why))
    GTEST_SKIP() << why;
  BundleWriter w = gpuBundle();
  w.spec.arenaBytes = uint64_t(1) << 50; // 1 PiB
  std::string error;
  ASSERT_TRUE(w.write(path("huge.qtb"), error)) << error;
  auto b = loadBundle(path("huge.qtb"), error);
  ASSERT_NE(b, nullptr) << error;
  EXPECT_EQ(Executor::create(*b, 0, error), nullptr);
  EXPECT_EQ(error.rfind("cuMemAlloc(1024.0 TiB) failed: CUDA_ERROR_OUT_OF_MEMORY (out of memory); "
                        "the arena needs 1125899906842624 bytes, the GPU has ", 0), 0u)
      << error;
  EXPECT_NE(error.find(" free of "), std::string::npos) << error;
}

TEST_F(ExecutorFileTest, BadLaunchArgumentsAreCaught) {
  std::string why;
  if (!haveGpu(why))
    GTEST_SKIP() << why;
  BundleWriter w = gpuBundle();
  w.spec.entries["forward"].launches[0].args.pop_back(); // kernel takes 3
  std::string error;
  ASSERT_TRUE(w.write(path("bad.qtb"), error)) << error;
  auto b = loadBundle(path("bad.qtb"), error);
  ASSERT_NE(b, nullptr) << error;
  auto ex = Executor::create(*b, 0, error);
  if (ex)
    GTEST_SKIP() << "this driver cannot report kernel parameters (cuFuncGetParamInfo)";
  EXPECT_EQ(error, "entries.forward.launches[0]: kernel 'bf16_to_f32' takes 3 parameters, the "
                   "launch passes 2");
}

// ---- qtune-run --------------------------------------------------------------------------------


TEST_F(ExecutorFileTest, ToolInspect) {
  std::string out;
  ASSERT_EQ(runQtuneRun("inspect " + path("m.qtb"), out), 0) << out;
  for (const char *needle :
       {"target: sm_80\n", "arena: 14336 bytes (14.0 KiB)\n", "kernels (2):\n",
        "  [0] bf16_to_f32  block [256,1,1]  shared 0  ptx ", "cubin 11 B\n",
        "  [1] axpy_smem  block [256,1,1]  shared 102400  ptx ", "cubin none\n",
        "buffers (4):\n", "  [0] x  input  BF16 [1000]  offset 0  bytes 2000\n",
        "  [3] y  output  F32 [1000]  offset 10240  bytes 4000\n",
        "  forward: inputs [x], params [w], outputs [y], 2 launches\n",
        "    [1] axpy_smem  grid [4,1,1]  block [256,1,1]  shared 102400  args (ptr t, ptr w, "
        "ptr y, i64 1000, f32 0.5, i32 3)\n"})
    EXPECT_NE(out.find(needle), std::string::npos) << "lacks '" << needle << "' in:\n" << out;
}

TEST_F(ExecutorFileTest, ToolErrors) {
  std::string out;
  const std::string m = path("m.qtb");
  const std::string common = " --inputs " + path("in.safetensors") + " --out " + path("o.safetensors");

  EXPECT_EQ(runQtuneRun("inspect " + path("in.safetensors"), out), 1);
  EXPECT_EQ(out, "qtune-run: error: " + path("in.safetensors") +
                     ": magic: not a qtune bundle (expected \"QTUNEBDL\")\n");

  writeTensors("p2.safetensors", {tensor("v", st::DType::F32, std::vector<double>(kN), {kN})});
  EXPECT_EQ(runQtuneRun("forward " + m + common + " --params " + path("p2.safetensors"), out), 1);
  EXPECT_EQ(out, "qtune-run: error: " + path("p2.safetensors") +
                     ": missing 1 of the 1 params of entry 'forward': w (the file has: v)\n");

  EXPECT_EQ(runQtuneRun("forward " + m + common, out), 1);
  EXPECT_EQ(out, "qtune-run: error: entry 'forward' has 1 params; pass them with --params\n");

  writeTensors("p3.safetensors", {tensor("w", st::DType::F32, std::vector<double>(kN), {kN / 2, 2})});
  EXPECT_EQ(runQtuneRun("forward " + m + common + " --params " + path("p3.safetensors"), out), 1);
  EXPECT_NE(out.find("tensor 'w' (F32 [500, 2]) for buffer 'w' (F32 [1000]): shapes differ"),
            std::string::npos) << out;

  writeTensors("p4.safetensors", {tensor("w", st::DType::I32, std::vector<double>(kN), {kN})});
  EXPECT_EQ(runQtuneRun("forward " + m + common + " --params " + path("p4.safetensors"), out), 1);
  EXPECT_NE(out.find("cannot convert I32 to F32"), std::string::npos) << out;

  EXPECT_EQ(runQtuneRun("forward " + m + common + " --entry train", out), 1);
  EXPECT_EQ(out, "qtune-run: error: " + m + ": no entry 'train' (entries: forward)\n");

  EXPECT_EQ(runQtuneRun("forward " + m, out), 1); // no --out
  EXPECT_EQ(out.rfind("qtune-run: error: ", 0), 0u) << out;
  EXPECT_EQ(runQtuneRun("", out), 1);
  EXPECT_EQ(out.rfind("qtune-run: error: ", 0), 0u) << out;
}

TEST_F(ExecutorFileTest, ToolForward) {
  std::string out;
  const std::string args = "forward " + path("m.qtb") + " --inputs " + path("in.safetensors") +
                           " --params " + path("params.safetensors") + " --out " +
                           path("out.safetensors") + " --poison --time 5";
  std::string why;
  if (!haveGpu(why)) {
    EXPECT_EQ(runQtuneRun(args, out), 1);
    EXPECT_EQ(out.rfind("qtune-run: error: no CUDA GPU available: ", 0), 0u) << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
    EXPECT_FALSE(fs::exists(path("out.safetensors")));
    return;
  }
  ASSERT_EQ(runQtuneRun(args, out), 0) << out;
  EXPECT_NE(out.find("entry 'forward': 2 launches, "), std::string::npos) << out;
  EXPECT_NE(out.find("wrote " + path("out.safetensors") + ": y F32 [1000]\n"), std::string::npos)
      << out;
  EXPECT_NE(out.find("time: median "), std::string::npos) << out;
  EXPECT_NE(out.find("over 5 runs (after 3 warm-ups)"), std::string::npos) << out;
  std::string error;
  auto f = st::File::open(path("out.safetensors"), error);
  ASSERT_NE(f, nullptr) << error;
  EXPECT_EQ(f->metadata().at("entry"), "forward");
  const st::TensorInfo *y = f->find("y");
  ASSERT_NE(y, nullptr);
  EXPECT_EQ(y->dtype, st::DType::F32);
  checkOutput(st::toDoubles(*y, f->data(*y)));
}

} // namespace
