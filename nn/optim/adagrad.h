// kiln::optim::Adagrad, as torch.optim.Adagrad (dense gradients): per-element sums of squared
// gradients, lr decayed as lr / (1 + (step - 1) * lr_decay), weight decay, maximize.
#pragma once

#include <optional>
#include <vector>

#include "nn/optim/optimizer.h"

namespace kiln::optim {

// Unset fields take the optimizer-wide value, then torch's default (shown).
struct AdagradOptions {
  std::optional<double> lr;                         // 1e-2
  std::optional<double> lr_decay;                   // 0
  std::optional<double> weight_decay;               // 0
  std::optional<double> initial_accumulator_value;  // 0
  std::optional<double> eps;                        // 1e-10
  std::optional<bool> maximize;                     // false
};

class Adagrad final : public Optimizer {
 public:
  explicit Adagrad(std::vector<Tensor> params, AdagradOptions defaults = {});
  explicit Adagrad(std::vector<GroupSpec<AdagradOptions>> groups, AdagradOptions defaults = {});

  void step() override;
  void add_param_group(GroupSpec<AdagradOptions> group);

 private:
  void check_group(const ParamGroup& group) const override;
  std::vector<std::string> state_keys(const ParamGroup& group) const override;

  AdagradOptions defaults_;
};

}  // namespace kiln::optim
