// kiln::optim::RMSprop, as torch.optim.RMSprop: squared-gradient running average (alpha), optional
// centering (subtracts the squared running mean of the gradient), momentum, weight decay, maximize.
#pragma once

#include <optional>
#include <vector>

#include "nn/optim/optimizer.h"

namespace kiln::optim {

// Unset fields take the optimizer-wide value, then torch's default (shown).
struct RMSpropOptions {
  std::optional<double> lr;            // 1e-2
  std::optional<double> alpha;         // 0.99
  std::optional<double> eps;           // 1e-8
  std::optional<double> weight_decay;  // 0
  std::optional<double> momentum;      // 0
  std::optional<bool> centered;        // false
  std::optional<bool> maximize;        // false
};

class RMSprop final : public Optimizer {
 public:
  explicit RMSprop(std::vector<Tensor> params, RMSpropOptions defaults = {});
  explicit RMSprop(std::vector<GroupSpec<RMSpropOptions>> groups, RMSpropOptions defaults = {});

  void step() override;
  void add_param_group(GroupSpec<RMSpropOptions> group);

 private:
  void check_group(const ParamGroup& group) const override;
  std::vector<std::string> state_keys(const ParamGroup& group) const override;

  RMSpropOptions defaults_;
};

}  // namespace kiln::optim
