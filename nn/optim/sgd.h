// kiln::optim::SGD: stochastic gradient descent with momentum, dampening, Nesterov momentum,
// L2 weight decay and maximize, as torch.optim.SGD (its default lr of 1e-3 included).
#pragma once

#include <optional>
#include <vector>

#include "nn/optim/optimizer.h"

namespace kiln::optim {

// Unset fields take the optimizer-wide value, then torch's default (shown).
struct SGDOptions {
  std::optional<double> lr;            // 1e-3
  std::optional<double> momentum;      // 0
  std::optional<double> dampening;     // 0
  std::optional<double> weight_decay;  // 0
  std::optional<bool> nesterov;        // false
  std::optional<bool> maximize;        // false
};

class SGD final : public Optimizer {
 public:
  explicit SGD(std::vector<Tensor> params, SGDOptions defaults = {});
  explicit SGD(std::vector<GroupSpec<SGDOptions>> groups, SGDOptions defaults = {});

  void step() override;
  void add_param_group(GroupSpec<SGDOptions> group);

 private:
  void check_group(const ParamGroup& group) const override;
  std::vector<std::string> state_keys(const ParamGroup& group) const override;

  SGDOptions defaults_;
};

}  // namespace kiln::optim
