// Learning-rate schedulers, as torch.optim.lr_scheduler in torch 2.x. Each step() computes the new
// lr the way torch's step() does: from the group's current lr (the recursive "chainable" forms,
// so schedulers attached to one optimizer compose), or from a closed form where torch uses one.
// A scheduler keeps a reference to its optimizer, which must outlive it. Construction performs
// torch's initial step (it may change the lr). Not here: CyclicLR, CosineAnnealingWarmRestarts,
// PolynomialLR, ConstantLR, ChainedScheduler, and resuming by a `last_epoch` argument (use
// load_state_dict).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nn/optim/optimizer.h"
#include "tensor/state_dict.h"

namespace kiln::optim {

class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  // Advances one epoch (or iteration) and writes the new lr into every param group. Call after
  // optimizer.step().
  virtual void step();
  // The lr of each param group as of this scheduler's last step.
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  int64_t last_epoch() const { return last_epoch_; }
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  const std::string& name() const { return name_; }
  Optimizer& optimizer() const { return *optimizer_; }

  // Meta only: {"scheduler": name, "last_epoch", "step_count", "base_lrs", "last_lr", and the
  // scheduler's own settings}. Loading restores all of them (settings too, as torch does) after
  // checking the name and the number of param groups.
  virtual State state_dict() const;
  virtual void load_state_dict(const State& state);

 protected:
  LRScheduler(Optimizer& optimizer, std::string name);
  // The new lr of each group at last_epoch_ (torch's get_lr). May read and write the groups.
  virtual std::vector<double> compute_lr() = 0;
  // torch's _get_closed_form_lr, used when SequentialLR restarts a scheduler at epoch 0.
  virtual std::optional<std::vector<double>> closed_form_lr() const { return std::nullopt; }
  // Scheduler-specific settings and state, in and out of the meta object.
  virtual void save_fields(Json& meta) const {}
  virtual void load_fields(const Json& meta) {}

  // torch's _initial_step: derived constructors call it last (virtual calls need the full object).
  void initial_step();
  // torch's _update_lr: last_epoch + 1 (or `epoch`, with the closed form), then set the group lrs.
  void update_lr(std::optional<int64_t> epoch = std::nullopt);
  std::vector<double> group_lrs() const;
  size_t num_groups() const { return optimizer_->param_groups().size(); }

  Optimizer* optimizer_;
  std::string name_;
  int64_t last_epoch_ = -1;
  int64_t step_count_ = 0;
  bool is_initial_ = false;  // inside initial_step()
  std::vector<double> base_lrs_;
  std::vector<double> last_lr_;

  friend class SequentialLR;
};

// Multiplies the lr by gamma every step_size epochs.
struct StepLROptions {
  int64_t step_size = 0;  // required, > 0
  double gamma = 0.1;
};
class StepLR final : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, StepLROptions options);

 private:
  std::vector<double> compute_lr() override;
  std::optional<std::vector<double>> closed_form_lr() const override;
  void save_fields(Json& meta) const override;
  void load_fields(const Json& meta) override;
  StepLROptions options_;
};

// Multiplies the lr by gamma at each milestone (by gamma^k for a milestone listed k times).
struct MultiStepLROptions {
  std::vector<int64_t> milestones;
  double gamma = 0.1;
};
class MultiStepLR final : public LRScheduler {
 public:
  MultiStepLR(Optimizer& optimizer, MultiStepLROptions options);

 private:
  std::vector<double> compute_lr() override;
  std::optional<std::vector<double>> closed_form_lr() const override;
  void save_fields(Json& meta) const override;
  void load_fields(const Json& meta) override;
  MultiStepLROptions options_;
};

// Multiplies the lr by gamma every epoch.
struct ExponentialLROptions {
  double gamma = 0;  // required
};
class ExponentialLR final : public LRScheduler {
 public:
  ExponentialLR(Optimizer& optimizer, ExponentialLROptions options);

 private:
  std::vector<double> compute_lr() override;
  std::optional<std::vector<double>> closed_form_lr() const override;
  void save_fields(Json& meta) const override;
  void load_fields(const Json& meta) override;
  ExponentialLROptions options_;
};

// Cosine annealing from the base lr to eta_min over T_max epochs (and back, periodically).
struct CosineAnnealingLROptions {
  int64_t T_max = 0;  // required, > 0
  double eta_min = 0;
};
class CosineAnnealingLR final : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& optimizer, CosineAnnealingLROptions options);

 private:
  std::vector<double> compute_lr() override;
  std::optional<std::vector<double>> closed_form_lr() const override;
  void save_fields(Json& meta) const override;
  void load_fields(const Json& meta) override;
  CosineAnnealingLROptions options_;
};

// Scales the lr linearly from start_factor to end_factor over total_iters epochs.
struct LinearLROptions {
  double start_factor = 1.0 / 3;
  double end_factor = 1.0;
  int64_t total_iters = 5;
};
class LinearLR final : public LRScheduler {
 public:
  LinearLR(Optimizer& optimizer, LinearLROptions options = {});

 private:
  std::vector<double> compute_lr() override;
  std::optional<std::vector<double>> closed_form_lr() const override;
  void save_fields(Json& meta) const override;
  void load_fields(const Json& meta) override;
  LinearLROptions options_;
};

// lr = base_lr * lambda(epoch); one lambda for all groups or one per group. The lambdas are not
// saved by state_dict (as torch does not save plain functions).
class LambdaLR final : public LRScheduler {
 public:
  using Lambda = std::function<double(int64_t epoch)>;
  LambdaLR(Optimizer& optimizer, Lambda lr_lambda);
  LambdaLR(Optimizer& optimizer, std::vector<Lambda> lr_lambdas);

 private:
  std::vector<double> compute_lr() override;
  std::vector<Lambda> lambdas_;
};

// The 1cycle policy: warm up from max_lr / div_factor to max_lr over pct_start of total_steps,
// then anneal to initial_lr / final_div_factor (three_phase: back to initial_lr first). Cycles
// momentum (SGD, RMSprop) or beta1 (Adam) inversely between max_momentum and base_momentum.
struct OneCycleLROptions {
  std::vector<double> max_lr;                      // one value for all groups, or one per group
  std::optional<int64_t> total_steps;              // or epochs * steps_per_epoch
  std::optional<int64_t> epochs;
  std::optional<int64_t> steps_per_epoch;
  double pct_start = 0.3;
  std::string anneal_strategy = "cos";             // "cos" or "linear"
  bool cycle_momentum = true;
  std::vector<double> base_momentum = {0.85};      // one value, or one per group
  std::vector<double> max_momentum = {0.95};
  double div_factor = 25.0;
  double final_div_factor = 1e4;
  bool three_phase = false;
};
class OneCycleLR final : public LRScheduler {
 public:
  OneCycleLR(Optimizer& optimizer, OneCycleLROptions options);

 private:
  struct Phase {
    double end_step;
    int start_lr, end_lr, start_momentum, end_momentum;  // indices into GroupValues::at
  };
  // Per group: initial_lr, max_lr, min_lr, max_momentum, base_momentum (torch keeps them in the group).
  struct GroupValues {
    double values[5];
    double at(int i) const { return values[i]; }
  };
  std::vector<double> compute_lr() override;
  void save_fields(Json& meta) const override;
  void load_fields(const Json& meta) override;
  double anneal(double start, double end, double pct) const;

  int64_t total_steps_ = 0;
  bool cos_ = true;
  bool cycle_momentum_ = true;
  bool use_beta1_ = false;
  std::vector<Phase> phases_;
  std::vector<GroupValues> groups_;
};

// Runs schedulers one after another: schedulers[i] from milestones[i-1] on (restarted at its
// epoch 0 there). All must drive `optimizer`.
class SequentialLR final : public LRScheduler {
 public:
  SequentialLR(Optimizer& optimizer, std::vector<std::shared_ptr<LRScheduler>> schedulers,
               std::vector<int64_t> milestones);
  void step() override;
  State state_dict() const override;
  void load_state_dict(const State& state) override;

 private:
  // The lrs the active scheduler set at its last step (SequentialLR only delegates).
  std::vector<double> compute_lr() override;
  static void undo_initial_step(LRScheduler& scheduler);
  size_t active_index(int64_t epoch) const;

  std::vector<std::shared_ptr<LRScheduler>> schedulers_;
  std::vector<int64_t> milestones_;
};

// Reduces the lr by `factor` when a metric has stopped improving for `patience` epochs. Not an
// LRScheduler: its step takes the metric.
struct ReduceLROnPlateauOptions {
  std::string mode = "min";            // "min" or "max"
  double factor = 0.1;                 // < 1
  int64_t patience = 10;
  double threshold = 1e-4;
  std::string threshold_mode = "rel";  // "rel" or "abs"
  int64_t cooldown = 0;
  std::vector<double> min_lr = {0.0};  // one value for all groups, or one per group
  double eps = 1e-8;                   // smaller lr changes are skipped
};
class ReduceLROnPlateau {
 public:
  ReduceLROnPlateau(Optimizer& optimizer, ReduceLROnPlateauOptions options = {});

  void step(double metric);
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  int64_t last_epoch() const { return last_epoch_; }
  State state_dict() const;
  void load_state_dict(const State& state);

 private:
  bool is_better(double a, double best) const;
  void reduce_lr();

  Optimizer* optimizer_;
  ReduceLROnPlateauOptions options_;
  std::vector<double> min_lrs_;
  double best_;
  int64_t num_bad_epochs_ = 0;
  int64_t cooldown_counter_ = 0;
  int64_t last_epoch_ = 0;
  std::vector<double> last_lr_;
};

}  // namespace kiln::optim
