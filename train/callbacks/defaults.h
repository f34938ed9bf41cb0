// The Trainer's callback list: the user's callbacks plus the built-in ones its settings ask for,
// as Lightning's callback connector builds it (enable_checkpointing → a ModelCheckpoint,
// enable_progress_bar → a ProgressBar, enable_model_summary → a ModelSummary, unless the user gave
// one), with ModelCheckpoints moved last so that they see what the other callbacks did at a hook.
#pragma once

#include <memory>
#include <vector>

#include "train/callback.h"
#include "train/config.h"

namespace kiln {

// Also refuses, with a kiln::Error, what Lightning refuses: a ModelCheckpoint with
// enable_checkpointing = false, a ProgressBar with enable_progress_bar = false, more than one
// ProgressBar, null entries, and two stateful callbacks with the same state_key().
std::vector<std::shared_ptr<Callback>> default_callbacks(const TrainerConfig& config,
                                                         const std::vector<std::shared_ptr<Callback>>& user_callbacks);

}  // namespace kiln
