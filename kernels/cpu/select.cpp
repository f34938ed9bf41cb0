// CPU selection kernels: where (cond ? a : b) and clamp (x limited to [lo, hi]). Inputs arrive
// expanded to out's shape and converted to out's dtype by the op definitions
// (autograd/ops/elementwise.cpp). Semantics follow PyTorch.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "kernels/cpu/convert.h"
#include "kernels/cpu/loops.h"
#include "tensor/dispatch.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

// out = cond ? a : b, moving raw elements of E's size (NaN payloads and -0.0 survive untouched).
// cond is read as bytes: memory that did not come from a Kiln bool op may hold bytes other than
// 0/1, which are not valid C++ bools.
template <class E>
void where_elements(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  if (cond.is_contiguous() && a.is_contiguous() && b.is_contiguous() && out.is_contiguous()) {
    const uint8_t* pc = static_cast<const uint8_t*>(cond.data_ptr());
    const E* pa = static_cast<const E*>(a.data_ptr());
    const E* pb = static_cast<const E*>(b.data_ptr());
    E* po = static_cast<E*>(out.data_ptr());
    parallel_for(out.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) po[i] = pc[i] ? pa[i] : pb[i];
    });
    return;
  }
  // The general case, which includes masked_fill (a or b a 0-d value expanded with stride 0).
  StridedIter<4> it({&out, &cond, &a, &b});
  it.run([](int64_t n, char** p, const int64_t* s) {
    for (int64_t i = 0; i < n; ++i) {
      const bool c = *reinterpret_cast<const uint8_t*>(p[1] + i * s[1]) != 0;
      const char* src = c ? p[2] + i * s[2] : p[3] + i * s[3];
      std::memcpy(p[0] + i * s[0], src, sizeof(E));
    }
  });
}

void where_cpu(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  KILN_ASSERT(cond.dtype() == DType::boolean, "where: condition ", cond.dtype());
  KILN_ASSERT(a.dtype() == out.dtype() && b.dtype() == out.dtype(), "where: a ", a.dtype(), ", b ", b.dtype(),
              ", out ", out.dtype());
  switch (out.element_size()) {
    case 1: return where_elements<uint8_t>(cond, a, b, out);
    case 2: return where_elements<uint16_t>(cond, a, b, out);
    case 4: return where_elements<uint32_t>(cond, a, b, out);
    case 8: return where_elements<uint64_t>(cond, a, b, out);
  }
  KILN_ASSERT(false, "where: unexpected element size ", out.element_size());
}

// A clamp bound as T. Integer bounds saturate to T's range, which clamps exactly as comparing in
// int64 would (a bound of 1e12 on int32 is no bound); floating bounds round to T, as torch does.
template <class T>
T bound_as(const Scalar& s) {
  if constexpr (std::is_same_v<T, bool>) {
    return s.to<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (s.is_floating()) return convert<T>(s.to_double());  // not reached: a float bound makes x float
    const int64_t v = s.to_int();
    return static_cast<T>(std::clamp<int64_t>(v, std::numeric_limits<T>::lowest(), std::numeric_limits<T>::max()));
  } else {
    return convert<T>(s.to_double());
  }
}

// out = min(max(x, lo), hi): NaN in x stays NaN; lo > hi gives hi everywhere (torch's rule).
void clamp_cpu(const Tensor& x, const std::optional<Scalar>& lo, const std::optional<Scalar>& hi, Tensor& out) {
  visit_dtype(x.dtype(), [&]<class T>() {
    using C = compute_t<T>;
    // A missing bound is the far end of C's range, so one loop serves every case.
    using Limits = std::numeric_limits<C>;
    constexpr C kLowest = Limits::has_infinity ? -Limits::infinity() : Limits::lowest();
    constexpr C kHighest = Limits::has_infinity ? Limits::infinity() : Limits::max();
    const C l = lo ? static_cast<C>(bound_as<T>(*lo)) : kLowest;
    const C h = hi ? static_cast<C>(bound_as<T>(*hi)) : kHighest;
    unary_loop<T, T>(x, out, [l, h](T v) {
      const C c = static_cast<C>(v);
      const C r = c < l ? l : c;  // a NaN fails both comparisons and passes through
      return static_cast<T>(r > h ? h : r);
    });
  });
}

}  // namespace

KILN_REGISTER_KERNEL(Op::where, DeviceType::cpu, where_cpu);
KILN_REGISTER_KERNEL(Op::clamp, DeviceType::cpu, clamp_cpu);

}  // namespace kiln::cpu
