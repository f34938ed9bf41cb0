// Fused layers: LinearReLU (relu(linear(x))) and MaxPool2dReLU (max_pool2d(relu(x))), each one op
// with the values and gradients of the pair it replaces, for models written layer by layer.
// Sequential already runs a Linear followed by a ReLU, and a ReLU followed by a MaxPool2d, as these
// ops (Note [Pooling before ReLU] in nn/containers.cpp); the layers name the fusion explicitly.
#pragma once

#include "nn/functional.h"
#include "nn/layers/linear.h"
#include "nn/layers/pool.h"
#include "nn/module.h"

namespace kiln::nn {

// relu(x W^T + b) by F::linear_relu: a Linear (its parameters "weight" (out, in) and "bias" (out),
// shapes and initialisation, so a Linear's state_dict loads into it) with ReLU fused.
class LinearReLU : public Linear {
 public:
  LinearReLU(int64_t in_features, int64_t out_features, LinearOptions options = {});
  Tensor forward(const Tensor& x) override;
};

// max_pool2d(relu(x)) by F::max_pool2d_relu: a MaxPool2d with ReLU fused; no parameters.
class MaxPool2dReLU : public MaxPool2d {
 public:
  explicit MaxPool2dReLU(F::IntPair kernel_size, F::MaxPool2dArgs options = {});
  Tensor forward(const Tensor& x) override;
};

}  // namespace kiln::nn
