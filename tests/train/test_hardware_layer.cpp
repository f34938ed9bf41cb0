// The Trainer's hardware layer (train/hardware/): resolving accelerator, devices, strategy,
// precision and plugins into one Strategy; Lightning's errors for impossible settings, with the
// nearest valid names; plugins that the loops really go through; the true precisions.
#include <gtest/gtest.h>

#include <filesystem>

#include "testing.h"
#include "train/trainer_fixtures.h"
#include "train/callbacks/model_checkpoint.h"
#include "train/hardware/nearest_names.h"

namespace kiln {
namespace {

namespace kt = kiln::testing;
using namespace kiln::test_trainer;

// quiet() without a logger: these tests read no logs.
TrainerConfig silent(TrainerConfig c) {
  c = quiet(c);
  c.logger = false;
  return c;
}

TEST(HardwareLayer, DefaultsResolveToOneCpuDeviceIn32BitFloats) {
  Trainer t(silent({}));
  EXPECT_EQ(t.strategy().name(), "single_device");
  EXPECT_EQ(t.accelerator().name(), "cpu");
  EXPECT_EQ(t.strategy().root_device(), Device::cpu());
  EXPECT_EQ(t.precision().name(), "32-true");
  EXPECT_EQ(t.precision().param_dtype(), DType::f32);
  EXPECT_NE(dynamic_cast<NativeCheckpointIO*>(&t.strategy().checkpoint_io()), nullptr);
  EXPECT_EQ(t.strategy().world_size(), 1);
  EXPECT_TRUE(t.strategy().is_global_zero());
}

TEST(HardwareLayer, LightningsShortPrecisionNamesResolve) {
  EXPECT_EQ(Trainer(silent({.precision = "32"})).precision().name(), "32-true");
  EXPECT_EQ(Trainer(silent({.precision = "64"})).precision().name(), "64-true");
  EXPECT_EQ(Trainer(silent({.precision = "bf16-true"})).precision().param_dtype(), DType::bf16);
  EXPECT_EQ(Trainer(silent({.precision = "16-true"})).precision().param_dtype(), DType::f16);
  EXPECT_EQ(Trainer(silent({.accelerator = "cpu", .devices = -1})).strategy().root_device(), Device::cpu());
}

TEST(HardwareLayer, UnknownNamesListTheValidOnesAndTheNearest) {
  kt::expect_error([] { Trainer t({.accelerator = "cpuu"}); },
                   {"invalid accelerator name: `accelerator='cpuu'`", "auto, cpu, cuda, gpu", "did you mean 'cpu'"});
  kt::expect_error([] { Trainer t({.precision = "bf16-mix"}); },
                   {"Precision 'bf16-mix' is invalid", "64-true, 32-true, bf16-mixed", "did you mean 'bf16-mixed'"});
  kt::expect_error([] { Trainer t({.precision = "8"}); }, {"Precision '8' is invalid"});
  kt::expect_error([] { Trainer t({.strategy = "single_devic"}); },
                   {"invalid strategy name: `strategy='single_devic'`", "did you mean 'single_device'"});
  kt::expect_error([] { Trainer t({.strategy = "fsdp"}); }, {"strategy='fsdp'", "single_device, ddp, zero1, zero2", "distributed layer"});
}

TEST(HardwareLayer, ImpossibleDeviceSettingsAreRefusedBeforeAnyWork) {
  kt::expect_error([] { Trainer t({.devices = 2, .strategy = "single_device"}); },
                   {"devices=2", "strategy='single_device'", "2 cpu processes need a distributed strategy"});
  kt::expect_error([] { Trainer t({.num_nodes = 0}); }, {"num_nodes=0", "at least 1"});
  kt::expect_error([] { Trainer t({.devices = 0}); }, {"devices=0", "positive number or -1"});
  if (!cuda::is_available())
    kt::expect_error([] { Trainer t({.accelerator = "cuda"}); },
                     {"`cuda` accelerator can not run on your system", "['cpu']"});
}

// An accelerator whose kernels compute in f32 and f64 only: the 16-bit precisions must be refused
// up front, naming both settings.
class NoHalfAccelerator : public CpuAccelerator {
 public:
  bool supports_dtype(DType t) const override { return t == DType::f32 || t == DType::f64; }
};

TEST(HardwareLayer, APrecisionTheAcceleratorCannotRunIsRefused) {
  auto accelerator = std::make_shared<NoHalfAccelerator>();
  kt::expect_error([&] { Trainer t({.accelerator = accelerator, .precision = "bf16-true"}); },
                   {"precision='bf16-true'", "cannot compute in bfloat16", "32-true always runs"});
  kt::expect_error([&] { Trainer t({.accelerator = accelerator, .precision = "16-true"}); },
                   {"cannot compute in float16"});
  kt::expect_error([&] { Trainer t({.accelerator = accelerator, .precision = "16-mixed"}); },
                   {"precision='16-mixed'", "cannot compute in float16"});
  Trainer ok(silent({.accelerator = accelerator, .precision = "64-true"}));
  EXPECT_EQ(&ok.accelerator(), accelerator.get());
}

TEST(HardwareLayer, ConflictingPluginsAreRefused) {
  auto p64 = std::make_shared<TruePrecision>("64-true");
  kt::expect_error([&] { Trainer t({.precision = "32-true", .plugins = {p64}}); },
                   {"Received both `precision='32-true'`", "'64-true'", "Choose one"});
  kt::expect_error([&] { Trainer t({.plugins = {p64, std::make_shared<TruePrecision>("bf16-true")}}); },
                   {"multiple values for precision"});
  auto io = std::make_shared<NativeCheckpointIO>();
  kt::expect_error([&] { Trainer t({.plugins = {io, io}}); }, {"multiple values for checkpoint_io"});
  kt::expect_error([&] { Trainer t({.plugins = {io}, .async_checkpointing = true}); },
                   {"async_checkpointing", "checkpoint_io plugin"});
  kt::expect_error([&] { Trainer t({.plugins = {std::shared_ptr<Precision>()}}); }, {"null precision plugin"});
  auto strategy = std::make_shared<Strategy>(std::make_shared<CpuAccelerator>(), Device::cpu(),
                                             std::make_shared<Precision>(), io);
  kt::expect_error([&] { Trainer t({.strategy = strategy, .precision = "64-true"}); },
                   {"Strategy object already holds"});
  Trainer given(silent({.strategy = strategy}));
  EXPECT_EQ(&given.strategy(), strategy.get());
  Trainer with_plugin(silent({.plugins = {p64}}));
  EXPECT_EQ(&with_plugin.precision(), p64.get());
}

// Counts what the loops ask of the precision: every *_step runs in its forward context, every
// backward and optimizer step goes through it, in Lightning's order.
class CountingPrecision : public Precision {
 public:
  struct Counts {
    int contexts = 0, backwards = 0, before_steps = 0, steps = 0;
  };
  class Scope : public PrecisionScope {
   public:
    explicit Scope(Counts& c) { ++c.contexts; }
  };
  std::unique_ptr<PrecisionScope> forward_context() const override { return std::make_unique<Scope>(counts); }
  void backward(const Tensor& loss) override {
    ++counts.backwards;
    Precision::backward(loss);
  }
  void before_optimizer_step(optim::Optimizer&) override {
    EXPECT_EQ(counts.before_steps, counts.steps) << "before_optimizer_step runs once before each step";
    ++counts.before_steps;
  }
  bool optimizer_step(optim::Optimizer& optimizer) override {
    ++counts.steps;
    return Precision::optimizer_step(optimizer);
  }
  mutable Counts counts;
};

TEST(HardwareLayer, TheLoopsRunEveryStepThroughThePrecisionPlugin) {
  auto precision = std::make_shared<CountingPrecision>();
  TinyClassifier module;
  Trainer t(silent({.max_epochs = 2, .plugins = {precision}, .accumulate_grad_batches = 2, .num_sanity_val_steps = 1}));
  t.fit(module, Loaders{.train = make_loader(8, false, 0), .val = make_loader(10, false, 0)});
  // 5 train batches per epoch (windows of 2, 2, 1 -> 3 steps), 4 val batches per epoch, 1 sanity.
  EXPECT_EQ(precision->counts.backwards, 10);
  EXPECT_EQ(precision->counts.steps, 6);
  EXPECT_EQ(precision->counts.before_steps, 6);
  EXPECT_EQ(precision->counts.contexts, 10 + 8 + 1);
  t.test(module, Loaders{.test = make_loader(20, false, 0)});
  EXPECT_EQ(precision->counts.contexts, 10 + 8 + 1 + 2);
}

// A checkpoint writer that records what it is asked and writes the native format.
class RecordingCheckpointIO : public NativeCheckpointIO {
 public:
  void save_checkpoint(const State& checkpoint, const std::string& path) override {
    saved.push_back(std::filesystem::path(path).filename().string());
    NativeCheckpointIO::save_checkpoint(checkpoint, path);
  }
  void remove_checkpoint(const std::string& path) override {
    removed.push_back(std::filesystem::path(path).filename().string());
    NativeCheckpointIO::remove_checkpoint(path);
  }
  std::vector<std::string> saved, removed;
};

TEST(HardwareLayer, CheckpointsAreWrittenAndRemovedThroughTheCheckpointIOPlugin) {
  const std::string dir = fresh_dir("hw_ckpt_io");
  auto io = std::make_shared<RecordingCheckpointIO>();
  TinyClassifier module;
  TrainerConfig c = silent({.max_epochs = 3, .plugins = {io}});
  c.enable_checkpointing = true;
  c.callbacks = {std::make_shared<ModelCheckpoint>(callbacks::ModelCheckpointOptions{.dirpath = dir})};
  Trainer t(c);
  t.fit(module, Loaders{.train = make_loader(20, false, 0)});
  EXPECT_EQ(io->saved, (std::vector<std::string>{"epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "epoch=2-step=6.ckpt"}));
  EXPECT_EQ(io->removed, (std::vector<std::string>{"epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt"}));
  EXPECT_TRUE(std::filesystem::exists(dir + "/epoch=2-step=6.ckpt"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/epoch=0-step=2.ckpt"));
  std::filesystem::remove_all(dir);
}

// The true precisions hold the module and the batches in their dtype: the parameters take half the
// bytes in bf16-true, and training changes them.
TEST(HardwareLayer, TruePrecisionsConvertModuleAndBatches) {
  for (const char* name : {"64-true", "bf16-true", "16-true"}) {
    SCOPED_TRACE(name);
    TinyClassifier module;
    int64_t bytes32 = 0;
    for (const Tensor& p : module.parameters()) bytes32 += static_cast<int64_t>(p.nbytes());
    const Tensor before = module.fc1->weight.to(DType::f64);
    Trainer t(silent({.max_epochs = 1, .precision = std::string(name)}));
    t.fit(module, Loaders{.train = make_loader(8, false, 0)});
    const DType want = t.precision().param_dtype();
    int64_t bytes = 0;
    for (const Tensor& p : module.parameters()) {
      EXPECT_EQ(p.dtype(), want);
      bytes += static_cast<int64_t>(p.nbytes());
    }
    EXPECT_EQ(bytes * 4, bytes32 * static_cast<int64_t>(dtype_size(want)));
    EXPECT_GT((module.fc1->weight.to(DType::f64) - before).abs().amax().item<double>(), 1e-3);
    const data::Batch batch{{ones({2, 4}), zeros({2}, {.dtype = DType::i64})}};
    const data::Batch converted = t.precision().convert_batch(batch);
    EXPECT_EQ(converted[0].dtype(), want);
    EXPECT_EQ(converted[1].dtype(), DType::i64);  // integer fields stay as they are
  }
}

TEST(HardwareLayer, SingleDeviceCollectivesAreIdentitiesAndStatsAreReal) {
  Trainer t(silent({}));
  const Tensor x = arange(4.0);
  EXPECT_TRUE(bitwise_equal(t.strategy().reduce(x, "sum"), x));
  EXPECT_TRUE(bitwise_equal(t.strategy().broadcast(x), x));
  kt::expect_error([&] { t.strategy().reduce(x, "prod"); }, {"op 'prod'", "mean, sum"});
  const auto stats = t.accelerator().device_stats(Device::cpu());
  EXPECT_GE(stats.at("allocated_bytes"), static_cast<double>(x.nbytes()));
  EXPECT_GT(stats.at("rss_bytes"), 0);
  EXPECT_GT(stats.at("cpu_vm_percent"), 0);
  EXPECT_LE(stats.at("cpu_vm_percent"), 100);
}

TEST(NearestNames, SuggestsCloseNamesOnly) {
  const std::vector<std::string> valid = {"64-true", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true"};
  EXPECT_EQ(nearest_names("bf16-mixd", valid).front(), "bf16-mixed");
  EXPECT_EQ(nearest_names("BF16-TRUE", valid).front(), "bf16-true");
  EXPECT_TRUE(nearest_names("adam", valid).empty());
  EXPECT_EQ(did_you_mean("adam", valid), "");
  EXPECT_EQ(did_you_mean("16-mixe", {"16-mixed"}), "; did you mean '16-mixed'?");
}

}  // namespace
}  // namespace kiln
