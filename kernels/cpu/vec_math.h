// f32 math on one register of lanes (lanes::f32v: 16, 8 or 4 floats by CPU level) for the
// elementwise kernels: exp, sin, cos, erf, the erf and tanh GELUs with their derivatives, pow with a
// scalar exponent, and the log and sincos(2 pi u) of randn's Box-Muller; plus the loops that map
// them over float arrays. Arithmetic, bit operations and selects (a few intrinsics by level), so
// every level vectorises the same source. Internal to kernels/cpu. Accuracy: Note [f32 lane math].
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/cpu/lanes.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]

// Note [f32 lane math]
// Each function works in float lanes, with polynomials fitted by bench/fit_vec_math.py (relative
// error below 2e-9, so the float roundings dominate). Where a result is a small difference or an
// exponential of a large argument, the argument is carried as a float pair (hi + lo) rather than
// in double lanes, which would halve the width: exp's Cody-Waite reduction folds in `lo`, and
// x^2 is split exactly (FMA, or Dekker's product below AVX2). Worst errors against a double
// reference over 2^20 evenly spaced floats in [-20, 20], 2^19 random bit patterns and the specials
// (tests/ops/test_vec_math.cpp holds the bounds, at every level): exp 1.0 ulp, sin/cos 2.0, erf
// 2.7, gelu 6.4, gelu(tanh) 3.1; the derivatives 3.3 (erf form) and 5.0 (tanh form) ulp of their
// largest term, since they cross zero near x = -0.75, where no float evaluation keeps relative
// accuracy. sin and cos reduce |x| <= 2^17 in lanes (with FMA: three float parts of pi; below
// AVX2: double lanes); larger or infinite inputs go lane by lane through <cmath>.
namespace vmath {

using lanes::f32v;
using lanes::i32v;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

inline f32v fma(f32v a, f32v b, f32v c) { return lanes::fmadd(a, b, c); }
inline f32v abs(f32v x) { return std::bit_cast<f32v>(std::bit_cast<i32v>(x) & 0x7fffffff); }
inline i32v sign_bits(f32v x) { return std::bit_cast<i32v>(x) & int32_t(0x80000000u); }
inline f32v flip_sign(f32v x, i32v bits) { return std::bit_cast<f32v>(std::bit_cast<i32v>(x) ^ bits); }
// The nearest integer, for |x| < 2^22 (adding 1.5 * 2^23 rounds to it; NaN stays NaN).
inline f32v round_int(f32v x) { return (x + 0x1.8p23f) - 0x1.8p23f; }
inline f32v clamp(f32v x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }  // NaN passes

inline f32v sqrt(f32v x) {  // correctly rounded; GCC will not vectorize std::sqrt while it may set errno
#if defined(__AVX512F__)
  return _mm512_mask_sqrt_ps(x, 0xffff, x);  // the masked form: GCC 12 warns on the plain one's pass-through
#elif defined(__AVX__)
  return _mm256_sqrt_ps(x);
#else
  return _mm_sqrt_ps(x);
#endif
}

template <int N>
inline f32v horner(f32v x, const float (&c)[N]) {
  f32v p = lanes::splat(c[N - 1]);
  for (int i = N - 2; i >= 0; --i) p = fma(p, x, lanes::splat(c[i]));
  return p;
}

// 1 / d for d in [1, 16], to about 1 ulp: the ISA's reciprocal estimate (14 or 12 bits) and one
// Newton step, cheaper than a division, the erf GELU's costliest instruction (bench/README.md).
inline f32v recip(f32v d) {
#if defined(__AVX512F__)
  const f32v r = _mm512_mask_rcp14_ps(d, 0xffff, d);  // the unmasked form warns in GCC 12 (an undefined source)
  return lanes::fmadd(r, lanes::fmadd(-d, r, lanes::splat(1.0f)), r);
#elif defined(__AVX2__)
  const f32v r = _mm256_rcp_ps(d);  // 12 bits; the Newton step doubles them
  return lanes::fmadd(r, lanes::fmadd(-d, r, lanes::splat(1.0f)), r);
#else
  return 1.0f / d;
#endif
}

// a * b = hi + lo exactly (no overflow: callers clamp their inputs).
struct Pair {
  f32v hi, lo;
};
inline Pair two_prod(f32v a, f32v b) {
  const f32v p = a * b;
#if defined(__FMA__) || defined(__AVX512F__)
  return {p, lanes::fmadd(a, b, -p)};
#else
  const auto split = [](f32v v) {  // Dekker: v = hi + lo with 12 bits in hi
    const f32v t = v * 4097.0f;
    const f32v hi = t - (t - v);
    return Pair{hi, v - hi};
  };
  const Pair sa = split(a), sb = split(b);
  return {p, ((sa.hi * sb.hi - p) + sa.hi * sb.lo + sa.lo * sb.hi) + sa.lo * sb.lo};
#endif
}

// 2^k exactly, for k in [-126, 127].
inline f32v pow2i(i32v k) { return std::bit_cast<f32v>((k + 127) << 23); }
// v 2^k for k in [-252, 254], in two exact factors, so a result past the float range is inf or
// (rounded once) subnormal.
inline f32v scale(f32v v, i32v k) {
  if (__builtin_expect(!lanes::any((k < -126) | (k > 127)), 1)) return v * pow2i(k);  // one exact factor
  const i32v k1 = k >> 1;
  return v * pow2i(k1) * pow2i(k - k1);
}

// e^(hi + lo) = p 2^k, p in [0.7, 1.42]; |lo| <= ulp(hi). hi is clamped to [-110, 90] first, which
// keeps NaN and leaves k inside scale()'s range, so every finite result and both limits come out.
struct Exp {
  f32v p;
  i32v k;
};
template <bool kClamp = true>
inline Exp exp_parts(f32v hi, f32v lo) {
  constexpr float kLn2Hi = 0x1.62e4p-1f;  // 15 significant bits: k * kLn2Hi is exact for |k| < 512
  constexpr float kLn2Lo = 1.428606765330187e-06f;
  constexpr float kP[5] = {0.4999999403953552f, 0.1666651964187622f, 0.041668400168418884f,
                           0.008368851616978645f, 0.0013814320554956794f};
  const f32v x = kClamp ? clamp(hi, -110.0f, 90.0f) : hi;  // callers with hi in range skip it
  const f32v k = round_int(x * 1.44269504088896341f);
  const f32v r = ((x - k * kLn2Hi) - k * kLn2Lo) + lo;  // the first difference is exact (Sterbenz)
  const f32v p = 1.0f + fma(r * r, horner(r, kP), r);
  return {p, __builtin_convertvector(k, i32v)};
}
inline f32v exp(f32v x) {
  const Exp e = exp_parts(x, f32v{});
  return scale(e.p, e.k);
}

// log x for x in (0, inf) normal: x = 2^e m, m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s) with
// s = (m - 1) / (m + 1), |s| < 0.172, by its series to s^9.
inline f32v log(f32v x) {
  const i32v w = std::bit_cast<i32v>(x) + (0x3f800000 - 0x3f3504f3);  // 0x3f3504f3: sqrt(1/2)
  const f32v m = std::bit_cast<f32v>((w & 0x007fffff) + 0x3f3504f3);
  const f32v e = __builtin_convertvector((w >> 23) - 127, f32v);
  const f32v f = m - 1.0f;
  const f32v s = f / (2.0f + f);
  constexpr float kOdd[5] = {2.0f, 2.0f / 3, 2.0f / 5, 2.0f / 7, 2.0f / 9};
  return fma(e, lanes::splat(0x1.62e4p-1f), fma(e, lanes::splat(1.428606765330187e-06f), s * horner(s * s, kOdd)));
}

// sin r for |r| <= pi/2 + 0.03 (the slack covers a quotient rounded the wrong way).
inline f32v sin_poly(f32v r) {
  constexpr float kS[4] = {-0.16666659712791443f, 0.008333059027791023f, -0.0001980878587346524f,
                           2.6034235816041473e-06f};
  const f32v r2 = r * r;
  return fma(r * r2, horner(r2, kS), r);
}

constexpr float kTrigFastLimit = 131072.0f;  // 2^17: the lane reduction's range

// sin x (cos = false) or cos x (cos = true): x = q pi + r, q an integer for sin and an integer + 1/2
// for cos, and the result is (-1)^m sin r, m = q for sin, q + 1/2 for cos.
typedef double f64h __attribute__((vector_size(4 * lanes::kWidth)));  // half a register's floats, widened

template <bool kCos>
inline f32v sincos_reduced(f32v x) {
  const f32v qi = round_int(kCos ? fma(x, lanes::splat(0.31830987334251404f), lanes::splat(-0.5f))
                                 : x * 0.31830987334251404f);
  const f32v q = kCos ? qi + 0.5f : qi;
#if defined(__FMA__) || defined(__AVX512F__)
  // pi in three floats; each fused step rounds once, and the first is exact for |q| < 2^21.
  f32v r = lanes::fmadd(-q, lanes::splat(3.1415927410125732f), x);
  r = lanes::fmadd(-q, lanes::splat(-8.742277657347586e-08f), r);
  r = lanes::fmadd(-q, lanes::splat(-3.4302490200117637e-15f), r);
#else
  // Without FMA: the reduction in double lanes, with pi's first part holding 33 bits (exact
  // products for |q| < 2^20).
  constexpr int kHalf = lanes::kWidth / 2;
  const auto reduce = [](f64h xd, f64h qd) { return (xd - qd * 3.1415926534682512) - qd * 1.2154201013012384e-10; };
  const auto halves = [&]<size_t... k>(std::index_sequence<k...>) {
    using F = lanes::Vec<float, kHalf>::type;
    const F xl = __builtin_shufflevector(x, x, k...), xh = __builtin_shufflevector(x, x, (k + kHalf)...);
    const F ql = __builtin_shufflevector(q, q, k...), qh = __builtin_shufflevector(q, q, (k + kHalf)...);
    const F rl = __builtin_convertvector(reduce(__builtin_convertvector(xl, f64h), __builtin_convertvector(ql, f64h)), F);
    const F rh = __builtin_convertvector(reduce(__builtin_convertvector(xh, f64h), __builtin_convertvector(qh, f64h)), F);
    return __builtin_shufflevector(rl, rh, k..., (k + kHalf)...);
  };
  const f32v r = halves(std::make_index_sequence<kHalf>());
#endif
  const i32v m = __builtin_convertvector(qi, i32v) + (kCos ? 1 : 0);
  return flip_sign(sin_poly(r), m << 31);
}

// Lanes beyond the reduction's range (and inf) through <cmath>, in double, rounded once.
template <bool kCos>
inline f32v sincos(f32v x) {
  f32v y = sincos_reduced<kCos>(x);
  const i32v big = abs(x) > kTrigFastLimit;
  if (__builtin_expect(lanes::any(big), 0)) {
    for (int i = 0; i < lanes::kWidth; ++i)
      if (big[i]) y[i] = static_cast<float>(kCos ? std::cos(static_cast<double>(x[i])) : std::sin(static_cast<double>(x[i])));
  }
  return y;
}
inline f32v sin(f32v x) {
  const f32v y = sincos<false>(x);
  return x == 0.0f ? x : y;  // the reduction's second step turns -0 into +0
}
inline f32v cos(f32v x) { return sincos<true>(x); }

// ---- erf, erfc and the normal distribution.
// erf x = x P(x^2) for |x| < 1/2. Beyond, erfc t = e^(-t^2) R(t), R a polynomial in u = 1/(1 + t/2)
// fitted on [1/2, 10.3]: past 10.3 e^(-t^2) underflows every result erfc feeds.
constexpr float kErfSmall[5] = {1.1283791065216064f, -0.37612608075141907f, 0.11282817274332047f,
                                -0.02675676718354225f, 0.004717039875686169f};
constexpr float kErfSmallLimit = 0.5f;

inline f32v erfc_ratio(f32v t) {  // R(t) = erfc(t) e^(t^2), t in [1/2, 10.3]
  constexpr float kR[10] = {3.629901357271592e-06f, 0.2819822132587433f, 0.2836192846298218f,
                            0.23497925698757172f, 0.23478293418884277f, -0.10647473484277725f,
                            0.40371179580688477f, -0.6083256602287292f, 0.34977808594703674f,
                            -0.07406419515609741f};
  return horner(1.0f / fma(t, lanes::splat(0.5f), lanes::splat(1.0f)), kR);
}

inline f32v erf(f32v x) {
  const f32v ax = abs(x);
  const f32v small = x * horner(x * x, kErfSmall);
  const f32v t = clamp(ax, 0.0f, 10.0f);  // erf is 1 in float from t = 4
  const Pair t2 = two_prod(t, t);
  const Exp e = exp_parts(-t2.hi, -t2.lo);
  const f32v tail = flip_sign(1.0f - scale(e.p * erfc_ratio(t), e.k), sign_bits(x));
  return ax < kErfSmallLimit ? small : tail;
}

// The pieces both erf-GELU kernels need at x: Phi(x) = 0.5 erfc(-x / sqrt 2) split so that the
// negative tail keeps its relative accuracy, and e^(-x^2 / 2) = p 2^k from x^2 split exactly.
struct NormalParts {
  f32v xc;         // x clamped to [-14.5, 14.5]: Phi(-14.5) x underflows; beyond, the limits hold
  f32v phi_small;  // Phi(x) for |x| < 1/sqrt(2), where the small erf branch holds
  f32v half_r;     // 0.5 R(|x| / sqrt 2): Phi(-|x|) = half_r e^(-x^2 / 2)
  Exp gauss;       // e^(-x^2 / 2)
  i32v small;      // |x| < 1/sqrt(2)
};
inline NormalParts normal_parts(f32v x) {
  // Phi for small x: 0.5 + 0.5 erf(x / sqrt 2), with the 1/sqrt(2)^(2i+1) folded into the terms.
  static constexpr float kPhi[5] = {
      static_cast<float>(0.5 * 0.7071067811865476 * 1.1283791065216064),
      static_cast<float>(0.5 * 0.3535533905932738 * -0.37612608075141907),
      static_cast<float>(0.5 * 0.1767766952966369 * 0.11282817274332047),
      static_cast<float>(0.5 * 0.08838834764831845 * -0.02675676718354225),
      static_cast<float>(0.5 * 0.04419417382415922 * 0.004717039875686169)};
  const f32v xc = clamp(x, -14.5f, 14.5f);
  const f32v ax = abs(xc);
  const Pair x2 = two_prod(ax, ax);
  // 0.5 R(|x| / sqrt 2), with the 0.5 in the terms and the 1/sqrt(2) in u.
  static constexpr float kHalfR[10] = {
      0.5f * 3.629901357271592e-06f, 0.5f * 0.2819822132587433f,  0.5f * 0.2836192846298218f,
      0.5f * 0.23497925698757172f,   0.5f * 0.23478293418884277f, 0.5f * -0.10647473484277725f,
      0.5f * 0.40371179580688477f,   0.5f * -0.6083256602287292f, 0.5f * 0.34977808594703674f,
      0.5f * -0.07406419515609741f};
  const f32v u = recip(fma(ax, lanes::splat(0.35355339059327373f), lanes::splat(1.0f)));
  return {xc, fma(x, horner(x * x, kPhi), lanes::splat(0.5f)), horner(u, kHalfR),
          exp_parts<false>(-0.5f * x2.hi, -0.5f * x2.lo), abs(x) < 0.70710677f};  // -x^2/2 >= -105.2
}

constexpr float kInvSqrt2Pi = 0.3989422917366028f;

// x Phi(x).
inline f32v gelu_erf(f32v x) {
  const NormalParts n = normal_parts(x);
  const f32v x_phi_neg = scale(n.xc * n.half_r * n.gauss.p, n.gauss.k);  // x Phi(-|x|)
  const f32v tail = x < 0.0f ? x_phi_neg : x - x_phi_neg;               // x Phi(x) = x (1 - Phi(-x)) for x > 0
  const f32v y = n.small ? x * n.phi_small : tail;
  return x == -kInf ? kNaN : y;  // -inf Phi(-inf) = -inf * 0, as torch and <cmath> give
}

// d/dx x Phi(x) = Phi(x) + x phi(x), phi(x) = e^(-x^2 / 2) / sqrt(2 pi).
inline f32v gelu_erf_derivative(f32v x) {
  const NormalParts n = normal_parts(x);
  const f32v xphi_over_g = n.xc * kInvSqrt2Pi;  // x phi(x) / e^(-x^2 / 2)
  const f32v small = fma(xphi_over_g, scale(n.gauss.p, n.gauss.k), n.phi_small);
  const f32v neg = scale(n.gauss.p * (n.half_r + xphi_over_g), n.gauss.k);
  const f32v pos = 1.0f - scale(n.gauss.p * (n.half_r - xphi_over_g), n.gauss.k);
  const f32v tail = x < 0.0f ? neg : pos;
  const f32v d = n.small ? small : tail;
  return abs(x) == kInf ? kNaN : d;  // Phi + x phi at +-inf is 1 + inf * 0 or 0 - inf * 0
}

// ---- the tanh GELU: 0.5 x (1 + tanh(a)) = x sigmoid(z), z = 2a = x (c1 + c2 x^2), with
// c1 = 2 sqrt(2/pi), c2 = 0.044715 c1. z is formed as a float pair: sigmoid(z) for z < 0 is
// about e^z, whose relative error is z's absolute error.
struct Sigmoid {
  f32v s, one_minus_s;  // sigmoid(z) and 1 - sigmoid(z), each to a few ulp
  i32v tiny_k;          // for z < 0: s = s_scaled 2^tiny_k
  f32v s_scaled;
  i32v negative;        // z < 0
  f32v dz;              // dz/dx = c1 + 3 c2 x^2
  f32v xc;              // x clamped to [-20, 20]: beyond, s is 0 or 1 in float
};
inline Sigmoid gelu_tanh_parts(f32v x) {
  constexpr float kC1Hi = 1.5957691669464111f, kC1Lo = -4.534068054340423e-08f;
  constexpr float kC2Hi = 0.07135481387376785f, kC2Lo = 2.3988324659995897e-09f;
  const f32v xc = clamp(x, -20.0f, 20.0f);
  const Pair x2 = two_prod(xc, xc);
  const Pair v = two_prod(lanes::splat(kC2Hi), x2.hi);  // c2 x^2
  const f32v v_lo = v.lo + (kC2Hi * x2.lo + kC2Lo * x2.hi);
  const f32v w_hi = kC1Hi + v.hi;  // c1 + c2 x^2 as a pair (two-sum)
  const f32v bb = w_hi - kC1Hi;
  const f32v w_lo = ((kC1Hi - (w_hi - bb)) + (v.hi - bb)) + (kC1Lo + v_lo);
  const Pair z = two_prod(xc, w_hi);
  const f32v z_lo = z.lo + xc * w_lo;
  const i32v negative = z.hi < 0.0f;
  const Exp e = exp_parts(negative ? z.hi : -z.hi, negative ? z_lo : -z_lo);  // e^(-|z|)
  const f32v big_e = scale(e.p, e.k);
  const f32v inv = 1.0f / (1.0f + big_e);
  const f32v s = negative ? big_e * inv : inv;
  const f32v one_minus_s = negative ? inv : big_e * inv;
  return {s, one_minus_s, e.k, e.p * inv, negative, fma(lanes::splat(3.0f * kC2Hi), xc * xc, lanes::splat(kC1Hi)), xc};
}

inline f32v gelu_tanh(f32v x) {
  const Sigmoid g = gelu_tanh_parts(x);
  const f32v y = g.negative ? scale(g.xc * g.s_scaled, g.tiny_k) : x * g.s;
  return x == -kInf ? kNaN : y;  // -inf / (1 + inf), as the reference formula gives
}

// d/dx x s(z) = s (1 + x (1 - s) dz/dx).
inline f32v gelu_tanh_derivative(f32v x) {
  const Sigmoid g = gelu_tanh_parts(x);
  const f32v factor = fma(g.xc * g.one_minus_s, g.dz, lanes::splat(1.0f));
  const f32v d = g.negative ? scale(g.s_scaled * factor, g.tiny_k) : g.s * factor;
  return abs(x) == kInf ? kNaN : d;  // x (1 - t^2) at +-inf is inf * 0
}

// ---- x^e for a scalar e without a short form. e log|x| needs more than float's precision (up to
// 104 in size, with an absolute error below 2^-26), so log|x| runs in double lanes, to 1e-12,
// and the product goes to exp_parts as a float pair; then std::pow's signs: a negative base gives
// NaN unless e is an integer, an odd e keeps the base's sign (-0 included), and (-inf)^e is inf
// or 0 for a non-integer e.
typedef int64_t i64h __attribute__((vector_size(4 * lanes::kWidth)));
typedef uint64_t u64h __attribute__((vector_size(4 * lanes::kWidth)));

inline f64h log_f64(f64h x) {  // x > 0 (a widened float: never subnormal), 0, inf or NaN
  // Unsigned: a NaN's bits plus the offset pass 2^63 (signed, that overflow would be undefined).
  const u64h w = std::bit_cast<u64h>(x) + (0x3ff0000000000000 - 0x3fe6a09e667f3bcd);  // sqrt(1/2)'s bits
  const f64h m = std::bit_cast<f64h>((w & 0x000fffffffffffff) + 0x3fe6a09e667f3bcd);
  const f64h e = __builtin_convertvector(std::bit_cast<i64h>(w >> 52) - 1023, f64h);
  const f64h f = m - 1.0;
  const f64h s = f / (2.0 + f);
  const f64h s2 = s * s;
  f64h p = s2 * (2.0 / 13) + 2.0 / 11;
  for (double c : {2.0 / 9, 2.0 / 7, 2.0 / 5, 2.0 / 3, 2.0}) p = p * s2 + c;
  f64h y = e * 0.6931471805599453 + s * p;
  y = x == 0.0 ? -std::numeric_limits<double>::infinity() : y;
  y = x == std::numeric_limits<double>::infinity() ? x : y;
  return x != x ? x : y;
}

inline f32v pow(f32v x, float e, bool integral, bool odd) {
  constexpr int kHalf = lanes::kWidth / 2;
  const f32v ax = abs(x);
  const auto product = [&]<size_t... k>(std::index_sequence<k...>) {
    using F = lanes::Vec<float, kHalf>::type;
    const auto part = [&](F half, F& hi, F& lo) {
      const f64h y = static_cast<double>(e) * log_f64(__builtin_convertvector(half, f64h));
      hi = __builtin_convertvector(y, F);
      const f64h rest = y - __builtin_convertvector(hi, f64h);
      lo = __builtin_convertvector(y < 1e6 && y > -1e6 ? rest : 0.0, F);  // inf - inf would be NaN
    };
    F hl, ll, hh, lh;
    part(__builtin_shufflevector(ax, ax, k...), hl, ll);
    part(__builtin_shufflevector(ax, ax, (k + kHalf)...), hh, lh);
    return Pair{__builtin_shufflevector(hl, hh, k..., (k + kHalf)...), __builtin_shufflevector(ll, lh, k..., (k + kHalf)...)};
  };
  const Pair y = product(std::make_index_sequence<kHalf>());
  const Exp r = exp_parts(y.hi, y.lo);
  f32v out = scale(r.p, r.k);
  if (odd) out = flip_sign(out, sign_bits(x));
  if (!integral) out = (x < 0.0f) & (x != -kInf) ? kNaN : out;
  return out;
}

// ---- Box-Muller's angle: (cos 2 pi u, sin 2 pi u) for u in [0, 1). u = q/4 + f exactly, with
// |f| <= 1/8, and both functions of 2 pi f by polynomials in f.
inline void sincos_2pi(f32v u, f32v& c, f32v& s) {
  constexpr float kS[4] = {6.2831854820251465f, -41.34165954589844f, 81.59231567382812f, -75.39149475097656f};
  constexpr float kC[4] = {-19.739208221435547f, 64.93932342529297f, -85.4437026977539f, 59.24437713623047f};
  const f32v q = round_int(u * 4.0f);
  const f32v f = fma(q, lanes::splat(-0.25f), u);
  const f32v f2 = f * f;
  const f32v sp = f * horner(f2, kS);
  const f32v cp = fma(f2, horner(f2, kC), lanes::splat(1.0f));
  const i32v qi = __builtin_convertvector(q, i32v);
  const i32v swap = (qi & 1) != 0;
  const f32v c0 = swap ? sp : cp, s0 = swap ? cp : sp;
  c = flip_sign(c0, ((qi + 1) & 2) << 30);  // quadrants 1, 2: cos < 0
  s = flip_sign(s0, (qi & 2) << 30);        // quadrants 2, 3: sin < 0
}

// ---- loops: f on every element of n contiguous floats, a register at a time; the ragged tail
// runs through the same f on a partly filled register, so every position rounds alike.
template <class F>
inline void map(const float* x, float* out, int64_t n, const F& f) {
  int64_t i = 0;
  for (; i + lanes::kWidth <= n; i += lanes::kWidth) lanes::store(out + i, f(lanes::load(x + i)));
  if (i < n) lanes::store_first(out + i, f(lanes::load_first(x + i, n - i)), n - i);
}
template <class F>
inline void map(const float* a, const float* b, float* out, int64_t n, const F& f) {
  int64_t i = 0;
  for (; i + lanes::kWidth <= n; i += lanes::kWidth) lanes::store(out + i, f(lanes::load(a + i), lanes::load(b + i)));
  if (i < n) lanes::store_first(out + i, f(lanes::load_first(a + i, n - i), lanes::load_first(b + i, n - i)), n - i);
}

}  // namespace vmath
}  // namespace kiln::cpu
