// Trainer: runs a TrainModule's fit, validation, test and prediction (Lightning's Trainer).
// The loops read top to bottom (STYLE L13):
//   fit: setup → configure_optimizers → on_fit_start → sanity validation → on_train_start →
//        per epoch: on_train_epoch_start → per batch: on_before_batch_transfer,
//        transfer_batch_to_device, on_after_batch_transfer, on_train_batch_start, training_step,
//        [on_before_zero_grad, zero_grad], on_before_backward, backward, on_after_backward,
//        [optimizer_step: on_before_optimizer_step, configure_gradient_clipping, step;
//        step-interval schedulers], (last batch: epoch-interval schedulers), on_train_batch_end,
//        log, maybe validate, plateau step schedulers, maybe stop → on_train_epoch_end →
//        plateau epoch schedulers → on_train_end → on_fit_end → teardown.
// Callbacks' hooks run before the module's hook of the same name; setup and teardown run the
// DataModule's first. Checkpoints hold everything a bit-exact resume needs (checkpointing.cpp).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "train/callback.h"
#include "train/config.h"
#include "train/loggers/logger.h"
#include "train/plan.h"
#include "train/profiler.h"
#include "train/progress.h"
#include "train/train_module.h"

namespace kiln {

// The loaders for a fit/validate/test/predict call when no DataModule is used.
struct Loaders {
  std::shared_ptr<data::DataLoader> train;
  std::shared_ptr<data::DataLoader> val;
  std::shared_ptr<data::DataLoader> test;
  std::shared_ptr<data::DataLoader> predict;
};

enum class TrainerStage { none, fitting, sanity_checking, validating, testing, predicting };

// Times one action on a profiler, when there is one (Trainer(profiler = ...)).
class ProfileScope {
 public:
  ProfileScope(Profiler* profiler, const std::string& action) : profiler_(profiler), action_(&action) {
    if (profiler_) profiler_->start(action);
  }
  ~ProfileScope() {
    if (profiler_) profiler_->stop(*action_);
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  Profiler* profiler_;
  const std::string* action_;
};

// Thrown to unwind the loops when a signal asks the run to stop; fit() catches it.
struct RunInterrupted {
  int signal;
};
// Thrown once a stop signal's checkpoint is saved (handle_stop_signal): unwinding the loops joins
// the DataLoader's worker threads, then fit() exits the process with `status`.
struct RunStopped {
  int status;
};

class Trainer {
 public:
  explicit Trainer(TrainerConfig config = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // ckpt_path: a checkpoint file, "best" (the ModelCheckpoint's), "last" (the newest checkpoint where
  // the run stopped, in any of its version folders; none: a warning and a fresh start, see
  // Note [ckpt_path="last"] in checkpointing.cpp), or empty.
  void fit(TrainModule& module, DataModule& data, const std::string& ckpt_path = "");
  void fit(TrainModule& module, const Loaders& loaders, const std::string& ckpt_path = "");
  // Return the metrics logged at epoch level, as Lightning's validate()/test() do.
  std::map<std::string, double> validate(TrainModule& module, DataModule& data, const std::string& ckpt_path = "");
  std::map<std::string, double> validate(TrainModule& module, const Loaders& loaders, const std::string& ckpt_path = "");
  std::map<std::string, double> test(TrainModule& module, DataModule& data, const std::string& ckpt_path = "");
  std::map<std::string, double> test(TrainModule& module, const Loaders& loaders, const std::string& ckpt_path = "");
  std::vector<Tensor> predict(TrainModule& module, DataModule& data, const std::string& ckpt_path = "");
  std::vector<Tensor> predict(TrainModule& module, const Loaders& loaders, const std::string& ckpt_path = "");

  // ---- state that callbacks and modules read
  const TrainerConfig& config() const { return config_; }
  int64_t current_epoch() const { return progress_.epochs.current.completed; }
  // Optimizer steps: one per accumulation window (automatic), one per TrainOptimizer::step() (manual).
  int64_t global_step() const { return progress_.optimizer_steps; }
  // The step metrics are logged at (Lightning's _batches_that_stepped): batches that ended an
  // accumulation window, every batch under manual optimization; the current batch counts once it is over.
  int64_t logging_step() const { return progress_.batches_that_stepped - (batch_stepped_ ? 1 : 0); }
  TrainerStage stage() const { return stage_; }
  bool sanity_checking() const { return stage_ == TrainerStage::sanity_checking; }
  bool should_stop = false;  // set by callbacks (EarlyStopping) or the module to end fit after this step
  const std::map<std::string, double>& callback_metrics() const { return metrics_.callback_metrics(); }
  const std::map<std::string, double>& progress_bar_metrics() const { return metrics_.progress_bar_metrics(); }
  const std::vector<std::shared_ptr<Callback>>& callbacks() const { return callbacks_; }
  const std::vector<std::shared_ptr<Logger>>& loggers() const { return loggers_; }
  // The first logger's folder, or default_root_dir; with several processes, global rank 0's.
  std::string log_dir() const;
  const std::vector<OptimizerConfig>& optimizer_configs() const { return optimizers_; }
  int64_t num_training_batches() const { return num_train_batches_; }
  int64_t num_val_batches() const { return num_val_batches_; }  // of the current validation, test or predict run
  const FitProgress& fit_progress() const { return progress_; }
  TrainModule* module() const { return module_; }
  Profiler* profiler() const { return profiler_.get(); }  // null without Trainer(profiler = ...)
  // The hardware layer this Trainer resolved from its settings (train/hardware/).
  Strategy& strategy() const { return *plan_.strategy; }
  Accelerator& accelerator() const { return plan_.strategy->accelerator(); }
  Precision& precision() const { return plan_.strategy->precision(); }
  // Lightning's shorthands for where this process is in the run (one process: rank 0 of 1).
  int world_size() const { return plan_.strategy->world_size(); }
  int global_rank() const { return plan_.strategy->global_rank(); }
  bool is_global_zero() const { return plan_.strategy->is_global_zero(); }

  // Writes a checkpoint of the run as it is now (atomically). Callbacks call this during a run;
  // after fit() returns it saves the state the fit ended with (Lightning allows both), which
  // resumes a longer fit or loads into validate/test. After a call returns, the module it ran
  // (and its DataModule) must still exist; the optimizer states are saved only while that module
  // is the one the last fit configured them for.
  void save_checkpoint(const std::string& path);
  // With async_checkpointing (Note [Async checkpoints]): blocks until the checkpoint being written
  // is in place, rethrowing its error; at once otherwise. fit() calls it before it returns.
  void wait_for_checkpoints();
  // Deletes a checkpoint file (ModelCheckpoint's retention) once the saves started before are in place.
  void remove_checkpoint(const std::string& path);
  // The callback that owns checkpoint files, when there is one (ckpt_path "best" / "last").
  std::string best_model_path() const;
  std::string last_model_path() const;

  // Called by TrainModule::log.
  void log_from_module(const std::string& name, double value, const LogOptions& options);
  void manual_backward(const Tensor& loss);
  // Called by TrainOptimizer::step(): hooks, clipping (automatic optimization), the precision's
  // step, and under manual optimization one more global step.
  void step_optimizer(optim::Optimizer& optimizer);
  // True when the last fit() stopped early on SIGINT (the loggers were finalized as "interrupted").
  bool interrupted() const { return interrupted_; }
  double elapsed_seconds() const;

 private:
  struct SignalState;

  void attach(TrainModule& module);
  void detach();
  void stop_clock();
  void run_fit(TrainModule& module, DataModule* data, const Loaders& loaders, const std::string& ckpt_path);
  std::map<std::string, double> run_evaluation(TrainModule& module, DataModule* data, const Loaders& loaders,
                                               const std::string& ckpt_path, TrainerStage stage);
  // ---- fit loop (fit_loop.cpp)
  void fit_loop();
  void train_epoch();
  bool train_batch(const data::Batch& batch, int64_t batch_idx);
  // Where the rest of a batch starts (Note [Checkpoints inside a batch's end], fit_loop.cpp).
  enum class BatchTail { step_row, validation, after_validation, stop_checks };
  bool finish_batch(int64_t batch_idx, BatchTail from);
  void optimizer_step(int64_t batch_idx);
  // batch_idx: the batch within the epoch, for step-interval schedulers' frequency.
  void step_schedulers(const std::string& interval, bool plateau, int64_t batch_idx = -1);
  bool fit_done() const;
  bool agree_any(bool decision);  // Note [Decisions every process shares] (fit_loop.cpp)
  bool max_time_reached() const;
  bool can_stop_early() const;  // min_epochs and min_steps are met
  int64_t val_check_batches() const;
  bool overfitting() const;
  bool should_validate_after_batch(int64_t batch_idx, bool last_batch) const;
  void log_step_metrics();
  void setup_fit_data();
  void reload_dataloaders_if_due();
  void skip_validation_without_step();
  void require_evaluation_step(const TrainModule& module) const;
  void record_thread_count();
  void check_thread_count();
  data::Batch transfer_batch(const data::Batch& raw);  // precision conversion, then the transfer hooks
  // ---- evaluation (evaluation_loop.cpp)
  void validation_loop(int64_t max_batches, bool sanity);
  std::map<std::string, double> evaluation_loop(data::DataLoader& loader, int64_t max_batches, TrainerStage stage);
  // ---- checkpoints (checkpointing.cpp)
  State make_checkpoint();
  void wait_for_checkpoints_quietly();
  void restore_checkpoint(const std::string& ckpt_path);
  void restore_train_loader(const Json& meta, const std::string& path);
  std::string resolve_ckpt_path(const std::string& ckpt_path) const;
  std::vector<std::string> last_checkpoint_candidates() const;
  // ---- several processes (distributed_run.cpp)
  // At the start of fit/validate/test/predict: the strategy's processes started or joined, and
  // global rank 0's log folder shared.
  void setup_processes();
  void prepare_data(DataModule& data);  // once per node (local rank 0), the others wait
  void reset_metrics();  // empty, with sync_dist reducing through the strategy
  const std::vector<std::shared_ptr<Logger>>& rank_zero_loggers() const;
  // The loader with a DistributedSampler when the run has several processes.
  std::shared_ptr<data::DataLoader> distributed_loader(std::shared_ptr<data::DataLoader> loader, const char* which) const;
  // ---- helpers
  void send_to_loggers(const std::map<std::string, double>& metrics, int64_t step);
  void check_signals();
  void handle_stop_signal(int signal);
  void shutdown_loader_workers();
  int64_t limit_batches(const BatchLimit& limit, int64_t available, const char* loader) const;
  int64_t train_batch_limit(int64_t available) const;
  int64_t val_batch_limit(int64_t available) const;
  // Runs `hook` of callback i through f; profiled as Lightning's "[Callback]<state_key>.<hook>".
  template <class F>
  void callback_hook(size_t i, const char* hook, F&& f) {
    if (!profiler_) return f(*callbacks_[i]);
    const std::string action = callback_actions_[i] + "." + hook;
    const ProfileScope timed(profiler_.get(), action);
    f(*callbacks_[i]);
  }
  template <class F>
  void each_callback(const char* hook, F&& f) {
    for (size_t i = 0; i < callbacks_.size(); ++i) callback_hook(i, hook, f);
  }
  void start_profiler(const std::string& stage);

  TrainerConfig config_;
  std::vector<std::shared_ptr<Callback>> callbacks_;
  std::vector<std::shared_ptr<Logger>> loggers_;
  std::optional<std::string> shared_log_dir_;  // global rank 0's log_dir(), with several processes
  bool agreed_time_up_ = false;  // max_time, as all processes decided at the last batch
  TrainModule* module_ = nullptr;  // the module being run, null between calls
  DataModule* datamodule_ = nullptr;
  // What save_checkpoint saves between calls: the module and DataModule the last call ran.
  TrainModule* last_module_ = nullptr;
  DataModule* last_datamodule_ = nullptr;
  std::shared_ptr<data::DataLoader> train_loader_;
  std::shared_ptr<data::DataLoader> val_loader_;
  std::vector<OptimizerConfig> optimizers_;
  FitProgress progress_;
  MetricStore metrics_;
  TrainerStage stage_ = TrainerStage::none;
  int64_t num_train_batches_ = 0;
  int64_t num_val_batches_ = 0;
  Plan plan_;
  bool restored_ = false;          // fit resumed from a checkpoint: no sanity check
  int64_t signal_ckpt_count_ = 0;
  double start_time_ = 0;
  double restored_elapsed_ = 0;
  std::unique_ptr<SignalState> signals_;
  LogScope log_scope_ = LogScope::other;
  bool batch_stepped_ = false;     // the batch being finished has counted in batches_that_stepped
  bool validation_unlogged_ = false;  // a fit's validation runs and has not sent its results yet
  bool in_batch_tail_ = false;        // finish_batch runs
  BatchTail resume_tail_ = BatchTail::stop_checks;  // what a resumed epoch finishes first
  int fit_threads_ = 0;            // the thread count at fit start (deterministic runs keep it)
  int64_t current_batch_size_ = 0;
  bool interrupted_ = false;
  bool in_optimizer_step_ = false;  // TrainModule::optimizer_step is running (automatic optimization)
  bool thread_change_warned_ = false;  // deterministic = "warn" said so this fit
  int64_t loaders_epoch_ = 0;          // the epoch fit last asked the DataModule for loaders
  double last_validation_elapsed_ = 0;  // elapsed_seconds() when fit's last validation ended (time-based interval)
  std::shared_ptr<Profiler> profiler_;
  std::vector<std::string> callback_actions_;  // "[Callback]<state_key>", parallel to callbacks_
  // The actions the loops time, named as Lightning's profilers name them (see start_profiler).
  struct Actions {
    std::string batch_to_device, training_step, backward, optimizer_step, validation_step, test_step, predict_step;
  } actions_;
};

}  // namespace kiln
