// Adagrad (see adagrad.h). Unlike the other optimizers, torch creates Adagrad's state when a
// parameter is added (`step` = 0, `sum` = initial_accumulator_value), so this does too.
#include "nn/optim/adagrad.h"

#include "autograd/grad_mode.h"
#include "nn/optim/fused_update.h"

namespace kiln::optim {

Adagrad::Adagrad(std::vector<Tensor> params, AdagradOptions defaults)
    : Adagrad(std::vector<GroupSpec<AdagradOptions>>{{.params = std::move(params)}}, defaults) {}

Adagrad::Adagrad(std::vector<GroupSpec<AdagradOptions>> groups, AdagradOptions defaults)
    : Optimizer("Adagrad", {"lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize"}),
      defaults_(defaults) {
  KILN_CHECK(!groups.empty(), "Adagrad: no parameters to optimize (got an empty list of param groups)");
  for (auto& g : groups) add_param_group(std::move(g));
}

void Adagrad::add_param_group(GroupSpec<AdagradOptions> spec) {
  const AdagradOptions& o = spec.options;
  const AdagradOptions& d = defaults_;
  ParamGroup g;
  g.params = std::move(spec.params);
  g.lr = o.lr.value_or(d.lr.value_or(1e-2));
  g.lr_decay = o.lr_decay.value_or(d.lr_decay.value_or(0.0));
  g.weight_decay = o.weight_decay.value_or(d.weight_decay.value_or(0.0));
  g.initial_accumulator_value = o.initial_accumulator_value.value_or(d.initial_accumulator_value.value_or(0.0));
  g.eps = o.eps.value_or(d.eps.value_or(1e-10));
  g.maximize = o.maximize.value_or(d.maximize.value_or(false));
  const std::vector<Tensor> params = g.params;
  const double initial = g.initial_accumulator_value;
  Optimizer::add_param_group(std::move(g));
  NoGradGuard no_grad;
  for (const Tensor& p : params) {
    TensorDict& state = mutable_state_of(p);
    state.insert("step", step_tensor());
    state_buffer(state, "sum", p, initial);
  }
}

void Adagrad::check_group(const ParamGroup& g) const {
  KILN_CHECK(g.lr >= 0, "Adagrad: invalid learning rate ", g.lr, " (must be >= 0)");
  KILN_CHECK(g.lr_decay >= 0, "Adagrad: invalid lr_decay ", g.lr_decay, " (must be >= 0)");
  KILN_CHECK(g.weight_decay >= 0, "Adagrad: invalid weight_decay ", g.weight_decay, " (must be >= 0)");
  KILN_CHECK(g.initial_accumulator_value >= 0, "Adagrad: invalid initial_accumulator_value ",
             g.initial_accumulator_value, " (must be >= 0)");
  KILN_CHECK(g.eps >= 0, "Adagrad: invalid eps ", g.eps, " (must be >= 0)");
}

std::vector<std::string> Adagrad::state_keys(const ParamGroup&) const { return {"step", "sum"}; }

void Adagrad::step() {
  NoGradGuard no_grad;
  for (const ParamGroup& g : param_groups()) {
    for (const Tensor& p : g.params) {
      const Tensor grad = checked_grad(p, "Adagrad.step");
      if (!grad.defined()) continue;
      TensorDict& state = mutable_state_of(p);
      const double step = increment_step(state);
      const Tensor sum = state_buffer(state, "sum", p, g.initial_accumulator_value);
      adagrad_update(p, grad, sum,
                     {.lr = g.lr, .lr_decay = g.lr_decay, .eps = g.eps, .weight_decay = g.weight_decay,
                      .maximize = g.maximize, .step = step});
    }
  }
}

}  // namespace kiln::optim
