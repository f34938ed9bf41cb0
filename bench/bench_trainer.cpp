// Trainer overhead: the same MLP (784-512-512-10, SGD momentum, batch 128) on the same synthetic
// Fashion-MNIST-shaped data, trained by Trainer::fit and by a hand-written loop, one epoch each,
// interleaved. Reports ms per step for both and the ratio (goal: Trainer at most 3% slower).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>

#include "io/data/dataloader.h"
#include "nn/containers.h"
#include "nn/functional.h"
#include "nn/layers/activation.h"
#include "nn/layers/linear.h"
#include "nn/optim/sgd.h"
#include "tensor/factories.h"
#include "train/trainer.h"

namespace {

using namespace kiln;

constexpr int64_t kBatch = 128, kBatches = 60;

std::shared_ptr<data::DataLoader> synthetic_loader() {
  Generator gen(1);
  Tensor x = randn({kBatch * kBatches, 784}, {}, &gen);
  Tensor y = randint(0, 10, {kBatch * kBatches}, {}, &gen);
  auto ds = std::make_shared<data::TensorDataset>(std::vector<Tensor>{x, y});
  return std::make_shared<data::DataLoader>(std::shared_ptr<const data::Dataset>(ds),
                                            data::DataLoaderOptions{.batch_size = kBatch, .shuffle = true, .seed = 3});
}

class Mlp : public TrainModule {
 public:
  Mlp() : TrainModule("Mlp") {
    net = register_module("net", std::make_shared<nn::Sequential>(
                                     std::make_shared<nn::Linear>(784, 512), std::make_shared<nn::ReLU>(),
                                     std::make_shared<nn::Linear>(512, 512), std::make_shared<nn::ReLU>(),
                                     std::make_shared<nn::Linear>(512, 10)));
  }
  Tensor forward(const Tensor& x) override { return (*net)(x); }
  StepOutput training_step(const data::Batch& b, int64_t) override {
    Tensor loss = nn::F::cross_entropy(forward(b[0]), b[1]);
    log("loss", loss);
    return loss;
  }
  std::vector<OptimizerConfig> configure_optimizers() override {
    return {{std::make_shared<optim::SGD>(parameters(), optim::SGDOptions{.lr = 0.01, .momentum = 0.9})}};
  }
  std::shared_ptr<nn::Sequential> net;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double trainer_epoch(data::DataLoader& loader) {
  Mlp model;
  Trainer trainer({.max_epochs = 1, .num_sanity_val_steps = 0, .enable_checkpointing = false,
                   .enable_progress_bar = false, .enable_model_summary = false, .logger = false,
                   .handle_signals = false});
  auto shared = std::shared_ptr<data::DataLoader>(&loader, [](data::DataLoader*) {});
  const auto t0 = std::chrono::steady_clock::now();
  trainer.fit(model, Loaders{.train = shared});
  return seconds_since(t0);
}

double hand_epoch(data::DataLoader& loader) {
  Mlp model;
  optim::SGD opt(model.parameters(), {.lr = 0.01, .momentum = 0.9});
  const auto t0 = std::chrono::steady_clock::now();
  for (data::Batch& b : loader) {
    Tensor loss = nn::F::cross_entropy(model.forward(b[0]), b[1]);
    benchmark::DoNotOptimize(loss.detach().item<double>());  // what log("loss", loss) reads
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  return seconds_since(t0);
}

void BM_TrainerOverhead(benchmark::State& state) {
  auto loader = synthetic_loader();
  double best_trainer = 1e30, best_hand = 1e30;
  for (auto _ : state) {
    best_hand = std::min(best_hand, hand_epoch(*loader));
    best_trainer = std::min(best_trainer, trainer_epoch(*loader));
  }
  state.counters["hand_ms_per_step"] = 1e3 * best_hand / kBatches;
  state.counters["trainer_ms_per_step"] = 1e3 * best_trainer / kBatches;
  state.counters["trainer_over_hand"] = best_trainer / best_hand;
}
BENCHMARK(BM_TrainerOverhead)->Iterations(5)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
