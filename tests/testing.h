// Test helpers shared by the test files: reading tensors back as f64, naive index arithmetic,
// random and non-contiguous inputs, tolerance checks and error-message checks.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <kiln/kiln.h>

namespace kiln::testing {

// Where oneDNN has no bf16 kernels, so Kiln's own fallback runs: below the avx512 CPU level (a CPU
// without AVX-512, or this suite's run capped at avx2: Note [Tests at every CPU level]).
inline bool onednn_lacks_bf16() { return cpu_capability() < CpuCapability::avx512; }

inline constexpr double kInf = std::numeric_limits<double>::infinity();
inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

inline const std::vector<DType> kAllDTypes = {DType::f32, DType::f64, DType::f16, DType::bf16,
                                              DType::i64, DType::i32, DType::u8, DType::boolean};
inline const std::vector<DType> kFloatDTypes = {DType::f32, DType::f64, DType::f16, DType::bf16};

// Element i (in row-major order of the logical shape) of t, as double. Reads through strides, so it
// works on any view; it uses no Kiln kernel (an independent reference path).
inline double at(const Tensor& t, int64_t flat) {
  int64_t off = 0;
  for (int d = t.dim() - 1; d >= 0; --d) {
    off += (flat % t.shape()[d]) * t.strides()[d];
    flat /= t.shape()[d];
  }
  const char* p = static_cast<const char*>(t.data_ptr()) + off * static_cast<int64_t>(t.element_size());
  return visit_dtype(t.dtype(), [&]<class T>() { return static_cast<double>(static_cast<compute_t<T>>(*reinterpret_cast<const T*>(p))); });
}

inline std::vector<double> values(const Tensor& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) v[static_cast<size_t>(i)] = at(t, i);
  return v;
}

// Multi-index of flat position i in shape.
inline std::vector<int64_t> unravel(int64_t flat, const Dims& shape) {
  std::vector<int64_t> idx(static_cast<size_t>(shape.size()));
  for (int d = shape.size() - 1; d >= 0; --d) {
    idx[static_cast<size_t>(d)] = flat % shape[d];
    flat /= shape[d];
  }
  return idx;
}
inline int64_t ravel(const std::vector<int64_t>& idx, const Dims& shape) {
  int64_t flat = 0;
  for (int d = 0; d < shape.size(); ++d) flat = flat * shape[d] + idx[static_cast<size_t>(d)];
  return flat;
}

// Values drawn uniformly from [lo, hi) (integers for integer dtypes, 0/1 for bool), in dtype.
inline Tensor random_tensor(const Dims& shape, DType dtype, double lo = -2.0, double hi = 2.0, uint64_t seed = 1) {
  Generator gen(seed);
  if (dtype == DType::boolean) return bernoulli(shape, 0.5, {.dtype = DType::f32}, &gen).to(DType::boolean);
  if (!is_floating(dtype)) return randint(static_cast<int64_t>(lo), static_cast<int64_t>(hi), shape, {.dtype = dtype}, &gen);
  Tensor t = empty(shape, {.dtype = DType::f64});
  uniform_(t, lo, hi, &gen);
  return t.to(dtype);
}

// The same values as t, in a non-contiguous layout: every other element of a buffer twice as big
// along the last dim, seen transposed twice.
inline Tensor noncontiguous(const Tensor& t) {
  if (t.dim() == 0) return t;
  Dims big = t.shape();
  big[big.size() - 1] *= 2;
  Tensor buf = zeros(big, {.dtype = t.dtype()});
  Tensor view = buf.slice(-1, 0, big.back(), 2);
  view.copy_(t);
  EXPECT_TRUE(view.numel() <= 1 || !view.is_contiguous() || t.shape().back() <= 1);
  return view;
}

// Relative tolerance that dtype can be held to against an f64 reference.
inline double tolerance(DType t) {
  switch (t) {
    case DType::f16: return 2e-3;
    case DType::bf16: return 1.6e-2;
    case DType::f32: return 2e-6;
    default: return 1e-12;
  }
}

// Expects |got - want| <= atol + rtol * |want| elementwise (NaNs must match NaNs, infinities exactly).
inline void expect_close(const Tensor& got, const std::vector<double>& want, double rtol, double atol,
                         const std::string& what = "") {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size())) << what;
  int reported = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = at(got, i), w = want[static_cast<size_t>(i)];
    const bool ok = (std::isnan(w) && std::isnan(g)) || g == w ||
                    (std::isfinite(w) && std::abs(g - w) <= atol + rtol * std::abs(w));
    if (!ok && reported++ < 5) ADD_FAILURE() << what << ": element " << i << " is " << g << ", expected " << w;
  }
}

// Expects fn to throw kiln::Error whose message contains every fragment.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected a kiln::Error containing '" << (fragments.empty() ? "" : fragments[0]) << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "message: " << msg << "\nmissing: " << f;
  }
}

}  // namespace kiln::testing
