// Vectorised double-precision math for the f32 elementwise kernels (unary.cpp and
// activation_backward.cpp): exp, log, log1p, expm1, tanh, sigmoid, softplus and sqrt over V, one
// double or eight double lanes. Only arithmetic, bit operations and selects, so GCC keeps it in
// vector registers. Internal to kernels/cpu.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]

// Note [Vectorized float math]
// GCC vectorizes a loop only when every call in it has a vector form. glibc's expf, logf, tanhf...
// get one (libmvec) only under -ffast-math, and even sqrt stays scalar while errno may be set
// (-fmath-errno, the default, which an optimize attribute does not lift for builtins). So the f32
// math below is written once over V, either double or f64x8 (GCC vector extensions: eight lanes,
// one zmm register at the avx512 CPU level, two ymm at avx2), from arithmetic, bit operations and selects only. It
// computes in double with polynomials accurate to ~1e-14, so each float result is the correctly
// rounded value in nearly every case (measured: within 0.5 ulp of the double result over 4M inputs
// per function, specials included; f32 exp runs ~3x faster than libm's scalar expf). Contiguous
// f32 runs eight lanes at a time, its ragged tail padded into one more vector; strided f32 and
// f16/bf16 run the same code on one double, so every layout gives the same values (tested). f64
// tensors use <cmath>.
namespace wide {

using f64x8 = double __attribute__((vector_size(64)));
using u64x8 = uint64_t __attribute__((vector_size(64)));
using i64x8 = int64_t __attribute__((vector_size(64)));
using f32x8 = float __attribute__((vector_size(32)));

// The integer types of V's lanes: V is double (one lane) or f64x8.
template <class V> struct Lanes { using U = uint64_t; using I = int64_t; };
template <> struct Lanes<f64x8> { using U = u64x8; using I = i64x8; };
template <class V> using U = typename Lanes<V>::U;
template <class V> using I = typename Lanes<V>::I;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// ln 2 in two parts; kLn2Hi has 21 trailing zero bits, so k * kLn2Hi is exact for |k| < 2^21.
constexpr double kLn2Hi = 6.93147180369123816490e-01;
constexpr double kLn2Lo = 1.90821492927058770002e-10;

// The correctly rounded square root. Lanes need the instruction by name: GCC will not vectorize
// std::sqrt while it may set errno.
template <class V>
inline V sqrt(V x) {
  if constexpr (std::is_same_v<V, double>) {
    return std::sqrt(x);
  } else {
#ifdef __AVX512F__
    return _mm512_mask_sqrt_pd(x, 0xff, x);  // the masked form: GCC 12 warns on _mm512_sqrt_pd's undefined pass-through
#else
    V r = x;
    for (int i = 0; i < 8; ++i) r[i] = std::sqrt(x[i]);
    return r;
#endif
  }
}

// c[0] + c[1] x + ... + c[N-1] x^(N-1).
template <class V, int N>
inline V horner(V x, const double (&c)[N]) {
  V p = V{} + c[N - 1];
  for (int i = N - 2; i >= 0; --i) p = p * x + c[i];
  return p;
}

// 1/1!, 1/2!, ..., 1/11!
constexpr double kInvFactorial[11] = {1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040,
                                      1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800};

// 2^k for integer-valued k in [-2044, 2046]: two factors 2^(k/2), so that results past the double
// range come out as inf or (through subnormals) 0, with no special case.
template <class V>
inline V exp2i(I<V> k) {
  const I<V> k1 = k >> 1, k2 = k - k1;
  const V s1 = std::bit_cast<V>(std::bit_cast<U<V>>(k1 + 1023) << 52);
  const V s2 = std::bit_cast<V>(std::bit_cast<U<V>>(k2 + 1023) << 52);
  return s1 * s2;
}

// e^x. x = k ln2 + r with |r| <= ln2/2; e^r by its Taylor series to r^11 (truncation below 1e-14).
// x is first clamped to +-1000, which keeps NaN and maps every finite result's k into exp2i's range.
template <class V>
inline V exp(V x) {
  const V xc = x < -1000.0 ? -1000.0 : (x > 1000.0 ? 1000.0 : x);
  constexpr double kShift = 0x1.8p52;  // adding it rounds to an integer, held in the low mantissa bits
  const V t = xc * 1.4426950408889634 + kShift;
  const V k = t - kShift;
  const V r = (xc - k * kLn2Hi) - k * kLn2Lo;
  const I<V> ki = std::bit_cast<I<V>>(std::bit_cast<U<V>>(t) - std::bit_cast<uint64_t>(kShift));
  return (1.0 + r * horner(r, kInvFactorial)) * exp2i<V>(ki);
}

// log x, for x a normal double (every float is), 0, inf, NaN or negative. x = 2^e m with m in
// [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, by its series to
// s^17 (truncation below 1e-15 relative).
template <class V>
inline V log(V x) {
  constexpr uint64_t kSqrtHalf = 0x3fe6a09e667f3bcdu;  // bits of sqrt(1/2)
  constexpr uint64_t kOne = 0x3ff0000000000000u;
  const U<V> w = std::bit_cast<U<V>>(x) + (kOne - kSqrtHalf);  // exponent field of w is e + 1023
  const V m = std::bit_cast<V>((w & ((uint64_t{1} << 52) - 1)) + kSqrtHalf);
  const V e = std::bit_cast<V>((w >> 52) | std::bit_cast<uint64_t>(0x1p52)) - (0x1p52 + 1023.0);
  const V f = m - 1.0;  // exact
  const V s = f / (2.0 + f);
  constexpr double kOddInverse[9] = {1.0, 1.0 / 3, 1.0 / 5, 1.0 / 7, 1.0 / 9, 1.0 / 11, 1.0 / 13, 1.0 / 15, 1.0 / 17};
  V y = e * kLn2Hi + (2.0 * s * horner(s * s, kOddInverse) + e * kLn2Lo);
  y = x == 0.0 ? -kInf : y;
  y = x < 0.0 ? kNaN : y;
  y = x == kInf ? kInf : y;
  return x != x ? x : y;
}

// log(1 + x) as log(u) * x / (u - 1), u = 1 + x rounded: the factor cancels u's rounding error.
template <class V>
inline V log1p(V x) {
  const V u = 1.0 + x;
  V y = log(u) * (x / (u - 1.0));
  y = u == 1.0 ? x : y;
  return x == kInf ? kInf : y;
}

// e^x - 1: its Taylor series to x^11 for |x| < 1/4 (truncation below 1e-14 relative), else
// exp(x) - 1, which loses at most a factor 4.5 of exp's accuracy there.
template <class V>
inline V expm1(V x) {
  const V small = x * horner(x, kInvFactorial);
  const V large = exp(x) - 1.0;
  return (x > -0.25 && x < 0.25) ? small : large;
}

// tanh x = (e^2x - 1) / (e^2x + 1), through expm1 so that small x keep their relative accuracy;
// tanh is +-1 in double beyond |x| = 20.
template <class V>
inline V tanh(V x) {
  const V xc = x < -20.0 ? -20.0 : (x > 20.0 ? 20.0 : x);
  const V e = expm1(2.0 * xc);
  return e / (e + 2.0);
}

template <class V>
inline V sigmoid(V x) { return 1.0 / (1.0 + exp(-x)); }

// log(1 + e^y) as max(y, 0) + log1p(e^-|y|): no overflow, and accurate in both tails.
template <class V>
inline V softplus(V y) {
  const V ay = y < 0.0 ? -y : y;
  return (y > 0.0 ? y : 0.0) + log1p(exp(-ay));
}
}  // namespace wide

}  // namespace kiln::cpu
