//===- PackingTest.cpp - canonical bit packing of quantized codes ---------===//
//
// Row n of a code matrix is one little-endian bit stream (element k at bits
// [k·b, k·b + b)) stored in 32-bit words, each row padded to a whole word.
//
//===----------------------------------------------------------------------===//

#include "qtune/Support/Packing.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

using namespace qtune;

namespace {

/// Random codes in [0, 2^bits) for an n×k matrix (fixed seed).
std::vector<uint32_t> randomCodes(int64_t n, int64_t k, unsigned bits,
                                  uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> dist(0, (1u << bits) - 1);
  std::vector<uint32_t> codes(n * k);
  for (uint32_t &c : codes)
    c = dist(rng);
  return codes;
}

TEST(PackingTest, WordsPerRow) {
  EXPECT_EQ(packedWordsPerRow(1, 1), 1);
  EXPECT_EQ(packedWordsPerRow(32, 1), 1);
  EXPECT_EQ(packedWordsPerRow(33, 1), 2);
  EXPECT_EQ(packedWordsPerRow(7, 2), 1);
  EXPECT_EQ(packedWordsPerRow(16, 2), 1);
  EXPECT_EQ(packedWordsPerRow(17, 2), 2);
  EXPECT_EQ(packedWordsPerRow(10, 3), 1); // 30 bits
  EXPECT_EQ(packedWordsPerRow(11, 3), 2); // 33 bits
  EXPECT_EQ(packedWordsPerRow(96, 3), 9);
  EXPECT_EQ(packedWordsPerRow(100, 3), 10); // 300 bits
  EXPECT_EQ(packedWordsPerRow(8, 4), 1);
  EXPECT_EQ(packedWordsPerRow(100, 4), 13);
  EXPECT_EQ(packedWordsPerRow(128, 4), 16);
  EXPECT_EQ(packedWordsPerRow(7, 5), 2); // 35 bits
  EXPECT_EQ(packedWordsPerRow(33, 7), 8); // 231 bits
  EXPECT_EQ(packedWordsPerRow(4, 8), 1);
  EXPECT_EQ(packedWordsPerRow(7, 8), 2);
  EXPECT_EQ(packedWordsPerRow(100, 8), 25);
}

/// pack / unpack round trip for every bit width and row lengths that are not a
/// multiple of 32, with several rows.
TEST(PackingTest, RoundTripAllWidths) {
  for (unsigned bits = 1; bits <= 8; ++bits)
    for (int64_t k : {1, 7, 33, 100}) {
      const int64_t n = 5;
      SCOPED_TRACE("bits = " + std::to_string(bits) +
                   ", k = " + std::to_string(k));
      std::vector<uint32_t> codes = randomCodes(n, k, bits, 17 * bits + k);
      std::vector<uint32_t> words = packCodes(codes, n, k, bits);
      int64_t wpr = packedWordsPerRow(k, bits);
      ASSERT_EQ(static_cast<int64_t>(words.size()), n * wpr);
      EXPECT_EQ(unpackCodes(words, n, k, bits), codes);

      for (int64_t r = 0; r < n; ++r) {
        // extractCode reads each element of the row from the row's words.
        for (int64_t c = 0; c < k; ++c)
          ASSERT_EQ(extractCode(&words[r * wpr], c, bits), codes[r * k + c])
              << "row " << r << ", element " << c;
        // The padding bits after the row's last code are zero.
        int64_t usedBits = k * bits - (wpr - 1) * 32;
        uint32_t last = words[r * wpr + wpr - 1];
        if (usedBits < 32) {
          EXPECT_EQ(last >> usedBits, 0u) << "row " << r;
        }
        // A row packs on its own to the same words: rows are independent.
        std::vector<uint32_t> row(codes.begin() + r * k,
                                  codes.begin() + (r + 1) * k);
        std::vector<uint32_t> rowWords = packCodes(row, 1, k, bits);
        EXPECT_EQ(rowWords, std::vector<uint32_t>(words.begin() + r * wpr,
                                                  words.begin() + (r + 1) * wpr))
            << "row " << r;
      }
    }
}

/// The extreme codes (all zeros, all ones) survive the round trip.
TEST(PackingTest, RoundTripExtremeCodes) {
  for (unsigned bits = 1; bits <= 8; ++bits) {
    const int64_t n = 2, k = 33;
    std::vector<uint32_t> codes(n * k, 0);
    for (int64_t c = 0; c < k; ++c)
      codes[k + c] = (1u << bits) - 1;
    std::vector<uint32_t> words = packCodes(codes, n, k, bits);
    EXPECT_EQ(unpackCodes(words, n, k, bits), codes) << "bits = " << bits;
    int64_t wpr = packedWordsPerRow(k, bits);
    for (int64_t w = 0; w < wpr; ++w)
      EXPECT_EQ(words[w], 0u) << "bits = " << bits;
    // Row 1 is all ones up to its last code, then zero padding.
    for (int64_t w = 0; w + 1 < wpr; ++w)
      EXPECT_EQ(words[wpr + w], 0xFFFFFFFFu) << "bits = " << bits;
  }
}

/// 4-bit codes 1..8 are the nibbles of 0x87654321, element 0 in the low nibble.
TEST(PackingTest, FourBitWords) {
  std::vector<uint32_t> codes = {1, 2, 3, 4, 5, 6, 7, 8,
                                 9, 10, 11, 12, 13, 14, 15, 0};
  std::vector<uint32_t> words = packCodes(codes, 1, 16, 4);
  ASSERT_EQ(words.size(), 2u);
  EXPECT_EQ(words[0], 0x87654321u);
  EXPECT_EQ(words[1], 0x0FEDCBA9u);

  // 4 codes only: one word, upper half zero.
  std::vector<uint32_t> shortRow = packCodes({1, 2, 3, 4}, 1, 4, 4);
  ASSERT_EQ(shortRow.size(), 1u);
  EXPECT_EQ(shortRow[0], 0x00004321u);
}

TEST(PackingTest, OneTwoEightBitWords) {
  // 1 bit: element k is bit k.
  std::vector<uint32_t> bits1 = {1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 1,
                                 1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 1,
                                 1};
  std::vector<uint32_t> w1 = packCodes(bits1, 1, 33, 1);
  ASSERT_EQ(w1.size(), 2u);
  EXPECT_EQ(w1[0], 0x8D8D8D8Du); // 0b10001101 per byte, element 0 = bit 0
  EXPECT_EQ(w1[1], 0x1u);

  // 2 bits: codes 1, 2, 3, 0 are the byte 0b00111001 = 0x39.
  std::vector<uint32_t> bits2 = {1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0,
                                 1, 2, 3, 0, 3};
  std::vector<uint32_t> w2 = packCodes(bits2, 1, 17, 2);
  ASSERT_EQ(w2.size(), 2u);
  EXPECT_EQ(w2[0], 0x39393939u);
  EXPECT_EQ(w2[1], 0x3u);

  // 8 bits: one code per byte.
  std::vector<uint32_t> w8 = packCodes({0x11, 0x22, 0x33, 0x44, 0x55}, 1, 5, 8);
  ASSERT_EQ(w8.size(), 2u);
  EXPECT_EQ(w8[0], 0x44332211u);
  EXPECT_EQ(w8[1], 0x00000055u);
}

/// 3-bit codes 0..7 repeated: code 10 occupies bits 30..32 and straddles words 0
/// and 1; code 21 occupies bits 63..65 and straddles words 1 and 2.
TEST(PackingTest, ThreeBitStraddlesWords) {
  const int64_t k = 35; // 105 bits: 4 words
  std::vector<uint32_t> codes(k);
  for (int64_t i = 0; i < k; ++i)
    codes[i] = i % 8;
  std::vector<uint32_t> words = packCodes(codes, 1, k, 3);
  ASSERT_EQ(words.size(), 4u);

  // Word 0: codes 0..9 at bits 3i, then the low two bits of code 10 (= 2).
  uint32_t w0 = (0u << 0) | (1u << 3) | (2u << 6) | (3u << 9) | (4u << 12) |
                (5u << 15) | (6u << 18) | (7u << 21) | (0u << 24) | (1u << 27) |
                ((2u & 0x3u) << 30);
  // Word 1: the high bit of code 10, codes 11..20 at bits 1 + 3(i − 11), then the
  // low bit of code 21 (= 5) at bit 31.
  uint32_t w1 = (2u >> 2) | (3u << 1) | (4u << 4) | (5u << 7) | (6u << 10) |
                (7u << 13) | (0u << 16) | (1u << 19) | (2u << 22) | (3u << 25) |
                (4u << 28) | ((5u & 0x1u) << 31);
  // Word 2: the high two bits of code 21, codes 22..31 at bits 2 + 3(i − 22).
  uint32_t w2 = (5u >> 1) | (6u << 2) | (7u << 5) | (0u << 8) | (1u << 11) |
                (2u << 14) | (3u << 17) | (4u << 20) | (5u << 23) | (6u << 26) |
                (7u << 29);
  // Word 3: codes 32..34 (0, 1, 2), then padding.
  uint32_t w3 = (0u << 0) | (1u << 3) | (2u << 6);
  EXPECT_EQ(w0, 0x88FAC688u);
  EXPECT_EQ(w1, 0xC688FAC6u);
  EXPECT_EQ(w2, 0xFAC688FAu);
  EXPECT_EQ(w3, 0x00000088u);
  EXPECT_EQ(words[0], w0);
  EXPECT_EQ(words[1], w1);
  EXPECT_EQ(words[2], w2);
  EXPECT_EQ(words[3], w3);

  EXPECT_EQ(extractCode(words.data(), 10, 3), 2u);
  EXPECT_EQ(extractCode(words.data(), 21, 3), 5u);
  EXPECT_EQ(unpackCodes(words, 1, k, 3), codes);
}

/// A single code 7 at element 10: its two low bits are the top of word 0, its
/// high bit the bottom of word 1.
TEST(PackingTest, ThreeBitSingleStraddlingCode) {
  std::vector<uint32_t> codes(33, 0);
  codes[10] = 7;
  std::vector<uint32_t> words = packCodes(codes, 1, 33, 3);
  ASSERT_EQ(words.size(), 4u);
  EXPECT_EQ(words[0], 0xC0000000u);
  EXPECT_EQ(words[1], 0x00000001u);
  EXPECT_EQ(words[2], 0u);
  EXPECT_EQ(words[3], 0u);
  EXPECT_EQ(extractCode(words.data(), 10, 3), 7u);
  EXPECT_EQ(extractCode(words.data(), 9, 3), 0u);
  EXPECT_EQ(extractCode(words.data(), 11, 3), 0u);

  // insertCode writes both halves.
  std::vector<uint32_t> manual(4, 0);
  insertCode(manual.data(), 10, 3, 7);
  EXPECT_EQ(manual, words);
}

/// Each row starts on a fresh word: row r begins at word r · packedWordsPerRow.
TEST(PackingTest, RowsPaddedToWholeWords) {
  const int64_t n = 3, k = 11; // 33 bits per row: 2 words, 31 bits of padding
  std::vector<uint32_t> codes(n * k, 0);
  codes[0 * k + 0] = 1; // row 0, element 0
  codes[1 * k + 0] = 5; // row 1, element 0
  codes[2 * k + 10] = 7; // row 2, element 10 (straddles the row's words)
  std::vector<uint32_t> words = packCodes(codes, n, k, 3);
  int64_t wpr = packedWordsPerRow(k, 3);
  ASSERT_EQ(wpr, 2);
  ASSERT_EQ(words.size(), 6u);
  EXPECT_EQ(words[0], 1u);
  EXPECT_EQ(words[1], 0u);
  EXPECT_EQ(words[wpr], 5u); // row 1 starts at word 2, not at bit 33
  EXPECT_EQ(words[wpr + 1], 0u);
  EXPECT_EQ(words[2 * wpr], 0xC0000000u);
  EXPECT_EQ(words[2 * wpr + 1], 1u);
  EXPECT_EQ(unpackCodes(words, n, k, 3), codes);

  // 4 bits, k = 9: 36 bits per row, row 1 begins at word 2.
  std::vector<uint32_t> c4 = {1, 2, 3, 4, 5, 6, 7, 8, 9,
                              9, 8, 7, 6, 5, 4, 3, 2, 1};
  std::vector<uint32_t> w4 = packCodes(c4, 2, 9, 4);
  ASSERT_EQ(w4.size(), 4u);
  EXPECT_EQ(w4[0], 0x87654321u);
  EXPECT_EQ(w4[1], 0x9u);
  EXPECT_EQ(w4[2], 0x23456789u);
  EXPECT_EQ(w4[3], 0x1u);
}

/// insertCode keeps only the low `bits` bits of the code.
TEST(PackingTest, InsertMasksCode) {
  std::vector<uint32_t> words(1, 0);
  insertCode(words.data(), 1, 4, 0x1F); // 5 bits given, 4 kept
  EXPECT_EQ(words[0], 0xF0u);
  EXPECT_EQ(extractCode(words.data(), 0, 4), 0u);
  EXPECT_EQ(extractCode(words.data(), 1, 4), 0xFu);
  EXPECT_EQ(extractCode(words.data(), 2, 4), 0u);
}

} // namespace
