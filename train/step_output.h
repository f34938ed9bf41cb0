// StepOutput: what a TrainModule's training_step returns and what the batch-end hooks of the
// module and the callbacks receive (Lightning's STEP_OUTPUT: the loss, plus any named outputs).
#pragma once

#include <utility>

#include "tensor/state_dict.h"

namespace kiln {

// The loss (a scalar that requires grad), or nothing to skip the batch (automatic optimization
// then takes no step), plus optional outputs for the batch-end hooks.
struct StepOutput {
  Tensor loss;
  TensorDict outputs;
  StepOutput() = default;
  StepOutput(Tensor loss_) : loss(std::move(loss_)) {}  // NOLINT: a loss converts implicitly, as in Lightning
};

}  // namespace kiln
