// nn::init (see init.h). The formulas are torch.nn.init's; sampling uses Kiln's own generators, so
// values match torch's in distribution, not bit for bit.
#include "nn/init.h"

#include <cmath>
#include <vector>

#include "autograd/grad_mode.h"
#include "tensor/error.h"
#include "tensor/factories.h"

namespace kiln::nn::init {

namespace {

void check_defined(const Tensor& t, const char* op) {
  KILN_CHECK(t.defined(), op, ": the tensor is undefined");
  KILN_CHECK(t.is_floating(), op, ": expected a floating tensor, got ", t.dtype());
}

int64_t fan_of(const Tensor& t, FanMode mode) {
  const Fans f = calculate_fan_in_and_fan_out(t);
  return mode == FanMode::fan_in ? f.fan_in : f.fan_out;
}

}  // namespace

double calculate_gain(Nonlinearity nonlinearity, std::optional<double> param) {
  switch (nonlinearity) {
    case Nonlinearity::linear:
    case Nonlinearity::conv1d:
    case Nonlinearity::conv2d:
    case Nonlinearity::conv3d:
    case Nonlinearity::conv_transpose1d:
    case Nonlinearity::conv_transpose2d:
    case Nonlinearity::conv_transpose3d:
    case Nonlinearity::sigmoid: return 1.0;
    case Nonlinearity::tanh: return 5.0 / 3.0;
    case Nonlinearity::relu: return std::sqrt(2.0);
    case Nonlinearity::leaky_relu: {
      const double slope = param.value_or(0.01);
      return std::sqrt(2.0 / (1.0 + slope * slope));
    }
    case Nonlinearity::selu: return 3.0 / 4.0;
  }
  return 1.0;
}

Fans calculate_fan_in_and_fan_out(const Tensor& t) {
  KILN_CHECK(t.defined() && t.dim() >= 2, "calculate_fan_in_and_fan_out: fan in and fan out can not be computed for "
             "a tensor with fewer than 2 dimensions, got shape ", t.defined() ? t.shape() : Dims{});
  int64_t receptive = 1;
  for (int d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

Tensor uniform_(Tensor t, double low, double high, Generator* gen) {
  check_defined(t, "uniform_");
  KILN_CHECK(low <= high, "uniform_: expected low <= high, got [", low, ", ", high, "]");
  NoGradGuard no_grad;
  kiln::uniform_(t, low, high, gen);
  return t;
}

Tensor normal_(Tensor t, double mean, double std, Generator* gen) {
  check_defined(t, "normal_");
  KILN_CHECK(std >= 0, "normal_: expected std >= 0, got ", std);
  NoGradGuard no_grad;
  kiln::normal_(t, mean, std, gen);
  return t;
}

Tensor constant_(Tensor t, double value) {
  KILN_CHECK(t.defined(), "constant_: the tensor is undefined");
  NoGradGuard no_grad;
  t.fill_(value);
  return t;
}

Tensor zeros_(Tensor t) { return constant_(std::move(t), 0.0); }
Tensor ones_(Tensor t) { return constant_(std::move(t), 1.0); }

Tensor trunc_normal_(Tensor t, double mean, double std, double a, double b, Generator* gen) {
  check_defined(t, "trunc_normal_");
  KILN_CHECK(std > 0 && a < b, "trunc_normal_: expected std > 0 and a < b, got std ", std, ", [", a, ", ", b, "]");
  KILN_CHECK(a <= mean + 6 * std && b >= mean - 6 * std, "trunc_normal_: the interval [", a, ", ", b,
             "] is more than 6 std from mean ", mean, "; almost every draw would be rejected");
  // Rejection sampling: draw N(mean, std) in f64 and redraw what falls outside [a, b].
  Tensor values = empty(t.shape(), {.dtype = DType::f64});
  kiln::normal_(values, mean, std, gen);
  double* v = values.data_ptr<double>();
  std::vector<int64_t> rejected;
  for (int64_t i = 0; i < values.numel(); ++i)
    if (v[i] < a || v[i] > b) rejected.push_back(i);
  while (!rejected.empty()) {
    Tensor fresh = empty({static_cast<int64_t>(rejected.size())}, {.dtype = DType::f64});
    kiln::normal_(fresh, mean, std, gen);
    const double* f = fresh.data_ptr<double>();
    std::vector<int64_t> still;
    for (size_t j = 0; j < rejected.size(); ++j) {
      if (f[j] < a || f[j] > b) still.push_back(rejected[j]);
      else v[rejected[j]] = f[j];
    }
    rejected.swap(still);
  }
  NoGradGuard no_grad;
  t.copy_(values);
  return t;
}

Tensor xavier_uniform_(Tensor t, double gain, Generator* gen) {
  const Fans f = calculate_fan_in_and_fan_out(t);
  const double bound = gain * std::sqrt(6.0 / static_cast<double>(f.fan_in + f.fan_out));
  return uniform_(std::move(t), -bound, bound, gen);
}

Tensor xavier_normal_(Tensor t, double gain, Generator* gen) {
  const Fans f = calculate_fan_in_and_fan_out(t);
  return normal_(std::move(t), 0.0, gain * std::sqrt(2.0 / static_cast<double>(f.fan_in + f.fan_out)), gen);
}

Tensor kaiming_uniform_(Tensor t, const KaimingArgs& args) {
  const int64_t fan = fan_of(t, args.mode);
  KILN_CHECK(fan > 0, "kaiming_uniform_: initializing a zero-element tensor (shape ", t.shape(), ") is a no-op");
  const double bound = calculate_gain(args.nonlinearity, args.a) * std::sqrt(3.0 / static_cast<double>(fan));
  return uniform_(std::move(t), -bound, bound, args.generator);
}

Tensor kaiming_normal_(Tensor t, const KaimingArgs& args) {
  const int64_t fan = fan_of(t, args.mode);
  KILN_CHECK(fan > 0, "kaiming_normal_: initializing a zero-element tensor (shape ", t.shape(), ") is a no-op");
  const double std = calculate_gain(args.nonlinearity, args.a) / std::sqrt(static_cast<double>(fan));
  return normal_(std::move(t), 0.0, std, args.generator);
}

void default_layer_init(Tensor weight, Tensor bias, Generator* gen) {
  const int64_t fan_in = calculate_fan_in_and_fan_out(weight).fan_in;
  kaiming_uniform_(weight, {.a = std::sqrt(5.0), .generator = gen});
  if (bias.defined()) {
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    init::uniform_(bias, -bound, bound, gen);
  }
}

}  // namespace kiln::nn::init
