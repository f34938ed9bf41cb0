// kiln::optim LR schedulers: 30-step lr (and momentum) sequences against PyTorch fixtures, compared
// exactly (the formulas follow torch's order of operations), state_dict round trips, and errors.
#include <fstream>
#include <memory>

#include "nn/optim/adagrad.h"
#include "nn/optim/adam.h"
#include "nn/optim/lr_scheduler.h"
#include "nn/optim/sgd.h"
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

// Two groups, lr 0.1 and 0.05, as the fixture script builds them.
struct TwoGroups {
  std::vector<Tensor> params = {zeros({2}).requires_grad_(), zeros({3}).requires_grad_()};
  std::unique_ptr<Optimizer> opt;
  explicit TwoGroups(const std::string& kind) {
    if (kind == "Adam")
      opt = std::make_unique<Adam>(std::vector<GroupSpec<AdamOptions>>{{.params = {params[0]}},
                                                                       {.params = {params[1]}, .options = {.lr = 0.05}}},
                                   AdamOptions{.lr = 0.1});
    else
      opt = std::make_unique<SGD>(std::vector<GroupSpec<SGDOptions>>{{.params = {params[0]}},
                                                                     {.params = {params[1]}, .options = {.lr = 0.05}}},
                                  SGDOptions{.lr = 0.1, .momentum = 0.9});
  }
};

using Schedulers = std::vector<std::shared_ptr<LRScheduler>>;

// The schedulers of a fixture case (the same settings as make_optim_fixtures.py).
Schedulers build(const std::string& name, Optimizer& o) {
  if (name == "step") return {std::make_shared<StepLR>(o, StepLROptions{.step_size = 7, .gamma = 0.5})};
  if (name == "multistep")
    return {std::make_shared<MultiStepLR>(o, MultiStepLROptions{.milestones = {5, 12, 12, 20}, .gamma = 0.3})};
  if (name == "exponential") return {std::make_shared<ExponentialLR>(o, ExponentialLROptions{.gamma = 0.9})};
  if (name == "cosine")
    return {std::make_shared<CosineAnnealingLR>(o, CosineAnnealingLROptions{.T_max = 10, .eta_min = 0.001})};
  if (name == "linear")
    return {std::make_shared<LinearLR>(o, LinearLROptions{.start_factor = 0.25, .end_factor = 1.0, .total_iters = 8})};
  if (name == "lambda")
    return {std::make_shared<LambdaLR>(o, [](int64_t e) { return std::pow(0.95, static_cast<double>(e)); })};
  if (name == "onecycle_cos")
    return {std::make_shared<OneCycleLR>(o, OneCycleLROptions{.max_lr = {0.5, 0.2}, .total_steps = 30})};
  if (name == "onecycle_linear")
    return {std::make_shared<OneCycleLR>(o, OneCycleLROptions{.max_lr = {0.3}, .total_steps = 30, .pct_start = 0.25,
                                                              .anneal_strategy = "linear", .base_momentum = {0.8},
                                                              .max_momentum = {0.9}})};
  if (name == "onecycle_three_phase")
    return {std::make_shared<OneCycleLR>(o, OneCycleLROptions{.max_lr = {0.4}, .epochs = 3, .steps_per_epoch = 10,
                                                              .div_factor = 10.0, .three_phase = true})};
  if (name == "sequential") {
    auto warmup = std::make_shared<LinearLR>(o, LinearLROptions{.start_factor = 0.1, .total_iters = 5});
    auto cosine = std::make_shared<CosineAnnealingLR>(o, CosineAnnealingLROptions{.T_max = 20, .eta_min = 1e-4});
    return {std::make_shared<SequentialLR>(o, Schedulers{warmup, cosine}, std::vector<int64_t>{5})};
  }
  if (name == "sequential_three") {
    auto a = std::make_shared<ExponentialLR>(o, ExponentialLROptions{.gamma = 0.8});
    auto b = std::make_shared<StepLR>(o, StepLROptions{.step_size = 3, .gamma = 0.5});
    auto c = std::make_shared<LinearLR>(o, LinearLROptions{.start_factor = 0.5, .total_iters = 4});
    return {std::make_shared<SequentialLR>(o, Schedulers{a, b, c}, std::vector<int64_t>{6, 15})};
  }
  if (name == "chained_step_exponential")
    return {std::make_shared<StepLR>(o, StepLROptions{.step_size = 4, .gamma = 0.5}),
            std::make_shared<ExponentialLR>(o, ExponentialLROptions{.gamma = 0.95})};
  ADD_FAILURE() << "unknown scheduler case " << name;
  return {};
}

std::vector<double> lrs(const Optimizer& o) {
  std::vector<double> out;
  for (const ParamGroup& g : o.param_groups()) out.push_back(g.lr);
  return out;
}

std::vector<double> momenta(const Optimizer& o) {
  std::vector<double> out;
  for (const ParamGroup& g : o.param_groups()) out.push_back(o.has_hyper("betas") ? g.betas.first : g.momentum);
  return out;
}

// Compares a row of the fixture with the optimizer now.
void expect_row(const Json& row, const Optimizer& o, const std::vector<const LRScheduler*>& scheds,
                const std::string& what) {
  EXPECT_EQ(lrs(o), row["lr"].get<std::vector<double>>()) << what << " lr";
  if (row.contains("momentum")) {
    EXPECT_EQ(momenta(o), row["momentum"].get<std::vector<double>>()) << what << " momentum";
  }
  if (row.contains("last_lr")) {
    for (size_t s = 0; s < scheds.size(); ++s)
      EXPECT_EQ(scheds[s]->get_last_lr(), row["last_lr"][s].get<std::vector<double>>()) << what << " last_lr " << s;
  } else if (!scheds.empty()) {
    EXPECT_EQ(scheds.back()->get_last_lr(), lrs(o)) << what << " get_last_lr";
  }
}

}  // namespace

// Every epoch-wise fixture case: the lrs after construction and after each of 30 steps, exactly.
TEST(Schedulers, MatchTorchSequences) {
  const Json fx = read_fixture("schedulers.json");
  int checked = 0;
  for (const Json& c : fx["cases"]) {
    const std::string name = c["name"];
    if (!c["metrics"].is_null()) continue;  // ReduceLROnPlateau, below
    TwoGroups setup(c["optimizer"]);
    Schedulers scheds = build(name, *setup.opt);
    std::vector<const LRScheduler*> views;
    for (const auto& s : scheds) views.push_back(s.get());
    const Json& rows = c["rows"];
    expect_row(rows[0], *setup.opt, views, name + " at construction");
    for (size_t i = 1; i < rows.size(); ++i) {
      setup.opt->step();
      for (auto& s : scheds) s->step();
      expect_row(rows[i], *setup.opt, views, name + " after step " + std::to_string(i));
    }
    ++checked;
  }
  EXPECT_EQ(checked, 12);
}

TEST(Schedulers, ReduceLROnPlateauMatchesTorch) {
  const Json fx = read_fixture("schedulers.json");
  int checked = 0;
  for (const Json& c : fx["cases"]) {
    if (c["metrics"].is_null()) continue;
    const std::string name = c["name"];
    TwoGroups setup(c["optimizer"]);
    ReduceLROnPlateauOptions options =
        name == "plateau_min_rel"
            ? ReduceLROnPlateauOptions{.mode = "min", .factor = 0.5, .patience = 2, .threshold = 0.01, .cooldown = 1,
                                       .min_lr = {0.01, 0.001}}
            : ReduceLROnPlateauOptions{.mode = "max", .factor = 0.3, .patience = 1, .threshold = 0.02,
                                       .threshold_mode = "abs", .min_lr = {0.004}};
    ReduceLROnPlateau sched(*setup.opt, options);
    const Json& rows = c["rows"];
    const auto metrics = c["metrics"].get<std::vector<double>>();
    EXPECT_EQ(lrs(*setup.opt), rows[0]["lr"].get<std::vector<double>>());
    for (size_t i = 1; i < rows.size(); ++i) {
      sched.step(metrics[i - 1]);
      EXPECT_EQ(lrs(*setup.opt), rows[i]["lr"].get<std::vector<double>>()) << name << " step " << i;
      EXPECT_EQ(sched.get_last_lr(), lrs(*setup.opt));
    }
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

// Save the optimizer and scheduler after 12 steps, restore into fresh ones (optimizer state loaded
// after the scheduler is built, as torch advises), and continue: the same lrs as never stopping.
TEST(Schedulers, StateDictRoundTrip) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"step", "SGD"}, {"multistep", "SGD"}, {"exponential", "SGD"}, {"cosine", "SGD"}, {"linear", "SGD"},
      {"lambda", "SGD"}, {"onecycle_cos", "SGD"}, {"onecycle_linear", "Adam"}, {"sequential", "SGD"},
      {"sequential_three", "SGD"}};
  for (const auto& [name, kind] : cases) {
    TwoGroups a(kind);
    Schedulers sa = build(name, *a.opt);
    for (int i = 0; i < 12; ++i) {
      a.opt->step();
      sa[0]->step();
    }
    const State opt_state = a.opt->state_dict();
    const State sched_state = sa[0]->state_dict();

    TwoGroups b(kind);
    Schedulers sb = build(name, *b.opt);
    b.opt->load_state_dict(opt_state);
    sb[0]->load_state_dict(sched_state);
    EXPECT_EQ(sb[0]->last_epoch(), sa[0]->last_epoch()) << name;
    EXPECT_EQ(sb[0]->get_last_lr(), sa[0]->get_last_lr()) << name;
    for (int i = 0; i < 10; ++i) {
      a.opt->step();
      b.opt->step();
      sa[0]->step();
      sb[0]->step();
      ASSERT_EQ(lrs(*b.opt), lrs(*a.opt)) << name << " step " << i;
      ASSERT_EQ(momenta(*b.opt), momenta(*a.opt)) << name << " step " << i;
    }
    EXPECT_EQ(sa[0]->state_dict().meta, sb[0]->state_dict().meta) << name;
  }
}

TEST(Schedulers, ReduceLROnPlateauStateDictRoundTrip) {
  const std::vector<double> metrics = {1, 0.9, 0.95, 0.96, 0.97, 0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96};
  TwoGroups a("SGD"), b("SGD");
  ReduceLROnPlateau sa(*a.opt, {.factor = 0.5, .patience = 1, .cooldown = 2});
  ReduceLROnPlateau sb(*b.opt, {});
  for (size_t i = 0; i < 6; ++i) sa.step(metrics[i]);
  b.opt->load_state_dict(a.opt->state_dict());
  sb.load_state_dict(sa.state_dict());
  for (size_t i = 6; i < metrics.size(); ++i) {
    sa.step(metrics[i]);
    sb.step(metrics[i]);
    EXPECT_EQ(lrs(*b.opt), lrs(*a.opt)) << "step " << i;
  }
  EXPECT_EQ(sa.state_dict().meta, sb.state_dict().meta);
  EXPECT_LT(a.opt->param_groups()[0].lr, 0.1);  // the sequence did reduce it
}

TEST(Schedulers, InitialLrIsRecordedOnce) {
  TwoGroups s("SGD");
  StepLR first(*s.opt, {.step_size = 2});
  s.opt->param_groups()[0].lr = 0.3;
  ExponentialLR second(*s.opt, {.gamma = 0.5});
  EXPECT_EQ(s.opt->param_groups()[0].initial_lr, 0.1);
  EXPECT_EQ(second.base_lrs(), (std::vector<double>{0.1, 0.05}));
}

TEST(Schedulers, Errors) {
  TwoGroups s("SGD");
  Optimizer& o = *s.opt;
  kt::expect_error([&] { StepLR(o, {.step_size = 0}); }, {"StepLR", "step_size must be > 0, got 0"});
  kt::expect_error([&] { CosineAnnealingLR(o, {.T_max = -1}); }, {"CosineAnnealingLR", "T_max"});
  kt::expect_error([&] { LinearLR(o, {.start_factor = 0}); }, {"LinearLR", "start_factor", "got 0"});
  kt::expect_error([&] { LinearLR(o, {.end_factor = 1.5}); }, {"LinearLR", "end_factor", "1.5"});
  kt::expect_error([&] { LambdaLR(o, std::vector<LambdaLR::Lambda>{[](int64_t) { return 1.0; }}); },
                   {"LambdaLR", "expected 2 lr_lambdas", "got 1"});
  kt::expect_error([&] { OneCycleLR(o, {.max_lr = {0.1, 0.2, 0.3}, .total_steps = 10}); },
                   {"OneCycleLR", "expected 1 or 2 values of max_lr", "got 3"});
  kt::expect_error([&] { OneCycleLR(o, {.max_lr = {0.1}}); }, {"OneCycleLR", "total_steps"});
  kt::expect_error([&] { OneCycleLR(o, {.max_lr = {0.1}, .total_steps = 10, .anneal_strategy = "cosine"}); },
                   {"OneCycleLR", "'cos' or 'linear'", "cosine"});
  Tensor p = zeros({2}).requires_grad_();
  Adagrad adagrad({p});
  kt::expect_error([&] { OneCycleLR(adagrad, {.max_lr = {0.1}, .total_steps = 10}); },
                   {"OneCycleLR", "Adagrad has no momentum", "cycle_momentum = false"});
  OneCycleLR no_cycle(adagrad, {.max_lr = {0.1}, .total_steps = 2, .cycle_momentum = false});
  no_cycle.step();
  no_cycle.step();
  kt::expect_error([&] { no_cycle.step(); }, {"OneCycleLR", "tried to step 3 times", "total steps is 2"});

  auto step_lr = std::make_shared<StepLR>(o, StepLROptions{.step_size = 2});
  kt::expect_error([&] { SequentialLR(o, {step_lr}, {3}); }, {"SequentialLR", "one milestone fewer", "1 schedulers"});
  TwoGroups other("SGD");
  auto foreign = std::make_shared<StepLR>(*other.opt, StepLROptions{.step_size = 2});
  kt::expect_error([&] { SequentialLR(o, {step_lr, foreign}, {3}); }, {"SequentialLR", "scheduler 1", "another optimizer"});
  kt::expect_error([&] { ReduceLROnPlateau(o, {.factor = 1.0}); }, {"ReduceLROnPlateau", "factor must be < 1"});
  kt::expect_error([&] { ReduceLROnPlateau(o, {.mode = "lowest"}); }, {"ReduceLROnPlateau", "'min' or 'max'", "lowest"});
  kt::expect_error([&] { ReduceLROnPlateau(o, {.min_lr = {0, 0, 0}}); }, {"ReduceLROnPlateau", "expected 1 or 2"});

  // Loading another scheduler's state, or a state for another number of groups.
  ExponentialLR exp(o, {.gamma = 0.9});
  kt::expect_error([&] { exp.load_state_dict(step_lr->state_dict()); },
                   {"ExponentialLR.load_state_dict", "saved by \"StepLR\""});
  State bad = exp.state_dict();
  bad.meta["base_lrs"] = Json::array({0.1});
  kt::expect_error([&] { exp.load_state_dict(bad); }, {"ExponentialLR.load_state_dict", "1 param groups", "has 2"});
  State no_gamma = exp.state_dict();
  no_gamma.meta.erase("gamma");
  kt::expect_error([&] { exp.load_state_dict(no_gamma); }, {"lacks 'gamma'"});
  State wrong_type = exp.state_dict();
  wrong_type.meta["last_epoch"] = "three";
  kt::expect_error([&] { exp.load_state_dict(wrong_type); }, {"bad 'last_epoch'"});
}
