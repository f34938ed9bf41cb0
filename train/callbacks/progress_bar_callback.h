// ProgressBar: the Trainer's progress display, Lightning 2.x's TQDMProgressBar in behaviour. On a
// terminal one line is redrawn in place ("Epoch 0:  43%|████▎     | 200/469 [00:03<00:04,
// 62.10it/s, v_num=0, loss=0.412]"); validation takes over the line while it runs and the epoch
// line comes back with the new metrics. Elsewhere (a log) a plain line ends each epoch and each
// validate/test/predict run, with one every log_refresh_rate batches if asked: see Note [Progress
// in a log] (progress_bar.h). Validation inside fit shows in the epoch's line there.
// Rendering is kiln::ProgressBar's (train/progress/progress_bar.h); this class says what to show.
// The built-in callbacks live in kiln::callbacks (Lightning's `callbacks` package) because the
// renderer already holds the name kiln::ProgressBar; the others are also aliased into kiln.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "train/callback.h"
#include "train/progress/progress_bar.h"

namespace kiln::callbacks {

struct ProgressBarOptions {
  int64_t refresh_rate = 1;          // redraw every N batches (and at the last one); 0: no bar at all
  int64_t log_refresh_rate = 0;      // not a terminal: also a line every N batches; 0: only at the ends
  // Keep each finished epoch's line. Lightning's TQDMProgressBar defaults to leave=False (one line
  // reused for every epoch); a line per epoch keeps the history readable, so Kiln keeps it.
  bool leave = true;
  std::FILE* stream = stdout;
  std::optional<bool> interactive;   // unset: whether stream is a terminal
  int ncols = 0;                     // 0: the terminal's width
};

class ProgressBar : public Callback {
 public:
  explicit ProgressBar(ProgressBarOptions options = {});

  std::string name() const override { return "ProgressBar"; }
  bool enabled() const { return options_.refresh_rate > 0 && rank_zero_; }
  bool interactive() const { return renderer_->interactive(); }

  void setup(Trainer& trainer, TrainModule& module, const std::string& stage) override;
  void on_train_epoch_start(Trainer& trainer, TrainModule& module) override;
  void on_train_batch_end(Trainer& trainer, TrainModule& module, const StepOutput& outputs, const data::Batch& batch,
                          int64_t batch_idx) override;
  void on_train_epoch_end(Trainer& trainer, TrainModule& module) override;
  void on_train_end(Trainer& trainer, TrainModule& module) override;
  void on_validation_batch_start(Trainer& trainer, TrainModule& module, const data::Batch& batch,
                                 int64_t batch_idx) override;
  void on_validation_batch_end(Trainer& trainer, TrainModule& module, const StepOutput& outputs,
                               const data::Batch& batch, int64_t batch_idx) override;
  void on_validation_end(Trainer& trainer, TrainModule& module) override;
  void on_test_batch_start(Trainer& trainer, TrainModule& module, const data::Batch& batch, int64_t batch_idx) override;
  void on_test_batch_end(Trainer& trainer, TrainModule& module, const StepOutput& outputs, const data::Batch& batch,
                         int64_t batch_idx) override;
  void on_test_end(Trainer& trainer, TrainModule& module) override;
  void on_predict_batch_start(Trainer& trainer, TrainModule& module, const data::Batch& batch,
                              int64_t batch_idx) override;
  void on_predict_batch_end(Trainer& trainer, TrainModule& module, const Tensor& prediction, const data::Batch& batch,
                            int64_t batch_idx) override;
  void on_predict_end(Trainer& trainer, TrainModule& module) override;
  void on_exception(Trainer& trainer, TrainModule& module, const std::exception& error) override;

  // What follows the bar: v_num (the first logger's version) then the trainer's progress-bar metrics.
  static ProgressMetrics metrics_for(const Trainer& trainer);

 private:
  struct Bar {
    std::string description;
    int64_t count = 0;
    int64_t total = 0;
    int64_t initial = 0;  // batches done before this process timed any (a resumed epoch)
    double start_s = 0;
    bool open = false;
  };
  bool should_update(int64_t count, int64_t total) const;
  ProgressSnapshot snapshot(const Bar& bar, ProgressMetrics metrics = {}) const;
  void start_eval_bar(const std::string& description, int64_t total);
  void advance_eval_bar(int64_t batch_idx);
  void finish_eval_bar();

  ProgressBarOptions options_;
  std::unique_ptr<kiln::ProgressBar> renderer_;
  Bar train_;
  Bar eval_;
  bool fitting_ = false;
  bool rank_zero_ = true;  // only global rank 0 draws (set in setup)
};

}  // namespace kiln::callbacks
