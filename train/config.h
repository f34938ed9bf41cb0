// The Trainer's settings: one aggregate with Lightning's names and defaults, written with
// designated initializers (`Trainer({.max_epochs = 5, .precision = "32-true"})`). resolve_plan()
// (plan.cpp) checks it once and turns "auto" and fractions into concrete choices.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace kiln {

class Accelerator;
class Callback;
class CheckpointIO;
class Logger;
class Precision;
class Profiler;
class Strategy;

// Lightning's plugins: a precision (instead of the precision string) or a checkpoint writer
// (instead of the native one; see train/hardware/).
using Plugin = std::variant<std::shared_ptr<Precision>, std::shared_ptr<CheckpointIO>>;

// A count of batches, or a fraction of the loader's length (Lightning's int | float).
using BatchLimit = std::variant<int64_t, double>;

// A span of wall-clock time, in the forms Lightning takes for max_time and a time-based
// val_check_interval: "DD:HH:MM:SS" (each part an integer), a std::chrono duration, or
// datetime.timedelta's keywords ({{"hours", 2}, {"minutes", 30}}). A bad form is an error here.
class Duration {
 public:
  Duration(const char* dd_hh_mm_ss) : Duration(std::string(dd_hh_mm_ss)) {}  // NOLINT: implicit, as in Lightning
  Duration(const std::string& dd_hh_mm_ss);                                   // NOLINT
  Duration(const std::map<std::string, double>& timedelta_keywords);          // NOLINT
  template <class Rep, class Period>
  Duration(std::chrono::duration<Rep, Period> d) : seconds_(std::chrono::duration<double>(d).count()) {}  // NOLINT
  double seconds() const { return seconds_; }

 private:
  double seconds_ = 0;
};

// Every N training batches, a fraction of the epoch, or every span of wall-clock time (Lightning 2.x).
using ValCheckInterval = std::variant<int64_t, double, Duration>;

// Lightning's deterministic: false, true (refuse what would change the results' bits), or "warn"
// (report it and go on). See Note [Deterministic runs] in trainer.cpp.
class Deterministic {
 public:
  Deterministic(bool on = false) : on_(on) {}  // NOLINT: implicit, as in Lightning
  Deterministic(const char* mode);             // NOLINT: "warn"
  explicit operator bool() const { return on_; }
  bool warn_only() const { return warn_only_; }

 private:
  bool on_ = false;
  bool warn_only_ = false;
};

struct TrainerConfig {
  // ---- how long
  std::optional<int64_t> max_epochs;       // unset: 1000 unless max_steps is set (Lightning)
  std::optional<int64_t> min_epochs;
  int64_t max_steps = -1;                  // global steps (optimizer steps, also under manual optimization); -1: no limit
  std::optional<int64_t> min_steps;
  std::optional<Duration> max_time;        // stops fit, checked after each batch (counting resumed time)
  // ---- hardware and numerics
  // Resolved once into a Strategy holding an Accelerator, a Precision and a CheckpointIO
  // (train/hardware/connector.cpp); the names or objects of your own, as in Lightning.
  std::variant<std::string, std::shared_ptr<Accelerator>> accelerator = "auto";  // "auto" | "cpu" | "cuda" | "gpu"
  int devices = 1;                         // -1: every device; on the CPU, N > 1 is N processes (DDP)
  int num_nodes = 1;                       // machines, each running `devices` processes (started by kiln-run, srun or mpirun)
  // "auto" (DDP when devices x num_nodes > 1) | "single_device" | "ddp" | "zero1" | "zero2" (DDP with the
  // optimizer state, and for zero2 the gradients, sharded across the processes)
  std::variant<std::string, std::shared_ptr<Strategy>> strategy = "auto";
  // "32-true" (unset), "64-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true" (or 64, 32, 16, bf16).
  std::optional<std::string> precision;
  std::vector<Plugin> plugins;
  // ---- optimization
  int64_t accumulate_grad_batches = 1;
  std::optional<double> gradient_clip_val;
  std::string gradient_clip_algorithm = "norm";  // "norm" | "value"
  // With several processes, the train/val/test/predict loaders get a DistributedSampler: each process
  // reads its share (shuffled as the loader was; Lightning's use_distributed_sampler).
  bool use_distributed_sampler = true;
  // ---- validation
  ValCheckInterval val_check_interval = 1.0;  // fraction of an epoch, every N training batches, or a time span
  std::optional<int64_t> check_val_every_n_epoch = 1;  // unset: validate only by val_check_interval batches
  int64_t num_sanity_val_steps = 2;        // -1: the whole validation set
  // N > 0: ask the DataModule for new train and val loaders every N epochs (0: once per fit).
  int64_t reload_dataloaders_every_n_epochs = 0;
  // Evaluation (validate, test, predict, validation in fit) runs in inference mode: no graph is
  // recorded even where a step turns grad mode back on. false: NoGradGuard only, so a step can
  // record and backpropagate inside an EnableGradGuard (Lightning's torch.no_grad()).
  bool inference_mode = true;
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
  Deterministic deterministic = false;     // bitwise-identical runs: the thread count must not change (Note [Deterministic runs])
  bool detect_anomaly = false;
  // cudnn.benchmark in Lightning: search for the fastest kernels per input shape. Kiln's CPU kernels
  // have nothing to search (oneDNN picks by shape, and Kiln caches each shape's primitives always),
  // so true says so once at fit start; unset or false changes nothing.
  std::optional<bool> benchmark;
  // "" (none), "simple" (time per action: a table at the end of each run, Lightning's SimpleProfiler),
  // or a Profiler (train/profiler.h: a file instead of stdout, and a Chrome trace of the ops of chosen batches).
  std::variant<std::string, std::shared_ptr<Profiler>> profiler;
  bool handle_signals = true;              // SIGTERM/SIGUSR1: checkpoint and exit; SIGINT: stop gracefully
};

}  // namespace kiln
