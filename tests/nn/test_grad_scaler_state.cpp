// kiln::amp::GradScaler's contract around the numbers: invalid settings, calls out of order (each a
// kiln::Error, as torch raises), the disabled pass-through, the f32 update rule at f32's edge, and
// state_dict / load_state_dict (round trip, exact resume, rejected states leave the scaler as it was).
// The training behaviour is in test_grad_scaler.cpp.
#include "testing.h"

namespace kt = kiln::testing;
using namespace kiln;
using amp::GradScaler;
using amp::GradScalerOptions;

namespace {

// One iteration of a one-parameter SGD model whose gradient is `grad` everywhere.
struct Toy {
  Tensor p = zeros({3}).requires_grad_();
  optim::SGD opt{{p}, {.lr = 0.1}};
  void set_grad(double grad) { p.mutable_grad() = full({3}, grad, {.dtype = DType::f32}); }
  bool iterate(GradScaler& scaler, double grad) {
    set_grad(grad);
    const bool stepped = scaler.step(opt);
    scaler.update();
    return stepped;
  }
};

TEST(GradScalerState, RejectsInvalidSettings) {
  const std::vector<std::pair<GradScalerOptions, std::vector<std::string>>> cases = {
      {{.init_scale = kt::kInf}, {"init_scale", "finite and > 0", "inf"}},
      {{.init_scale = kt::kNaN}, {"init_scale", "nan"}},
      {{.init_scale = 0}, {"init_scale", "got 0"}},
      {{.init_scale = -2}, {"init_scale", "got -2"}},
      {{.init_scale = 1e39}, {"init_scale", "f32", "1e+39"}},  // finite in f64, inf in f32
      {{.growth_factor = 1.0}, {"growth_factor", "> 1", "got 1"}},
      {{.growth_factor = 0.5}, {"growth_factor", "0.5"}},
      {{.growth_factor = kt::kInf}, {"growth_factor", "finite"}},
      {{.backoff_factor = 1.0}, {"backoff_factor", "(0, 1)", "got 1"}},
      {{.backoff_factor = 0}, {"backoff_factor", "got 0"}},
      {{.backoff_factor = kt::kNaN}, {"backoff_factor", "nan"}},
      {{.growth_interval = 0}, {"growth_interval", ">= 1", "got 0"}},
      {{.growth_interval = 0, .enabled = false}, {"growth_interval"}},  // checked when disabled too
  };
  for (const auto& [options, fragments] : cases) kt::expect_error([&] { GradScaler s(options); }, fragments);
}

TEST(GradScalerState, CallsOutOfOrderAreErrors) {
  Toy toy;
  GradScaler scaler;
  kt::expect_error([&] { scaler.update(); }, {"update", "no inf/NaN checks were recorded"});
  kt::expect_error([&] { scaler.step(toy.opt); }, {"step", "no parameter", "SGD", ".grad"});
  scaler = GradScaler();
  toy.set_grad(1.0);
  scaler.unscale_(toy.opt);
  kt::expect_error([&] { scaler.unscale_(toy.opt); }, {"unscale_", "already called", "since the last update()"});
  EXPECT_TRUE(scaler.step(toy.opt));
  kt::expect_error([&] { scaler.step(toy.opt); }, {"step", "already been called"});
  kt::expect_error([&] { scaler.unscale_(toy.opt); }, {"unscale_", "after step()"});
  scaler.update();
  EXPECT_EQ(scaler.growth_tracker(), 1);
  EXPECT_TRUE(toy.iterate(scaler, 1.0));  // a new iteration starts READY
  kt::expect_error([&] { scaler.update(0.0); }, {"new_scale", "> 0"});
  kt::expect_error([&] { scaler.update(kt::kInf); }, {"new_scale", "finite"});
  kt::expect_error([&] { scaler.scale(Tensor()); }, {"scale", "undefined"});
  kt::expect_error([&] { scaler.scale(zeros({}, {.dtype = DType::i64})); }, {"scale", "int64", "floating"});
}

TEST(GradScalerState, UnscaleDividesByTheScale) {
  Toy toy;
  GradScaler scaler({.init_scale = 8.0});
  toy.set_grad(3.0);
  scaler.unscale_(toy.opt);
  kt::expect_close(toy.p.grad(), {0.375, 0.375, 0.375}, 0, 0);
  EXPECT_TRUE(scaler.step(toy.opt));  // does not unscale again
  kt::expect_close(toy.p, {-0.0375, -0.0375, -0.0375}, 1e-7, 0);
}

TEST(GradScalerState, UpdateRuleInF32) {
  Toy toy;
  // Growth past f32's largest value is dropped; the tracker still resets.
  GradScaler top({.init_scale = 0x1p127, .growth_interval = 1});
  EXPECT_TRUE(toy.iterate(top, 1.0));
  EXPECT_EQ(top.get_scale(), 0x1p127);
  EXPECT_EQ(top.growth_tracker(), 0);
  // 867 * 0.3 * 0.3, rounded to f32 after each product (torch's fixture sequence), not kept in f64.
  GradScaler odd({.init_scale = 867, .backoff_factor = 0.3});
  EXPECT_FALSE(toy.iterate(odd, kt::kNaN));
  EXPECT_EQ(odd.get_scale(), static_cast<double>(260.1000061035156f));
  EXPECT_FALSE(toy.iterate(odd, kt::kInf));
  EXPECT_EQ(odd.get_scale(), static_cast<double>(78.02999877929688f));
  EXPECT_NE(odd.get_scale(), 867 * 0.3 * 0.3);
  // A scale below 1 makes inv_scale > 1: a gradient that overflows as it is unscaled counts as inf
  // (Note [Inf check after unscaling]).
  toy.set_grad(1.0);
  odd.unscale_(toy.opt);
  odd.update(0.25);
  EXPECT_EQ(odd.get_scale(), 0.25);
  EXPECT_FALSE(toy.iterate(odd, 1e38));
  EXPECT_EQ(odd.get_scale(), static_cast<double>(static_cast<float>(0.25 * 0.3)));
  odd.update(1e-3);  // new_scale is rounded to f32, as torch fills its f32 tensor
  EXPECT_EQ(odd.get_scale(), static_cast<double>(1e-3f));
}

TEST(GradScalerState, DisabledIsAPassThrough) {
  Toy toy;
  GradScaler scaler({.enabled = false});
  EXPECT_FALSE(scaler.is_enabled());
  const Tensor loss = full({}, 2.0);
  EXPECT_TRUE(scaler.scale(loss).is_same(loss));
  toy.set_grad(kt::kInf);
  scaler.unscale_(toy.opt);
  scaler.unscale_(toy.opt);  // no state machine either
  kt::expect_close(toy.p.grad(), {kt::kInf, kt::kInf, kt::kInf}, 0, 0);
  toy.set_grad(2.0);
  EXPECT_TRUE(scaler.step(toy.opt));
  EXPECT_TRUE(scaler.step(toy.opt));
  kt::expect_close(toy.p, {-0.4, -0.4, -0.4}, 1e-7, 0);  // two unscaled steps
  scaler.update();
  EXPECT_EQ(scaler.get_scale(), 1.0);
  EXPECT_EQ(scaler.growth_tracker(), 0);
  EXPECT_EQ(scaler.state_dict(), Json::object());
  scaler.load_state_dict(Json{{"scale", -1}});  // ignored, as torch ignores it
  EXPECT_EQ(scaler.get_scale(), 1.0);
}

// The scale after each iteration of a script of clean (1.0) and bad (inf/NaN) gradients.
std::vector<double> run_script(GradScaler& scaler, const std::vector<double>& grads) {
  Toy toy;
  std::vector<double> scales;
  for (double g : grads) {
    toy.iterate(scaler, g);
    scales.push_back(scaler.get_scale());
  }
  return scales;
}

TEST(GradScalerState, StateDictRoundTripAndExactResume) {
  const GradScalerOptions odd{.init_scale = 1000, .growth_factor = 1.7, .backoff_factor = 0.3, .growth_interval = 2};
  const std::vector<double> script = {1, 1, kt::kInf, 1, 1, 1, kt::kNaN, 1, 1, 1, 1, kt::kInf};
  GradScaler whole(odd);
  const std::vector<double> want = run_script(whole, script);

  GradScaler first(odd);
  std::vector<double> got = run_script(first, {script.begin(), script.begin() + 4});
  const Json saved = Json::parse(first.state_dict().dump());  // through text, as a checkpoint holds it
  EXPECT_EQ(saved, (Json{{"scale", first.get_scale()}, {"growth_factor", 1.7}, {"backoff_factor", 0.3},
                         {"growth_interval", 2}, {"_growth_tracker", 1}}));
  GradScaler resumed;  // default settings: the state brings the factors
  resumed.load_state_dict(saved);
  EXPECT_EQ(resumed.state_dict(), saved);
  for (double s : run_script(resumed, {script.begin() + 4, script.end()})) got.push_back(s);
  EXPECT_EQ(got, want);
}

TEST(GradScalerState, RejectedStatesLeaveTheScalerUnchanged) {
  GradScaler scaler({.init_scale = 512, .growth_interval = 10});
  Toy toy;
  toy.iterate(scaler, 1.0);
  const Json before = scaler.state_dict();
  auto without = [&](const char* key) {
    Json s = before;
    s.erase(key);
    return s;
  };
  auto with = [&](const char* key, Json value) {
    Json s = before;
    s[key] = std::move(value);
    return s;
  };
  const std::vector<std::pair<Json, std::vector<std::string>>> cases = {
      {without("scale"), {"missing key 'scale'"}},
      {without("_growth_tracker"), {"missing key '_growth_tracker'"}},
      {Json::object(), {"empty", "disabled"}},
      {Json::array(), {"JSON object", "array"}},
      {with("scale", "big"), {"'scale' must be a number", "\"big\""}},
      {with("scale", -1.0), {"scale", "finite and > 0", "-1"}},
      {with("growth_factor", 0.9), {"growth_factor", "> 1"}},
      {with("backoff_factor", 1.5), {"backoff_factor", "(0, 1)"}},
      {with("growth_interval", 2.5), {"'growth_interval' must be an integer"}},
      {with("growth_interval", 0), {"growth_interval", ">= 1"}},
      {with("_growth_tracker", 10), {"_growth_tracker", "[0, growth_interval = 10)", "got 10"}},
      {with("_growth_tracker", -1), {"_growth_tracker", "got -1"}},
  };
  for (const auto& [state, fragments] : cases) {
    kt::expect_error([&] { scaler.load_state_dict(state); }, fragments);
    EXPECT_EQ(scaler.state_dict(), before);
  }
}

}  // namespace
