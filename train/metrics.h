// What TrainModule::log() feeds: per-step values and per-epoch aggregates (batch-size-weighted
// means by default), split into what goes to loggers, to the progress bar, and to callbacks
// (ModelCheckpoint and EarlyStopping read callback_metrics), with Lightning's naming:
// a metric logged both on step and on epoch appears as `name_step` and `name_epoch`.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include <vector>

#include "tensor/state_dict.h"

namespace kiln {

struct LogOptions {
  bool prog_bar = false;
  bool logger = true;
  std::optional<bool> on_step;     // default: true in training_step and its batch hooks, else false
  std::optional<bool> on_epoch;    // default: the opposite of on_step's default
  std::string reduce_fx = "mean";  // "mean" (batch-size weighted) | "sum" | "max" | "min"
  bool sync_dist = false;          // reduce across processes (a no-op on one device)
  std::optional<int64_t> batch_size;  // default: the size of the batch's first field
};

// The batch size log() weights epoch means by: the size of the batch's first field (1 without one).
inline int64_t batch_size_of(const std::vector<Tensor>& fields) {
  return !fields.empty() && fields[0].defined() && fields[0].dim() > 0 ? fields[0].size(0) : 1;
}

// Where a value was logged from: decides the defaults and when epoch values are reduced.
enum class LogScope { training_step, training_epoch_end, validation, test, other };

// Reduces one value over the run's processes with op "mean", "sum", "max" or "min" (the strategy's
// reduce); every process calls it at the same point.
using MetricSync = std::function<double(double value, const std::string& op)>;

class MetricStore {
 public:
  // Set by the Trainer for runs of several processes; values logged with sync_dist go through it.
  void set_sync(MetricSync sync) { sync_ = std::move(sync); }

  void log(LogScope scope, const std::string& name, double value, const LogOptions& options, int64_t batch_size);

  // Values logged on step since the last call, for the loggers and the progress bar.
  std::map<std::string, double> take_step_logger_metrics();
  // Reduces the epoch accumulators of `scope` into epoch values and clears them; returns what goes
  // to the loggers.
  std::map<std::string, double> end_epoch(LogScope scope);

  const std::map<std::string, double>& callback_metrics() const { return callback_metrics_; }
  const std::map<std::string, double>& progress_bar_metrics() const { return progress_bar_metrics_; }
  void clear_scope(LogScope scope);  // drops unfinished accumulators (a validation run restarts)

  // For exact resume of a run stopped mid-epoch: the training accumulators, the step values not yet
  // sent, and the callback values.
  Json state_dict() const;
  void load_state_dict(const Json& j);

 private:
  struct Accumulator {
    LogScope scope = LogScope::other;
    std::string reduce_fx = "mean";
    bool logger = true;
    bool prog_bar = false;
    bool suffix = false;  // also logged on step: the epoch value is `name_epoch`
    double total = 0;     // sum of value * weight, or the running max/min
    double weight = 0;
    bool sync_dist = false;
  };
  MetricSync sync_;
  std::map<std::string, Accumulator> epoch_;
  std::map<std::string, double> step_logger_;
  std::map<std::string, double> callback_metrics_;
  std::map<std::string, double> progress_bar_metrics_;
};

}  // namespace kiln
