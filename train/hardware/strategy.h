// Strategy: where the model lives and how a step's pieces run (Lightning's Strategy). It owns the
// run's Accelerator, Precision and CheckpointIO and is the only thing the loops call for: moving
// the module and batches, the module's *_step calls (inside the precision's forward context),
// backward, the optimizer step, reductions across processes, and checkpoint files. SingleDevice
// is this class; DDP, ZeRO and FSDP override the collective parts (the distributed layer).
#pragma once

#include <memory>
#include <string>

#include "train/hardware/accelerator.h"
#include "train/hardware/checkpoint_io.h"
#include "train/hardware/precision.h"
#include "train/step_output.h"

namespace kiln {

class TrainModule;

class Strategy {
 public:
  // `device` must belong to `accelerator` (checked).
  Strategy(std::shared_ptr<Accelerator> accelerator, Device device, std::shared_ptr<Precision> precision,
           std::shared_ptr<CheckpointIO> checkpoint_io);
  virtual ~Strategy() = default;
  virtual std::string name() const { return "single_device"; }

  Accelerator& accelerator() const { return *accelerator_; }
  Precision& precision() const { return *precision_; }
  CheckpointIO& checkpoint_io() const { return *checkpoint_io_; }
  Device root_device() const { return device_; }

  // Before anything else of a fit/validate/test/predict: the processes of the run, started or
  // joined, and connected (DDP); nothing for one process.
  virtual void setup_environment() {}
  // The module onto the root device in the precision's dtype (once per fit/validate/test/predict).
  virtual void setup_module(nn::Module& module);
  virtual void teardown();

  // The module's steps, each inside the precision's forward context (autocast for the mixed ones).
  virtual StepOutput training_step(TrainModule& module, const data::Batch& batch, int64_t batch_idx);
  StepOutput validation_step(TrainModule& module, const data::Batch& batch, int64_t batch_idx);
  StepOutput test_step(TrainModule& module, const data::Batch& batch, int64_t batch_idx);
  Tensor predict_step(TrainModule& module, const data::Batch& batch, int64_t batch_idx);

  void backward(const Tensor& loss) { precision_->backward(loss); }
  // Gradients combined across processes (DDP all-reduces here), then the precision's unscaling:
  // what the optimizer-step hooks and gradient clipping see.
  virtual void before_optimizer_step(optim::Optimizer& optimizer) { precision_->before_optimizer_step(optimizer); }
  // False when the precision skipped the step (inf/NaN gradients under a loss scaler).
  virtual bool optimizer_step(optim::Optimizer& optimizer) { return precision_->optimizer_step(optimizer); }
  // Gradient clipping by the global norm (ZeRO: over gradients spread across processes).
  virtual void clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
  // The optimizer's state as a checkpoint holds it (whole, in torch's layout), and its restore.
  virtual State optimizer_state(const optim::Optimizer& optimizer);
  virtual void load_optimizer_state(optim::Optimizer& optimizer, const State& state);
  virtual void reduce_gradients(nn::Module&) {}  // DDP waits for its all-reduces here
  // Whether the next backward combines gradients across processes: false inside an accumulation
  // window (torch's no_sync), true for the window's last batch.
  virtual void set_gradient_sync(bool /*sync*/) {}

  // ---- processes (one here)
  virtual int world_size() const { return 1; }
  virtual int global_rank() const { return 0; }
  virtual int local_rank() const { return 0; }
  bool is_global_zero() const { return global_rank() == 0; }
  virtual void barrier(const std::string& /*name*/ = "") {}
  bool is_local_zero() const { return local_rank() == 0; }
  // The value of `t` reduced over processes ("mean", "sum", "max" or "min"); itself with one process.
  virtual Tensor reduce(const Tensor& t, const std::string& op = "mean");
  virtual Tensor broadcast(const Tensor& t, int /*src*/ = 0) { return t; }
  // One decision for all processes: true when every process (all) or any process (!all) decided
  // true. Lightning's reduce_boolean_decision, for stops and "save a checkpoint now".
  virtual bool reduce_boolean_decision(bool decision, bool /*all*/ = true) { return decision; }
  virtual std::string broadcast_string(const std::string& s, int /*src*/ = 0) { return s; }

  // ---- checkpoint files (written by global rank 0 only)
  virtual void save_checkpoint(const State& checkpoint, const std::string& path);
  virtual State load_checkpoint(const std::string& path) { return checkpoint_io_->load_checkpoint(path); }
  virtual void remove_checkpoint(const std::string& path);

 private:
  std::shared_ptr<Accelerator> accelerator_;
  Device device_;
  std::shared_ptr<Precision> precision_;
  std::shared_ptr<CheckpointIO> checkpoint_io_;
};

// The strategy names Trainer(strategy = ...) takes today ("auto" resolves to one of them).
std::vector<std::string> strategy_names();

}  // namespace kiln
