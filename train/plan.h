// The concrete choices behind a TrainerConfig (STYLE L14): the Strategy a run uses (with its
// accelerator, precision and checkpoint writer, train/hardware/) and the loop limits, resolved once
// by resolve_plan(), which also rejects invalid settings by listing the valid ones.
#pragma once

#include <memory>
#include <string>

#include "train/config.h"
#include "train/hardware/strategy.h"

namespace kiln {

struct Plan {
  std::shared_ptr<Strategy> strategy;  // with the run's accelerator, precision and checkpoint_io
  int64_t max_epochs = 1000;
};

Plan resolve_plan(const TrainerConfig& config);

}  // namespace kiln
