// Trainer::fit of the demo CNN on the real Fashion-MNIST (issue 5), set up as
// bench/fit_cnn_lightning.py sets up Lightning: Adam (lr 2e-3), batch 128, shuffled, 60,000
// training images, no validation, checkpoint, logger, progress bar or model summary, loader
// without workers. Prints each epoch's wall time, the time from process start to the first
// training step, and peak RSS, as `EPOCH ...` and `RESULT bench=fit_cnn side=kiln ...` lines.
//
//   bench_fit_cnn [--epochs N] [--limit-batches N|-1] [--threads N] [--data DIR] [--help]
//
// Process start is KILN_BENCH_T0 (Unix seconds, set by bench/vs_torch.py just before launching),
// else the kernel's start time of this process (/proc/self/stat, 10 ms resolution).
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "io/data/dataloader.h"
#include "io/data/fashion_mnist.h"
#include "nn/containers.h"
#include "nn/functional.h"
#include "nn/layers/activation.h"
#include "nn/layers/conv.h"
#include "nn/layers/linear.h"
#include "nn/layers/pool.h"
#include "nn/optim/adam.h"
#include "tensor/cpu_capability.h"
#include "tensor/error.h"
#include "tensor/parallel.h"
#include "train/arg_parser.h"
#include "train/callback.h"
#include "train/seed.h"
#include "train/trainer.h"

namespace {

using namespace kiln;

// Fashion-MNIST's pixel mean and standard deviation over the training images (as the demo).
constexpr double kMean = 0.2860, kStd = 0.3530;

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The kernel's record of when this process started, in Unix seconds: field 22 of /proc/self/stat
// (clock ticks after boot) against /proc/uptime, both counted from boot (/proc/stat's btime would
// add up to 1 s of rounding).
double process_start_from_proc() {
  std::ifstream stat_file("/proc/self/stat");
  std::string line;
  std::getline(stat_file, line);
  const size_t close_paren = line.rfind(')');  // the command name may hold spaces
  KILN_CHECK(close_paren != std::string::npos, "bench_fit_cnn: cannot parse /proc/self/stat: '", line, "'");
  std::istringstream fields(line.substr(close_paren + 1));
  std::string field;
  for (int i = 3; i <= 22; ++i) fields >> field;  // fields 3.. follow "pid (comm)"
  KILN_CHECK(static_cast<bool>(fields), "bench_fit_cnn: /proc/self/stat has fewer than 22 fields: '", line, "'");
  const double started_after_boot = std::stod(field) / static_cast<double>(sysconf(_SC_CLK_TCK));
  double uptime = -1;
  std::ifstream uptime_file("/proc/uptime");
  uptime_file >> uptime;
  KILN_CHECK(uptime > 0, "bench_fit_cnn: cannot read /proc/uptime");
  return unix_now() - (uptime - started_after_boot);
}

struct ProcessStart {
  double unix_seconds;
  const char* source;  // "env" or "proc"
};

ProcessStart process_start() {
  if (const char* env = std::getenv("KILN_BENCH_T0")) {
    char* end = nullptr;
    const double t0 = std::strtod(env, &end);
    KILN_CHECK(end != env && *end == '\0' && t0 > 0, "bench_fit_cnn: KILN_BENCH_T0 must be Unix seconds, got '", env,
               "'");
    return {t0, "env"};
  }
  return {process_start_from_proc(), "proc"};
}

class FashionCNN : public TrainModule {
 public:
  FashionCNN() : TrainModule("FashionCNN") {
    net = register_module("net", std::make_shared<nn::Sequential>(
        std::make_shared<nn::Conv2d>(1, 32, 3, nn::Conv2dOptions{.padding = 1}), std::make_shared<nn::ReLU>(),
        std::make_shared<nn::MaxPool2d>(2),
        std::make_shared<nn::Conv2d>(32, 64, 3, nn::Conv2dOptions{.padding = 1}), std::make_shared<nn::ReLU>(),
        std::make_shared<nn::MaxPool2d>(2), std::make_shared<nn::Flatten>(),
        std::make_shared<nn::Linear>(64 * 7 * 7, 128), std::make_shared<nn::ReLU>(),
        std::make_shared<nn::Linear>(128, 10)));
  }
  Tensor forward(const Tensor& x) override { return (*net)(x); }
  StepOutput training_step(const data::Batch& batch, int64_t) override {
    Tensor loss = nn::F::cross_entropy(forward(batch[0]), batch[1]);
    last_loss = loss.detach();
    return loss;
  }
  std::vector<OptimizerConfig> configure_optimizers() override {
    return {{std::make_shared<optim::Adam>(parameters(), optim::AdamOptions{.lr = 2e-3})}};
  }

  std::shared_ptr<nn::Sequential> net;
  Tensor last_loss;  // detached, read once after fit
};

// Reads the clocks at the hooks Lightning's side uses (fit_cnn_lightning.py's FitTimer).
class FitTimer : public Callback {
 public:
  explicit FitTimer(double process_start) : process_start_(process_start) {}
  std::string name() const override { return "FitTimer"; }

  void on_train_epoch_start(Trainer&, TrainModule&) override {
    epoch_start_ = std::chrono::steady_clock::now();
    batches_in_epoch_ = 0;
  }
  void on_train_batch_start(Trainer&, TrainModule&, const data::Batch&, int64_t) override {
    if (start_to_first_step < 0) start_to_first_step = unix_now() - process_start_;
    ++batches_in_epoch_;
  }
  void on_train_epoch_end(Trainer&, TrainModule&) override {
    epoch_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start_).count());
    epoch_batches.push_back(batches_in_epoch_);
  }

  double start_to_first_step = -1;
  std::vector<double> epoch_seconds;
  std::vector<int64_t> epoch_batches;

 private:
  double process_start_;
  std::chrono::steady_clock::time_point epoch_start_;
  int64_t batches_in_epoch_ = 0;
};

struct Options {
  int64_t epochs = 1;
  int64_t limit_batches = -1;  // per epoch; -1: all
  int threads = 2;
  std::string data_dir = data::kFashionMNISTRoot;
};

// Returns the exit code when the program should stop here (--help, or a bad flag).
std::optional<int> parse(int argc, char** argv, Options& o) {
  ArgParser args("bench_fit_cnn", "Trainer.fit of the demo CNN on Fashion-MNIST, timed (see bench/README.md).");
  args.option("--epochs", o.epochs, "N", "epochs to fit", 1)
      .option("--limit-batches", "N|-1", "training batches per epoch; -1: all (default)",
              [&o](const std::string& v) {
                o.limit_batches = v == "-1" ? -1 : ArgParser::parse_integer("--limit-batches", v, 1);
              })
      .option("--threads", o.threads, "N", "compute threads", 1)
      .option("--data", o.data_dir, "DIR", "the Fashion-MNIST IDX files")
      .ignore_prefix("--benchmark_");
  return args.parse(argc, argv);
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

void fit(const Options& options, const ProcessStart& start) {
  set_num_threads(options.threads);
  seed_everything(42);
  data::FashionMNIST full({.root = options.data_dir, .train = true});
  Tensor images = full.images().to(DType::f32);
  images.div_(255.0).sub_(kMean).div_(kStd);  // in place, as fit_cnn_lightning.py does it
  auto dataset = std::make_shared<data::TensorDataset>(std::vector<Tensor>{images, full.labels()});
  auto loader = std::make_shared<data::DataLoader>(
      dataset, data::DataLoaderOptions{.batch_size = 128, .shuffle = true, .seed = 42, .num_workers = 0});

  FashionCNN model;
  auto timer = std::make_shared<FitTimer>(start.unix_seconds);
  const BatchLimit limit = options.limit_batches < 0 ? BatchLimit(1.0) : BatchLimit(options.limit_batches);
  Trainer trainer({.max_epochs = options.epochs,
                   .num_sanity_val_steps = 0,
                   .limit_train_batches = limit,
                   .enable_checkpointing = false,
                   .enable_progress_bar = false,
                   .enable_model_summary = false,
                   .logger = false,
                   .callbacks = {timer}});
  trainer.fit(model, Loaders{.train = loader});

  KILN_CHECK(!timer->epoch_seconds.empty(), "bench_fit_cnn: fit ran no epoch");
  double total = 0;
  for (size_t e = 0; e < timer->epoch_seconds.size(); ++e) {
    std::printf("EPOCH bench=fit_cnn side=kiln epoch=%zu seconds=%.4f batches=%lld\n", e, timer->epoch_seconds[e],
                static_cast<long long>(timer->epoch_batches[e]));
    total += timer->epoch_seconds[e];
  }
  const double loss = model.last_loss.item<double>();
  std::printf("RESULT bench=fit_cnn side=kiln epoch_s=%.4f first_step_s=%.4f peak_rss_mib=%.1f epochs=%zu "
              "batches_per_epoch=%lld threads=%d start_clock=%s loss=%.5f cpu_level=%s\n",
              total / static_cast<double>(timer->epoch_seconds.size()), timer->start_to_first_step, peak_rss_mib(),
              timer->epoch_seconds.size(), static_cast<long long>(timer->epoch_batches[0]), get_num_threads(),
              start.source, loss, cpu_capability_name(cpu_capability()).data());
  std::fflush(stdout);
  KILN_CHECK(std::isfinite(loss), "bench_fit_cnn: the loss is ", loss, " at the end of fit");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const ProcessStart start = process_start();  // read first: a bad KILN_BENCH_T0 fails before any work
    Options options;
    if (auto code = parse(argc, argv, options)) return *code;
    fit(options, start);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
