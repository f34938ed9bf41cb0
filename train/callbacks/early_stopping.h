// EarlyStopping: stops fit when a monitored metric stops improving, with Lightning 2.x's
// semantics: `patience` counts checks (validation runs, or train epochs) without an improvement of
// more than min_delta; thresholds stop at once; a non-finite value stops at once when
// check_finite. It only sets trainer.should_stop; the Trainer decides when that ends the run
// (after min_epochs / min_steps).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "train/callback.h"
#include "train/callbacks/callback_util.h"

namespace kiln::callbacks {

struct EarlyStoppingOptions {
  std::string monitor;        // required: a key of trainer.callback_metrics()
  double min_delta = 0;       // an improvement must be larger than this
  int64_t patience = 3;       // checks without improvement before stopping
  bool verbose = false;
  std::string mode = "min";   // "min" | "max"
  bool strict = true;         // a missing monitor is an error (else the check is skipped)
  bool check_finite = true;   // stop when the monitor is nan or inf
  std::optional<double> stopping_threshold;    // stop once the monitor is better than this
  std::optional<double> divergence_threshold;  // stop once the monitor is worse than this
  // Unset: check at train epoch end when validation runs once per epoch at its end, else after
  // each validation.
  std::optional<bool> check_on_train_epoch_end;
};

class EarlyStopping : public Callback {
 public:
  explicit EarlyStopping(EarlyStoppingOptions options);

  std::string name() const override { return "EarlyStopping"; }
  // Lightning's: EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}
  std::string state_key() const override;

  void setup(Trainer& trainer, TrainModule& module, const std::string& stage) override;
  void on_train_epoch_end(Trainer& trainer, TrainModule& module) override;
  void on_validation_end(Trainer& trainer, TrainModule& module) override;

  // wait_count, stopped_epoch, best_score, patience.
  Json state_dict() const override;
  void load_state_dict(const Json& state) override;

  // Lightning's _evaluate_stopping_criteria: updates best_score / wait_count for one new value of
  // the monitor and returns whether to stop, with the reason (empty when there is nothing to say).
  std::pair<bool, std::string> evaluate(double current);

  int64_t wait_count() const { return wait_count_; }
  int64_t stopped_epoch() const { return stopped_epoch_; }
  double best_score() const { return best_score_; }
  int64_t patience() const { return patience_; }
  // min_delta with the sign Lightning gives it: negative in "min" mode, positive in "max" mode.
  double min_delta() const { return min_delta_; }
  const EarlyStoppingOptions& options() const { return options_; }

 private:
  bool improves(double a, double b) const { return options_.mode == "min" ? a < b : a > b; }
  bool should_skip_check(const Trainer& trainer) const;
  void run_check(Trainer& trainer);
  std::string improvement_message(double current) const;

  EarlyStoppingOptions options_;
  double min_delta_;
  int64_t patience_;
  double best_score_;
  int64_t wait_count_ = 0;
  int64_t stopped_epoch_ = 0;
  bool check_on_train_epoch_end_ = false;
  bool fitting_ = false;
};

}  // namespace kiln::callbacks

namespace kiln {
using callbacks::EarlyStopping;  // also kiln::EarlyStopping; see progress_bar_callback.h for why the namespace
}  // namespace kiln
