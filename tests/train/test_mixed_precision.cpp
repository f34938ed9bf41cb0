// The Trainer's mixed precisions (train/hardware/mixed_precision.h): bf16-mixed and 16-mixed run
// each step's forward under autocast with f32 master weights; 16-mixed scales the loss, shows the
// optimizer-step hooks and clipping the unscaled gradients, skips a step whose gradients hold inf,
// and saves the scaler in checkpoints, from which a resumed fit continues bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "testing.h"
#include "train/seed.h"
#include "train/hardware/mixed_precision.h"
#include "trainer_fixtures.h"

namespace kt = kiln::testing;
using namespace kiln;
using namespace kiln::test_trainer;

namespace {

// quiet() without a logger: these tests read no logs.
TrainerConfig silent(TrainerConfig c) {
  c = quiet(c);
  c.logger = false;
  return c;
}

// Records the dtypes the forward produced, and the gradients the hooks see.
class DtypeRecorder : public TinyClassifier {
 public:
  DtypeRecorder() : TinyClassifier(0.0) {}
  StepOutput training_step(const data::Batch& batch, int64_t) override {
    Tensor logits = forward(batch[0]);
    logits_dtype = logits.dtype();
    Tensor loss = nn::F::cross_entropy(logits, batch[1]);
    loss_dtype = loss.dtype();
    if (poison_step && trainer().global_step() == *poison_step) loss = loss * std::numeric_limits<double>::infinity();
    return loss;
  }
  StepOutput validation_step(const data::Batch& batch, int64_t) override {
    val_logits_dtype = forward(batch[0]).dtype();
    return {};
  }
  void on_after_backward() override { after_backward = fc1->weight.grad().clone(); }
  void on_before_optimizer_step(optim::Optimizer&) override { before_step = fc1->weight.grad().clone(); }

  DType logits_dtype = DType::f64, loss_dtype = DType::f64, val_logits_dtype = DType::f64;
  std::optional<int64_t> poison_step;
  Tensor after_backward, before_step;
};

// The module's weights after each training batch.
class WeightRecorder : public Callback {
 public:
  std::string name() const override { return "WeightRecorder"; }
  void on_train_batch_end(Trainer&, TrainModule& m, const StepOutput&, const data::Batch&, int64_t) override {
    TensorDict copy;
    for (const auto& [name, p] : m.state_dict()) copy.insert(name, p.clone());
    weights.push_back(copy);
  }
  std::vector<TensorDict> weights;
};

Loaders data_loaders() { return Loaders{.train = make_loader(10, false, 0), .val = make_loader(20, false, 0)}; }

TEST(MixedPrecision, Bf16MixedRunsTheForwardInBf16WithF32MasterWeights) {
  DtypeRecorder module;
  Trainer t(silent({.max_epochs = 1, .precision = "bf16-mixed"}));
  const Tensor before = module.fc1->weight.clone();
  t.fit(module, data_loaders());
  EXPECT_EQ(module.logits_dtype, DType::bf16);     // linear is on autocast's lower-precision list
  EXPECT_EQ(module.loss_dtype, DType::f32);        // cross_entropy on its f32 list
  EXPECT_EQ(module.val_logits_dtype, DType::bf16);  // validation runs under autocast too
  for (const Tensor& p : module.parameters()) EXPECT_EQ(p.dtype(), DType::f32);
  EXPECT_EQ(module.fc1->weight.grad().dtype(), DType::f32);
  EXPECT_FALSE(bitwise_equal(before, module.fc1->weight));
  EXPECT_EQ(t.precision().state_dict(), Json::object());  // bf16 takes no scaler
  // Outside the steps autocast is off again.
  EXPECT_EQ(module.forward(ones({2, 4})).dtype(), DType::f32);
}

TEST(MixedPrecision, F16MixedShowsTheHooksUnscaledGradients) {
  DtypeRecorder module;
  Trainer t(silent({.max_epochs = 1, .precision = "16-mixed"}));
  t.fit(module, Loaders{.train = make_loader(40, false, 0)});
  EXPECT_EQ(module.logits_dtype, DType::f16);
  const auto* mixed = dynamic_cast<const MixedPrecision*>(&t.precision());
  ASSERT_NE(mixed, nullptr);
  ASSERT_NE(mixed->scaler(), nullptr);
  // The backward saw the loss times 2^16 (a power of two: exact), the hooks see it divided back.
  EXPECT_TRUE(bitwise_equal(module.after_backward * (1.0 / 65536.0), module.before_step));
  EXPECT_EQ(mixed->scaler()->get_scale(), 65536.0);
  EXPECT_EQ(t.precision().state_dict().at("scaler").at("_growth_tracker"), 1);
}

TEST(MixedPrecision, AStepWithInfGradientsIsSkippedAndTheScaleHalves) {
  DtypeRecorder module;
  module.poison_step = 2;  // the third optimizer step
  auto record = std::make_shared<WeightRecorder>();
  std::vector<TensorDict>& weights = record->weights;
  TrainerConfig c = silent({.max_epochs = 1, .precision = "16-mixed"});
  c.callbacks = {record};
  Trainer trainer(c);
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0)});
  ASSERT_EQ(weights.size(), 5u);
  for (const auto& [name, p] : weights[2]) EXPECT_TRUE(bitwise_equal(p, weights[1].at(name))) << name;
  for (const auto& [name, p] : weights[3]) EXPECT_FALSE(bitwise_equal(p, weights[2].at(name))) << name;
  EXPECT_EQ(trainer.global_step(), 5);  // a skipped step still counts (Lightning)
  const auto& scaler = *dynamic_cast<const MixedPrecision&>(trainer.precision()).scaler();
  EXPECT_EQ(scaler.get_scale(), 32768.0);
  EXPECT_EQ(scaler.growth_tracker(), 2);
}

// A fit of 4 epochs against 2 epochs, a checkpoint, and 2 more from it in a new Trainer: every
// weight and the scaler match bit for bit, in each of the Trainer's precisions.
TEST(MixedPrecision, ResumeIsBitExactInEveryPrecision) {
  for (const char* precision : {"bf16-mixed", "16-mixed", "32-true", "64-true", "bf16-true", "16-true"}) {
    SCOPED_TRACE(precision);
    const std::string dir = fresh_dir(std::string("mixed_resume_") + precision);
    seed_everything(5);
    TinyClassifier straight;
    Trainer full(silent({.max_epochs = 4, .precision = std::string(precision)}));
    full.fit(straight, data_loaders());

    seed_everything(5);
    TinyClassifier first;
    Trainer part(silent({.max_epochs = 2, .precision = std::string(precision)}));
    part.fit(first, data_loaders());
    part.save_checkpoint(dir + "/half.ckpt");
    TinyClassifier resumed;
    Trainer rest(silent({.max_epochs = 4, .precision = std::string(precision)}));
    rest.fit(resumed, data_loaders(), dir + "/half.ckpt");

    for (const auto& [name, p] : straight.state_dict())
      EXPECT_TRUE(bitwise_equal(p, resumed.state_dict().at(name))) << name;
    EXPECT_EQ(full.precision().state_dict(), rest.precision().state_dict());
    if (std::string(precision) == "16-mixed") {
      EXPECT_EQ(rest.precision().state_dict().at("scaler").at("_growth_tracker"), 16);  // 4 epochs of 4 clean steps
    }
    std::filesystem::remove_all(dir);
  }
}

TEST(MixedPrecision, ManualOptimizationUsesTheScalerPerStep) {
  class Manual : public TinyClassifier {
   public:
    Manual() : TinyClassifier(0.0) { automatic_optimization = false; }
    StepOutput training_step(const data::Batch& batch, int64_t) override {
      TrainOptimizer opt = optimizers()[0];
      opt.zero_grad();
      Tensor loss = nn::F::cross_entropy(forward(batch[0]), batch[1]);
      manual_backward(loss);
      scaled_norm = fc1->weight.grad().abs().amax().item<double>();
      opt.step();
      unscaled_norm = fc1->weight.grad().abs().amax().item<double>();
      return loss;
    }
    double scaled_norm = 0, unscaled_norm = 0;
  } module;
  Trainer t(silent({.max_epochs = 1, .precision = "16-mixed"}));
  t.fit(module, Loaders{.train = make_loader(20, false, 0)});
  EXPECT_EQ(module.scaled_norm, module.unscaled_norm * 65536.0);
  EXPECT_EQ(t.global_step(), 2);
  EXPECT_EQ(dynamic_cast<const MixedPrecision&>(t.precision()).scaler()->growth_tracker(), 2);
}

TEST(MixedPrecision, MisuseIsRefusedUpFront) {
  kt::expect_error([] { MixedPrecision p("bf16-mixed", DeviceType::cpu, amp::GradScalerOptions{}); },
                   {"bf16-mixed", "no loss scaler"});
  kt::expect_error([] { MixedPrecision p("8-mixed", DeviceType::cpu); }, {"'8-mixed'", "bf16-mixed, 16-mixed"});
  kt::expect_error(
      [] { MixedPrecision p("16-mixed", DeviceType::cpu, amp::GradScalerOptions{.init_scale = INFINITY}); },
      {"init_scale"});
  // A 16-mixed checkpoint needs its scaler state back.
  MixedPrecision p("16-mixed", DeviceType::cpu);
  kt::expect_error([&] { p.load_state_dict(Json::object()); }, {"no loss scaler state"});
  EXPECT_EQ(Trainer(silent({.precision = "bf16"})).precision().name(), "bf16-mixed");
  EXPECT_EQ(Trainer(silent({.precision = "16"})).precision().name(), "16-mixed");
}

}  // namespace
