// Kiln's main job (`make demo`): a small CNN trained on Fashion-MNIST with the Trainer — progress
// bar, model summary, validation each epoch, checkpoints and CSV + TensorBoard logs under one run
// folder — then tested on the 10,000 test images. Also the example a Lightning user reads first.
//
//   demo [--epochs N] [--limit-batches N] [--root DIR] [--data DIR] [--resume last|best|PATH] [--help]
#include <kiln/kiln.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <numbers>
#include <optional>
#include <string>

#include "io/data/fashion_mnist.h"
#include "nn/functional.h"
#include "nn/layers/activation.h"
#include "nn/layers/conv.h"
#include "nn/layers/linear.h"
#include "nn/layers/pool.h"
#include "nn/containers.h"
#include "nn/optim/adam.h"
#include "nn/optim/lr_scheduler.h"
#include "train/arg_parser.h"
#include "train/callbacks/model_checkpoint.h"
#include "train/loggers/csv_logger.h"
#include "train/loggers/tensorboard_logger.h"
#include "train/seed.h"
#include "train/trainer.h"

using namespace kiln;

namespace {

// Fashion-MNIST's pixel mean and standard deviation over the training images.
constexpr double kMean = 0.2860, kStd = 0.3530;

class FashionCNN : public TrainModule {
 public:
  explicit FashionCNN(double lr) : TrainModule("FashionCNN"), lr_(lr) {
    net = register_module("net", std::make_shared<nn::Sequential>(
        std::make_shared<nn::Conv2d>(1, 32, 3, nn::Conv2dOptions{.padding = 1}), std::make_shared<nn::ReLU>(),
        std::make_shared<nn::MaxPool2d>(2),
        std::make_shared<nn::Conv2d>(32, 64, 3, nn::Conv2dOptions{.padding = 1}), std::make_shared<nn::ReLU>(),
        std::make_shared<nn::MaxPool2d>(2), std::make_shared<nn::Flatten>(),
        std::make_shared<nn::Linear>(64 * 7 * 7, 128), std::make_shared<nn::ReLU>(),
        std::make_shared<nn::Linear>(128, 10)));
    save_hyperparameters({{"lr", lr}, {"model", "conv32-conv64-fc128"}});
  }

  Tensor forward(const Tensor& x) override { return (*net)(x); }

  StepOutput training_step(const data::Batch& batch, int64_t) override {
    Tensor logits = forward(batch[0]);
    Tensor loss = nn::F::cross_entropy(logits, batch[1]);
    log("train_loss", loss, {.prog_bar = true});
    return loss;
  }
  StepOutput validation_step(const data::Batch& batch, int64_t) override { return evaluate(batch, "val"); }
  StepOutput test_step(const data::Batch& batch, int64_t) override { return evaluate(batch, "test"); }

  // Cosine annealing to 0 over this run's steps, computed from the step count alone (a LambdaLR,
  // not CosineAnnealingLR, whose saved T_max and recursive update would keep the old run's length).
  // So `--resume last --epochs 5` after a 3-epoch run goes on as a 5-epoch run would from that
  // step (the lr rises to 35% of its peak, then anneals to 0 at the new end), and a resume with the
  // same --epochs stays bit-exact.
  std::vector<OptimizerConfig> configure_optimizers() override {
    auto adam = std::make_shared<optim::Adam>(parameters(), optim::AdamOptions{.lr = lr_});
    const int64_t steps = trainer().num_training_batches() * trainer().config().max_epochs.value_or(1);
    auto cosine = std::make_shared<optim::LambdaLR>(*adam, [steps](int64_t step) {
      return (1 + std::cos(std::numbers::pi * static_cast<double>(std::min(step, steps)) / static_cast<double>(steps))) / 2;
    });
    return {{adam, {{.scheduler = cosine, .interval = "step"}}}};
  }

  std::shared_ptr<nn::Sequential> net;

 private:
  Tensor evaluate(const data::Batch& batch, const std::string& stage) {
    Tensor logits = forward(batch[0]);
    Tensor loss = nn::F::cross_entropy(logits, batch[1]);
    // sync_dist: with --devices N each process sees 1/N of the images; the logged value is the whole set's.
    log(stage + "_loss", loss, {.prog_bar = stage == "val", .sync_dist = true});
    log(stage + "_acc", (logits.argmax(1) == batch[1]).to(DType::f32).mean(), {.prog_bar = stage == "val", .sync_dist = true});
    return loss;
  }
  double lr_;
};

// Fashion-MNIST, normalized once up front: 55,000 training images, the last 5,000 for validation,
// and the 10,000 test images.
class FashionMNISTData : public DataModule {
 public:
  FashionMNISTData(std::string root, int64_t batch_size) : root_(std::move(root)), batch_size_(batch_size) {}

  void setup(const std::string& stage) override {
    if (stage == "fit" && !train_) {
      data::FashionMNIST full({.root = root_, .train = true});
      Tensor x = normalized(full.images());
      train_ = std::make_shared<data::TensorDataset>(std::vector<Tensor>{x.narrow(0, 0, 55000), full.labels().narrow(0, 0, 55000)});
      val_ = std::make_shared<data::TensorDataset>(std::vector<Tensor>{x.narrow(0, 55000, 5000), full.labels().narrow(0, 55000, 5000)});
    }
    if (stage == "test" && !test_) {
      data::FashionMNIST full({.root = root_, .train = false});
      test_ = std::make_shared<data::TensorDataset>(std::vector<Tensor>{normalized(full.images()), full.labels()});
    }
  }
  std::shared_ptr<data::DataLoader> train_dataloader() override {
    return std::make_shared<data::DataLoader>(train_, data::DataLoaderOptions{.batch_size = batch_size_, .shuffle = true,
                                                                              .seed = 42, .num_workers = 1});
  }
  std::shared_ptr<data::DataLoader> val_dataloader() override {
    return std::make_shared<data::DataLoader>(val_, data::DataLoaderOptions{.batch_size = 1000});
  }
  std::shared_ptr<data::DataLoader> test_dataloader() override {
    return std::make_shared<data::DataLoader>(test_, data::DataLoaderOptions{.batch_size = 1000});
  }

 private:
  // In place: out-of-place steps would leave three 188 MB temporaries in the allocator's cache.
  static Tensor normalized(const Tensor& images_u8) {
    Tensor x = images_u8.to(DType::f32);
    x.div_(255.0).sub_(kMean).div_(kStd);
    return x;
  }

  std::string root_;
  int64_t batch_size_;
  std::shared_ptr<data::TensorDataset> train_, val_, test_;
};

}  // namespace

int main(int argc, char** argv) {
  int64_t epochs = 3;
  int devices = 1;
  std::optional<int64_t> limit;  // training batches per epoch; empty: all
  std::string root = "runs/demo", data_dir = data::kFashionMNISTRoot, resume, precision = "32-true";
  ArgParser args("demo", "Trains a small CNN on Fashion-MNIST with the Trainer, then tests the best checkpoint.");
  args.option("--epochs", epochs, "N", "epochs to train", 1)
      .option("--limit-batches", limit, "N", "training batches per epoch (default: all)", 1)
      .option("--root", root, "DIR", "where runs, logs and checkpoints go")
      .option("--data", data_dir, "DIR", "the Fashion-MNIST IDX files")
      .option("--resume", resume, "last|best|PATH", "resume from a checkpoint of an earlier run")
      .option("--devices", devices, "N", "processes training together (DDP; each takes batches of 128)", 1)
      .choice("--precision", precision, precision_names(),
              "how numbers are held (bf16-mixed: the forward under bf16 autocast)");
  if (auto code = args.parse(argc, argv)) return *code;
  try {
    seed_everything(42);

    FashionCNN model(2e-3);
    FashionMNISTData data(data_dir, 128);
    auto checkpoint = std::make_shared<ModelCheckpoint>(
        callbacks::ModelCheckpointOptions{.filename = "{epoch}-{val_acc:.4f}", .monitor = "val_acc", .mode = "max", .save_last = true});
    Trainer trainer({.max_epochs = epochs,
                     .devices = devices,
                     .precision = precision,
                     .limit_train_batches = limit ? BatchLimit(*limit) : BatchLimit(1.0),
                     .loggers = {std::make_shared<CSVLogger>(CSVLoggerOptions{.root_dir = root}),
                                 std::make_shared<TensorBoardLogger>(TensorBoardLoggerOptions{.root_dir = root})},
                     .callbacks = {checkpoint},
                     .default_root_dir = root});
    trainer.fit(model, data, resume);
    if (trainer.interrupted()) return 130;
    const auto results = trainer.test(model, data, "best");
    if (!trainer.is_global_zero()) return 0;
    std::printf("\ntest accuracy %.2f%% (loss %.4f) on 10,000 images, best checkpoint %s\n",
                100.0 * results.at("test_acc"), results.at("test_loss"), trainer.best_model_path().c_str());
    std::printf("logs: %s (metrics.csv, hparams.yaml, TensorBoard events)\n", trainer.log_dir().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "demo: %s\n", e.what());
    return 1;
  }
}
