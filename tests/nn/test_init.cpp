// nn::init: fans and gains checked by hand, sample statistics of each initialiser over large
// tensors (mean and std within ~5 standard errors, bounds exact), seeding, and each layer's
// PyTorch default initialisation.
#include <gtest/gtest.h>

#include <cmath>

#include "nn/init.h"
#include "nn/layers/attention.h"
#include "nn/layers/conv.h"
#include "nn/layers/linear.h"
#include "nn/layers/norm.h"
#include "testing.h"

namespace kt = kiln::testing;
using namespace kiln;
namespace init = kiln::nn::init;

namespace {

struct Stats {
  double mean = 0, std = 0, min = 0, max = 0;
};

Stats stats_of(const Tensor& t) {
  const std::vector<double> v = kt::values(t);
  Stats s{0, 0, v[0], v[0]};
  for (double x : v) s.mean += x, s.min = std::min(s.min, x), s.max = std::max(s.max, x);
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.std += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(s.std / static_cast<double>(v.size() - 1));
  return s;
}

// Mean and std of n samples from a distribution with std sigma: within 5 standard errors.
void expect_moments(const Tensor& t, double mean, double sigma, const std::string& what) {
  const Stats s = stats_of(t);
  const double n = static_cast<double>(t.numel());
  EXPECT_NEAR(s.mean, mean, 5 * sigma / std::sqrt(n)) << what;
  EXPECT_NEAR(s.std, sigma, 5 * sigma / std::sqrt(2 * n)) << what;
}

void expect_uniform(const Tensor& t, double bound, const std::string& what) {
  const Stats s = stats_of(t);
  EXPECT_GE(s.min, -bound) << what;
  EXPECT_LT(s.max, bound) << what;
  EXPECT_GT(s.max, 0.99 * bound) << what;  // the range is used
  expect_moments(t, 0, bound / std::sqrt(3.0), what);
}

TEST(Init, FansAndGains) {
  const init::Fans conv = init::calculate_fan_in_and_fan_out(empty({32, 16, 3, 5}));
  EXPECT_EQ(conv.fan_in, 16 * 15);
  EXPECT_EQ(conv.fan_out, 32 * 15);
  const init::Fans lin = init::calculate_fan_in_and_fan_out(empty({10, 784}));
  EXPECT_EQ(lin.fan_in, 784);
  EXPECT_EQ(lin.fan_out, 10);
  kt::expect_error([] { init::calculate_fan_in_and_fan_out(empty({5})); }, {"fewer than 2 dimensions", "[5]"});
  EXPECT_DOUBLE_EQ(init::calculate_gain(init::Nonlinearity::linear), 1.0);
  EXPECT_DOUBLE_EQ(init::calculate_gain(init::Nonlinearity::sigmoid), 1.0);
  EXPECT_DOUBLE_EQ(init::calculate_gain(init::Nonlinearity::tanh), 5.0 / 3.0);
  EXPECT_DOUBLE_EQ(init::calculate_gain(init::Nonlinearity::relu), std::sqrt(2.0));
  EXPECT_DOUBLE_EQ(init::calculate_gain(init::Nonlinearity::leaky_relu), std::sqrt(2.0 / (1 + 0.01 * 0.01)));
  EXPECT_DOUBLE_EQ(init::calculate_gain(init::Nonlinearity::leaky_relu, std::sqrt(5.0)), std::sqrt(2.0 / 6.0));
  EXPECT_DOUBLE_EQ(init::calculate_gain(init::Nonlinearity::selu), 0.75);
}

TEST(Init, Distributions) {
  Generator gen(1);
  expect_uniform(init::uniform_(empty({200000}), -0.5, 0.5, &gen), 0.5, "uniform_");
  expect_moments(init::normal_(empty({200000}), 1.5, 0.3, &gen), 1.5, 0.3, "normal_");
  // kaiming: fan_in = 64 * 9 = 576.
  const double relu_bound = std::sqrt(2.0) * std::sqrt(3.0 / 576);
  expect_uniform(
      init::kaiming_uniform_(empty({128, 64, 3, 3}), {.nonlinearity = init::Nonlinearity::relu, .generator = &gen}),
      relu_bound, "kaiming_uniform_ relu");
  expect_moments(init::kaiming_normal_(
                     empty({128, 64, 3, 3}),
                     {.mode = init::FanMode::fan_out, .nonlinearity = init::Nonlinearity::relu, .generator = &gen}),
                 0, std::sqrt(2.0) / std::sqrt(128.0 * 9), "kaiming_normal_ fan_out");
  const double leaky_bound = std::sqrt(2.0 / (1 + 0.2 * 0.2)) * std::sqrt(3.0 / 576);
  expect_uniform(init::kaiming_uniform_(empty({128, 64, 3, 3}), {.a = 0.2, .generator = &gen}), leaky_bound,
                 "kaiming_uniform_ leaky 0.2");
  // xavier: fan_in + fan_out = 300 + 500.
  expect_uniform(init::xavier_uniform_(empty({500, 300}), 2.0, &gen), 2.0 * std::sqrt(6.0 / 800), "xavier_uniform_");
  expect_moments(init::xavier_normal_(empty({500, 300}), 1.0, &gen), 0, std::sqrt(2.0 / 800), "xavier_normal_");
  kiln::testing::expect_close(init::zeros_(empty({3})), {0, 0, 0}, 0, 0);
  kiln::testing::expect_close(init::ones_(empty({2})), {1, 1}, 0, 0);
  kiln::testing::expect_close(init::constant_(empty({2}), 0.5), {0.5, 0.5}, 0, 0);
}

TEST(Init, TruncNormalStaysInBoundsWithTheTruncatedMoments) {
  Generator gen(3);
  const Tensor t = init::trunc_normal_(empty({200000}), 0.5, 1.0, -1.0, 1.5, &gen);
  const Stats s = stats_of(t);
  EXPECT_GE(s.min, -1.0);
  EXPECT_LE(s.max, 1.5);
  // Moments of N(0.5, 1) truncated to [-1, 1.5]: alpha = -1.5, beta = 1.
  auto pdf = [](double z) { return std::exp(-z * z / 2) / std::sqrt(2 * M_PI); };
  auto cdf = [](double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); };
  const double alpha = -1.5, beta = 1.0, Z = cdf(beta) - cdf(alpha);
  const double mean = 0.5 + (pdf(alpha) - pdf(beta)) / Z;
  const double var = 1 + (alpha * pdf(alpha) - beta * pdf(beta)) / Z - std::pow((pdf(alpha) - pdf(beta)) / Z, 2);
  expect_moments(t, mean, std::sqrt(var), "trunc_normal_");
  kt::expect_error([&] { init::trunc_normal_(empty({3}), 0, 1, 2, 1, &gen); }, {"trunc_normal_", "a < b"});
}

TEST(Init, SameSeedSameValues) {
  Generator a(42), b(42), c(43);
  const Tensor x = init::kaiming_uniform_(empty({16, 8}), {.generator = &a});
  EXPECT_TRUE(equal(x, init::kaiming_uniform_(empty({16, 8}), {.generator = &b})));
  EXPECT_FALSE(equal(x, init::kaiming_uniform_(empty({16, 8}), {.generator = &c})));
}

TEST(Init, LayerDefaultsFollowTorch) {
  Generator gen(9);
  // Linear and convolutions: U(+-1/sqrt(fan_in)) for weight and bias.
  nn::Linear lin(400, 300);
  lin.reset_parameters(&gen);
  expect_uniform(lin.weight, 1 / std::sqrt(400.0), "Linear.weight");
  EXPECT_LE(stats_of(lin.bias).max, 1 / std::sqrt(400.0));
  EXPECT_GE(stats_of(lin.bias).min, -1 / std::sqrt(400.0));
  nn::Conv2d conv(16, 64, 5, {.groups = 2});
  conv.reset_parameters(&gen);
  expect_uniform(conv.weight, 1 / std::sqrt(8.0 * 25), "Conv2d.weight");  // fan_in = 16/2 * 25
  nn::ConvTranspose2d convt(32, 64, 3);
  convt.reset_parameters(&gen);
  expect_uniform(convt.weight, 1 / std::sqrt(64.0 * 9), "ConvTranspose2d.weight");  // fans of (in, out, k, k)
  nn::Embedding emb(1000, 64, {.padding_idx = 3});
  emb.reset_parameters(&gen);
  expect_moments(emb.weight.narrow(0, 4, 996), 0, 1, "Embedding.weight");
  EXPECT_EQ(emb.weight.select(0, 3).abs().sum().item<double>(), 0.0);
  nn::BatchNorm2d bn(4);
  kt::expect_close(bn.weight, {1, 1, 1, 1}, 0, 0);
  kt::expect_close(bn.bias, {0, 0, 0, 0}, 0, 0);
  kt::expect_close(bn.running_var, {1, 1, 1, 1}, 0, 0);
  EXPECT_EQ(bn.num_batches_tracked.dtype(), DType::i64);
  nn::MultiheadAttention mha(64, 4);
  mha.reset_parameters(&gen);
  expect_uniform(mha.in_proj_weight, std::sqrt(6.0 / (192 + 64)), "MultiheadAttention.in_proj_weight");
  EXPECT_EQ(mha.in_proj_bias.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(mha.out_proj->bias.abs().sum().item<double>(), 0.0);
}

}  // namespace
