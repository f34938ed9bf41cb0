// Tests of the f16/bf16 CPU kernels that compute in f32 lanes (kernels/cpu/lanes16.h): conversions
// bit for bit against hand-checked values and the scalar Half/BFloat16 conversions; add, sub, mul,
// div, maximum, minimum, unary math, sum/mean/amax/amin/var, softmax/log_softmax, layer_norm and
// rms_norm against f64 references rounded once to the dtype and bit for bit against the f32
// kernels on the converted inputs, on contiguous, strided, broadcast and empty inputs with special
// values; and results that do not depend on the thread count. ctest runs it at every CPU level
// (Note [Tests at every CPU level]), so F16C and the integer lanes both answer.
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "autograd/ops/nn_ops.h"
#include "testing.h"

namespace kiln {
namespace {

namespace kt = kiln::testing;
using kt::kInf;
using kt::kNaN;

const DType k16[] = {DType::f16, DType::bf16};

// Significand bits (with the implicit one) and the least normal exponent of a 16-bit dtype.
int precision(DType t) { return t == DType::f16 ? 11 : 8; }
int min_exponent(DType t) { return t == DType::f16 ? -14 : -126; }
double max_finite(DType t) { return t == DType::f16 ? 65504.0 : 0x1.fep127; }
// One unit in the last place at 1: the relative spacing of the dtype's values.
double ulp1(DType t) { return std::ldexp(1.0, 1 - precision(t)); }

// v rounded once to the dtype (nearest, ties to even, overflow to inf), computed in double
// independently of Kiln: scaling by the spacing q at v's exponent is exact, and nearbyint rounds
// to nearest even.
double round_to(DType t, double v) {
  if (!std::isfinite(v) || v == 0) return v;
  const int e = std::max(std::ilogb(v), min_exponent(t));
  const double q = std::ldexp(1.0, e - (precision(t) - 1));
  const double r = std::nearbyint(v / q) * q;
  return std::abs(r) > max_finite(t) ? std::copysign(kInf, v) : r;
}

Tensor from_bits(const std::vector<uint16_t>& bits, DType t, const Dims& shape) {
  Tensor x = empty(shape, {.dtype = t});
  std::memcpy(x.data_ptr(), bits.data(), bits.size() * 2);
  return x;
}

// The raw bits of every element of a 16-bit or f32 tensor of any layout, in row-major order.
std::vector<uint32_t> bits_of(const Tensor& t) {
  std::vector<uint32_t> out(static_cast<size_t>(t.numel()));
  const int64_t es = static_cast<int64_t>(t.element_size());
  for (int64_t i = 0; i < t.numel(); ++i) {
    int64_t off = 0, flat = i;
    for (int d = t.dim() - 1; d >= 0; --d) {
      off += (flat % t.shape()[d]) * t.strides()[d];
      flat /= t.shape()[d];
    }
    uint32_t v = 0;
    std::memcpy(&v, static_cast<const char*>(t.data_ptr()) + off * es, static_cast<size_t>(es));
    out[static_cast<size_t>(i)] = v;
  }
  return out;
}

void expect_same_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  const std::vector<uint32_t> g = bits_of(got), w = bits_of(want);
  int reported = 0;
  for (size_t i = 0; i < g.size(); ++i)
    if (g[i] != w[i] && reported++ < 5) ADD_FAILURE() << what << ": element " << i << " has bits 0x" << std::hex << g[i] << ", expected 0x" << w[i];
}

// f32 bit patterns that exercise rounding into both 16-bit formats: every f16 value, the midpoints
// between neighbours (ties) and the floats just either side of them; every upper half of an f32
// with lower halves at and around bf16's tie; and special values.
std::vector<float> rounding_cases() {
  std::vector<float> v;
  for (uint32_t h = 0; h < 0x7c00u; ++h) {
    const double a = static_cast<double>(Half::from_bits(static_cast<uint16_t>(h)));
    const double b = static_cast<double>(Half::from_bits(static_cast<uint16_t>(h + 1)));
    const float mid = static_cast<float>((a + b) / 2);  // exact: 12 significant bits
    for (float f : {static_cast<float>(a), mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      v.push_back(f);
      v.push_back(-f);
    }
  }
  for (uint32_t hi = 0; hi < 0x10000u; ++hi)
    for (uint32_t lo : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu})
      v.push_back(std::bit_cast<float>(hi << 16 | lo));  // includes infinities and NaNs of every payload
  for (float f : {65504.0f, 65519.99f, 65520.0f, 1e-8f, 1e-45f, std::numeric_limits<float>::max(),
                  std::numeric_limits<float>::denorm_min(), 0x1p-25f, 0x1.8p-24f})
    v.push_back(f);
  return v;
}

TEST(LowpKernels, ConversionsToF32AreExact) {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  for (DType t : k16) {
    const Tensor x = from_bits(all, t, {256, 256});
    // Expected: bf16 is f32's upper half; f16 by Half's conversion, a signalling NaN made quiet.
    std::vector<uint32_t> want(65536);
    for (uint32_t h = 0; h < 65536; ++h) {
      uint32_t w = t == DType::bf16 ? h << 16 : std::bit_cast<uint32_t>(static_cast<float>(Half::from_bits(static_cast<uint16_t>(h))));
      if (t == DType::f16 && (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) w |= 0x00400000u;
      want[h] = w;
    }
    EXPECT_EQ(bits_of(x.to(DType::f32)), want) << t << " contiguous";
    std::vector<uint32_t> want_t(65536);  // the transposed view, read row-major
    for (uint32_t i = 0; i < 65536; ++i) want_t[i] = want[(i % 256) * 256 + i / 256];
    EXPECT_EQ(bits_of(x.t().to(DType::f32)), want_t) << t << " strided";
    EXPECT_EQ(bits_of(x.narrow(0, 7, 1).expand({3, 256}).to(DType::f32))[256 + 5], want[7 * 256 + 5]) << t << " broadcast";
    EXPECT_EQ(zeros({0, 4}, {.dtype = t}).to(DType::f32).numel(), 0);
  }
  // Hand-checked values.
  EXPECT_EQ(bits_of(from_bits({0x0001, 0x03ff, 0x7bff, 0xfc00}, DType::f16, {4}).to(DType::f32)),
            (std::vector<uint32_t>{0x33800000u, 0x387fc000u, 0x477fe000u, 0xff800000u}));
}

TEST(LowpKernels, ConversionsFromF32RoundToNearestEven) {
  const std::vector<float> cases = rounding_cases();
  const Tensor x = tensor(cases);
  for (DType t : k16) {
    std::vector<uint32_t> want(cases.size());
    for (size_t i = 0; i < cases.size(); ++i)
      want[i] = t == DType::f16 ? Half(cases[i]).bits : BFloat16(cases[i]).bits;
    EXPECT_EQ(bits_of(x.to(t)), want) << t << " contiguous";
    const Tensor strided = x.slice(0, 1, x.numel(), 3);  // every third element
    std::vector<uint32_t> want_s;
    for (size_t i = 1; i < cases.size(); i += 3) want_s.push_back(want[i]);
    EXPECT_EQ(bits_of(strided.to(t)), want_s) << t << " strided";
    EXPECT_EQ(x.narrow(0, 0, 0).to(t).numel(), 0);
    // The f64 rule, for the finite cases: rounded once to the nearest value, ties to even.
    const std::vector<double> got = kt::values(x.to(t));
    for (size_t i = 0; i < cases.size(); ++i)
      if (!std::isnan(cases[i])) {
        ASSERT_EQ(got[i], round_to(t, cases[i])) << t << " from " << cases[i];
      }
  }
  // Hand-checked: 65520 is f16's tie between 65504 and 2^16, which rounds to inf; ties to even.
  auto f16 = [](float f) { return bits_of(tensor(std::vector<float>{f}).to(DType::f16))[0]; };
  auto bf16 = [](float f) { return bits_of(tensor(std::vector<float>{f}).to(DType::bf16))[0]; };
  EXPECT_EQ(f16(65520.0f), 0x7c00u);
  EXPECT_EQ(f16(65519.0f), 0x7bffu);
  EXPECT_EQ(f16(1.0f + 0x1p-11f), 0x3c00u);
  EXPECT_EQ(f16(1.0f + 3 * 0x1p-11f), 0x3c02u);
  EXPECT_EQ(f16(0x1p-25f), 0x0000u);  // half the least subnormal: a tie, to even (zero)
  EXPECT_EQ(f16(0x1.8p-24f), 0x0002u);
  EXPECT_EQ(bf16(std::bit_cast<float>(0x3f808000u)), 0x3f80u);
  EXPECT_EQ(bf16(std::bit_cast<float>(0x3f818000u)), 0x3f82u);
  EXPECT_EQ(bf16(std::numeric_limits<float>::max()), 0x7f80u);      // past bf16's max: inf
  EXPECT_EQ(bf16(std::bit_cast<float>(0x7f7f7fffu)), 0x7f7fu);      // bf16's max stays
  EXPECT_EQ(bf16(std::bit_cast<float>(0x00400000u)), 0x0040u);      // an f32 subnormal is kept
  EXPECT_EQ(bf16(std::bit_cast<float>(0x7f800001u)) & 0x7fc0u, 0x7fc0u);  // NaN stays a (quiet) NaN
}

// Inputs with special values first: zeros, infinities, NaN, subnormals, and values whose sum or
// product overflows the dtype; then uniform values in [-4, 4).
Tensor special_inputs(DType t, int64_t n, uint64_t seed, bool second) {
  std::vector<double> s = {0.0, -0.0, kInf, -kInf, kNaN, 1.0, -3.5, max_finite(t), -max_finite(t), 0.5 * max_finite(t),
                           std::ldexp(1.0, min_exponent(t) - 3), std::ldexp(1.0, min_exponent(t))};
  if (second) std::swap(s[2], s[5]);  // inf against 1, 1 against inf, ...
  const Tensor r = kt::random_tensor({n}, DType::f64, -4, 4, seed);
  std::vector<double> v = kt::values(r);
  for (size_t i = 0; i < s.size(); ++i) v[i] = s[i];
  return tensor(v).to(t);
}

TEST(LowpKernels, BinaryOpsRoundOnceFromTheExactResult) {
  using F = double (*)(double, double);
  struct Op {
    const char* name;
    Tensor (*kiln)(const Tensor&, const Tensor&);
    F f;
  };
  const Op ops[] = {
      {"add", [](const Tensor& a, const Tensor& b) { return a + b; }, [](double a, double b) { return a + b; }},
      {"sub", [](const Tensor& a, const Tensor& b) { return a - b; }, [](double a, double b) { return a - b; }},
      {"mul", [](const Tensor& a, const Tensor& b) { return a * b; }, [](double a, double b) { return a * b; }},
      {"div", [](const Tensor& a, const Tensor& b) { return a / b; }, [](double a, double b) { return a / b; }},
      {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); },
       [](double a, double b) { return std::isnan(a) || a > b ? a : b; }},
      {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); },
       [](double a, double b) { return std::isnan(a) || a < b ? a : b; }},
  };
  // The reference: the exact result rounded once. The kernels compute in f32 and round to the
  // dtype; for +, -, *, / that is the same value, as f32 has at least 2p + 2 bits for p = 11 (8).
  auto check = [&](const Op& op, const Tensor& a, const Tensor& b, const std::string& what) {
    const Tensor y = op.kiln(a, b);
    const Tensor ea = a.expand(y.shape()), eb = b.expand(y.shape());
    std::vector<double> want(static_cast<size_t>(y.numel()));
    for (int64_t i = 0; i < y.numel(); ++i) want[static_cast<size_t>(i)] = round_to(y.dtype(), op.f(kt::at(ea, i), kt::at(eb, i)));
    kt::expect_close(y, want, 0, 0, std::string(op.name) + " " + what);
    // And bit for bit the scalar path's value: the op in float on each pair, rounded once.
    const Tensor y32 = op.kiln(a.to(DType::f32), b.to(DType::f32)).to(y.dtype());
    expect_same_bits(y, y32, std::string(op.name) + " vs f32 " + what);
  };
  for (DType t : k16) {
    const Tensor a = special_inputs(t, 1000, 1, false).view({40, 25}), b = special_inputs(t, 1000, 2, true).view({40, 25});
    for (const Op& op : ops) {
      check(op, a, b, "contiguous");
      check(op, a.t(), b.t().contiguous(), "transposed");
      check(op, a.slice(1, 0, 24, 2), b.slice(1, 1, 25, 2), "sliced");
      check(op, a, b.narrow(0, 3, 1), "broadcast row");
      check(op, a, b.narrow(0, 3, 1).narrow(1, 4, 1).squeeze(), "0-d scalar");
      check(op, a.narrow(0, 0, 0), b.narrow(0, 0, 0), "empty");
      check(op, a.narrow(1, 0, 7), b.narrow(1, 3, 7), "rows of 7");  // ragged register tails
    }
  }
}

TEST(LowpKernels, UnaryMathIsTheF32KernelRoundedOnce) {
  using U = Tensor (*)(const Tensor&);
  struct Op {
    const char* name;
    U kiln;
    double (*f)(double);
  };
  const Op ops[] = {{"exp", [](const Tensor& x) { return exp(x); }, [](double v) { return std::exp(v); }},
                    {"sqrt", [](const Tensor& x) { return sqrt(x); }, [](double v) { return std::sqrt(v); }},
                    {"tanh", [](const Tensor& x) { return tanh(x); }, [](double v) { return std::tanh(v); }},
                    {"log", [](const Tensor& x) { return log(x); }, [](double v) { return std::log(v); }},
                    {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, [](double v) { return 1 / (1 + std::exp(-v)); }}};
  for (DType t : k16) {
    const Tensor x = special_inputs(t, 600, 3, false).abs().view({20, 30});  // sqrt and log want x >= 0
    for (const Op& op : ops) {
      for (const Tensor& in : {x, x.t(), x.slice(1, 1, 30, 3), x.narrow(0, 2, 1).expand({5, 30}), x.narrow(0, 0, 0)}) {
        const Tensor y = op.kiln(in);
        expect_same_bits(y, op.kiln(in.to(DType::f32)).to(t), std::string(op.name) + " vs f32");
        // f32 math is within a few f32 ulps, so the result is the f64 value rounded once, or a
        // neighbour when it lies that close to a rounding boundary: within 1 ulp of the dtype
        // (atol: the dtype's least subnormal, for results that underflow).
        std::vector<double> want = kt::values(in);
        for (double& v : want) v = op.f(v);
        kt::expect_close(y, want, ulp1(t), std::ldexp(1.0, min_exponent(t) - precision(t) + 1), op.name);
      }
    }
  }
}

// The GELU backward kernels on 16-bit tensors: the f32 lanes on the converted inputs, rounded once,
// for dense runs (converted a register at a time) and other layouts (element by element) alike.
TEST(LowpKernels, GeluBackwardIsTheF32KernelRoundedOnce) {
  for (DType t : k16) {
    const Tensor x = special_inputs(t, 3000, 5, false).view({60, 50});
    const Tensor g = special_inputs(t, 3000, 6, true).view({60, 50});
    for (const char* approximate : {"none", "tanh"}) {
      for (const bool transposed : {false, true}) {
        const Tensor xin = transposed ? x.t() : x, gin = transposed ? g.t() : g;
        const Tensor x16 = xin.detach().requires_grad_(true), x32 = xin.to(DType::f32).requires_grad_(true);
        gelu(x16, approximate).backward(gin);
        gelu(x32, approximate).backward(gin.to(DType::f32));
        const std::string what = std::string("gelu ") + approximate + " backward" + (transposed ? " transposed" : "");
        // Every value, and the sign of every zero, as the f32 kernel's rounded once. A NaN's sign is
        // not compared: where both operands of g * f'(x) are NaN, which one the product returns
        // depends on the order the compiler gave the multiply, and the scalar conversion of other
        // layouts makes every NaN positive (as torch's c10 one does).
        const std::vector<double> got = kt::values(x16.grad()), want = kt::values(x32.grad().to(t));
        for (size_t i = 0; i < got.size(); ++i) {
          const bool same = (std::isnan(got[i]) && std::isnan(want[i])) ||
                            (got[i] == want[i] && std::signbit(got[i]) == std::signbit(want[i]));
          EXPECT_TRUE(same) << what << ": element " << i << " is " << got[i] << ", expected " << want[i];
        }
      }
    }
  }
}

TEST(LowpKernels, ReductionsAccumulateInF32) {
  for (DType t : k16) {
    // 3 x 20000: rows longer than a piece (16384), so pieces merge; dim 0 takes the column path.
    // Values k / 128 for integers k in [-128, 256): exact in both dtypes, and every partial sum
    // (|s| < 2^17, a multiple of 2^-7) is exact in f32, so f32 accumulation in any order gives the
    // exact sum, and the result must be it rounded once: a lost or doubled element shows.
    std::vector<double> xv = kt::values(kt::random_tensor({3, 20000}, DType::i64, -128, 256, 4));
    for (double& e : xv) e /= 128;
    const Tensor x = tensor(xv, Dims{3, 20000}).to(t);
    for (const Tensor& in : {x, x.t().contiguous().t(), x.narrow(0, 1, 1).expand({3, 20000}), x.slice(1, 0, 20000, 7)}) {
      const std::vector<double> iv = kt::values(in);
      const int64_t R = in.size(0), C = in.size(1);
      auto at = [&](int64_t r, int64_t c) { return iv[static_cast<size_t>(r * C + c)]; };
      double total = 0;
      for (double e : iv) total += e;
      EXPECT_EQ(kt::at(in.sum(), 0), round_to(t, total)) << t;
      // The mean: the exact sum divided in f32, then rounded; one rounding of the quotient, as
      // f32 has at least 2p + 2 bits.
      EXPECT_EQ(kt::at(in.mean(), 0), round_to(t, total / static_cast<double>(R * C))) << t;
      const Tensor rows = in.sum({1}), cols = in.sum({0}), mx = in.amax({1}), mn = in.amin({1}), var = in.var({1});
      for (int64_t r = 0; r < R; ++r) {
        double sr = 0, hi = -kInf, lo = kInf, sq = 0;
        for (int64_t c = 0; c < C; ++c) {
          sr += at(r, c);
          hi = std::max(hi, at(r, c));
          lo = std::min(lo, at(r, c));
        }
        for (int64_t c = 0; c < C; ++c) sq += (at(r, c) - sr / C) * (at(r, c) - sr / C);
        EXPECT_EQ(kt::at(rows, r), round_to(t, sr)) << t << " row " << r;
        EXPECT_EQ(kt::at(mx, r), hi) << t;
        EXPECT_EQ(kt::at(mn, r), lo) << t;
        // var: two passes in f32 over deviations |x - m| <= 1.5, so the f32 accumulation error is
        // below n' 2^-24 sum (x - m)^2 with n' = C / 16 + 32 adds on one path (16 lanes, then the
        // merge trees): ~2e-4 of var, inside the final rounding's ulp.
        const double v = sq / static_cast<double>(C - 1);
        EXPECT_NEAR(kt::at(var, r), v, ulp1(t) * v + static_cast<double>(C / 16 + 32) * 0x1p-24 * v) << t;
      }
      for (int64_t c = 0; c < C; c += 997) {
        double sc = 0;
        for (int64_t r = 0; r < R; ++r) sc += at(r, c);
        EXPECT_EQ(kt::at(cols, c), round_to(t, sc)) << t << " column " << c;
      }
    }
    // f32 accumulation: 5096 ones sum exactly before the one rounding (f16 accumulation would stop at 2048).
    EXPECT_EQ(kt::at(ones({5096}, {.dtype = t}).sum(), 0), round_to(t, 5096));
    EXPECT_EQ(kt::at(ones({5096}, {.dtype = t}).mean(), 0), 1.0);
    // Special values: NaN wins, inf stays, an f32 sum past the dtype's max rounds to inf.
    const Tensor sp = tensor(std::vector<double>{1, kNaN, 2, kInf}).to(t);
    EXPECT_TRUE(std::isnan(kt::at(sp.sum(), 0)));
    EXPECT_TRUE(std::isnan(kt::at(sp.amax(), 0)));
    EXPECT_EQ(kt::at(sp.narrow(0, 2, 2).sum(), 0), kInf);
    EXPECT_EQ(kt::at(full({4}, max_finite(t), {.dtype = t}).sum(), 0), kInf);
    // Empty inputs: the sum is 0, the mean NaN.
    EXPECT_EQ(kt::at(empty({0, 3}, {.dtype = t}).sum(), 0), 0.0);
    EXPECT_TRUE(std::isnan(kt::at(empty({0}, {.dtype = t}).mean(), 0)));
    EXPECT_EQ(empty({0, 3}, {.dtype = t}).sum({1}).numel(), 0);
  }
}

// softmax and log_softmax of rows in f64, of the converted inputs.
std::vector<double> ref_softmax(const std::vector<double>& x, int64_t rows, int64_t n, bool log) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = &x[static_cast<size_t>(r * n)];
    double m = -kInf, s = 0;
    for (int64_t j = 0; j < n; ++j) m = std::max(m, xr[j]);
    for (int64_t j = 0; j < n; ++j) s += std::exp(xr[j] - m);
    for (int64_t j = 0; j < n; ++j) y[static_cast<size_t>(r * n + j)] = log ? xr[j] - m - std::log(s) : std::exp(xr[j] - m) / s;
  }
  return y;
}

TEST(LowpKernels, SoftmaxRowsComputeInF32) {
  for (DType t : k16) {
    for (int64_t n : {1000, 10, 37}) {  // 10: Note [Narrow rows]; 37: a ragged register tail
      Tensor x = kt::random_tensor({12, n}, t, -8, 8, 5);
      for (bool log : {false, true}) {
        // The f32 kernel on the same layout (narrow rows and strided rows take different paths).
        auto layouts = [n](const Tensor& v) {
          return std::vector<Tensor>{v, v.t().contiguous().t(), v.narrow(0, 3, 1).expand({4, n})};
        };
        const std::vector<Tensor> ins = layouts(x), ins32 = layouts(x.to(DType::f32));
        for (size_t l = 0; l < ins.size(); ++l) {
          const Tensor& in = ins[l];
          const Tensor y = log ? log_softmax(in, 1) : softmax(in, 1);
          const Tensor y32 = log ? log_softmax(ins32[l], 1) : softmax(ins32[l], 1);
          const std::string what = std::string(log ? "log_softmax" : "softmax") + " of rows of " + std::to_string(n) +
                                   " in layout " + std::to_string(l) + ", " + std::string(dtype_name(t));
          expect_same_bits(y, y32.to(t), what + " vs f32");
          // f32's error is ~1e-6 of the row's scale (|x - max| <= 16 and log(sum) <= log(1000) for
          // log_softmax; 1 for softmax); the rounding to the dtype adds at most an ulp of the value.
          const double atol = log ? 16 * 1e-6 : 1e-6;
          kt::expect_close(y, ref_softmax(kt::values(in), in.size(0), n, log), ulp1(t), atol, what);
        }
      }
    }
    // Along dim 0 (the inner-dim path), empty, and special values: a -inf entry gets 0, a NaN row is NaN.
    const Tensor x = kt::random_tensor({30, 6}, t, -3, 3, 6);
    expect_same_bits(softmax(x, 0), softmax(x.to(DType::f32), 0).to(t), "softmax dim 0");
    EXPECT_EQ(softmax(empty({0, 5}, {.dtype = t}), 1).numel(), 0);
    const Tensor sp = tensor(std::vector<double>{0, -kInf, 1, 2, kNaN, 0, 0, 0, max_finite(t), max_finite(t), 0, 0}, Dims{3, 4}).to(t);
    const std::vector<double> y = kt::values(softmax(sp, 1));
    EXPECT_EQ(y[1], 0.0);
    EXPECT_TRUE(std::isnan(y[4]) && std::isnan(y[7]));
    EXPECT_EQ(y[8], round_to(t, 0.5));  // no overflow from the max: it is subtracted first
  }
}

TEST(LowpKernels, LayerNormForwardAndBackwardInF32) {
  const int64_t R = 9, D = 300;
  for (DType t : k16) {
    const Tensor x = kt::random_tensor({R, D}, t, -3, 5, 7), w = kt::random_tensor({D}, t, 0.5, 2, 8);
    const Tensor b = kt::random_tensor({D}, t, -1, 1, 9), gy = kt::random_tensor({R, D}, t, -1, 1, 10);
    auto f32 = [](const Tensor& v) { return v.to(DType::f32); };
    for (const Tensor& in : {x, x.t().contiguous().t()}) {
      const NormOutput o = layer_norm_forward(in, {D}, w, b);
      const NormOutput o32 = layer_norm_forward(f32(in), {D}, f32(w), f32(b));
      expect_same_bits(o.output, o32.output.to(t), "layer_norm vs f32");
      expect_same_bits(layer_norm(in, {D}), layer_norm(f32(in), {D}).to(t), "layer_norm without affine vs f32");
      const LayerGrads g = layer_norm_backward(gy, in, {D}, w, o.mean, o.rstd);
      const LayerGrads g32 = layer_norm_backward(f32(gy), f32(in), {D}, f32(w), o32.mean, o32.rstd);
      expect_same_bits(g.input, g32.input.to(t), "grad input vs f32");
      expect_same_bits(g.weight, g32.weight.to(t), "grad weight vs f32");
      expect_same_bits(g.bias, g32.bias.to(t), "grad bias vs f32");
      // rms_norm runs the same row code (Note [16-bit rows in norms]); eps given, as its default
      // is the dtype's epsilon.
      const NormOutput q = rms_norm_forward(in, {D}, w, 1e-6), q32 = rms_norm_forward(f32(in), {D}, f32(w), 1e-6);
      expect_same_bits(q.output, q32.output.to(t), "rms_norm vs f32");
      const LayerGrads h = rms_norm_backward(gy, in, {D}, w, q.rstd);
      const LayerGrads h32 = rms_norm_backward(f32(gy), f32(in), {D}, f32(w), q32.rstd);
      expect_same_bits(h.input, h32.input.to(t), "rms_norm grad input vs f32");
      expect_same_bits(h.weight, h32.weight.to(t), "rms_norm grad weight vs f32");
      // f64 references on the converted values. Statistics are in double; centring and scaling in
      // f32 lose ~1e-6 of the scale (|xhat| <= 4, |w| <= 2, |b| <= 1), then one rounding to the dtype.
      const std::vector<double> xv = kt::values(in), wv = kt::values(w), bv = kt::values(b), gv = kt::values(gy);
      std::vector<double> y(xv.size()), gx(xv.size()), gw(static_cast<size_t>(D)), gb(static_cast<size_t>(D));
      for (int64_t r = 0; r < R; ++r) {
        double m = 0, var = 0, sg = 0, sgx = 0;
        for (int64_t j = 0; j < D; ++j) m += xv[static_cast<size_t>(r * D + j)] / D;
        for (int64_t j = 0; j < D; ++j) var += std::pow(xv[static_cast<size_t>(r * D + j)] - m, 2) / D;
        const double rs = 1 / std::sqrt(var + 1e-5);
        for (int64_t j = 0; j < D; ++j) {
          const size_t i = static_cast<size_t>(r * D + j);
          const double xhat = (xv[i] - m) * rs, g = gv[i] * wv[static_cast<size_t>(j)];
          y[i] = xhat * wv[static_cast<size_t>(j)] + bv[static_cast<size_t>(j)];
          sg += g;
          sgx += g * xhat;
          gw[static_cast<size_t>(j)] += gv[i] * xhat;
          gb[static_cast<size_t>(j)] += gv[i];
        }
        for (int64_t j = 0; j < D; ++j) {
          const size_t i = static_cast<size_t>(r * D + j);
          gx[i] = rs * (gv[i] * wv[static_cast<size_t>(j)] - sg / D - (xv[i] - m) * rs * sgx / D);
        }
      }
      kt::expect_close(o.output, y, ulp1(t), 1e-5 * 9, "layer_norm reference");
      kt::expect_close(g.input, gx, ulp1(t), 1e-5 * 8, "grad input reference");
      kt::expect_close(g.weight, gw, ulp1(t), 1e-5 * 4 * R, "grad weight reference");
      kt::expect_close(g.bias, gb, ulp1(t), 1e-5 * R, "grad bias reference");
    }
    // Special values: a NaN poisons its row only; a constant row normalises to the bias.
    Tensor sp = kt::random_tensor({2, 8}, t, -1, 1, 11);
    sp.narrow(0, 0, 1).narrow(1, 2, 1).fill_(kNaN);
    sp.narrow(0, 1, 1).fill_(3.0);
    const std::vector<double> ys = kt::values(layer_norm(sp, {8}, {}, full({8}, 0.25, {.dtype = t})));
    for (int j = 0; j < 8; ++j) EXPECT_TRUE(std::isnan(ys[static_cast<size_t>(j)])) << j;
    for (int j = 8; j < 16; ++j) EXPECT_EQ(ys[static_cast<size_t>(j)], 0.25) << j;
    EXPECT_EQ(layer_norm(empty({0, 8}, {.dtype = t}), {8}).numel(), 0);
  }
}

TEST(LowpKernels, ResultsDoNotDependOnThreadCount) {
  for (DType t : k16) {
    const Tensor a = kt::random_tensor({1 << 20}, t, -1, 1, 12), b = kt::random_tensor({1 << 20}, t, -1, 1, 13);
    const Tensor m = a.view({1024, 1024});
    auto run_all = [&] {
      return std::vector<Tensor>{a + b, a * b, exp(a), tanh(a), a.to(DType::f32), a.to(DType::f32).to(t), a.sum(),
                                 m.sum({0}), m.sum({1}), m.var({0}), a.amax(), softmax(m, 1), log_softmax(m, 0),
                                 layer_norm(m, {1024})};
    };
    const int threads = get_num_threads();
    set_num_threads(1);
    const std::vector<Tensor> one = run_all();
    set_num_threads(std::max(threads, 2));
    const std::vector<Tensor> many = run_all();
    set_num_threads(threads);
    for (size_t i = 0; i < one.size(); ++i) expect_same_bits(many[i], one[i], "result " + std::to_string(i));
  }
}

}  // namespace
}  // namespace kiln
