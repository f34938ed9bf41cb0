// DataLoader throughput on Fashion-MNIST (Debian's dataset-fashion-mnist): batches of 128 per
// second with 0, 1 and 2 worker threads, for the demo's pipelines (normalize; random crop + flip +
// normalize), and the one-off cost of decoding the training split. The goal is that loading is
// never the bottleneck of the demo's training step. Counters: batches/s and samples/s.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <memory>

#include "io/data/dataloader.h"
#include "io/data/fashion_mnist.h"
#include "io/data/transforms.h"

namespace {

using namespace kiln::data;

constexpr int64_t kBatch = 128;
constexpr double kMean = 0.2860, kStd = 0.3530;  // of Fashion-MNIST's training pixels in [0, 1]

bool have_data() {
  return std::filesystem::exists(std::string(kFashionMNISTRoot) + "/train-images-idx3-ubyte.gz");
}

// Decoded once per process and shared by every benchmark (copies share the pixels).
const FashionMNIST& train_set() {
  static const FashionMNIST data{FashionMNISTOptions{}};
  return data;
}

// Pulls batches endlessly, starting a new epoch when one ends, so every timed step is one batch.
void run_loader(benchmark::State& state, const TransformedDataset& dataset) {
  DataLoader loader(dataset, {.batch_size = kBatch, .shuffle = true, .seed = 0, .drop_last = true,
                              .num_workers = static_cast<int>(state.range(0))});
  auto it = loader.begin();
  for (auto _ : state) {
    if (it == loader.end()) it = loader.begin();
    benchmark::DoNotOptimize((*it)[0].data_ptr());
    ++it;
  }
  state.counters["batches/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["samples/s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * kBatch), benchmark::Counter::kIsRate);
}

void fashion_mnist_decode(benchmark::State& state) {
  if (!have_data()) return state.SkipWithError("dataset-fashion-mnist is not installed");
  for (auto _ : state) {
    FashionMNIST data({.dtype = kiln::DType::u8});
    benchmark::DoNotOptimize(data.images().data_ptr());
  }
}

void loader_normalize(benchmark::State& state) {
  if (!have_data()) return state.SkipWithError("dataset-fashion-mnist is not installed");
  run_loader(state, TransformedDataset(train_set(), normalize({kMean}, {kStd})));
}

void loader_crop_flip_normalize(benchmark::State& state) {
  if (!have_data()) return state.SkipWithError("dataset-fashion-mnist is not installed");
  run_loader(state, TransformedDataset(train_set(),
                                       compose({random_crop(28, 28, 2), random_horizontal_flip(),
                                                normalize({kMean}, {kStd})}),
                                       0));
}

}  // namespace

BENCHMARK(fashion_mnist_decode)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(loader_normalize)->ArgName("workers")->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(loader_crop_flip_normalize)->ArgName("workers")->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_MAIN();
