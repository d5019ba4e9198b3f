//===- ProfileTest.cpp - per-kernel and per-family profiles ---------------===//

#include "qtune/runtime/Profile.h"

#include <gtest/gtest.h>

using namespace qtune::rt;

namespace {

Bundle threeKernels() {
  Bundle b;
  for (const char *name : {"attention_fwd_causal_d128", "linear_uniform4g128_n4096k4096",
                           "rms_norm_fwd_h4096"}) {
    Kernel k;
    k.name = name;
    b.kernels.push_back(k);
  }
  Entry e;
  auto launch = [](int kernel, const char *family) {
    Launch l;
    l.kernel = kernel;
    l.family = family;
    return l;
  };
  e.launches = {launch(2, "norms and elementwise"), launch(1, "quantized GEMM"),
                launch(0, "attention"), launch(1, "quantized GEMM"), launch(2, ""),
                launch(0, "attention")};
  b.entries["step"] = e;
  return b;
}

TEST(ProfileTest, SumsPerKernelAndFamilyLongestFirst) {
  Bundle b = threeKernels();
  const EntryProfile p = summarize(b, b.entries["step"], {0.5, 2.0, 1.25, 3.0, 0.25, 1.0});
  EXPECT_DOUBLE_EQ(p.totalMs, 8.0);
  ASSERT_EQ(p.kernels.size(), 3u);
  EXPECT_EQ(p.kernels[0].name, "linear_uniform4g128_n4096k4096");
  EXPECT_DOUBLE_EQ(p.kernels[0].ms, 5.0);
  EXPECT_EQ(p.kernels[0].launches, 2);
  EXPECT_EQ(p.kernels[1].name, "attention_fwd_causal_d128");
  EXPECT_DOUBLE_EQ(p.kernels[1].ms, 2.25);
  EXPECT_EQ(p.kernels[2].name, "rms_norm_fwd_h4096");
  EXPECT_DOUBLE_EQ(p.kernels[2].ms, 0.75);
  // A launch the compiler gave no family counts as "other".
  ASSERT_EQ(p.families.size(), 4u);
  EXPECT_EQ(p.families[0].name, "quantized GEMM");
  EXPECT_EQ(p.families[1].name, "attention");
  EXPECT_EQ(p.families[2].name, "norms and elementwise");
  EXPECT_DOUBLE_EQ(p.families[2].ms, 0.5);
  EXPECT_EQ(p.families[3].name, "other");
  EXPECT_EQ(p.families[3].launches, 1);
}

TEST(ProfileTest, TableShowsSharesAndFoldsTheTail) {
  Bundle b = threeKernels();
  const EntryProfile p = summarize(b, b.entries["step"], {0.5, 2.0, 1.25, 3.0, 0.25, 1.0});
  const std::string text = formatProfile(p, "step", 5, /*topKernels=*/2);
  EXPECT_NE(text.find("profile of entry 'step': 8.000 ms per run"), std::string::npos) << text;
  EXPECT_NE(text.find("mean of 5 runs"), std::string::npos) << text;
  EXPECT_NE(text.find("quantized GEMM"), std::string::npos) << text;
  EXPECT_NE(text.find("5.000 ms   62.5 %"), std::string::npos) << text;
  EXPECT_NE(text.find("(1 more kernels)"), std::string::npos) << text;
  EXPECT_EQ(text.find("rms_norm_fwd_h4096"), std::string::npos) << text;
}

} // namespace
