// Aggregation of logged values into step and epoch metrics.
#include "train/metrics.h"

#include <algorithm>
#include <cmath>

#include "tensor/error.h"

namespace kiln {
namespace {

bool steps_by_default(LogScope scope) { return scope == LogScope::training_step; }

}  // namespace

void MetricStore::log(LogScope scope, const std::string& name, double value, const LogOptions& options,
                      int64_t batch_size) {
  KILN_CHECK(!name.empty(), "log: the metric name is empty");
  const std::string& fx = options.reduce_fx;
  KILN_CHECK(fx == "mean" || fx == "sum" || fx == "max" || fx == "min", "log('", name, "'): reduce_fx must be one of "
             "mean, sum, max, min; got '", fx, "'");
  const bool on_step = options.on_step.value_or(steps_by_default(scope));
  const bool on_epoch = options.on_epoch.value_or(!steps_by_default(scope));
  KILN_CHECK(on_step || on_epoch, "log('", name, "'): on_step and on_epoch are both false, so the value goes nowhere");
  KILN_CHECK(!(on_step && scope != LogScope::training_step), "log('", name, "'): on_step=true is only supported for "
             "values logged in training_step and the training batch hooks");
  const std::string step_name = on_epoch ? name + "_step" : name;
  const bool sync = options.sync_dist && sync_;
  if (on_step) {
    // The epoch accumulator below takes this process's own value; it is reduced at the epoch's end.
    const double step_value = sync ? sync_(value, fx) : value;
    if (options.logger) step_logger_[step_name] = step_value;
    if (options.prog_bar) progress_bar_metrics_[step_name] = step_value;
    callback_metrics_[name] = step_value;
    if (on_epoch) callback_metrics_[step_name] = step_value;
  }
  if (!on_epoch) return;
  auto [it, fresh] = epoch_.try_emplace(name);
  Accumulator& acc = it->second;
  if (fresh) {
    acc = {scope, fx, options.logger, options.prog_bar, on_step, 0, 0, sync};
    if (fx == "max") acc.total = -INFINITY;
    if (fx == "min") acc.total = INFINITY;
  }
  KILN_CHECK(acc.reduce_fx == fx, "log('", name, "'): logged with reduce_fx '", fx, "' after '", acc.reduce_fx, "'");
  const double w = static_cast<double>(std::max<int64_t>(batch_size, 1));
  if (fx == "mean") acc.total += value * w, acc.weight += w;
  else if (fx == "sum") acc.total += value, acc.weight = 1;
  else if (fx == "max") acc.total = std::max(acc.total, value), acc.weight = 1;
  else acc.total = std::min(acc.total, value), acc.weight = 1;
}

std::map<std::string, double> MetricStore::take_step_logger_metrics() { return std::exchange(step_logger_, {}); }

std::map<std::string, double> MetricStore::end_epoch(LogScope scope) {
  std::map<std::string, double> to_logger;
  for (auto it = epoch_.begin(); it != epoch_.end();) {
    const Accumulator& acc = it->second;
    if (acc.scope != scope) {
      ++it;
      continue;
    }
    // Across processes, a mean weighs every process's values by their batch sizes, as one process's does.
    double total = acc.total, weight = acc.weight;
    if (acc.sync_dist && sync_) {
      total = sync_(total, acc.reduce_fx == "mean" ? "sum" : acc.reduce_fx);
      if (acc.reduce_fx == "mean") weight = sync_(weight, "sum");
    }
    const double value = acc.reduce_fx == "mean" ? total / weight : total;
    const std::string name = acc.suffix ? it->first + "_epoch" : it->first;
    callback_metrics_[it->first] = value;
    if (acc.suffix) callback_metrics_[name] = value;
    if (acc.logger) to_logger[name] = value;
    if (acc.prog_bar) progress_bar_metrics_[name] = value;
    it = epoch_.erase(it);
  }
  return to_logger;
}

void MetricStore::clear_scope(LogScope scope) {
  std::erase_if(epoch_, [&](const auto& kv) { return kv.second.scope == scope; });
}

Json MetricStore::state_dict() const {
  Json epoch = Json::object();
  for (const auto& [name, a] : epoch_)
    epoch[name] = {{"scope", static_cast<int>(a.scope)}, {"reduce_fx", a.reduce_fx}, {"logger", a.logger},
                   {"prog_bar", a.prog_bar}, {"suffix", a.suffix}, {"total", a.total}, {"weight", a.weight},
                   {"sync_dist", a.sync_dist}};
  return {{"epoch", epoch}, {"step_logger", step_logger_}, {"callback_metrics", callback_metrics_},
          {"progress_bar_metrics", progress_bar_metrics_}};
}

void MetricStore::load_state_dict(const Json& j) {
  KILN_CHECK(j.is_object(), "checkpoint: 'metrics' is not an object");
  epoch_.clear();
  for (const auto& [name, a] : j.at("epoch").items())
    epoch_[name] = {static_cast<LogScope>(a.at("scope").get<int>()), a.at("reduce_fx").get<std::string>(),
                    a.at("logger").get<bool>(), a.at("prog_bar").get<bool>(), a.at("suffix").get<bool>(),
                    a.at("total").get<double>(), a.at("weight").get<double>(), a.value("sync_dist", false)};
  // Logged on step but not yet sent: a checkpoint from inside a batch's end sends them on resume.
  step_logger_ = j.value("step_logger", std::map<std::string, double>{});
  callback_metrics_ = j.at("callback_metrics").get<std::map<std::string, double>>();
  progress_bar_metrics_ = j.at("progress_bar_metrics").get<std::map<std::string, double>>();
}

}  // namespace kiln
