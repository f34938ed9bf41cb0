// nn::init: in-place initialisers of torch.nn.init, with its fan and gain rules, drawing from a
// Generator (the device's default one unless given). Each returns the tensor it filled, a handle
// on the same data. They run with recording off, so parameters can be (re)initialised directly.
#pragma once

#include <optional>

#include "tensor/generator.h"
#include "tensor/tensor.h"

namespace kiln::nn::init {

enum class FanMode { fan_in, fan_out };
enum class Nonlinearity {
  linear, conv1d, conv2d, conv3d, conv_transpose1d, conv_transpose2d, conv_transpose3d,
  sigmoid, tanh, relu, leaky_relu, selu
};

// torch.nn.init.calculate_gain; param is leaky_relu's negative slope (default 0.01).
double calculate_gain(Nonlinearity nonlinearity, std::optional<double> param = std::nullopt);

// For a (out, in, *kernel) weight: fan_in = in * prod(kernel), fan_out = out * prod(kernel).
struct Fans {
  int64_t fan_in = 0, fan_out = 0;
};
Fans calculate_fan_in_and_fan_out(const Tensor& t);  // needs >= 2 dims

Tensor uniform_(Tensor t, double low = 0.0, double high = 1.0, Generator* gen = nullptr);
Tensor normal_(Tensor t, double mean = 0.0, double std = 1.0, Generator* gen = nullptr);
Tensor constant_(Tensor t, double value);
Tensor zeros_(Tensor t);
Tensor ones_(Tensor t);
// N(mean, std) redrawn until inside [a, b] (absolute bounds, as torch's).
Tensor trunc_normal_(Tensor t, double mean = 0.0, double std = 1.0, double a = -2.0, double b = 2.0,
                     Generator* gen = nullptr);

// U(-g * sqrt(6 / (fan_in + fan_out)), +...) and N(0, g^2 * 2 / (fan_in + fan_out)).
Tensor xavier_uniform_(Tensor t, double gain = 1.0, Generator* gen = nullptr);
Tensor xavier_normal_(Tensor t, double gain = 1.0, Generator* gen = nullptr);

struct KaimingArgs {
  double a = 0.0;  // the negative slope of leaky_relu
  FanMode mode = FanMode::fan_in;
  Nonlinearity nonlinearity = Nonlinearity::leaky_relu;
  Generator* generator = nullptr;
};
// U(-bound, bound) with bound = gain * sqrt(3 / fan), and N(0, (gain / sqrt(fan))^2).
Tensor kaiming_uniform_(Tensor t, const KaimingArgs& args = {});
Tensor kaiming_normal_(Tensor t, const KaimingArgs& args = {});

// PyTorch's default for Linear and convolution layers: kaiming_uniform_(weight, a = sqrt(5)), which
// is U(+-1/sqrt(fan_in)), and the bias U(+-1/sqrt(fan_in)) with the weight's fan_in.
void default_layer_init(Tensor weight, Tensor bias, Generator* gen = nullptr);

}  // namespace kiln::nn::init
