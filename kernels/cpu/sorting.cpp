// CPU kernels along one dim: cumsum, sort, topk, and tril/triu on the last two dims. Each 1-d slice
// (one matrix row for tril/triu) belongs to one thread; slices run in parallel. Inputs arrive
// validated (autograd/ops/sorting.cpp). Comparisons order NaN above every number, as torch does.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/convert.h"
#include "kernels/cpu/loops.h"
#include "tensor/dispatch.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

int64_t byte_stride(const Tensor& t, int dim) { return t.strides()[dim] * static_cast<int64_t>(t.element_size()); }

// The running sum's type: unsigned for integers (wrapping is defined there), float for f16/bf16.
template <class T> struct cumsum_acc { using type = compute_t<T>; };
template <> struct cumsum_acc<int64_t> { using type = uint64_t; };
template <> struct cumsum_acc<int32_t> { using type = uint32_t; };
template <> struct cumsum_acc<uint8_t> { using type = uint8_t; };

// cumsum of contiguous x into out, both (outer, n, inner) with inner > 1: running sums of whole
// inner rows, in blocks of columns, so the loop walks memory in order and vectorizes.
template <class T>
void cumsum_rows(const T* x, T* out, int64_t outer, int64_t n, int64_t inner) {
  using Acc = typename cumsum_acc<T>::type;
  constexpr int64_t kBlock = 512;
  const int64_t blocks = (inner + kBlock - 1) / kBlock;
  parallel_for(outer * blocks, std::max<int64_t>(1, kElementwiseGrain / (n * kBlock)), [&](int64_t b, int64_t e) {
    Acc acc[kBlock];
    for (int64_t t = b; t < e; ++t) {
      const int64_t o = t / blocks, r0 = (t % blocks) * kBlock, len = std::min(kBlock, inner - r0);
      std::fill(acc, acc + len, Acc(0));
      for (int64_t j = 0; j < n; ++j) {
        const int64_t base = (o * n + j) * inner + r0;
        for (int64_t r = 0; r < len; ++r) {
          acc[r] += static_cast<Acc>(x[base + r]);
          out[base + r] = static_cast<T>(acc[r]);
        }
      }
    }
  });
}

// ---- cumsum: x and out of one shape and dtype (never bool: integers arrive as int64); any strides.
// 16-bit floats accumulate in float and round each prefix once; integers wrap around like torch.
void cumsum_cpu(const Tensor& x, int dim, Tensor& out) {
  const int64_t n = x.shape()[dim], xs = byte_stride(x, dim), os = byte_stride(out, dim);
  visit_dtype(out.dtype(), [&]<class T>() {
    using Acc = typename cumsum_acc<T>::type;
    if (x.is_contiguous() && out.is_contiguous() && dim < x.dim() - 1) {
      int64_t outer = 1;
      for (int d = 0; d < dim; ++d) outer *= x.shape()[d];
      const int64_t inner = x.numel() / (outer * n);
      return cumsum_rows(static_cast<const T*>(x.data_ptr()), static_cast<T*>(out.data_ptr()), outer, n, inner);
    }
    for_each_slice<2>({&out, &x}, x.shape(), dim, [&](int64_t count, char** p, const int64_t* s) {
      for (int64_t c = 0; c < count; ++c) {
        Acc acc = 0;
        for (int64_t j = 0; j < n; ++j) {
          acc += static_cast<Acc>(*reinterpret_cast<const T*>(p[1] + c * s[1] + j * xs));
          *reinterpret_cast<T*>(p[0] + c * s[0] + j * os) = static_cast<T>(acc);
        }
      }
    });
  });
}

// a < b with NaN above every number and all NaNs equivalent: a strict weak order, as std::sort needs.
template <class C>
bool nan_less(C a, C b) {
  if constexpr (std::is_floating_point_v<C>) {
    if (std::isnan(b)) return !std::isnan(a);
  }
  return a < b;
}

template <class C>
struct Item {
  C value;
  int64_t index;
};

// Reads one slice into items (value in compute precision, position along dim).
template <class T>
void load_slice(const char* px, int64_t xs, int64_t n, std::vector<Item<compute_t<T>>>& items) {
  items.resize(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j)
    items[static_cast<size_t>(j)] = {static_cast<compute_t<T>>(*reinterpret_cast<const T*>(px + j * xs)), j};
}

template <class T>
void store_slice(const std::vector<Item<compute_t<T>>>& items, int64_t k, char* pv, int64_t vs, char* pi, int64_t is) {
  for (int64_t j = 0; j < k; ++j) {
    const auto& it = items[static_cast<size_t>(j)];
    *reinterpret_cast<T*>(pv + j * vs) = static_cast<T>(it.value);  // exact: the value came from a T
    *reinterpret_cast<int64_t*>(pi + j * is) = it.index;
  }
}

// ---- sort: values and indices (int64) have x's shape; any strides. Each slice sorts (value,
// position) pairs; std::stable_sort keeps ties in input order when asked.
void sort_cpu(const Tensor& x, int dim, bool descending, bool stable, Tensor& values, Tensor& indices) {
  const int64_t n = x.shape()[dim];
  const int64_t xs = byte_stride(x, dim), vs = byte_stride(values, dim), is = byte_stride(indices, dim);
  visit_dtype(x.dtype(), [&]<class T>() {
    using C = compute_t<T>;
    auto before = [descending](const Item<C>& a, const Item<C>& b) {
      return descending ? nan_less(b.value, a.value) : nan_less(a.value, b.value);
    };
    for_each_slice<3>({&values, &indices, &x}, x.shape(), dim, [&](int64_t count, char** p, const int64_t* s) {
      std::vector<Item<C>> items;
      for (int64_t c = 0; c < count; ++c) {
        load_slice<T>(p[2] + c * s[2], xs, n, items);
        if (stable) std::stable_sort(items.begin(), items.end(), before);
        else std::sort(items.begin(), items.end(), before);
        store_slice<T>(items, n, p[0] + c * s[0], vs, p[1] + c * s[1], is);
      }
    });
  });
}

// ---- topk: values and indices (int64) have x's shape with k at dim; any strides. A small k
// partially sorts the slice (O(n log k)); a large k selects with nth_element, then sorts the k.
void topk_cpu(const Tensor& x, int64_t k, int dim, bool largest, bool sorted, Tensor& values, Tensor& indices) {
  const int64_t n = x.shape()[dim];
  const int64_t xs = byte_stride(x, dim), vs = byte_stride(values, dim), is = byte_stride(indices, dim);
  visit_dtype(x.dtype(), [&]<class T>() {
    using C = compute_t<T>;
    auto before = [largest](const Item<C>& a, const Item<C>& b) {
      return largest ? nan_less(b.value, a.value) : nan_less(a.value, b.value);
    };
    for_each_slice<3>({&values, &indices, &x}, values.shape(), dim, [&](int64_t count, char** p, const int64_t* s) {
      std::vector<Item<C>> items;
      for (int64_t c = 0; c < count; ++c) {
        load_slice<T>(p[2] + c * s[2], xs, n, items);
        const auto kth = items.begin() + k;
        if (sorted && k * 64 <= n) {
          std::partial_sort(items.begin(), kth, items.end(), before);
        } else {
          if (k < n) std::nth_element(items.begin(), kth, items.end(), before);
          if (sorted) std::sort(items.begin(), kth, before);
        }
        store_slice<T>(items, k, p[0] + c * s[0], vs, p[1] + c * s[1], is);
      }
    });
  });
}

// ---- tril / triu: x (*, R, C) any strides; out the same shape, contiguous. Row i keeps columns j
// with j - i <= diagonal (lower) or j - i >= diagonal (upper); the rest become zero, which is
// all-zero bytes in every dtype.
void tri_cpu(const Tensor& x, int64_t diagonal, bool lower, Tensor& out) {
  const int nd = x.dim();
  const int64_t rows = x.shape()[nd - 2], cols = x.shape()[nd - 1];
  const int64_t es = static_cast<int64_t>(x.element_size());
  const int64_t xr = x.strides()[nd - 2] * es, xc = x.strides()[nd - 1] * es;
  const int64_t diag = std::clamp<int64_t>(diagonal, -rows, cols);  // beyond these, nothing changes
  const char* px = static_cast<const char*>(x.data_ptr());
  char* po = static_cast<char*>(out.data_ptr());
  parallel_for(out.numel() / cols, std::max<int64_t>(1, kElementwiseGrain / cols), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      // Byte offset of matrix r / rows in x, through the batch dims' strides.
      int64_t rest = r / rows, src = 0;
      for (int d = nd - 3; d >= 0; --d) {
        src += (rest % x.shape()[d]) * x.strides()[d] * es;
        rest /= x.shape()[d];
      }
      const int64_t i = r % rows;
      const int64_t lo = lower ? 0 : std::clamp<int64_t>(i + diag, 0, cols);
      const int64_t hi = lower ? std::clamp<int64_t>(i + diag + 1, 0, cols) : cols;
      const char* row = px + src + i * xr;
      char* dst = po + r * cols * es;
      std::memset(dst, 0, static_cast<size_t>(lo * es));
      if (xc == es) {
        std::memcpy(dst + lo * es, row + lo * es, static_cast<size_t>((hi - lo) * es));
      } else {
        for (int64_t j = lo; j < hi; ++j) std::memcpy(dst + j * es, row + j * xc, static_cast<size_t>(es));
      }
      std::memset(dst + hi * es, 0, static_cast<size_t>((cols - hi) * es));
    }
  });
}

}  // namespace

KILN_REGISTER_KERNEL(Op::cumsum, DeviceType::cpu, cumsum_cpu);
KILN_REGISTER_KERNEL(Op::sort, DeviceType::cpu, sort_cpu);
KILN_REGISTER_KERNEL(Op::topk, DeviceType::cpu, topk_cpu);
KILN_REGISTER_KERNEL(Op::tril, DeviceType::cpu, tri_cpu);
KILN_REGISTER_KERNEL(Op::triu, DeviceType::cpu, tri_cpu);

}  // namespace kiln::cpu
