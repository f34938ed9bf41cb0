// The Trainer's settings: one aggregate with Lightning's names and defaults, written with
// designated initializers (`Trainer({.max_epochs = 5, .precision = "32-true"})`). resolve_plan()
// (plan.cpp) checks it once and turns "auto" and fractions into concrete choices.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace kiln {

class Callback;
class Logger;

// A count of batches, or a fraction of the loader's length (Lightning's int | float).
using BatchLimit = std::variant<int64_t, double>;

struct TrainerConfig {
  // ---- how long
  std::optional<int64_t> max_epochs;       // unset: 1000 unless max_steps is set (Lightning)
  std::optional<int64_t> min_epochs;
  int64_t max_steps = -1;                  // global steps (optimizer steps, also under manual optimization); -1: no limit
  std::optional<int64_t> min_steps;
  std::optional<double> max_time_seconds;  // Lightning's max_time, in seconds
  // ---- hardware and numerics
  std::string accelerator = "auto";        // "auto" | "cpu" | "cuda"
  int devices = 1;
  std::string strategy = "auto";           // "auto" | "single_device" (ddp, fsdp come later)
  std::string precision = "32-true";       // "32-true" | "64-true" (mixed precision comes with CUDA)
  // ---- optimization
  int64_t accumulate_grad_batches = 1;
  std::optional<double> gradient_clip_val;
  std::string gradient_clip_algorithm = "norm";  // "norm" | "value"
  // ---- validation
  BatchLimit val_check_interval = 1.0;     // fraction of an epoch, or every N training batches
  std::optional<int64_t> check_val_every_n_epoch = 1;  // unset: validate only by val_check_interval batches
  int64_t num_sanity_val_steps = 2;        // -1: the whole validation set
  // ---- limits for debugging and quick runs
  BatchLimit limit_train_batches = 1.0;
  BatchLimit limit_val_batches = 1.0;
  BatchLimit limit_test_batches = 1.0;
  BatchLimit limit_predict_batches = 1.0;
  BatchLimit overfit_batches = 0.0;        // > 0: replaces limit_train/val_batches; the same train batches every epoch
  int64_t fast_dev_run = 0;                // N > 0: N batches of train/val/test, no checkpoints or logs
  // ---- outputs
  int64_t log_every_n_steps = 50;
  bool enable_checkpointing = true;        // adds a ModelCheckpoint unless one is given
  bool async_checkpointing = false;        // Lightning's AsyncCheckpointIO plugin: fit's checkpoints are written
                                           // on a background thread (Note [Async checkpoints], checkpointing.cpp)
  bool enable_progress_bar = true;
  bool enable_model_summary = true;
  std::optional<bool> logger;              // false: no logger; unset/true: loggers, or a CSVLogger by default
  std::vector<std::shared_ptr<Logger>> loggers;
  std::vector<std::shared_ptr<Callback>> callbacks;
  std::string default_root_dir = ".";
  // ---- reproducibility and debugging
  bool deterministic = false;              // bitwise-identical runs: the thread count must not change (Note [Deterministic runs])
  bool detect_anomaly = false;
  bool handle_signals = true;              // SIGTERM/SIGUSR1: checkpoint and exit; SIGINT: stop gracefully
};

}  // namespace kiln
