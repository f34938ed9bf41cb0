// Resolution and validation of the Trainer's settings.
#include "train/plan.h"

#include <charconv>
#include <string>
#include <variant>
#include <vector>

#include "tensor/device.h"
#include "train/hardware/connector.h"

namespace kiln {
namespace {

void check_limit(const BatchLimit& limit, const char* name) {
  if (const auto* n = std::get_if<int64_t>(&limit)) {
    KILN_CHECK(*n >= 0, "Trainer: ", name, " must be >= 0 batches, got ", *n);
  } else {
    const double f = std::get<double>(limit);
    KILN_CHECK(f >= 0.0 && f <= 1.0, "Trainer: ", name, " as a fraction must be in [0, 1], got ", f,
               " (pass an integer for a number of batches)");
  }
}

}  // namespace

// Lightning's Timer parses "DD:HH:MM:SS" as four integers.
Duration::Duration(const std::string& text) {
  std::vector<std::string> parts;
  for (size_t begin = 0;;) {
    const size_t end = text.find(':', begin);
    parts.push_back(text.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  int64_t value[4] = {};
  bool valid = parts.size() == 4;
  for (size_t i = 0; valid && i < 4; ++i) {
    const char* end = parts[i].data() + parts[i].size();
    auto [ptr, ec] = std::from_chars(parts[i].data(), end, value[i]);
    valid = !parts[i].empty() && ec == std::errc() && ptr == end && value[i] >= 0;
  }
  KILN_CHECK(valid, "Trainer: time '", text, "' is not of the form DD:HH:MM:SS (days, hours, minutes, seconds, each "
             "a whole number), e.g. \"00:12:00:00\" for 12 hours");
  seconds_ = static_cast<double>(((value[0] * 24 + value[1]) * 60 + value[2]) * 60 + value[3]);
}

Duration::Duration(const std::map<std::string, double>& keywords) {
  static const std::map<std::string, double> unit = {{"weeks", 604800}, {"days", 86400}, {"hours", 3600},
                                                     {"minutes", 60},   {"seconds", 1},  {"milliseconds", 1e-3},
                                                     {"microseconds", 1e-6}};
  for (const auto& [name, value] : keywords) {
    auto it = unit.find(name);
    KILN_CHECK(it != unit.end(), "Trainer: time keyword '", name, "' is not one of timedelta's: weeks, days, hours, "
               "minutes, seconds, milliseconds, microseconds");
    seconds_ += value * it->second;
  }
}

Deterministic::Deterministic(const char* mode) : on_(true), warn_only_(true) {
  KILN_CHECK(std::string(mode) == "warn", "Trainer: deterministic = \"", mode, "\" is not one of: false, true, \"warn\"");
}

Plan resolve_plan(const TrainerConfig& c) {
  Plan plan;
  plan.strategy = resolve_strategy(c);

  KILN_CHECK(c.accumulate_grad_batches >= 1, "Trainer: accumulate_grad_batches must be >= 1, got ",
             c.accumulate_grad_batches);
  KILN_CHECK(c.gradient_clip_algorithm == "norm" || c.gradient_clip_algorithm == "value",
             "Trainer: gradient_clip_algorithm '", c.gradient_clip_algorithm, "' is not one of: norm, value");
  KILN_CHECK(!c.gradient_clip_val || *c.gradient_clip_val >= 0, "Trainer: gradient_clip_val must be >= 0, got ",
             c.gradient_clip_val.value_or(0));
  KILN_CHECK(c.max_steps >= -1, "Trainer: max_steps must be >= -1, got ", c.max_steps);
  KILN_CHECK(!c.max_epochs || *c.max_epochs >= -1, "Trainer: max_epochs must be >= -1, got ", *c.max_epochs);
  KILN_CHECK(!c.min_epochs || !c.max_epochs || *c.max_epochs < 0 || *c.min_epochs <= *c.max_epochs,
             "Trainer: min_epochs (", c.min_epochs.value_or(0), ") is greater than max_epochs (", c.max_epochs.value_or(0), ")");
  KILN_CHECK(!c.min_steps || c.max_steps < 0 || *c.min_steps <= c.max_steps, "Trainer: min_steps (",
             c.min_steps.value_or(0), ") is greater than max_steps (", c.max_steps, ")");
  KILN_CHECK(!c.max_time || c.max_time->seconds() > 0, "Trainer: max_time must be positive, got ",
             c.max_time ? c.max_time->seconds() : 0, " s");
  KILN_CHECK(c.reload_dataloaders_every_n_epochs >= 0, "Trainer: reload_dataloaders_every_n_epochs must be >= 0, got ",
             c.reload_dataloaders_every_n_epochs);
  KILN_CHECK(c.num_sanity_val_steps >= -1, "Trainer: num_sanity_val_steps must be >= -1, got ", c.num_sanity_val_steps);
  KILN_CHECK(c.log_every_n_steps >= 0, "Trainer: log_every_n_steps must be >= 0, got ", c.log_every_n_steps);
  KILN_CHECK(c.fast_dev_run >= 0, "Trainer: fast_dev_run must be >= 0, got ", c.fast_dev_run);
  KILN_CHECK(!c.check_val_every_n_epoch || *c.check_val_every_n_epoch >= 1,
             "Trainer: check_val_every_n_epoch must be >= 1 or unset, got ", c.check_val_every_n_epoch.value_or(0));
  if (const auto* n = std::get_if<int64_t>(&c.val_check_interval)) {
    KILN_CHECK(*n >= 1, "Trainer: val_check_interval must be >= 1 batch, got ", *n);
  } else if (const double* f = std::get_if<double>(&c.val_check_interval)) {
    KILN_CHECK(*f > 0.0 && *f <= 1.0, "Trainer: val_check_interval as a fraction must be in (0, 1], got ", *f);
  } else {
    KILN_CHECK(std::get<Duration>(c.val_check_interval).seconds() >= 0, "Trainer: val_check_interval as a time "
               "must not be negative");
  }
  check_limit(c.limit_train_batches, "limit_train_batches");
  check_limit(c.limit_val_batches, "limit_val_batches");
  check_limit(c.limit_test_batches, "limit_test_batches");
  check_limit(c.limit_predict_batches, "limit_predict_batches");
  check_limit(c.overfit_batches, "overfit_batches");

  // Lightning: max_epochs defaults to 1000 unless max_steps is set, and -1 means no limit.
  if (c.max_epochs) plan.max_epochs = *c.max_epochs;
  else plan.max_epochs = c.max_steps >= 0 ? -1 : 1000;
  if (c.fast_dev_run > 0) plan.max_epochs = 1;
  return plan;
}

}  // namespace kiln
