// kiln::amp::GradScaler: a skipped step leaves weights and Adam's state byte-identical; growth and
// backoff; unscale_ + clipping equal to the unscaled run for every optimizer; two optimizers; the
// scale sequence and weights of torch.amp.GradScaler (tests/fixtures/make_grad_scaler_fixtures.py);
// f16 gradients that underflow without scaling; the inf check and 16-bit arithmetic per dtype.
// The errors, the disabled pass-through and state_dict resume are in test_grad_scaler_state.cpp.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <utility>

#include "testing.h"

namespace kt = kiln::testing;
namespace F = kiln::nn::functional;
using namespace kiln;
using amp::GradScaler;

namespace {

// Linear(3, 8) - ReLU - Linear(8, 2) as four leaf tensors (w1, b1, w2, b2).
struct Mlp {
  std::vector<Tensor> params;
  explicit Mlp(uint64_t seed) {
    Generator gen(seed);
    for (const Dims& shape : {Dims{8, 3}, Dims{8}, Dims{2, 8}, Dims{2}})
      params.push_back((randn(shape, {}, &gen) * 0.5).requires_grad_());
  }
  Tensor loss(const Tensor& x, const Tensor& y) const {
    return F::mse_loss(linear(relu(linear(x, params[0], params[1])), params[2], params[3]), y);
  }
};

std::pair<Tensor, Tensor> batch(int step) {
  Generator gen(100 + static_cast<uint64_t>(step));
  Tensor x = randn({16, 3}, {}, &gen);
  return {x, randn({16, 2}, {}, &gen)};
}

void set_element(const Tensor& t, int64_t index, double value) { t.view({-1}).narrow(0, index, 1).fill_(value); }

// Kiln's optimizers take f32/f64 parameters only; a 16-bit one goes into the group directly (as a
// bf16-true optimizer would hold it), so that unscale_ meets 16-bit gradients of their own dtype.
void hold(optim::Optimizer& opt, const Tensor& param) { opt.param_groups()[0].params = {param}; }

bool same_bytes(const Tensor& a, const Tensor& b) {
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return ca.dtype() == cb.dtype() && ca.shape() == cb.shape() &&
         std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

std::vector<Tensor> clones(const std::vector<Tensor>& ts) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(t.detach().clone());
  return out;
}

// One iteration on batch `step`; `poison` overwrites element 5 of w2's (scaled) gradient after backward.
bool scaled_step(GradScaler& scaler, optim::Optimizer& opt, const Mlp& m, int step, std::optional<double> poison = {}) {
  opt.zero_grad();
  auto [x, y] = batch(step);
  scaler.scale(m.loss(x, y)).backward();
  if (poison) set_element(m.params[2].grad(), 5, *poison);
  const bool stepped = scaler.step(opt);
  scaler.update();
  return stepped;
}

TEST(GradScaler, SkippedStepLeavesWeightsAndAdamStateByteIdentical) {
  for (double poison : {kt::kInf, kt::kNaN}) {
    SCOPED_TRACE(poison);
    Mlp m(1);
    optim::Adam opt(m.params, {.lr = 0.01});
    GradScaler scaler;
    for (int s = 0; s < 3; ++s) ASSERT_TRUE(scaled_step(scaler, opt, m, s));
    ASSERT_EQ(scaler.get_scale(), 65536.0);
    const std::vector<Tensor> weights = clones(m.params);
    const State state = opt.state_dict();
    ASSERT_EQ(state.tensors.size(), 12u);  // step, exp_avg, exp_avg_sq of each parameter

    EXPECT_FALSE(scaled_step(scaler, opt, m, 3, poison));
    for (size_t i = 0; i < weights.size(); ++i) EXPECT_TRUE(same_bytes(weights[i], m.params[i])) << "param " << i;
    const State after = opt.state_dict();
    ASSERT_EQ(after.tensors.keys(), state.tensors.keys());
    for (const auto& [name, t] : state.tensors) EXPECT_TRUE(same_bytes(t, after.tensors.at(name))) << name;
    EXPECT_EQ(scaler.get_scale(), 32768.0);
    EXPECT_EQ(scaler.growth_tracker(), 0);

    EXPECT_TRUE(scaled_step(scaler, opt, m, 4));
    EXPECT_FALSE(same_bytes(weights[0], m.params[0]));
    EXPECT_EQ(opt.state_dict().tensors.at("state.0.step").item<double>(), 4.0);
    EXPECT_EQ(scaler.get_scale(), 32768.0);
    EXPECT_EQ(scaler.growth_tracker(), 1);
  }
}

TEST(GradScaler, GrowsAfterGrowthIntervalCleanSteps) {
  Mlp m(2);
  optim::SGD opt(m.params, {.lr = 0.01});
  GradScaler scaler({.growth_interval = 3});
  const int64_t trackers[] = {1, 2, 0, 1, 2, 0};
  const double scales[] = {65536, 65536, 131072, 131072, 131072, 262144};
  for (int s = 0; s < 6; ++s) {
    ASSERT_TRUE(scaled_step(scaler, opt, m, s));
    EXPECT_EQ(scaler.growth_tracker(), trackers[s]) << "step " << s;
    EXPECT_EQ(scaler.get_scale(), scales[s]) << "step " << s;
  }
}

TEST(GradScaler, UnscaleThenClipEqualsTheUnscaledRunForEveryOptimizer) {
  using Make = std::function<std::unique_ptr<optim::Optimizer>(const std::vector<Tensor>&)>;
  const std::vector<std::pair<const char*, Make>> optimizers = {
      {"SGD", [](auto& p) { return std::make_unique<optim::SGD>(p, optim::SGDOptions{.lr = 0.05, .momentum = 0.9}); }},
      {"Adam", [](auto& p) { return std::make_unique<optim::Adam>(p, optim::AdamOptions{.lr = 0.01}); }},
      {"AdamW", [](auto& p) { return std::make_unique<optim::AdamW>(p, optim::AdamOptions{.lr = 0.01}); }},
      {"RMSprop", [](auto& p) { return std::make_unique<optim::RMSprop>(p, optim::RMSpropOptions{.lr = 0.01}); }},
      {"Adagrad", [](auto& p) { return std::make_unique<optim::Adagrad>(p, optim::AdagradOptions{.lr = 0.1}); }},
  };
  for (const auto& [name, make] : optimizers) {
    SCOPED_TRACE(name);
    Mlp plain(3), scaled(3);
    auto opt_plain = make(plain.params), opt_scaled = make(scaled.params);
    GradScaler scaler;  // 2^16: unscaling an f32 gradient is exact, so the runs agree bit for bit
    for (int s = 0; s < 4; ++s) {
      auto [x, y] = batch(s);
      opt_plain->zero_grad();
      plain.loss(x, y).backward();
      opt_scaled->zero_grad();
      scaler.scale(scaled.loss(x, y)).backward();
      EXPECT_FALSE(same_bytes(plain.params[0].grad(), scaled.params[0].grad()));  // still scaled
      scaler.unscale_(*opt_scaled);
      for (size_t i = 0; i < plain.params.size(); ++i)
        ASSERT_TRUE(same_bytes(plain.params[i].grad(), scaled.params[i].grad())) << "grad " << i << " step " << s;
      const double norm = optim::clip_grad_norm_(plain.params, 0.5).item<double>();
      EXPECT_EQ(optim::clip_grad_norm_(scaled.params, 0.5).item<double>(), norm);
      if (s == 0) {
        EXPECT_GT(norm, 0.5);  // the clip acts
      }
      opt_plain->step();
      EXPECT_TRUE(scaler.step(*opt_scaled));
      scaler.update();
      for (size_t i = 0; i < plain.params.size(); ++i)
        ASSERT_TRUE(same_bytes(plain.params[i], scaled.params[i])) << "param " << i << " step " << s;
    }
  }
}

TEST(GradScaler, TwoOptimizersOneUpdate) {
  Mlp m(4);
  optim::SGD first({m.params[0], m.params[1]}, {.lr = 0.05});
  optim::Adam second({m.params[2], m.params[3]}, {.lr = 0.01});
  GradScaler scaler;
  auto iteration = [&](int step, bool poison_second) {
    first.zero_grad();
    second.zero_grad();
    auto [x, y] = batch(step);
    scaler.scale(m.loss(x, y)).backward();
    if (poison_second) set_element(m.params[3].grad(), 0, kt::kInf);
    return std::pair{scaler.step(first), scaler.step(second)};
  };
  const std::vector<Tensor> before = clones(m.params);
  EXPECT_EQ(iteration(0, true), std::pair(true, false));
  EXPECT_EQ(scaler.found_inf(first), false);
  EXPECT_EQ(scaler.found_inf(second), true);
  scaler.update();
  EXPECT_FALSE(scaler.found_inf(first).has_value());  // update forgot the records
  EXPECT_FALSE(same_bytes(before[0], m.params[0]));
  EXPECT_TRUE(same_bytes(before[2], m.params[2]));
  EXPECT_TRUE(same_bytes(before[3], m.params[3]));
  EXPECT_EQ(scaler.get_scale(), 32768.0);  // one backoff for the iteration, not one per optimizer

  EXPECT_EQ(iteration(1, false), std::pair(true, true));
  scaler.update();
  EXPECT_FALSE(same_bytes(before[2], m.params[2]));
  EXPECT_EQ(scaler.get_scale(), 32768.0);
  EXPECT_EQ(scaler.growth_tracker(), 1);
}

Json read_fixture() {
  std::ifstream in(std::string(KILN_TEST_FIXTURES) + "/amp/grad_scaler.json");
  EXPECT_TRUE(in.good()) << "missing fixture; run tests/fixtures/make_grad_scaler_fixtures.py";
  return Json::parse(in);
}

Tensor f32_tensor(const Json& values, const Dims& shape) {
  return tensor(values.get<std::vector<double>>(), shape, {.dtype = DType::f32});
}

TEST(GradScaler, MatchesTorchScaleSequenceAndWeights) {
  const Json fx = read_fixture();
  const std::vector<std::string> names = {"w1", "b1", "w2", "b2"};
  for (const Json& c : fx["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    std::vector<Tensor> p;
    for (const std::string& n : names)
      p.push_back(f32_tensor(fx["init"][n], Dims(fx["shapes"][n].get<std::vector<int64_t>>())).requires_grad_());
    optim::SGD opt(p, {.lr = fx["sgd"]["lr"].get<double>(), .momentum = fx["sgd"]["momentum"].get<double>()});
    const Json& s = c["settings"];
    GradScaler scaler({.init_scale = s["init_scale"].get<double>(),
                       .growth_factor = s["growth_factor"].get<double>(),
                       .backoff_factor = s["backoff_factor"].get<double>(),
                       .growth_interval = s["growth_interval"].get<int64_t>()});
    for (int step = 0; step < static_cast<int>(c["steps"].size()); ++step) {
      const Json& row = c["steps"][step];
      opt.zero_grad();
      const Tensor x = f32_tensor(fx["x"][step], {4, 3}), y = f32_tensor(fx["y"][step], {4, 2});
      const Tensor loss = F::mse_loss(linear(relu(linear(x, p[0], p[1])), p[2], p[3]), y);
      EXPECT_NEAR(loss.item<double>(), row["loss"].get<double>(), 1e-6 * row["loss"].get<double>()) << step;
      EXPECT_EQ(scaler.get_scale(), row["scale_used"].get<double>()) << step;
      scaler.scale(loss).backward();
      for (const Json& inj : fx["inject"]) {
        if (inj["step"] != step) continue;
        const size_t i = std::find(names.begin(), names.end(), inj["param"].get<std::string>()) - names.begin();
        const double value = std::strtod(inj["value"].get<std::string>().c_str(), nullptr);  // inf, -inf, nan
        set_element(p[i].grad(), inj["index"].get<int64_t>(), value);
      }
      EXPECT_EQ(scaler.step(opt), row["stepped"].get<bool>()) << step;
      scaler.update();
      EXPECT_EQ(scaler.get_scale(), row["scale_after"].get<double>()) << step;  // exact: f32 arithmetic
      EXPECT_EQ(scaler.growth_tracker(), row["tracker_after"].get<int64_t>()) << step;
    }
    for (size_t i = 0; i < names.size(); ++i)
      kt::expect_close(p[i], c["final"][names[i]].get<std::vector<double>>(), 1e-6, 0, names[i]);
  }
}

// A regression whose forward runs in f16 (f32 master weights cast inside the forward, as autocast
// does) and whose loss carries a small weight: its gradient per prediction, 1e-6 * 2 (pred - y) /
// 2048, is below half of f16's smallest subnormal (2^-24), so an unscaled f16 backward makes it 0.
struct Regression {
  static constexpr double kLossWeight = 1e-6;
  Tensor x, y, w0;
  Regression() {
    Generator gen(7);
    x = rand({512, 32}, {}, &gen) * 2 - 1;
    y = x.matmul(randn({4, 32}, {}, &gen).t());
    w0 = randn({4, 32}, {}, &gen) * 0.3;
  }
};
enum class Mode { f32, f16, f16_scaled };

// The losses of 50 Adam steps, and the fraction of exactly-zero elements of the first gradient.
std::pair<std::vector<double>, double> train(const Regression& r, Mode mode) {
  Tensor w = r.w0.clone().requires_grad_();
  optim::Adam opt({w}, {.lr = 0.02, .eps = 1e-12});  // eps below the f32 gradients' size (~1e-7)
  GradScaler scaler({.enabled = mode == Mode::f16_scaled});
  std::vector<double> losses;
  double zero_fraction = 0;
  for (int s = 0; s < 50; ++s) {
    opt.zero_grad();
    const Tensor pred = mode == Mode::f32 ? r.x.matmul(w.t())
                                          : r.x.to(DType::f16).matmul(w.to(DType::f16).t()).to(DType::f32);
    const Tensor loss = F::mse_loss(pred, r.y) * Regression::kLossWeight;
    losses.push_back(loss.item<double>());
    scaler.scale(loss).backward();
    EXPECT_EQ(w.grad().dtype(), DType::f32);
    if (s == 0) zero_fraction = (w.grad() == 0).to(DType::f32).mean().item<double>();
    EXPECT_TRUE(scaler.step(opt));
    scaler.update();
  }
  return {losses, zero_fraction};
}

TEST(GradScaler, F16GradientsThatUnderflowTrainToTheF32CurveWithScaling) {
  const Regression r;
  const auto [f32, f32_zeros] = train(r, Mode::f32);
  const auto [f16, f16_zeros] = train(r, Mode::f16);
  const auto [scaled, scaled_zeros] = train(r, Mode::f16_scaled);
  EXPECT_EQ(f32_zeros, 0.0);
  EXPECT_GE(f16_zeros, 0.99);  // without scaling the f16 gradients vanish ...
  EXPECT_GT(f16.back(), 0.99 * f16.front());  // ... and the loss stays where it started
  EXPECT_LT(f32.back(), 0.5 * f32.front());
  EXPECT_EQ(scaled_zeros, 0.0);
  double worst = 0;
  for (size_t s = 0; s < f32.size(); ++s) {  // every step, the first included
    const double rel = std::abs(scaled[s] - f32[s]) / f32[s];
    EXPECT_LE(rel, 0.02) << "step " << s;
    worst = std::max(worst, rel);
  }
  std::cout << "loss " << f32.front() << " -> f32 " << f32.back() << ", f16 unscaled " << f16.back()
            << ", f16 scaled " << scaled.back() << "; scaled vs f32 worst relative gap " << worst << "\n";
}

TEST(GradScaler, InfCheckSeesEveryElementOfAnyDtypeAndLayout) {
  const int64_t n = 300 * 347;  // split over threads by the reductions
  for (DType dtype : kt::kFloatDTypes) {
    SCOPED_TRACE(::testing::Message() << dtype);
    Tensor p = zeros({300, 347}, {.dtype = dtype}).requires_grad_();
    optim::SGD opt({zeros({1}).requires_grad_()}, {.lr = 0.1});
    hold(opt, p);
    const Tensor clean = kt::random_tensor({300, 347}, dtype);
    for (int64_t where : {int64_t{0}, n / 2 + 1, n - 1}) {
      for (double bad : {kt::kInf, -kt::kInf, kt::kNaN}) {
        Tensor g = clean.clone();
        set_element(g, where, bad);
        p.mutable_grad() = kt::noncontiguous(g);
        GradScaler scaler({.init_scale = 1024});
        scaler.unscale_(opt);
        EXPECT_EQ(scaler.found_inf(opt), true) << "element " << where << " = " << bad;
      }
    }
    p.mutable_grad() = kt::noncontiguous(clean);
    GradScaler scaler({.init_scale = 1024});
    scaler.unscale_(opt);
    EXPECT_EQ(scaler.found_inf(opt), false);
  }
}

TEST(GradScaler, LargeFiniteGradientsAreNotInf) {
  // Values whose sum overflows their dtype (for f64: whose f32 conversion would) are finite.
  for (auto [dtype, big] : {std::pair{DType::f32, 3e38}, {DType::f16, 6e4}, {DType::bf16, 3e38}, {DType::f64, 1e300}}) {
    SCOPED_TRACE(::testing::Message() << dtype);
    Tensor p = zeros({1000}, {.dtype = dtype}).requires_grad_();
    optim::SGD opt({zeros({1}).requires_grad_()}, {.lr = 0.1});
    hold(opt, p);
    p.mutable_grad() = full({1000}, big, {.dtype = dtype});
    GradScaler scaler({.init_scale = 1.0});
    scaler.unscale_(opt);
    EXPECT_EQ(scaler.found_inf(opt), false);
  }
}

TEST(GradScaler, SixteenBitGradsAreMultipliedByTheF32Reciprocal) {
  for (double scale : {3000.0, 33554432.0}) {  // 1/3000 has more bits than f16 holds; 2^-25 is 0 in f16
    for (DType dtype : {DType::f16, DType::bf16}) {
      SCOPED_TRACE(::testing::Message() << dtype << " scale " << scale);
      const Tensor g = kt::random_tensor({257}, dtype, -1000, 1000);
      Tensor p = zeros({257}, {.dtype = dtype}).requires_grad_();
      optim::SGD opt({zeros({1}).requires_grad_()}, {.lr = 0.1});
      hold(opt, p);
      p.mutable_grad() = g.clone();
      GradScaler scaler({.init_scale = scale});
      scaler.unscale_(opt);
      const float inv = static_cast<float>(1.0 / scale);
      auto round16 = [dtype](float v) {
        return dtype == DType::f16 ? static_cast<float>(Half(v)) : static_cast<float>(BFloat16(v));
      };
      std::vector<double> want;
      int naive_differs = 0;  // a product with the reciprocal rounded to the gradient's dtype first
      for (double v : kt::values(g)) {
        want.push_back(round16(static_cast<float>(v) * inv));
        naive_differs += round16(static_cast<float>(v) * round16(inv)) != want.back();
      }
      kt::expect_close(p.grad(), want, 0, 0);
      if (scale == 3000.0 || dtype == DType::f16) {
        EXPECT_GT(naive_differs, 0);
      }
    }
  }
}

TEST(GradScaler, ScalesA16BitLossInF32) {
  GradScaler scaler;  // 65536 is inf in f16
  for (DType dtype : {DType::f16, DType::bf16}) {
    const Tensor scaled = scaler.scale(full({}, 0.25, {.dtype = dtype}));
    EXPECT_EQ(scaled.dtype(), dtype);
    EXPECT_EQ(scaled.item<double>(), 16384.0);
  }
  Tensor loss = full({}, 0.1, {.dtype = DType::f32}).requires_grad_();
  const Tensor scaled = scaler.scale(loss);
  EXPECT_EQ(scaled.item<double>(), static_cast<double>(0.1f * 65536.0f));
  scaled.backward();
  EXPECT_EQ(loss.grad().item<double>(), 65536.0);  // recorded: backward scales the gradients
}

}  // namespace
