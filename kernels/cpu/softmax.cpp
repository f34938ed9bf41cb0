// CPU softmax and log_softmax along one dim, and cross_entropy over class indices (log_softmax and
// the pick fused). softmax: x and out have one shape, any strides; f32 and f64 compute in their own
// type, f16/bf16 in float (rows converted a register at a time, lanes16.h). Numerically stable:
// each row's max is subtracted before exp, so huge inputs do not overflow; a row of all -inf gives
// NaN, as in torch.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/cpu/convert.h"
#include "kernels/cpu/lanes16.h"
#include "kernels/cpu/loops.h"
#include "tensor/dispatch.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

// exp for float in plain arithmetic, so that row loops vectorize (std::exp does not without
// -ffast-math). Cephes' expf: x = n*ln2 + r with |r| <= ln2/2, exp(r) by a degree-6 polynomial,
// 2^n built in the exponent bits; within 2 ulp. Inputs below -87 flush to 0 (softmax only takes
// x - max <= 0, and the row sum is >= 1); NaN stays NaN. Rounding n uses the 1.5 * 2^23 trick
// instead of a float-to-int conversion, which would be UB for NaN.
inline float exp_float(float x) {
  const bool underflow = x < -87.0f;
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  constexpr float kMagic = 12582912.0f;
  const float t = x * 1.44269504088896341f + kMagic;
  const float n = t - kMagic;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const uint32_t e = std::bit_cast<uint32_t>(t) - std::bit_cast<uint32_t>(kMagic) + 127u;
  const float scale = std::bit_cast<float>(e << 23);
  return underflow ? 0.0f : y * scale;
}
inline double exp_c(double x) { return std::exp(x); }
inline float exp_c(float x) { return exp_float(x); }

template <class C>
C row_max(const C* x, int64_t n) {
  C m = -std::numeric_limits<C>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// log(sum(exp(x - m))): log_softmax(x) = (x - m) - this. cross_entropy shares it with log_softmax,
// so the two agree bit for bit.
template <class C>
C row_log_sum(const C* x, int64_t n, C m) {
  C sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += exp_c(x[i] - m);
  return std::log(sum);
}

// One contiguous row of n elements in the compute type C; y may alias x.
template <class C, bool kLog>
void softmax_row(const C* x, C* y, int64_t n) {
  const C m = row_max(x, n);
  C sum = 0;
  if constexpr (kLog) {
    const C log_sum = row_log_sum(x, n, m);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m) - log_sum;
  } else {
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) {
      const C e = exp_c(x[i] - m);
      y[i] = e;
      sum += e;
    }
    const C inv = C(1) / sum;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] *= inv;
  }
}

// A per-thread row buffer in the compute type, for rows that must be gathered or converted.
template <class C>
C* row_buffer(int64_t n) {
  thread_local std::vector<C> buf;
  if (buf.size() < static_cast<size_t>(n)) buf.resize(static_cast<size_t>(n));
  return buf.data();
}

// One row of n elements at element strides sx / sy, through a buffer unless it is contiguous in C.
template <class T, bool kLog>
void softmax_row_any(const T* x, int64_t sx, T* y, int64_t sy, int64_t n) {
  using C = compute_t<T>;
  if constexpr (std::is_same_v<T, C>) {
    if (sx == 1 && sy == 1) return softmax_row<C, kLog>(x, y, n);
  }
  C* buf = row_buffer<C>(n);
  if constexpr (lanes::kIs16<T>) {  // a contiguous 16-bit row converts a register at a time
    if (sx == 1) lanes::to_f32(x, buf, n);
    else for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<C>(x[i * sx]);
  } else {
    for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<C>(x[i * sx]);
  }
  softmax_row<C, kLog>(buf, buf, n);
  if constexpr (lanes::kIs16<T>) {
    if (sy == 1) return lanes::from_f32(buf, y, n);
  }
  for (int64_t i = 0; i < n; ++i) y[i * sy] = convert<T>(buf[i]);
}

// Rows in a block of chunks so a thread's share is at least ~32K elements.
int64_t row_grain(int64_t n) { return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, n)); }

// Note [Narrow rows]: a row of a few elements (a classifier's 10 logits) is too short for vector
// loops along it: they end in scalar remainders, and a batch of 128 such rows took 9-12 us. Rows
// of at most kNarrow elements go kNarrow at a time instead, transposed into a block so that each
// vector lane is one row, and every step (max, sum of exp, log) runs across the rows. Each row's
// sum is taken in element order. cross_entropy takes its rows' max and log-sum from the same
// routine, so its losses stay log_softmax's bit for bit.
constexpr int64_t kNarrow = 16;

// The max and log(sum(exp(x - max))) of `rows` <= kNarrow rows of n <= kNarrow elements, row r at
// x + r * n; lanes past `rows` hold padding. block receives the rows transposed (block[k][r]).
template <class T, class C = compute_t<T>>
void narrow_stats(const T* x, int64_t rows, int64_t n, C (&block)[kNarrow][kNarrow], C (&m)[kNarrow],
                  C (&log_sum)[kNarrow]) {
  for (int64_t k = 0; k < n; ++k)
    for (int64_t r = 0; r < kNarrow; ++r) block[k][r] = r < rows ? static_cast<C>(x[r * n + k]) : C(0);
  C sum[kNarrow];
  for (int64_t r = 0; r < kNarrow; ++r) {
    m[r] = -std::numeric_limits<C>::infinity();
    sum[r] = 0;
  }
  for (int64_t k = 0; k < n; ++k)
#pragma omp simd
    for (int64_t r = 0; r < kNarrow; ++r) m[r] = block[k][r] > m[r] ? block[k][r] : m[r];
  for (int64_t k = 0; k < n; ++k)
#pragma omp simd
    for (int64_t r = 0; r < kNarrow; ++r) sum[r] += exp_c(block[k][r] - m[r]);
  for (int64_t r = 0; r < kNarrow; ++r) log_sum[r] = std::log(sum[r]);
}

// `rows` <= kNarrow contiguous rows of n <= kNarrow elements.
template <class T, bool kLog>
void softmax_narrow_rows(const T* x, T* out, int64_t rows, int64_t n) {
  using C = compute_t<T>;
  C block[kNarrow][kNarrow], m[kNarrow], log_sum[kNarrow];
  narrow_stats<T>(x, rows, n, block, m, log_sum);
  for (int64_t k = 0; k < n; ++k)
#pragma omp simd
    for (int64_t r = 0; r < kNarrow; ++r) {
      const C d = block[k][r] - m[r];
      block[k][r] = kLog ? d - log_sum[r] : exp_c(d - log_sum[r]);
    }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < n; ++k) out[r * n + k] = convert<T>(block[k][r]);
}

// x, out: (outer, n) contiguous; softmax along n.
template <class T, bool kLog>
void softmax_lastdim(const T* x, T* out, int64_t outer, int64_t n) {
  if (n <= kNarrow) {
    const int64_t blocks = (outer + kNarrow - 1) / kNarrow;
    return parallel_for(blocks, row_grain(n * kNarrow), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        softmax_narrow_rows<T, kLog>(x + b * kNarrow * n, out + b * kNarrow * n, std::min(kNarrow, outer - b * kNarrow),
                                     n);
    });
  }
  parallel_for(outer, row_grain(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) softmax_row_any<T, kLog>(x + r * n, 1, out + r * n, 1, n);
  });
}

// x, out: (outer, n, inner) contiguous, inner > 1; softmax along n. Lanes of the inner dim are
// processed side by side in tiles of kTile, so every load is contiguous and vectorizes.
template <class T, bool kLog>
void softmax_innerdim(const T* x, T* out, int64_t outer, int64_t n, int64_t inner) {
  using C = compute_t<T>;
  constexpr int64_t kTile = 64;
  const int64_t tiles = (inner + kTile - 1) / kTile;
  parallel_for(outer * tiles, row_grain(n * kTile), [&](int64_t t0, int64_t t1) {
    C m[kTile], s[kTile];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t o = t / tiles, j0 = (t % tiles) * kTile, w = std::min(kTile, inner - j0);
      const T* xo = x + o * n * inner + j0;
      T* yo = out + o * n * inner + j0;
      std::fill(m, m + kTile, -std::numeric_limits<C>::infinity());
      std::fill(s, s + kTile, C(0));
      for (int64_t k = 0; k < n; ++k)
        for (int64_t j = 0; j < w; ++j) {
          const C v = static_cast<C>(xo[k * inner + j]);
          m[j] = v > m[j] ? v : m[j];
        }
      for (int64_t k = 0; k < n; ++k)
        for (int64_t j = 0; j < w; ++j) s[j] += exp_c(static_cast<C>(xo[k * inner + j]) - m[j]);
      for (int64_t j = 0; j < w; ++j) s[j] = kLog ? std::log(s[j]) : C(1) / s[j];
      for (int64_t k = 0; k < n; ++k)
        for (int64_t j = 0; j < w; ++j) {
          const C d = static_cast<C>(xo[k * inner + j]) - m[j];
          yo[k * inner + j] = convert<T>(kLog ? d - s[j] : exp_c(d) * s[j]);
        }
    }
  });
}

// Any strides: every row along `dim` is found by iterating the other dims, then gathered.
template <class T, bool kLog>
void softmax_strided(const Tensor& x, int dim, Tensor& out) {
  const int64_t n = x.size(dim), sx = x.stride(dim), sy = out.stride(dim);
  const Tensor x0 = x.narrow(dim, 0, 1), y0 = out.narrow(dim, 0, 1);
  StridedIter<2> it({&y0, &x0});
  it.run(
      [&](int64_t len, char** p, const int64_t* s) {
        for (int64_t i = 0; i < len; ++i)
          softmax_row_any<T, kLog>(reinterpret_cast<const T*>(p[1] + i * s[1]), sx,
                                   reinterpret_cast<T*>(p[0] + i * s[0]), sy, n);
      },
      row_grain(n));
}

template <bool kLog>
void softmax_kernel(const Tensor& x, int dim, Tensor& out) {
  if (out.numel() == 0) return;
  visit_floating(x.dtype(), kLog ? "log_softmax" : "softmax", [&]<class T>() {
    const int64_t n = x.size(dim);
    int64_t inner = 1;
    for (int d = dim + 1; d < x.dim(); ++d) inner *= x.size(d);
    const int64_t outer = x.numel() / (n * inner);
    const T* px = static_cast<const T*>(x.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    if (!x.is_contiguous() || !out.is_contiguous()) return softmax_strided<T, kLog>(x, dim, out);
    if (inner == 1) return softmax_lastdim<T, kLog>(px, po, outer, n);
    softmax_innerdim<T, kLog>(px, po, outer, n, inner);
  });
}

void softmax_cpu(const Tensor& x, int dim, Tensor& out) { softmax_kernel<false>(x, dim, out); }
void log_softmax_cpu(const Tensor& x, int dim, Tensor& out) { softmax_kernel<true>(x, dim, out); }

// ---- cross_entropy over class indices (Note [Fused cross-entropy], autograd/ops/linalg.cpp).

void check_targets(const int64_t* t, int64_t rows, int64_t classes, int64_t ignore_index) {
  for (int64_t r = 0; r < rows; ++r)
    KILN_CHECK(t[r] == ignore_index || (t[r] >= 0 && t[r] < classes), "cross_entropy: target ", t[r],
               " is out of bounds for ", classes, " classes");
}

template <class F>
void visit_f32_f64(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
    default: detail::throw_error(op, ": expected float32 or float64 logits, got ", t);
  }
}

void cross_entropy_cpu(const Tensor& logits, const Tensor& target, int64_t ignore_index, Tensor& loss,
                       Tensor& stats) {
  const int64_t rows = logits.size(0), classes = logits.size(1);
  const int64_t* t = target.data_ptr<int64_t>();
  check_targets(t, rows, classes, ignore_index);
  visit_f32_f64(logits.dtype(), "cross_entropy", [&]<class T>() {
    const T* x = logits.data_ptr<T>();
    T* out = loss.data_ptr<T>();
    T* st = stats.data_ptr<T>();
    // -log_softmax(row)[t], written as log_softmax writes it.
    auto finish = [&](int64_t r, T m, T log_sum) {
      st[2 * r] = m;
      st[2 * r + 1] = log_sum;
      out[r] = t[r] == ignore_index ? T(0) : -((x[r * classes + t[r]] - m) - log_sum);
    };
    if (classes <= kNarrow) {  // Note [Narrow rows], as log_softmax takes them
      const int64_t blocks = (rows + kNarrow - 1) / kNarrow;
      return parallel_for(blocks, row_grain(classes * kNarrow), [&](int64_t b0, int64_t b1) {
        T block[kNarrow][kNarrow], m[kNarrow], log_sum[kNarrow];
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t r0 = b * kNarrow, n = std::min(kNarrow, rows - r0);
          narrow_stats<T>(x + r0 * classes, n, classes, block, m, log_sum);
          for (int64_t r = 0; r < n; ++r) finish(r0 + r, m[r], log_sum[r]);
        }
      });
    }
    parallel_for(rows, row_grain(classes), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* row = x + r * classes;
        const T m = row_max(row, classes);
        finish(r, m, row_log_sum(row, classes, m));
      }
    });
  });
}

void cross_entropy_backward_cpu(const Tensor& logits, const Tensor& target, int64_t ignore_index,
                                const Tensor& stats, const Tensor& grad_loss, Tensor& grad_logits) {
  const int64_t rows = logits.size(0), classes = logits.size(1), gs = grad_loss.stride(0);
  const int64_t* t = target.data_ptr<int64_t>();
  visit_f32_f64(logits.dtype(), "cross_entropy", [&]<class T>() {
    const T* x = logits.data_ptr<T>();
    const T* st = stats.data_ptr<T>();
    const T* gl = grad_loss.data_ptr<T>();
    T* gx = grad_logits.data_ptr<T>();
    parallel_for(rows, row_grain(classes), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        T* out = gx + r * classes;
        if (t[r] == ignore_index) {
          std::fill(out, out + classes, T(0));
          continue;
        }
        const T* row = x + r * classes;
        const T m = st[2 * r], log_sum = st[2 * r + 1], g = gl[r * gs];
#pragma omp simd
        for (int64_t c = 0; c < classes; ++c) out[c] = g * exp_c((row[c] - m) - log_sum);
        out[t[r]] -= g;
      }
    });
  });
}

}  // namespace

KILN_REGISTER_KERNEL(Op::softmax, DeviceType::cpu, softmax_cpu);
KILN_REGISTER_KERNEL(Op::log_softmax, DeviceType::cpu, log_softmax_cpu);
KILN_REGISTER_KERNEL(Op::cross_entropy, DeviceType::cpu, cross_entropy_cpu);
KILN_REGISTER_KERNEL(Op::cross_entropy_backward, DeviceType::cpu, cross_entropy_backward_cpu);

}  // namespace kiln::cpu
