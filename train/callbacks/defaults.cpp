// default_callbacks (see defaults.h): Lightning's _CallbackConnector.on_trainer_init and
// _reorder_callbacks, for Kiln's built-in callbacks.
#include "train/callbacks/defaults.h"

#include <set>
#include <string>

#include "tensor/error.h"
#include "train/callbacks/model_checkpoint.h"
#include "train/callbacks/model_summary.h"
#include "train/callbacks/progress_bar_callback.h"

namespace kiln {

namespace {

template <class T>
int count_of(const std::vector<std::shared_ptr<Callback>>& callbacks) {
  int n = 0;
  for (const auto& cb : callbacks) n += dynamic_cast<const T*>(cb.get()) != nullptr;
  return n;
}

}  // namespace

std::vector<std::shared_ptr<Callback>> default_callbacks(const TrainerConfig& config,
                                                         const std::vector<std::shared_ptr<Callback>>& user_callbacks) {
  for (size_t i = 0; i < user_callbacks.size(); ++i)
    KILN_CHECK(user_callbacks[i] != nullptr, "Trainer: callbacks[", i, "] is null");
  std::vector<std::shared_ptr<Callback>> out = user_callbacks;

  const int checkpoints = count_of<callbacks::ModelCheckpoint>(out);
  KILN_CHECK(config.enable_checkpointing || checkpoints == 0,
             "Trainer was configured with enable_checkpointing=false but found ModelCheckpoint in the callbacks "
             "list: remove it, or set enable_checkpointing=true");
  if (config.enable_checkpointing && checkpoints == 0) out.push_back(std::make_shared<callbacks::ModelCheckpoint>());

  const int bars = count_of<callbacks::ProgressBar>(out);
  KILN_CHECK(bars <= 1, "Trainer: found ", bars, " ProgressBar callbacks, but only one progress bar is supported");
  KILN_CHECK(config.enable_progress_bar || bars == 0,
             "Trainer was configured with enable_progress_bar=false but found ProgressBar in the callbacks list: "
             "remove it, or set enable_progress_bar=true");
  if (config.enable_progress_bar && bars == 0) out.push_back(std::make_shared<callbacks::ProgressBar>());

  if (config.enable_model_summary && count_of<callbacks::ModelSummary>(out) == 0)
    out.push_back(std::make_shared<callbacks::ModelSummary>());

  // Checkpoints last, in their order: a checkpoint then holds the state other callbacks (early
  // stopping's counters) reached at the same hook.
  std::vector<std::shared_ptr<Callback>> ordered, last;
  for (auto& cb : out) (dynamic_cast<callbacks::ModelCheckpoint*>(cb.get()) ? last : ordered).push_back(cb);
  ordered.insert(ordered.end(), last.begin(), last.end());

  // Two callbacks whose states would land under one key in a checkpoint cannot both be restored.
  std::set<std::string> keys;
  for (const auto& cb : ordered) {
    if (cb->state_dict().empty()) continue;
    const std::string key = cb->state_key();
    KILN_CHECK(keys.insert(key).second, "Trainer: found more than one stateful callback with state_key '", key,
               "' (", cb->name(), "): their states would overwrite each other in a checkpoint. Give them "
               "distinct settings (for ModelCheckpoint: monitor, mode or trigger) so that state_key() differs");
  }
  return ordered;
}

}  // namespace kiln
