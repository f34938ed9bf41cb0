// ReduceLROnPlateau (declared in lr_scheduler.h), as torch 2.x: counts epochs without improvement
// beyond a relative or absolute threshold, and multiplies every group's lr by `factor` (not below
// its min_lr) once that count exceeds `patience`, then waits `cooldown` epochs.
#include <cmath>
#include <limits>

#include "nn/optim/lr_scheduler.h"
#include "nn/optim/lr_scheduler_json.h"

namespace kiln::optim {
namespace {

void check_modes(const std::string& mode, const std::string& threshold_mode, const std::string& op) {
  KILN_CHECK(mode == "min" || mode == "max", op, ": mode must be 'min' or 'max', got '", mode, "'");
  KILN_CHECK(threshold_mode == "rel" || threshold_mode == "abs", op, ": threshold_mode must be 'rel' or 'abs', got '",
             threshold_mode, "'");
}

double worst(const std::string& mode) {
  return mode == "min" ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
}

}  // namespace

ReduceLROnPlateau::ReduceLROnPlateau(Optimizer& optimizer, ReduceLROnPlateauOptions options)
    : optimizer_(&optimizer), options_(std::move(options)) {
  KILN_CHECK(options_.factor < 1.0, "ReduceLROnPlateau: factor must be < 1, got ", options_.factor);
  check_modes(options_.mode, options_.threshold_mode, "ReduceLROnPlateau");
  const size_t groups = optimizer.param_groups().size();
  KILN_CHECK(options_.min_lr.size() == 1 || options_.min_lr.size() == groups, "ReduceLROnPlateau: expected 1 or ",
             groups, " min_lr values (one per param group), got ", options_.min_lr.size());
  min_lrs_ = options_.min_lr.size() == 1 ? std::vector<double>(groups, options_.min_lr[0]) : options_.min_lr;
  best_ = worst(options_.mode);
  for (const ParamGroup& g : optimizer.param_groups()) last_lr_.push_back(g.lr);
}

bool ReduceLROnPlateau::is_better(double a, double best) const {
  const bool rel = options_.threshold_mode == "rel";
  if (options_.mode == "min") return rel ? a < best * (1.0 - options_.threshold) : a < best - options_.threshold;
  return rel ? a > best * (options_.threshold + 1.0) : a > best + options_.threshold;
}

void ReduceLROnPlateau::step(double metric) {
  last_epoch_ += 1;
  if (is_better(metric, best_)) {
    best_ = metric;
    num_bad_epochs_ = 0;
  } else {
    num_bad_epochs_ += 1;
  }
  if (cooldown_counter_ > 0) {
    cooldown_counter_ -= 1;
    num_bad_epochs_ = 0;
  }
  if (num_bad_epochs_ > options_.patience) {
    reduce_lr();
    cooldown_counter_ = options_.cooldown;
    num_bad_epochs_ = 0;
  }
  last_lr_.clear();
  for (const ParamGroup& g : optimizer_->param_groups()) last_lr_.push_back(g.lr);
}

void ReduceLROnPlateau::reduce_lr() {
  std::vector<ParamGroup>& groups = optimizer_->param_groups();
  if (groups.size() != min_lrs_.size()) {
    KILN_CHECK(options_.min_lr.size() == 1, "ReduceLROnPlateau.step: the optimizer has ", groups.size(),
               " param groups but min_lr has ", min_lrs_.size(), " values");
    min_lrs_.assign(groups.size(), options_.min_lr[0]);
  }
  for (size_t i = 0; i < groups.size(); ++i) {
    const double old_lr = groups[i].lr;
    const double new_lr = std::max(old_lr * options_.factor, min_lrs_[i]);
    if (old_lr - new_lr > options_.eps) groups[i].lr = new_lr;
  }
}

State ReduceLROnPlateau::state_dict() const {
  State out;
  Json& m = out.meta;
  m["scheduler"] = "ReduceLROnPlateau";
  m["mode"] = options_.mode;
  m["factor"] = options_.factor;
  m["patience"] = options_.patience;
  m["threshold"] = options_.threshold;
  m["threshold_mode"] = options_.threshold_mode;
  m["cooldown"] = options_.cooldown;
  m["min_lr"] = options_.min_lr;
  m["min_lrs"] = min_lrs_;
  m["eps"] = options_.eps;
  // JSON has no infinity: the initial best is stored as null.
  m["best"] = std::isinf(best_) ? Json() : Json(best_);
  m["num_bad_epochs"] = num_bad_epochs_;
  m["cooldown_counter"] = cooldown_counter_;
  m["last_epoch"] = last_epoch_;
  m["last_lr"] = last_lr_;
  return out;
}

void ReduceLROnPlateau::load_state_dict(const State& state) {
  const std::string op = "ReduceLROnPlateau.load_state_dict";
  const Json& m = state.meta;
  check_scheduler_meta(m, "ReduceLROnPlateau", op);
  ReduceLROnPlateauOptions o{.mode = meta_field<std::string>(m, "mode", op),
                             .factor = meta_field<double>(m, "factor", op),
                             .patience = meta_field<int64_t>(m, "patience", op),
                             .threshold = meta_field<double>(m, "threshold", op),
                             .threshold_mode = meta_field<std::string>(m, "threshold_mode", op),
                             .cooldown = meta_field<int64_t>(m, "cooldown", op),
                             .min_lr = meta_field<std::vector<double>>(m, "min_lr", op),
                             .eps = meta_field<double>(m, "eps", op)};
  check_modes(o.mode, o.threshold_mode, op);
  KILN_CHECK(m.contains("best"), op, ": the state lacks 'best'");
  const double best = m["best"].is_null() ? worst(o.mode) : meta_field<double>(m, "best", op);
  auto min_lrs = meta_field<std::vector<double>>(m, "min_lrs", op);
  auto last_lr = meta_field<std::vector<double>>(m, "last_lr", op);
  const size_t groups = optimizer_->param_groups().size();
  KILN_CHECK(min_lrs.size() == groups && last_lr.size() == groups, op, ": the state is for ", last_lr.size(),
             " param groups, the optimizer has ", groups);
  const auto num_bad_epochs = meta_field<int64_t>(m, "num_bad_epochs", op);
  const auto cooldown_counter = meta_field<int64_t>(m, "cooldown_counter", op);
  const auto last_epoch = meta_field<int64_t>(m, "last_epoch", op);
  options_ = std::move(o);
  min_lrs_ = std::move(min_lrs);
  best_ = best;
  num_bad_epochs_ = num_bad_epochs;
  cooldown_counter_ = cooldown_counter;
  last_epoch_ = last_epoch;
  last_lr_ = std::move(last_lr);
}

}  // namespace kiln::optim
