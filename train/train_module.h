// TrainModule and DataModule: the user's side of the Trainer (Lightning's LightningModule and
// LightningDataModule). A TrainModule is an nn::Module that says how to train itself:
// training_step returns the loss, configure_optimizers says with what, log() records metrics.
// Its hooks are called in Lightning's order (trainer.h lists it).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "io/data/dataloader.h"
#include "nn/module.h"
#include "nn/optim/lr_scheduler.h"
#include "nn/optim/optimizer.h"
#include "train/metrics.h"
#include "train/step_output.h"

namespace kiln {

class Trainer;

// One scheduler: a plain LRScheduler, or a ReduceLROnPlateau, which steps on the `monitor` metric.
struct SchedulerConfig {
  std::shared_ptr<optim::LRScheduler> scheduler;
  std::shared_ptr<optim::ReduceLROnPlateau> plateau;
  std::string interval = "epoch";  // "epoch" | "step"
  int64_t frequency = 1;
  std::string monitor;             // required with plateau
  bool strict = true;              // a missing monitor metric is an error (else a skipped step)

  State state_dict() const { return plateau ? plateau->state_dict() : scheduler->state_dict(); }
  void load_state_dict(const State& s) { plateau ? plateau->load_state_dict(s) : scheduler->load_state_dict(s); }
};

struct OptimizerConfig {
  std::shared_ptr<optim::Optimizer> optimizer;
  std::vector<SchedulerConfig> schedulers;
};

// An optimizer as a TrainModule steps it (Lightning's LightningOptimizer). step() runs the
// on_before_optimizer_step hooks and the precision's step. Under manual optimization it counts one
// global step (Note [Global step under manual optimization], fit_loop.cpp); under automatic
// optimization it is what the default TrainModule::optimizer_step calls, and it also runs
// configure_gradient_clipping, between those hooks and the step, as Lightning does.
class TrainOptimizer {
 public:
  TrainOptimizer(Trainer& trainer, std::shared_ptr<optim::Optimizer> optimizer)
      : trainer_(&trainer), optimizer_(std::move(optimizer)) {}
  void step();
  void zero_grad(bool set_to_none = true) { optimizer_->zero_grad(set_to_none); }
  std::vector<optim::ParamGroup>& param_groups() { return optimizer_->param_groups(); }
  optim::Optimizer& optimizer() const { return *optimizer_; }

 private:
  Trainer* trainer_;
  std::shared_ptr<optim::Optimizer> optimizer_;
};

// How TrainModule::load_from_checkpoint builds and loads a module (Lightning's arguments).
struct CheckpointLoadOptions {
  bool strict = true;                  // missing or unexpected keys are errors; false: warnings naming them
  std::optional<Device> map_location;  // where the loaded module goes; unset: where the factory built it
  Json hparams = Json::object();       // replace saved hyperparameters by name (Lightning's **kwargs)
};

class TrainModule : public nn::Module {
 public:
  explicit TrainModule(std::string type_name = "TrainModule") : nn::Module(std::move(type_name)) {}

  // ---- the steps
  virtual StepOutput training_step(const data::Batch& batch, int64_t batch_idx) = 0;
  // Not overriding validation_step turns validation off in fit, and makes validate() and test()
  // without their step an error: see Note [Steps a module does not define] (trainer.cpp). What a
  // step returns (a loss, named outputs, or nothing: `return {};`) reaches the batch-end hooks.
  virtual StepOutput validation_step(const data::Batch& batch, int64_t batch_idx) {
    validation_step_missing_ = true;
    return {};
  }
  virtual StepOutput test_step(const data::Batch& batch, int64_t batch_idx) {
    test_step_missing_ = true;
    return {};
  }
  virtual Tensor predict_step(const data::Batch& batch, int64_t batch_idx) { return forward(batch[0]); }
  Tensor forward(const Tensor& x) override {
    forward_missing_ = true;
    return nn::Module::forward(x);
  }
  virtual std::vector<OptimizerConfig> configure_optimizers() = 0;

  // ---- hooks (Lightning's names; the Trainer calls them after the callbacks' hooks of the same name,
  // except the setup/start hooks, which run after them too, as Lightning does for its module hooks)
  virtual void setup(const std::string& stage) {}
  virtual void teardown(const std::string& stage) {}
  virtual void on_fit_start() {}
  virtual void on_fit_end() {}
  virtual void on_train_start() {}
  virtual void on_train_end() {}
  virtual void on_train_epoch_start() {}
  virtual void on_train_epoch_end() {}
  // Returning false skips the rest of the epoch (Lightning's `return -1`).
  virtual bool on_train_batch_start(const data::Batch& batch, int64_t batch_idx) { return true; }
  virtual void on_train_batch_end(const StepOutput& out, const data::Batch& batch, int64_t batch_idx) {}
  virtual void on_before_zero_grad(optim::Optimizer& optimizer) {}
  virtual void on_before_backward(const Tensor& loss) {}
  virtual void on_after_backward() {}
  virtual void on_before_optimizer_step(optim::Optimizer& optimizer) {}
  virtual void on_validation_start() {}
  virtual void on_validation_end() {}
  virtual void on_validation_epoch_start() {}
  virtual void on_validation_epoch_end() {}
  virtual void on_validation_batch_start(const data::Batch& batch, int64_t batch_idx) {}
  virtual void on_validation_batch_end(const StepOutput& out, const data::Batch& batch, int64_t batch_idx) {}
  virtual void on_test_start() {}
  virtual void on_test_end() {}
  virtual void on_test_epoch_start() {}
  virtual void on_test_epoch_end() {}
  virtual void on_test_batch_start(const data::Batch& batch, int64_t batch_idx) {}
  virtual void on_test_batch_end(const StepOutput& out, const data::Batch& batch, int64_t batch_idx) {}
  virtual void on_predict_start() {}
  virtual void on_predict_end() {}
  virtual void on_predict_batch_start(const data::Batch& batch, int64_t batch_idx) {}
  virtual void on_predict_batch_end(const Tensor& prediction, const data::Batch& batch, int64_t batch_idx) {}
  virtual void on_save_checkpoint(State& checkpoint) {}
  virtual void on_load_checkpoint(const State& checkpoint) {}

  // ---- batch transfer: every train, validation, test and predict batch goes through these three,
  // in this order, after the precision's dtype conversion and before the batch-start hooks
  // (Lightning's order). dataloader_idx is 0: Kiln's loops read one loader per stage.
  virtual data::Batch on_before_batch_transfer(data::Batch batch, int64_t dataloader_idx) { return batch; }
  // The default moves every defined field to `device` (the strategy's root device).
  virtual data::Batch transfer_batch_to_device(data::Batch batch, Device device, int64_t dataloader_idx);
  virtual data::Batch on_after_batch_transfer(data::Batch batch, int64_t dataloader_idx) { return batch; }

  // ---- automatic optimization, overridable as in Lightning
  // Called once per accumulation window, after the window's backward passes. The default steps the
  // optimizer; an override that skips optimizer.step() skips the update (and the hooks and clipping
  // it runs), but the global step still counts, as in Lightning. Unlike Lightning there is no
  // closure: training_step and backward have already run when this is called.
  virtual void optimizer_step(int64_t epoch, int64_t batch_idx, TrainOptimizer& optimizer) { optimizer.step(); }
  // Called by optimizer.step() after on_before_optimizer_step, with the Trainer's settings (no
  // value: the Trainer does not clip). The default clips with clip_gradients().
  virtual void configure_gradient_clipping(optim::Optimizer& optimizer, std::optional<double> gradient_clip_val,
                                           const std::string& gradient_clip_algorithm) {
    clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm);
  }
  // Clips the optimizer's parameters' gradients by total norm ("norm") or by value ("value"); no
  // value or 0 clips nothing. A value or algorithm that contradicts the Trainer's is an error.
  void clip_gradients(optim::Optimizer& optimizer, std::optional<double> gradient_clip_val,
                      const std::string& gradient_clip_algorithm = "norm");
  // Steps one scheduler when its interval and frequency say so; `metric` is the monitored value of
  // a ReduceLROnPlateau (none for other schedulers). The default calls step()/step(metric).
  virtual void lr_scheduler_step(SchedulerConfig& scheduler, std::optional<double> metric);

  // ---- logging (valid while a Trainer runs this module)
  void log(const std::string& name, double value, const LogOptions& options = {});
  void log(const std::string& name, const Tensor& value, const LogOptions& options = {});
  void log_dict(const std::map<std::string, double>& values, const LogOptions& options = {});
  // Stored in checkpoints and sent to the loggers at the start of fit.
  void save_hyperparameters(Json hparams) { hparams_ = std::move(hparams); }
  const Json& hparams() const { return hparams_; }

  // ---- manual optimization (automatic_optimization = false): training_step calls zero_grad,
  // manual_backward and step itself; the Trainer neither clips, accumulates nor steps schedulers.
  bool automatic_optimization = true;
  std::vector<TrainOptimizer> optimizers() const;
  std::vector<std::shared_ptr<optim::LRScheduler>> lr_schedulers() const;
  void manual_backward(const Tensor& loss);

  Trainer& trainer() const;
  bool attached() const { return trainer_ != nullptr; }

  // ---- a module from a Trainer checkpoint (Lightning's Model.load_from_checkpoint(path, ...)):
  // the saved hyperparameters (save_hyperparameters), with options.hparams replacing them by name,
  // build the module; its on_load_checkpoint runs, then the weights load (no prefix to strip:
  // "state_dict." is the checkpoint's, as in Lightning), then it moves to options.map_location.
  // Shape mismatches are errors even when not strict. The module comes back in training mode.
  //   auto model = TrainModule::load_from_checkpoint<Classifier>(path);   // Classifier(const Json& hparams)
  //   auto model = TrainModule::load_from_checkpoint(path, [](const Json& h) {
  //     return std::make_shared<Classifier>(h.at("hidden").get<int64_t>()); }, {.strict = false});
  template <class M>
  static std::shared_ptr<M> load_from_checkpoint(const std::string& path, const CheckpointLoadOptions& options = {}) {
    static_assert(std::is_base_of_v<TrainModule, M>, "load_from_checkpoint<M>: M must derive from TrainModule");
    static_assert(std::is_constructible_v<M, const Json&>, "load_from_checkpoint<M>(path): M needs a constructor "
                  "M(const Json& hparams); or pass a factory: load_from_checkpoint(path, [](const Json& h) { ... })");
    return load_from_checkpoint(path, [](const Json& h) { return std::make_shared<M>(h); }, options);
  }
  // `make(hparams)` returns a (smart) pointer to the new module.
  template <class Factory>
  static auto load_from_checkpoint(const std::string& path, Factory&& make, const CheckpointLoadOptions& options = {}) {
    const State checkpoint = read_checkpoint_for_module(path);
    auto module = make(checkpoint_hparams(checkpoint, options, path));
    KILN_CHECK(module != nullptr, "load_from_checkpoint(", path, "): the factory returned no module");
    load_checkpoint_into(*module, checkpoint, options, path);
    return module;
  }

 private:
  // load_from_checkpoint's steps (checkpointing.cpp).
  static State read_checkpoint_for_module(const std::string& path);
  static Json checkpoint_hparams(const State& checkpoint, const CheckpointLoadOptions& options,
                                 const std::string& path);
  static void load_checkpoint_into(TrainModule& module, const State& checkpoint, const CheckpointLoadOptions& options,
                                   const std::string& path);

  friend class Trainer;
  Trainer* trainer_ = nullptr;
  Json hparams_ = Json::object();
  bool validation_step_missing_ = false;  // set by the default validation_step when it runs
  bool test_step_missing_ = false;        // and the default test_step
  bool forward_missing_ = false;          // and the default forward (which then throws)
};

// Where the data comes from (Lightning's LightningDataModule). Loaders are created on demand, once
// per stage; state_dict saves whatever the module needs to resume (loader positions are saved by
// the Trainer itself).
class DataModule {
 public:
  virtual ~DataModule() = default;
  virtual void prepare_data() {}
  virtual void setup(const std::string& stage) {}
  virtual void teardown(const std::string& stage) {}
  virtual std::shared_ptr<data::DataLoader> train_dataloader() { return nullptr; }
  virtual std::shared_ptr<data::DataLoader> val_dataloader() { return nullptr; }
  virtual std::shared_ptr<data::DataLoader> test_dataloader() { return nullptr; }
  virtual std::shared_ptr<data::DataLoader> predict_dataloader() { return nullptr; }
  virtual Json state_dict() const { return Json::object(); }
  virtual void load_state_dict(const Json&) {}
};

}  // namespace kiln
