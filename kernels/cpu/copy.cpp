// CPU copy and dtype conversion: dst[i] = convert(src[i]); src is already expanded to dst's shape.
// f32 <-> f16/bf16 convert a register at a time (lanes16.h); other pairs element by element.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/convert.h"
#include "kernels/cpu/lanes16.h"
#include "kernels/cpu/loops.h"
#include "tensor/dispatch.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

template <size_t Bytes>
void copy_same_type(const Tensor& src, Tensor& dst) {
  StridedIter<2> it({&dst, &src});
  it.run([](int64_t n, char** p, const int64_t* s) {
    if (s[0] == static_cast<int64_t>(Bytes) && s[1] == static_cast<int64_t>(Bytes)) {
      std::memcpy(p[0], p[1], static_cast<size_t>(n) * Bytes);
      return;
    }
    for (int64_t i = 0; i < n; ++i) std::memcpy(p[0] + i * s[0], p[1] + i * s[1], Bytes);
  });
}

// f32 -> T or T -> f32 for a 16-bit T: rows contiguous in both convert straight from source to
// destination, others through a register's worth of gathered elements; every layout gets the same bits.
template <class To, class From>
void convert_16bit(const Tensor& src, Tensor& dst) {
  StridedIter<2> it({&dst, &src});
  it.run([](int64_t n, char** p, const int64_t* s) {
    auto convert_n = [](const From* x, To* y, int64_t m) {
      if constexpr (std::is_same_v<From, float>) lanes::from_f32(x, y, m);
      else lanes::to_f32(x, y, m);
    };
    if (s[0] == static_cast<int64_t>(sizeof(To)) && s[1] == static_cast<int64_t>(sizeof(From)))
      return convert_n(reinterpret_cast<const From*>(p[1]), reinterpret_cast<To*>(p[0]), n);
    From x[lanes::kWidth];
    To y[lanes::kWidth];
    for (int64_t i0 = 0; i0 < n; i0 += lanes::kWidth) {
      const int64_t m = std::min<int64_t>(lanes::kWidth, n - i0);
      for (int64_t i = 0; i < m; ++i) x[i] = *reinterpret_cast<const From*>(p[1] + (i0 + i) * s[1]);
      convert_n(x, y, m);
      for (int64_t i = 0; i < m; ++i) *reinterpret_cast<To*>(p[0] + (i0 + i) * s[0]) = y[i];
    }
  });
}

void copy_cpu(const Tensor& src, Tensor& dst) {
  if (dst.numel() == 0) return;
  if (src.dtype() == dst.dtype()) {
    if (src.is_contiguous() && dst.is_contiguous() && src.numel() == dst.numel()) {
      const char* s = static_cast<const char*>(src.data_ptr());
      char* d = static_cast<char*>(dst.data_ptr());
      const int64_t bytes = static_cast<int64_t>(dst.nbytes());
      parallel_for(bytes, int64_t{1} << 20, [&](int64_t b, int64_t e) { std::memcpy(d + b, s + b, e - b); });
      return;
    }
    switch (dst.element_size()) {
      case 1: return copy_same_type<1>(src, dst);
      case 2: return copy_same_type<2>(src, dst);
      case 4: return copy_same_type<4>(src, dst);
      case 8: return copy_same_type<8>(src, dst);
    }
  }
  visit_dtype(dst.dtype(), [&]<class To>() {
    visit_dtype(src.dtype(), [&]<class From>() {
      constexpr bool k16 = (std::is_same_v<To, float> && lanes::kIs16<From>) || (std::is_same_v<From, float> && lanes::kIs16<To>);
      if constexpr (k16) convert_16bit<To, From>(src, dst);
      else unary_loop<To, From>(src, dst, [](From v) { return convert<To>(v); });
    });
  });
}

void fill_cpu(Tensor& out, const Scalar& value) {
  visit_dtype(out.dtype(), [&]<class T>() {
    const T v = value.to<T>();
    if (out.is_contiguous()) {
      T* p = static_cast<T*>(out.data_ptr());
      parallel_for(out.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) { std::fill(p + b, p + e, v); });
      return;
    }
    StridedIter<1> it({&out});
    it.run([&](int64_t n, char** p, const int64_t* s) {
      for (int64_t i = 0; i < n; ++i) *reinterpret_cast<T*>(p[0] + i * s[0]) = v;
    });
  });
}

}  // namespace

KILN_REGISTER_KERNEL(Op::copy, DeviceType::cpu, copy_cpu);
KILN_REGISTER_KERNEL(Op::fill, DeviceType::cpu, fill_cpu);

}  // namespace kiln::cpu
