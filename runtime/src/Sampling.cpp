//===- Sampling.cpp - choosing the next token from logits -----------------===//

#include "qtune/runtime/Sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <new>
#include <numeric>

#include "qtune/runtime/Trainer.h"

namespace qtune::rt {


bool checkSampling(const SamplingOptions &o, std::string &error) {
  if (!std::isfinite(o.temperature) || o.temperature < 0) {
    error = "--temperature must be finite and non-negative (got " + numberText(o.temperature) +
            ")";
    return false;
  }
  if (!(o.topP > 0 && o.topP <= 1)) {
    error = "--top-p must be in (0, 1] (got " + numberText(o.topP) + ")";
    return false;
  }
  return true;
}

bool argmaxToken(const float *logits, size_t n, int64_t &token, std::string &error) {
  if (n == 0) {
    error = "no logits to choose from";
    return false;
  }
  size_t best = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(logits[i])) {
      error = "logit " + std::to_string(i) + " is nan";
      return false;
    }
    if (logits[i] > logits[best])
      best = i;
  }
  token = static_cast<int64_t>(best);
  return true;
}

bool softmax(const float *logits, size_t n, double temperature, std::vector<double> &probs,
             std::string &error) {
  if (n == 0) {
    error = "no logits to choose from";
    return false;
  }
  double top = -INFINITY;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(logits[i]) || logits[i] == INFINITY) {
      error = "logit " + std::to_string(i) + " is " + numberText(logits[i]);
      return false;
    }
    top = std::max(top, static_cast<double>(logits[i]));
  }
  if (top == -INFINITY) {
    error = "every logit is -inf";
    return false;
  }
  try {
    probs.resize(n);
  } catch (const std::bad_alloc &) {
    error = "out of memory";
    return false;
  }
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    probs[i] = std::exp((static_cast<double>(logits[i]) - top) / temperature);
    sum += probs[i];
  }
  for (double &p : probs) // sum >= 1: the top logit contributes exp(0)
    p /= sum;
  return true;
}

std::vector<size_t> nucleus(const std::vector<double> &probs, double topP) {
  std::vector<size_t> order(probs.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return probs[a] > probs[b]; });
  size_t keep = 0;
  double sum = 0;
  while (keep < order.size()) {
    if (keep > 0 && probs[order[keep]] <= 0) // never add impossible tokens
      break;
    sum += probs[order[keep++]];
    if (sum >= topP)
      break;
  }
  order.resize(std::max<size_t>(keep, order.empty() ? 0 : 1));
  return order;
}

bool sampleToken(const float *logits, size_t n, const SamplingOptions &o, Rng &rng,
                 int64_t &token, std::string &error) {
  if (!checkSampling(o, error))
    return false;
  if (o.temperature == 0)
    return argmaxToken(logits, n, token, error);
  try {
    std::vector<double> probs;
    if (!softmax(logits, n, o.temperature, probs, error))
      return false;
    const std::vector<size_t> kept = nucleus(probs, o.topP);
    double total = 0;
    for (size_t i : kept)
      total += probs[i];
    const double u = rng.uniform() * total;
    double acc = 0;
    for (size_t i : kept) {
      acc += probs[i];
      if (u < acc) {
        token = static_cast<int64_t>(i);
        return true;
      }
    }
    token = static_cast<int64_t>(kept.back()); // u rounded up to the total
    return true;
  } catch (const std::exception &e) {
    error = e.what();
    return false;
  }
}

std::string tokensToText(const std::vector<int64_t> &tokens) {
  std::string out;
  char buf[32];
  size_t i = 0;
  auto isByte = [&](size_t k) { return k < tokens.size() && tokens[k] >= 0 && tokens[k] < 256; };
  auto cont = [&](size_t k) { return isByte(k) && (tokens[k] & 0xC0) == 0x80; };
  while (i < tokens.size()) {
    const int64_t t = tokens[i];
    if (t < 0 || t > 255) {
      std::snprintf(buf, sizeof buf, "<|%lld|>", static_cast<long long>(t));
      out += buf;
      ++i;
      continue;
    }
    const unsigned c = static_cast<unsigned>(t);
    if (c == '\\') {
      out += "\\\\";
      ++i;
      continue;
    }
    if ((c >= 0x20 && c < 0x7F) || c == '\n' || c == '\t') {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    // A well-formed UTF-8 sequence (no overlongs, surrogates or > U+10FFFF).
    size_t len = 0;
    if (c >= 0xC2 && c <= 0xDF)
      len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
      len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
      len = 4;
    bool ok = len > 0;
    for (size_t k = 1; ok && k < len; ++k)
      ok = cont(i + k);
    if (ok && len >= 3) {
      const unsigned c1 = static_cast<unsigned>(tokens[i + 1]);
      if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) || (c == 0xF0 && c1 < 0x90) ||
          (c == 0xF4 && c1 > 0x8F))
        ok = false;
    }
    if (ok) {
      for (size_t k = 0; k < len; ++k)
        out += static_cast<char>(tokens[i + k]);
      i += len;
      continue;
    }
    std::snprintf(buf, sizeof buf, "\\x%02x", c);
    out += buf;
    ++i;
  }
  return out;
}

} // namespace qtune::rt
