// CPU normalisation layers, forward and backward, each one fused pass per statistic: batch_norm
// (per channel over N and the spatial dims, with running statistics), layer_norm and rms_norm
// (per row over the last dims), group_norm (per sample and group). Statistics are two-pass sums
// in double, so an f32 result matches an f64 reference to rounding. Not here: shape checks and
// torch's defaults (autograd/ops/norm.cpp). Layouts: see NormKernel in tensor/dispatch.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels/cpu/convert.h"
#include "kernels/cpu/lanes16.h"
#include "kernels/cpu/loops.h"
#include "tensor/dispatch.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

// The dtype of saved mean / rstd for data of type T.
template <class T>
using stat_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.data_ptr()) : nullptr;
}
template <class T>
T* mut_or_null(Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}
template <class T>
double value_or(const T* p, int64_t i, double fallback) {
  return p ? static_cast<double>(static_cast<compute_t<T>>(p[i])) : fallback;
}

// Sums of n elements, and of squared deviations from `mean`, accumulated in double.
template <class T>
double sum_of(const T* x, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(static_cast<compute_t<T>>(x[i]));
  return s;
}
template <class T>
double sq_dev_sum(const T* x, int64_t n, double mean) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(static_cast<compute_t<T>>(x[i])) - mean;
    s += d * d;
  }
  return s;
}
// Note [Centring in float]: x - mean in float, with the mean rounded to float first, loses the
// mean's low bits: at a mean of 1e4 that is an absolute error of ~5e-4 in every centred value.
// The mean is split into hi + lo floats instead: x - hi is exact when x is near hi (Sterbenz),
// and subtracting lo after that keeps the centred value accurate to float rounding.
template <class C>
struct SplitMean {
  C hi, lo;
  explicit SplitMean(double mean) : hi(static_cast<C>(mean)), lo(static_cast<C>(mean - static_cast<double>(hi))) {}
  C centre(C x) const { return (x - hi) - lo; }
};

// y[i] = (x[i] - mean) * scale + shift, in the compute type.
template <class T>
void affine_row(const T* x, T* y, int64_t n, double mean, double scale, double shift) {
  using C = compute_t<T>;
  const SplitMean<C> m(mean);
  const C a = static_cast<C>(scale), b = static_cast<C>(shift);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = convert<T>(m.centre(static_cast<C>(x[i])) * a + b);
}

// Planes or rows per task, so a task moves ~32K elements.
int64_t grain_for(int64_t elems_per_item) {
  return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, elems_per_item));
}

// ---------------------------------------------------------------------------------------------
// batch_norm: x (N,C,L); statistics per channel over N*L values.

void batch_norm_cpu(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                    Tensor& running_var, const NormParams& p, Tensor& out, Tensor& mean, Tensor& rstd) {
  const int64_t N = x.size(0), C = x.size(1), L = x.size(2), M = N * L;
  visit_floating(x.dtype(), "batch_norm", [&]<class T>() {
    using S = stat_t<T>;
    const T *px = static_cast<const T*>(x.data_ptr()), *pw = ptr_or_null<T>(weight), *pb = ptr_or_null<T>(bias);
    T *rm = mut_or_null<T>(running_mean), *rv = mut_or_null<T>(running_var), *po = static_cast<T*>(out.data_ptr());
    S *pm = static_cast<S*>(mean.data_ptr()), *pr = static_cast<S*>(rstd.data_ptr());
    parallel_for(C, grain_for(M), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double mu, var;
        if (p.training) {
          double s = 0;
          for (int64_t n = 0; n < N; ++n) s += sum_of(px + (n * C + c) * L, L);
          mu = M ? s / static_cast<double>(M) : 0.0;
          double sq = 0;
          for (int64_t n = 0; n < N; ++n) sq += sq_dev_sum(px + (n * C + c) * L, L, mu);
          var = M ? sq / static_cast<double>(M) : 0.0;
          if (rm) rm[c] = convert<T>((1 - p.momentum) * value_or(rm, c, 0) + p.momentum * mu);
          // torch updates the running variance with the unbiased estimate (the op checks M > 1).
          if (rv && M > 1)
            rv[c] = convert<T>((1 - p.momentum) * value_or(rv, c, 0) +
                               p.momentum * sq / static_cast<double>(M - 1));
        } else {
          mu = value_or(rm, c, 0);
          var = value_or(rv, c, 1);
        }
        const double r = 1.0 / std::sqrt(var + p.eps);
        pm[c] = static_cast<S>(mu);
        pr[c] = static_cast<S>(r);
        const double scale = r * value_or(pw, c, 1), shift = value_or(pb, c, 0);
        for (int64_t n = 0; n < N; ++n) affine_row(px + (n * C + c) * L, po + (n * C + c) * L, L, mu, scale, shift);
      }
    });
  });
}

// Training: grad_x = w * rstd * (gy - mean(gy) - xhat * mean(gy * xhat)); eval: the statistics
// are constants, so grad_x = gy * w * rstd. grad_weight = sum(gy * xhat), grad_bias = sum(gy).
void batch_norm_backward_cpu(const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Tensor& mean,
                             const Tensor& rstd, const NormParams& p, Tensor& grad_x, Tensor& grad_weight,
                             Tensor& grad_bias) {
  const int64_t N = x.size(0), C = x.size(1), L = x.size(2), M = N * L;
  visit_floating(x.dtype(), "batch_norm_backward", [&]<class T>() {
    using S = stat_t<T>;
    using CT = compute_t<T>;
    const T *px = static_cast<const T*>(x.data_ptr()), *pg = static_cast<const T*>(grad_out.data_ptr());
    const T* pw = ptr_or_null<T>(weight);
    const S *pm = static_cast<const S*>(mean.data_ptr()), *pr = static_cast<const S*>(rstd.data_ptr());
    T *gx = mut_or_null<T>(grad_x), *gw = mut_or_null<T>(grad_weight), *gb = mut_or_null<T>(grad_bias);
    parallel_for(C, grain_for(M), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const double mu = static_cast<double>(pm[c]), r = static_cast<double>(pr[c]);
        double sum_gy = 0, sum_gy_xc = 0;  // sum(gy), sum(gy * (x - mean))
        for (int64_t n = 0; n < N; ++n) {
          const T *g = pg + (n * C + c) * L, *xv = px + (n * C + c) * L;
          double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
          for (int64_t l = 0; l < L; ++l) {
            const double gv = static_cast<double>(static_cast<CT>(g[l]));
            a += gv;
            b += gv * (static_cast<double>(static_cast<CT>(xv[l])) - mu);
          }
          sum_gy += a;
          sum_gy_xc += b;
        }
        if (gb) gb[c] = convert<T>(sum_gy);
        if (gw) gw[c] = convert<T>(sum_gy_xc * r);
        if (!gx) continue;
        const double w = value_or(pw, c, 1), k = w * r;
        // grad_x = k * gy - k * mean(gy) - k * r^2 * (x - mu) * mean(gy * (x - mu)), as a*gy + b*(x-mu) + d
        const double inv_m = M ? 1.0 / static_cast<double>(M) : 0.0;
        const double bx = p.training ? -k * r * r * sum_gy_xc * inv_m : 0.0;
        const double d = p.training ? -k * sum_gy * inv_m : 0.0;
        const CT ka = static_cast<CT>(k), kb = static_cast<CT>(bx), kd = static_cast<CT>(d);
        const SplitMean<CT> m(mu);
        for (int64_t n = 0; n < N; ++n) {
          const T *g = pg + (n * C + c) * L, *xv = px + (n * C + c) * L;
          T* out = gx + (n * C + c) * L;
#pragma omp simd
          for (int64_t l = 0; l < L; ++l)
            out[l] = convert<T>(ka * static_cast<CT>(g[l]) + kb * m.centre(static_cast<CT>(xv[l])) + kd);
        }
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// layer_norm and rms_norm: x (R,D), statistics per row, weight and bias per column.

// Note [16-bit rows in norms]: layer_norm and rms_norm take an f16/bf16 row into a per-thread
// float buffer a register at a time (lanes16.h), run the f32 code on it, and round the result back
// the same way, with weight and bias converted once. Each element gets the float value and the one
// rounding the element-wise loops gave it; only the conversions move out of the loops.
float* thread_floats(int slot, int64_t n) {  // slot: buffers in use at once stay apart
  thread_local std::vector<float> bufs[2];
  std::vector<float>& b = bufs[slot];
  if (b.size() < static_cast<size_t>(n)) b.resize(static_cast<size_t>(n));
  return b.data();
}

// t's n elements as the compute type: t's own memory, or for 16-bit T floats kept in `held`.
template <class T>
const compute_t<T>* compute_values(const Tensor& t, std::vector<float>& held) {
  if constexpr (lanes::kIs16<T>) {
    if (!t.defined()) return nullptr;
    held.resize(static_cast<size_t>(t.numel()));
    lanes::to_f32(static_cast<const T*>(t.data_ptr()), held.data(), t.numel());
    return held.data();
  } else {
    return ptr_or_null<T>(t);
  }
}

// Row r of a (R,D) T tensor as the compute type: in place, or converted into thread_floats(slot).
template <class T>
const compute_t<T>* row_values(const T* p, int64_t r, int64_t D, int slot) {
  if constexpr (lanes::kIs16<T>) {
    float* buf = thread_floats(slot, D);
    lanes::to_f32(p + r * D, buf, D);
    return buf;
  } else {
    return p + r * D;
  }
}

template <bool kRms>
void row_norm_cpu(const Tensor& x, const Tensor& weight, const Tensor& bias, const NormParams& p, Tensor& out,
                  Tensor& mean, Tensor& rstd, const char* op) {
  const int64_t R = x.size(0), D = x.size(1);
  visit_floating(x.dtype(), op, [&]<class T>() {
    using S = stat_t<T>;
    using CT = compute_t<T>;
    std::vector<float> w16, b16;
    const CT *pw = compute_values<T>(weight, w16), *pb = compute_values<T>(bias, b16);
    const T* px = static_cast<const T*>(x.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    S* pm = kRms ? nullptr : static_cast<S*>(mean.data_ptr());
    S* pr = static_cast<S*>(rstd.data_ptr());
    parallel_for(R, grain_for(D), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const CT* xr = row_values(px, r, D, 0);
        CT* yr = lanes::kIs16<T> ? const_cast<CT*>(xr) : reinterpret_cast<CT*>(po + r * D);  // in place for 16-bit
        const double mu = kRms || D == 0 ? 0.0 : sum_of(xr, D) / static_cast<double>(D);
        const double var = D ? sq_dev_sum(xr, D, mu) / static_cast<double>(D) : 0.0;  // mean(x^2) for rms
        const double rs = 1.0 / std::sqrt(var + p.eps);
        if (pm) pm[r] = static_cast<S>(mu);
        pr[r] = static_cast<S>(rs);
        if (!pw && !pb) {
          affine_row(xr, yr, D, mu, rs, 0.0);
        } else {
          const SplitMean<CT> m(mu);
          const CT s = static_cast<CT>(rs);
#pragma omp simd
          for (int64_t j = 0; j < D; ++j) {
            const CT xhat = m.centre(xr[j]) * s;
            yr[j] = xhat * (pw ? pw[j] : CT(1)) + (pb ? pb[j] : CT(0));
          }
        }
        if constexpr (lanes::kIs16<T>) lanes::from_f32(yr, po + r * D, D);
      }
    });
  });
}

// grad_x = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = gy * w (rms_norm drops mean(g)
// and its mean is 0); grad_weight = sum over rows of gy * xhat, grad_bias = sum of gy.
template <bool kRms>
void row_norm_backward_cpu(const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Tensor& mean,
                           const Tensor& rstd, Tensor& grad_x, Tensor& grad_weight, Tensor& grad_bias, const char* op) {
  const int64_t R = x.size(0), D = x.size(1);
  visit_floating(x.dtype(), op, [&]<class T>() {
    using S = stat_t<T>;
    using CT = compute_t<T>;
    const T *px = static_cast<const T*>(x.data_ptr()), *pg = static_cast<const T*>(grad_out.data_ptr());
    std::vector<float> w16;
    const CT* pw = compute_values<T>(weight, w16);
    const S* pm = kRms ? nullptr : static_cast<const S*>(mean.data_ptr());
    const S* pr = static_cast<const S*>(rstd.data_ptr());
    auto mean_of = [&](int64_t r) { return pm ? static_cast<double>(pm[r]) : 0.0; };
    if (T* gx = mut_or_null<T>(grad_x)) {
      parallel_for(R, grain_for(D), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const CT *xr = row_values(px, r, D, 0), *gr = row_values(pg, r, D, 1);
          const double mu = mean_of(r), rs = static_cast<double>(pr[r]);
          double sum_g = 0, sum_g_xc = 0;  // sum(g), sum(g * (x - mu))
#pragma omp simd reduction(+ : sum_g, sum_g_xc)
          for (int64_t j = 0; j < D; ++j) {
            const double g = static_cast<double>(gr[j]) * value_or(pw, j, 1);
            sum_g += g;
            sum_g_xc += g * (static_cast<double>(xr[j]) - mu);
          }
          const double inv_d = D ? 1.0 / static_cast<double>(D) : 0.0;
          const CT a = static_cast<CT>(rs), bx = static_cast<CT>(-rs * rs * rs * sum_g_xc * inv_d);
          const CT d = static_cast<CT>(kRms ? 0.0 : -rs * sum_g * inv_d);
          const SplitMean<CT> m(mu);
          CT* out = lanes::kIs16<T> ? const_cast<CT*>(gr) : reinterpret_cast<CT*>(gx + r * D);  // in place for 16-bit
#pragma omp simd
          for (int64_t j = 0; j < D; ++j) {
            const CT g = gr[j] * (pw ? pw[j] : CT(1));
            out[j] = a * g + bx * m.centre(xr[j]) + d;
          }
          if constexpr (lanes::kIs16<T>) lanes::from_f32(out, gx + r * D, D);
        }
      });
    }
    T *gw = mut_or_null<T>(grad_weight), *gb = mut_or_null<T>(grad_bias);
    if (!gw && !gb) return;
    // Column blocks in parallel, each summing over all rows, so no two threads share a sum.
    constexpr int64_t kBlock = 64;
    parallel_for((D + kBlock - 1) / kBlock, std::max<int64_t>(1, grain_for(R * kBlock)), [&](int64_t b0, int64_t b1) {
      double acc_w[kBlock], acc_b[kBlock];
      CT xs[kBlock], gs[kBlock];  // one row's block as the compute type
      for (int64_t blk = b0; blk < b1; ++blk) {
        const int64_t j0 = blk * kBlock, w = std::min(kBlock, D - j0);
        std::fill(acc_w, acc_w + kBlock, 0.0);
        std::fill(acc_b, acc_b + kBlock, 0.0);
        for (int64_t r = 0; r < R; ++r) {
          const T *xr = px + r * D + j0, *gr = pg + r * D + j0;
          if constexpr (lanes::kIs16<T>) {
            lanes::to_f32(xr, xs, w);
            lanes::to_f32(gr, gs, w);
          } else {
            std::copy(xr, xr + w, xs);
            std::copy(gr, gr + w, gs);
          }
          const double mu = mean_of(r), rs = static_cast<double>(pr[r]);
          for (int64_t j = 0; j < w; ++j) {
            const double g = static_cast<double>(gs[j]);
            acc_w[j] += g * (static_cast<double>(xs[j]) - mu) * rs;
            acc_b[j] += g;
          }
        }
        for (int64_t j = 0; j < w; ++j) {
          if (gw) gw[j0 + j] = convert<T>(acc_w[j]);
          if (gb) gb[j0 + j] = convert<T>(acc_b[j]);
        }
      }
    });
  });
}

void layer_norm_cpu(const Tensor& x, const Tensor& w, const Tensor& b, const NormParams& p, Tensor& out, Tensor& mean,
                    Tensor& rstd) {
  row_norm_cpu<false>(x, w, b, p, out, mean, rstd, "layer_norm");
}
void rms_norm_cpu(const Tensor& x, const Tensor& w, const Tensor& b, const NormParams& p, Tensor& out, Tensor& mean,
                  Tensor& rstd) {
  row_norm_cpu<true>(x, w, b, p, out, mean, rstd, "rms_norm");
}
void layer_norm_backward_cpu(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                             const NormParams&, Tensor& gx, Tensor& gw, Tensor& gb) {
  row_norm_backward_cpu<false>(gy, x, w, mean, rstd, gx, gw, gb, "layer_norm_backward");
}
void rms_norm_backward_cpu(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                           const NormParams&, Tensor& gx, Tensor& gw, Tensor& gb) {
  row_norm_backward_cpu<true>(gy, x, w, mean, rstd, gx, gw, gb, "rms_norm_backward");
}

// ---------------------------------------------------------------------------------------------
// group_norm: x (N,C,L); statistics per (sample, group) over the group's C/G channels times L;
// weight and bias per channel.

void group_norm_cpu(const Tensor& x, const Tensor& weight, const Tensor& bias, const NormParams& p, Tensor& out,
                    Tensor& mean, Tensor& rstd) {
  const int64_t N = x.size(0), C = x.size(1), L = x.size(2), G = p.groups, Cg = C / G, M = Cg * L;
  visit_floating(x.dtype(), "group_norm", [&]<class T>() {
    using S = stat_t<T>;
    const T *px = static_cast<const T*>(x.data_ptr()), *pw = ptr_or_null<T>(weight), *pb = ptr_or_null<T>(bias);
    T* po = static_cast<T*>(out.data_ptr());
    S *pm = static_cast<S*>(mean.data_ptr()), *pr = static_cast<S*>(rstd.data_ptr());
    parallel_for(N * G, grain_for(M), [&](int64_t g0, int64_t g1) {
      for (int64_t ng = g0; ng < g1; ++ng) {
        const T* xg = px + ng * M;  // a group's channels are adjacent in (N,C,L)
        const double mu = M ? sum_of(xg, M) / static_cast<double>(M) : 0.0;
        const double rs = 1.0 / std::sqrt((M ? sq_dev_sum(xg, M, mu) / static_cast<double>(M) : 0.0) + p.eps);
        pm[ng] = static_cast<S>(mu);
        pr[ng] = static_cast<S>(rs);
        for (int64_t ci = 0; ci < Cg; ++ci) {
          const int64_t c = (ng % G) * Cg + ci;
          const double scale = rs * value_or(pw, c, 1), shift = value_or(pb, c, 0);
          affine_row(xg + ci * L, po + ng * M + ci * L, L, mu, scale, shift);
        }
      }
    });
  });
}

// With g = gy * w[c] and per-channel sums ds[c] = sum_l gy*x, db[c] = sum_l gy (over one sample):
// grad_x = rstd * (g - mean(g) - xhat * mean(g * xhat)), both means over the group;
// grad_weight[c] = sum_n rstd * (ds - mean * db), grad_bias[c] = sum_n db.
void group_norm_backward_cpu(const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Tensor& mean,
                             const Tensor& rstd, const NormParams& p, Tensor& grad_x, Tensor& grad_weight,
                             Tensor& grad_bias) {
  const int64_t N = x.size(0), C = x.size(1), L = x.size(2), G = p.groups, Cg = C / G, M = Cg * L;
  visit_floating(x.dtype(), "group_norm_backward", [&]<class T>() {
    using S = stat_t<T>;
    using CT = compute_t<T>;
    const T *px = static_cast<const T*>(x.data_ptr()), *pg = static_cast<const T*>(grad_out.data_ptr());
    const T* pw = ptr_or_null<T>(weight);
    const S *pm = static_cast<const S*>(mean.data_ptr()), *pr = static_cast<const S*>(rstd.data_ptr());
    T* gx = mut_or_null<T>(grad_x);
    std::vector<double> ds(static_cast<size_t>(N * C)), db(static_cast<size_t>(N * C));
    parallel_for(N * G, grain_for(M), [&](int64_t g0, int64_t g1) {
      for (int64_t ng = g0; ng < g1; ++ng) {
        const int64_t n = ng / G, c_first = (ng % G) * Cg;
        const double mu = static_cast<double>(pm[ng]), rs = static_cast<double>(pr[ng]);
        double sum_g = 0, sum_g_x = 0;  // over the group: sum(w*gy), sum(w*gy*x)
        for (int64_t ci = 0; ci < Cg; ++ci) {
          const T *g = pg + ng * M + ci * L, *xv = px + ng * M + ci * L;
          double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
          for (int64_t l = 0; l < L; ++l) {
            const double gv = static_cast<double>(static_cast<CT>(g[l]));
            a += gv;
            b += gv * static_cast<double>(static_cast<CT>(xv[l]));
          }
          const size_t at = static_cast<size_t>(n * C + c_first + ci);
          db[at] = a;
          ds[at] = b;
          const double w = value_or(pw, c_first + ci, 1);
          sum_g += w * a;
          sum_g_x += w * b;
        }
        if (!gx) continue;
        const double inv_m = M ? 1.0 / static_cast<double>(M) : 0.0;
        const double mean_g = sum_g * inv_m, mean_g_xc = (sum_g_x - mu * sum_g) * inv_m;
        // grad_x = rs*w*gy + bx*(x-mu) + d with bx = -rs^3 * mean(g*(x-mu)), d = -rs*mean(g)
        const double bx = -rs * rs * rs * mean_g_xc, d = -rs * mean_g;
        const SplitMean<CT> m(mu);
        for (int64_t ci = 0; ci < Cg; ++ci) {
          const CT a = static_cast<CT>(rs * value_or(pw, c_first + ci, 1)), kb = static_cast<CT>(bx),
                   kd = static_cast<CT>(d);
          const T *g = pg + ng * M + ci * L, *xv = px + ng * M + ci * L;
          T* out = gx + ng * M + ci * L;
#pragma omp simd
          for (int64_t l = 0; l < L; ++l) out[l] = convert<T>(a * static_cast<CT>(g[l]) + kb * m.centre(static_cast<CT>(xv[l])) + kd);
        }
      }
    });
    T *gw = mut_or_null<T>(grad_weight), *gb = mut_or_null<T>(grad_bias);
    for (int64_t c = 0; c < C && (gw || gb); ++c) {
      double acc_w = 0, acc_b = 0;
      for (int64_t n = 0; n < N; ++n) {
        const int64_t ng = n * G + c / Cg;
        const size_t at = static_cast<size_t>(n * C + c);
        acc_w += static_cast<double>(pr[ng]) * (ds[at] - static_cast<double>(pm[ng]) * db[at]);
        acc_b += db[at];
      }
      if (gw) gw[c] = convert<T>(acc_w);
      if (gb) gb[c] = convert<T>(acc_b);
    }
  });
}

}  // namespace

KILN_REGISTER_KERNEL(Op::batch_norm, DeviceType::cpu, batch_norm_cpu);
KILN_REGISTER_KERNEL(Op::batch_norm_backward, DeviceType::cpu, batch_norm_backward_cpu);
KILN_REGISTER_KERNEL(Op::layer_norm, DeviceType::cpu, layer_norm_cpu);
KILN_REGISTER_KERNEL(Op::layer_norm_backward, DeviceType::cpu, layer_norm_backward_cpu);
KILN_REGISTER_KERNEL(Op::rms_norm, DeviceType::cpu, rms_norm_cpu);
KILN_REGISTER_KERNEL(Op::rms_norm_backward, DeviceType::cpu, rms_norm_backward_cpu);
KILN_REGISTER_KERNEL(Op::group_norm, DeviceType::cpu, group_norm_cpu);
KILN_REGISTER_KERNEL(Op::group_norm_backward, DeviceType::cpu, group_norm_backward_cpu);

}  // namespace kiln::cpu
