// CPU binary elementwise kernels: a, b and out have one shape (inputs expanded with stride 0 where
// they broadcast); a and b share one dtype T; out is T, or bool for comparisons and logical ops.
// Arithmetic on f16/bf16 happens in float (compute_t<T>), rounded once into T; add, sub, mul, div,
// maximum and minimum do it a register of f32 lanes at a time (lanes16.h).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cpu/convert.h"
#include "kernels/cpu/lanes16.h"
#include "kernels/cpu/loops.h"
#include "tensor/dispatch.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

using lanes::f32v;

// m <= kWidth elements of a 16-bit operand from p at byte stride s, as floats: loaded and converted
// when contiguous, one value in every lane when broadcast (s = 0), else gathered first.
template <class T>
f32v operand16(const char* p, int64_t s, int64_t m) {
  if (s == static_cast<int64_t>(sizeof(T))) return lanes::load16_first(reinterpret_cast<const T*>(p), m);
  if (s == 0) return lanes::splat(static_cast<float>(*reinterpret_cast<const T*>(p)));
  T g[lanes::kWidth] = {};
  for (int64_t i = 0; i < m; ++i) g[i] = *reinterpret_cast<const T*>(p + i * s);
  return lanes::load16_first(g, m);
}

// out = f(a, b) for 16-bit float T, f applied to f32 lanes and rounded once: the same bits as f on
// one float at a time, which is IEEE arithmetic lane by lane (no contraction into FMA: C++20 mode).
template <class T, class F>
void binary16(const Tensor& a, const Tensor& b, Tensor& out, const F& f) {
  StridedIter<3> it({&out, &a, &b});
  it.run([&f](int64_t n, char** p, const int64_t* s) {
    for (int64_t i = 0; i < n; i += lanes::kWidth) {
      const int64_t m = std::min<int64_t>(lanes::kWidth, n - i);
      const f32v r = f(operand16<T>(p[1] + i * s[1], s[1], m), operand16<T>(p[2] + i * s[2], s[2], m));
      if (s[0] == static_cast<int64_t>(sizeof(T))) {
        lanes::store16_first(reinterpret_cast<T*>(p[0]) + i, r, m);
      } else {
        T y[lanes::kWidth];
        lanes::store16_first(y, r, m);
        for (int64_t k = 0; k < m; ++k) *reinterpret_cast<T*>(p[0] + (i + k) * s[0]) = y[k];
      }
    }
  });
}

// Runs f over (a, b) -> out for every dtype T of the inputs; f works on compute_t<T>, and, with
// kLanes, on f32v too, which f16/bf16 then use.
template <bool kBoolOut, class F, bool kLanes = false>
void binary_kernel(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  visit_dtype(a.dtype(), [&]<class T>() {
    using C = compute_t<T>;
    using Out = std::conditional_t<kBoolOut, bool, T>;
    if constexpr (kLanes && !kBoolOut && lanes::kIs16<T>) return binary16<T>(a, b, out, f);
    binary_loop<Out, T>(a, b, out, [f](T x, T y) { return static_cast<Out>(f(static_cast<C>(x), static_cast<C>(y))); });
  });
}
// binary_kernel for ops whose f also works on f32 lanes.
template <class F>
void lane_kernel(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  binary_kernel<false, F, true>(a, b, out, f);
}

// Integer division and remainder by zero are undefined in C++; torch raises, and so do we.
void check_no_zero_divisor(const Tensor& b, const char* op) {
  if (is_floating(b.dtype())) return;
  visit_dtype(b.dtype(), [&]<class T>() {
    bool zero = false;
    auto scan = [&](int64_t n, char** p, const int64_t* s) {
      for (int64_t i = 0; i < n; ++i) zero = zero || *reinterpret_cast<const T*>(p[0] + i * s[0]) == T(0);
    };
    StridedIter<1> it({&b});
    it.run_range(0, it.numel, scan);
    KILN_CHECK(!zero, op, ": integer division by zero");
  });
}

// Signed overflow is undefined in C++; torch wraps around, so integers compute in unsigned.
template <class C, class F>
C wrapping(C x, C y, F f) {
  if constexpr (std::is_integral_v<C> && std::is_signed_v<C>) {
    using U = std::make_unsigned_t<C>;
    return static_cast<C>(f(static_cast<U>(x), static_cast<U>(y)));
  } else {
    return static_cast<C>(f(x, y));
  }
}

template <class C>
C python_remainder(C x, C y) {
  if constexpr (std::is_floating_point_v<C>) {
    C r = std::fmod(x, y);
    if (r != 0 && ((r < 0) != (y < 0))) r += y;
    return r;
  } else if constexpr (std::is_same_v<C, bool>) {
    return false;
  } else {
    if constexpr (std::is_signed_v<C>)
      if (y == -1) return 0;  // x % -1 overflows for the most negative x
    C r = x % y;
    if (r != 0 && ((r < 0) != (y < 0))) r += y;
    return r;
  }
}

template <class C>
C int_pow(C base, C exp) {
  if constexpr (std::is_same_v<C, bool>) {
    return base || !exp;
  } else {
    if (exp < 0) return base == 1 ? 1 : (base == -1 ? (exp % 2 ? -1 : 1) : 0);  // torch's integer semantics
    C result = 1;
    while (exp) {
      if (exp & 1) result = wrapping(result, base, [](auto p, auto q) { return p * q; });
      base = wrapping(base, base, [](auto p, auto q) { return p * q; });
      exp >>= 1;
    }
    return result;
  }
}

void add_cpu(const Tensor& a, const Tensor& b, Tensor& out) {
  if (a.dtype() == DType::boolean) return binary_kernel<false>(a, b, out, [](auto x, auto y) { return x || y; });
  lane_kernel(a, b, out, [](auto x, auto y) { return wrapping(x, y, [](auto p, auto q) { return p + q; }); });
}
void sub_cpu(const Tensor& a, const Tensor& b, Tensor& out) {
  lane_kernel(a, b, out, [](auto x, auto y) { return wrapping(x, y, [](auto p, auto q) { return p - q; }); });
}
void mul_cpu(const Tensor& a, const Tensor& b, Tensor& out) {
  if (a.dtype() == DType::boolean) return binary_kernel<false>(a, b, out, [](auto x, auto y) { return x && y; });
  lane_kernel(a, b, out, [](auto x, auto y) { return wrapping(x, y, [](auto p, auto q) { return p * q; }); });
}
void div_cpu(const Tensor& a, const Tensor& b, Tensor& out) {
  check_no_zero_divisor(b, "div");
  lane_kernel(a, b, out, [](auto x, auto y) { return x / y; });
}
void pow_cpu(const Tensor& a, const Tensor& b, Tensor& out) {
  binary_kernel<false>(a, b, out, [](auto x, auto y) {
    if constexpr (std::is_floating_point_v<decltype(x)>) return std::pow(x, y);
    else return int_pow(x, y);
  });
}
void maximum_cpu(const Tensor& a, const Tensor& b, Tensor& out) {
  lane_kernel(a, b, out, [](auto x, auto y) { return (x != x || x > y) ? x : y; });  // NaN wins
}
void minimum_cpu(const Tensor& a, const Tensor& b, Tensor& out) {
  lane_kernel(a, b, out, [](auto x, auto y) { return (x != x || x < y) ? x : y; });
}
void remainder_cpu(const Tensor& a, const Tensor& b, Tensor& out) {
  check_no_zero_divisor(b, "remainder");
  binary_kernel<false>(a, b, out, [](auto x, auto y) { return python_remainder(x, y); });
}
void eq_cpu(const Tensor& a, const Tensor& b, Tensor& out) { binary_kernel<true>(a, b, out, [](auto x, auto y) { return x == y; }); }
void ne_cpu(const Tensor& a, const Tensor& b, Tensor& out) { binary_kernel<true>(a, b, out, [](auto x, auto y) { return x != y; }); }
void lt_cpu(const Tensor& a, const Tensor& b, Tensor& out) { binary_kernel<true>(a, b, out, [](auto x, auto y) { return x < y; }); }
void le_cpu(const Tensor& a, const Tensor& b, Tensor& out) { binary_kernel<true>(a, b, out, [](auto x, auto y) { return x <= y; }); }
void gt_cpu(const Tensor& a, const Tensor& b, Tensor& out) { binary_kernel<true>(a, b, out, [](auto x, auto y) { return x > y; }); }
void ge_cpu(const Tensor& a, const Tensor& b, Tensor& out) { binary_kernel<true>(a, b, out, [](auto x, auto y) { return x >= y; }); }
void logical_and_cpu(const Tensor& a, const Tensor& b, Tensor& out) {
  binary_kernel<true>(a, b, out, [](auto x, auto y) { return x != 0 && y != 0; });
}
void logical_or_cpu(const Tensor& a, const Tensor& b, Tensor& out) {
  binary_kernel<true>(a, b, out, [](auto x, auto y) { return x != 0 || y != 0; });
}
void logical_xor_cpu(const Tensor& a, const Tensor& b, Tensor& out) {
  binary_kernel<true>(a, b, out, [](auto x, auto y) { return (x != 0) != (y != 0); });
}

}  // namespace

KILN_REGISTER_KERNEL(Op::add, DeviceType::cpu, add_cpu);
KILN_REGISTER_KERNEL(Op::sub, DeviceType::cpu, sub_cpu);
KILN_REGISTER_KERNEL(Op::mul, DeviceType::cpu, mul_cpu);
KILN_REGISTER_KERNEL(Op::div, DeviceType::cpu, div_cpu);
KILN_REGISTER_KERNEL(Op::pow, DeviceType::cpu, pow_cpu);
KILN_REGISTER_KERNEL(Op::maximum, DeviceType::cpu, maximum_cpu);
KILN_REGISTER_KERNEL(Op::minimum, DeviceType::cpu, minimum_cpu);
KILN_REGISTER_KERNEL(Op::remainder, DeviceType::cpu, remainder_cpu);
KILN_REGISTER_KERNEL(Op::eq, DeviceType::cpu, eq_cpu);
KILN_REGISTER_KERNEL(Op::ne, DeviceType::cpu, ne_cpu);
KILN_REGISTER_KERNEL(Op::lt, DeviceType::cpu, lt_cpu);
KILN_REGISTER_KERNEL(Op::le, DeviceType::cpu, le_cpu);
KILN_REGISTER_KERNEL(Op::gt, DeviceType::cpu, gt_cpu);
KILN_REGISTER_KERNEL(Op::ge, DeviceType::cpu, ge_cpu);
KILN_REGISTER_KERNEL(Op::logical_and, DeviceType::cpu, logical_and_cpu);
KILN_REGISTER_KERNEL(Op::logical_or, DeviceType::cpu, logical_or_cpu);
KILN_REGISTER_KERNEL(Op::logical_xor, DeviceType::cpu, logical_xor_cpu);

}  // namespace kiln::cpu
