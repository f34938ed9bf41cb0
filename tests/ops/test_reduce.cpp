// Reductions against an f64 reference: every element is read through testing::at and grouped by its
// output index, then each group is reduced naively. Generic tests loop over one table of op cases
// (dtypes, dims lists, keepdim, layouts, empty and 0-d inputs, sizes past the threading threshold,
// f64 gradcheck of every entry with a floating output); the tests after it cover accuracy, NaN,
// ties, torch's edge values, the derivatives' conventions at ties and zeros, and the error messages.
#include <cmath>
#include <functional>
#include <limits>

#include "autograd/gradcheck.h"
#include "nn/nn_fixture.h"
#include "testing.h"

using namespace kiln;
namespace kt = kiln::testing;
using kiln::testing::at;
using kiln::testing::kInf;
using kiln::testing::kNaN;
using kiln::testing::expect_close;
using kiln::testing::expect_error;

namespace {

using Slice = std::vector<double>;

// ---- f64 references over one slice, in the input's row-major order
double ref_sum(const Slice& s) {
  double a = 0;
  for (double v : s) a += v;
  return a;
}
double ref_prod(const Slice& s) {
  double a = 1;
  for (double v : s) a *= v;
  return a;
}
double ref_max(const Slice& s) {
  double a = -kInf;
  for (double v : s) a = (std::isnan(v) || v > a) ? v : a;
  return a;
}
double ref_min(const Slice& s) {
  double a = kInf;
  for (double v : s) a = (std::isnan(v) || v < a) ? v : a;
  return a;
}
double ref_var(const Slice& s, int64_t correction) {
  const double n = static_cast<double>(s.size()), mean = ref_sum(s) / n;
  double m2 = 0;
  for (double v : s) m2 += (v - mean) * (v - mean);
  return m2 / std::max(n - static_cast<double>(correction), 0.0);
}
double ref_norm(const Slice& s, double p) {
  if (std::isinf(p)) {
    Slice a;
    for (double v : s) a.push_back(std::abs(v));
    return p > 0 ? ref_max(a) : ref_min(a);
  }
  double a = 0;
  for (double v : s) a += p == 0 ? (v != 0) : std::pow(std::abs(v), p);
  return p == 0 ? a : std::pow(a, 1 / p);
}
double ref_logsumexp(const Slice& s) {
  const double m = ref_max(s), shift = std::isinf(m) ? 0 : m;
  double a = 0;
  for (double v : s) a += std::exp(v - shift);
  return std::log(a) + shift;
}
double ref_all(const Slice& s) { return std::all_of(s.begin(), s.end(), [](double v) { return v != 0; }); }
double ref_any(const Slice& s) { return std::any_of(s.begin(), s.end(), [](double v) { return v != 0; }); }

DType same(DType t) { return t; }
DType widened(DType t) { return is_floating(t) ? t : DType::i64; }

// One reduction: its kiln call, f64 reference, supported dtypes and output dtype. Gradcheck runs on
// every entry with a floating output, on inputs kept away from the kinks: continuous values (no ties
// for amax, amin, norm(inf)) with |x| >= 0.1 (norm's |x|^(p-1) at 0).
struct OpCase {
  std::string name;
  std::function<Tensor(const Tensor&, const Dims&, bool)> call;
  std::function<double(const Slice&)> ref;
  std::vector<DType> dtypes;
  DType (*out_dtype)(DType) = same;
  bool needs_nonempty = false;  // no identity: a zero-size reduced dim is an error (tested below)
};

const std::vector<DType> kAll = kt::kAllDTypes;
const std::vector<DType> kFloat = kt::kFloatDTypes;

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> cases = {
      {"sum", [](const Tensor& x, const Dims& d, bool k) { return sum(x, d, k); }, ref_sum, kAll, widened},
      {"sum(dtype=f64)", [](const Tensor& x, const Dims& d, bool k) { return sum(x, d, k, DType::f64); }, ref_sum, kAll,
       [](DType) { return DType::f64; }},
      {"mean", [](const Tensor& x, const Dims& d, bool k) { return x.mean(d, k); },
       [](const Slice& s) { return ref_sum(s) / static_cast<double>(s.size()); }, kFloat},
      {"prod", [](const Tensor& x, const Dims& d, bool k) { return x.prod(d, k); }, ref_prod, kAll, widened},
      {"amax", [](const Tensor& x, const Dims& d, bool k) { return x.amax(d, k); }, ref_max, kAll, same, true},
      {"amin", [](const Tensor& x, const Dims& d, bool k) { return x.amin(d, k); }, ref_min, kAll, same, true},
      {"var", [](const Tensor& x, const Dims& d, bool k) { return x.var(d, 1, k); },
       [](const Slice& s) { return ref_var(s, 1); }, kFloat},
      {"var(correction=0)", [](const Tensor& x, const Dims& d, bool k) { return var(x, d, 0, k); },
       [](const Slice& s) { return ref_var(s, 0); }, kFloat},
      {"std", [](const Tensor& x, const Dims& d, bool k) { return x.std(d, 1, k); },
       [](const Slice& s) { return std::sqrt(ref_var(s, 1)); }, kFloat},
      {"norm(p=2)", [](const Tensor& x, const Dims& d, bool k) { return x.norm(2, d, k); },
       [](const Slice& s) { return ref_norm(s, 2); }, kFloat},
      {"norm(p=1)", [](const Tensor& x, const Dims& d, bool k) { return norm(x, 1, d, k); },
       [](const Slice& s) { return ref_norm(s, 1); }, kFloat},
      {"norm(p=0)", [](const Tensor& x, const Dims& d, bool k) { return norm(x, 0, d, k); },
       [](const Slice& s) { return ref_norm(s, 0); }, kFloat},
      {"norm(p=3)", [](const Tensor& x, const Dims& d, bool k) { return norm(x, 3, d, k); },
       [](const Slice& s) { return ref_norm(s, 3); }, kFloat},
      {"norm(p=0.5)", [](const Tensor& x, const Dims& d, bool k) { return norm(x, 0.5, d, k); },
       [](const Slice& s) { return ref_norm(s, 0.5); }, kFloat},
      {"norm(p=inf)", [](const Tensor& x, const Dims& d, bool k) { return norm(x, kInf, d, k); },
       [](const Slice& s) { return ref_norm(s, kInf); }, kFloat, same, true},
      {"norm(p=-inf)", [](const Tensor& x, const Dims& d, bool k) { return norm(x, -kInf, d, k); },
       [](const Slice& s) { return ref_norm(s, -kInf); }, kFloat, same, true},
      {"logsumexp", [](const Tensor& x, const Dims& d, bool k) { return x.logsumexp(d, k); }, ref_logsumexp, kFloat},
      {"all", [](const Tensor& x, const Dims& d, bool k) { return x.all(d, k); }, ref_all, kAll,
       [](DType) { return DType::boolean; }},
      {"any", [](const Tensor& x, const Dims& d, bool k) { return x.any(d, k); }, ref_any, kAll,
       [](DType) { return DType::boolean; }},
  };
  return cases;
}

struct Sample {
  Dims shape;
  Dims dims;
};

const std::vector<Sample> kSmall = {
    {{2, 3, 4}, {}},        {{2, 3, 4}, {0}},        {{2, 3, 4}, {1}},    {{2, 3, 4}, {2}},
    {{2, 3, 4}, {-1}},      {{2, 3, 4}, {0, 2}},     {{2, 3, 4}, {-1, 0}}, {{2, 3, 4}, {1, 2}},
    {{2, 3, 4}, {0, 1}},    {{2, 3, 4}, {0, 1, 2}},  {{5}, {}},           {{5}, {0}},
    {{}, {}},               {{}, {0}},               {{}, {-1}},          {{3, 1, 4}, {1}},
    {{3, 1, 4}, {0, 1}},    {{4, 1}, {0}},           {{1, 6}, {1}},       {{2, 3, 2, 3}, {1, 3}},
    {{2, 3, 2, 3}, {0, 2, 3}}, {{0, 3}, {0}},        {{0, 3}, {1}},       {{0, 3}, {}},
    {{2, 0, 3}, {1}},       {{2, 0, 3}, {0, 2}},     {{40, 37}, {1}},     {{3, 45}, {-1}},
};
// Past the threading threshold, and past one piece of a row or of a column (kernels/cpu/reduce.cpp).
const std::vector<Sample> kLarge = {
    {{300, 257}, {}}, {{300, 257}, {0}}, {{300, 257}, {1}},   {{2, 70000}, {1}},
    {{70000, 3}, {0}}, {{20, 600, 7}, {1}}, {{9, 300, 40}, {0, 2}},
};

enum class Layout { contiguous, noncontiguous, transposed, expanded };

// The input in the requested memory layout, or an undefined tensor when the layout does not apply.
// Values in [-2, 3) ([0, 3) for uint8): small enough that integer products never wrap.
Tensor random(const Dims& shape, DType dtype, uint64_t seed) {
  return kt::random_tensor(shape, dtype, dtype == DType::u8 ? 0 : -2, 3, seed);
}

Tensor make_input(const Sample& s, DType dtype, Layout layout, uint64_t seed) {
  const int r = s.shape.size();
  switch (layout) {
    case Layout::contiguous: return random(s.shape, dtype, seed);
    case Layout::noncontiguous: return kt::noncontiguous(random(s.shape, dtype, seed));
    case Layout::transposed: {
      if (r < 2) return {};
      Dims t = s.shape;
      std::swap(t[0], t[r - 1]);
      return random(t, dtype, seed).transpose(0, -1);
    }
    case Layout::expanded: {
      if (r < 1 || s.shape[0] == 0) return {};
      Dims one = s.shape;
      one[0] = 1;
      return random(one, dtype, seed).expand(s.shape);
    }
  }
  return {};
}

// Bit d set when dim d is reduced, computed independently of the library.
uint32_t mask_of(const Dims& dims, int rank) {
  if (dims.empty()) return (1u << rank) - 1u;
  uint32_t m = 0;
  for (int64_t d : dims) m |= rank == 0 ? 0u : 1u << (d < 0 ? d + rank : d);
  return m;
}

// The output shapes and the input's values grouped by output index (in keepdim row-major order).
struct Grouped {
  Dims keep_shape, squeezed_shape;
  std::vector<Slice> slices;
  const Dims& out_shape(bool keepdim) const { return keepdim ? keep_shape : squeezed_shape; }
};
Grouped group(const Tensor& x, const std::vector<double>& xv, const Dims& dims) {
  const uint32_t mask = mask_of(dims, x.dim());
  Grouped g;
  g.keep_shape = x.shape();
  for (int d = 0; d < x.dim(); ++d) {
    if (mask >> d & 1u) g.keep_shape[d] = 1;
    else g.squeezed_shape.push_back(x.size(d));
  }
  g.slices.resize(static_cast<size_t>(checked_numel(g.keep_shape, "test")));
  // Walk x's multi-index like an odometer; a reduced dim adds nothing to the output index.
  const Dims out_strides = contiguous_strides(g.keep_shape);
  std::vector<int64_t> idx(static_cast<size_t>(x.dim()), 0);
  int64_t out = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    g.slices[static_cast<size_t>(out)].push_back(xv[static_cast<size_t>(i)]);
    for (int d = x.dim() - 1; d >= 0; --d) {
      const int64_t step = (mask >> d & 1u) ? 0 : out_strides[d];
      if (++idx[static_cast<size_t>(d)] < x.size(d)) { out += step; break; }
      out -= step * (x.size(d) - 1);
      idx[static_cast<size_t>(d)] = 0;
    }
  }
  return g;
}

bool reduces_zero_size(const Sample& s) {
  const uint32_t mask = mask_of(s.dims, s.shape.size());
  for (int d = 0; d < s.shape.size(); ++d)
    if ((mask >> d & 1u) && s.shape[d] == 0) return true;
  return false;
}

// The reference value as the output dtype holds it (a product may overflow f16, as the kernel's does).
double round_to(double v, DType t) {
  if (!is_floating(t) || t == DType::f64 || std::isnan(v)) return v;
  const double big = std::numeric_limits<float>::max();
  const float f = v > big ? std::numeric_limits<float>::infinity() : v < -big ? -std::numeric_limits<float>::infinity()
                                                                              : static_cast<float>(v);
  if (t == DType::f16) return static_cast<float>(Half(f));
  if (t == DType::bf16) return static_cast<float>(BFloat16(f));
  return f;
}

// Checks every op of the table that supports x's dtype on x, with and without keepdim.
void check_ops(const Sample& s, const Tensor& x, const std::string& where, std::vector<bool> keepdims = {false, true}) {
  const std::vector<double> xv = kt::values(x);
  const Grouped g = group(x, xv, s.dims);
  for (const OpCase& c : op_cases()) {
    if (std::find(c.dtypes.begin(), c.dtypes.end(), x.dtype()) == c.dtypes.end()) continue;
    if (c.needs_nonempty && reduces_zero_size(s)) continue;
    for (bool keepdim : keepdims) {
      const std::string what = c.name + " " + where + (keepdim ? " keepdim" : "");
      const Tensor y = c.call(x, s.dims, keepdim);
      ASSERT_EQ(y.shape(), g.out_shape(keepdim)) << what;
      ASSERT_EQ(y.dtype(), c.out_dtype(x.dtype())) << what;
      std::vector<double> want;
      for (const Slice& sl : g.slices) want.push_back(round_to(c.ref(sl), y.dtype()));
      const double tol = kt::tolerance(y.dtype());
      expect_close(y, want, tol, tol, what);
    }
  }
}

std::string describe(const Sample& s, DType t, Layout l) {
  std::ostringstream os;
  os << dtype_name(t) << " " << s.shape << " dims " << s.dims << " layout " << static_cast<int>(l);
  return os.str();
}

}  // namespace

TEST(Reduce, TableOverDtypesDimsAndLayouts) {
  uint64_t seed = 1;
  for (const Sample& s : kSmall)
    for (DType t : kAll)
      for (Layout l : {Layout::contiguous, Layout::noncontiguous, Layout::transposed, Layout::expanded}) {
        const Tensor x = make_input(s, t, l, seed++);
        if (x.defined()) check_ops(s, x, describe(s, t, l));
      }
}

TEST(Reduce, TableOnLargeInputs) {
  uint64_t seed = 100;
  for (const Sample& s : kLarge)
    for (DType t : {DType::f32, DType::i32, DType::bf16})
      for (Layout l : {Layout::contiguous, Layout::transposed})
        if (t == DType::f32 || l == Layout::contiguous)
          check_ops(s, make_input(s, t, l, seed++), describe(s, t, l), {false});
}

// ---- max/min with indices, argmax/argmin: the first index of the extreme; NaN is the extreme.
namespace {
struct Extreme {
  double value;
  int64_t index;
};
Extreme ref_extreme(const Slice& s, bool largest) {
  Extreme e{s[0], 0};
  for (size_t i = 1; i < s.size(); ++i) {
    if (std::isnan(e.value)) break;
    if (std::isnan(s[i]) || (largest ? s[i] > e.value : s[i] < e.value)) e = {s[i], static_cast<int64_t>(i)};
  }
  return e;
}
}  // namespace

TEST(Reduce, MaxMinWithIndices) {
  const std::vector<Sample> samples = {{{2, 3, 4}, {0}},  {{2, 3, 4}, {1}},  {{2, 3, 4}, {-1}}, {{5}, {0}},
                                       {{}, {0}},         {{}, {-1}},        {{7, 1}, {1}},     {{0, 3}, {1}},
                                       {{2, 70000}, {1}}, {{70000, 3}, {0}}, {{300, 257}, {0}}};
  uint64_t seed = 7;
  for (const Sample& s : samples)
    for (DType t : kAll)
      for (Layout l : {Layout::contiguous, Layout::noncontiguous, Layout::transposed, Layout::expanded}) {
        const bool large = checked_numel(s.shape, "test") > 10000;
        if (large && ((t != DType::f32 && t != DType::i32) || l == Layout::noncontiguous || l == Layout::expanded))
          continue;
        // Integers in [-2, 3) and 16-bit floats give many ties, which exercises the first-index rule.
        const Tensor x = make_input(s, t, l, seed++);
        if (!x.defined()) continue;
        const std::vector<double> xv = kt::values(x);
        const Grouped g = group(x, xv, s.dims);
        for (bool largest : {true, false})
          for (bool keepdim : {false, true}) {
            const std::string what =
                std::string(largest ? "max " : "min ") + describe(s, t, l) + (keepdim ? " keepdim" : "");
            const TensorPair r = largest ? max(x, s.dims[0], keepdim) : min(x, s.dims[0], keepdim);
            const Tensor arg = largest ? x.argmax(s.dims[0], keepdim) : x.argmin(s.dims[0], keepdim);
            ASSERT_EQ(r.values.shape(), g.out_shape(keepdim)) << what;
            ASSERT_EQ(r.indices.shape(), g.out_shape(keepdim)) << what;
            ASSERT_EQ(arg.shape(), g.out_shape(keepdim)) << what;
            ASSERT_EQ(r.values.dtype(), t) << what;
            ASSERT_EQ(r.indices.dtype(), DType::i64) << what;
            std::vector<double> values, indices;
            for (const Slice& sl : g.slices) {
              const Extreme e = ref_extreme(sl, largest);
              values.push_back(e.value);
              indices.push_back(static_cast<double>(e.index));
            }
            expect_close(r.values, values, 0, 0, what);
            expect_close(r.indices, indices, 0, 0, what);
            expect_close(arg, indices, 0, 0, what + " arg");
          }
        if (x.numel() == 0) continue;
        // Over all elements: the flat index in row-major order, and max()/min() as values.
        const Extreme hi = ref_extreme(xv, true), lo = ref_extreme(xv, false);
        EXPECT_EQ(x.argmax().item<int64_t>(), hi.index) << describe(s, t, l);
        EXPECT_EQ(x.argmin().item<int64_t>(), lo.index) << describe(s, t, l);
        expect_close(max(x), {hi.value}, 0, 0, "max " + describe(s, t, l));
        expect_close(min(x), {lo.value}, 0, 0, "min " + describe(s, t, l));
        EXPECT_EQ(x.argmax(std::nullopt, true).shape(), Dims::filled(x.dim(), 1));
      }
}

TEST(Reduce, TiesGoToTheFirstIndexAcrossPiecesAndThreads) {
  // Long rows are split into pieces merged in parallel; the earliest maximum must still win.
  Tensor x = zeros({3, 100000});
  for (int64_t row = 0; row < 3; ++row) {
    x.select(0, row).narrow(0, 99000 - row * 40000, 1).fill_(5);
    x.select(0, row).narrow(0, 99990, 1).fill_(5);
  }
  expect_close(x.argmax(1), {99000, 59000, 19000}, 0, 0, "argmax rows");
  expect_close(x.t().contiguous().argmax(0), {99000, 59000, 19000}, 0, 0, "argmax columns");
  expect_close(x.argmin(1), {0, 0, 0}, 0, 0, "argmin rows");
  Tensor ties = tensor({1, 3, 3, 2, 3});
  EXPECT_EQ(ties.argmax().item<int64_t>(), 1);
  EXPECT_EQ(tensor({2, 1, 1, 2}).argmin().item<int64_t>(), 1);
}

TEST(Reduce, NaNPropagates) {
  const Tensor x = tensor({1, kNaN, 7, kNaN, -3}, {.dtype = DType::f32}).view({1, 5});
  for (DType t : kFloat) {
    const Tensor xt = x.to(t);
    for (const Tensor& y : {xt.sum(), xt.mean(), xt.amax(), xt.amin(), xt.var(), xt.norm(), norm(xt, kInf),
                            xt.logsumexp({}), max(xt), min(xt), max(xt, 1).values})
      EXPECT_TRUE(std::isnan(y.item<double>())) << dtype_name(t);
    EXPECT_EQ(max(xt, 1).indices.item<int64_t>(), 1) << "the first NaN's index";
    EXPECT_EQ(xt.argmin(1).item<int64_t>(), 1);
    EXPECT_EQ(xt.argmax().item<int64_t>(), 1);
    EXPECT_TRUE(xt.all().item<bool>());  // NaN is nonzero, as in torch
  }
  // A NaN deep inside a long row and a long column (the piecewise paths).
  Tensor big = zeros({200000});
  big.narrow(0, 150001, 1).fill_(kNaN);
  EXPECT_TRUE(std::isnan(big.amax().item<double>()));
  EXPECT_EQ(big.argmax().item<int64_t>(), 150001);
  EXPECT_EQ(big.view({50000, 4}).argmax(0).select(0, 1).item<int64_t>(), 37500);
}

TEST(Reduce, Logsumexp) {
  const Tensor x = tensor({1000, 1000, -kInf, -kInf, 5, kInf}, {.dtype = DType::f32}).view({3, 2});
  expect_close(x.logsumexp({1}), {1000 + std::log(2.0), -kInf, kInf}, 1e-6, 0, "logsumexp edge values");
  expect_close(tensor({-1000, -1000.5}).logsumexp({0}), {ref_logsumexp({-1000, -1000.5})}, 1e-6, 0, "small");
}

TEST(Reduce, AccurateSumsOfManyValues) {
  const int64_t n = int64_t{1} << 24;
  const Tensor x = full({n}, 0.1f, {.dtype = DType::f32});
  const double want = static_cast<double>(n) * static_cast<double>(0.1f);
  EXPECT_NEAR(x.sum().item<double>(), want, 1e-6 * want);
  EXPECT_NEAR(x.mean().item<double>(), static_cast<double>(0.1f), 1e-7);
  EXPECT_NEAR(x.view({4096, 4096}).sum({0}).select(0, 17).item<double>(), 4096 * static_cast<double>(0.1f),
              1e-9 * 4096);
  const Tensor h = full({1 << 20}, 0.1, {.dtype = DType::f16});
  EXPECT_NEAR(h.mean().item<double>(), static_cast<double>(Half(0.1f)), 1e-3);
}

TEST(Reduce, VarianceOfDataWithLargeMean) {
  Generator gen(3);
  Tensor noise = empty({200000}, {.dtype = DType::f64});
  normal_(noise, 0.0, 0.01, &gen);
  const Tensor x = (noise + 1e4).to(DType::f32);
  const std::vector<double> xv = kt::values(x);
  const double want = ref_var(xv, 1);
  EXPECT_NEAR(x.var().item<double>(), want, 1e-4 * want);
  EXPECT_NEAR(x.std().item<double>(), std::sqrt(want), 1e-4 * std::sqrt(want));
  EXPECT_NEAR(x.view({400, 500}).t().var({1}).select(0, 3).item<double>(),
              ref_var(kt::values(x.view({400, 500}).t().select(0, 3)), 1), 1e-4 * want);
}

TEST(Reduce, EmptyAndZeroDimInputs) {
  const Tensor e = zeros({0, 3});
  expect_close(e.sum({0}), {0, 0, 0}, 0, 0, "sum");
  expect_close(e.prod({0}), {1, 1, 1}, 0, 0, "prod");
  expect_close(e.mean({0}), {kNaN, kNaN, kNaN}, 0, 0, "mean");
  expect_close(e.var({0}), {kNaN, kNaN, kNaN}, 0, 0, "var");
  expect_close(e.norm(2, {0}), {0, 0, 0}, 0, 0, "norm");
  expect_close(e.logsumexp({0}), {-kInf, -kInf, -kInf}, 0, 0, "logsumexp");
  expect_close(e.all({0}), {1, 1, 1}, 0, 0, "all");
  expect_close(e.any({0}), {0, 0, 0}, 0, 0, "any");
  EXPECT_EQ(e.amax({1}).shape(), (Dims{0}));
  EXPECT_EQ(e.sum().shape(), (Dims{}));
  const Tensor s = full({}, 4.0, {.dtype = DType::f32});
  EXPECT_EQ(s.sum({0}).shape(), (Dims{}));
  EXPECT_EQ(s.sum({-1}, true).shape(), (Dims{}));
  EXPECT_EQ(s.amax({0}).item<double>(), 4);
  const TensorPair m = max(s, 0);
  EXPECT_EQ(m.values.shape(), (Dims{}));
  EXPECT_EQ(m.indices.item<int64_t>(), 0);
  EXPECT_EQ(s.argmax().item<int64_t>(), 0);
}

TEST(Reduce, CorrectionAndDtypeRules) {
  const Tensor two = tensor({1, 2});
  EXPECT_EQ(two.var({}, 2).item<double>(), kInf);  // n - correction == 0, numerator > 0
  EXPECT_EQ(two.var({}, 3).item<double>(), kInf);
  EXPECT_TRUE(std::isnan(tensor({1}).var().item<double>()));  // 0 / 0
  EXPECT_DOUBLE_EQ(two.var({}, 0).item<double>(), 0.25);
  EXPECT_DOUBLE_EQ(two.std({}, 0).item<double>(), 0.5);
  // Integer sums widen to int64 and wrap on overflow, as torch does.
  const int64_t big = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(tensor(std::vector<int64_t>{big, 1}).sum().item<int64_t>(), std::numeric_limits<int64_t>::min());
  const Tensor i32 = tensor(std::vector<int32_t>{100000, 100000, 100000});
  EXPECT_EQ(i32.sum().dtype(), DType::i64);
  EXPECT_EQ(i32.sum().item<int64_t>(), 300000);
  EXPECT_EQ(i32.prod().item<int64_t>(), int64_t{1000000000000000});
  EXPECT_EQ(sum(i32, {}, false, DType::i32).dtype(), DType::i32);
  EXPECT_EQ(tensor(std::vector<bool>{true, true, false}).sum().item<int64_t>(), 2);
  EXPECT_EQ(sum(tensor({1.5, 2.25}), {}, false, DType::i64).item<int64_t>(), 3);  // cast first, like torch
  EXPECT_EQ(tensor(std::vector<uint8_t>{1, 2}).all().dtype(), DType::boolean);
  EXPECT_EQ(full({4}, 2.0, {.dtype = DType::f16}).mean().dtype(), DType::f16);
}

TEST(Reduce, ResultsDoNotDependOnThreadCount) {
  const Tensor x = kt::random_tensor({700, 513}, DType::f32, -1, 1, 11);
  const Tensor row = kt::random_tensor({1 << 20}, DType::f32, -1, 1, 12);
  auto run_all = [&] {
    return std::vector<Tensor>{x.sum(), x.sum({0}), x.sum({1}), x.var({0}), x.logsumexp({1}), row.sum(), row.norm(),
                               row.var(), row.view({1 << 10, 1 << 10}).mean({0})};
  };
  const int threads = get_num_threads();
  set_num_threads(1);
  const std::vector<Tensor> one = run_all();
  set_num_threads(std::max(threads, 2));
  const std::vector<Tensor> many = run_all();
  set_num_threads(threads);
  for (size_t i = 0; i < one.size(); ++i)
    expect_close(many[i], kt::values(one[i]), 0, 0, "result " + std::to_string(i));
}


// ---- gradients

// f64 values in [-2, 3), moved off (-0.1, 0.1) by adding +-0.1 (which keeps them distinct).
Tensor grad_input(const Dims& shape, uint64_t seed) {
  std::vector<double> v = kt::values(kt::random_tensor(shape, DType::f64, -2, 3, seed));
  for (double& x : v)
    if (std::abs(x) < 0.1) x += x < 0 ? -0.1 : 0.1;
  return kiln::tensor(v, shape, {.dtype = DType::f64}).requires_grad_();
}

bool all_finite(const Tensor& t) {
  for (double v : kt::values(t))
    if (!std::isfinite(v)) return false;
  return true;
}

void expect_gradcheck(const std::function<TensorList(const TensorList&)>& fn, const Tensor& x,
                      const std::string& what) {
  const autograd::GradcheckResult r = autograd::gradcheck(fn, {x});
  EXPECT_TRUE(r.ok) << what << ": " << r.message;
}

TEST(Reduce, GradcheckTable) {
  const std::vector<Sample> samples = {{{2, 3, 4}, {}}, {{2, 3, 4}, {1}}, {{2, 3, 4}, {-1, 0}}, {{2, 3, 4}, {0, 1, 2}},
                                       {{5}, {0}},      {{}, {}},         {{3, 1, 4}, {1}},     {{2, 3, 2, 3}, {1, 3}}};
  uint64_t seed = 3;
  for (const OpCase& c : op_cases()) {
    if (!is_floating(c.out_dtype(DType::f64))) continue;  // all, any
    for (const Sample& s : samples)
      for (bool keepdim : {false, true}) {
        const std::string what =
            c.name + " " + describe(s, DType::f64, Layout::contiguous) + (keepdim ? " keepdim" : "");
        const Tensor x = grad_input(s.shape, seed++);
        // var and std of one element are NaN, where finite differences mean nothing.
        if (!all_finite(c.call(x.detach(), s.dims, keepdim))) continue;
        expect_gradcheck([&](const TensorList& in) { return TensorList{c.call(in[0], s.dims, keepdim)}; }, x, what);
        if (s.shape.size() < 2) continue;
        // A transposed (non-contiguous) input: x holds the values in the transposed shape.
        Dims t = s.shape;
        std::swap(t[0], t[t.size() - 1]);
        const Tensor xt = grad_input(t, seed++);
        expect_gradcheck(
            [&](const TensorList& in) { return TensorList{c.call(in[0].transpose(0, -1), s.dims, keepdim)}; }, xt,
            what + " transposed");
      }
  }
}

TEST(Reduce, GradcheckMaxMinValues) {
  for (bool largest : {true, false})
    for (int64_t dim : {0, 1, -1})
      for (bool keepdim : {false, true}) {
        const Tensor x = grad_input({3, 4, 2}, 50 + static_cast<uint64_t>(dim + 1));
        expect_gradcheck(
            [&](const TensorList& in) {
              return TensorList{largest ? max(in[0], dim, keepdim).values : min(in[0], dim, keepdim).values};
            },
            x, std::string(largest ? "max" : "min") + " dim " + std::to_string(dim));
      }
  const Tensor scalar = grad_input({}, 60);
  expect_gradcheck(
      [](const TensorList& in) {
        return TensorList{max(in[0], 0).values, max(in[0]), min(in[0])};
      },
      scalar, "0-d");
}

// torch's choices where the derivative is not unique, by hand.
TEST(Reduce, DerivativeConventionsAtTiesAndZeros) {
  auto leaf = [](std::initializer_list<double> v) { return kiln::tensor(v, {.dtype = DType::f64}).requires_grad_(); };
  auto grad_of = [](const Tensor& x, const Tensor& y) { return autograd::grad({y}, {x})[0]; };
  const Tensor ties = leaf({1, 3, 3, 2});
  expect_close(grad_of(ties, ties.amax()), {0, 0.5, 0.5, 0}, 0, 0, "amax splits among ties");
  expect_close(grad_of(ties, max(ties)), {0, 0.5, 0.5, 0}, 0, 0, "max() splits among ties");
  expect_close(grad_of(ties, max(ties, 0).values), {0, 1, 0, 0}, 0, 0, "max(dim) goes to its index");
  expect_close(grad_of(ties, ties.amin()), {1, 0, 0, 0}, 0, 0, "amin");
  const Tensor abs_ties = leaf({-3, 1, 3});
  expect_close(grad_of(abs_ties, abs_ties.norm(kInf)), {-0.5, 0, 0.5}, 0, 0, "norm(inf) splits among ties");
  const Tensor one_zero = leaf({2, 0, 3}), two_zeros = leaf({0, 2, 0});
  expect_close(grad_of(one_zero, one_zero.prod()), {0, 6, 0}, 0, 0, "prod with one zero");
  expect_close(grad_of(two_zeros, two_zeros.prod()), {0, 0, 0}, 0, 0, "prod with two zeros");
  const Tensor rows = kiln::tensor({0, 2, 3, 4, 0, 0, 5, 6, 7}, {.dtype = DType::f64}).view({3, 3}).requires_grad_();
  expect_close(grad_of(rows, rows.prod({1}).sum()), {6, 0, 0, 0, 0, 0, 42, 35, 30}, 0, 0,
               "prod along dim 1 with zeros");
  // prod is a polynomial: finite differences agree at zeros too.
  expect_gradcheck(
      [](const TensorList& in) {
        return TensorList{in[0].prod({0}), in[0].prod()};
      },
      kiln::tensor({0, 2, 3, 0, 0, 4}, {.dtype = DType::f64}).view({3, 2}).requires_grad_(), "prod at zeros");
  const Tensor zero = leaf({0, 0, 0});
  expect_close(grad_of(zero, zero.norm()), {0, 0, 0}, 0, 0, "norm at 0");
  expect_close(grad_of(zero, zero.norm(3)), {0, 0, 0}, 0, 0, "norm(p=3) at 0");
  const Tensor x = leaf({1, 2, 4});
  expect_close(grad_of(x, x.var({}, 0)), {-2.0 * 4 / 3 / 3, -2.0 / 3 / 3 * 1, 2.0 * 5 / 3 / 3}, 1e-14, 0, "var");
}

// Constant slices against PyTorch (tests/fixtures/nn/edges.txt): std and var are exactly 0, as
// torch's Welford gives (a mean rounded from the sum can be an ulp off and leave ~1e-16), and std's
// gradient is 0 there (torch masks grad / std where std is 0) rather than 0 / 0 = nan.
TEST(Reduce, StdAndVarOfConstantSlicesMatchTorch) {
  const kt::NnFixture fx("edges.txt");
  const std::vector<std::pair<std::string, std::function<Tensor(const Tensor&)>>> cases = {
      {"std_rows", [](const Tensor& x) { return x.std({1}); }},
      {"std_all", [](const Tensor& x) { return x.std(); }},
      {"std_keepdim_correction0", [](const Tensor& x) { return x.std({1}, 0, true); }},
      {"std_f32", [](const Tensor& x) { return x.std({0}); }},
      {"var_cols", [](const Tensor& x) { return x.var({0}); }}};
  for (const auto& [name, fn] : cases) {
    SCOPED_TRACE(name);
    Tensor x = fx[name + ".input"].requires_grad_();
    const Tensor out = fn(x), want = fx[name + ".out"];
    ASSERT_EQ(out.shape(), want.shape());
    expect_close(out, kt::values(want), 1e-6, 0, "value (exact where torch's is 0)");
    out.backward(fx[name + ".gy"]);
    kt::expect_matches(x.grad(), fx[name + ".grad"], "grad");
  }
}

TEST(Reduce, Errors) {
  const Tensor x = zeros({2, 3});
  const Tensor ints = zeros({2, 3}, {.dtype = DType::i64});
  const Tensor empty_rows = zeros({0, 3});
  const std::vector<std::pair<std::function<void()>, std::vector<std::string>>> cases = {
      {[&] { (void)x.sum({2}); }, {"sum", "dim 2", "2-d"}},
      {[&] { (void)x.mean({-3}); }, {"mean", "dim -3", "2-d"}},
      {[&] { (void)x.amax({0, -2}); }, {"amax", "dim 0 appears multiple times"}},
      {[&] { (void)x.sum({1, 1}); }, {"sum", "dim 1 appears multiple times"}},
      {[&] { (void)max(x, 2); }, {"max", "dim 2", "2-d"}},
      {[&] { (void)x.argmin(-3); }, {"argmin", "dim -3"}},
      {[&] { (void)full({}, 1.0).sum({1}); }, {"sum", "dim 1", "0-d"}},
      {[&] { (void)ints.mean(); }, {"mean", "floating", "int64"}},
      {[&] { (void)ints.var(); }, {"var", "int64"}},
      {[&] { (void)ints.std(); }, {"std", "int64"}},
      {[&] { (void)ints.norm(); }, {"norm", "int64"}},
      {[&] { (void)ints.logsumexp({}); }, {"logsumexp", "int64"}},
      {[&] { (void)empty_rows.amax({0}); }, {"amax", "zero-size dimension", "[0, 3]"}},
      {[&] { (void)empty_rows.amin(); }, {"amin", "zero-size dimension", "[0, 3]"}},
      {[&] { (void)max(empty_rows, 0); }, {"max", "zero-size dimension", "[0, 3]"}},
      {[&] { (void)max(empty_rows); }, {"max", "zero-size dimension", "[0, 3]"}},
      {[&] { (void)empty_rows.argmax(); }, {"argmax", "zero-size dimension", "[0, 3]"}},
      {[&] { (void)norm(empty_rows, kInf, {0}); }, {"norm", "zero-size dimension"}},
      {[&] { (void)Tensor().sum(); }, {"sum", "undefined"}},
  };
  for (const auto& [fn, fragments] : cases) expect_error(fn, fragments);
}
