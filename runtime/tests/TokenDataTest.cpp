//===- TokenDataTest.cpp - token files, windows and the batch order ---------===//
//
// No GPU needed.
//
//===----------------------------------------------------------------------===//

#include "qtune/runtime/Random.h"
#include "qtune/runtime/TokenData.h"

#include "TestSupport.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <vector>

using namespace qtune;
using namespace qtune::rt;

namespace {

using namespace qtune::rt::test;

class TokenDataTest : public TempDirTest {
protected:
  void SetUp() override { makeDir("qtune-tokendata-test"); }
  std::string writeBytes(const std::string &name, const std::string &bytes) {
    std::ofstream os(path(name), std::ios::binary | std::ios::trunc);
    os.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return path(name);
  }
  template <typename T> std::string writeTokens(const std::string &name, const std::vector<T> &v) {
    std::string bytes(v.size() * sizeof(T), '\0');
    std::memcpy(bytes.data(), v.data(), bytes.size());
    return writeBytes(name, bytes);
  }
};

std::unique_ptr<TokenData> tokens(std::vector<uint32_t> v) {
  std::string error;
  auto d = TokenData::fromTokens(std::move(v), "mem", error);
  EXPECT_NE(d, nullptr) << error;
  return d;
}

TEST(TokenFormatTest, NamesAndExtensions) {
  EXPECT_EQ(parseTokenFormat("u16"), TokenFormat::U16);
  EXPECT_EQ(parseTokenFormat("u32"), TokenFormat::U32);
  EXPECT_EQ(parseTokenFormat("text"), TokenFormat::Text);
  EXPECT_EQ(parseTokenFormat("U16"), std::nullopt);
  EXPECT_EQ(parseTokenFormat("bin"), std::nullopt);
  EXPECT_EQ(tokenFormatName(TokenFormat::U32), "u32");
  EXPECT_EQ(tokenFormatForPath("train.u16"), TokenFormat::U16);
  EXPECT_EQ(tokenFormatForPath("/data/train.bin"), TokenFormat::U16);
  EXPECT_EQ(tokenFormatForPath("train.u32"), TokenFormat::U32);
  EXPECT_EQ(tokenFormatForPath("shakespeare.txt"), TokenFormat::Text);
  EXPECT_EQ(tokenFormatForPath("README"), TokenFormat::Text);
  EXPECT_EQ(tokenSize(TokenFormat::U16), 2u);
  EXPECT_EQ(tokenSize(TokenFormat::U32), 4u);
  EXPECT_EQ(tokenSize(TokenFormat::Text), 1u);
}

TEST_F(TokenDataTest, ReadsEachFormat) {
  std::string error;
  const std::string p16 = writeTokens<uint16_t>("a.u16", {1, 65535, 7, 300});
  auto d16 = TokenData::open(p16, TokenFormat::U16, error);
  ASSERT_NE(d16, nullptr) << error;
  EXPECT_EQ(d16->size(), 4u);
  EXPECT_EQ(d16->at(0), 1u);
  EXPECT_EQ(d16->at(1), 65535u);
  EXPECT_EQ(d16->at(3), 300u);
  EXPECT_EQ(d16->maxToken(), 65535u);
  EXPECT_EQ(d16->maxTokenPosition(), 1u);
  EXPECT_EQ(d16->path(), p16);

  const std::string p32 = writeTokens<uint32_t>("a.u32", {100000, 3, 4000000000u});
  auto d32 = TokenData::open(p32, TokenFormat::U32, error);
  ASSERT_NE(d32, nullptr) << error;
  EXPECT_EQ(d32->size(), 3u);
  EXPECT_EQ(d32->at(0), 100000u);
  EXPECT_EQ(d32->at(2), 4000000000u);

  const std::string pt = writeBytes("a.txt", std::string("hi\n\xff", 4));
  auto dt = TokenData::open(pt, TokenFormat::Text, error);
  ASSERT_NE(dt, nullptr) << error;
  EXPECT_EQ(dt->size(), 4u);
  EXPECT_EQ(dt->at(0), uint32_t('h'));
  EXPECT_EQ(dt->at(2), uint32_t('\n'));
  EXPECT_EQ(dt->at(3), 255u);
  EXPECT_EQ(dt->format(), TokenFormat::Text);
}

TEST_F(TokenDataTest, OpenErrors) {
  std::string error;
  EXPECT_EQ(TokenData::open(path("absent.u16"), TokenFormat::U16, error), nullptr);
  EXPECT_EQ(error, path("absent.u16") + ": cannot open: No such file or directory");
  EXPECT_EQ(TokenData::open(writeBytes("empty.u16", ""), TokenFormat::U16, error), nullptr);
  EXPECT_EQ(error, path("empty.u16") + ": the file is empty; it holds no tokens");
  EXPECT_EQ(TokenData::open(writeBytes("odd.u16", "abc"), TokenFormat::U16, error), nullptr);
  EXPECT_EQ(error, path("odd.u16") + ": 3 bytes is not a whole number of u16 tokens (2 bytes "
                                     "each); pass --data-format if this is not a u16 file");
  EXPECT_EQ(TokenData::open(writeBytes("six.u32", "abcdef"), TokenFormat::U32, error), nullptr);
  EXPECT_EQ(error, path("six.u32") + ": 6 bytes is not a whole number of u32 tokens (4 bytes "
                                     "each); pass --data-format if this is not a u32 file");
  EXPECT_EQ(TokenData::open(dir_.string(), TokenFormat::Text, error), nullptr);
  EXPECT_EQ(error.rfind(dir_.string() + ": ", 0), 0u) << error;
  EXPECT_EQ(TokenData::fromTokens({}, "mem", error), nullptr);
  EXPECT_EQ(error, "mem: no tokens");
}

TEST_F(TokenDataTest, VocabularyCheck) {
  std::string error;
  auto d = TokenData::open(writeTokens<uint16_t>("v.u16", {5, 31999, 32000, 40000, 1}),
                           TokenFormat::U16, error);
  ASSERT_NE(d, nullptr) << error;
  EXPECT_TRUE(d->checkVocab(40001, error)) << error;
  EXPECT_FALSE(d->checkVocab(32000, error));
  // The first out-of-range token, not the largest.
  EXPECT_EQ(error, path("v.u16") + ": token 32000 at position 2 is out of range for a "
                                   "vocabulary of 32000 tokens");
  EXPECT_FALSE(d->checkVocab(0, error));
  EXPECT_NE(error.find("at least 1"), std::string::npos) << error;
  auto bytes = TokenData::open(writeBytes("b.txt", "\x7f\x80"), TokenFormat::Text, error);
  ASSERT_NE(bytes, nullptr) << error;
  EXPECT_TRUE(bytes->checkVocab(256, error));
  EXPECT_FALSE(bytes->checkVocab(128, error));
  EXPECT_EQ(error, path("b.txt") + ": token 128 at position 1 is out of range for a vocabulary "
                                   "of 128 tokens");
}

// ---- windows and batches --------------------------------------------------------------

TEST(BatchLoaderTest, WindowsInFileOrder) {
  // 0..10: 11 tokens, S = 3: windows start at 0, 3, 6 ((11 - 1) / 3 = 3).
  std::vector<uint32_t> v(11);
  for (uint32_t i = 0; i < v.size(); ++i)
    v[i] = 100 + i;
  auto d = tokens(v);
  std::string error;
  auto l = BatchLoader::create(*d, 2, 3, /*shuffle=*/false, 0, error);
  ASSERT_NE(l, nullptr) << error;
  EXPECT_EQ(l->windows(), 3u);
  EXPECT_EQ(l->tokensPerBatch(), 6);
  TokenBatch b;
  l->next(b);
  EXPECT_EQ(b.batch, 2);
  EXPECT_EQ(b.seqLen, 3);
  EXPECT_EQ(b.inputIds, (std::vector<int32_t>{100, 101, 102, 103, 104, 105}));
  EXPECT_EQ(b.labels, (std::vector<int32_t>{101, 102, 103, 104, 105, 106}));
  // The next batch wraps: window 2 of epoch 0, then window 0 of epoch 1.
  l->next(b);
  EXPECT_EQ(b.inputIds, (std::vector<int32_t>{106, 107, 108, 100, 101, 102}));
  EXPECT_EQ(b.labels, (std::vector<int32_t>{107, 108, 109, 101, 102, 103}));
  EXPECT_EQ(l->state().epoch, 1u);
  EXPECT_EQ(l->state().position, 1u);
  // Token 110 (the last) is a label only once the data has (size - 1) % S == 0.
}

TEST(BatchLoaderTest, ShardsOfTheWorldBatch) {
  // Three ranks of batch 2 draw, together, what one loader of batch 6 draws,
  // rank r taking rows 2r and 2r + 1, batch after batch; their states match
  // the single loader's.
  std::vector<uint32_t> v(200);
  for (uint32_t i = 0; i < v.size(); ++i)
    v[i] = i;
  auto d = tokens(v);
  std::string error;
  auto whole = BatchLoader::create(*d, 6, 4, /*shuffle=*/true, 5, error);
  ASSERT_NE(whole, nullptr) << error;
  std::vector<std::unique_ptr<BatchLoader>> ranks;
  for (int r = 0; r < 3; ++r) {
    ranks.push_back(BatchLoader::create(*d, 2, 4, true, 5, error));
    ASSERT_TRUE(ranks.back()->shard(r, 3, error)) << error;
  }
  for (int step = 0; step < 20; ++step) { // past an epoch (49 windows)
    TokenBatch all, part;
    whole->next(all);
    for (int r = 0; r < 3; ++r) {
      ranks[r]->next(part);
      EXPECT_EQ(part.batch, 2);
      EXPECT_EQ(part.inputIds, std::vector<int32_t>(all.inputIds.begin() + r * 8,
                                                    all.inputIds.begin() + (r + 1) * 8))
          << "step " << step << ", rank " << r;
      EXPECT_EQ(part.labels, std::vector<int32_t>(all.labels.begin() + r * 8,
                                                  all.labels.begin() + (r + 1) * 8));
      EXPECT_EQ(ranks[r]->state().position, whole->state().position);
      EXPECT_EQ(ranks[r]->state().epoch, whole->state().epoch);
    }
  }
  EXPECT_FALSE(ranks[0]->shard(3, 3, error));
  EXPECT_EQ(error, "rank 3 is outside a world of 3");
}

TEST(BatchLoaderTest, ExactlyOneWindow) {
  auto d = tokens({1, 2, 3, 4, 5});
  std::string error;
  auto l = BatchLoader::create(*d, 3, 4, /*shuffle=*/true, 9, error);
  ASSERT_NE(l, nullptr) << error;
  EXPECT_EQ(l->windows(), 1u);
  TokenBatch b;
  l->next(b); // the one window three times
  EXPECT_EQ(b.inputIds, (std::vector<int32_t>{1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4}));
  EXPECT_EQ(b.labels, (std::vector<int32_t>{2, 3, 4, 5, 2, 3, 4, 5, 2, 3, 4, 5}));
  EXPECT_EQ(l->state().epoch, 3u);
}

TEST(BatchLoaderTest, CreateErrors) {
  auto d = tokens({1, 2, 3, 4});
  std::string error;
  EXPECT_EQ(BatchLoader::create(*d, 1, 4, false, 0, error), nullptr);
  EXPECT_EQ(error, "mem: 4 tokens are fewer than one window of 5 (sequence length 4 + 1)");
  EXPECT_EQ(BatchLoader::create(*d, 0, 2, false, 0, error), nullptr);
  EXPECT_EQ(error, "mem: batch size and sequence length must be at least 1 (got 0 and 2)");
  auto big = tokens({1, 3000000000u, 2});
  EXPECT_EQ(BatchLoader::create(*big, 1, 1, false, 0, error), nullptr);
  EXPECT_EQ(error, "mem: token 3000000000 at position 1 does not fit the model's I32 token inputs");
}

TEST(BatchLoaderTest, EpochOrderIsASeededPermutation) {
  const std::vector<uint32_t> a = epochOrder(100, 1, 0);
  std::vector<uint32_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (uint32_t i = 0; i < 100; ++i)
    ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(epochOrder(100, 1, 0), a);   // deterministic
  EXPECT_NE(epochOrder(100, 2, 0), a);   // the seed matters
  EXPECT_NE(epochOrder(100, 1, 1), a);   // every epoch has its own order
  std::vector<uint32_t> identity(100);
  for (uint32_t i = 0; i < 100; ++i)
    identity[i] = i;
  EXPECT_NE(a, identity);
  EXPECT_EQ(epochOrder(1, 5, 3), (std::vector<uint32_t>{0}));
  EXPECT_TRUE(epochOrder(0, 5, 3).empty());
  // Pinned: the order must not change between builds, or a resumed run would
  // draw other batches than the run that wrote its checkpoint.
  EXPECT_EQ(epochOrder(8, 0, 0), (std::vector<uint32_t>{5, 1, 4, 7, 3, 0, 2, 6}));
  EXPECT_EQ(epochOrder(8, 0, 1), (std::vector<uint32_t>{4, 7, 5, 2, 1, 0, 6, 3}));
}

TEST(BatchLoaderTest, ShuffledEpochsCoverEveryWindowOnce) {
  std::vector<uint32_t> v(2 * 50 + 1);
  for (uint32_t i = 0; i < v.size(); ++i)
    v[i] = i;
  auto d = tokens(v);
  std::string error;
  auto l = BatchLoader::create(*d, 5, 2, /*shuffle=*/true, 42, error);
  ASSERT_NE(l, nullptr) << error;
  ASSERT_EQ(l->windows(), 50u);
  for (uint64_t epoch = 0; epoch < 3; ++epoch) {
    std::set<int32_t> starts;
    TokenBatch b;
    for (int k = 0; k < 10; ++k) { // 10 batches of 5 = one epoch
      l->next(b);
      for (int64_t r = 0; r < 5; ++r) {
        const int32_t start = b.inputIds[r * 2];
        EXPECT_EQ(start % 2, 0);
        EXPECT_EQ(b.inputIds[r * 2 + 1], start + 1);
        EXPECT_EQ(b.labels[r * 2], start + 1);
        EXPECT_EQ(b.labels[r * 2 + 1], start + 2);
        EXPECT_EQ(static_cast<uint64_t>(start / 2), l->windowAt(epoch, k * 5 + r));
        starts.insert(start);
      }
    }
    EXPECT_EQ(starts.size(), 50u) << epoch;
    EXPECT_EQ(l->state().epoch, epoch + 1);
    EXPECT_EQ(l->state().position, 0u);
  }
}

TEST(BatchLoaderTest, RestoredStateContinuesTheSameBatches) {
  std::vector<uint32_t> v(4 * 13 + 1);
  for (uint32_t i = 0; i < v.size(); ++i)
    v[i] = i * 7 % 97;
  auto d = tokens(v);
  std::string error;
  auto straight = BatchLoader::create(*d, 3, 4, true, 123, error);
  ASSERT_NE(straight, nullptr) << error;
  std::vector<TokenBatch> expected(20);
  LoaderState mid;
  for (int k = 0; k < 20; ++k) {
    if (k == 7)
      mid = straight->state(); // inside epoch 1 (13 windows an epoch, 3 a batch)
    straight->next(expected[k]);
  }
  EXPECT_EQ(mid.epoch, 1u);
  EXPECT_EQ(mid.position, 8u);
  // A fresh loader, even one created with other settings, continues from the state.
  auto resumed = BatchLoader::create(*d, 3, 4, false, 0, error);
  ASSERT_NE(resumed, nullptr) << error;
  ASSERT_TRUE(resumed->restore(mid, error)) << error;
  EXPECT_EQ(resumed->state().seed, 123u);
  EXPECT_TRUE(resumed->state().shuffle);
  for (int k = 7; k < 20; ++k) {
    TokenBatch b;
    resumed->next(b);
    EXPECT_EQ(b.inputIds, expected[k].inputIds) << k;
    EXPECT_EQ(b.labels, expected[k].labels) << k;
  }
  LoaderState bad = mid;
  bad.position = 13;
  EXPECT_FALSE(resumed->restore(bad, error));
  EXPECT_EQ(error, "mem: loader position 13 is past the 13 windows of the data");
}

TEST(RandomTest, SplitMix64IsTheReferenceSequence) {
  // The reference SplitMix64 outputs for seed 0 (Vigna's splitmix64.c).
  Rng rng(0);
  EXPECT_EQ(rng.next(), 0xe220a8397b1dcdafull);
  EXPECT_EQ(rng.next(), 0x6e789e6aa1b965f4ull);
  EXPECT_EQ(rng.next(), 0x06c45d188009454full);
}

TEST(RandomTest, BoundedAndUniform) {
  Rng rng(7);
  std::vector<int> counts(10);
  for (int i = 0; i < 100000; ++i) {
    const uint64_t x = rng.below(10);
    ASSERT_LT(x, 10u);
    ++counts[x];
  }
  for (int c : counts)
    EXPECT_NEAR(c, 10000, 500);
  EXPECT_EQ(rng.below(0), 0u);
  EXPECT_EQ(rng.below(1), 0u);
  for (int i = 0; i < 1000; ++i) {
    const double u = rng.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

TEST_F(TokenDataTest, FormatsThatCannotBeWhatTheModelReads) {
  std::string error;
  // u32 ids of a 32000-token vocabulary written to a ".bin", read as u16:
  // every second u16 is a zero high half.
  auto bin = TokenData::open(writeTokens<uint32_t>("train.bin", {5, 31999, 7, 12}),
                             TokenFormat::U16, error);
  ASSERT_NE(bin, nullptr) << error;
  auto why = bin->formatProblem(32000, /*implied=*/true);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("train.bin: every second u16 id is 0, as in a u32 file read as u16; "
                      "pass --data-format u32"),
            std::string::npos)
      << *why;
  EXPECT_FALSE(bin->formatProblem(32000, /*implied=*/false)) << "--data-format u16 is believed";
  // Real u16 data named .bin (nanoGPT's) passes.
  auto real = TokenData::open(writeTokens<uint16_t>("real.bin", {5, 9, 7, 12}),
                              TokenFormat::U16, error);
  ASSERT_NE(real, nullptr) << error;
  EXPECT_FALSE(real->formatProblem(50257, true));
  // A u16 file cannot hold a 128256-token vocabulary, given or implied.
  auto u16 = TokenData::open(writeTokens<uint16_t>("t.u16", {1, 2}), TokenFormat::U16, error);
  ASSERT_NE(u16, nullptr) << error;
  why = u16->formatProblem(128256, /*implied=*/false);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("t.u16: a u16 token file cannot hold the ids of a vocabulary of 128256 "
                      "tokens; pass --data-format u32"),
            std::string::npos)
      << *why;
  // A JSONL file taken as text by its name is not tokens for a 32000-token
  // model; said explicitly, bytes are what the user asked for.
  auto jsonl = TokenData::open(writeBytes("data.jsonl", "{\"text\": \"hi\"}\n"),
                               TokenFormat::Text, error);
  ASSERT_NE(jsonl, nullptr) << error;
  why = jsonl->formatProblem(32000, /*implied=*/true);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("data.jsonl: read as text (one token a byte, from its name), but the "
                      "model's vocabulary has 32000 tokens: tokenize it first"),
            std::string::npos)
      << *why;
  EXPECT_FALSE(jsonl->formatProblem(32000, /*implied=*/false));
  EXPECT_FALSE(jsonl->formatProblem(256, /*implied=*/true)) << "a byte-level model reads text";
  EXPECT_FALSE(jsonl->formatProblem(0, /*implied=*/true)) << "no vocabulary known";
}

} // namespace
