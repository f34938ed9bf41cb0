// Pooling layers: MaxPool2d, AvgPool2d and AdaptiveAvgPool2d over (N, C, H, W) or (C, H, W). Sizes
// print as given (an int or a pair), as torch prints them.
#pragma once

#include "nn/functional.h"
#include "nn/module.h"

namespace kiln::nn {

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(F::IntPair kernel_size, F::MaxPool2dArgs options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  const F::IntPair kernel_size;
  const F::MaxPool2dArgs options;

 protected:
  MaxPool2d(std::string name, F::IntPair kernel_size, F::MaxPool2dArgs options);  // for MaxPool2dReLU
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(F::IntPair kernel_size, F::AvgPool2dArgs options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  const F::IntPair kernel_size;
  const F::AvgPool2dArgs options;
};

class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(F::IntPair output_size);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  const F::IntPair output_size;
};

}  // namespace kiln::nn
