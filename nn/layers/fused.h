// Fused layers: LinearReLU (relu(linear(x))) and MaxPool2dReLU (max_pool2d(relu(x))), each one op
// with the values and gradients of the pair it replaces, for models written layer by layer.
// Sequential already runs a Linear followed by a ReLU, and a ReLU followed by a MaxPool2d, as these
// ops (Note [Pooling before ReLU] in nn/containers.cpp); the layers name the fusion explicitly.
#pragma once

#include "nn/functional.h"
#include "nn/layers/linear.h"
#include "nn/module.h"

namespace kiln::nn {

// relu(x W^T + b) by F::linear_relu. Linear's parameters ("weight" (out, in), "bias" (out)),
// shapes and initialisation, so a Linear's state_dict loads into it.
class LinearReLU : public Module {
 public:
  LinearReLU(int64_t in_features, int64_t out_features, LinearOptions options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  void reset_parameters(Generator* gen = nullptr);  // as Linear's

  const int64_t in_features, out_features;
  Tensor weight, bias;  // bias undefined without one
};

// max_pool2d(relu(x)) by F::max_pool2d_relu, with MaxPool2d's arguments; no parameters.
class MaxPool2dReLU : public Module {
 public:
  explicit MaxPool2dReLU(F::IntPair kernel_size, F::MaxPool2dArgs options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  const F::IntPair kernel_size;
  const F::MaxPool2dArgs options;
};

}  // namespace kiln::nn
