// EarlyStopping (see early_stopping.h): one check per validation run or train epoch, following
// Lightning 2.x's EarlyStopping step by step, its messages included.
#include "train/callbacks/early_stopping.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include "tensor/error.h"
#include "train/trainer.h"

namespace kiln::callbacks {

EarlyStopping::EarlyStopping(EarlyStoppingOptions options) : options_(std::move(options)) {
  KILN_CHECK(!options_.monitor.empty(), "EarlyStopping: monitor is required (the name of a logged metric)");
  KILN_CHECK(options_.mode == "min" || options_.mode == "max", "EarlyStopping: mode can be 'min' or 'max', got '",
             options_.mode, "'");
  KILN_CHECK(options_.patience >= 0, "EarlyStopping: invalid patience=", options_.patience, " (must be >= 0)");
  // Lightning flips min_delta's sign in "min" mode so that one test, improves(current - min_delta,
  // best), serves both modes: in "min" mode current must be below best - min_delta.
  min_delta_ = options_.mode == "max" ? options_.min_delta : -options_.min_delta;
  patience_ = options_.patience;
  best_score_ = options_.mode == "min" ? std::numeric_limits<double>::infinity()
                                       : -std::numeric_limits<double>::infinity();
}

std::string EarlyStopping::state_key() const {
  return "EarlyStopping{'monitor': '" + options_.monitor + "', 'mode': '" + options_.mode + "'}";
}

void EarlyStopping::setup(Trainer& trainer, TrainModule&, const std::string& stage) {
  fitting_ = stage == "fit";
  // Checking at train epoch end is right only when each epoch ends with exactly one validation.
  check_on_train_epoch_end_ = options_.check_on_train_epoch_end.value_or(validates_once_per_epoch(trainer));
}

bool EarlyStopping::should_skip_check(const Trainer& trainer) const { return !fitting_ || trainer.sanity_checking(); }

void EarlyStopping::on_train_epoch_end(Trainer& trainer, TrainModule&) {
  if (!check_on_train_epoch_end_ || should_skip_check(trainer)) return;
  run_check(trainer);
}

void EarlyStopping::on_validation_end(Trainer& trainer, TrainModule&) {
  if (check_on_train_epoch_end_ || should_skip_check(trainer)) return;
  run_check(trainer);
}

void EarlyStopping::run_check(Trainer& trainer) {
  if (trainer.config().fast_dev_run > 0) return;
  const Metrics& logs = trainer.callback_metrics();
  const auto it = logs.find(options_.monitor);
  if (it == logs.end()) {
    std::string available;
    for (const auto& [name, value] : logs) available += (available.empty() ? "`" : ", `") + name + "`";
    const std::string message = "EarlyStopping: conditioned on metric `" + options_.monitor +
                                "` which is not available. Pass in or modify your EarlyStopping callback to use "
                                "any of the following: " + (available.empty() ? "(nothing was logged)" : available);
    KILN_CHECK(!options_.strict, message);
    if (options_.verbose) std::fprintf(stderr, "warning: %s\n", message.c_str());
    return;
  }
  const auto [decided, reason] = evaluate(it->second);
  // Note [Decisions every process shares] (fit_loop.cpp): any process's stop stops all of them.
  const bool should_stop = trainer.strategy().reduce_boolean_decision(decided, /*all=*/false);
  trainer.should_stop = trainer.should_stop || should_stop;
  if (should_stop) stopped_epoch_ = trainer.current_epoch();
  if (!reason.empty() && options_.verbose) std::printf("%s\n", reason.c_str());
}

std::pair<bool, std::string> EarlyStopping::evaluate(double current) {
  const std::string& name = options_.monitor;
  const std::string order = options_.mode == "min" ? "<" : ">";
  const std::string inverse = options_.mode == "min" ? ">" : "<";
  if (options_.check_finite && !std::isfinite(current)) {
    return {true, "Monitored metric " + name + " = " + python_float_repr(current) +
                      " is not finite. Previous best value was " + python_format(best_score_, ".3f", false) +
                      ". Signaling Trainer to stop."};
  }
  if (options_.stopping_threshold && improves(current, *options_.stopping_threshold)) {
    return {true, "Stopping threshold reached: " + name + " = " + python_float_repr(current) + " " + order + " " +
                      python_float_repr(*options_.stopping_threshold) + ". Signaling Trainer to stop."};
  }
  if (options_.divergence_threshold && improves(-current, -*options_.divergence_threshold)) {
    return {true, "Divergence threshold reached: " + name + " = " + python_float_repr(current) + " " + inverse + " " +
                      python_float_repr(*options_.divergence_threshold) + ". Signaling Trainer to stop."};
  }
  if (improves(current - min_delta_, best_score_)) {
    std::string reason = improvement_message(current);
    best_score_ = current;
    wait_count_ = 0;
    return {false, reason};
  }
  ++wait_count_;
  if (wait_count_ >= patience_) {
    return {true, "Monitored metric " + name + " did not improve in the last " + std::to_string(wait_count_) +
                      " records. Best score: " + python_format(best_score_, ".3f", false) +
                      ". Signaling Trainer to stop."};
  }
  return {false, ""};
}

std::string EarlyStopping::improvement_message(double current) const {
  if (std::isfinite(best_score_)) {
    return "Metric " + options_.monitor + " improved by " + python_format(std::fabs(best_score_ - current), ".3f", false) +
           " >= min_delta = " + python_float_repr(std::fabs(min_delta_)) +
           ". New best score: " + python_format(current, ".3f", false);
  }
  return "Metric " + options_.monitor + " improved. New best score: " + python_format(current, ".3f", false);
}

Json EarlyStopping::state_dict() const {
  return {{"wait_count", wait_count_},
          {"stopped_epoch", stopped_epoch_},
          {"best_score", score_to_json(best_score_)},
          {"patience", patience_}};
}

void EarlyStopping::load_state_dict(const Json& state) {
  KILN_CHECK(state.is_object() && state.contains("wait_count") && state.contains("stopped_epoch") &&
                 state.contains("best_score") && state.contains("patience"),
             "EarlyStopping.load_state_dict: expected wait_count, stopped_epoch, best_score and patience, got ",
             state.dump());
  KILN_CHECK(state["wait_count"].is_number_integer() && state["stopped_epoch"].is_number_integer() &&
                 state["patience"].is_number_integer(),
             "EarlyStopping.load_state_dict: wait_count, stopped_epoch and patience must be integers, got ",
             state.dump());
  wait_count_ = state["wait_count"].get<int64_t>();
  stopped_epoch_ = state["stopped_epoch"].get<int64_t>();
  best_score_ = score_from_json(state["best_score"], "EarlyStopping.load_state_dict: best_score");
  patience_ = state["patience"].get<int64_t>();
}

}  // namespace kiln::callbacks
