// The single-device strategy: everything on one device of one process.
#include "train/hardware/strategy.h"

#include "nn/optim/clip_grad.h"
#include "nn/optim/optimizer.h"
#include "tensor/error.h"
#include "train/train_module.h"

namespace kiln {
namespace {

// step() inside the precision's forward context (autocast for the mixed precisions).
template <class Step>
auto in_forward_context(const Precision& precision, Step&& step) {
  const auto context = precision.forward_context();
  return step();
}

}  // namespace

Strategy::Strategy(std::shared_ptr<Accelerator> accelerator, Device device, std::shared_ptr<Precision> precision,
                   std::shared_ptr<CheckpointIO> checkpoint_io)
    : accelerator_(std::move(accelerator)), device_(device), precision_(std::move(precision)),
      checkpoint_io_(std::move(checkpoint_io)) {
  KILN_CHECK(accelerator_ && precision_ && checkpoint_io_, "Strategy: the accelerator, precision and checkpoint_io "
             "must all be given");
  KILN_CHECK(device_.type == accelerator_->device_type(), "Strategy: device ", device_, " does not belong to the ",
             accelerator_->name(), " accelerator");
}

void Strategy::setup_module(nn::Module& module) {
  accelerator_->setup_device(device_);
  module.to(device_);
  precision_->convert_module(module);
}

void Strategy::teardown() {
  checkpoint_io_->wait();
  accelerator_->teardown();
}

StepOutput Strategy::training_step(TrainModule& module, const data::Batch& batch, int64_t batch_idx) {
  return in_forward_context(*precision_, [&] { return module.training_step(batch, batch_idx); });
}

StepOutput Strategy::validation_step(TrainModule& module, const data::Batch& batch, int64_t batch_idx) {
  return in_forward_context(*precision_, [&] { return module.validation_step(batch, batch_idx); });
}

StepOutput Strategy::test_step(TrainModule& module, const data::Batch& batch, int64_t batch_idx) {
  return in_forward_context(*precision_, [&] { return module.test_step(batch, batch_idx); });
}

Tensor Strategy::predict_step(TrainModule& module, const data::Batch& batch, int64_t batch_idx) {
  return in_forward_context(*precision_, [&] { return module.predict_step(batch, batch_idx); });
}

void Strategy::clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  optim::clip_grad_norm_(params, max_norm);
}

State Strategy::optimizer_state(const optim::Optimizer& optimizer) { return optimizer.state_dict(); }

void Strategy::load_optimizer_state(optim::Optimizer& optimizer, const State& state) {
  optimizer.load_state_dict(state);
}

Tensor Strategy::reduce(const Tensor& t, const std::string& op) {
  KILN_CHECK(op == "mean" || op == "sum" || op == "max" || op == "min", "Strategy::reduce: op '", op,
             "' is not one of: mean, sum, max, min");
  return t;
}

void Strategy::save_checkpoint(const State& checkpoint, const std::string& path) {
  if (is_global_zero()) checkpoint_io_->save_checkpoint(checkpoint, path);
}

void Strategy::remove_checkpoint(const std::string& path) {
  if (is_global_zero()) checkpoint_io_->remove_checkpoint(path);
}

std::vector<std::string> strategy_names() { return {"single_device", "ddp", "zero1", "zero2"}; }

}  // namespace kiln
