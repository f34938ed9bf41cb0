// Validation and test loops: the module in eval mode, no gradients, per-batch hooks, then the
// epoch-level metrics. Validation inside fit also runs as the sanity check before training.
#include "autograd/grad_mode.h"
#include "train/trainer.h"

namespace kiln {

void Trainer::validation_loop(int64_t max_batches, bool sanity) {
  TrainModule& module = *module_;
  const TrainerStage outer = stage_;
  // Lightning resets every logged value before and after the sanity check: its metrics are seen by
  // on_sanity_check_end only, never by the progress bar, callback_metrics or monitors of training.
  if (sanity) {
    stage_ = TrainerStage::sanity_checking;
    reset_metrics();
    each_callback("on_sanity_check_start", [&](Callback& cb) { cb.on_sanity_check_start(*this, module); });
  }
  validation_unlogged_ = !sanity;  // Note [Checkpoints inside a batch's end] (fit_loop.cpp)
  evaluation_loop(*val_loader_, max_batches, TrainerStage::validating);
  if (sanity) {
    each_callback("on_sanity_check_end", [&](Callback& cb) { cb.on_sanity_check_end(*this, module); });
    reset_metrics();
  }
  stage_ = outer;
  module.train();
}

std::map<std::string, double> Trainer::evaluation_loop(data::DataLoader& loader, int64_t max_batches, TrainerStage stage) {
  TrainModule& module = *module_;
  const bool testing = stage == TrainerStage::testing;
  const LogScope outer_scope = log_scope_;
  log_scope_ = testing ? LogScope::test : LogScope::validation;
  metrics_.clear_scope(log_scope_);
  const bool was_training = module.is_training();
  module.eval();
  NoGradGuard no_grad;
  InferenceModeGuard inference(config_.inference_mode);

  if (testing) {
    each_callback("on_test_start", [&](Callback& cb) { cb.on_test_start(*this, module); });
    module.on_test_start();
    each_callback("on_test_epoch_start", [&](Callback& cb) { cb.on_test_epoch_start(*this, module); });
    module.on_test_epoch_start();
  } else {
    each_callback("on_validation_start", [&](Callback& cb) { cb.on_validation_start(*this, module); });
    module.on_validation_start();
    each_callback("on_validation_epoch_start", [&](Callback& cb) { cb.on_validation_epoch_start(*this, module); });
    module.on_validation_epoch_start();
  }
  // Evaluation always reads its loader from the start, in order (a validation loader is not shuffled).
  loader.set_epoch(0);
  int64_t idx = 0;
  if (max_batches > 0) {
    for (data::Batch& raw : loader) {
      const data::Batch batch = transfer_batch(raw);
      current_batch_size_ = batch_size_of(batch.fields);
      if (testing) {
        each_callback("on_test_batch_start", [&](Callback& cb) { cb.on_test_batch_start(*this, module, batch, idx); });
        module.on_test_batch_start(batch, idx);
        StepOutput out;
        {
          const ProfileScope timed(profiler_.get(), actions_.test_step);
          out = plan_.strategy->test_step(module, batch, idx);
        }
        require_evaluation_step(module);
        each_callback("on_test_batch_end", [&](Callback& cb) { cb.on_test_batch_end(*this, module, out, batch, idx); });
        module.on_test_batch_end(out, batch, idx);
      } else {
        each_callback("on_validation_batch_start", [&](Callback& cb) { cb.on_validation_batch_start(*this, module, batch, idx); });
        module.on_validation_batch_start(batch, idx);
        StepOutput out;
        {
          const ProfileScope timed(profiler_.get(), actions_.validation_step);
          out = plan_.strategy->validation_step(module, batch, idx);
        }
        require_evaluation_step(module);
        each_callback("on_validation_batch_end", [&](Callback& cb) { cb.on_validation_batch_end(*this, module, out, batch, idx); });
        module.on_validation_batch_end(out, batch, idx);
        if (module.validation_step_missing_ && stage_ != TrainerStage::validating) {
          skip_validation_without_step();  // Note [Steps a module does not define] (trainer.cpp)
          break;
        }
      }
      if (++idx >= max_batches) break;
    }
  }
  if (testing) {
    each_callback("on_test_epoch_end", [&](Callback& cb) { cb.on_test_epoch_end(*this, module); });
    module.on_test_epoch_end();
  } else {
    each_callback("on_validation_epoch_end", [&](Callback& cb) { cb.on_validation_epoch_end(*this, module); });
    module.on_validation_epoch_end();
  }
  std::map<std::string, double> epoch_metrics = metrics_.end_epoch(log_scope_);
  send_to_loggers(epoch_metrics, logging_step());
  validation_unlogged_ = false;
  if (testing) {
    each_callback("on_test_end", [&](Callback& cb) { cb.on_test_end(*this, module); });
    module.on_test_end();
  } else {
    each_callback("on_validation_end", [&](Callback& cb) { cb.on_validation_end(*this, module); });
    module.on_validation_end();
  }
  if (was_training) module.train();
  log_scope_ = outer_scope;
  return epoch_metrics;
}

}  // namespace kiln
