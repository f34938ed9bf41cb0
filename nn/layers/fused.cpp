// LinearReLU and MaxPool2dReLU (see fused.h).
#include "nn/layers/fused.h"

namespace kiln::nn {

LinearReLU::LinearReLU(int64_t in, int64_t out, LinearOptions options) : Linear("LinearReLU", in, out, options) {}

Tensor LinearReLU::forward(const Tensor& x) { return F::linear_relu(x, weight, bias); }

MaxPool2dReLU::MaxPool2dReLU(F::IntPair k, F::MaxPool2dArgs opts) : MaxPool2d("MaxPool2dReLU", k, opts) {}

Tensor MaxPool2dReLU::forward(const Tensor& x) { return F::max_pool2d_relu(x, kernel_size, options); }

}  // namespace kiln::nn
