// kiln::optim::Optimizer: the base of every optimizer. It holds param groups (parameters plus
// their hyperparameters, which schedulers change), per-parameter state (named tensors, torch's
// `optimizer.state[p]`), zero_grad, and a state_dict in PyTorch's layout. It does no math: each
// optimizer's step() lives in its own file, its elementwise update in nn/optim/fused_update.cpp.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tensor/state_dict.h"
#include "tensor/tensor.h"

namespace kiln::optim {

// One parameter group after defaults are applied: its parameters and hyperparameters. The fields
// are the union over the optimizers in nn/optim (as torch's group dict is); each optimizer reads,
// validates and saves only its own (Optimizer::hyper_keys()). Schedulers write `lr`, set
// `initial_lr`, and OneCycleLR cycles `momentum` or `betas.first`.
struct ParamGroup {
  std::vector<Tensor> params;
  double lr = 0;
  double weight_decay = 0;
  double momentum = 0;                      // SGD, RMSprop
  double dampening = 0;                     // SGD
  bool nesterov = false;                    // SGD
  std::pair<double, double> betas{0, 0};    // Adam, AdamW
  double eps = 0;                           // Adam, AdamW, RMSprop, Adagrad
  bool amsgrad = false;                     // Adam, AdamW
  double alpha = 0;                         // RMSprop
  bool centered = false;                    // RMSprop
  double lr_decay = 0;                      // Adagrad
  double initial_accumulator_value = 0;     // Adagrad
  bool maximize = false;
  std::optional<double> initial_lr;         // set by the first scheduler attached (torch's 'initial_lr')
};

// A group as the user writes it: `{.params = decay, .options = {.weight_decay = 0.1}}`. Unset
// option fields take the optimizer-wide defaults.
template <class Options>
struct GroupSpec {
  std::vector<Tensor> params;
  Options options = {};
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a .grad (others are skipped), without recording autograd.
  virtual void step() = 0;
  // Clears every parameter's .grad: drops it (set_to_none), or fills it with zeros.
  void zero_grad(bool set_to_none = true);

  std::vector<ParamGroup>& param_groups() { return groups_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  const std::string& name() const { return name_; }
  // The ParamGroup fields this optimizer uses, by torch's names ("lr", "betas", ...).
  const std::vector<std::string>& hyper_keys() const { return hyper_keys_; }
  bool has_hyper(std::string_view key) const;

  // Torch's layout. Tensors: `state.<i>.<name>` (i counts parameters across groups in order;
  // `step` is a 0-d f32 tensor, as in torch 2.x). Meta: {"optimizer": name, "param_groups": [{hyper
  // keys..., "initial_lr"?, "params": [i...]}]}. The tensors are copies (a snapshot).
  State state_dict() const;
  // Restores hyperparameters and state; groups and parameters are matched by position. Checks
  // everything before changing anything: a mismatch throws kiln::Error and leaves this as it was.
  void load_state_dict(const State& state);

  // The state of one parameter (empty before its first step, except where torch fills it eagerly).
  const TensorDict* state_of(const Tensor& param) const;
  // Forgets one parameter's state (ZeRO: a rank keeps only the state of the parameters it owns).
  void clear_state_of(const Tensor& param) { state_.erase(param.impl()); }

 protected:
  Optimizer(std::string name, std::vector<std::string> hyper_keys);
  // Appends a group after checking its hyperparameters (check_group) and its parameters (defined,
  // floating, leaves, not already in another group).
  void add_param_group(ParamGroup group);
  TensorDict& mutable_state_of(const Tensor& param) { return state_[param.impl()]; }
  // Throws if a hyperparameter is out of range (torch's constructor checks).
  virtual void check_group(const ParamGroup& group) const = 0;
  // The state names a parameter of `group` has once it has state; load_state_dict requires exactly these.
  virtual std::vector<std::string> state_keys(const ParamGroup& group) const = 0;

 private:
  std::string name_;
  std::vector<std::string> hyper_keys_;
  std::vector<ParamGroup> groups_;
  std::unordered_map<const TensorImpl*, TensorDict> state_;
};

// ---- helpers shared by the optimizers' step()

// The gradient of `param`, checked to match it (shape, dtype, CPU); undefined when it has none.
Tensor checked_grad(const Tensor& param, std::string_view op);
// The state tensor `name`, created as a contiguous tensor like `param` filled with `fill` if absent.
Tensor state_buffer(TensorDict& state, const std::string& name, const Tensor& param, double fill = 0);
// A new 0-d f32 tensor holding `value`: torch's `step` state.
Tensor step_tensor(double value = 0);
// Increments the `step` state (created at 0 if absent) and returns the new value, as torch's
// `step_t += 1` in f32.
double increment_step(TensorDict& state);

}  // namespace kiln::optim
