// Data parallelism end to end: the same MLP (784-1024-1024-10, AdamW, a global batch of 128, 40
// steps on synthetic Fashion-MNIST-shaped data) fitted by one process, then by 2 processes under
// ddp, zero1 and zero2 (each process on 64 samples a step, started by the Trainer as copies of this
// program). Reports ms per step and, per process, the optimizer state's bytes and the allocator's
// peak during fit. On a 2-core machine two processes of one thread each do the work of one process
// of two threads, so the step-time ratio measures the communication and its overlap, not a speedup.
#include <chrono>
#include <cstdio>

#include "io/data/dataloader.h"
#include "nn/containers.h"
#include "nn/functional.h"
#include "nn/layers/activation.h"
#include "nn/layers/linear.h"
#include "nn/optim/adam.h"
#include "tensor/allocator.h"
#include "tensor/factories.h"
#include "train/hardware/ddp_strategy.h"
#include "train/trainer.h"

namespace {

using namespace kiln;

constexpr int64_t kGlobalBatch = 128, kSteps = 40;

std::shared_ptr<data::DataLoader> synthetic_loader(int64_t batch_size) {
  Generator gen(1);
  Tensor x = randn({kGlobalBatch * kSteps, 784}, {}, &gen);
  Tensor y = randint(0, 10, {kGlobalBatch * kSteps}, {}, &gen);
  auto ds = std::make_shared<data::TensorDataset>(std::vector<Tensor>{x, y});
  return std::make_shared<data::DataLoader>(std::shared_ptr<const data::Dataset>(ds),
                                            data::DataLoaderOptions{.batch_size = batch_size, .shuffle = true, .seed = 3});
}

class Mlp : public TrainModule {
 public:
  Mlp() : TrainModule("Mlp") {
    net = register_module("net", std::make_shared<nn::Sequential>(
                                     std::make_shared<nn::Linear>(784, 1024), std::make_shared<nn::ReLU>(),
                                     std::make_shared<nn::Linear>(1024, 1024), std::make_shared<nn::ReLU>(),
                                     std::make_shared<nn::Linear>(1024, 10)));
  }
  Tensor forward(const Tensor& x) override { return (*net)(x); }
  StepOutput training_step(const data::Batch& b, int64_t) override { return nn::F::cross_entropy(forward(b[0]), b[1]); }
  std::vector<OptimizerConfig> configure_optimizers() override {
    return {{std::make_shared<optim::AdamW>(parameters(), optim::AdamOptions{.lr = 1e-3})}};
  }
  std::shared_ptr<nn::Sequential> net;
};

struct Figures {
  double ms_per_step = 0;
  double state_mib = 0;  // this process's optimizer state
  double peak_mib = 0;   // this process's allocator peak during fit
};

Figures fit(const std::string& strategy, int devices) {
  Mlp model;
  Trainer trainer({.max_epochs = 1, .devices = devices, .strategy = strategy, .num_sanity_val_steps = 0,
                   .enable_checkpointing = false, .enable_progress_bar = false, .enable_model_summary = false,
                   .logger = false, .handle_signals = false});
  auto loader = synthetic_loader(kGlobalBatch / devices);
  Allocator& cpu = allocator_for(Device(DeviceType::cpu, 0));
  cpu.reset_peak();
  const auto t0 = std::chrono::steady_clock::now();
  trainer.fit(model, Loaders{.train = loader});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Figures f{.ms_per_step = 1e3 * seconds / kSteps, .peak_mib = cpu.stats().peak_allocated_bytes / 1048576.0};
  const optim::Optimizer& optimizer = *trainer.optimizer_configs().front().optimizer;
  for (const Tensor& p : model.parameters())
    if (const TensorDict* state = optimizer.state_of(p))
      for (const auto& [name, t] : *state) f.state_mib += static_cast<double>(t.nbytes()) / 1048576.0;
  // The largest per-process figures of the run.
  if (trainer.world_size() > 1) {
    f.state_mib = trainer.strategy().reduce(full({1}, f.state_mib, {.dtype = DType::f64}), "max").item<double>();
    f.peak_mib = trainer.strategy().reduce(full({1}, f.peak_mib, {.dtype = DType::f64}), "max").item<double>();
  }
  return f;
}

}  // namespace

int main() {
  const bool copy = std::getenv("RANK") != nullptr;  // a copy started by the Trainer: it only trains
  Figures single;
  if (!copy) {
    fit("auto", 1);  // warm-up: oneDNN primitives, allocator cache
    single = fit("auto", 1);
  }
  if (!copy) std::printf("%-8s %9s %8s %14s %14s\n", "strategy", "processes", "ms/step", "opt state MiB", "peak MiB/proc");
  if (!copy) std::printf("%-8s %9d %8.2f %14.2f %14.2f\n", "single", 1, single.ms_per_step, single.state_mib, single.peak_mib);
  for (const char* strategy : {"ddp", "zero1", "zero2"}) {
    const Figures f = fit(strategy, 2);
    if (!copy)
      std::printf("%-8s %9d %8.2f %14.2f %14.2f   (x%.2f step time, x%.2f state)\n", strategy, 2, f.ms_per_step,
                  f.state_mib, f.peak_mib, f.ms_per_step / single.ms_per_step, f.state_mib / single.state_mib);
  }
  if (!copy) DDPStrategy::wait_for_peers();
  return 0;
}
