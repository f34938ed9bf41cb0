// clip_grad_norm_ and clip_grad_value_: against PyTorch fixtures (2-, 1-, 3- and inf-norms,
// clipping and not, inf and nan gradients), an f64 naive reference, and the error cases.
#include <fstream>

#include "nn/optim/clip_grad.h"
#include "testing.h"

namespace kt = kiln::testing;
using namespace kiln;
using namespace kiln::optim;

namespace {

Json read_fixture(const std::string& name) {
  std::ifstream in(std::string(KILN_TEST_FIXTURES) + "/optim/" + name);
  EXPECT_TRUE(in.good()) << "missing fixture " << name << "; run tests/fixtures/make_optim_fixtures.py";
  return Json::parse(in);
}

// A number, or one of the strings "inf", "-inf", "nan" (JSON has no non-finite numbers).
double number(const Json& j) { return j.is_string() ? std::stod(j.get<std::string>()) : j.get<double>(); }

std::vector<double> numbers(const Json& j) {
  std::vector<double> out;
  for (const Json& v : j) out.push_back(number(v));
  return out;
}

// Parameters with the fixture's gradients in f32.
std::vector<Tensor> params_with_grads(const Json& fx) {
  std::vector<Tensor> params;
  for (size_t i = 0; i < fx["shapes"].size(); ++i) {
    const Dims shape = fx["shapes"][i].get<std::vector<int64_t>>();
    Tensor p = zeros(shape).requires_grad_();
    p.mutable_grad() = tensor(fx["grads"][i].get<std::vector<double>>(), shape).to(DType::f32);
    params.push_back(p);
  }
  return params;
}

}  // namespace

TEST(ClipGrad, NormMatchesTorch) {
  const Json fx = read_fixture("clip_grad.json");
  for (const Json& c : fx["norm_cases"]) {
    const std::string name = c["name"];
    std::vector<Tensor> params = params_with_grads(fx);
    if (!c["patch"].is_null()) {
      Tensor g = params[c["patch"][0].get<size_t>()].grad().view({-1});
      g.narrow(0, c["patch"][1].get<int64_t>(), 1).fill_(number(c["patch"][2]));
    }
    const double norm_type = number(c["norm_type"]);
    const Tensor total = clip_grad_norm_(params, c["max_norm"].get<double>(), norm_type);
    EXPECT_EQ(total.dtype(), DType::f32) << name;
    EXPECT_EQ(total.dim(), 0) << name;
    kt::expect_close(total, {number(c["total_norm"])}, 1e-6, 0, name + " total norm");
    for (size_t i = 0; i < params.size(); ++i)
      kt::expect_close(params[i].grad(), numbers(c["grads"][i]), 2e-6, 1e-7, name + " grad " + std::to_string(i));
  }
}

TEST(ClipGrad, ValueMatchesTorch) {
  const Json fx = read_fixture("clip_grad.json");
  std::vector<Tensor> params = params_with_grads(fx);
  clip_grad_value_(params, fx["value_case"]["clip_value"].get<double>());
  for (size_t i = 0; i < params.size(); ++i)
    kt::expect_close(params[i].grad(), numbers(fx["value_case"]["grads"][i]), 0, 0, "grad " + std::to_string(i));
}

// f64 gradients against a naive f64 computation of torch's formula; a parameter without a
// gradient is skipped.
TEST(ClipGrad, F64AgainstNaiveReference) {
  std::vector<Tensor> params = {zeros({3, 4}, {.dtype = DType::f64}).requires_grad_(),
                                zeros({5}, {.dtype = DType::f64}).requires_grad_(),
                                zeros({2}, {.dtype = DType::f64}).requires_grad_()};
  params[0].mutable_grad() = kt::random_tensor({3, 4}, DType::f64, -3, 3, 11);
  params[1].mutable_grad() = kt::random_tensor({5}, DType::f64, -3, 3, 12);
  for (double p : {2.0, 1.5, kInfNorm}) {
    const std::vector<double> g0 = kt::values(params[0].grad()), g1 = kt::values(params[1].grad());
    double total = 0;
    for (const auto* g : {&g0, &g1}) {
      double n = 0;
      for (double v : *g) n = std::isinf(p) ? std::max(n, std::abs(v)) : n + std::pow(std::abs(v), p);
      n = std::isinf(p) ? n : std::pow(n, 1 / p);
      total = std::isinf(p) ? std::max(total, n) : total + std::pow(n, p);
    }
    total = std::isinf(p) ? total : std::pow(total, 1 / p);
    const double max_norm = total / 3;
    const double coef = std::min(1.0, max_norm / (total + 1e-6));
    const Tensor got = clip_grad_norm_(params, max_norm, p);
    EXPECT_EQ(got.dtype(), DType::f64);
    kt::expect_close(got, {total}, 1e-12, 0, "total");
    std::vector<double> want0, want1;
    for (double v : g0) want0.push_back(v * coef);
    for (double v : g1) want1.push_back(v * coef);
    kt::expect_close(params[0].grad(), want0, 1e-12, 0, "grad 0");
    kt::expect_close(params[1].grad(), want1, 1e-12, 0, "grad 1");
    EXPECT_FALSE(params[2].grad().defined());
  }
}

// A gradient the caller holds is the one changed (in place, not replaced).
TEST(ClipGrad, ChangesGradientsInPlace) {
  Tensor p = zeros({2}).requires_grad_();
  Tensor g = tensor({3.0, 4.0});
  p.mutable_grad() = g;
  const Tensor total = clip_grad_norm_({p}, 1.0);
  EXPECT_EQ(total.item<double>(), 5.0);
  EXPECT_TRUE(p.grad().is_same(g));
  kt::expect_close(g, {3.0 / (5 + 1e-6), 4.0 / (5 + 1e-6)}, 1e-6, 0);
}

TEST(ClipGrad, NoGradientsGiveZero) {
  Tensor p = zeros({2}).requires_grad_();
  const Tensor total = clip_grad_norm_({p}, 1.0);
  EXPECT_EQ(total.item<double>(), 0.0);
  clip_grad_value_({p}, 1.0);
  EXPECT_FALSE(p.grad().defined());
}

TEST(ClipGrad, Errors) {
  Tensor p = zeros({3}).requires_grad_();
  p.mutable_grad() = tensor({1.0, kt::kInf, 2.0});
  kt::expect_error([&] { clip_grad_norm_({p}, 1.0, 2.0, true); }, {"clip_grad_norm_", "non-finite (inf)",
                                                                    "error_if_nonfinite"});
  EXPECT_EQ(kt::at(p.grad(), 1), kt::kInf);  // untouched by the failed call
  kt::expect_error([&] { clip_grad_norm_({p}, 1.0, 0.0); }, {"clip_grad_norm_", "norm_type must be > 0", "got 0"});
  kt::expect_error([&] { clip_grad_norm_({p}, 1.0, -2.0); }, {"norm_type", "-2"});
  Tensor q = zeros({2}, {.dtype = DType::f64}).requires_grad_();
  q.mutable_grad() = zeros({2}, {.dtype = DType::f64});
  kt::expect_error([&] { clip_grad_norm_({p, q}, 1.0); }, {"clip_grad_norm_", "float32", "float64"});
  kt::expect_error([&] { clip_grad_norm_({Tensor()}, 1.0); }, {"clip_grad_norm_", "parameter 0", "undefined"});
  kt::expect_error([&] { clip_grad_value_({p}, std::nan("")); }, {"clip_grad_value_", "nan"});
}
