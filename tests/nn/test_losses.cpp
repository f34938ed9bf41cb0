// Every loss of nn::functional against PyTorch (tests/fixtures/nn/losses.txt) with each of its
// options: value and the gradient of the input (for sum(out * gy)) within 1e-5 relative. Then f64
// gradchecks and error messages.
#include <gtest/gtest.h>

#include <functional>

#include "autograd/gradcheck.h"
#include "nn/functional.h"
#include "nn_fixture.h"

namespace kt = kiln::testing;
using namespace kiln;
namespace F = kiln::nn::functional;
using F::Reduction;

namespace {

const kt::NnFixture& fixture() {
  static const kt::NnFixture fx("losses.txt");
  return fx;
}

using LossFn = std::function<Tensor(const Tensor& input, const Tensor& target, const Tensor& weight)>;

void check_loss(const std::string& name, const LossFn& loss, const kt::NnFixture& fx = fixture()) {
  SCOPED_TRACE(name);
  Tensor input = fx[name + ".input"].requires_grad_();
  const Tensor weight = fx.has(name + ".weight") ? fx[name + ".weight"] : Tensor();
  Tensor out = loss(input, fx[name + ".target"], weight);
  kt::expect_matches(out, fx[name + ".out"], "loss");
  out.backward(fx[name + ".gy"]);
  kt::expect_matches(input.grad(), fx[name + ".grad"], "grad of input");
}

const std::vector<std::pair<std::string, Reduction>> kReductions = {
    {"mean", Reduction::mean}, {"sum", Reduction::sum}, {"none", Reduction::none}};

TEST(Losses, CrossEntropyWithClassIndices) {
  for (const auto& [suffix, red] : kReductions) {
    check_loss("ce_" + suffix, [red](const Tensor& x, const Tensor& t, const Tensor&) {
      return F::cross_entropy(x, t, {.reduction = red});
    });
    check_loss("ce_weight_ignore_smooth_" + suffix, [red](const Tensor& x, const Tensor& t, const Tensor& w) {
      return F::cross_entropy(x, t, {.weight = w, .reduction = red, .label_smoothing = 0.2});
    });
  }
  check_loss("ce_weight",
             [](const Tensor& x, const Tensor& t, const Tensor& w) { return F::cross_entropy(x, t, {.weight = w}); });
  check_loss("ce_ignore", [](const Tensor& x, const Tensor& t, const Tensor&) {
    return F::cross_entropy(x, t, {.ignore_index = 7});
  });
  check_loss("ce_smooth", [](const Tensor& x, const Tensor& t, const Tensor&) {
    return F::cross_entropy(x, t, {.label_smoothing = 0.1});
  });
  check_loss("ce_3d", [](const Tensor& x, const Tensor& t, const Tensor&) { return F::cross_entropy(x, t); });
  check_loss("ce_unbatched", [](const Tensor& x, const Tensor& t, const Tensor&) { return F::cross_entropy(x, t); });
}

TEST(Losses, CrossEntropyWithProbabilities) {
  check_loss("ce_probs", [](const Tensor& x, const Tensor& t, const Tensor&) { return F::cross_entropy(x, t); });
  check_loss("ce_probs_weight_smooth_sum", [](const Tensor& x, const Tensor& t, const Tensor& w) {
    return F::cross_entropy(x, t, {.weight = w, .reduction = Reduction::sum, .label_smoothing = 0.3});
  });
}

TEST(Losses, NllLoss) {
  check_loss("nll_weight_ignore",
             [](const Tensor& x, const Tensor& t, const Tensor& w) { return F::nll_loss(x, t, {.weight = w}); });
  check_loss("nll_none", [](const Tensor& x, const Tensor& t, const Tensor&) {
    return F::nll_loss(x, t, {.reduction = Reduction::none});
  });
}

TEST(Losses, RegressionLosses) {
  for (const auto& [suffix, red] : kReductions) {
    check_loss("mse_" + suffix,
               [red](const Tensor& x, const Tensor& t, const Tensor&) { return F::mse_loss(x, t, {red}); });
    check_loss("l1_" + suffix,
               [red](const Tensor& x, const Tensor& t, const Tensor&) { return F::l1_loss(x, t, {red}); });
  }
  check_loss("smooth_l1", [](const Tensor& x, const Tensor& t, const Tensor&) { return F::smooth_l1_loss(x, t); });
  check_loss("smooth_l1_beta", [](const Tensor& x, const Tensor& t, const Tensor&) {
    return F::smooth_l1_loss(x, t, {.reduction = Reduction::sum, .beta = 0.5});
  });
  check_loss("smooth_l1_beta0", [](const Tensor& x, const Tensor& t, const Tensor&) {
    return F::smooth_l1_loss(x, t, {.beta = 0.0});
  });
}

TEST(Losses, BinaryCrossEntropyWithLogits) {
  check_loss("bce_logits",
             [](const Tensor& x, const Tensor& t, const Tensor&) { return F::binary_cross_entropy_with_logits(x, t); });
  const Tensor pos_weight = fixture()["bce_logits_pos_weight.pos_weight"];
  check_loss("bce_logits_pos_weight", [&](const Tensor& x, const Tensor& t, const Tensor&) {
    return F::binary_cross_entropy_with_logits(x, t, {.pos_weight = pos_weight});
  });
  check_loss("bce_logits_weight_none", [](const Tensor& x, const Tensor& t, const Tensor& w) {
    return F::binary_cross_entropy_with_logits(x, t, {.weight = w, .reduction = Reduction::none});
  });
}

TEST(Losses, KlDiv) {
  const std::vector<std::pair<std::string, Reduction>> reductions = {{"batchmean", Reduction::batchmean},
                                                                     {"mean", Reduction::mean},
                                                                     {"sum", Reduction::sum},
                                                                     {"none", Reduction::none}};
  for (const auto& [suffix, red] : reductions)
    check_loss("kl_" + suffix, [red](const Tensor& x, const Tensor& t, const Tensor&) {
      return F::kl_div(x, t, {.reduction = red});
    });
  check_loss("kl_log_target", [](const Tensor& x, const Tensor& t, const Tensor&) {
    return F::kl_div(x, t, {.reduction = Reduction::batchmean, .log_target = true});
  });
}

TEST(Losses, EveryTargetIgnoredGivesNanMeanLikeTorch) {
  const Tensor logits = zeros({2, 3});
  const Tensor target = tensor(std::vector<int64_t>{-100, -100});
  EXPECT_TRUE(std::isnan(F::cross_entropy(logits, target).item<double>()));
  EXPECT_EQ(F::cross_entropy(logits, target, {.reduction = Reduction::sum}).item<double>(), 0.0);
}

// Means whose every target is ignore_index (tests/fixtures/nn/edges.txt): torch's loss is 0/0 = nan
// and its gradient 0, not nan, on the fused (N, C) path and the composite ones.
TEST(Losses, EveryTargetIgnoredGivesAZeroGradientLikeTorch) {
  const kt::NnFixture edges("edges.txt");
  const auto nll = [](F::NllLossArgs args) {
    return [args](const Tensor& x, const Tensor& t, const Tensor& w) {
      F::NllLossArgs with_weight = args;
      with_weight.weight = w;
      return F::nll_loss(x, t, with_weight);
    };
  };
  check_loss("nll_all_ignored", nll({}), edges);
  check_loss("nll_all_ignored_weight", nll({}), edges);
  check_loss("nll_all_ignored_3d", nll({.ignore_index = 2}), edges);
  const auto ce = [](F::CrossEntropyArgs args) {
    return [args](const Tensor& x, const Tensor& t, const Tensor& w) {
      F::CrossEntropyArgs with_weight = args;
      with_weight.weight = w;
      return F::cross_entropy(x, t, with_weight);
    };
  };
  check_loss("ce_all_ignored", ce({}), edges);
  check_loss("ce_all_ignored_smoothing", ce({.label_smoothing = 0.1}), edges);
  check_loss("ce_all_ignored_3d", ce({}), edges);
  check_loss("ce_all_ignored_3d_smoothing_weight", ce({.ignore_index = 2, .label_smoothing = 0.2}), edges);
}

// torch's batchmean divides by input.size(0) only when the input has dims: a 0-d input gives the sum.
TEST(Losses, KlDivBatchmeanOfA0dInputIsTheSum) {
  const kt::NnFixture edges("edges.txt");
  check_loss("kl_batchmean_0d", [](const Tensor& x, const Tensor& t, const Tensor&) {
    return F::kl_div(x, t, {.reduction = Reduction::batchmean});
  }, edges);
  check_loss("kl_batchmean_0d_log_target", [](const Tensor& x, const Tensor& t, const Tensor&) {
    return F::kl_div(x, t, {.reduction = Reduction::batchmean, .log_target = true});
  }, edges);
}

TEST(Losses, Gradchecks) {
  auto leaf = [](const Dims& shape, uint64_t seed) {
    return kt::random_tensor(shape, DType::f64, -2, 2, seed).requires_grad_();
  };
  const Tensor labels = tensor(std::vector<int64_t>{0, 2, -100, 1});
  const Tensor w = tensor({0.5, 2.0, 1.5}, {.dtype = DType::f64});
  const Tensor y = kt::random_tensor({4, 3}, DType::f64, -1, 1, 40);
  const Tensor probs = softmax(kt::random_tensor({4, 3}, DType::f64, -1, 1, 41), 1);
  const std::vector<std::pair<std::string, std::function<Tensor(const Tensor&)>>> cases = {
      {"cross_entropy",
       [&](const Tensor& x) { return F::cross_entropy(x, labels, {.weight = w, .label_smoothing = 0.1}); }},
      {"cross_entropy probs", [&](const Tensor& x) { return F::cross_entropy(x, probs, {.label_smoothing = 0.2}); }},
      {"mse_loss", [&](const Tensor& x) { return F::mse_loss(x, y); }},
      {"smooth_l1_loss", [&](const Tensor& x) { return F::smooth_l1_loss(x, y, {.beta = 0.7}); }},
      {"bce_with_logits",
       [&](const Tensor& x) {
         return F::binary_cross_entropy_with_logits(x, probs, {.pos_weight = w, .reduction = Reduction::sum});
       }},
      {"kl_div",
       [&](const Tensor& x) { return F::kl_div(log_softmax(x, 1), probs, {.reduction = Reduction::batchmean}); }},
  };
  uint64_t seed = 50;
  for (const auto& [name, fn] : cases) {
    const autograd::GradcheckResult r =
        autograd::gradcheck([&](const TensorList& t) { return TensorList{fn(t[0])}; }, {leaf({4, 3}, seed++)});
    EXPECT_TRUE(r.ok) << name << ": " << r.message;
  }
}

// Note [Fused cross-entropy]: (N,C) logits with class indices take one fused kernel. It must give
// what log_softmax + nll_loss give (the composition, itself checked against torch above): the
// losses bit for bit, gradients within rounding, for every reduction, ignored rows, int32 targets,
// both float dtypes, and rows wider than a vector.
TEST(Losses, FusedCrossEntropyMatchesTheComposition) {
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t classes : {1, 3, 10, 37})
      for (const auto& [suffix, red] : kReductions)
        for (DType target_type : {DType::i64, DType::i32}) {
          const std::string what = std::string(dtype_name(dt)) + " C=" + std::to_string(classes) + " " + suffix;
          const int64_t rows = 9;
          std::vector<int64_t> labels;
          for (int64_t r = 0; r < rows; ++r) labels.push_back(r % 4 == 1 ? -100 : (r * 7) % classes);
          const Tensor target = tensor(labels).to(target_type);
          const Tensor x0 = kt::random_tensor({rows, classes}, dt, -4, 4, 7);
          const Tensor x1 = x0.clone().requires_grad_(), x2 = x0.clone().requires_grad_();
          const Tensor fused = F::cross_entropy(x1, target, {.reduction = red});
          const Tensor composed = F::nll_loss(log_softmax(x2, 1), target, {.reduction = red});
          kt::expect_close(fused, kt::values(composed), 0, 0, what + " loss");
          const Tensor gy = kt::random_tensor(fused.shape(), dt, -1, 1, 8);
          fused.backward(gy);
          composed.backward(gy);
          kt::expect_close(x1.grad(), kt::values(x2.grad()), kt::tolerance(dt), kt::tolerance(dt), what + " grad");
          if (red == Reduction::none) {
            EXPECT_EQ(fused.grad_fn()->name(), "cross_entropy") << what;
          }
        }
}

TEST(Losses, FusedCrossEntropyGradcheck) {
  const Tensor labels = tensor(std::vector<int64_t>{0, 2, -100, 1, 4});
  for (const auto& [suffix, red] : kReductions) {
    const autograd::GradcheckResult r = autograd::gradcheck(
        [&](const TensorList& t) { return TensorList{F::cross_entropy(t[0], labels, {.reduction = red})}; },
        {kt::random_tensor({5, 6}, DType::f64, -2, 2, 60).requires_grad_()});
    EXPECT_TRUE(r.ok) << suffix << ": " << r.message;
  }
}

TEST(Losses, ErrorsNameTheLossAndValues) {
  const Tensor logits = zeros({4, 3});
  kt::expect_error([&] { F::cross_entropy(logits, tensor(std::vector<int64_t>{0, 1, 3, 0})); },
                   {"cross_entropy", "target 3", "3 classes"});
  kt::expect_error([&] { F::cross_entropy(logits, tensor(std::vector<int64_t>{0, -2, 1, 0})); },
                   {"cross_entropy", "target -2", "3 classes"});
  kt::expect_error([&] { F::cross_entropy(logits, tensor(std::vector<int64_t>{0, 1})); },
                   {"cross_entropy", "[4]", "[2]"});
  kt::expect_error([&] { F::nll_loss(logits, tensor(std::vector<int64_t>{0, 1, 3, 0})); },
                   {"nll_loss", "target 3", "3 classes"});
  kt::expect_error([&] { F::nll_loss(logits, tensor(std::vector<int64_t>{0, 1})); }, {"nll_loss", "[4]", "[2]"});
  kt::expect_error([&] { F::cross_entropy(logits, zeros({4, 2})); }, {"cross_entropy", "[4, 3]", "[4, 2]"});
  kt::expect_error([&] { F::cross_entropy(logits, zeros({4}).to(DType::i64), {.weight = ones({2})}); },
                   {"cross_entropy", "weight", "[3]"});
  kt::expect_error([&] { F::cross_entropy(logits, zeros({4}).to(DType::i64), {.label_smoothing = 1.5}); },
                   {"cross_entropy", "label_smoothing", "1.5"});
  kt::expect_error([&] { F::mse_loss(logits, zeros({3, 4})); }, {"mse_loss", "[4, 3]", "[3, 4]"});
  kt::expect_error([&] { F::l1_loss(logits, logits, {Reduction::batchmean}); }, {"l1_loss", "batchmean"});
  kt::expect_error([&] { F::smooth_l1_loss(logits, logits, {.beta = -1}); }, {"smooth_l1_loss", "beta", "-1"});
}

}  // namespace
