// kiln::optim::Adam and AdamW, as torch.optim.Adam / AdamW: one implementation; AdamW decays the
// weights directly (p *= 1 - lr * weight_decay) instead of adding weight_decay * p to the gradient,
// and defaults weight_decay to 1e-2. Both support amsgrad and maximize.
#pragma once

#include <optional>
#include <utility>
#include <vector>

#include "nn/optim/optimizer.h"

namespace kiln::optim {

// Unset fields take the optimizer-wide value, then torch's default (shown).
struct AdamOptions {
  std::optional<double> lr;                        // 1e-3
  std::optional<std::pair<double, double>> betas;  // (0.9, 0.999)
  std::optional<double> eps;                       // 1e-8
  std::optional<double> weight_decay;              // Adam 0, AdamW 1e-2
  std::optional<bool> amsgrad;                     // false
  std::optional<bool> maximize;                    // false
};

class Adam : public Optimizer {
 public:
  explicit Adam(std::vector<Tensor> params, AdamOptions defaults = {});
  explicit Adam(std::vector<GroupSpec<AdamOptions>> groups, AdamOptions defaults = {});

  void step() override;
  void add_param_group(GroupSpec<AdamOptions> group);

 protected:
  Adam(std::string name, bool decoupled_weight_decay, std::vector<GroupSpec<AdamOptions>> groups,
       AdamOptions defaults);

 private:
  void check_group(const ParamGroup& group) const override;
  std::vector<std::string> state_keys(const ParamGroup& group) const override;

  bool decoupled_weight_decay_;
  AdamOptions defaults_;
};

class AdamW final : public Adam {
 public:
  explicit AdamW(std::vector<Tensor> params, AdamOptions defaults = {});
  explicit AdamW(std::vector<GroupSpec<AdamOptions>> groups, AdamOptions defaults = {});
};

}  // namespace kiln::optim
