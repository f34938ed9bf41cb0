// LearningRateMonitor (see lr_monitor.h). Names follow Lightning's _find_names_from_schedulers and
// _find_names_from_optimizers: an optimizer type seen n > 1 times gets "-<n-1>", several param
// groups get "/pg<i>" (1-based).
#include "train/callbacks/lr_monitor.h"

#include <algorithm>
#include <cstdio>

#include "tensor/error.h"
#include "train/trainer.h"

namespace kiln::callbacks {

namespace {

// One source of names: an optimizer, and the scheduler interval it is logged at ("" when it has
// no scheduler: logged at every interval).
struct NameSource {
  const optim::Optimizer* optimizer;
  std::string interval;
  std::vector<std::string> names;
};

std::vector<NameSource> name_sources(const std::vector<OptimizerConfig>& configs) {
  std::vector<NameSource> sources;
  std::map<std::string, int> seen_types;
  auto add = [&](const optim::Optimizer& opt, std::string interval) {
    const int count = ++seen_types[opt.name()];
    // Appended piece by piece: GCC 12 gives a false -Wrestrict for "literal" + std::string.
    std::string base = "lr-";
    base += opt.name();
    if (count > 1) base.append("-").append(std::to_string(count - 1));
    NameSource source{&opt, std::move(interval), {}};
    const size_t groups = opt.param_groups().size();
    for (size_t i = 0; i < groups; ++i) source.names.push_back(groups > 1 ? base + "/pg" + std::to_string(i + 1) : base);
    sources.push_back(std::move(source));
  };
  for (const OptimizerConfig& config : configs) {
    KILN_CHECK(config.optimizer, "LearningRateMonitor: an optimizer configuration has no optimizer");
    for (const SchedulerConfig& scheduler : config.schedulers) add(*config.optimizer, scheduler.interval);
  }
  for (const OptimizerConfig& config : configs)
    if (config.schedulers.empty()) add(*config.optimizer, "");
  return sources;
}

}  // namespace

LearningRateMonitor::LearningRateMonitor(LearningRateMonitorOptions options) : options_(std::move(options)) {
  const auto& interval = options_.logging_interval;
  KILN_CHECK(!interval || *interval == "step" || *interval == "epoch",
             "LearningRateMonitor: logging_interval should be 'step', 'epoch' or unset, got '", interval.value_or(""),
             "'");
}

std::vector<std::vector<std::string>> LearningRateMonitor::names(const std::vector<OptimizerConfig>& configs) {
  std::vector<std::vector<std::string>> out;
  for (NameSource& source : name_sources(configs)) out.push_back(std::move(source.names));
  return out;
}

Metrics LearningRateMonitor::extract_stats(const std::vector<OptimizerConfig>& configs,
                                           const std::string& interval) const {
  Metrics stats;
  for (const NameSource& source : name_sources(configs)) {
    if (!source.interval.empty() && interval != "any" && source.interval != interval) continue;
    const optim::Optimizer& opt = *source.optimizer;
    const bool use_betas = opt.has_hyper("betas");
    for (size_t i = 0; i < source.names.size(); ++i) {
      const optim::ParamGroup& group = opt.param_groups()[i];
      const std::string& name = source.names[i];
      stats[name] = group.lr;
      if (options_.log_momentum) stats[name + "-momentum"] = use_betas ? group.betas.first : group.momentum;
      if (options_.log_weight_decay) stats[name + "-weight_decay"] = group.weight_decay;
    }
  }
  return stats;
}

void LearningRateMonitor::on_train_start(Trainer& trainer, TrainModule&) {
  KILN_CHECK(!trainer.loggers().empty() || trainer.config().fast_dev_run > 0,
             "LearningRateMonitor: cannot be used with a Trainer that has no logger");
  if (!options_.log_momentum) return;
  const auto& configs = trainer.optimizer_configs();
  const bool some_without = std::any_of(configs.begin(), configs.end(), [](const OptimizerConfig& c) {
    return !c.optimizer->has_hyper("momentum") && !c.optimizer->has_hyper("betas");
  });
  if (some_without)
    std::fprintf(stderr, "warning: LearningRateMonitor: log_momentum is set, but some optimizers do not have "
                         "momentum. This will log a value 0 for the momentum.\n");
}

void LearningRateMonitor::on_train_batch_start(Trainer& trainer, TrainModule&, const data::Batch&, int64_t) {
  // Lightning's should_update_logs, "+ 1" because the step about to run is the one logged.
  const int64_t every = std::max<int64_t>(trainer.config().log_every_n_steps, 1);
  if ((trainer.logging_step() + 1) % every != 0 && !trainer.should_stop) return;
  if (options_.logging_interval == "epoch") return;
  log_stats(trainer, options_.logging_interval ? "any" : "step");
}

void LearningRateMonitor::on_train_epoch_start(Trainer& trainer, TrainModule&) {
  if (options_.logging_interval == "step") return;
  log_stats(trainer, options_.logging_interval ? "any" : "epoch");
}

void LearningRateMonitor::log_stats(Trainer& trainer, const std::string& interval) {
  const Metrics stats = extract_stats(trainer.optimizer_configs(), interval);
  if (stats.empty()) return;
  for (const auto& [name, value] : stats) history_[name].push_back(value);
  for (const auto& logger : trainer.loggers()) logger->log_metrics(stats, trainer.logging_step());
}

}  // namespace kiln::callbacks
