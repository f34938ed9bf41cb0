// CPU loop machinery shared by the kernels: a strided N-operand iterator that coalesces dims and
// splits the index range over threads, plus typed elementwise helpers with contiguous fast paths
// that the compiler vectorizes. Operand 0 is always the output.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

#include "tensor/parallel.h"
#include "tensor/tensor.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]

// N operands over one shape, strides in bytes, dims coalesced, innermost dim last.
template <int N>
struct StridedIter {
  int ndim = 0;
  int64_t shape[kMaxDims];
  int64_t strides[N][kMaxDims];
  char* base[N];
  int64_t numel = 1;

  // All operands must have `shape` (inputs already expanded to it).
  explicit StridedIter(const std::array<const Tensor*, N>& ops) {
    const Dims& sh = ops[0]->shape();
    for (int k = 0; k < N; ++k) base[k] = static_cast<char*>(ops[k]->data_ptr());
    // Keep non-trivial dims, then merge neighbours that are contiguous in every operand.
    for (int d = 0; d < sh.size(); ++d) {
      if (sh[d] == 1) continue;
      numel *= sh[d];
      bool merge = ndim > 0;
      for (int k = 0; k < N && merge; ++k) {
        const int64_t es = static_cast<int64_t>(ops[k]->element_size());
        merge = strides[k][ndim - 1] == ops[k]->strides()[d] * es * sh[d];
      }
      if (merge) {
        shape[ndim - 1] *= sh[d];
        for (int k = 0; k < N; ++k) strides[k][ndim - 1] = ops[k]->strides()[d] * static_cast<int64_t>(ops[k]->element_size());
      } else {
        shape[ndim] = sh[d];
        for (int k = 0; k < N; ++k) strides[k][ndim] = ops[k]->strides()[d] * static_cast<int64_t>(ops[k]->element_size());
        ++ndim;
      }
    }
    for (int d = 0; d < sh.size(); ++d) numel = sh[d] == 0 ? 0 : numel;
    if (ndim == 0) {  // a single element (or all dims of size 1)
      shape[0] = 1;
      for (int k = 0; k < N; ++k) strides[k][0] = 0;
      ndim = 1;
    }
  }

  // Calls inner(n, ptrs, inner_strides) over rows of the innermost dim covering the flat index
  // range [begin, end).
  template <class Inner>
  void run_range(int64_t begin, int64_t end, Inner& inner) const {
    const int last = ndim - 1;
    int64_t idx[kMaxDims];
    int64_t rem = begin;
    for (int d = last; d >= 0; --d) { idx[d] = rem % shape[d]; rem /= shape[d]; }
    int64_t inner_strides[N];
    for (int k = 0; k < N; ++k) inner_strides[k] = strides[k][last];
    int64_t pos = begin;
    while (pos < end) {
      char* ptrs[N];
      for (int k = 0; k < N; ++k) {
        ptrs[k] = base[k];
        for (int d = 0; d < ndim; ++d) ptrs[k] += idx[d] * strides[k][d];
      }
      const int64_t n = std::min(shape[last] - idx[last], end - pos);
      inner(n, ptrs, inner_strides);
      pos += n;
      idx[last] += n;
      for (int d = last; d > 0 && idx[d] == shape[d]; --d) { idx[d] = 0; ++idx[d - 1]; }
    }
  }

  template <class Inner>
  void run(Inner&& inner, int64_t grain = kElementwiseGrain) const {
    parallel_for(numel, grain, [&](int64_t b, int64_t e) { run_range(b, e, inner); });
  }
};

// Visits every 1-d slice along `dim` of `shape`: fn(count, ptrs, strides) receives `count` slices,
// slice i of operand k starting at ptrs[k] + i * strides[k]. Operands need `shape` in every dim
// but `dim`. A slice is never split between threads, so writes along it can stay in order.
template <int N, class Fn>
void for_each_slice(const std::array<const Tensor*, N>& ops, const Dims& shape, int dim, Fn&& fn) {
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return;  // no element to visit
  Dims outer = shape;
  outer.erase(dim);
  std::array<Tensor, N> views;
  std::array<const Tensor*, N> ptrs;
  for (int k = 0; k < N; ++k) {
    Dims strides = ops[k]->strides();
    strides.erase(dim);
    views[k] = ops[k]->as_strided(outer, strides, ops[k]->storage_offset());
    ptrs[k] = &views[k];
  }
  const StridedIter<N> it(ptrs);
  it.run(fn, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, shape[dim])));
}

// out[i] = f(x[i]); x already has out's shape; In and Out are the element types.
template <class Out, class In, class F>
void unary_loop(const Tensor& x, Tensor& out, F f) {
  if (x.is_contiguous() && out.is_contiguous()) {
    const In* px = static_cast<const In*>(x.data_ptr());
    Out* po = static_cast<Out*>(out.data_ptr());
    parallel_for(out.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) po[i] = f(px[i]);
    });
    return;
  }
  StridedIter<2> it({&out, &x});
  it.run([&](int64_t n, char** p, const int64_t* s) {
    for (int64_t i = 0; i < n; ++i)
      *reinterpret_cast<Out*>(p[0] + i * s[0]) = f(*reinterpret_cast<const In*>(p[1] + i * s[1]));
  });
}

// out[i] = f(a[i], b[i]); a and b already expanded to out's shape, both of element type In.
template <class Out, class In, class F>
void binary_loop(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  Out* po = static_cast<Out*>(out.data_ptr());
  const In* pa = static_cast<const In*>(a.data_ptr());
  const In* pb = static_cast<const In*>(b.data_ptr());
  const int64_t n = out.numel();
  if (out.is_contiguous()) {
    const bool ca = a.is_contiguous(), cb = b.is_contiguous();
    if (ca && cb) {
      if (n == 1) { po[0] = f(pa[0], pb[0]); return; }  // the 1-element case, without a closure
      parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i) po[i] = f(pa[i], pb[i]);
      });
      return;
    }
    const bool sa = a.numel() > 0 && std::all_of(a.strides().begin(), a.strides().end(), [](int64_t v) { return v == 0; });
    const bool sb = b.numel() > 0 && std::all_of(b.strides().begin(), b.strides().end(), [](int64_t v) { return v == 0; });
    if (ca && sb) {
      const In vb = pb[0];
      parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i) po[i] = f(pa[i], vb);
      });
      return;
    }
    if (sa && cb) {
      const In va = pa[0];
      parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i) po[i] = f(va, pb[i]);
      });
      return;
    }
  }
  StridedIter<3> it({&out, &a, &b});
  it.run([&](int64_t len, char** p, const int64_t* s) {
    for (int64_t i = 0; i < len; ++i)
      *reinterpret_cast<Out*>(p[0] + i * s[0]) =
          f(*reinterpret_cast<const In*>(p[1] + i * s[1]), *reinterpret_cast<const In*>(p[2] + i * s[2]));
  });
}

}  // namespace kiln::cpu
