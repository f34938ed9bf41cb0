// LinearReLU and MaxPool2dReLU (see fused.h).
#include "nn/layers/fused.h"

#include "nn/init.h"
#include "nn/layers/pool.h"
#include "tensor/factories.h"

namespace kiln::nn {

LinearReLU::LinearReLU(int64_t in, int64_t out, LinearOptions options)
    : Module("LinearReLU"), in_features(in), out_features(out) {
  KILN_CHECK(in >= 0 && out >= 0, "LinearReLU: feature counts must be non-negative, got in_features=", in,
             ", out_features=", out);
  weight = register_parameter("weight", empty({out, in}));
  if (options.bias) bias = register_parameter("bias", empty({out}));
  reset_parameters();
}

void LinearReLU::reset_parameters(Generator* gen) { init::default_layer_init(weight, bias, gen); }

Tensor LinearReLU::forward(const Tensor& x) { return F::linear_relu(x, weight, bias); }

std::string LinearReLU::extra_repr() const {
  return detail::concat("in_features=", in_features, ", out_features=", out_features, ", bias=",
                        bool_text(bias.defined()));
}

MaxPool2dReLU::MaxPool2dReLU(F::IntPair k, F::MaxPool2dArgs opts)
    : Module("MaxPool2dReLU"), kernel_size(k), options(opts) {}

Tensor MaxPool2dReLU::forward(const Tensor& x) { return F::max_pool2d_relu(x, kernel_size, options); }

// MaxPool2d's own text: the arguments are the same.
std::string MaxPool2dReLU::extra_repr() const { return MaxPool2d(kernel_size, options).extra_repr(); }

}  // namespace kiln::nn
