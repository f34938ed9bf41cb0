// Shared pieces of the Trainer tests: a tiny classifier with dropout, seeded data, and a logger
// that records what it receives.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "io/data/dataloader.h"
#include "nn/functional.h"
#include "nn/layers/activation.h"
#include "nn/layers/linear.h"
#include "nn/optim/sgd.h"
#include "tensor/factories.h"
#include "train/trainer.h"

namespace kiln::test_trainer {

// A fresh, empty folder under the temp dir, named after the test and this process (test binaries
// run in parallel).
inline std::string fresh_dir(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("kiln_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// A Trainer that prints nothing, writes no checkpoints and leaves the signal handlers alone.
inline TrainerConfig quiet(TrainerConfig c) {
  c.enable_progress_bar = false;
  c.enable_model_summary = false;
  c.enable_checkpointing = false;
  c.handle_signals = false;
  return c;
}

// 40 samples of 4 features, 3 classes; fixed by the seed.
inline std::shared_ptr<data::TensorDataset> make_dataset(int64_t n = 40, uint64_t seed = 7) {
  Generator gen(seed);
  Tensor x = randn({n, 4}, {}, &gen);
  Tensor y = randint(0, 3, {n}, {}, &gen);
  return std::make_shared<data::TensorDataset>(std::vector<Tensor>{x, y});
}

inline std::shared_ptr<data::DataLoader> make_loader(int64_t batch_size, bool shuffle, int workers, uint64_t seed = 1,
                                                     int64_t n = 40) {
  return std::make_shared<data::DataLoader>(std::shared_ptr<const data::Dataset>(make_dataset(n)),
                                            data::DataLoaderOptions{.batch_size = batch_size, .shuffle = shuffle,
                                                                    .seed = seed, .num_workers = workers});
}

class TinyClassifier : public TrainModule {
 public:
  explicit TinyClassifier(double dropout = 0.2, double lr = 0.1) : TrainModule("TinyClassifier"), lr_(lr) {
    Generator gen(3);
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(4, 8));
    fc1->reset_parameters(&gen);
    drop = register_module("drop", std::make_shared<nn::Dropout>(dropout));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(8, 3));
    fc2->reset_parameters(&gen);
    save_hyperparameters({{"dropout", dropout}, {"lr", lr}});
  }
  Tensor forward(const Tensor& x) override { return (*fc2)((*drop)((*fc1)(x).relu())); }
  StepOutput training_step(const data::Batch& batch, int64_t) override {
    Tensor loss = nn::F::cross_entropy(forward(batch[0]), batch[1]);
    log("train_loss", loss, {.prog_bar = true, .on_step = true, .on_epoch = true});
    return loss;
  }
  StepOutput validation_step(const data::Batch& batch, int64_t) override {
    Tensor logits = forward(batch[0]);
    Tensor loss = nn::F::cross_entropy(logits, batch[1]);
    log("val_loss", loss);
    log("val_acc", (logits.argmax(1) == batch[1]).to(DType::f32).mean());
    return loss;
  }
  StepOutput test_step(const data::Batch& batch, int64_t) override {
    Tensor loss = nn::F::cross_entropy(forward(batch[0]), batch[1]);
    log("test_loss", loss);
    return loss;
  }
  std::vector<OptimizerConfig> configure_optimizers() override {
    return {{std::make_shared<optim::SGD>(parameters(), optim::SGDOptions{.lr = lr_, .momentum = 0.9})}};
  }

  std::shared_ptr<nn::Linear> fc1, fc2;
  std::shared_ptr<nn::Dropout> drop;

 private:
  double lr_;
};

class RecordingLogger : public Logger {
 public:
  std::string name() const override { return "recording"; }
  std::string version() const override { return "0"; }
  std::string log_dir() const override { return dir; }
  void log_hyperparams(const Json& params) override { hparams = params; }
  void log_metrics(const std::map<std::string, double>& metrics, int64_t step) override {
    rows.push_back({step, metrics});
  }
  void save() override {}
  void finalize(const std::string& s) override { status = s; }

  std::string dir = ".";
  Json hparams;
  std::vector<std::pair<int64_t, std::map<std::string, double>>> rows;
  std::string status;
};

inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.nbytes()) == 0;
}

}  // namespace kiln::test_trainer
