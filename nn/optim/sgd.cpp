// SGD (see sgd.h). State per parameter: `momentum_buffer`, only when momentum != 0 (as torch).
#include "nn/optim/sgd.h"

#include "autograd/grad_mode.h"
#include "nn/optim/fused_update.h"

namespace kiln::optim {

SGD::SGD(std::vector<Tensor> params, SGDOptions defaults)
    : SGD(std::vector<GroupSpec<SGDOptions>>{{.params = std::move(params)}}, defaults) {}

SGD::SGD(std::vector<GroupSpec<SGDOptions>> groups, SGDOptions defaults)
    : Optimizer("SGD", {"lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"}),
      defaults_(defaults) {
  KILN_CHECK(!groups.empty(), "SGD: no parameters to optimize (got an empty list of param groups)");
  for (auto& g : groups) add_param_group(std::move(g));
}

void SGD::add_param_group(GroupSpec<SGDOptions> spec) {
  const SGDOptions& o = spec.options;
  const SGDOptions& d = defaults_;
  ParamGroup g;
  g.params = std::move(spec.params);
  g.lr = o.lr.value_or(d.lr.value_or(1e-3));
  g.momentum = o.momentum.value_or(d.momentum.value_or(0.0));
  g.dampening = o.dampening.value_or(d.dampening.value_or(0.0));
  g.weight_decay = o.weight_decay.value_or(d.weight_decay.value_or(0.0));
  g.nesterov = o.nesterov.value_or(d.nesterov.value_or(false));
  g.maximize = o.maximize.value_or(d.maximize.value_or(false));
  Optimizer::add_param_group(std::move(g));
}

void SGD::check_group(const ParamGroup& g) const {
  KILN_CHECK(g.lr >= 0, "SGD: invalid learning rate ", g.lr, " (must be >= 0)");
  KILN_CHECK(g.momentum >= 0, "SGD: invalid momentum ", g.momentum, " (must be >= 0)");
  KILN_CHECK(g.weight_decay >= 0, "SGD: invalid weight_decay ", g.weight_decay, " (must be >= 0)");
  KILN_CHECK(!g.nesterov || (g.momentum > 0 && g.dampening == 0), "SGD: nesterov momentum requires momentum > 0 "
             "and zero dampening, got momentum ", g.momentum, " and dampening ", g.dampening);
}

std::vector<std::string> SGD::state_keys(const ParamGroup& g) const {
  if (g.momentum == 0) return {};
  return {"momentum_buffer"};
}

void SGD::step() {
  NoGradGuard no_grad;
  for (const ParamGroup& g : param_groups()) {
    for (const Tensor& p : g.params) {
      const Tensor grad = checked_grad(p, "SGD.step");
      if (!grad.defined()) continue;
      Tensor buffer;
      bool first = false;
      if (g.momentum != 0) {
        TensorDict& state = mutable_state_of(p);
        first = !state.contains("momentum_buffer");
        buffer = state_buffer(state, "momentum_buffer", p);
      }
      sgd_update(p, grad, buffer,
                 {.lr = g.lr, .momentum = g.momentum, .dampening = g.dampening, .weight_decay = g.weight_decay,
                  .nesterov = g.nesterov, .maximize = g.maximize, .first_step = first});
    }
  }
}

}  // namespace kiln::optim
