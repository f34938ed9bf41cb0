// CPU unary elementwise kernels: x and out have one shape (any strides); out has x's dtype, except
// logical_not (bool out). The op definitions give the float math only floating inputs; abs, neg,
// sign, relu and logical_not see every dtype. f16/bf16 compute in float. Semantics follow PyTorch.
// Not here: clamp and where (select.cpp), binary ops (binary.cpp).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "kernels/cpu/loops.h"
#include "tensor/dispatch.h"

namespace kiln::cpu {
namespace {

// Note [Vectorized float math]
// GCC vectorizes a loop only when every call in it has a vector form. glibc's expf, logf, tanhf...
// get one (libmvec) only under -ffast-math, and even sqrt stays scalar while errno may be set
// (-fmath-errno, the default, which an optimize attribute does not lift for builtins). So the f32
// math below is written once over V, either double or f64x8 (GCC vector extensions: eight lanes,
// one zmm register under -march=native), from arithmetic, bit operations and selects only. It
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

// ---- float math ops. A "wide" op has wide(V) for float results (computed in double lanes, see
// Note [Vectorized float math]) and operator()(double) for f64. A plain op has operator()(float)
// (f32, f16, bf16) and operator()(double).

struct Exp {
  template <class V> V wide(V x) const { return wide::exp(x); }
  double operator()(double x) const { return std::exp(x); }
};
struct Log {
  template <class V> V wide(V x) const { return wide::log(x); }
  double operator()(double x) const { return std::log(x); }
};
struct Log1p {
  template <class V> V wide(V x) const { return wide::log1p(x); }
  double operator()(double x) const { return std::log1p(x); }
};
struct Expm1 {
  template <class V> V wide(V x) const { return wide::expm1(x); }
  double operator()(double x) const { return std::expm1(x); }
};
struct Sqrt {  // sqrt in double then rounded to float is the correctly rounded float sqrt
  template <class V> V wide(V x) const { return wide::sqrt(x); }
  double operator()(double x) const { return std::sqrt(x); }
};
struct Rsqrt {  // one rounding for floats, where 1.0f / sqrtf(x) has two
  template <class V> V wide(V x) const { return 1.0 / wide::sqrt(x); }
  double operator()(double x) const { return 1.0 / std::sqrt(x); }
};
struct Tanh {
  template <class V> V wide(V x) const { return wide::tanh(x); }
  double operator()(double x) const { return std::tanh(x); }
};
struct Sigmoid {
  template <class V> V wide(V x) const { return wide::sigmoid(x); }
  double operator()(double x) const { return 1.0 / (1.0 + std::exp(-x)); }
};
struct Silu {  // x sigmoid(x) as x / (1 + e^-x): NaN at -inf, as in torch
  template <class V> V wide(V x) const { return x / (1.0 + wide::exp(-x)); }
  double operator()(double x) const { return x / (1.0 + std::exp(-x)); }
};
// 0.5 x (1 + tanh(a)), a = sqrt(2/pi) (x + 0.044715 x^3), written as x / (1 + e^-2a): the same
// function without the cancellation of 1 + tanh(a) for negative x.
struct GeluTanh {
  template <class V> static V arg(V x) { return 0.7978845608028654 * (x + 0.044715 * x * x * x); }
  template <class V> V wide(V x) const { return x / (1.0 + wide::exp(-2.0 * arg(x))); }
  double operator()(double x) const { return x / (1.0 + std::exp(-2.0 * arg(x))); }
};
// softplus: x where beta x > threshold (torch's linear region), else log(1 + e^(beta x)) / beta,
// as max(y, 0) + log1p(e^-|y|), which neither overflows nor cancels.
struct Softplus {
  double beta, threshold;
  template <class V> V wide(V x) const {
    const V y = beta * x;
    return y > threshold ? x : wide::softplus(y) / beta;
  }
  double operator()(double x) const {
    const double y = beta * x;
    return y > threshold ? x : ((y > 0.0 ? y : 0.0) + std::log1p(std::exp(-std::abs(y)))) / beta;
  }
};

// Scalar libm: sinf, cosf and erff are within 1 ulp, and have no vector form without -ffast-math.
struct Sin {
  float operator()(float x) const { return std::sin(x); }
  double operator()(double x) const { return std::sin(x); }
};
struct Cos {
  float operator()(float x) const { return std::cos(x); }
  double operator()(double x) const { return std::cos(x); }
};
struct Erf {
  float operator()(float x) const { return std::erf(x); }
  double operator()(double x) const { return std::erf(x); }
};
// 0.5 x (1 + erf(x / sqrt 2)) as 0.5 x erfc(-x / sqrt 2), which keeps the negative tail accurate.
struct GeluErf {
  float operator()(float x) const { return static_cast<float>((*this)(static_cast<double>(x))); }
  double operator()(double x) const { return 0.5 * x * std::erfc(-x * 0.7071067811865476); }
};
struct Reciprocal {
  float operator()(float x) const { return 1.0f / x; }
  double operator()(double x) const { return 1.0 / x; }
};

// Contiguous f32: eight double lanes at a time; a ragged tail goes through the same lanes, padded.
// Full blocks copy a fixed size (one vector load and store; a variable-size memcpy becomes a slow
// rep movs), and the math has one call site, so it inlines.
template <class F>
void wide_contiguous_f32(const float* x, float* out, int64_t n, const F& f) {
  parallel_for(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i += 8) {
      const bool full = end - i >= 8;
      const size_t bytes = full ? sizeof(wide::f32x8) : static_cast<size_t>(end - i) * sizeof(float);
      wide::f32x8 v = {};
      if (full) std::memcpy(&v, x + i, sizeof v);
      else std::memcpy(&v, x + i, bytes);
      const wide::f32x8 r = __builtin_convertvector(f.wide(__builtin_convertvector(v, wide::f64x8)), wide::f32x8);
      if (full) std::memcpy(out + i, &r, sizeof r);
      else std::memcpy(out + i, &r, bytes);
    }
  });
}

// out = f(x) for floating x, f a wide op.
template <class F>
void wide_map(const Tensor& x, Tensor& out, const char* op, const F& f) {
  visit_floating(x.dtype(), op, [&]<class T>() {
    if constexpr (std::is_same_v<T, double>) {
      unary_loop<T, T>(x, out, f);
    } else {
      if constexpr (std::is_same_v<T, float>) {
        if (x.is_contiguous() && out.is_contiguous()) {
          const float* px = static_cast<const float*>(x.data_ptr());
          return wide_contiguous_f32(px, static_cast<float*>(out.data_ptr()), out.numel(), f);
        }
      }
      unary_loop<T, T>(x, out, [&f](T v) {
        return static_cast<T>(static_cast<float>(f.wide(static_cast<double>(static_cast<float>(v)))));
      });
    }
  });
}

// out = f(x) for floating x, f a plain op (or a generic lambda).
template <class F>
void float_map(const Tensor& x, Tensor& out, const char* op, F f) {
  visit_floating(x.dtype(), op, [&]<class T>() {
    unary_loop<T, T>(x, out, [f](T v) { return static_cast<T>(f(static_cast<compute_t<T>>(v))); });
  });
}

void exp_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "exp", Exp{}); }
void log_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "log", Log{}); }
void log1p_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "log1p", Log1p{}); }
void expm1_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "expm1", Expm1{}); }
void sqrt_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "sqrt", Sqrt{}); }
void rsqrt_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "rsqrt", Rsqrt{}); }
void tanh_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "tanh", Tanh{}); }
void sigmoid_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "sigmoid", Sigmoid{}); }
void silu_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "silu", Silu{}); }
void gelu_tanh_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "gelu", GeluTanh{}); }
void softplus_cpu(const Tensor& x, double beta, double threshold, Tensor& out) {
  wide_map(x, out, "softplus", Softplus{beta, threshold});
}
void sin_cpu(const Tensor& x, Tensor& out) { float_map(x, out, "sin", Sin{}); }
void cos_cpu(const Tensor& x, Tensor& out) { float_map(x, out, "cos", Cos{}); }
void erf_cpu(const Tensor& x, Tensor& out) { float_map(x, out, "erf", Erf{}); }
void gelu_erf_cpu(const Tensor& x, Tensor& out) { float_map(x, out, "gelu", GeluErf{}); }
void reciprocal_cpu(const Tensor& x, Tensor& out) { float_map(x, out, "reciprocal", Reciprocal{}); }

void leaky_relu_cpu(const Tensor& x, double slope, double, Tensor& out) {
  float_map(x, out, "leaky_relu", [slope](auto v) {
    using C = decltype(v);
    return v > C(0) ? v : v * static_cast<C>(slope);
  });
}

// x^e. The exponents torch special-cases take their short forms (x^0.5 is sqrt, so (-0)^0.5 = -0
// and (-inf)^0.5 = NaN, as in torch); other exponents call std::pow with e in x's compute type.
void pow_scalar_cpu(const Tensor& x, double e, double, Tensor& out) {
  if (e == 2.0) return float_map(x, out, "pow", [](auto v) { return v * v; });
  if (e == 3.0) return float_map(x, out, "pow", [](auto v) { return v * v * v; });
  if (e == 0.5) return wide_map(x, out, "pow", Sqrt{});
  if (e == -0.5) return wide_map(x, out, "pow", Rsqrt{});
  if (e == -1.0) return float_map(x, out, "pow", Reciprocal{});
  if (e == -2.0) return float_map(x, out, "pow", [](auto v) { return decltype(v)(1) / (v * v); });
  if (e == 1.0) return float_map(x, out, "pow", [](auto v) { return v; });
  if (e == 0.0) return float_map(x, out, "pow", [](auto v) { return decltype(v)(1); });
  float_map(x, out, "pow", [e](auto v) { return std::pow(v, static_cast<decltype(v)>(e)); });
}

// ---- ops over every dtype. Signed integers negate through unsigned: -INT_MIN wraps to INT_MIN,
// as in torch, instead of overflowing (undefined in C++).

template <class T>
T wrapping_neg(T v) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(U(0) - static_cast<U>(v));
  } else {
    return -v;
  }
}

void abs_cpu(const Tensor& x, Tensor& out) {
  visit_dtype(x.dtype(), [&]<class T>() {
    if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) {  // clear the sign bit: exact
      unary_loop<T, T>(x, out, [](T v) { return T::from_bits(static_cast<uint16_t>(v.bits & 0x7fffu)); });
    } else if constexpr (std::is_floating_point_v<T>) {
      unary_loop<T, T>(x, out, [](T v) { return std::abs(v); });
    } else if constexpr (std::is_signed_v<T>) {
      unary_loop<T, T>(x, out, [](T v) { return v < 0 ? wrapping_neg(v) : v; });
    } else {  // uint8, bool
      unary_loop<T, T>(x, out, [](T v) { return v; });
    }
  });
}

void neg_cpu(const Tensor& x, Tensor& out) {
  visit_dtype(x.dtype(), [&]<class T>() {
    if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) {
      unary_loop<T, T>(x, out, [](T v) { return T::from_bits(static_cast<uint16_t>(v.bits ^ 0x8000u)); });
    } else if constexpr (std::is_same_v<T, bool>) {
      detail::throw_error("neg: negation of a bool tensor is not supported; use logical_not");
    } else {
      unary_loop<T, T>(x, out, [](T v) { return wrapping_neg(v); });
    }
  });
}

// sign: -1, 0 or 1 (0 for +-0 and, as in torch, for NaN).
void sign_cpu(const Tensor& x, Tensor& out) {
  visit_dtype(x.dtype(), [&]<class T>() {
    using C = compute_t<T>;
    if constexpr (std::is_same_v<T, bool>) {
      unary_loop<T, T>(x, out, [](T v) { return v; });
    } else if constexpr (std::is_unsigned_v<T>) {
      unary_loop<T, T>(x, out, [](T v) { return static_cast<T>(v != 0); });
    } else {
      unary_loop<T, T>(x, out, [](T v) {
        const C c = static_cast<C>(v);
        return static_cast<T>(static_cast<C>(C(0) < c) - static_cast<C>(c < C(0)));
      });
    }
  });
}

// relu: max(x, 0), with NaN kept (torch's clamp_min semantics).
void relu_cpu(const Tensor& x, Tensor& out) {
  visit_dtype(x.dtype(), [&]<class T>() {
    using C = compute_t<T>;
    if constexpr (std::is_same_v<T, bool>) {
      detail::throw_error("relu: not defined for bool tensors");
    } else if constexpr (std::is_unsigned_v<T>) {
      unary_loop<T, T>(x, out, [](T v) { return v; });
    } else {
      unary_loop<T, T>(x, out, [](T v) { return static_cast<C>(v) < C(0) ? T(C(0)) : v; });
    }
  });
}

// logical_not: x == 0, into bool; NaN is nonzero, so logical_not(NaN) is false.
void logical_not_cpu(const Tensor& x, Tensor& out) {
  visit_dtype(x.dtype(), [&]<class T>() {
    using C = compute_t<T>;
    if constexpr (std::is_same_v<T, bool>) {
      // Read bools as bytes: a byte other than 0/1 (from_blob memory) is not a valid C++ bool.
      unary_loop<bool, uint8_t>(x, out, [](uint8_t v) { return v == 0; });
    } else {
      unary_loop<bool, T>(x, out, [](T v) { return static_cast<C>(v) == C(0); });
    }
  });
}

}  // namespace

KILN_REGISTER_KERNEL(Op::abs, DeviceType::cpu, abs_cpu);
KILN_REGISTER_KERNEL(Op::neg, DeviceType::cpu, neg_cpu);
KILN_REGISTER_KERNEL(Op::exp, DeviceType::cpu, exp_cpu);
KILN_REGISTER_KERNEL(Op::log, DeviceType::cpu, log_cpu);
KILN_REGISTER_KERNEL(Op::log1p, DeviceType::cpu, log1p_cpu);
KILN_REGISTER_KERNEL(Op::expm1, DeviceType::cpu, expm1_cpu);
KILN_REGISTER_KERNEL(Op::sqrt, DeviceType::cpu, sqrt_cpu);
KILN_REGISTER_KERNEL(Op::rsqrt, DeviceType::cpu, rsqrt_cpu);
KILN_REGISTER_KERNEL(Op::sin, DeviceType::cpu, sin_cpu);
KILN_REGISTER_KERNEL(Op::cos, DeviceType::cpu, cos_cpu);
KILN_REGISTER_KERNEL(Op::tanh, DeviceType::cpu, tanh_cpu);
KILN_REGISTER_KERNEL(Op::sigmoid, DeviceType::cpu, sigmoid_cpu);
KILN_REGISTER_KERNEL(Op::relu, DeviceType::cpu, relu_cpu);
KILN_REGISTER_KERNEL(Op::gelu_erf, DeviceType::cpu, gelu_erf_cpu);
KILN_REGISTER_KERNEL(Op::gelu_tanh, DeviceType::cpu, gelu_tanh_cpu);
KILN_REGISTER_KERNEL(Op::silu, DeviceType::cpu, silu_cpu);
KILN_REGISTER_KERNEL(Op::erf, DeviceType::cpu, erf_cpu);
KILN_REGISTER_KERNEL(Op::sign, DeviceType::cpu, sign_cpu);
KILN_REGISTER_KERNEL(Op::reciprocal, DeviceType::cpu, reciprocal_cpu);
KILN_REGISTER_KERNEL(Op::logical_not, DeviceType::cpu, logical_not_cpu);
KILN_REGISTER_KERNEL(Op::softplus, DeviceType::cpu, softplus_cpu);
KILN_REGISTER_KERNEL(Op::leaky_relu, DeviceType::cpu, leaky_relu_cpu);
KILN_REGISTER_KERNEL(Op::pow_scalar, DeviceType::cpu, pow_scalar_cpu);

}  // namespace kiln::cpu
