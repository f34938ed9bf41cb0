// MaxPool2d, AvgPool2d and AdaptiveAvgPool2d (see pool.h).
#include "nn/layers/pool.h"

namespace kiln::nn {

namespace {
std::string int_or_pair(F::IntPair p) { return p.square ? std::to_string(p.h) : tuple_text(p.dims()); }
}  // namespace

MaxPool2d::MaxPool2d(F::IntPair k, F::MaxPool2dArgs opts) : MaxPool2d("MaxPool2d", k, opts) {}
MaxPool2d::MaxPool2d(std::string name, F::IntPair k, F::MaxPool2dArgs opts)
    : Module(std::move(name)), kernel_size(k), options(opts) {}

Tensor MaxPool2d::forward(const Tensor& x) { return F::max_pool2d(x, kernel_size, options); }

std::string MaxPool2d::extra_repr() const {
  return "kernel_size=" + int_or_pair(kernel_size) + ", stride=" + int_or_pair(options.stride.value_or(kernel_size)) +
         ", padding=" + int_or_pair(options.padding) + ", dilation=" + int_or_pair(options.dilation) +
         ", ceil_mode=" + bool_text(options.ceil_mode);
}

AvgPool2d::AvgPool2d(F::IntPair k, F::AvgPool2dArgs opts) : Module("AvgPool2d"), kernel_size(k), options(opts) {}

Tensor AvgPool2d::forward(const Tensor& x) { return F::avg_pool2d(x, kernel_size, options); }

std::string AvgPool2d::extra_repr() const {
  return "kernel_size=" + int_or_pair(kernel_size) + ", stride=" + int_or_pair(options.stride.value_or(kernel_size)) +
         ", padding=" + int_or_pair(options.padding);
}

AdaptiveAvgPool2d::AdaptiveAvgPool2d(F::IntPair size) : Module("AdaptiveAvgPool2d"), output_size(size) {}

Tensor AdaptiveAvgPool2d::forward(const Tensor& x) { return F::adaptive_avg_pool2d(x, output_size); }

std::string AdaptiveAvgPool2d::extra_repr() const { return "output_size=" + int_or_pair(output_size); }

}  // namespace kiln::nn
