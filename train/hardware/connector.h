// The accelerator connector (Lightning's _AcceleratorConnector): turns the plain settings
// (accelerator, devices, strategy, precision, plugins; names, "auto", or objects) into the one
// Strategy a run uses, refusing impossible combinations before any work starts.
#pragma once

#include <memory>

#include "train/config.h"
#include "train/hardware/strategy.h"

namespace kiln {

std::shared_ptr<Strategy> resolve_strategy(const TrainerConfig& config);

// The precision object for a name (after canonical_precision_name), for a run on `accelerator`.
std::shared_ptr<Precision> make_precision(const std::string& name, const Accelerator& accelerator);

}  // namespace kiln
