// Adam and AdamW (see adam.h). State per parameter, created at its first step as torch does:
// `step` (0-d f32), `exp_avg`, `exp_avg_sq`, and `max_exp_avg_sq` with amsgrad.
#include "nn/optim/adam.h"

#include "autograd/grad_mode.h"
#include "nn/optim/fused_update.h"

namespace kiln::optim {
namespace {

std::vector<GroupSpec<AdamOptions>> one_group(std::vector<Tensor> params) {
  std::vector<GroupSpec<AdamOptions>> groups;
  groups.push_back({.params = std::move(params)});
  return groups;
}

}  // namespace

Adam::Adam(std::vector<Tensor> params, AdamOptions defaults) : Adam("Adam", false, one_group(std::move(params)), defaults) {}

Adam::Adam(std::vector<GroupSpec<AdamOptions>> groups, AdamOptions defaults)
    : Adam("Adam", false, std::move(groups), defaults) {}

Adam::Adam(std::string name, bool decoupled_weight_decay, std::vector<GroupSpec<AdamOptions>> groups,
           AdamOptions defaults)
    : Optimizer(std::move(name), {"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"}),
      decoupled_weight_decay_(decoupled_weight_decay),
      defaults_(defaults) {
  KILN_CHECK(!groups.empty(), this->name(), ": no parameters to optimize (got an empty list of param groups)");
  for (auto& g : groups) add_param_group(std::move(g));
}

void Adam::add_param_group(GroupSpec<AdamOptions> spec) {
  const AdamOptions& o = spec.options;
  const AdamOptions& d = defaults_;
  ParamGroup g;
  g.params = std::move(spec.params);
  g.lr = o.lr.value_or(d.lr.value_or(1e-3));
  g.betas = o.betas.value_or(d.betas.value_or(std::pair{0.9, 0.999}));
  g.eps = o.eps.value_or(d.eps.value_or(1e-8));
  g.weight_decay = o.weight_decay.value_or(d.weight_decay.value_or(decoupled_weight_decay_ ? 1e-2 : 0.0));
  g.amsgrad = o.amsgrad.value_or(d.amsgrad.value_or(false));
  g.maximize = o.maximize.value_or(d.maximize.value_or(false));
  Optimizer::add_param_group(std::move(g));
}

void Adam::check_group(const ParamGroup& g) const {
  KILN_CHECK(g.lr >= 0, name(), ": invalid learning rate ", g.lr, " (must be >= 0)");
  KILN_CHECK(g.eps >= 0, name(), ": invalid eps ", g.eps, " (must be >= 0)");
  KILN_CHECK(g.betas.first >= 0 && g.betas.first < 1, name(), ": invalid beta1 ", g.betas.first,
             " (must be in [0, 1))");
  KILN_CHECK(g.betas.second >= 0 && g.betas.second < 1, name(), ": invalid beta2 ", g.betas.second,
             " (must be in [0, 1))");
  KILN_CHECK(g.weight_decay >= 0, name(), ": invalid weight_decay ", g.weight_decay, " (must be >= 0)");
}

std::vector<std::string> Adam::state_keys(const ParamGroup& g) const {
  if (g.amsgrad) return {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  return {"step", "exp_avg", "exp_avg_sq"};
}

void Adam::step() {
  NoGradGuard no_grad;
  for (const ParamGroup& g : param_groups()) {
    for (const Tensor& p : g.params) {
      const Tensor grad = checked_grad(p, name() + ".step");
      if (!grad.defined()) continue;
      TensorDict& state = mutable_state_of(p);
      const double step = increment_step(state);
      const Tensor exp_avg = state_buffer(state, "exp_avg", p);
      const Tensor exp_avg_sq = state_buffer(state, "exp_avg_sq", p);
      const Tensor max_exp_avg_sq = g.amsgrad ? state_buffer(state, "max_exp_avg_sq", p) : Tensor();
      adam_update(p, grad, exp_avg, exp_avg_sq, max_exp_avg_sq,
                  {.lr = g.lr, .beta1 = g.betas.first, .beta2 = g.betas.second, .eps = g.eps,
                   .weight_decay = g.weight_decay, .decoupled_weight_decay = decoupled_weight_decay_,
                   .amsgrad = g.amsgrad, .maximize = g.maximize, .step = step});
    }
  }
}

AdamW::AdamW(std::vector<Tensor> params, AdamOptions defaults)
    : Adam("AdamW", true, one_group(std::move(params)), defaults) {}

AdamW::AdamW(std::vector<GroupSpec<AdamOptions>> groups, AdamOptions defaults)
    : Adam("AdamW", true, std::move(groups), defaults) {}

}  // namespace kiln::optim
