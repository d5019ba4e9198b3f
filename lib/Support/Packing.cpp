//===- Packing.cpp - canonical bit packing of quantized codes ------------===//

#include "qtune/Support/Packing.h"

namespace qtune {

std::vector<uint32_t> packCodes(const std::vector<uint32_t> &codes, int64_t n,
                                int64_t k, unsigned bits) {
  int64_t wpr = packedWordsPerRow(k, bits);
  std::vector<uint32_t> words(static_cast<size_t>(n * wpr), 0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c)
      insertCode(&words[r * wpr], c, bits, codes[r * k + c]);
  return words;
}

std::vector<uint32_t> unpackCodes(const std::vector<uint32_t> &words, int64_t n,
                                  int64_t k, unsigned bits) {
  int64_t wpr = packedWordsPerRow(k, bits);
  std::vector<uint32_t> codes(static_cast<size_t>(n * k));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c)
      codes[r * k + c] = extractCode(&words[r * wpr], c, bits);
  return codes;
}

} // namespace qtune
