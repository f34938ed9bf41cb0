// The fit loop: epochs of training batches, with the optimization step, accumulation, clipping,
// schedulers, step logging, validation checks and stopping. See trainer.h for the hook order and
// Note [Resuming from progress counters] for how a resumed run picks up.
#include <cmath>

#include "train/trainer.h"

namespace kiln {
namespace {

// ModelCheckpoint and EarlyStopping act on the metrics of an epoch, so at epoch end they run after
// the module's own hook has logged (Lightning's "monitoring callbacks" rule).
bool is_monitoring(const Callback& cb) { return cb.name() == "ModelCheckpoint" || cb.name() == "EarlyStopping"; }

const std::string kRunTrainingEpoch = "run_training_epoch";
const std::string kRunTrainingBatch = "run_training_batch";
const std::string kTrainDataloaderNext = "[_TrainingEpochLoop].train_dataloader_next";

// Times the loader's fetches: from the end of one batch's work to the start of the next.
class FetchTimer {
 public:
  explicit FetchTimer(Profiler* profiler) : profiler_(profiler) {}
  void start() {
    if (!profiler_ || running_) return;
    profiler_->start(kTrainDataloaderNext);
    running_ = true;
  }
  void stop() {
    if (!running_) return;
    profiler_->stop(kTrainDataloaderNext);
    running_ = false;
  }
  ~FetchTimer() { stop(); }

 private:
  Profiler* profiler_;
  bool running_ = false;
};

}  // namespace

// Note [Global step under manual optimization]
// Lightning's global_step counts optimizer steps. Under automatic optimization that is one per
// accumulation window; under manual optimization it is every TrainOptimizer::step() call, so a
// GAN stepping two optimizers per batch makes two global steps per batch. max_steps, min_steps,
// ModelCheckpoint's every_n_train_steps and step-interval schedulers follow global_step. Logged
// step metrics follow another count, batches_that_stepped (Trainer::logging_step): batches that
// ended an accumulation window, which under manual optimization is every batch. Both counts are
// saved in checkpoints, so a resumed run continues both.

bool Trainer::can_stop_early() const {
  return current_epoch() >= config_.min_epochs.value_or(0) && global_step() >= config_.min_steps.value_or(0);
}

bool Trainer::fit_done() const {
  const int64_t epochs_done = progress_.epochs.current.completed;
  const bool max_steps_reached = config_.max_steps >= 0 && global_step() >= config_.max_steps;
  const bool max_epochs_reached = plan_.max_epochs >= 0 && epochs_done >= plan_.max_epochs;
  const bool time_up = plan_.strategy->world_size() > 1 ? agreed_time_up_ : max_time_reached();
  if (max_steps_reached || max_epochs_reached || time_up) return true;
  return should_stop && can_stop_early();
}

void Trainer::fit_loop() {
  // A checkpoint written inside an epoch resumes with the rest of that epoch, even when the run is
  // done (max_steps reached at its batch): the uninterrupted run ended that epoch too (train_epoch).
  auto epoch_unfinished = [&] { return progress_.epochs.total.started > progress_.epochs.total.completed; };
  while (!fit_done() || epoch_unfinished()) {
    {
      const ProfileScope timed(profiler_.get(), kRunTrainingEpoch);
      train_epoch();
    }
    check_signals();
    should_stop = agree_any(should_stop);  // an epoch-end validation's EarlyStopping, on any process
  }
}

// Note [Decisions every process shares]
// With several processes, every process must run the same collectives in the same order, so a
// decision taken on one process alone would leave the others waiting in a collective until the
// timeout. Where a decision comes from, it is agreed: EarlyStopping's when it is taken (any
// process's stop stops all, Lightning's reduce_boolean_decision), max_time's after each batch
// (each process has its own clock; only when max_time is set), and should_stop once more at each
// epoch's end. Nothing is agreed per batch otherwise: a small all-reduce costs about 1 ms here
// (bench/README.md, "Several processes"). A module that sets should_stop mid-epoch sets it on
// every process alike, from values logged with sync_dist, as in Lightning.
bool Trainer::agree_any(bool decision) {
  return plan_.strategy->world_size() > 1 ? plan_.strategy->reduce_boolean_decision(decision, /*all=*/false)
                                          : decision;
}

bool Trainer::max_time_reached() const {
  return config_.max_time && elapsed_seconds() >= config_.max_time->seconds();
}

void Trainer::train_epoch() {
  TrainModule& module = *module_;
  const bool resuming = progress_.epochs.total.started > progress_.epochs.total.completed;
  if (!resuming) {
    progress_.epochs.ready();
    progress_.epochs.started();
    progress_.train_batches.reset_current();
    reload_dataloaders_if_due();
  }
  const bool epoch_end_pending = progress_.epochs.total.processed > progress_.epochs.total.completed;
  train_loader_->set_epoch(current_epoch());
  module.train();

  if (!epoch_end_pending) {
    each_callback("on_train_epoch_start", [&](Callback& cb) { cb.on_train_epoch_start(*this, module); });
    log_scope_ = LogScope::training_epoch_end;
    module.on_train_epoch_start();

    int64_t batch_idx = progress_.train_batches.current.processed;
    // Note [Checkpoints inside a batch's end]: a resumed epoch first finishes the batch its checkpoint was written in.
    const bool stop = resuming && batch_idx > 0 && finish_batch(batch_idx - 1, resume_tail_);
    if (!stop && batch_idx < num_train_batches_) {
      FetchTimer fetch(profiler_.get());
      fetch.start();
      for (data::Batch& raw : *train_loader_) {
        fetch.stop();
        check_thread_count();
        progress_.train_batches.ready();
        batch_stepped_ = false;
        const int64_t fit_batch = progress_.train_batches.total.ready - 1;
        if (profiler_) profiler_->on_train_batch_start(fit_batch);
        bool keep_going;
        {
          const ProfileScope timed(profiler_.get(), kRunTrainingBatch);
          keep_going = train_batch(raw, batch_idx);
        }
        if (profiler_) profiler_->on_train_batch_end(fit_batch);
        ++batch_idx;
        if (!keep_going || finish_batch(batch_idx - 1, BatchTail::step_row)) break;
        fetch.start();
      }
    }
    batch_stepped_ = false;
    // An epoch cut short by an accumulation window still steps on what it accumulated (Lightning).
    if (module.automatic_optimization && progress_.micro_batches_in_window > 0) optimizer_step(batch_idx - 1);
    batch_stepped_ = false;
    progress_.epochs.processed();

    // Lightning logs epoch-end values at the step of the epoch's last batch.
    const int64_t epoch_end_step = std::max<int64_t>(progress_.batches_that_stepped - 1, 0);
    send_to_loggers(metrics_.end_epoch(LogScope::training_step), epoch_end_step);
    const auto epoch_end = [&](Callback& cb) { cb.on_train_epoch_end(*this, module); };
    for (size_t i = 0; i < callbacks_.size(); ++i)
      if (!is_monitoring(*callbacks_[i])) callback_hook(i, "on_train_epoch_end", epoch_end);
    log_scope_ = LogScope::training_epoch_end;
    module.on_train_epoch_end();
    send_to_loggers(metrics_.end_epoch(LogScope::training_epoch_end), epoch_end_step);
    for (size_t i = 0; i < callbacks_.size(); ++i)
      if (is_monitoring(*callbacks_[i])) callback_hook(i, "on_train_epoch_end", epoch_end);
  }
  step_schedulers("epoch", /*plateau=*/true);
  progress_.epochs.completed();
  for (auto& logger : rank_zero_loggers()) logger->save();
}

// Note [Checkpoints inside a batch's end]
// After a training batch's end hooks come its step row for the loggers, the validation when one is
// due, and the signal check. ModelCheckpoint(every_n_train_steps) saves inside those hooks, so its
// checkpoint holds the state from before them; a checkpoint written during that validation (a
// callback's) holds the state from inside it. The checkpoint records where it was written
// (checkpointing.cpp), and the resumed run does what the uninterrupted one still did from there:
// - inside the batch's end hooks: the step row (MetricStore saves what is not yet sent), then the
//   validation if due, then the rest;
// - inside a validation whose results were not yet logged: that validation again, from its start;
// - later in the batch's end (at validation end, on a signal): what follows the validation;
// - between batches: only the checks that end the epoch.
// Lightning 2.6 restarts a validation interrupted midway too, but skips one that was due after a
// batch saved at on_train_batch_end (it fast-forwards the validation's progress), so its resumed run
// lacks that validation's row and monitors see a stale val_loss; Kiln runs it. The hooks after
// the checkpoint's own (module.on_train_batch_end after the callbacks') are not run again, in both.
// Returns whether the epoch stops after this batch.
bool Trainer::finish_batch(int64_t batch_idx, BatchTail from) {
  const bool last = batch_idx + 1 >= num_train_batches_;
  in_batch_tail_ = true;
  if (from == BatchTail::step_row) log_step_metrics();
  if ((from == BatchTail::step_row && should_validate_after_batch(batch_idx, last)) || from == BatchTail::validation) {
    validation_loop(num_val_batches_, false);
    last_validation_elapsed_ = elapsed_seconds();
  }
  if (from != BatchTail::stop_checks) {
    if (batch_stepped_) step_schedulers("step", /*plateau=*/true, batch_idx);  // after validation logged its metrics
    batch_stepped_ = false;  // stepped: a checkpoint written from here on must not step them again
    check_signals();
  }
  in_batch_tail_ = false;
  batch_stepped_ = false;
  if (config_.max_time) agreed_time_up_ = agree_any(max_time_reached());
  const bool time_up = plan_.strategy->world_size() > 1 ? agreed_time_up_ : max_time_reached();
  return last || (config_.max_steps >= 0 && global_step() >= config_.max_steps) || time_up ||
         (should_stop && fit_done());
}

bool Trainer::train_batch(const data::Batch& raw, int64_t batch_idx) {
  TrainModule& module = *module_;
  const data::Batch batch = transfer_batch(raw);
  current_batch_size_ = batch_size_of(batch.fields);
  log_scope_ = LogScope::training_step;
  each_callback("on_train_batch_start", [&](Callback& cb) { cb.on_train_batch_start(*this, module, batch, batch_idx); });
  if (!module.on_train_batch_start(batch, batch_idx)) return false;
  progress_.train_batches.started();

  // Under accumulation only the window's last backward combines gradients across processes.
  const bool last_in_window = progress_.micro_batches_in_window + 1 >= config_.accumulate_grad_batches ||
                              batch_idx + 1 >= num_train_batches_;
  plan_.strategy->set_gradient_sync(!module.automatic_optimization || last_in_window);
  StepOutput out;
  {
    const ProfileScope timed(profiler_.get(), actions_.training_step);
    out = plan_.strategy->training_step(module, batch, batch_idx);
  }
  if (module.automatic_optimization) {
    // A window of accumulate_grad_batches batches ends in one optimizer step, as in Lightning, even
    // when training_step returned no loss for some of them (those add no gradient).
    const bool has_loss = out.loss.defined();
    if (has_loss) {
      KILN_CHECK(out.loss.numel() == 1, "training_step must return a scalar loss, got shape ", out.loss.shape());
      KILN_CHECK(out.loss.requires_grad(), "training_step returned a loss that does not require grad (was it computed "
                 "under NoGradGuard, or detached?)");
    }
    if (progress_.micro_batches_in_window == 0) {
      for (auto& oc : optimizers_) {
        each_callback("on_before_zero_grad", [&](Callback& cb) { cb.on_before_zero_grad(*this, module, *oc.optimizer); });
        module.on_before_zero_grad(*oc.optimizer);
        oc.optimizer->zero_grad(true);
      }
    }
    const int64_t accumulate = config_.accumulate_grad_batches;
    if (has_loss) {
      const Tensor scaled = accumulate > 1 ? out.loss / static_cast<double>(accumulate) : out.loss;
      each_callback("on_before_backward", [&](Callback& cb) { cb.on_before_backward(*this, module, scaled); });
      module.on_before_backward(scaled);
      {
        const ProfileScope timed(profiler_.get(), actions_.backward);
        plan_.strategy->backward(scaled);
      }
      each_callback("on_after_backward", [&](Callback& cb) { cb.on_after_backward(*this, module); });
      module.on_after_backward();
      out.loss = scaled.detach();  // what the batch-end hooks see (Lightning's ClosureResult.loss)
    }
    ++progress_.micro_batches_in_window;
    const bool last = batch_idx + 1 >= num_train_batches_;
    if (progress_.micro_batches_in_window >= accumulate || last) optimizer_step(batch_idx);
  } else {
    // training_step stepped its optimizers itself (Note [Global step under manual optimization]).
    if (out.loss.defined()) out.loss = out.loss.detach();
    ++progress_.batches_that_stepped;
    batch_stepped_ = true;
  }
  progress_.train_batches.processed();
  if (batch_idx + 1 >= num_train_batches_) step_schedulers("epoch", /*plateau=*/false);  // Note [When schedulers step]
  each_callback("on_train_batch_end", [&](Callback& cb) { cb.on_train_batch_end(*this, module, out, batch, batch_idx); });
  module.on_train_batch_end(out, batch, batch_idx);
  progress_.train_batches.completed();
  return true;
}

// The module's optimizer_step decides whether (and how) the optimizer steps; the global step
// counts the window either way, as Lightning's does.
void Trainer::optimizer_step(int64_t batch_idx) {
  TrainModule& module = *module_;
  plan_.strategy->reduce_gradients(module);
  for (auto& oc : optimizers_) {
    TrainOptimizer optimizer(*this, oc.optimizer);
    in_optimizer_step_ = true;
    const ProfileScope timed(profiler_.get(), actions_.optimizer_step);
    module.optimizer_step(current_epoch(), batch_idx, optimizer);
    in_optimizer_step_ = false;
  }
  ++progress_.optimizer_steps;
  ++progress_.batches_that_stepped;
  batch_stepped_ = true;
  progress_.micro_batches_in_window = 0;
  step_schedulers("step", /*plateau=*/false, batch_idx);
}

void Trainer::step_optimizer(optim::Optimizer& optimizer) {
  KILN_CHECK(module_ && stage_ == TrainerStage::fitting, "optimizer.step(): only while trainer.fit() runs");
  if (module_->automatic_optimization) {
    KILN_CHECK(in_optimizer_step_, "optimizer.step(): the Trainer steps the optimizer itself under automatic "
               "optimization (through TrainModule::optimizer_step); set automatic_optimization = false to step it "
               "in training_step");
    plan_.strategy->before_optimizer_step(optimizer);  // Note [Mixed precision's step]
    each_callback("on_before_optimizer_step", [&](Callback& cb) { cb.on_before_optimizer_step(*this, *module_, optimizer); });
    module_->on_before_optimizer_step(optimizer);
    module_->configure_gradient_clipping(optimizer, config_.gradient_clip_val, config_.gradient_clip_algorithm);
    plan_.strategy->optimizer_step(optimizer);
    return;
  }
  plan_.strategy->reduce_gradients(*module_);
  plan_.strategy->before_optimizer_step(optimizer);
  each_callback("on_before_optimizer_step", [&](Callback& cb) { cb.on_before_optimizer_step(*this, *module_, optimizer); });
  module_->on_before_optimizer_step(optimizer);
  plan_.strategy->optimizer_step(optimizer);
  ++progress_.optimizer_steps;
}

// Note [When schedulers step]
// As in Lightning's training epoch loop: step-interval schedulers step after each optimizer step,
// and epoch-interval ones on the epoch's last batch, before its on_train_batch_end hooks (so before
// that batch's validation and any checkpoint it triggers); an epoch cut short (max_steps, a stop,
// on_train_batch_start returning false) does not step them. ReduceLROnPlateau reads a metric, so it
// steps later: after a batch's validation (step interval) or after the epoch-end hooks (epoch
// interval). A checkpoint therefore holds every scheduler as the loop left it, and a resumed run
// never steps one twice.
void Trainer::step_schedulers(const std::string& interval, bool plateau, int64_t batch_idx) {
  if (!module_->automatic_optimization) return;  // Lightning: manual optimization steps its own schedulers
  // Lightning counts a step-interval scheduler's frequency in batches of the epoch (batch_idx + 1 at
  // a batch that stepped), not in optimizer steps: with accumulation, or across an epoch's end,
  // the two differ.
  const int64_t count = interval == "step" ? batch_idx + 1 : current_epoch() + 1;
  for (auto& oc : optimizers_) {
    for (auto& sc : oc.schedulers) {
      KILN_CHECK(sc.interval == "step" || sc.interval == "epoch", "configure_optimizers: scheduler interval '",
                 sc.interval, "' is not one of: step, epoch");
      KILN_CHECK(sc.frequency >= 1, "configure_optimizers: scheduler frequency must be >= 1, got ", sc.frequency);
      KILN_CHECK(static_cast<bool>(sc.scheduler) != static_cast<bool>(sc.plateau), "configure_optimizers: give a "
                 "scheduler config either .scheduler or .plateau (ReduceLROnPlateau), exactly one");
      KILN_CHECK(!sc.plateau || !sc.monitor.empty(), "configure_optimizers: ReduceLROnPlateau needs .monitor = the "
                 "metric it steps on (e.g. \"val_loss\")");
      if (static_cast<bool>(sc.plateau) != plateau) continue;
      if (sc.interval != interval || count % sc.frequency != 0) continue;
      if (sc.scheduler) {
        module_->lr_scheduler_step(sc, std::nullopt);
        continue;
      }
      const auto& metrics = callback_metrics();
      auto it = metrics.find(sc.monitor);
      if (it == metrics.end()) {
        std::string available;
        for (const auto& [k, v] : metrics) available += (available.empty() ? "" : ", ") + k;
        KILN_CHECK(!sc.strict, "ReduceLROnPlateau: monitor '", sc.monitor, "' was not logged; available metrics: [",
                   available, "]. Log it, or set strict = false to skip the step");
        continue;
      }
      module_->lr_scheduler_step(sc, it->second);
    }
  }
}

bool Trainer::should_validate_after_batch(int64_t batch_idx, bool last_batch) const {
  if (!val_loader_ || num_val_batches_ == 0) return false;
  if (config_.check_val_every_n_epoch && (current_epoch() + 1) % *config_.check_val_every_n_epoch != 0) return false;
  // A stop requested by the module or a callback validates once more before the run ends (Lightning).
  if (should_stop && can_stop_early()) return true;
  // A time span validates when that much wall-clock time has passed since fit started or the last
  // validation ended (Lightning 2.x), whatever the batch: not at each epoch's end by itself.
  if (const Duration* every = std::get_if<Duration>(&config_.val_check_interval))
    return elapsed_seconds() - last_validation_elapsed_ >= every->seconds();
  const bool whole_epoch = std::holds_alternative<double>(config_.val_check_interval) &&
                           std::get<double>(config_.val_check_interval) == 1.0;
  if (whole_epoch) return last_batch;
  // Without check_val_every_n_epoch, an interval of N batches counts across epochs (Lightning).
  const int64_t iteration = config_.check_val_every_n_epoch ? batch_idx : progress_.train_batches.total.ready - 1;
  return (iteration + 1) % val_check_batches() == 0;
}

int64_t Trainer::val_check_batches() const {
  if (const int64_t* n = std::get_if<int64_t>(&config_.val_check_interval)) return *n;
  return std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(num_train_batches_) *
                                                   std::get<double>(config_.val_check_interval)));
}

}  // namespace kiln
