// ProgressBar callback (see progress_bar_callback.h): which bar is on screen, with what counts and
// metrics, at each hook; the renderer decides how often it is drawn.
#include "train/callbacks/progress_bar_callback.h"

#include <algorithm>
#include <cctype>

#include "tensor/error.h"
#include "train/callbacks/callback_util.h"
#include "train/trainer.h"

namespace kiln::callbacks {

ProgressBar::ProgressBar(ProgressBarOptions options) : options_(options) {
  KILN_CHECK(options_.refresh_rate >= 0, "ProgressBar: refresh_rate must be >= 0, got ", options_.refresh_rate);
  KILN_CHECK(options_.stream != nullptr, "ProgressBar: stream is null");
  KILN_CHECK(options_.log_refresh_rate >= 0, "ProgressBar: log_refresh_rate must be >= 0, got ", options_.log_refresh_rate);
  renderer_ = std::make_unique<kiln::ProgressBar>(kiln::ProgressBarOptions{.stream = options_.stream,
                                                                           .interactive = options_.interactive,
                                                                           .ncols = options_.ncols,
                                                                           .plain_every_n = options_.log_refresh_rate});
}

ProgressMetrics ProgressBar::metrics_for(const Trainer& trainer) {
  ProgressMetrics out;
  if (!trainer.loggers().empty()) {
    // Lightning's get_standard_metrics: a numeric version as a number, else its last 4 characters.
    const std::string version = trainer.loggers().front()->version();
    const bool numeric = !version.empty() && version.size() < 19 &&
                         std::all_of(version.begin(), version.end(), [](unsigned char c) { return std::isdigit(c); });
    if (numeric) out.emplace_back("v_num", static_cast<int64_t>(std::stoll(version)));
    else out.emplace_back("v_num", version.size() > 4 ? version.substr(version.size() - 4) : version);
  }
  for (const auto& [name, value] : trainer.progress_bar_metrics()) {
    auto same = std::find_if(out.begin(), out.end(), [&](const auto& item) { return item.first == name; });
    if (same != out.end()) same->second = value;  // a logged v_num wins, as in Lightning
    else out.emplace_back(name, value);
  }
  return out;
}

// Off a terminal only the log_refresh_rate lines are written (Note [Progress in a log]); the ends
// of bars are finish()'s.
bool ProgressBar::should_update(int64_t count, int64_t total) const {
  if (!enabled()) return false;
  if (!renderer_->interactive()) return options_.log_refresh_rate > 0 && count % options_.log_refresh_rate == 0;
  return count % options_.refresh_rate == 0 || count == total;
}

ProgressSnapshot ProgressBar::snapshot(const Bar& bar, ProgressMetrics metrics) const {
  return {.description = bar.description,
          .count = bar.count,
          .total = bar.total,
          .initial = bar.initial,
          .elapsed_s = monotonic_seconds() - bar.start_s,
          .metrics = std::move(metrics)};
}

// ---- training

void ProgressBar::on_train_epoch_start(Trainer& trainer, TrainModule&) {
  if (!enabled()) return;
  const int64_t resumed_at = trainer.fit_progress().train_batches.current.processed;
  train_ = {.description = "Epoch " + std::to_string(trainer.current_epoch()),
            .count = resumed_at,
            .total = trainer.num_training_batches(),
            .initial = resumed_at,
            .start_s = monotonic_seconds(),
            .open = true};
  renderer_->update(snapshot(train_, metrics_for(trainer)));
}

void ProgressBar::on_train_batch_end(Trainer& trainer, TrainModule&, const StepOutput&, const data::Batch&,
                                     int64_t batch_idx) {
  if (!train_.open) return;
  train_.count = batch_idx + 1;
  if (should_update(train_.count, train_.total)) renderer_->update(snapshot(train_, metrics_for(trainer)));
}

void ProgressBar::on_train_epoch_end(Trainer& trainer, TrainModule&) {
  if (!train_.open) return;
  if (options_.leave || !renderer_->interactive()) {  // a log keeps a line per epoch whatever leave says
    renderer_->finish(snapshot(train_, metrics_for(trainer)));
    train_.open = false;
  } else {
    renderer_->update(snapshot(train_, metrics_for(trainer)));
  }
}

void ProgressBar::on_train_end(Trainer& trainer, TrainModule&) {
  if (!train_.open) return;
  renderer_->finish(snapshot(train_, metrics_for(trainer)));
  train_.open = false;
}

// ---- validation, test, prediction: one bar at a time, over the training line on a terminal

void ProgressBar::start_eval_bar(const std::string& description, int64_t total) {
  eval_ = {.description = description, .count = 0, .total = total, .initial = 0, .start_s = monotonic_seconds(), .open = true};
  renderer_->update(snapshot(eval_));
}

void ProgressBar::advance_eval_bar(int64_t batch_idx) {
  if (!eval_.open) return;
  eval_.count = batch_idx + 1;
  if (should_update(eval_.count, eval_.total)) renderer_->update(snapshot(eval_));
}

void ProgressBar::finish_eval_bar() {
  if (!eval_.open) return;
  renderer_->finish(snapshot(eval_));
  eval_.open = false;
}

// Lightning shows the bars of global rank 0 only: the other processes' bars would interleave.
void ProgressBar::setup(Trainer& trainer, TrainModule&, const std::string& stage) {
  fitting_ = stage == "fit";
  rank_zero_ = trainer.strategy().is_global_zero();
}

void ProgressBar::on_validation_batch_start(Trainer& trainer, TrainModule&, const data::Batch&, int64_t) {
  if (!enabled() || eval_.open) return;
  const int64_t batches = trainer.num_val_batches();
  if (trainer.sanity_checking()) {
    const int64_t sanity = trainer.config().num_sanity_val_steps;
    start_eval_bar("Sanity Checking DataLoader 0", sanity < 0 ? batches : std::min(sanity, batches));
  } else {
    start_eval_bar("Validation DataLoader 0", batches);
  }
}

void ProgressBar::on_validation_batch_end(Trainer&, TrainModule&, const StepOutput&, const data::Batch&,
                                          int64_t batch_idx) {
  advance_eval_bar(batch_idx);
}

void ProgressBar::on_validation_end(Trainer& trainer, TrainModule&) {
  if (!eval_.open) return;
  if (!renderer_->interactive()) {
    // In a log, validation inside fit is reported by the epoch's line (Lightning's transient bar);
    // validate() has no epoch line, so its own line stays.
    if (fitting_) eval_.open = false;
    else finish_eval_bar();
    return;
  }
  // On a terminal the validation bar is transient (Lightning's leave=False): the epoch line is
  // redrawn over it with the new metrics, and a sanity-check line is overwritten by the first epoch.
  eval_.open = false;
  if (train_.open) renderer_->update(snapshot(train_, metrics_for(trainer)));
  else if (!trainer.sanity_checking()) renderer_->finish(snapshot(eval_));
}

void ProgressBar::on_test_batch_start(Trainer& trainer, TrainModule&, const data::Batch&, int64_t) {
  if (enabled() && !eval_.open) start_eval_bar("Testing DataLoader 0", trainer.num_val_batches());
}

void ProgressBar::on_test_batch_end(Trainer&, TrainModule&, const StepOutput&, const data::Batch&, int64_t batch_idx) {
  advance_eval_bar(batch_idx);
}

void ProgressBar::on_test_end(Trainer&, TrainModule&) { finish_eval_bar(); }

void ProgressBar::on_predict_batch_start(Trainer& trainer, TrainModule&, const data::Batch&, int64_t) {
  if (enabled() && !eval_.open) start_eval_bar("Predicting DataLoader 0", trainer.num_val_batches());
}

void ProgressBar::on_predict_batch_end(Trainer&, TrainModule&, const Tensor&, const data::Batch&, int64_t batch_idx) {
  advance_eval_bar(batch_idx);
}

void ProgressBar::on_predict_end(Trainer&, TrainModule&) { finish_eval_bar(); }

void ProgressBar::on_exception(Trainer& trainer, TrainModule&, const std::exception&) {
  // End the open line so that the error report starts on a line of its own.
  if (eval_.open) finish_eval_bar();
  if (train_.open) renderer_->finish(snapshot(train_, metrics_for(trainer)));
  train_.open = false;
}

}  // namespace kiln::callbacks
