// What the Trainer does differently when a run has several processes (DDP): only global rank 0
// writes logs and shows progress, data is prepared once per node, each process reads its share of
// every loader, and all processes agree on the log folder. With one process each of these is the
// single-process behaviour.
#include "io/data/dataloader.h"
#include "tensor/error.h"
#include "tensor/factories.h"
#include "train/train_module.h"
#include "train/trainer.h"

namespace kiln {
namespace {

MetricSync sync_through(std::shared_ptr<Strategy> strategy) {
  return [strategy = std::move(strategy)](double value, const std::string& op) {
    return strategy->reduce(full({1}, value, {.dtype = DType::f64}), op).item<double>();
  };
}

}  // namespace

void Trainer::setup_processes() {
  Strategy& strategy = *plan_.strategy;
  strategy.setup_environment();
  if (strategy.world_size() == 1) return;
  metrics_.set_sync(sync_through(plan_.strategy));
  if (shared_log_dir_) return;
  // Lightning broadcasts rank 0's folder: the other ranks' loggers are never called, and a
  // version folder found by scanning could differ between processes.
  shared_log_dir_ = strategy.broadcast_string(strategy.is_global_zero() ? log_dir() : std::string());
}

void Trainer::prepare_data(DataModule& data) {
  if (plan_.strategy->is_local_zero()) data.prepare_data();
  plan_.strategy->barrier("prepare_data");
}

void Trainer::reset_metrics() {
  metrics_ = {};
  if (plan_.strategy->world_size() > 1) metrics_.set_sync(sync_through(plan_.strategy));
}

const std::vector<std::shared_ptr<Logger>>& Trainer::rank_zero_loggers() const {
  static const std::vector<std::shared_ptr<Logger>> none;
  return plan_.strategy->is_global_zero() ? loggers_ : none;
}

std::string Trainer::log_dir() const {
  if (shared_log_dir_) return *shared_log_dir_;
  return loggers_.empty() ? config_.default_root_dir : loggers_.front()->log_dir();
}

// As Lightning's use_distributed_sampler: the loader's order (shuffled with its seed, or in order)
// split across the processes, every process getting the same number of batches (the last ones
// padded by repeating from the start), so their collectives stay in step.
std::shared_ptr<data::DataLoader> Trainer::distributed_loader(std::shared_ptr<data::DataLoader> loader,
                                                              const char* which) const {
  const Strategy& strategy = *plan_.strategy;
  if (!loader || strategy.world_size() == 1 || !config_.use_distributed_sampler) return loader;
  const data::DataLoaderOptions& options = loader->options();
  const auto& sampler = options.sampler;
  if (sampler && dynamic_cast<const data::DistributedSampler*>(sampler.get())) return loader;
  std::shared_ptr<const data::Dataset> dataset = loader->dataset();
  KILN_CHECK(dataset, "Trainer: the ", which, " loader reads an IterableDataset, which Kiln cannot split across ",
             strategy.world_size(), " processes; have each process stream its own part and set "
             "use_distributed_sampler = false");
  const bool random = sampler ? dynamic_cast<const data::RandomSampler*>(sampler.get()) != nullptr : options.shuffle;
  KILN_CHECK(!sampler || random || dynamic_cast<const data::SequentialSampler*>(sampler.get()), "Trainer: the ",
             which, " loader has a sampler of its own, which Kiln cannot split across processes; give it a "
             "DistributedSampler (rank ", strategy.global_rank(), " of ", strategy.world_size(),
             ") or set use_distributed_sampler = false");
  const uint64_t seed = sampler && random ? static_cast<const data::RandomSampler&>(*sampler).seed() : options.seed;
  data::DataLoaderOptions split = options;
  split.shuffle = false;
  split.sampler = std::make_shared<data::DistributedSampler>(data::DistributedSamplerOptions{
      .dataset_size = dataset->size(),
      .rank = strategy.global_rank(),
      .world_size = strategy.world_size(),
      .shuffle = random,
      .seed = seed});
  return std::make_shared<data::DataLoader>(std::move(dataset), std::move(split));
}

}  // namespace kiln
