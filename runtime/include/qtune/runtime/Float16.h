//===- Float16.h - bfloat16 / IEEE half conversions ------------*- C++ -*-===//
//
// Header-only, dependency-free conversions between float/double and the two
// 16-bit floating-point formats used by LLM checkpoints:
//
//   bf16: 1 sign, 8 exponent, 7 mantissa bits (the top half of an IEEE float)
//   half: IEEE 754 binary16, 1 sign, 5 exponent, 10 mantissa bits
//
// All narrowing conversions round to nearest, ties to even, in a single
// rounding step (double -> 16 bit is done directly, never via float, so there
// is no double rounding). Overflow gives infinity, values below half of the
// smallest subnormal give a signed zero, NaN stays NaN (quiet, sign and the
// high payload bits kept). Widening conversions are exact.
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_FLOAT16_H
#define QTUNE_RUNTIME_FLOAT16_H

#include <cmath>
#include <cstdint>
#include <cstring>

namespace qtune {
namespace detail {

inline uint64_t doubleToBits(double d) {
  uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
}

inline double bitsToDouble(uint64_t u) {
  double d;
  std::memcpy(&d, &u, sizeof d);
  return d;
}

/// Rounds a double to the nearest value of a binary format with `ExpBits`
/// exponent bits and `MantBits` stored mantissa bits (ties to even) and
/// returns its bit pattern.
template <int ExpBits, int MantBits>
inline uint16_t encodeSmallFloat(double value) {
  static_assert(1 + ExpBits + MantBits <= 16, "format wider than 16 bits");
  constexpr uint32_t kExpMax = (1u << ExpBits) - 1;
  constexpr int kBias = (1 << (ExpBits - 1)) - 1;
  constexpr uint32_t kMantMask = (1u << MantBits) - 1;
  constexpr uint32_t kInf = kExpMax << MantBits;

  const uint64_t u = doubleToBits(value);
  const uint32_t sign = static_cast<uint32_t>(u >> 63) << (ExpBits + MantBits);
  const int exp = static_cast<int>((u >> 52) & 0x7ff);
  const uint64_t mant = u & ((uint64_t(1) << 52) - 1);

  if (exp == 0x7ff) {
    if (mant == 0)
      return static_cast<uint16_t>(sign | kInf);
    // NaN: keep the high payload bits and force the quiet bit so that a
    // payload living only in the low bits cannot turn into infinity.
    const uint32_t payload =
        static_cast<uint32_t>(mant >> (52 - MantBits)) & kMantMask;
    return static_cast<uint16_t>(sign | kInf | (1u << (MantBits - 1)) |
                                 payload);
  }
  // Zero, or a double subnormal (< 2^-1022), which is far below half of the
  // smallest subnormal of any 16-bit format.
  if (exp == 0)
    return static_cast<uint16_t>(sign);

  const int targetExp = exp - 1023 + kBias; // biased exponent in the target
  if (targetExp >= static_cast<int>(kExpMax))
    return static_cast<uint16_t>(sign | kInf);

  const uint64_t sig = mant | (uint64_t(1) << 52); // 53 significant bits
  int shift = 52 - MantBits;
  if (targetExp < 1)
    shift += 1 - targetExp; // subnormal result: drop more bits
  if (shift > 54)
    return static_cast<uint16_t>(sign); // below half the smallest subnormal

  uint64_t r = sig >> shift;
  const uint64_t rem = sig & ((uint64_t(1) << shift) - 1);
  const uint64_t halfway = uint64_t(1) << (shift - 1);
  if (rem > halfway || (rem == halfway && (r & 1)))
    ++r;

  // For normal results r still carries the implicit bit, so adding it to
  // (targetExp - 1) << MantBits yields the right exponent, including the
  // carry when rounding overflows the mantissa. For subnormal results r is
  // the stored mantissa; rounding up to 1 << MantBits is exactly the smallest
  // normal encoding.
  const uint64_t bits =
      targetExp < 1 ? r : (static_cast<uint64_t>(targetExp - 1) << MantBits) + r;
  if (bits >= kInf)
    return static_cast<uint16_t>(sign | kInf);
  return static_cast<uint16_t>(sign | static_cast<uint32_t>(bits));
}

/// Exact widening of a 16-bit pattern of the given format to double.
template <int ExpBits, int MantBits>
inline double decodeSmallFloat(uint16_t bits) {
  constexpr uint32_t kExpMax = (1u << ExpBits) - 1;
  constexpr int kBias = (1 << (ExpBits - 1)) - 1;
  constexpr uint32_t kMantMask = (1u << MantBits) - 1;

  const bool negative = (bits >> (ExpBits + MantBits)) & 1;
  const uint32_t exp = (bits >> MantBits) & kExpMax;
  const uint32_t mant = bits & kMantMask;

  if (exp == kExpMax) {
    uint64_t u = (uint64_t(negative) << 63) | (uint64_t(0x7ff) << 52);
    if (mant != 0) // NaN: quiet, payload moved to the top of the mantissa
      u |= (uint64_t(1) << 51) | (uint64_t(mant) << (52 - MantBits));
    return bitsToDouble(u);
  }
  double magnitude;
  if (exp == 0)
    magnitude = std::ldexp(static_cast<double>(mant), 1 - kBias - MantBits);
  else
    magnitude = std::ldexp(static_cast<double>(mant | (1u << MantBits)),
                           static_cast<int>(exp) - kBias - MantBits);
  return negative ? -magnitude : magnitude;
}

} // namespace detail

// --- bfloat16 -----------------------------------------------------------------

/// Exact: bf16 is the top 16 bits of an IEEE float (NaN payloads preserved).
inline float bf16ToFloat(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

/// Round to nearest even; NaN becomes a quiet NaN with the same sign.
inline uint16_t floatToBf16(float value) {
  return detail::encodeSmallFloat<8, 7>(static_cast<double>(value));
}

/// Single-step rounding of a double to bf16 (no intermediate float).
inline uint16_t doubleToBf16(double value) {
  return detail::encodeSmallFloat<8, 7>(value);
}

// --- IEEE binary16 --------------------------------------------------------------

/// Exact widening of an IEEE half to float (subnormals, inf, NaN included).
inline float halfToFloat(uint16_t bits) {
  return static_cast<float>(detail::decodeSmallFloat<5, 10>(bits));
}

/// Round to nearest even; subnormal results supported, overflow gives inf,
/// NaN becomes a quiet NaN with the same sign.
inline uint16_t floatToHalf(float value) {
  return detail::encodeSmallFloat<5, 10>(static_cast<double>(value));
}

/// Single-step rounding of a double to half (no intermediate float).
inline uint16_t doubleToHalf(double value) {
  return detail::encodeSmallFloat<5, 10>(value);
}

// --- round trips -------------------------------------------------------------

/// The value `x` takes after being stored as bf16 (round to nearest even).
inline double roundToBf16(double x) {
  return detail::decodeSmallFloat<8, 7>(doubleToBf16(x));
}

/// The value `x` takes after being stored as IEEE half.
inline double roundToHalf(double x) {
  return detail::decodeSmallFloat<5, 10>(doubleToHalf(x));
}

/// The value `x` takes after being stored as IEEE float.
inline double roundToFloat(double x) {
  return static_cast<double>(static_cast<float>(x));
}

} // namespace qtune

#endif // QTUNE_RUNTIME_FLOAT16_H
