// The TrainModule hooks whose defaults do work (train_module.h): moving a batch to the device,
// clipping gradients and stepping a scheduler, as Lightning's defaults do. The rest of TrainModule's
// side (log, optimizers, manual_backward) lives with the Trainer it talks to (trainer.cpp).
#include "nn/optim/clip_grad.h"
#include "train/trainer.h"

namespace kiln {

data::Batch TrainModule::transfer_batch_to_device(data::Batch batch, Device device, int64_t) {
  for (Tensor& t : batch.fields)
    if (t.defined() && t.device() != device) t = t.to(device);
  return batch;
}

// Lightning's clip_gradients: no value means the Trainer's; a value that contradicts the Trainer's is an error.
void TrainModule::clip_gradients(optim::Optimizer& optimizer, std::optional<double> gradient_clip_val,
                                 const std::string& gradient_clip_algorithm) {
  const TrainerConfig& config = trainer().config();
  if (config.gradient_clip_val) {
    KILN_CHECK(!gradient_clip_val || *gradient_clip_val == *config.gradient_clip_val, "clip_gradients: the Trainer "
               "has gradient_clip_val = ", *config.gradient_clip_val, " and clip_gradients was given ",
               gradient_clip_val.value_or(0), "; use only one of them");
    KILN_CHECK(gradient_clip_algorithm == config.gradient_clip_algorithm, "clip_gradients: the Trainer has "
               "gradient_clip_algorithm = '", config.gradient_clip_algorithm, "' and clip_gradients was given '",
               gradient_clip_algorithm, "'; use only one of them");
  }
  KILN_CHECK(gradient_clip_algorithm == "norm" || gradient_clip_algorithm == "value", "clip_gradients: algorithm '",
             gradient_clip_algorithm, "' is not one of: norm, value");
  const double value = gradient_clip_val.value_or(config.gradient_clip_val.value_or(0));
  KILN_CHECK(value >= 0, "clip_gradients: gradient_clip_val must be >= 0, got ", value);
  if (value == 0) return;
  std::vector<Tensor> params;
  for (const auto& group : optimizer.param_groups()) params.insert(params.end(), group.params.begin(), group.params.end());
  if (gradient_clip_algorithm == "norm") trainer().strategy().clip_grad_norm(params, value);
  else optim::clip_grad_value_(params, value);
}

void TrainModule::lr_scheduler_step(SchedulerConfig& scheduler, std::optional<double> metric) {
  if (scheduler.plateau) {
    KILN_CHECK(metric, "lr_scheduler_step: a ReduceLROnPlateau steps on a metric, and none was given");
    scheduler.plateau->step(*metric);
  } else {
    scheduler.scheduler->step();
  }
}

}  // namespace kiln
