// Elementwise ops against f64 references. One table of unary cases and one of binary cases, each
// entry a kiln call, a <cmath> reference, an input domain and the dtypes it takes; generic tests
// loop over the tables (every dtype, non-contiguous inputs, broadcasting, empty and 0-d tensors,
// sizes past the threading threshold, f64 gradcheck of every differentiable entry). Then: type
// promotion, in-place ops, where, clamp, masked_fill, edge values (NaN, inf, -0.0, huge and tiny
// inputs), derivative conventions at kinks and zeros, and the error messages.
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>

#include "autograd/gradcheck.h"
#include "testing.h"

using namespace kiln;
namespace kt = kiln::testing;
using kiln::testing::at;
using kiln::testing::kInf;
using kiln::testing::kNaN;
using kiln::testing::expect_close;
using kiln::testing::expect_error;

namespace {

const std::vector<DType> kAll = kt::kAllDTypes;
const std::vector<DType> kFloat = kt::kFloatDTypes;
const std::vector<DType> kNumeric = {DType::f32, DType::f64, DType::f16, DType::bf16,
                                     DType::i64, DType::i32, DType::u8};
const std::vector<DType> kSigned = {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i64, DType::i32};

// Where inputs are drawn from. Integer dtypes take rounded values (uint8 only the non-negative
// ones); `integral` rounds floats too (so comparisons see ties); `nonzero` keeps divisors off 0.
struct Domain {
  double lo = -4, hi = 4;
  bool integral = false;
  bool nonzero = false;
};

Tensor sample(const Dims& shape, DType dtype, Domain d, uint64_t seed) {
  std::mt19937_64 gen(seed);
  const double lo = dtype == DType::u8 ? std::max(d.lo, 0.0) : d.lo;
  std::uniform_real_distribution<double> uni(lo, d.hi);
  std::vector<double> v(static_cast<size_t>(checked_numel(shape, "sample")));
  for (double& x : v) {
    x = uni(gen);
    if (dtype == DType::boolean) x = x > (lo + d.hi) / 2;
    else if (d.integral || !is_floating(dtype)) x = std::round(x);
    if (d.nonzero && x == 0) x = 1;
  }
  return kiln::tensor(v, shape, {.dtype = dtype});
}

// How a case's output dtype follows from its input dtype(s).
enum class Out { same, floating, boolean };

DType out_dtype(Out o, DType in) {
  switch (o) {
    case Out::same: return in;
    case Out::floating: return is_floating(in) ? in : DType::f32;
    case Out::boolean: return DType::boolean;
  }
  return in;
}

// A reference value as the output dtype holds it: uint8 wraps modulo 256 (as torch does), bool is
// "nonzero", and values past f16's or f32's range round to inf.
double as_stored(double v, DType t) {
  if (t == DType::boolean) return v != 0;
  if (t == DType::f16 && std::abs(v) >= 65520) return std::copysign(kInf, v);
  if (t == DType::f32 && std::abs(v) >= 0x1.ffffffp127) return std::copysign(kInf, v);
  if (t == DType::u8 && std::isfinite(v)) return static_cast<double>(((static_cast<int64_t>(v) % 256) + 256) % 256);
  return v;
}

// f16 results below its normal range are spaced 6e-8 apart: an absolute floor for the comparison.
double atol_for(DType t) { return t == DType::f16 ? 1e-7 : 0.0; }

// Element `flat` of out's row-major order, read from t broadcast to out_shape.
double at_broadcast(const Tensor& t, const Dims& out_shape, int64_t flat) {
  int64_t src = 0, scale = 1;
  for (int d = out_shape.size() - 1, dt = t.dim() - 1; d >= 0; --d, --dt) {
    const int64_t i = flat % out_shape[d];
    flat /= out_shape[d];
    if (dt < 0) continue;
    if (t.shape()[dt] != 1) src += i * scale;
    scale *= t.shape()[dt];
  }
  return at(t, src);
}

double python_remainder(double a, double b) {
  double r = std::fmod(a, b);
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}
double sigmoid_ref(double x) { return 1 / (1 + std::exp(-x)); }
double softplus_ref(double x, double beta, double threshold) {
  return beta * x > threshold ? x : std::log1p(std::exp(beta * x)) / beta;
}
// gelu_tanh as 0.5 x (1 + tanh(a)) = x / (1 + e^-2a), the form without cancellation for x < 0.
double gelu_tanh_ref(double x) { return x / (1 + std::exp(-2 * 0.7978845608028654 * (x + 0.044715 * x * x * x))); }
double gelu_erf_ref(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }

// ---- the unary table

// Gradcheck (f64 central differences) runs on every case with a floating output, on values drawn
// from `domain` and moved at least kKinkMargin away from each of `kinks`: the points where the op is
// not differentiable (abs and relu at 0, clamp at its bounds) or where its derivative blows up
// (sqrt at 0), at which finite differences and the derivative's convention need not agree.
struct UnaryCase {
  std::string name;
  std::function<Tensor(const Tensor&)> call;
  std::function<double(double)> ref;
  Domain domain;
  std::vector<DType> dtypes;
  Out out = Out::floating;
  std::vector<double> kinks = {};
};

const std::vector<UnaryCase>& unary_cases() {
  using T = const Tensor&;
  static const std::vector<UnaryCase> cases = {
      {"abs", [](T x) { return abs(x); }, [](double v) { return std::abs(v); }, {}, kAll, Out::same, {0}},
      {"neg", [](T x) { return -x; }, [](double v) { return -v; }, {}, kNumeric, Out::same},
      {"sign", [](T x) { return sign(x); }, [](double v) { return double((v > 0) - (v < 0)); }, {}, kAll, Out::same,
       {0}},
      {"relu", [](T x) { return x.relu(); }, [](double v) { return v < 0 ? 0.0 : v; }, {}, kNumeric, Out::same, {0}},
      {"logical_not", [](T x) { return logical_not(x); }, [](double v) { return double(v == 0); }, {-2, 2, true}, kAll,
       Out::boolean},
      {"exp", [](T x) { return x.exp(); }, [](double v) { return std::exp(v); }, {-10, 10}, kAll},
      {"log", [](T x) { return x.log(); }, [](double v) { return std::log(v); }, {0.01, 50}, kAll},
      {"log1p", [](T x) { return x.log1p(); }, [](double v) { return std::log1p(v); }, {-0.99, 10}, kAll},
      {"expm1", [](T x) { return x.expm1(); }, [](double v) { return std::expm1(v); }, {-5, 5}, kAll},
      {"sqrt", [](T x) { return x.sqrt(); }, [](double v) { return std::sqrt(v); }, {0, 50}, kAll, Out::floating, {0}},
      {"rsqrt", [](T x) { return x.rsqrt(); }, [](double v) { return 1 / std::sqrt(v); }, {0.01, 50}, kAll},
      {"sin", [](T x) { return x.sin(); }, [](double v) { return std::sin(v); }, {-10, 10}, kAll},
      {"cos", [](T x) { return x.cos(); }, [](double v) { return std::cos(v); }, {-10, 10}, kAll},
      {"tanh", [](T x) { return x.tanh(); }, [](double v) { return std::tanh(v); }, {-6, 6}, kAll},
      {"sigmoid", [](T x) { return x.sigmoid(); }, sigmoid_ref, {-12, 12}, kAll},
      {"silu", [](T x) { return silu(x); }, [](double v) { return v * sigmoid_ref(v); }, {-12, 12}, kAll},
      {"gelu", [](T x) { return gelu(x); }, gelu_erf_ref, {-6, 6}, kAll},
      {"gelu(tanh)", [](T x) { return gelu(x, "tanh"); }, gelu_tanh_ref, {-6, 6}, kAll},
      {"erf", [](T x) { return x.erf(); }, [](double v) { return std::erf(v); }, {-3, 3}, kAll},
      {"reciprocal", [](T x) { return reciprocal(x); }, [](double v) { return 1 / v; }, {-5, 5, false, true}, kAll,
       Out::floating, {0}},
      {"softplus", [](T x) { return softplus(x); }, [](double v) { return softplus_ref(v, 1, 20); }, {-30, 30}, kAll},
      {"softplus(beta=2,threshold=5)", [](T x) { return softplus(x, 2, 5); },
       [](double v) { return softplus_ref(v, 2, 5); }, {-10, 10}, kAll, Out::floating, {2.5}},
      {"leaky_relu(0.2)", [](T x) { return leaky_relu(x, 0.2); }, [](double v) { return v > 0 ? v : 0.2 * v; }, {},
       kAll, Out::floating, {0}},
      {"pow(2)", [](T x) { return x.pow(2); }, [](double v) { return v * v; }, {}, kFloat},
      {"pow(3)", [](T x) { return x.pow(3); }, [](double v) { return v * v * v; }, {}, kFloat},
      {"pow(0.5)", [](T x) { return x.pow(0.5); }, [](double v) { return std::sqrt(v); }, {0, 9}, kFloat, Out::floating,
       {0}},
      {"pow(-0.5)", [](T x) { return x.pow(-0.5); }, [](double v) { return 1 / std::sqrt(v); }, {0.1, 9}, kFloat},
      {"pow(-1)", [](T x) { return x.pow(-1); }, [](double v) { return 1 / v; }, {-4, 4, false, true}, kFloat,
       Out::floating, {0}},
      {"pow(-2)", [](T x) { return x.pow(-2); }, [](double v) { return 1 / (v * v); }, {-4, 4, false, true}, kFloat,
       Out::floating, {0}},
      {"pow(1)", [](T x) { return x.pow(1); }, [](double v) { return v; }, {}, kFloat},
      {"pow(0)", [](T x) { return x.pow(0); }, [](double) { return 1.0; }, {}, kFloat},
      {"pow(2.5)", [](T x) { return x.pow(2.5); }, [](double v) { return std::pow(v, 2.5); }, {0, 4}, kFloat,
       Out::floating, {0}},
      {"pow(-1.3)", [](T x) { return x.pow(-1.3); }, [](double v) { return std::pow(v, -1.3); }, {0.1, 4}, kFloat},
      {"clamp(-1,1)", [](T x) { return x.clamp(-1, 1); }, [](double v) { return std::min(std::max(v, -1.0), 1.0); }, {},
       kNumeric, Out::same, {-1, 1}},
      {"clamp(min=1)", [](T x) { return clamp(x, 1, std::nullopt); }, [](double v) { return std::max(v, 1.0); }, {},
       kNumeric, Out::same, {1}},
      {"clamp(max=2)", [](T x) { return clamp(x, std::nullopt, 2); }, [](double v) { return std::min(v, 2.0); }, {},
       kNumeric, Out::same, {2}},
  };
  return cases;
}

// Checks y = c(x) against the reference, computed on x's stored (rounded) values.
void check_unary(const UnaryCase& c, const Tensor& x, const Tensor& y, const std::string& what) {
  const DType want = out_dtype(c.out, x.dtype());
  ASSERT_EQ(y.dtype(), want) << what;
  ASSERT_EQ(y.shape(), x.shape()) << what;
  std::vector<double> ref(static_cast<size_t>(x.numel()));
  for (int64_t i = 0; i < x.numel(); ++i) ref[static_cast<size_t>(i)] = as_stored(c.ref(at(x, i)), want);
  expect_close(y, ref, kt::tolerance(want), atol_for(want), what);
}

TEST(Elementwise, UnaryTableOverDtypes) {
  for (const UnaryCase& c : unary_cases())
    for (DType t : c.dtypes) {
      const Tensor x = sample({5, 7}, t, c.domain, 11);
      check_unary(c, x, c.call(x), c.name + " " + std::string(dtype_name(t)));
    }
}

TEST(Elementwise, UnaryTableLayouts) {
  for (const UnaryCase& c : unary_cases())
    for (DType t : {DType::f32, DType::f64, DType::bf16}) {
      const std::string what = c.name + " " + std::string(dtype_name(t));
      const Tensor x = sample({6, 5}, t, c.domain, 12);
      check_unary(c, kt::noncontiguous(x), c.call(kt::noncontiguous(x)), what + " noncontiguous");
      check_unary(c, x.t(), c.call(x.t()), what + " transposed");
      const Tensor scalar = sample({}, t, c.domain, 13);
      check_unary(c, scalar, c.call(scalar), what + " 0-d");
      const Tensor empty = sample({0, 3}, t, c.domain, 14);
      check_unary(c, empty, c.call(empty), what + " empty");
    }
}

// 40001 elements: two threads' chunks, and a ragged tail for the 8-lane f32 path. The f32
// results must not depend on the layout (the strided path runs the same math one lane at a time).
TEST(Elementwise, UnaryTableLargeInputs) {
  for (const UnaryCase& c : unary_cases()) {
    const Tensor x = sample({40001}, DType::f32, c.domain, 15);
    const Tensor y = c.call(x);
    check_unary(c, x, y, c.name + " large");
    const Tensor strided = c.call(kt::noncontiguous(x));
    ASSERT_EQ(strided.dtype(), y.dtype());
    int mismatches = 0;
    for (int64_t i = 0; i < y.numel(); i += 7) {
      const double a = at(y, i), b = at(strided, i);
      mismatches += !(a == b || (std::isnan(a) && std::isnan(b)));
    }
    EXPECT_EQ(mismatches, 0) << c.name << ": contiguous and strided f32 results differ";
  }
}

TEST(Elementwise, ResultsDoNotDependOnThreadCount) {
  const int threads = get_num_threads();
  const Tensor x = sample({100000}, DType::f32, {-20, 20}, 16);
  const std::vector<double> many = kt::values(x.sigmoid()), many_add = kt::values(x + x.exp());
  set_num_threads(1);
  const std::vector<double> one = kt::values(x.sigmoid()), one_add = kt::values(x + x.exp());
  set_num_threads(threads);
  EXPECT_EQ(many, one);
  EXPECT_EQ(many_add, one_add);
}

// ---- the binary table

// Gradcheck runs on every case with a floating output, on continuous values from the domains
// (`integral` is dropped: ties are kinks) or from `grad_domains` where the value domains reach
// non-differentiable points as a whole (remainder's jumps, pow's negative bases); `nudge_a` and
// `nudge_b` then move each operand's values off the remaining kinks (maximum's ties: a on half
// integers, b on integers; where's switch at a = 0).
struct BinaryCase {
  std::string name;
  std::function<Tensor(const Tensor&, const Tensor&)> call;
  std::function<double(double, double)> ref;
  Domain a, b;
  std::vector<DType> dtypes;
  Out out = Out::same;  // from the promoted input dtype
  std::optional<std::pair<Domain, Domain>> grad_domains = std::nullopt;
  std::function<double(double)> nudge_a = nullptr, nudge_b = nullptr;
};

double half_integer(double v) { return std::round(v) + 0.5; }
double integer(double v) { return std::round(v); }
double off_zero(double v) { return std::abs(v) < 0.1 ? (v < 0 ? -0.1 : 0.1) : v; }

const std::vector<BinaryCase>& binary_cases() {
  using T = const Tensor&;
  const Domain any{}, ints{-3, 3, true}, divisor{-4, 4, false, true};
  static const std::vector<BinaryCase> cases = {
      {"add", [](T a, T b) { return a + b; }, [](double x, double y) { return x + y; }, any, any, kAll},
      // alpha * b rounds before the sum, as in torch's scalar path: domains without cancellation.
      {"add(alpha=2)", [](T a, T b) { return add(a, b, 2); }, [](double x, double y) { return x + 2 * y; }, {0, 4},
       {0, 4}, kNumeric},
      {"sub", [](T a, T b) { return a - b; }, [](double x, double y) { return x - y; }, any, any, kNumeric},
      {"sub(alpha=3)", [](T a, T b) { return sub(a, b, 3); }, [](double x, double y) { return x - 3 * y; }, {13, 16},
       {0, 1}, kNumeric},
      {"mul", [](T a, T b) { return a * b; }, [](double x, double y) { return x * y; }, any, any, kAll},
      {"div", [](T a, T b) { return a / b; }, [](double x, double y) { return x / y; }, any, divisor, kAll,
       Out::floating, std::pair{any, Domain{0.5, 4}}},
      {"pow", [](T a, T b) { return a.pow(b); }, [](double x, double y) { return std::pow(x, y); }, {-3, 3},
       {0, 4}, kAll, Out::same, std::pair{Domain{0.2, 3}, Domain{-2, 3}}},
      {"maximum", [](T a, T b) { return maximum(a, b); }, [](double x, double y) { return std::max(x, y); }, ints, ints,
       kAll, Out::same, std::nullopt, half_integer, integer},
      {"minimum", [](T a, T b) { return minimum(a, b); }, [](double x, double y) { return std::min(x, y); }, ints, ints,
       kAll, Out::same, std::nullopt, half_integer, integer},
      {"remainder", [](T a, T b) { return remainder(a, b); }, python_remainder, {-10, 10}, divisor, kNumeric,
       Out::same, std::pair{Domain{0.1, 0.9}, Domain{1.2, 2}}},
      {"eq", [](T a, T b) { return a == b; }, [](double x, double y) { return double(x == y); }, ints, ints, kAll,
       Out::boolean},
      {"ne", [](T a, T b) { return a != b; }, [](double x, double y) { return double(x != y); }, ints, ints, kAll,
       Out::boolean},
      {"lt", [](T a, T b) { return a < b; }, [](double x, double y) { return double(x < y); }, ints, ints, kAll,
       Out::boolean},
      {"le", [](T a, T b) { return a <= b; }, [](double x, double y) { return double(x <= y); }, ints, ints, kAll,
       Out::boolean},
      {"gt", [](T a, T b) { return a > b; }, [](double x, double y) { return double(x > y); }, ints, ints, kAll,
       Out::boolean},
      {"ge", [](T a, T b) { return a >= b; }, [](double x, double y) { return double(x >= y); }, ints, ints, kAll,
       Out::boolean},
      {"logical_and", [](T a, T b) { return logical_and(a, b); }, [](double x, double y) { return double(x && y); },
       ints, ints, kAll, Out::boolean},
      {"logical_or", [](T a, T b) { return logical_or(a, b); }, [](double x, double y) { return double(x || y); }, ints,
       ints, kAll, Out::boolean},
      {"logical_xor", [](T a, T b) { return logical_xor(a, b); },
       [](double x, double y) { return double((x != 0) != (y != 0)); }, ints, ints, kAll, Out::boolean},
      {"where(a>0)", [](T a, T b) { return where(a > 0, a, b); }, [](double x, double y) { return x > 0 ? x : y; },
       any, any, kAll, Out::same, std::nullopt, off_zero},
  };
  return cases;
}

void check_binary(const BinaryCase& c, const Tensor& a, const Tensor& b, const std::string& what) {
  const Tensor y = c.call(a, b);
  const DType want = out_dtype(c.out, promote_types(a.dtype(), b.dtype()));
  ASSERT_EQ(y.dtype(), want) << what;
  const Dims shape = broadcast_shapes(a.shape(), b.shape(), "test");
  ASSERT_EQ(y.shape(), shape) << what;
  std::vector<double> ref(static_cast<size_t>(y.numel()));
  for (int64_t i = 0; i < y.numel(); ++i)
    ref[static_cast<size_t>(i)] = as_stored(c.ref(at_broadcast(a, shape, i), at_broadcast(b, shape, i)), want);
  expect_close(y, ref, kt::tolerance(want), atol_for(want), what);
}

TEST(Elementwise, BinaryTableOverDtypesAndShapes) {
  const std::vector<std::pair<Dims, Dims>> shapes = {
      {{7, 9}, {7, 9}}, {{3, 1, 5}, {4, 1}}, {{4, 1}, {3, 1, 5}}, {{}, {4, 5}}, {{4, 5}, {}},
      {{}, {}},         {{0, 3}, {3}},       {{2, 1}, {0}},       {{1}, {6}}};
  for (const BinaryCase& c : binary_cases())
    for (DType t : c.dtypes)
      for (const auto& [sa, sb] : shapes) {
        std::ostringstream what;
        what << c.name << " " << t << " " << sa << " with " << sb;
        check_binary(c, sample(sa, t, c.a, 21), sample(sb, t, c.b, 22), what.str());
      }
}

TEST(Elementwise, BinaryTableLayouts) {
  for (const BinaryCase& c : binary_cases())
    for (DType t : {DType::f32, DType::f64, DType::f16, DType::i32}) {
      if (std::find(c.dtypes.begin(), c.dtypes.end(), t) == c.dtypes.end()) continue;
      const std::string what = c.name + " " + std::string(dtype_name(t));
      const Tensor a = sample({6, 5}, t, c.a, 23), b = sample({6, 5}, t, c.b, 24);
      check_binary(c, kt::noncontiguous(a), kt::noncontiguous(b), what + " noncontiguous");
      check_binary(c, a.t(), kt::noncontiguous(b).t(), what + " transposed");
      check_binary(c, kt::noncontiguous(a), sample({5}, t, c.b, 25), what + " noncontiguous with broadcast");
      if (t != DType::f32) continue;
      // Past the threading threshold: same shapes, a row broadcast over many rows, a 0-d operand.
      check_binary(c, sample({330, 100}, t, c.a, 26), sample({330, 100}, t, c.b, 27), what + " large");
      check_binary(c, sample({330, 100}, t, c.a, 28), sample({100}, t, c.b, 29), what + " large broadcast");
      check_binary(c, sample({}, t, c.a, 30), sample({330, 100}, t, c.b, 31), what + " large with 0-d");
    }
}


// ---- gradients: gradcheck over both tables

constexpr double kKinkMargin = 0.1;

// Continuous f64 values from d (no rounding: equal values would be ties).
std::vector<double> grad_values(int64_t n, Domain d, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> uni(d.lo, d.hi);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = uni(gen);
  return v;
}

Tensor f64_leaf(const std::vector<double>& v, const Dims& shape) {
  return kiln::tensor(v, shape, {.dtype = DType::f64}).requires_grad_();
}

// The same values in a non-contiguous layout, built from differentiable ops so gradients flow back.
Tensor noncontiguous_copy(const Tensor& x) {
  const Tensor y = stack({x, zeros_like(x)}, -1).select(-1, 0);
  EXPECT_TRUE(y.numel() <= 1 || !y.is_contiguous());
  return y;
}

void expect_gradcheck(const std::function<TensorList(const TensorList&)>& fn, const TensorList& inputs,
                      const std::string& what) {
  const autograd::GradcheckResult r = autograd::gradcheck(fn, inputs);
  EXPECT_TRUE(r.ok) << what << ": " << r.message;
}

bool differentiable(Out out, const std::vector<DType>& dtypes) {
  return out != Out::boolean && std::find(dtypes.begin(), dtypes.end(), DType::f64) != dtypes.end();
}

TEST(Elementwise, GradcheckUnaryTable) {
  for (const UnaryCase& c : unary_cases()) {
    if (!differentiable(c.out, c.dtypes)) continue;
    for (const Dims& shape : {Dims{3, 4}, Dims{}}) {
      std::vector<double> v = grad_values(checked_numel(shape, "test"), c.domain, 41);
      for (double& x : v)
        for (double k : c.kinks)
          if (std::abs(x - k) < kKinkMargin) x = x < k ? k - kKinkMargin : k + kKinkMargin;
      const Tensor x = f64_leaf(v, shape);
      expect_gradcheck([&](const TensorList& in) { return TensorList{c.call(in[0])}; }, {x}, c.name);
      expect_gradcheck([&](const TensorList& in) { return TensorList{c.call(noncontiguous_copy(in[0]))}; }, {x},
                       c.name + " noncontiguous");
    }
  }
}

TEST(Elementwise, GradcheckBinaryTable) {
  // Same shapes, each side broadcast, a 0-d operand.
  const std::vector<std::pair<Dims, Dims>> shapes = {
      {{3, 4}, {3, 4}}, {{2, 1, 4}, {3, 1}}, {{4}, {3, 4}}, {{}, {2, 3}}};
  for (const BinaryCase& c : binary_cases()) {
    if (!differentiable(c.out, c.dtypes)) continue;
    const Domain da = c.grad_domains ? c.grad_domains->first : c.a, db = c.grad_domains ? c.grad_domains->second : c.b;
    for (const auto& [sa, sb] : shapes) {
      std::vector<double> va = grad_values(checked_numel(sa, "test"), da, 42);
      std::vector<double> vb = grad_values(checked_numel(sb, "test"), db, 43);
      if (c.nudge_a) std::transform(va.begin(), va.end(), va.begin(), c.nudge_a);
      if (c.nudge_b) std::transform(vb.begin(), vb.end(), vb.begin(), c.nudge_b);
      std::ostringstream what;
      what << c.name << " " << sa << " with " << sb;
      const Tensor a = f64_leaf(va, sa), b = f64_leaf(vb, sb);
      expect_gradcheck([&](const TensorList& in) { return TensorList{c.call(in[0], in[1])}; }, {a, b}, what.str());
      if (sa != sb) continue;
      // Non-contiguous operands: a strided copy of a, and b given transposed and seen through t().
      const Tensor b_transposed = f64_leaf(vb, sb).detach().t().contiguous().requires_grad_();
      expect_gradcheck([&](const TensorList& in) { return TensorList{c.call(noncontiguous_copy(in[0]), in[1].t())}; },
                       {a, b_transposed}, what.str() + " noncontiguous");
    }
  }
}

// ---- type promotion, exactly as torch.result_type

TEST(Elementwise, TypePromotion) {
  const Tensor i64 = kiln::tensor(std::vector<int64_t>{1, -2, 3});
  const Tensor i32 = kiln::tensor(std::vector<int32_t>{1, -2, 3});
  const Tensor u8 = kiln::tensor(std::vector<uint8_t>{1, 200, 255});
  const Tensor f16 = kiln::tensor({0.5, 1.5, -2}, {.dtype = DType::f16});
  const Tensor bf16 = kiln::tensor({0.5, 1.5, -2}, {.dtype = DType::bf16});
  const Tensor b = kiln::tensor(std::vector<bool>{true, false, true});

  Tensor y = i64 + 2.5;  // a Python float counts as the default dtype
  EXPECT_EQ(y.dtype(), DType::f32);
  expect_close(y, {3.5, 0.5, 5.5}, 0, 0, "int64 + 2.5");
  y = i32 + scalar_tensor(int64_t{1} << 40, DType::i64);  // a 0-d tensor of the same category does not widen
  EXPECT_EQ(y.dtype(), DType::i32);
  y = f16 + scalar_tensor(1.0, DType::f64);
  EXPECT_EQ(y.dtype(), DType::f16);
  expect_close(y, {1.5, 2.5, -1}, 0, 0, "f16 + f64 0-d");
  y = i32 + scalar_tensor(0.5, DType::f64);  // a higher category in a 0-d tensor wins
  EXPECT_EQ(y.dtype(), DType::f64);
  y = b + b;
  EXPECT_EQ(y.dtype(), DType::boolean);
  expect_close(y, {1, 0, 1}, 0, 0, "bool + bool");
  y = i32 / i32;
  EXPECT_EQ(y.dtype(), DType::f32);
  expect_close(kiln::tensor(std::vector<int64_t>{7, -7}) / kiln::tensor(std::vector<int64_t>{2, 2}), {3.5, -3.5}, 0, 0,
               "int / int");
  EXPECT_EQ((i32 < f16).dtype(), DType::boolean);
  expect_close(i32 < f16, {0, 1, 0}, 0, 0, "int32 < f16");
  EXPECT_EQ((u8 + i32).dtype(), DType::i32);
  EXPECT_EQ((b + 1).dtype(), DType::i64);
  EXPECT_EQ((f16 + bf16).dtype(), DType::f32);
  EXPECT_EQ((f16 * 2.5).dtype(), DType::f16);
  EXPECT_EQ((scalar_tensor(1, DType::i64) + scalar_tensor(1, DType::i32)).dtype(), DType::i64);
  y = u8 + 1;  // stays uint8, and wraps as torch does
  EXPECT_EQ(y.dtype(), DType::u8);
  expect_close(y, {2, 201, 0}, 0, 0, "uint8 + 1");
  EXPECT_EQ(i64.exp().dtype(), DType::f32);
  EXPECT_EQ(b.sigmoid().dtype(), DType::f32);
  EXPECT_EQ(i32.abs().dtype(), DType::i32);
  EXPECT_EQ(i64.pow(2).dtype(), DType::i64);
  EXPECT_EQ(i64.pow(0.5).dtype(), DType::f32);
  EXPECT_EQ(i32.clamp(0.5, std::nullopt).dtype(), DType::f32);
  expect_close(i64.pow(3), {1, -8, 27}, 0, 0, "int pow");
}

// ---- in place

TEST(Elementwise, InPlace) {
  Tensor x = kt::random_tensor({3, 4}, DType::f32, -2, 2, 31);
  const Tensor row = kt::random_tensor({4}, DType::f32, -2, 2, 32);
  const std::vector<double> x0 = kt::values(x);
  Tensor& same = x.add_(row, 2);
  EXPECT_TRUE(same.is_same(x));
  std::vector<double> want(12);
  for (int i = 0; i < 12; ++i) want[i] = static_cast<float>(x0[i] + 2 * at(row, i % 4));
  expect_close(x, want, 1e-6, 0, "add_ with alpha");

  const Tensor col = kt::random_tensor({3, 1}, DType::f32, -2, 2, 33);
  const std::vector<double> x1 = kt::values(x);
  x.mul_(col);
  for (int i = 0; i < 12; ++i) want[i] = x1[i] * at(col, i / 4);
  expect_close(x, want, 1e-6, 0, "mul_ with a broadcast operand");

  // Through a non-contiguous view, into the buffer beneath it.
  Tensor buf = zeros({4, 6});
  Tensor view = buf.slice(1, 0, 6, 2);
  view.sub_(1.5).mul_(2);
  for (int64_t i = 0; i < 24; ++i) EXPECT_EQ(at(buf, i), i % 2 ? 0.0 : -3.0);

  // A wider operand computes in the wider dtype, then rounds back into x's.
  Tensor h = kiln::tensor({1, 2}, {.dtype = DType::f16});
  h.add_(kiln::tensor({0.25, 1e-4}, {.dtype = DType::f64}));
  EXPECT_EQ(h.dtype(), DType::f16);
  expect_close(h, {1.25, 2}, 0, 0, "f16 add_ f64");
  Tensor i = kiln::tensor(std::vector<int64_t>{5, 7});
  i.add_(3).sub_(kiln::tensor(std::vector<int32_t>{1, 2}), 2);
  expect_close(i, {6, 6}, 0, 0, "int add_ and sub_");
  Tensor f = kiln::tensor({1, 4});
  f.div_(2);
  expect_close(f, {0.5, 2}, 0, 0, "div_");
}

// ---- where, clamp, masked_fill beyond the tables

TEST(Elementwise, WhereBroadcastsPromotesAndKeepsBits) {
  const Tensor cond = kiln::tensor(std::vector<bool>{true, false, true}, Dims{3, 1});
  const Tensor a = kiln::tensor({10, 20, 30, 40}, {.dtype = DType::f32}).view({1, 4});
  const Tensor b = kiln::tensor(std::vector<int64_t>{-1, -2, -3, -4, -5, -6, -7, -8, -9, -10, -11, -12}, Dims{3, 4});
  const Tensor y = where(cond, a, b);
  EXPECT_EQ(y.dtype(), DType::f32);
  expect_close(y, {10, 20, 30, 40, -5, -6, -7, -8, 10, 20, 30, 40}, 0, 0, "where");
  expect_close(where(cond.view({3}), kiln::tensor({1, 2, 3}), 0.5), {1, 0.5, 3}, 0, 0, "where(cond, x, scalar)");
  EXPECT_EQ(where(cond.view({3}), 7, kiln::tensor(std::vector<int32_t>{1, 2, 3})).dtype(), DType::i32);
  // NaN and -0.0 are moved bit for bit; every dtype; non-contiguous operands.
  const Tensor special = kiln::tensor({kNaN, -0.0, kInf}, {.dtype = DType::f64});
  const Tensor keep = kiln::tensor(std::vector<bool>{true, true, false});
  const Tensor picked = where(keep, special, zeros({3}, {.dtype = DType::f64}));
  EXPECT_TRUE(std::isnan(at(picked, 0)));
  EXPECT_TRUE(std::signbit(at(picked, 1)));
  for (DType t : kAll) {
    const Tensor c = kt::noncontiguous(sample({4, 6}, DType::boolean, {}, 41));
    const Tensor x = kt::noncontiguous(sample({4, 6}, t, {}, 42)), z = sample({6}, t, {}, 43);
    std::vector<double> want(24);
    for (int64_t i = 0; i < 24; ++i) want[static_cast<size_t>(i)] = at(c, i) ? at(x, i) : at(z, i % 6);
    expect_close(where(c, x, z), want, 0, 0, "where " + std::string(dtype_name(t)));
  }
}

TEST(Elementwise, ClampSemantics) {
  const Tensor x = kiln::tensor({-2, kNaN, 0.5, 3, -kInf, kInf});
  expect_close(x.clamp(-1, 1), {-1, kNaN, 0.5, 1, -1, 1}, 0, 0, "NaN propagates");
  expect_close(x.clamp(2, 1), {1, kNaN, 1, 1, 1, 1}, 0, 0, "min > max gives max");
  const Tensor i = kiln::tensor(std::vector<int32_t>{-5, 0, 5});
  const Tensor fi = i.clamp(-0.5, 2.5);
  EXPECT_EQ(fi.dtype(), DType::f32);
  expect_close(fi, {-0.5, 0, 2.5}, 0, 0, "int with float bounds");
  // Bounds beyond int32's range compare as int64 would: no UB, no wrap.
  const Tensor wide = i.clamp(-(int64_t{1} << 40), int64_t{1} << 40);
  EXPECT_EQ(wide.dtype(), DType::i32);
  expect_close(wide, {-5, 0, 5}, 0, 0, "int32 with int64 bounds");
  expect_close(kiln::tensor(std::vector<uint8_t>{0, 5, 200}).clamp(-3, 100), {0, 5, 100}, 0, 0, "uint8 negative bound");
  using I64 = std::numeric_limits<int64_t>;
  const Tensor big = kiln::tensor(std::vector<int64_t>{I64::min(), 0, I64::max()});
  expect_close(big.clamp(-7, 7), {-7, 0, 7}, 0, 0, "int64 extremes");
  expect_close(kiln::tensor({0.1, 0.2}, {.dtype = DType::f16}).clamp(std::nullopt, 0.15),
               {static_cast<float>(Half(0.1f)), static_cast<float>(Half(0.15f))}, 0, 0, "f16 bound rounds to f16");
}

TEST(Elementwise, MaskedFill) {
  const Tensor x = kiln::tensor({1, 2, 3, 4, 5, 6}).view({2, 3});
  const Tensor mask = kiln::tensor(std::vector<bool>{true, false, true});
  const Tensor y = x.masked_fill(mask, -1.5);
  EXPECT_EQ(y.dtype(), DType::f32);
  expect_close(y, {-1.5, 2, -1.5, -1.5, 5, -1.5}, 0, 0, "masked_fill");
  expect_close(x, {1, 2, 3, 4, 5, 6}, 0, 0, "input unchanged");
  const Tensor ints = kiln::tensor(std::vector<int64_t>{1, 2, 3}).masked_fill(mask, 9);
  EXPECT_EQ(ints.dtype(), DType::i64);
  expect_close(ints, {9, 2, 9}, 0, 0, "int masked_fill");
  expect_close(kt::noncontiguous(x).masked_fill(mask.view({1, 3}), kInf), {kInf, 2, kInf, kInf, 5, kInf}, 0, 0,
               "noncontiguous");
  const Tensor e = zeros({0, 3}).masked_fill(mask, 1);
  EXPECT_EQ(e.shape(), (Dims{0, 3}));
}

// ---- edge values

struct EdgeCase {
  std::string name;
  std::function<Tensor(const Tensor&)> call;
  std::vector<double> x, want;
};

TEST(Elementwise, EdgeValuesOfFloatMath) {
  const double tiny = 1e-30;
  const std::vector<EdgeCase> cases = {
      {"exp", [](const Tensor& x) { return x.exp(); },
       {-kInf, kInf, kNaN, 0, -1000, 1000, -0.0}, {0, kInf, kNaN, 1, 0, kInf, 1}},
      {"log", [](const Tensor& x) { return x.log(); },
       {0, -0.0, -1, kInf, 1, kNaN}, {-kInf, -kInf, kNaN, kInf, 0, kNaN}},
      {"log1p", [](const Tensor& x) { return x.log1p(); },
       {-1, -2, tiny, -0.0, kInf, 1e30}, {-kInf, kNaN, tiny, -0.0, kInf, std::log(1e30)}},
      {"expm1", [](const Tensor& x) { return x.expm1(); },
       {tiny, -tiny, -kInf, kInf, -0.0, -100}, {tiny, -tiny, -1, kInf, -0.0, -1}},
      {"sigmoid", [](const Tensor& x) { return x.sigmoid(); },
       {-kInf, kInf, 100, -80, kNaN, -1000, 0}, {0, 1, 1, sigmoid_ref(-80), kNaN, 0, 0.5}},
      {"softplus", [](const Tensor& x) { return softplus(x); },
       {1000, -1000, -50, 20.5, 0}, {1000, 0, std::exp(-50.0), 20.5, std::log(2.0)}},
      {"softplus(threshold=1e30)", [](const Tensor& x) { return softplus(x, 1, 1e30); },
       {100, 1000, -kInf}, {100, 1000, 0}},
      {"tanh", [](const Tensor& x) { return x.tanh(); },
       {kInf, -kInf, -0.0, tiny, 20, kNaN}, {1, -1, -0.0, tiny, 1, kNaN}},
      {"silu", [](const Tensor& x) { return silu(x); }, {-kInf, kInf, -50, 0}, {kNaN, kInf, -50 * std::exp(-50.0), 0}},
      {"gelu(tanh)", [](const Tensor& x) { return gelu(x, "tanh"); },
       {kInf, -kInf, 0, -10}, {kInf, kNaN, 0, gelu_tanh_ref(-10)}},
      {"gelu", [](const Tensor& x) { return gelu(x); }, {kInf, -kInf, 0, -10}, {kInf, kNaN, 0, gelu_erf_ref(-10)}},
      {"relu", [](const Tensor& x) { return x.relu(); }, {kNaN, -kInf, kInf}, {kNaN, 0, kInf}},
      {"sign", [](const Tensor& x) { return sign(x); }, {kNaN, -0.0, -kInf, kInf}, {0, 0, -1, 1}},
      {"abs", [](const Tensor& x) { return x.abs(); }, {-0.0, -kInf, kNaN}, {0, kInf, kNaN}},
      {"neg", [](const Tensor& x) { return -x; }, {0, kInf}, {-0.0, -kInf}},
      {"sqrt", [](const Tensor& x) { return x.sqrt(); }, {-0.0, -1, kInf}, {-0.0, kNaN, kInf}},
      {"rsqrt", [](const Tensor& x) { return x.rsqrt(); }, {0, -0.0, kInf, -1}, {kInf, -kInf, 0, kNaN}},
      {"reciprocal", [](const Tensor& x) { return reciprocal(x); }, {0, -0.0, kInf}, {kInf, -kInf, 0}},
      {"pow(0.5)", [](const Tensor& x) { return x.pow(0.5); }, {-0.0, -kInf, kInf}, {-0.0, kNaN, kInf}},
      {"pow(0)", [](const Tensor& x) { return x.pow(0); }, {kNaN, kInf}, {1, 1}},
      {"erf", [](const Tensor& x) { return x.erf(); }, {kInf, -kInf, -0.0}, {1, -1, -0.0}},
      {"sin", [](const Tensor& x) { return x.sin(); }, {kInf, -0.0}, {kNaN, -0.0}},
      {"leaky_relu", [](const Tensor& x) { return leaky_relu(x, 0.5); }, {kNaN, -kInf, -0.0}, {kNaN, -kInf, -0.0}},
      {"clamp", [](const Tensor& x) { return x.clamp(0, 1); }, {kNaN}, {kNaN}},
  };
  for (const EdgeCase& c : cases)
    for (DType t : kFloat) {
      const std::string what = c.name + " " + std::string(dtype_name(t));
      std::vector<double> xs, want;
      for (size_t i = 0; i < c.x.size(); ++i) {
        if (t == DType::f16 && std::isfinite(c.x[i]) && std::abs(c.x[i]) > 65504) continue;  // not an f16 input
        xs.push_back(c.x[i]);
        want.push_back(c.want[i]);
      }
      const Tensor x = kiln::tensor(xs, std::nullopt, {.dtype = t});
      const Tensor y = c.call(x);
      for (size_t i = 0; i < want.size(); ++i) {
        if (t == DType::f16 && std::abs(want[i]) < 6e-8) want[i] = std::copysign(0.0, want[i]);  // below f16
        if (t == DType::f32 && std::abs(want[i]) < 1e-45) want[i] = std::copysign(0.0, want[i]);
        if (t == DType::f16 && std::abs(want[i]) > 65504) want[i] = std::copysign(kInf, want[i]);
      }
      expect_close(y, want, kt::tolerance(t), 0, what);
      for (size_t i = 0; i < want.size(); ++i)
        if (want[i] == 0 && !std::isnan(at(y, static_cast<int64_t>(i)))) {
          EXPECT_EQ(std::signbit(at(y, static_cast<int64_t>(i))), std::signbit(want[i])) << what << " element " << i;
        }
    }
}

TEST(Elementwise, IntegerExtremesWrapLikeTorch) {
  const int64_t lo64 = std::numeric_limits<int64_t>::min();
  const int32_t lo32 = std::numeric_limits<int32_t>::min();
  const Tensor i64 = kiln::tensor(std::vector<int64_t>{lo64, -3, 0, 4});
  const Tensor a = i64.abs(), n = -i64, s = sign(i64);
  EXPECT_EQ(a.data_ptr<int64_t>()[0], lo64);  // |INT64_MIN| wraps to itself
  EXPECT_EQ(a.data_ptr<int64_t>()[1], 3);
  EXPECT_EQ(n.data_ptr<int64_t>()[0], lo64);
  EXPECT_EQ(n.data_ptr<int64_t>()[3], -4);
  expect_close(s, {-1, -1, 0, 1}, 0, 0, "sign int64");
  const Tensor i32 = kiln::tensor(std::vector<int32_t>{lo32, 7});
  EXPECT_EQ((-i32).data_ptr<int32_t>()[0], lo32);
  EXPECT_EQ(i32.abs().data_ptr<int32_t>()[0], lo32);
  EXPECT_EQ((i32 + i32).data_ptr<int32_t>()[0], 0);  // wraps, as torch does
  expect_close(-kiln::tensor(std::vector<uint8_t>{0, 1, 255}), {0, 255, 1}, 0, 0, "uint8 neg wraps");
  const Tensor dividend = kiln::tensor(std::vector<int32_t>{lo32, -7, 7});
  expect_close(remainder(dividend, kiln::tensor(std::vector<int32_t>{-1, 3, -3})), {0, 2, -2}, 0, 0, "int remainder");
  // Integer pow with a negative tensor exponent follows torch: 1, -1 keep a value, others are 0.
  expect_close(kiln::tensor(std::vector<int64_t>{1, -1, -1, 2}).pow(kiln::tensor(std::vector<int64_t>{-3, -3, -2, -1})),
               {1, -1, 1, 0}, 0, 0, "int pow negative exponent");
  EXPECT_EQ(abs(kiln::tensor(std::vector<bool>{true, false})).dtype(), DType::boolean);
}

// ---- errors

TEST(Elementwise, Errors) {
  const Tensor f = zeros({3, 4});
  const Tensor ints = kiln::tensor(std::vector<int64_t>{1, 2, 3});
  expect_error([&] { f + zeros({5}); }, {"add", "[3, 4]", "[5]"});
  expect_error([&] { where(f > 0, f, zeros({2, 1, 5})); }, {"where", "[3, 4]", "[2, 1, 5]"});
  const Tensor has_zero = kiln::tensor(std::vector<int64_t>{1, 0, 2});
  expect_error([&] { remainder(ints, has_zero); }, {"remainder", "division by zero"});
  expect_error([&] { remainder(ints, scalar_tensor(0, DType::i64)); }, {"remainder", "division by zero"});
  expect_error([&] { where(f, f, f); }, {"where", "bool", "float32"});
  expect_error([&] { gelu(f, "fast"); }, {"gelu", "approximate", "fast"});
  expect_error([&] { -kiln::tensor(std::vector<bool>{true}); }, {"neg", "bool"});
  expect_error([&] { kiln::tensor(std::vector<bool>{true}) - kiln::tensor(std::vector<bool>{true}); }, {"sub", "bool"});
  expect_error([&] { f - kiln::tensor(std::vector<bool>{true}); }, {"sub", "bool", "float32"});
  expect_error([&] { ints.pow(-1); }, {"pow", "negative"});
  expect_error([&] { add(ints, ints, 2.5); }, {"add", "alpha", "int64"});
  expect_error([&] { f.clamp(std::nullopt, std::nullopt); }, {"clamp", "min", "max"});
  expect_error([&] { f.masked_fill(f, 1); }, {"masked_fill", "bool", "float32"});
  expect_error([&] { f.masked_fill(zeros({5}, {.dtype = DType::boolean}), 1); }, {"masked_fill", "[5]", "[3, 4]"});
  expect_error([&] { exp(Tensor()); }, {"exp", "undefined"});
  Tensor int_copy = ints.clone();
  expect_error([&] { int_copy.add_(kiln::tensor({0.5, 0.5, 0.5})); }, {"add_", "float32", "can't be cast", "int64"});
  expect_error([&] { int_copy.div_(2); }, {"div_", "int64"});
  Tensor expanded = zeros({3}).expand({4, 3});
  expect_error([&] { expanded.add_(ones({4, 3})); }, {"add_", "expanded"});
  Tensor small = zeros({3});
  expect_error([&] { small.mul_(ones({2, 3})); }, {"mul_", "[2, 3]", "[3]"});
}

}  // namespace

// An in-place op whose input is another view of the memory it writes would read overwritten
// elements; torch refuses it, and so does Kiln. The same view, or a disjoint one, is fine.
TEST(Elementwise, InPlaceInputOverlappingTheTargetInPartIsRefused) {
  Tensor x = arange(0, 9, 1).reshape({3, 3});
  expect_error([&] { x.add_(x.t()); }, {"add_", "shares memory with the tensor written in place", "clone()"});
  expect_error([&] { x.mul_(x.select(0, 1)); }, {"mul_", "shape [3]", "strides [1]"});
  expect_error([&] { x.slice(1, 0, 2).sub_(x.slice(1, 1, 3)); }, {"sub_"});
  EXPECT_EQ(kt::values(x), std::vector<double>({0, 1, 2, 3, 4, 5, 6, 7, 8})) << "a refused op wrote";

  x.add_(x);  // the same view: each element reads only itself
  EXPECT_EQ(kt::values(x), std::vector<double>({0, 2, 4, 6, 8, 10, 12, 14, 16}));
  Tensor row0 = x.select(0, 0);
  row0.add_(x.select(0, 2));  // disjoint rows of one storage
  EXPECT_EQ(kt::values(x), std::vector<double>({12, 16, 20, 6, 8, 10, 12, 14, 16}));
}
