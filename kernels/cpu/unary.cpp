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

#include "kernels/cpu/lanes16.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/cpu/wide_math.h"
#include "tensor/dispatch.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

// ---- float math ops. A "wide" op has wide(V) for float results (computed in double lanes, see
// Note [Vectorized float math] in wide_math.h) and operator()(double) for f64. A plain op has
// operator()(float) (f32, f16, bf16) and operator()(double).

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

struct Reciprocal {
  float operator()(float x) const { return 1.0f / x; }
  double operator()(double x) const { return 1.0 / x; }
};

// out = f.wide of x, eight double lanes at a time; a ragged tail goes through the same lanes, padded.
// Full blocks copy a fixed size (one vector load and store; a variable-size memcpy becomes a slow
// rep movs), and the math has one call site, so it inlines.
template <class F>
void wide_block(const float* x, float* out, int64_t n, const F& f) {
  for (int64_t i = 0; i < n; i += 8) {
    const bool full = n - i >= 8;
    const size_t bytes = full ? sizeof(wide::f32x8) : static_cast<size_t>(n - i) * sizeof(float);
    wide::f32x8 v = {};
    if (full) std::memcpy(&v, x + i, sizeof v);
    else std::memcpy(&v, x + i, bytes);
    const wide::f32x8 r = __builtin_convertvector(f.wide(__builtin_convertvector(v, wide::f64x8)), wide::f32x8);
    if (full) std::memcpy(out + i, &r, sizeof r);
    else std::memcpy(out + i, &r, bytes);
  }
}

// out = block(x) for f32 or 16-bit T in any layout, through a float buffer a block at a time:
// block(buf, m) maps m floats in place. Contiguous 16-bit rows convert a register at a time
// (lanes16.h), others element by element; both round alike.
template <class T, class Block>
void through_float_buffer(const Tensor& x, Tensor& out, const Block& block) {
  StridedIter<2> it({&out, &x});
  it.run([&](int64_t n, char** p, const int64_t* s) {
    constexpr int64_t kBlock = 256;
    float buf[kBlock];
    for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
      const int64_t m = std::min(kBlock, n - i0);
      lanes::strided_to_f32<T>(p[1] + i0 * s[1], s[1], buf, m);
      block(buf, m);
      lanes::strided_from_f32<T>(buf, p[0] + i0 * s[0], s[0], m);
    }
  });
}

// out = f(x) for floating x: f32 through vmath lanes (f), f64 through <cmath> (f64). Other layouts
// and f16/bf16 go through a float buffer into the same lanes, so every layout and dtype rounds alike.
template <class F, class D>
void lane_map(const Tensor& x, Tensor& out, const char* op, const F& f, const D& f64) {
  visit_floating(x.dtype(), op, [&]<class T>() {
    if constexpr (std::is_same_v<T, double>) {
      unary_loop<T, T>(x, out, f64);
    } else {
      if constexpr (std::is_same_v<T, float>) {
        if (x.is_contiguous() && out.is_contiguous()) {
          const float* px = static_cast<const float*>(x.data_ptr());
          float* po = static_cast<float*>(out.data_ptr());
          return parallel_for(out.numel(), kElementwiseGrain,
                              [&](int64_t b, int64_t e) { vmath::map(px + b, po + b, e - b, f); });
        }
      }
      through_float_buffer<T>(x, out, [&f](float* buf, int64_t m) { vmath::map(buf, buf, m, f); });
    }
  });
}

// out = f(x) for floating x, f a wide op. f16/bf16 go through a float buffer into the same double
// lanes as contiguous f32 (f.wide computes lane by lane, so the values equal f on one double).
template <class F>
void wide_map(const Tensor& x, Tensor& out, const char* op, const F& f) {
  visit_floating(x.dtype(), op, [&]<class T>() {
    if constexpr (std::is_same_v<T, double>) {
      unary_loop<T, T>(x, out, f);
    } else if constexpr (std::is_same_v<T, float>) {
      if (x.is_contiguous() && out.is_contiguous()) {
        const float* px = static_cast<const float*>(x.data_ptr());
        float* po = static_cast<float*>(out.data_ptr());
        return parallel_for(out.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) { wide_block(px + b, po + b, e - b, f); });
      }
      unary_loop<T, T>(x, out, [&f](T v) { return static_cast<T>(f.wide(static_cast<double>(v))); });
    } else {
      through_float_buffer<T>(x, out, [&f](float* buf, int64_t m) { wide_block(buf, buf, m, f); });
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

using lanes::f32v;
void exp_cpu(const Tensor& x, Tensor& out) {
  lane_map(x, out, "exp", [](f32v v) { return vmath::exp(v); }, [](double v) { return std::exp(v); });
}
void log_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "log", Log{}); }
void log1p_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "log1p", Log1p{}); }
void expm1_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "expm1", Expm1{}); }
// The float lanes' sqrt instruction rounds once, as sqrt in double then rounded to float does.
void sqrt_cpu(const Tensor& x, Tensor& out) {
  lane_map(x, out, "sqrt", [](f32v v) { return vmath::sqrt(v); }, [](double v) { return std::sqrt(v); });
}
void rsqrt_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "rsqrt", Rsqrt{}); }
void tanh_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "tanh", Tanh{}); }
void sigmoid_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "sigmoid", Sigmoid{}); }
void silu_cpu(const Tensor& x, Tensor& out) { wide_map(x, out, "silu", Silu{}); }
// 0.5 x (1 + tanh(a)), a = sqrt(2/pi) (x + 0.044715 x^3), computed as x / (1 + e^-2a): the same
// function without the cancellation of 1 + tanh(a) for negative x.
void gelu_tanh_cpu(const Tensor& x, Tensor& out) {
  lane_map(x, out, "gelu", [](f32v v) { return vmath::gelu_tanh(v); }, [](double v) {
    return v / (1.0 + std::exp(-2.0 * 0.7978845608028654 * (v + 0.044715 * v * v * v)));
  });
}
void softplus_cpu(const Tensor& x, double beta, double threshold, Tensor& out) {
  wide_map(x, out, "softplus", Softplus{beta, threshold});
}
void sin_cpu(const Tensor& x, Tensor& out) {
  lane_map(x, out, "sin", [](f32v v) { return vmath::sin(v); }, [](double v) { return std::sin(v); });
}
void cos_cpu(const Tensor& x, Tensor& out) {
  lane_map(x, out, "cos", [](f32v v) { return vmath::cos(v); }, [](double v) { return std::cos(v); });
}
void erf_cpu(const Tensor& x, Tensor& out) {
  lane_map(x, out, "erf", [](f32v v) { return vmath::erf(v); }, [](double v) { return std::erf(v); });
}
// 0.5 x (1 + erf(x / sqrt 2)); f64 as 0.5 x erfc(-x / sqrt 2), which keeps the negative tail accurate.
void gelu_erf_cpu(const Tensor& x, Tensor& out) {
  lane_map(x, out, "gelu", [](f32v v) { return vmath::gelu_erf(v); },
           [](double v) { return 0.5 * v * std::erfc(-v * 0.7071067811865476); });
}
void reciprocal_cpu(const Tensor& x, Tensor& out) { float_map(x, out, "reciprocal", Reciprocal{}); }

void leaky_relu_cpu(const Tensor& x, double slope, double, Tensor& out) {
  float_map(x, out, "leaky_relu", [slope](auto v) {
    using C = decltype(v);
    return v > C(0) ? v : v * static_cast<C>(slope);
  });
}

// x^e. The exponents torch special-cases take their short forms (x^0.5 is sqrt, so (-0)^0.5 = -0
// and (-inf)^0.5 = NaN, as in torch); other exponents go through vmath::pow (std::pow for f64
// tensors and for an infinite or NaN exponent).
void pow_scalar_cpu(const Tensor& x, double e, double, Tensor& out) {
  if (e == 2.0) return float_map(x, out, "pow", [](auto v) { return v * v; });
  if (e == 3.0) return float_map(x, out, "pow", [](auto v) { return v * v * v; });
  if (e == 0.5) return sqrt_cpu(x, out);
  if (e == -0.5) return wide_map(x, out, "pow", Rsqrt{});
  if (e == -1.0) return float_map(x, out, "pow", Reciprocal{});
  if (e == -2.0) return float_map(x, out, "pow", [](auto v) { return decltype(v)(1) / (v * v); });
  if (e == 1.0) return float_map(x, out, "pow", [](auto v) { return v; });
  if (e == 0.0) return float_map(x, out, "pow", [](auto v) { return decltype(v)(1); });
  if (!std::isfinite(static_cast<float>(e)))  // also an exponent past float's range
    return float_map(x, out, "pow", [e](auto v) { return std::pow(v, static_cast<decltype(v)>(e)); });
  // The exponent as the tensor's dtype holds it (torch casts it so).
  const float ef = static_cast<float>(e);
  const bool integral = std::nearbyint(ef) == ef, odd = integral && std::fmod(ef, 2.0f) != 0.0f;
  lane_map(x, out, "pow", [=](f32v v) { return vmath::pow(v, ef, integral, odd); }, [e](double v) { return std::pow(v, e); });
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
