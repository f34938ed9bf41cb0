// CPU copy and dtype conversion: dst[i] = convert(src[i]); src is already expanded to dst's shape.
#include <cstring>

#include "kernels/cpu/convert.h"
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
      unary_loop<To, From>(src, dst, [](From v) { return convert<To>(v); });
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
