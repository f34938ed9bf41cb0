// The LRScheduler base and the epoch-wise schedulers (StepLR, MultiStepLR, ExponentialLR,
// CosineAnnealingLR, LinearLR, LambdaLR, SequentialLR). Every formula is written in torch's
// order of floating-point operations, so the lrs match torch's bit for bit (same libm); see
// Note [No FMA contraction] in fused_update.cpp for why contraction is off here too.
#pragma GCC optimize("fp-contract=off")

#include "nn/optim/lr_scheduler.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "nn/optim/lr_scheduler_json.h"

namespace kiln::optim {
namespace {

constexpr double kPi = std::numbers::pi;

// Python's a % b for b > 0 (never negative).
int64_t floor_mod(int64_t a, int64_t b) {
  const int64_t r = a % b;
  return r < 0 ? r + b : r;
}

// Python's a // b for b > 0.
int64_t floor_div(int64_t a, int64_t b) { return (a - floor_mod(a, b)) / b; }

}  // namespace

// ---- LRScheduler

LRScheduler::LRScheduler(Optimizer& optimizer, std::string name) : optimizer_(&optimizer), name_(std::move(name)) {
  for (ParamGroup& g : optimizer.param_groups()) {
    if (!g.initial_lr) g.initial_lr = g.lr;
    base_lrs_.push_back(*g.initial_lr);
  }
}

std::vector<double> LRScheduler::group_lrs() const {
  std::vector<double> lrs;
  for (const ParamGroup& g : optimizer_->param_groups()) lrs.push_back(g.lr);
  return lrs;
}

void LRScheduler::initial_step() {
  step_count_ = 0;
  is_initial_ = true;
  try {
    step();
  } catch (...) {
    is_initial_ = false;
    throw;
  }
  is_initial_ = false;
}

void LRScheduler::step() {
  ++step_count_;
  update_lr();
}

void LRScheduler::update_lr(std::optional<int64_t> epoch) {
  std::vector<double> lrs;
  if (!epoch) {
    ++last_epoch_;
    lrs = compute_lr();
  } else {
    last_epoch_ = *epoch;
    std::optional<std::vector<double>> closed = closed_form_lr();
    lrs = closed ? std::move(*closed) : compute_lr();
  }
  std::vector<ParamGroup>& groups = optimizer_->param_groups();
  KILN_CHECK(lrs.size() == groups.size(), name_, ".step: the optimizer has ", groups.size(),
             " param groups, but the scheduler was made for ", lrs.size());
  for (size_t i = 0; i < groups.size(); ++i) groups[i].lr = lrs[i];
  last_lr_ = group_lrs();
}

State LRScheduler::state_dict() const {
  State out;
  out.meta["scheduler"] = name_;
  out.meta["last_epoch"] = last_epoch_;
  out.meta["step_count"] = step_count_;
  out.meta["base_lrs"] = base_lrs_;
  out.meta["last_lr"] = last_lr_;
  save_fields(out.meta);
  return out;
}

void LRScheduler::load_state_dict(const State& state) {
  const std::string op = name_ + ".load_state_dict";
  const Json& meta = state.meta;
  check_scheduler_meta(meta, name_, op);
  auto base_lrs = meta_field<std::vector<double>>(meta, "base_lrs", op);
  auto last_lr = meta_field<std::vector<double>>(meta, "last_lr", op);
  KILN_CHECK(base_lrs.size() == num_groups() && last_lr.size() == num_groups(), op, ": the state is for ",
             base_lrs.size(), " param groups, the optimizer has ", num_groups());
  const auto last_epoch = meta_field<int64_t>(meta, "last_epoch", op);
  const auto step_count = meta_field<int64_t>(meta, "step_count", op);
  load_fields(meta);
  last_epoch_ = last_epoch;
  step_count_ = step_count;
  base_lrs_ = std::move(base_lrs);
  last_lr_ = std::move(last_lr);
}

// ---- StepLR

StepLR::StepLR(Optimizer& optimizer, StepLROptions options) : LRScheduler(optimizer, "StepLR"), options_(options) {
  KILN_CHECK(options_.step_size > 0, "StepLR: step_size must be > 0, got ", options_.step_size);
  initial_step();
}

std::vector<double> StepLR::compute_lr() {
  std::vector<double> lrs = group_lrs();
  if (last_epoch_ == 0 || last_epoch_ % options_.step_size != 0) return lrs;
  for (double& lr : lrs) lr = lr * options_.gamma;
  return lrs;
}

std::optional<std::vector<double>> StepLR::closed_form_lr() const {
  std::vector<double> lrs;
  for (double base : base_lrs_)
    lrs.push_back(base * std::pow(options_.gamma, static_cast<double>(floor_div(last_epoch_, options_.step_size))));
  return lrs;
}

void StepLR::save_fields(Json& meta) const {
  meta["step_size"] = options_.step_size;
  meta["gamma"] = options_.gamma;
}

void StepLR::load_fields(const Json& meta) {
  const std::string op = "StepLR.load_state_dict";
  const auto step_size = meta_field<int64_t>(meta, "step_size", op);
  KILN_CHECK(step_size > 0, op, ": step_size must be > 0, got ", step_size);
  options_ = {.step_size = step_size, .gamma = meta_field<double>(meta, "gamma", op)};
}

// ---- MultiStepLR

MultiStepLR::MultiStepLR(Optimizer& optimizer, MultiStepLROptions options)
    : LRScheduler(optimizer, "MultiStepLR"), options_(std::move(options)) {
  std::sort(options_.milestones.begin(), options_.milestones.end());
  initial_step();
}

std::vector<double> MultiStepLR::compute_lr() {
  std::vector<double> lrs = group_lrs();
  const auto count = std::count(options_.milestones.begin(), options_.milestones.end(), last_epoch_);
  if (count == 0) return lrs;
  for (double& lr : lrs) lr = lr * std::pow(options_.gamma, static_cast<double>(count));
  return lrs;
}

std::optional<std::vector<double>> MultiStepLR::closed_form_lr() const {
  const auto passed = std::upper_bound(options_.milestones.begin(), options_.milestones.end(), last_epoch_) -
                      options_.milestones.begin();
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(base * std::pow(options_.gamma, static_cast<double>(passed)));
  return lrs;
}

void MultiStepLR::save_fields(Json& meta) const {
  meta["milestones"] = options_.milestones;
  meta["gamma"] = options_.gamma;
}

void MultiStepLR::load_fields(const Json& meta) {
  const std::string op = "MultiStepLR.load_state_dict";
  auto milestones = meta_field<std::vector<int64_t>>(meta, "milestones", op);
  std::sort(milestones.begin(), milestones.end());
  options_ = {.milestones = std::move(milestones), .gamma = meta_field<double>(meta, "gamma", op)};
}

// ---- ExponentialLR

ExponentialLR::ExponentialLR(Optimizer& optimizer, ExponentialLROptions options)
    : LRScheduler(optimizer, "ExponentialLR"), options_(options) {
  initial_step();
}

std::vector<double> ExponentialLR::compute_lr() {
  std::vector<double> lrs = group_lrs();
  if (is_initial_) return lrs;
  for (double& lr : lrs) lr = lr * options_.gamma;
  return lrs;
}

std::optional<std::vector<double>> ExponentialLR::closed_form_lr() const {
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(base * std::pow(options_.gamma, static_cast<double>(last_epoch_)));
  return lrs;
}

void ExponentialLR::save_fields(Json& meta) const { meta["gamma"] = options_.gamma; }
void ExponentialLR::load_fields(const Json& meta) {
  options_.gamma = meta_field<double>(meta, "gamma", "ExponentialLR.load_state_dict");
}

// ---- CosineAnnealingLR

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, CosineAnnealingLROptions options)
    : LRScheduler(optimizer, "CosineAnnealingLR"), options_(options) {
  KILN_CHECK(options_.T_max > 0, "CosineAnnealingLR: T_max must be > 0, got ", options_.T_max);
  initial_step();
}

std::vector<double> CosineAnnealingLR::compute_lr() {
  std::vector<double> lrs = group_lrs();
  if (is_initial_) return lrs;
  const double T = static_cast<double>(options_.T_max), eta_min = options_.eta_min;
  const double epoch = static_cast<double>(last_epoch_);
  for (size_t i = 0; i < lrs.size(); ++i) {
    const double base = base_lrs_[i];
    if (step_count_ == 1 && last_epoch_ > 0) {
      lrs[i] = eta_min + (base - eta_min) * (1 + std::cos(epoch * kPi / T)) / 2;
    } else if (floor_mod(last_epoch_ - 1 - options_.T_max, 2 * options_.T_max) == 0) {
      lrs[i] = lrs[i] + (base - eta_min) * (1 - std::cos(kPi / T)) / 2;
    } else {
      lrs[i] = (1 + std::cos(kPi * epoch / T)) / (1 + std::cos(kPi * (epoch - 1) / T)) * (lrs[i] - eta_min) + eta_min;
    }
  }
  return lrs;
}

std::optional<std::vector<double>> CosineAnnealingLR::closed_form_lr() const {
  const double T = static_cast<double>(options_.T_max), eta_min = options_.eta_min;
  std::vector<double> lrs;
  for (double base : base_lrs_)
    lrs.push_back(eta_min + (base - eta_min) * (1 + std::cos(kPi * static_cast<double>(last_epoch_) / T)) / 2);
  return lrs;
}

void CosineAnnealingLR::save_fields(Json& meta) const {
  meta["T_max"] = options_.T_max;
  meta["eta_min"] = options_.eta_min;
}

void CosineAnnealingLR::load_fields(const Json& meta) {
  const std::string op = "CosineAnnealingLR.load_state_dict";
  const auto T_max = meta_field<int64_t>(meta, "T_max", op);
  KILN_CHECK(T_max > 0, op, ": T_max must be > 0, got ", T_max);
  options_ = {.T_max = T_max, .eta_min = meta_field<double>(meta, "eta_min", op)};
}

// ---- LinearLR

LinearLR::LinearLR(Optimizer& optimizer, LinearLROptions options) : LRScheduler(optimizer, "LinearLR"), options_(options) {
  KILN_CHECK(options_.start_factor > 0 && options_.start_factor <= 1, "LinearLR: start_factor must be in (0, 1], got ",
             options_.start_factor);
  KILN_CHECK(options_.end_factor >= 0 && options_.end_factor <= 1, "LinearLR: end_factor must be in [0, 1], got ",
             options_.end_factor);
  KILN_CHECK(options_.total_iters > 0, "LinearLR: total_iters must be > 0, got ", options_.total_iters);
  initial_step();
}

std::vector<double> LinearLR::compute_lr() {
  std::vector<double> lrs = group_lrs();
  const double s = options_.start_factor, e = options_.end_factor;
  const double T = static_cast<double>(options_.total_iters);
  if (last_epoch_ == 0) {
    for (double& lr : lrs) lr = lr * s;
    return lrs;
  }
  if (is_initial_ || last_epoch_ > options_.total_iters) return lrs;
  const double factor = 1.0 + (e - s) / (T * s + static_cast<double>(last_epoch_ - 1) * (e - s));
  for (double& lr : lrs) lr = lr * factor;
  return lrs;
}

std::optional<std::vector<double>> LinearLR::closed_form_lr() const {
  const double s = options_.start_factor, e = options_.end_factor;
  const double progress = static_cast<double>(std::min(options_.total_iters, last_epoch_));
  std::vector<double> lrs;
  for (double base : base_lrs_)
    lrs.push_back(base * (s + (e - s) * progress / static_cast<double>(options_.total_iters)));
  return lrs;
}

void LinearLR::save_fields(Json& meta) const {
  meta["start_factor"] = options_.start_factor;
  meta["end_factor"] = options_.end_factor;
  meta["total_iters"] = options_.total_iters;
}

void LinearLR::load_fields(const Json& meta) {
  const std::string op = "LinearLR.load_state_dict";
  const auto total_iters = meta_field<int64_t>(meta, "total_iters", op);
  KILN_CHECK(total_iters > 0, op, ": total_iters must be > 0, got ", total_iters);
  options_ = {.start_factor = meta_field<double>(meta, "start_factor", op),
              .end_factor = meta_field<double>(meta, "end_factor", op), .total_iters = total_iters};
}

// ---- LambdaLR

LambdaLR::LambdaLR(Optimizer& optimizer, Lambda lr_lambda)
    : LambdaLR(optimizer, std::vector<Lambda>(optimizer.param_groups().size(), lr_lambda)) {}

LambdaLR::LambdaLR(Optimizer& optimizer, std::vector<Lambda> lr_lambdas)
    : LRScheduler(optimizer, "LambdaLR"), lambdas_(std::move(lr_lambdas)) {
  KILN_CHECK(lambdas_.size() == num_groups(), "LambdaLR: expected ", num_groups(), " lr_lambdas (one per param "
             "group), got ", lambdas_.size());
  for (size_t i = 0; i < lambdas_.size(); ++i) KILN_CHECK(lambdas_[i], "LambdaLR: lr_lambda ", i, " is empty");
  initial_step();
}

std::vector<double> LambdaLR::compute_lr() {
  std::vector<double> lrs;
  for (size_t i = 0; i < lambdas_.size(); ++i) lrs.push_back(base_lrs_[i] * lambdas_[i](last_epoch_));
  return lrs;
}

// ---- SequentialLR

SequentialLR::SequentialLR(Optimizer& optimizer, std::vector<std::shared_ptr<LRScheduler>> schedulers,
                           std::vector<int64_t> milestones)
    : LRScheduler(optimizer, "SequentialLR"), schedulers_(std::move(schedulers)), milestones_(std::move(milestones)) {
  KILN_CHECK(!schedulers_.empty(), "SequentialLR: expects at least one scheduler, got none");
  for (size_t i = 0; i < schedulers_.size(); ++i) {
    KILN_CHECK(schedulers_[i], "SequentialLR: scheduler ", i, " is null");
    KILN_CHECK(&schedulers_[i]->optimizer() == &optimizer, "SequentialLR: scheduler ", i, " (",
               schedulers_[i]->name(), ") drives another optimizer; all must drive this one");
  }
  KILN_CHECK(milestones_.size() + 1 == schedulers_.size(), "SequentialLR: expects one milestone fewer than "
             "schedulers, got ", schedulers_.size(), " schedulers and ", milestones_.size(), " milestones");
  KILN_CHECK(std::is_sorted(milestones_.begin(), milestones_.end()), "SequentialLR: milestones must be increasing");
  last_epoch_ = 0;
  for (ParamGroup& g : optimizer.param_groups()) g.lr = *g.initial_lr;
  for (const auto& s : schedulers_) undo_initial_step(*s);
  LRScheduler& first = *schedulers_[active_index(0)];
  first.initial_step();
  last_lr_ = first.get_last_lr();
}

void SequentialLR::undo_initial_step(LRScheduler& scheduler) {
  if (auto* seq = dynamic_cast<SequentialLR*>(&scheduler)) {
    for (const auto& s : seq->schedulers_) undo_initial_step(*s);
  } else {
    --scheduler.last_epoch_;
  }
}

size_t SequentialLR::active_index(int64_t epoch) const {
  return static_cast<size_t>(std::upper_bound(milestones_.begin(), milestones_.end(), epoch) - milestones_.begin());
}

void SequentialLR::step() {
  ++last_epoch_;
  const size_t idx = active_index(last_epoch_);
  LRScheduler& s = *schedulers_[idx];
  if (idx > 0 && milestones_[idx - 1] == last_epoch_) s.update_lr(0);
  else s.step();
  last_lr_ = s.get_last_lr();
}

std::vector<double> SequentialLR::compute_lr() { return schedulers_[active_index(last_epoch_)]->get_last_lr(); }

State SequentialLR::state_dict() const {
  State out;
  out.meta["scheduler"] = name_;
  out.meta["last_epoch"] = last_epoch_;
  out.meta["milestones"] = milestones_;
  out.meta["last_lr"] = last_lr_;
  Json children = Json::array();
  for (const auto& s : schedulers_) children.push_back(s->state_dict().meta);
  out.meta["schedulers"] = std::move(children);
  return out;
}

void SequentialLR::load_state_dict(const State& state) {
  const std::string op = "SequentialLR.load_state_dict";
  check_scheduler_meta(state.meta, name_, op);
  const auto children = meta_field<Json>(state.meta, "schedulers", op);
  KILN_CHECK(children.is_array() && children.size() == schedulers_.size(), op, ": the state has ",
             children.is_array() ? children.size() : 0, " schedulers, this SequentialLR has ", schedulers_.size());
  auto milestones = meta_field<std::vector<int64_t>>(state.meta, "milestones", op);
  KILN_CHECK(milestones.size() + 1 == schedulers_.size(), op, ": the state has ", milestones.size(),
             " milestones for ", schedulers_.size(), " schedulers");
  const auto last_epoch = meta_field<int64_t>(state.meta, "last_epoch", op);
  auto last_lr = meta_field<std::vector<double>>(state.meta, "last_lr", op);
  // Children first: each checks its own state before changing anything.
  for (size_t i = 0; i < schedulers_.size(); ++i) {
    State child;
    child.meta = children[i];
    schedulers_[i]->load_state_dict(child);
  }
  milestones_ = std::move(milestones);
  last_epoch_ = last_epoch;
  last_lr_ = std::move(last_lr);
}

}  // namespace kiln::optim
