// CPU kernels for joining and indexing: cat, gather, index_select, scatter, scatter_add, index_add.
// Inputs arrive validated for shape and dtype (autograd/ops/indexing.cpp); index values are checked
// here, before the element they address is read or written. Copies move raw element bytes, so
// those kernels switch on the element size rather than the dtype.
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/convert.h"
#include "kernels/cpu/loops.h"
#include "tensor/dispatch.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

// Calls fn.template operator()<U>() with U an unsigned integer as wide as one element.
template <class Fn>
void visit_size(size_t bytes, Fn&& fn) {
  switch (bytes) {
    case 1: return fn.template operator()<uint8_t>();
    case 2: return fn.template operator()<uint16_t>();
    case 4: return fn.template operator()<uint32_t>();
    case 8: return fn.template operator()<uint64_t>();
  }
  KILN_ASSERT(false, "no element type of ", bytes, " bytes");
}

template <class Fn>
void visit_index(DType t, Fn&& fn) {
  if (t == DType::i32) return fn.template operator()<int32_t>();
  KILN_ASSERT(t == DType::i64, "index dtype ", t);
  fn.template operator()<int64_t>();
}

[[noreturn]] void throw_bad_index(const char* op, int64_t index, int dim, int64_t size) {
  detail::throw_error(op, ": index ", index, " is out of bounds for dim ", dim, " with size ", size);
}

template <class I>
int64_t checked_index(I v, const char* op, int dim, int64_t size) {
  const int64_t k = static_cast<int64_t>(v);
  if (__builtin_expect(k < 0 || k >= size, 0)) throw_bad_index(op, k, dim, size);
  return k;
}

// The values of a 1-d index, each checked against `size`, in one pass before anything is written.
std::vector<int64_t> read_index(const Tensor& index, const char* op, int dim, int64_t size) {
  std::vector<int64_t> out(static_cast<size_t>(index.numel()));
  visit_index(index.dtype(), [&]<class I>() {
    const I* p = static_cast<const I*>(index.data_ptr());
    const int64_t s = index.dim() ? index.strides()[0] : 1;
    for (size_t j = 0; j < out.size(); ++j) out[j] = checked_index(p[static_cast<int64_t>(j) * s], op, dim, size);
  });
  return out;
}

// a + b, wrapping for integers (signed overflow is undefined in C++) and in float for 16-bit floats.
template <class T>
T add_values(T a, T b) {
  if constexpr (std::is_same_v<T, bool>) {
    return a || b;
  } else if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
  } else {
    return convert<T>(static_cast<compute_t<T>>(a) + static_cast<compute_t<T>>(b));
  }
}

// ---- cat
// xs: one dtype, out's shape except at dim; out: contiguous, (outer, sum of sizes at dim, inner).
void cat_cpu(std::span<const Tensor> xs, int dim, Tensor& out) {
  const int64_t es = static_cast<int64_t>(out.element_size());
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; ++d) outer *= out.shape()[d];
  for (int d = dim + 1; d < out.dim(); ++d) inner *= out.shape()[d];
  const int64_t out_row = out.shape()[dim] * inner * es;  // bytes of one outer index in out
  char* po = static_cast<char*>(out.data_ptr());
  int64_t offset = 0;  // bytes into an out row where the current input starts
  for (const Tensor& x : xs) {
    const int64_t block = x.shape()[dim] * inner * es;  // bytes of one outer index in x
    if (x.numel() == 0) continue;
    if (x.is_contiguous()) {
      const char* px = static_cast<const char*>(x.data_ptr());
      if (outer == 1) {
        parallel_for(block, int64_t{1} << 20,
                     [&](int64_t b, int64_t e) { std::memcpy(po + offset + b, px + b, e - b); });
      } else {
        parallel_for(outer, std::max<int64_t>(1, (int64_t{1} << 16) / block), [&](int64_t b, int64_t e) {
          for (int64_t o = b; o < e; ++o) std::memcpy(po + o * out_row + offset, px + o * block, block);
        });
      }
    } else {
      // The slab of out this input fills, as a strided view; then an element-by-element copy.
      Tensor dst = out.as_strided(x.shape(), out.strides(), out.storage_offset() + offset / es);
      visit_size(out.element_size(), [&]<class U>() {
        StridedIter<2> it({&dst, &x});
        it.run([](int64_t n, char** p, const int64_t* s) {
          for (int64_t i = 0; i < n; ++i)
            *reinterpret_cast<U*>(p[0] + i * s[0]) = *reinterpret_cast<const U*>(p[1] + i * s[1]);
        });
      });
    }
    offset += block;
  }
}

// ---- gather: out[.., j, ..] = x[.., index[.., j, ..], ..] along dim.
// index (int64 or int32) and out: one shape; x: at least that shape in every dim but dim; any strides.
void gather_core(const Tensor& x, int dim, const Tensor& index, Tensor& out, const char* op) {
  const int64_t size = x.shape()[dim], n = index.shape()[dim];
  const int64_t xs = x.strides()[dim] * static_cast<int64_t>(x.element_size());
  const int64_t is = index.strides()[dim] * static_cast<int64_t>(index.element_size());
  const int64_t os = out.strides()[dim] * static_cast<int64_t>(out.element_size());
  visit_size(x.element_size(), [&]<class U>() {
    visit_index(index.dtype(), [&]<class I>() {
      for_each_slice<3>({&out, &index, &x}, index.shape(), dim, [&](int64_t count, char** p, const int64_t* s) {
        for (int64_t c = 0; c < count; ++c) {
          char* po = p[0] + c * s[0];
          const char* pi = p[1] + c * s[1];
          const char* px = p[2] + c * s[2];
          for (int64_t j = 0; j < n; ++j) {
            const int64_t k = checked_index(*reinterpret_cast<const I*>(pi + j * is), op, dim, size);
            *reinterpret_cast<U*>(po + j * os) = *reinterpret_cast<const U*>(px + k * xs);
          }
        }
      });
    });
  });
}

void gather_cpu(const Tensor& x, int dim, const Tensor& index, Tensor& out) {
  gather_core(x, dim, index, out, "gather");
}

// index seen with `shape` (stride 0 everywhere but dim), so index_select and index_add reuse the
// gather and scatter loops for layouts without a fast path.
Tensor expand_index(const Tensor& index, const Dims& shape, int dim) {
  Dims strides = Dims::filled(shape.size(), 0);
  strides[dim] = index.strides()[0];
  return index.as_strided(shape, strides, index.storage_offset());
}

// ---- index_select: x any strides; index 1-d (int64 or int32); out contiguous, x's shape with
// index.numel() at dim. Contiguous x copies whole (inner) rows.
void index_select_cpu(const Tensor& x, int dim, const Tensor& index, Tensor& out) {
  if (!x.is_contiguous()) {
    const Tensor idx = expand_index(index, out.shape(), dim);
    return gather_core(x, dim, idx, out, "index_select");
  }
  const std::vector<int64_t> idx = read_index(index, "index_select", dim, x.shape()[dim]);
  const int64_t es = static_cast<int64_t>(x.element_size());
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; ++d) outer *= x.shape()[d];
  for (int d = dim + 1; d < x.dim(); ++d) inner *= x.shape()[d];
  const int64_t n = x.shape()[dim], k = static_cast<int64_t>(idx.size()), row = inner * es;
  const char* px = static_cast<const char*>(x.data_ptr());
  char* po = static_cast<char*>(out.data_ptr());
  // One task per (outer, j) row of out.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, row));
  parallel_for(outer * k, grain, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t o = r / k, j = r % k;
      std::memcpy(po + r * row, px + (o * n + idx[static_cast<size_t>(j)]) * row, static_cast<size_t>(row));
    }
  });
}

// ---- scatter / scatter_add: out[.., index[.., j, ..], ..] (=|+=) src[.., j, ..] along dim.
// index (int64 or int32): any strides; src: at least index's shape; out: at least index's shape in
// every dim but dim. Each slice along dim is walked in order by one thread, so duplicate indices
// resolve deterministically (the last write wins; sums add in index order).
template <bool kAdd>
void scatter_core(Tensor& out, int dim, const Tensor& index, const Tensor& src, const char* op) {
  const int64_t size = out.shape()[dim], n = index.shape()[dim];
  const int64_t os = out.strides()[dim] * static_cast<int64_t>(out.element_size());
  const int64_t is = index.strides()[dim] * static_cast<int64_t>(index.element_size());
  const int64_t ss = src.strides()[dim] * static_cast<int64_t>(src.element_size());
  visit_dtype(out.dtype(), [&]<class T>() {
    visit_index(index.dtype(), [&]<class I>() {
      for_each_slice<3>({&out, &index, &src}, index.shape(), dim, [&](int64_t count, char** p, const int64_t* s) {
        for (int64_t c = 0; c < count; ++c) {
          char* po = p[0] + c * s[0];
          const char* pi = p[1] + c * s[1];
          const char* ps = p[2] + c * s[2];
          for (int64_t j = 0; j < n; ++j) {
            const int64_t k = checked_index(*reinterpret_cast<const I*>(pi + j * is), op, dim, size);
            T* dst = reinterpret_cast<T*>(po + k * os);
            const T v = *reinterpret_cast<const T*>(ps + j * ss);
            *dst = kAdd ? add_values(*dst, v) : v;
          }
        }
      });
    });
  });
}

void scatter_cpu(Tensor& out, int dim, const Tensor& index, const Tensor& src) {
  scatter_core<false>(out, dim, index, src, "scatter");
}
void scatter_add_cpu(Tensor& out, int dim, const Tensor& index, const Tensor& src) {
  scatter_core<true>(out, dim, index, src, "scatter_add");
}

// ---- index_add: out[.., index[j], ..] += src[.., j, ..] along dim. index 1-d (int64 or int32);
// src: out's shape with index.numel() at dim. Contiguous operands are seen as out (outer, n, inner)
// and src (outer, k, inner); threads split the (outer, inner) columns, and each column adds its k
// rows in index order.
void index_add_cpu(Tensor& out, int dim, const Tensor& index, const Tensor& src) {
  if (!src.is_contiguous() || !out.is_contiguous()) {
    const Tensor idx = expand_index(index, src.shape(), dim);
    return scatter_core<true>(out, dim, idx, src, "index_add");
  }
  const std::vector<int64_t> idx = read_index(index, "index_add", dim, out.shape()[dim]);
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; ++d) outer *= out.shape()[d];
  for (int d = dim + 1; d < out.dim(); ++d) inner *= out.shape()[d];
  const int64_t n = out.shape()[dim], k = static_cast<int64_t>(idx.size());
  visit_dtype(out.dtype(), [&]<class T>() {
    T* po = static_cast<T*>(out.data_ptr());
    const T* ps = static_cast<const T*>(src.data_ptr());
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, k));
    parallel_for(outer * inner, grain, [&](int64_t b, int64_t e) {
      while (b < e) {
        const int64_t o = b / inner, r0 = b % inner, r1 = std::min(inner, r0 + (e - b));
        for (int64_t j = 0; j < k; ++j) {
          T* dst = po + (o * n + idx[static_cast<size_t>(j)]) * inner;
          const T* from = ps + (o * k + j) * inner;
          for (int64_t r = r0; r < r1; ++r) dst[r] = add_values(dst[r], from[r]);
        }
        b += r1 - r0;
      }
    });
  });
}

}  // namespace

KILN_REGISTER_KERNEL(Op::cat, DeviceType::cpu, cat_cpu);
KILN_REGISTER_KERNEL(Op::gather, DeviceType::cpu, gather_cpu);
KILN_REGISTER_KERNEL(Op::index_select, DeviceType::cpu, index_select_cpu);
KILN_REGISTER_KERNEL(Op::scatter, DeviceType::cpu, scatter_cpu);
KILN_REGISTER_KERNEL(Op::scatter_add, DeviceType::cpu, scatter_add_cpu);
KILN_REGISTER_KERNEL(Op::index_add, DeviceType::cpu, index_add_cpu);

}  // namespace kiln::cpu
