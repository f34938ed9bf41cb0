// Resolution order, as Lightning's connector: plugins (a precision or a checkpoint writer), the
// accelerator ("auto" picks the CPU until the CUDA backend trains, issue 17), its devices, the
// strategy (DDP when there is more than one process), then the precision, checked against what
// the accelerator computes in.
#include "train/hardware/connector.h"

#include <algorithm>

#include "tensor/error.h"
#include "train/hardware/mixed_precision.h"
#include "train/hardware/nearest_names.h"
#include "train/hardware/zero_strategy.h"

namespace kiln {
namespace {

struct PluginChoice {
  std::shared_ptr<Precision> precision;
  std::shared_ptr<CheckpointIO> checkpoint_io;
};

PluginChoice sort_plugins(const std::vector<Plugin>& plugins) {
  PluginChoice out;
  for (const Plugin& plugin : plugins) {
    if (const auto* p = std::get_if<std::shared_ptr<Precision>>(&plugin)) {
      KILN_CHECK(*p, "Trainer(plugins): got a null precision plugin");
      KILN_CHECK(!out.precision, "Received multiple values for precision flags in `plugins`: '", out.precision->name(),
                 "' and '", (*p)->name(), "'");
      out.precision = *p;
    } else {
      const auto& io = std::get<std::shared_ptr<CheckpointIO>>(plugin);
      KILN_CHECK(io, "Trainer(plugins): got a null checkpoint_io plugin");
      KILN_CHECK(!out.checkpoint_io, "Received multiple values for checkpoint_io flags in `plugins`");
      out.checkpoint_io = io;
    }
  }
  return out;
}

std::shared_ptr<Accelerator> resolve_accelerator(const TrainerConfig& c) {
  if (const auto* given = std::get_if<std::shared_ptr<Accelerator>>(&c.accelerator)) {
    KILN_CHECK(*given, "Trainer(accelerator): got a null accelerator");
    return *given;
  }
  const std::string& name = std::get<std::string>(c.accelerator);
  std::shared_ptr<Accelerator> accelerator = make_accelerator(name == "auto" ? "cpu" : name);
  if (!accelerator->is_available()) {
    detail::throw_error("`", name, "` accelerator can not run on your system since the accelerator is not "
                        "available (Kiln built without CUDA, no driver, or no GPU). The following accelerator(s) is "
                        "available and can be passed into `accelerator` argument of `Trainer`: ['cpu'].");
  }
  KILN_CHECK(accelerator->device_type() == DeviceType::cpu, "Trainer: accelerator '", name, "' is not supported by the "
             "Trainer yet (CUDA training arrives with the CUDA backend); use 'cpu' or 'auto'");
  return accelerator;
}

std::shared_ptr<Precision> resolve_precision(const TrainerConfig& c, const PluginChoice& plugins,
                                             const Accelerator& accelerator) {
  KILN_CHECK(!(c.precision && plugins.precision), "Received both `precision='", *c.precision, "'` and `plugins` with "
             "precision '", plugins.precision->name(), "'. Choose one.");
  std::shared_ptr<Precision> precision =
      plugins.precision ? plugins.precision : make_precision(canonical_precision_name(c.precision.value_or("32-true")),
                                                             accelerator);
  for (DType t : precision->compute_dtypes())
    KILN_CHECK(accelerator.supports_dtype(t), "Trainer(accelerator='", accelerator.name(), "', precision='",
               precision->name(), "'): the ", accelerator.name(), " accelerator cannot compute in ", t,
               "; choose another precision (32-true always runs)");
  return precision;
}

}  // namespace

std::shared_ptr<Precision> make_precision(const std::string& name, const Accelerator& accelerator) {
  if (name == "32-true") return std::make_shared<Precision>();
  if (name == "bf16-mixed" || name == "16-mixed")
    return std::make_shared<MixedPrecision>(name, accelerator.device_type());
  return std::make_shared<TruePrecision>(name);
}

std::shared_ptr<Strategy> resolve_strategy(const TrainerConfig& c) {
  const PluginChoice plugins = sort_plugins(c.plugins);
  if (const auto* given = std::get_if<std::shared_ptr<Strategy>>(&c.strategy)) {
    KILN_CHECK(*given, "Trainer(strategy): got a null strategy");
    const bool defaults = std::holds_alternative<std::string>(c.accelerator) &&
                          std::get<std::string>(c.accelerator) == "auto" && c.devices == 1 && !c.precision &&
                          c.plugins.empty();
    KILN_CHECK(defaults, "Trainer: a Strategy object already holds its accelerator, device, precision and "
               "checkpoint_io; leave accelerator, devices, precision and plugins unset");
    return *given;
  }
  std::shared_ptr<Accelerator> accelerator = resolve_accelerator(c);
  const std::vector<Device> devices = accelerator->parse_devices(c.devices);
  const std::string& strategy = std::get<std::string>(c.strategy);
  const std::vector<std::string> names = strategy_names();
  KILN_CHECK(strategy == "auto" || std::find(names.begin(), names.end(), strategy) != names.end(), "You selected an "
             "invalid strategy name: `strategy='", strategy, "'`. Kiln has: auto, ", join_names(names),
             did_you_mean(strategy, names), " (fsdp comes with the rest of the distributed layer)");
  KILN_CHECK(c.num_nodes >= 1, "Trainer(num_nodes=", c.num_nodes, "): num_nodes must be at least 1");
  // Lightning's choice for "auto": DDP as soon as there is more than one process.
  const bool zero = strategy == "zero1" || strategy == "zero2";
  const bool ddp = zero || strategy == "ddp" || (strategy == "auto" && (devices.size() > 1 || c.num_nodes > 1));
  KILN_CHECK(ddp || (devices.size() == 1 && c.num_nodes == 1), "Trainer(devices=", c.devices, ", num_nodes=",
             c.num_nodes, ", strategy='", strategy, "'): ", devices.size() * c.num_nodes, " ", accelerator->name(),
             " processes need a distributed strategy; use strategy = 'ddp' (or 'auto')");
  std::shared_ptr<Precision> precision = resolve_precision(c, plugins, *accelerator);
  KILN_CHECK(!(plugins.checkpoint_io && c.async_checkpointing), "Trainer: async_checkpointing = true and a "
             "checkpoint_io plugin: give one of them (an AsyncCheckpointIO plugin is what async_checkpointing adds)");
  std::shared_ptr<CheckpointIO> io = plugins.checkpoint_io;
  if (!io && c.async_checkpointing) io = std::make_shared<AsyncCheckpointIO>();
  if (!io) io = std::make_shared<NativeCheckpointIO>();
  const DDPOptions processes{.num_processes = static_cast<int>(devices.size()), .num_nodes = c.num_nodes};
  if (zero)
    return std::make_shared<ZeroStrategy>(strategy == "zero1" ? 1 : 2, std::move(accelerator), std::move(precision),
                                          std::move(io), processes);
  if (ddp) return std::make_shared<DDPStrategy>(std::move(accelerator), std::move(precision), std::move(io), processes);
  return std::make_shared<Strategy>(std::move(accelerator), devices.front(), std::move(precision), std::move(io));
}

}  // namespace kiln
