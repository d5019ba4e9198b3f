//===- Packing.h - canonical bit packing of quantized codes -------*- C++ -*-===//
//
// Canonical packing: the codes of one row form a little-endian bit stream, element
// k occupying bits [k·b, k·b + b); the stream is stored in 32-bit words, each row
// padded to a whole word. 3-bit codes straddle word boundaries. No MLIR dependency.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_SUPPORT_PACKING_H
#define QTUNE_SUPPORT_PACKING_H

#include <cstddef>
#include <cstdint>
#include <vector>

namespace qtune {

/// Number of 32-bit words holding one row of `k` codes of `bits` bits.
inline int64_t packedWordsPerRow(int64_t k, unsigned bits) {
  return (k * static_cast<int64_t>(bits) + 31) / 32;
}

/// Reads code `k` of a row from its words.
inline uint32_t extractCode(const uint32_t *rowWords, int64_t k, unsigned bits) {
  uint64_t bit = static_cast<uint64_t>(k) * bits;
  uint64_t word = bit / 32, shift = bit % 32;
  uint64_t lo = rowWords[word];
  uint64_t value = lo >> shift;
  if (shift + bits > 32)
    value |= static_cast<uint64_t>(rowWords[word + 1]) << (32 - shift);
  return static_cast<uint32_t>(value & ((uint64_t(1) << bits) - 1));
}

/// Writes code `k` of a row into its words (the bits must be zero beforehand).
inline void insertCode(uint32_t *rowWords, int64_t k, unsigned bits, uint32_t code) {
  uint64_t bit = static_cast<uint64_t>(k) * bits;
  uint64_t word = bit / 32, shift = bit % 32;
  uint64_t v = static_cast<uint64_t>(code & ((uint64_t(1) << bits) - 1)) << shift;
  rowWords[word] |= static_cast<uint32_t>(v);
  if (shift + bits > 32)
    rowWords[word + 1] |= static_cast<uint32_t>(v >> 32);
}

/// Packs an n×k row-major matrix of codes (each < 2^bits) into n × packedWordsPerRow.
std::vector<uint32_t> packCodes(const std::vector<uint32_t> &codes, int64_t n,
                                int64_t k, unsigned bits);

/// Inverse of packCodes.
std::vector<uint32_t> unpackCodes(const std::vector<uint32_t> &words, int64_t n,
                                  int64_t k, unsigned bits);

} // namespace qtune

#endif // QTUNE_SUPPORT_PACKING_H
