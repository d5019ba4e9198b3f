//===- Sampling.h - choosing the next token from logits ---------*- C++ -*-===//
//
// Greedy (temperature 0), temperature and nucleus (top-p) sampling over one
// row of logits, with the deterministic Rng of Random.h so that a fixed seed
// gives a fixed sequence; and the escaping that prints byte tokens as text.
//
// Pure functions: nothing here needs a GPU or throws.
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_SAMPLING_H
#define QTUNE_RUNTIME_SAMPLING_H

#include "qtune/runtime/Random.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qtune::rt {

struct SamplingOptions {
  double temperature = 1.0; ///< 0: greedy (argmax); otherwise softmax(logits / T)
  double topP = 1.0;        ///< nucleus: sample among the smallest set with probability >= topP
};

/// Checks temperature finite and >= 0, top-p in (0, 1]. Messages name the
/// options ("--top-p must be in (0, 1] (got 1.5)").
bool checkSampling(const SamplingOptions &options, std::string &error);

/// The index of the largest logit (the lowest index among equal ones). Fails
/// on an empty row and on NaN ("logit 17 is nan").
bool argmaxToken(const float *logits, size_t n, int64_t &token, std::string &error);

/// softmax(logits / temperature) in double precision (temperature > 0).
/// Fails on an empty row, NaN or +inf logits, or when every logit is -inf.
bool softmax(const float *logits, size_t n, double temperature, std::vector<double> &probs,
             std::string &error);

/// The nucleus of `probs` (a distribution): the indices of the smallest set of
/// most probable tokens whose probabilities add up to at least `topP`, most
/// probable first (equal probabilities: lower index first). At least one index;
/// topP >= 1 keeps every token of non-zero probability.
std::vector<size_t> nucleus(const std::vector<double> &probs, double topP);

/// Draws the next token from one row of `n` logits: argmax when the
/// temperature is 0, otherwise from softmax(logits / T) restricted to the
/// top-p nucleus and renormalized, with one rng.uniform() draw.
bool sampleToken(const float *logits, size_t n, const SamplingOptions &options, Rng &rng,
                 int64_t &token, std::string &error);

/// Byte tokens as printable text: printable ASCII, newlines, tabs and
/// well-formed UTF-8 sequences as they are; a backslash as "\\"; other bytes
/// as "\xHH". Tokens above 255 (vocabularies larger than bytes) as "<|N|>".
std::string tokensToText(const std::vector<int64_t> &tokens);

} // namespace qtune::rt

#endif // QTUNE_RUNTIME_SAMPLING_H
