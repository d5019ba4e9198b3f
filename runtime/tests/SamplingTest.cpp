//===- SamplingTest.cpp - greedy, temperature and top-p sampling ------------===//
//
// No GPU needed.
//
//===----------------------------------------------------------------------===//

#include "qtune/runtime/Sampling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

using namespace qtune::rt;

namespace {

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(SamplingTest, Checks) {
  std::string error;
  EXPECT_TRUE(checkSampling({0.0, 1.0}, error)) << error;
  EXPECT_TRUE(checkSampling({0.7, 0.9}, error)) << error;
  EXPECT_FALSE(checkSampling({-0.1, 1.0}, error));
  EXPECT_EQ(error, "--temperature must be finite and non-negative (got -0.1)");
  EXPECT_FALSE(checkSampling({std::nan(""), 1.0}, error));
  EXPECT_EQ(error, "--temperature must be finite and non-negative (got nan)");
  EXPECT_FALSE(checkSampling({1.0, 0.0}, error));
  EXPECT_EQ(error, "--top-p must be in (0, 1] (got 0)");
  EXPECT_FALSE(checkSampling({1.0, 1.5}, error));
  EXPECT_EQ(error, "--top-p must be in (0, 1] (got 1.5)");
}

TEST(SamplingTest, GreedyPicksTheArgmax) {
  const std::vector<float> logits = {0.5f, -1.0f, 3.25f, 3.0f, -kInf};
  int64_t token = -1;
  std::string error;
  ASSERT_TRUE(argmaxToken(logits.data(), logits.size(), token, error)) << error;
  EXPECT_EQ(token, 2);
  // Temperature 0 is greedy, whatever the rng and top-p.
  Rng rng(1);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(sampleToken(logits.data(), logits.size(), {0.0, 0.1}, rng, token, error));
    EXPECT_EQ(token, 2);
  }
  // Ties: the lowest index.
  const std::vector<float> tie = {1.0f, 7.0f, 7.0f};
  ASSERT_TRUE(argmaxToken(tie.data(), tie.size(), token, error));
  EXPECT_EQ(token, 1);
}

TEST(SamplingTest, NanLogitsAreAnError) {
  const std::vector<float> logits = {0.5f, kNan, 1.0f};
  int64_t token = -1;
  std::string error;
  EXPECT_FALSE(argmaxToken(logits.data(), logits.size(), token, error));
  EXPECT_EQ(error, "logit 1 is nan");
  Rng rng(1);
  EXPECT_FALSE(sampleToken(logits.data(), logits.size(), {0.0, 1.0}, rng, token, error));
  EXPECT_EQ(error, "logit 1 is nan");
  EXPECT_FALSE(sampleToken(logits.data(), logits.size(), {1.0, 1.0}, rng, token, error));
  EXPECT_EQ(error, "logit 1 is nan");
  const std::vector<float> inf = {0.5f, kInf};
  EXPECT_FALSE(sampleToken(inf.data(), inf.size(), {1.0, 1.0}, rng, token, error));
  EXPECT_EQ(error, "logit 1 is inf");
  const std::vector<float> none = {-kInf, -kInf};
  EXPECT_FALSE(sampleToken(none.data(), none.size(), {1.0, 1.0}, rng, token, error));
  EXPECT_EQ(error, "every logit is -inf");
  EXPECT_FALSE(argmaxToken(nullptr, 0, token, error));
  EXPECT_EQ(error, "no logits to choose from");
}

TEST(SamplingTest, SoftmaxWithTemperature) {
  const std::vector<float> logits = {0.0f, std::log(3.0f), -kInf};
  std::vector<double> p;
  std::string error;
  ASSERT_TRUE(softmax(logits.data(), logits.size(), 1.0, p, error)) << error;
  EXPECT_NEAR(p[0], 0.25, 1e-7);
  EXPECT_NEAR(p[1], 0.75, 1e-7);
  EXPECT_EQ(p[2], 0.0);
  // T = 0.5 squares the odds: 1 : 9.
  ASSERT_TRUE(softmax(logits.data(), logits.size(), 0.5, p, error)) << error;
  EXPECT_NEAR(p[0], 0.1, 1e-6);
  EXPECT_NEAR(p[1], 0.9, 1e-6);
  // Large logits do not overflow.
  const std::vector<float> big = {1000.0f, 1000.0f};
  ASSERT_TRUE(softmax(big.data(), big.size(), 1.0, p, error)) << error;
  EXPECT_EQ(p[0], 0.5);
}

TEST(SamplingTest, NucleusIsTheSmallestSetReachingP) {
  const std::vector<double> p = {0.1, 0.4, 0.2, 0.3};
  EXPECT_EQ(nucleus(p, 0.4), (std::vector<size_t>{1}));          // 0.4 >= 0.4
  EXPECT_EQ(nucleus(p, 0.41), (std::vector<size_t>{1, 3}));      // 0.7
  EXPECT_EQ(nucleus(p, 0.7), (std::vector<size_t>{1, 3}));
  EXPECT_EQ(nucleus(p, 0.75), (std::vector<size_t>{1, 3, 2}));   // 0.9
  EXPECT_EQ(nucleus(p, 0.95), (std::vector<size_t>{1, 3, 2, 0}));
  EXPECT_EQ(nucleus(p, 1.0), (std::vector<size_t>{1, 3, 2, 0}));
  EXPECT_EQ(nucleus(p, 0.01), (std::vector<size_t>{1}));         // at least one
  // Equal probabilities: the lower index first.
  EXPECT_EQ(nucleus({0.25, 0.5, 0.25}, 0.6), (std::vector<size_t>{1, 0}));
  // Impossible tokens are never kept, even at p = 1.
  EXPECT_EQ(nucleus({0.5, 0.0, 0.5}, 1.0), (std::vector<size_t>{0, 2}));
}

TEST(SamplingTest, TopPNeverSamplesOutsideTheNucleus) {
  // p = {0.5, 0.3, 0.15, 0.05}: top-p 0.8 keeps tokens 0 and 1 only.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                                     std::log(0.05f)};
  Rng rng(3);
  std::map<int64_t, int> counts;
  std::string error;
  for (int i = 0; i < 20000; ++i) {
    int64_t token = -1;
    ASSERT_TRUE(sampleToken(logits.data(), logits.size(), {1.0, 0.8}, rng, token, error))
        << error;
    ++counts[token];
  }
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_EQ(counts.count(2), 0u);
  EXPECT_EQ(counts.count(3), 0u);
  EXPECT_NEAR(counts[0] / 20000.0, 0.5 / 0.8, 0.015); // renormalized
  EXPECT_NEAR(counts[1] / 20000.0, 0.3 / 0.8, 0.015);
}

TEST(SamplingTest, TemperatureSamplingFollowsTheDistribution) {
  const std::vector<float> logits = {0.0f, std::log(3.0f)};
  Rng rng(11);
  int ones = 0;
  std::string error;
  for (int i = 0; i < 20000; ++i) {
    int64_t token = -1;
    ASSERT_TRUE(sampleToken(logits.data(), logits.size(), {1.0, 1.0}, rng, token, error));
    ones += token == 1;
  }
  EXPECT_NEAR(ones / 20000.0, 0.75, 0.015);
}

TEST(SamplingTest, AFixedSeedGivesAFixedSequence) {
  std::vector<float> logits(50);
  for (size_t i = 0; i < logits.size(); ++i)
    logits[i] = std::sin(static_cast<float>(i));
  auto run = [&](uint64_t seed) {
    Rng rng(seed);
    std::vector<int64_t> out;
    std::string error;
    for (int i = 0; i < 32; ++i) {
      int64_t token = -1;
      EXPECT_TRUE(sampleToken(logits.data(), logits.size(), {0.9, 0.95}, rng, token, error));
      out.push_back(token);
    }
    return out;
  };
  EXPECT_EQ(run(5), run(5));
  EXPECT_NE(run(5), run(6));
}

std::vector<int64_t> bytes(const std::string &s) {
  std::vector<int64_t> out;
  for (unsigned char c : s)
    out.push_back(c);
  return out;
}

TEST(SamplingTest, TokensToTextEscapes) {
  EXPECT_EQ(tokensToText(bytes("Hello, world!\n\tok")), "Hello, world!\n\tok");
  EXPECT_EQ(tokensToText(bytes("a\\b")), "a\\\\b");
  EXPECT_EQ(tokensToText(bytes(std::string("\0\x01\x7f\r", 4))), "\\x00\\x01\\x7f\\x0d");
  EXPECT_EQ(tokensToText(bytes("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80")),
            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"); // well-formed UTF-8 stays
  EXPECT_EQ(tokensToText(bytes("\xc3")), "\\xc3");          // truncated sequence
  EXPECT_EQ(tokensToText(bytes("\xc3(")), "\\xc3(");
  EXPECT_EQ(tokensToText(bytes("\xa9")), "\\xa9");          // lone continuation byte
  EXPECT_EQ(tokensToText(bytes("\xc0\xaf")), "\\xc0\\xaf"); // overlong
  EXPECT_EQ(tokensToText(bytes("\xed\xa0\x80")), "\\xed\\xa0\\x80"); // surrogate
  EXPECT_EQ(tokensToText({104, 300, 105}), "h<|300|>i");
}

} // namespace
