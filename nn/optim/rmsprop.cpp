// RMSprop (see rmsprop.h). State per parameter, created at its first step as torch does: `step`,
// `square_avg`, `momentum_buffer` when momentum > 0, `grad_avg` when centered.
#include "nn/optim/rmsprop.h"

#include "autograd/grad_mode.h"
#include "nn/optim/fused_update.h"

namespace kiln::optim {

RMSprop::RMSprop(std::vector<Tensor> params, RMSpropOptions defaults)
    : RMSprop(std::vector<GroupSpec<RMSpropOptions>>{{.params = std::move(params)}}, defaults) {}

RMSprop::RMSprop(std::vector<GroupSpec<RMSpropOptions>> groups, RMSpropOptions defaults)
    : Optimizer("RMSprop", {"lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"}),
      defaults_(defaults) {
  KILN_CHECK(!groups.empty(), "RMSprop: no parameters to optimize (got an empty list of param groups)");
  for (auto& g : groups) add_param_group(std::move(g));
}

void RMSprop::add_param_group(GroupSpec<RMSpropOptions> spec) {
  const RMSpropOptions& o = spec.options;
  const RMSpropOptions& d = defaults_;
  ParamGroup g;
  g.params = std::move(spec.params);
  g.lr = o.lr.value_or(d.lr.value_or(1e-2));
  g.alpha = o.alpha.value_or(d.alpha.value_or(0.99));
  g.eps = o.eps.value_or(d.eps.value_or(1e-8));
  g.weight_decay = o.weight_decay.value_or(d.weight_decay.value_or(0.0));
  g.momentum = o.momentum.value_or(d.momentum.value_or(0.0));
  g.centered = o.centered.value_or(d.centered.value_or(false));
  g.maximize = o.maximize.value_or(d.maximize.value_or(false));
  Optimizer::add_param_group(std::move(g));
}

void RMSprop::check_group(const ParamGroup& g) const {
  KILN_CHECK(g.lr >= 0, "RMSprop: invalid learning rate ", g.lr, " (must be >= 0)");
  KILN_CHECK(g.eps >= 0, "RMSprop: invalid eps ", g.eps, " (must be >= 0)");
  KILN_CHECK(g.momentum >= 0, "RMSprop: invalid momentum ", g.momentum, " (must be >= 0)");
  KILN_CHECK(g.weight_decay >= 0, "RMSprop: invalid weight_decay ", g.weight_decay, " (must be >= 0)");
  KILN_CHECK(g.alpha >= 0, "RMSprop: invalid alpha ", g.alpha, " (must be >= 0)");
}

std::vector<std::string> RMSprop::state_keys(const ParamGroup& g) const {
  std::vector<std::string> keys = {"step", "square_avg"};
  if (g.momentum > 0) keys.push_back("momentum_buffer");
  if (g.centered) keys.push_back("grad_avg");
  return keys;
}

void RMSprop::step() {
  NoGradGuard no_grad;
  for (const ParamGroup& g : param_groups()) {
    for (const Tensor& p : g.params) {
      const Tensor grad = checked_grad(p, "RMSprop.step");
      if (!grad.defined()) continue;
      TensorDict& state = mutable_state_of(p);
      increment_step(state);
      const Tensor square_avg = state_buffer(state, "square_avg", p);
      const Tensor momentum_buffer = g.momentum > 0 ? state_buffer(state, "momentum_buffer", p) : Tensor();
      const Tensor grad_avg = g.centered ? state_buffer(state, "grad_avg", p) : Tensor();
      rmsprop_update(p, grad, square_avg, grad_avg, momentum_buffer,
                     {.lr = g.lr, .alpha = g.alpha, .eps = g.eps, .weight_decay = g.weight_decay,
                      .momentum = g.momentum, .centered = g.centered, .maximize = g.maximize});
    }
  }
}

}  // namespace kiln::optim
