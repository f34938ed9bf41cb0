// OneCycleLR (declared in lr_scheduler.h), following torch 2.x's phases and anneal arithmetic.
// torch keeps initial_lr / max_lr / min_lr / max_momentum / base_momentum in each param group;
// here initial_lr goes to the group and the rest stay in the scheduler (and its state_dict).
#pragma GCC optimize("fp-contract=off")  // Note [No FMA contraction] in fused_update.cpp

#include <cmath>
#include <numbers>

#include "nn/optim/lr_scheduler.h"
#include "nn/optim/lr_scheduler_json.h"

namespace kiln::optim {
namespace {

enum Key { kInitialLr = 0, kMaxLr = 1, kMinLr = 2, kMaxMomentum = 3, kBaseMomentum = 4 };

// One value for every group, or exactly one per group.
std::vector<double> per_group(const std::vector<double>& values, size_t groups, const char* what) {
  KILN_CHECK(values.size() == 1 || values.size() == groups, "OneCycleLR: expected 1 or ", groups, " values of ", what,
             " (one per param group), got ", values.size());
  return values.size() == 1 ? std::vector<double>(groups, values[0]) : values;
}

}  // namespace

OneCycleLR::OneCycleLR(Optimizer& optimizer, OneCycleLROptions o) : LRScheduler(optimizer, "OneCycleLR") {
  if (o.total_steps) {
    KILN_CHECK(*o.total_steps > 0, "OneCycleLR: expected a positive total_steps, got ", *o.total_steps);
    total_steps_ = *o.total_steps;
  } else {
    KILN_CHECK(o.epochs && o.steps_per_epoch, "OneCycleLR: give either total_steps or both epochs and steps_per_epoch");
    KILN_CHECK(*o.epochs > 0, "OneCycleLR: expected a positive epochs, got ", *o.epochs);
    KILN_CHECK(*o.steps_per_epoch > 0, "OneCycleLR: expected a positive steps_per_epoch, got ", *o.steps_per_epoch);
    total_steps_ = *o.epochs * *o.steps_per_epoch;
  }
  KILN_CHECK(o.pct_start >= 0 && o.pct_start <= 1, "OneCycleLR: pct_start must be in [0, 1], got ", o.pct_start);
  KILN_CHECK(o.anneal_strategy == "cos" || o.anneal_strategy == "linear", "OneCycleLR: anneal_strategy must be "
             "'cos' or 'linear', got '", o.anneal_strategy, "'");
  cos_ = o.anneal_strategy == "cos";
  const double total = static_cast<double>(total_steps_);
  if (o.three_phase) {
    phases_ = {{o.pct_start * total - 1, kInitialLr, kMaxLr, kMaxMomentum, kBaseMomentum},
               {2 * o.pct_start * total - 2, kMaxLr, kInitialLr, kBaseMomentum, kMaxMomentum},
               {total - 1, kInitialLr, kMinLr, kMaxMomentum, kMaxMomentum}};
  } else {
    phases_ = {{o.pct_start * total - 1, kInitialLr, kMaxLr, kMaxMomentum, kBaseMomentum},
               {total - 1, kMaxLr, kMinLr, kBaseMomentum, kMaxMomentum}};
  }

  std::vector<ParamGroup>& groups = optimizer.param_groups();
  const std::vector<double> max_lrs = per_group(o.max_lr, groups.size(), "max_lr");
  cycle_momentum_ = o.cycle_momentum;
  std::vector<double> max_m(groups.size(), 0), base_m(groups.size(), 0);
  if (cycle_momentum_) {
    KILN_CHECK(optimizer.has_hyper("momentum") || optimizer.has_hyper("betas"), "OneCycleLR: ", optimizer.name(),
               " has no momentum or beta1 to cycle; pass cycle_momentum = false");
    use_beta1_ = optimizer.has_hyper("betas");
    max_m = per_group(o.max_momentum, groups.size(), "max_momentum");
    base_m = per_group(o.base_momentum, groups.size(), "base_momentum");
  }
  base_lrs_.clear();
  for (size_t i = 0; i < groups.size(); ++i) {
    const double initial = max_lrs[i] / o.div_factor;
    groups_.push_back({{initial, max_lrs[i], initial / o.final_div_factor, max_m[i], base_m[i]}});
    groups[i].initial_lr = initial;
    base_lrs_.push_back(initial);
    if (cycle_momentum_) (use_beta1_ ? groups[i].betas.first : groups[i].momentum) = max_m[i];
  }
  initial_step();
}

double OneCycleLR::anneal(double start, double end, double pct) const {
  if (cos_) {
    const double cos_out = std::cos(std::numbers::pi * pct) + 1;
    return end + (start - end) / 2.0 * cos_out;
  }
  return (end - start) * pct + start;
}

std::vector<double> OneCycleLR::compute_lr() {
  KILN_CHECK(last_epoch_ <= total_steps_, "OneCycleLR: tried to step ", last_epoch_,
             " times; the specified number of total steps is ", total_steps_);
  const double step = static_cast<double>(last_epoch_);
  std::vector<ParamGroup>& groups = optimizer_->param_groups();
  std::vector<double> lrs;
  for (size_t g = 0; g < groups.size(); ++g) {
    const GroupValues& v = groups_[g];
    double start_step = 0.0, lr = 0, momentum = 0;
    for (size_t i = 0; i < phases_.size(); ++i) {
      const Phase& phase = phases_[i];
      if (step <= phase.end_step || i + 1 == phases_.size()) {
        const double pct = (step - start_step) / (phase.end_step - start_step);
        lr = anneal(v.at(phase.start_lr), v.at(phase.end_lr), pct);
        if (cycle_momentum_) momentum = anneal(v.at(phase.start_momentum), v.at(phase.end_momentum), pct);
        break;
      }
      start_step = phase.end_step;
    }
    lrs.push_back(lr);
    if (cycle_momentum_) (use_beta1_ ? groups[g].betas.first : groups[g].momentum) = momentum;
  }
  return lrs;
}

void OneCycleLR::save_fields(Json& meta) const {
  meta["total_steps"] = total_steps_;
  meta["anneal_strategy"] = cos_ ? "cos" : "linear";
  meta["cycle_momentum"] = cycle_momentum_;
  meta["use_beta1"] = use_beta1_;
  Json phases = Json::array();
  for (const Phase& p : phases_)
    phases.push_back({p.end_step, p.start_lr, p.end_lr, p.start_momentum, p.end_momentum});
  meta["phases"] = std::move(phases);
  Json groups = Json::array();
  for (const GroupValues& g : groups_)
    groups.push_back({{"initial_lr", g.values[kInitialLr]}, {"max_lr", g.values[kMaxLr]},
                      {"min_lr", g.values[kMinLr]}, {"max_momentum", g.values[kMaxMomentum]},
                      {"base_momentum", g.values[kBaseMomentum]}});
  meta["groups"] = std::move(groups);
}

void OneCycleLR::load_fields(const Json& meta) {
  const std::string op = "OneCycleLR.load_state_dict";
  const auto total_steps = meta_field<int64_t>(meta, "total_steps", op);
  const auto strategy = meta_field<std::string>(meta, "anneal_strategy", op);
  KILN_CHECK(strategy == "cos" || strategy == "linear", op, ": bad anneal_strategy '", strategy, "'");
  const auto jphases = meta_field<std::vector<std::vector<double>>>(meta, "phases", op);
  std::vector<Phase> phases;
  for (const auto& p : jphases) {
    KILN_CHECK(p.size() == 5, op, ": a phase must have 5 numbers, got ", p.size());
    for (size_t k = 1; k < 5; ++k) KILN_CHECK(p[k] >= 0 && p[k] < 5, op, ": bad phase key index ", p[k]);
    phases.push_back({p[0], static_cast<int>(p[1]), static_cast<int>(p[2]), static_cast<int>(p[3]),
                      static_cast<int>(p[4])});
  }
  KILN_CHECK(!phases.empty(), op, ": no phases");
  const auto jgroups = meta_field<Json>(meta, "groups", op);
  KILN_CHECK(jgroups.is_array() && jgroups.size() == num_groups(), op, ": the state is for ",
             jgroups.is_array() ? jgroups.size() : 0, " param groups, the optimizer has ", num_groups());
  std::vector<GroupValues> groups;
  for (const Json& g : jgroups)
    groups.push_back({{meta_field<double>(g, "initial_lr", op), meta_field<double>(g, "max_lr", op),
                       meta_field<double>(g, "min_lr", op), meta_field<double>(g, "max_momentum", op),
                       meta_field<double>(g, "base_momentum", op)}});
  const bool cycle_momentum = meta_field<bool>(meta, "cycle_momentum", op);
  const bool use_beta1 = meta_field<bool>(meta, "use_beta1", op);
  KILN_CHECK(!cycle_momentum || optimizer_->has_hyper(use_beta1 ? "betas" : "momentum"), op, ": the state cycles ",
             use_beta1 ? "beta1" : "momentum", ", which ", optimizer_->name(), " does not have");
  total_steps_ = total_steps;
  cos_ = strategy == "cos";
  cycle_momentum_ = cycle_momentum;
  use_beta1_ = use_beta1;
  phases_ = std::move(phases);
  groups_ = std::move(groups);
}

}  // namespace kiln::optim
