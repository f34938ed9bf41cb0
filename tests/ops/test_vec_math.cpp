// The f32 lane math of kernels/cpu/vec_math.h (Note [f32 lane math]) through the ops that use it:
// exp, sin, cos, erf, both GELUs and their derivatives, and pow, against <cmath> in double on the
// same float inputs, in ulp of the float result. Inputs: a dense sweep of [-20, 20], random bit
// patterns over the whole float line (huge, tiny and subnormal values), and the specials. ctest
// runs it at every CPU level, so each level's lanes (SSE2 without FMA, AVX2, AVX-512) are held to
// the same bounds.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <sstream>

#include "tensor/dispatch.h"
#include "testing.h"

using namespace kiln;
namespace kt = kiln::testing;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<float> inputs() {
  std::vector<float> v;
  for (int i = -(1 << 19); i <= (1 << 19); ++i) v.push_back(static_cast<float>(i) * (20.0f / (1 << 19)));
  std::mt19937 gen(5);
  for (int i = 0; i < (1 << 19); ++i) v.push_back(std::bit_cast<float>(static_cast<uint32_t>(gen())));
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-45f, -1e-45f, 1e-38f, -1e-38f, 3.4e38f,
                            -3.4e38f, 88.7f, 88.8f, -103.9f, -104.0f, 131071.0f, 131073.0f, 1e30f, -1e30f};
  for (float s : specials) v.push_back(s);
  return v;
}

// The distance between the floats around |v|: the unit a float result is judged in.
double ulp_of(double v) {
  const float f = static_cast<float>(std::abs(v));
  if (!std::isfinite(f)) return std::ldexp(1.0, 104);  // the spacing just below FLT_MAX
  const float next = std::nextafter(f, INFINITY);
  return std::max(static_cast<double>(next) - static_cast<double>(f), std::ldexp(1.0, -149));
}

struct Worst {
  double ulps = 0;
  float x = 0;
  double got = 0, want = 0;
  int wrong_specials = 0;
  std::string first_special;
};

// The largest error of kiln's f32 op over the inputs, in ulp of `scale(x)` (the reference itself,
// unless a derivative names its largest term). Non-finite references must match exactly.
Worst measure(const std::function<Tensor(const Tensor&)>& op, const std::function<double(double)>& ref,
              const std::function<double(double)>& scale = nullptr) {
  const std::vector<float> xs = inputs();
  const Tensor x = kiln::tensor(std::vector<double>(xs.begin(), xs.end()), std::nullopt, {.dtype = DType::f32});
  const Tensor y = op(x);
  const float* py = y.data_ptr<float>();
  Worst w;
  for (size_t i = 0; i < xs.size(); ++i) {
    const double want = ref(static_cast<double>(xs[i]));
    const double got = py[i];
    const float want_f = static_cast<float>(want);
    if (std::isnan(want) || std::isinf(want_f)) {
      const bool ok = std::isnan(want) ? std::isnan(got) : got == static_cast<double>(want_f);
      if (!ok && w.wrong_specials++ == 0) {
        std::ostringstream s;
        s << "x=" << xs[i] << " got " << got << " want " << want;
        w.first_special = s.str();
      }
      continue;
    }
    if (want == 0 && got == 0 && std::signbit(want) != std::signbit(got) && w.wrong_specials++ == 0)
      w.first_special = "sign of zero at x=" + std::to_string(xs[i]);
    const double err = std::isnan(got) ? kInf : std::abs(got - want) / ulp_of(scale ? scale(xs[i]) : want);
    if (err > w.ulps) w = {err, xs[i], got, want, w.wrong_specials, w.first_special};
  }
  return w;
}

void expect_within(const char* name, const Worst& w, double bound) {
  EXPECT_EQ(w.wrong_specials, 0) << name << ": " << w.wrong_specials << " special values wrong, first " << w.first_special;
  EXPECT_LE(w.ulps, bound) << name << ": " << w.ulps << " ulp at x=" << w.x << " (got " << w.got << ", want " << w.want
                           << ")";
  std::printf("[ max error ] %-22s %.3f ulp at x=%.9g\n", name, w.ulps, static_cast<double>(w.x));
}

double phi(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }
double gelu_tanh_ref(double x) { return x / (1 + std::exp(-2 * 0.7978845608028654 * (x + 0.044715 * x * x * x))); }
// The tanh GELU's derivative 0.5 (1 + t) + 0.5 x (1 - t^2) a', t = tanh(a), written through
// s = sigmoid(2a) = 0.5 (1 + t) so that the negative tail keeps its relative accuracy in double:
// s (1 + x (1 - s) 2a'). `terms` is the sum of the two terms' magnitudes.
double gelu_tanh_derivative(double x, bool terms = false) {
  const double z = 2 * 0.7978845608028654 * (x + 0.044715 * x * x * x);
  const double dz = 2 * 0.7978845608028654 * (1 + 3 * 0.044715 * x * x);
  const double e = std::exp(-std::abs(z));
  const double s = z >= 0 ? 1 / (1 + e) : e / (1 + e), one_minus_s = z >= 0 ? e / (1 + e) : 1 / (1 + e);
  return terms ? s + std::abs(s * x * one_minus_s * dz) : s * (1 + x * one_minus_s * dz);
}

Tensor backward(Op op, const Tensor& x) {
  const Tensor g = kiln::ones_like(x);
  Tensor out = kiln::empty_like(x);
  if (op == Op::gelu_erf_backward) dispatch<Op::gelu_erf_backward>(Device::cpu(), g, x, out);
  else dispatch<Op::gelu_tanh_backward>(Device::cpu(), g, x, out);
  return out;
}

TEST(VecMath, ExpSinCosErfWithinBounds) {
  expect_within("exp", measure([](const Tensor& x) { return x.exp(); }, [](double v) { return std::exp(v); }), 1.0);
  expect_within("sin", measure([](const Tensor& x) { return x.sin(); }, [](double v) { return std::sin(v); }), 2.0);
  expect_within("cos", measure([](const Tensor& x) { return x.cos(); }, [](double v) { return std::cos(v); }), 2.0);
  expect_within("erf", measure([](const Tensor& x) { return x.erf(); }, [](double v) { return std::erf(v); }), 3.0);
}

TEST(VecMath, GeluWithinBounds) {
  expect_within("gelu", measure([](const Tensor& x) { return gelu(x); }, [](double v) { return v * phi(v); }), 7.0);
  expect_within("gelu(tanh)", measure([](const Tensor& x) { return gelu(x, "tanh"); }, gelu_tanh_ref), 3.5);
  // The derivatives cross zero near x = -0.75: judged in ulp of their largest term.
  expect_within("gelu backward",
                measure([](const Tensor& x) { return backward(Op::gelu_erf_backward, x); },
                        [](double v) { return phi(v) + v * std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI); },
                        [](double v) { return phi(v) + std::abs(v) * std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI); }),
                3.5);
  expect_within("gelu(tanh) backward", measure([](const Tensor& x) { return backward(Op::gelu_tanh_backward, x); },
                                               [](double v) { return gelu_tanh_derivative(v); },
                                               [](double v) { return gelu_tanh_derivative(v, true); }),
                5.0);
}

TEST(VecMath, PowWithinBounds) {
  // 3 takes torch's short form x x x, with two roundings; the others, float exp's 1 ulp.
  for (double e : {2.5, -1.3, 3.0, -3.0, 7.0, 0.25, 1.0 / 3}) {
    const float ef = static_cast<float>(e);  // torch casts the exponent to the tensor's dtype
    expect_within(("pow " + std::to_string(e)).c_str(),
                  measure([e](const Tensor& x) { return x.pow(e); }, [ef](double v) { return std::pow(v, double(ef)); }),
                  1.5);
  }
}

}  // namespace
