// LearningRateMonitor: sends each optimizer's learning rate (and optionally momentum and weight
// decay) to the Trainer's loggers, named and timed as Lightning 2.x does: `lr-SGD`, `lr-Adam-1` for
// a second Adam, `lr-Adam/pg2` for a second param group; logged at epoch start and/or before
// logging steps according to logging_interval and each scheduler's interval.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "train/callback.h"
#include "train/callbacks/callback_util.h"
#include "train/train_module.h"

namespace kiln::callbacks {

struct LearningRateMonitorOptions {
  // "step" or "epoch": every optimizer at that interval; unset: each optimizer at its scheduler's
  // interval (optimizers without a scheduler at both).
  std::optional<std::string> logging_interval;
  bool log_momentum = false;      // `<name>-momentum`: momentum, or beta1 for Adam-like optimizers
  bool log_weight_decay = false;  // `<name>-weight_decay`
};

class LearningRateMonitor : public Callback {
 public:
  explicit LearningRateMonitor(LearningRateMonitorOptions options = {});

  std::string name() const override { return "LearningRateMonitor"; }

  void on_train_start(Trainer& trainer, TrainModule& module) override;
  void on_train_batch_start(Trainer& trainer, TrainModule& module, const data::Batch& batch,
                            int64_t batch_idx) override;
  void on_train_epoch_start(Trainer& trainer, TrainModule& module) override;

  // The names each optimizer's param groups are logged under, one list per name source: first each
  // scheduler (in configuration order), then each optimizer that has no scheduler.
  static std::vector<std::vector<std::string>> names(const std::vector<OptimizerConfig>& configs);
  // What is logged for `interval` ("step", "epoch", or "any"): schedulers whose interval matches,
  // and every optimizer without a scheduler.
  Metrics extract_stats(const std::vector<OptimizerConfig>& configs, const std::string& interval) const;
  // Everything logged so far, for inspection: name → values in logging order.
  const std::map<std::string, std::vector<double>>& history() const { return history_; }

 private:
  void log_stats(Trainer& trainer, const std::string& interval);

  LearningRateMonitorOptions options_;
  std::map<std::string, std::vector<double>> history_;
};

}  // namespace kiln::callbacks

namespace kiln {
using callbacks::LearningRateMonitor;  // also kiln::LearningRateMonitor; see progress_bar_callback.h for why the namespace
}  // namespace kiln
