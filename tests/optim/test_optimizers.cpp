// kiln::optim optimizers: update trajectories against PyTorch fixtures
// (tests/fixtures/make_optim_fixtures.py), exact state_dict round trips, param groups, zero_grad,
// strided and large (multi-threaded) parameters, autograd integration, and the error cases.
#include "optim/optim_cases.h"

namespace kt = kiln::testing;
using namespace kiln;
using namespace kiln::optim;
using namespace kiln::optim::cases;

// Every fixture config, both dtypes: the parameters after each of 5 steps match torch's.
TEST(Optimizers, MatchTorchTrajectories) {
  const Json fx = read_fixture("optimizers.json");
  const auto& shapes = fx["shapes"];
  for (const Json& c : fx["cases"]) {
    for (DType dtype : {DType::f32, DType::f64}) {
      const std::string what = c["name"].get<std::string>() + (dtype == DType::f32 ? " f32" : " f64");
      std::vector<Tensor> params;
      for (size_t i = 0; i < shapes.size(); ++i)
        params.push_back(make(fx["init"][i], shapes[i].get<std::vector<int64_t>>(), dtype).requires_grad_());
      auto opt = build_case(c, params);
      const Json& want = c[dtype == DType::f32 ? "f32" : "f64"];
      // f32: torch's kernels may fuse multiply-adds where we round twice; a few ulps per step.
      const double rtol = dtype == DType::f32 ? 1e-6 : 1e-12, atol = dtype == DType::f32 ? 1e-7 : 1e-14;
      for (size_t step = 0; step < 5; ++step) {
        for (size_t i = 0; i < params.size(); ++i)
          set_grad(params[i], make(fx["grads"][step][i], shapes[i].get<std::vector<int64_t>>(), dtype));
        opt->step();
        for (size_t i = 0; i < params.size(); ++i)
          kt::expect_close(params[i], want[step][i].get<std::vector<double>>(), rtol, atol,
                           what + " step " + std::to_string(step + 1) + " param " + std::to_string(i));
      }
    }
  }
}

namespace {

// Deterministic gradients for step `step` (same for every run), some entries exactly zero.
std::vector<Tensor> grads_for(const std::vector<Tensor>& params, int step) {
  std::vector<Tensor> grads;
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor g = kt::random_tensor(params[i].shape(), params[i].dtype(), -1, 1, 1000 + 17 * step + i);
    if (step % 3 == 1) g.view({-1}).narrow(0, 0, 1).zero_();
    grads.push_back(g);
  }
  return grads;
}

std::vector<Tensor> fresh_params(DType dtype) {
  return {kt::random_tensor({5, 7}, dtype, -1, 1, 1).requires_grad_(),
          kt::random_tensor({13}, dtype, -1, 1, 2).requires_grad_()};
}

void train(Optimizer& opt, std::vector<Tensor>& params, int from, int to) {
  for (int s = from; s < to; ++s) {
    std::vector<Tensor> grads = grads_for(params, s);
    for (size_t i = 0; i < params.size(); ++i) set_grad(params[i], grads[i]);
    opt.step();
    opt.zero_grad();
  }
}

using Factory = std::function<std::unique_ptr<Optimizer>(const std::vector<Tensor>&)>;

const std::vector<std::pair<std::string, Factory>>& factories() {
  static const std::vector<std::pair<std::string, Factory>> f = {
      {"SGD nesterov", [](const auto& p) { return std::make_unique<SGD>(p, SGDOptions{.lr = 0.1, .momentum = 0.9,
                                                                            .weight_decay = 1e-4, .nesterov = true}); }},
      {"SGD plain", [](const auto& p) { return std::make_unique<SGD>(p, SGDOptions{.lr = 0.1}); }},
      {"Adam amsgrad", [](const auto& p) { return std::make_unique<Adam>(p, AdamOptions{.lr = 1e-2, .amsgrad = true}); }},
      {"AdamW", [](const auto& p) {
         return std::make_unique<AdamW>(std::vector<GroupSpec<AdamOptions>>{{.params = {p[0]}},
                                                                           {.params = {p[1]}, .options = {.weight_decay = 0}}},
                                        AdamOptions{.lr = 3e-3, .betas = {{0.8, 0.99}}});
       }},
      {"RMSprop", [](const auto& p) { return std::make_unique<RMSprop>(p, RMSpropOptions{.momentum = 0.5, .centered = true}); }},
      {"Adagrad", [](const auto& p) { return std::make_unique<Adagrad>(p, AdagradOptions{.lr = 0.1, .lr_decay = 0.01}); }},
  };
  return f;
}

std::vector<Tensor> clones(const std::vector<Tensor>& params) {
  std::vector<Tensor> out;
  for (const Tensor& p : params) out.push_back(p.detach().clone().requires_grad_());
  return out;
}

}  // namespace

// 5 steps, save, load into a fresh optimizer over copies of the parameters, 5 more steps: the same
// bits as 10 uninterrupted steps, for the parameters and for every state tensor.
TEST(Optimizers, StateDictRoundTripIsExact) {
  for (DType dtype : {DType::f32, DType::f64}) {
    for (const auto& [name, factory] : factories()) {
      std::vector<Tensor> straight = fresh_params(dtype);
      auto a = factory(straight);
      train(*a, straight, 0, 10);

      std::vector<Tensor> first = fresh_params(dtype);
      auto b = factory(first);
      train(*b, first, 0, 5);
      const State saved = b->state_dict();
      std::vector<Tensor> resumed = clones(first);
      train(*b, first, 5, 7);  // the snapshot must not follow later steps

      auto c = factory(resumed);
      c->load_state_dict(saved);
      train(*c, resumed, 5, 10);
      for (size_t i = 0; i < straight.size(); ++i)
        EXPECT_TRUE(equal(straight[i], resumed[i])) << name << " param " << i;
      const State sa = a->state_dict(), sc = c->state_dict();
      ASSERT_EQ(sa.tensors.keys(), sc.tensors.keys()) << name;
      for (const auto& [key, t] : sa.tensors) EXPECT_TRUE(equal(t, sc.tensors.at(key))) << name << " " << key;
      EXPECT_EQ(sa.meta, sc.meta) << name;
    }
  }
}

// torch's layout: state.<i>.<name> with a 0-d f32 step; param_groups with hyperparameters and indices.
TEST(Optimizers, StateDictLayoutFollowsTorch) {
  std::vector<Tensor> p = fresh_params(DType::f32);
  Adam opt(std::vector<GroupSpec<AdamOptions>>{{.params = {p[0]}, .options = {.weight_decay = 0.1}}, {.params = {p[1]}}},
           {.lr = 1e-3, .amsgrad = true});
  State empty_state = opt.state_dict();
  EXPECT_TRUE(empty_state.tensors.empty());
  train(opt, p, 0, 3);
  const State s = opt.state_dict();
  EXPECT_EQ(s.tensors.keys(), (std::vector<std::string>{"state.0.step", "state.0.exp_avg", "state.0.exp_avg_sq",
                                                        "state.0.max_exp_avg_sq", "state.1.step", "state.1.exp_avg",
                                                        "state.1.exp_avg_sq", "state.1.max_exp_avg_sq"}));
  const Tensor& step = s.tensors.at("state.1.step");
  EXPECT_EQ(step.dtype(), DType::f32);
  EXPECT_EQ(step.dim(), 0);
  EXPECT_EQ(step.item<double>(), 3.0);
  EXPECT_EQ(s.tensors.at("state.0.exp_avg").shape(), p[0].shape());
  EXPECT_EQ(s.meta["optimizer"], "Adam");
  const Json& g = s.meta["param_groups"];
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g[0]["weight_decay"], 0.1);
  EXPECT_EQ(g[1]["weight_decay"], 0.0);
  EXPECT_EQ(g[1]["betas"], Json::array({0.9, 0.999}));
  EXPECT_EQ(g[0]["params"], Json::array({0}));
  EXPECT_EQ(g[1]["params"], Json::array({1}));
  EXPECT_EQ(g[1]["amsgrad"], true);

  SGD plain(p, {.lr = 0.1});
  train(plain, p, 0, 1);
  EXPECT_TRUE(plain.state_dict().tensors.empty());  // no momentum: no state, as torch
}

TEST(Optimizers, LoadRestoresHyperparametersAndInitialLr) {
  std::vector<Tensor> p = fresh_params(DType::f32);
  SGD a(p, {.lr = 0.5, .momentum = 0.3});
  a.param_groups()[0].initial_lr = 0.7;
  SGD b(clones(p), {.lr = 0.1});
  b.load_state_dict(a.state_dict());
  EXPECT_EQ(b.param_groups()[0].lr, 0.5);
  EXPECT_EQ(b.param_groups()[0].momentum, 0.3);
  EXPECT_EQ(b.param_groups()[0].initial_lr, 0.7);
}

TEST(Optimizers, LoadRejectsMismatches) {
  std::vector<Tensor> p = fresh_params(DType::f32);
  Adam adam(p, {.lr = 1e-2});
  train(adam, p, 0, 2);
  const State saved = adam.state_dict();

  SGD sgd(clones(p), {.lr = 0.1});
  kt::expect_error([&] { sgd.load_state_dict(saved); }, {"SGD.load_state_dict", "saved by \"Adam\""});

  Adam one_param({p[0].detach().clone().requires_grad_()});
  kt::expect_error([&] { one_param.load_state_dict(saved); }, {"Adam.load_state_dict", "param group 0", "has 2", "1 in"});

  std::vector<Tensor> q = clones(p);
  Adam two_groups(std::vector<GroupSpec<AdamOptions>>{{.params = {q[0]}}, {.params = {q[1]}}});
  kt::expect_error([&] { two_groups.load_state_dict(saved); }, {"Adam.load_state_dict", "1 param groups", "has 2"});

  std::vector<Tensor> other = {kt::random_tensor({7, 5}, DType::f32).requires_grad_(), clones(p)[1]};
  Adam wrong_shape(other);
  kt::expect_error([&] { wrong_shape.load_state_dict(saved); }, {"state.0.exp_avg", "[5, 7]", "[7, 5]"});

  Adam fresh(clones(p));
  State missing = saved;
  missing.tensors.erase("state.1.exp_avg_sq");
  kt::expect_error([&] { fresh.load_state_dict(missing); }, {"parameter 1 lacks state 'exp_avg_sq'"});
  State extra = saved;
  extra.tensors.insert("momentum", zeros({1}));
  kt::expect_error([&] { fresh.load_state_dict(extra); }, {"unexpected tensor 'momentum'"});
  State out_of_range = saved;
  out_of_range.tensors.insert("state.9.exp_avg", zeros({5, 7}));
  kt::expect_error([&] { fresh.load_state_dict(out_of_range); }, {"parameter 9", "only 2"});
  State no_lr = saved;
  no_lr.meta["param_groups"][0].erase("lr");
  kt::expect_error([&] { fresh.load_state_dict(no_lr); }, {"lacks hyperparameter 'lr'"});
  State bad_beta = saved;
  bad_beta.meta["param_groups"][0]["betas"] = Json::array({1.5, 0.9});
  kt::expect_error([&] { fresh.load_state_dict(bad_beta); }, {"invalid beta1 1.5"});
  kt::expect_error([&] { fresh.load_state_dict(State{}); }, {"not an optimizer state"});

  // A failed load changes nothing: the fresh optimizer still has no state.
  EXPECT_TRUE(fresh.state_dict().tensors.empty());
  EXPECT_EQ(fresh.param_groups()[0].betas.first, 0.9);
}

TEST(Optimizers, ParamGroupsTakeDefaultsAndOverrides) {
  std::vector<Tensor> p = fresh_params(DType::f32);
  AdamW opt(std::vector<GroupSpec<AdamOptions>>{{.params = {p[0]}, .options = {.weight_decay = 0.1}}, {.params = {p[1]}}},
            {.lr = 3e-4, .eps = 1e-6});
  const auto& g = opt.param_groups();
  EXPECT_EQ(g[0].weight_decay, 0.1);
  EXPECT_EQ(g[1].weight_decay, 1e-2);  // AdamW's default
  EXPECT_EQ(g[0].lr, 3e-4);
  EXPECT_EQ(g[1].eps, 1e-6);
  EXPECT_EQ(g[1].betas, (std::pair{0.9, 0.999}));
  EXPECT_EQ(opt.name(), "AdamW");
  EXPECT_TRUE(opt.has_hyper("betas"));
  EXPECT_FALSE(opt.has_hyper("momentum"));
}

// Changing a group's lr between steps takes effect (what schedulers do).
TEST(Optimizers, GroupLrChangesApply) {
  Tensor p = tensor({1.0, 2.0}).requires_grad_();
  SGD opt({p}, {.lr = 0.1});
  set_grad(p, tensor({1.0, -1.0}));
  opt.step();
  opt.param_groups()[0].lr = 0.5;
  opt.step();
  kt::expect_close(p, {1.0f - 0.1f - 0.5f, 2.0f + 0.1f + 0.5f}, 1e-7, 0);
}

TEST(Optimizers, ZeroGrad) {
  std::vector<Tensor> p = fresh_params(DType::f32);
  SGD opt(p, {.lr = 0.1});
  set_grad(p[0], ones({5, 7}));
  opt.zero_grad(false);
  ASSERT_TRUE(p[0].grad().defined());
  EXPECT_EQ(p[0].grad().abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(p[1].grad().defined());
  opt.zero_grad();
  EXPECT_FALSE(p[0].grad().defined());
}

// Parameters without a gradient are not touched and get no state.
TEST(Optimizers, SkipsParamsWithoutGrad) {
  std::vector<Tensor> p = fresh_params(DType::f32);
  const Tensor before = p[1].detach().clone();
  Adam opt(p);
  set_grad(p[0], ones({5, 7}));
  opt.step();
  EXPECT_TRUE(equal(p[1], before));
  EXPECT_EQ(opt.state_of(p[1]), nullptr);
  ASSERT_NE(opt.state_of(p[0]), nullptr);
  EXPECT_TRUE(opt.state_of(p[0])->contains("exp_avg"));
}

// A strided parameter gets the same update as a contiguous one with the same values.
TEST(Optimizers, StridedParameter) {
  Tensor base = kt::random_tensor({6, 4}, DType::f32, -1, 1, 5);
  Tensor strided = base.t();
  strided.requires_grad_();
  ASSERT_FALSE(strided.is_contiguous());
  Tensor dense = strided.contiguous().detach().clone().requires_grad_();
  Adam a({strided}, {.lr = 0.01, .weight_decay = 0.1});
  Adam b({dense}, {.lr = 0.01, .weight_decay = 0.1});
  for (int s = 0; s < 3; ++s) {
    Tensor g = kt::random_tensor({4, 6}, DType::f32, -1, 1, 50 + s);
    set_grad(strided, kt::noncontiguous(g));
    set_grad(dense, g);
    a.step();
    b.step();
  }
  EXPECT_TRUE(equal(strided, dense));
}

// A parameter big enough to be split over threads gets exactly what its pieces get alone.
TEST(Optimizers, LargeParameterMatchesPieces) {
  const int64_t n = 3 * kElementwiseGrain + 123;
  Tensor big = kt::random_tensor({n}, DType::f32, -1, 1, 7).requires_grad_();
  std::vector<Tensor> pieces;
  for (int64_t start = 0; start < n; start += 1000)
    pieces.push_back(big.detach().narrow(0, start, std::min<int64_t>(1000, n - start)).clone().requires_grad_());
  RMSprop a({big}, {.lr = 0.01, .momentum = 0.9, .centered = true});
  RMSprop b(pieces, {.lr = 0.01, .momentum = 0.9, .centered = true});
  for (int s = 0; s < 3; ++s) {
    Tensor g = kt::random_tensor({n}, DType::f32, -1, 1, 70 + s);
    set_grad(big, g);
    for (size_t i = 0; i < pieces.size(); ++i) set_grad(pieces[i], g.narrow(0, 1000 * i, pieces[i].numel()).clone());
    a.step();
    b.step();
  }
  for (size_t i = 0; i < pieces.size(); ++i)
    ASSERT_TRUE(equal(big.detach().narrow(0, 1000 * i, pieces[i].numel()), pieces[i])) << "piece " << i;
}

// With autograd: minimise sum(p^2) by SGD; the step is recorded nowhere and bumps p's version.
TEST(Optimizers, StepsOnAutogradGradients) {
  Tensor p = tensor({1.0, -2.0, 3.0}).requires_grad_();
  SGD opt({p}, {.lr = 0.25});
  const uint32_t version = p.version();
  (p * p).sum().backward();
  opt.step();
  EXPECT_GT(p.version(), version);
  EXPECT_TRUE(p.is_leaf());
  kt::expect_close(p, {0.5, -1.0, 1.5}, 1e-7, 0);
  opt.zero_grad();
  (p * p).sum().backward();
  opt.step();
  kt::expect_close(p, {0.25, -0.5, 0.75}, 1e-7, 0);
}

TEST(Optimizers, ConstructorErrors) {
  std::vector<Tensor> p = fresh_params(DType::f32);
  kt::expect_error([&] { SGD(p, {.lr = -1}); }, {"SGD", "invalid learning rate -1"});
  kt::expect_error([&] { SGD(p, {.lr = 0.1, .nesterov = true}); }, {"SGD", "nesterov", "momentum 0"});
  kt::expect_error([&] { SGD(p, {.momentum = 0.9, .dampening = 0.1, .nesterov = true}); }, {"dampening 0.1"});
  kt::expect_error([&] { Adam(p, {.betas = {{0.9, 1.0}}}); }, {"Adam", "invalid beta2 1"});
  kt::expect_error([&] { AdamW(p, {.eps = -1e-8}); }, {"AdamW", "invalid eps"});
  kt::expect_error([&] { RMSprop(p, {.alpha = -0.5}); }, {"RMSprop", "invalid alpha -0.5"});
  kt::expect_error([&] { Adagrad(p, {.lr_decay = -1}); }, {"Adagrad", "invalid lr_decay -1"});
  kt::expect_error([&] { SGD(std::vector<Tensor>{}); }, {"SGD", "param group 0 has no parameters"});
  kt::expect_error([&] { SGD({p[0], p[1], p[0]}); }, {"SGD", "parameter 2", "more than once"});
  kt::expect_error([&] { Adam(std::vector<GroupSpec<AdamOptions>>{{.params = {p[0]}}, {.params = {p[0]}}}); },
                   {"Adam", "group 1", "more than once"});
  Tensor computed = p[0] * 2;
  kt::expect_error([&] { SGD({computed}); }, {"SGD", "not a leaf"});
  kt::expect_error([&] { SGD({zeros({2}, {.dtype = DType::i64})}); }, {"SGD", "dtype int64"});
  kt::expect_error([&] { SGD({Tensor()}); }, {"SGD", "undefined"});
}

TEST(Optimizers, StepErrors) {
  Tensor p = zeros({3}).requires_grad_();
  SGD opt({p}, {.lr = 0.1});
  set_grad(p, zeros({4}));
  kt::expect_error([&] { opt.step(); }, {"SGD.step", "shape [4]", "[3]"});
  set_grad(p, zeros({3}, {.dtype = DType::f64}));
  kt::expect_error([&] { opt.step(); }, {"SGD.step", "float64", "float32"});
}
