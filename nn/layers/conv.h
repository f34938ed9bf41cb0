// Convolution layers: Conv1d, Conv2d and ConvTranspose2d, with torch's parameter shapes, default
// initialisation and printed form. Only zero padding is supported (torch's padding_mode='zeros').
#pragma once

#include "nn/functional.h"
#include "nn/module.h"

namespace kiln::nn {

struct Conv1dOptions {
  int64_t stride = 1, padding = 0, dilation = 1, groups = 1;
  bool bias = true;
};

// x (N, C_in, L) or (C_in, L); weight (C_out, C_in / groups, k); bias (C_out).
class Conv1d : public Module {
 public:
  Conv1d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, Conv1dOptions options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  void reset_parameters(Generator* gen = nullptr);

  const int64_t in_channels, out_channels, kernel_size;
  const Conv1dOptions options;
  Tensor weight, bias;
};

struct Conv2dOptions {
  F::IntPair stride = 1, padding = 0, dilation = 1;
  int64_t groups = 1;
  bool bias = true;
};

// x (N, C_in, H, W) or (C_in, H, W); weight (C_out, C_in / groups, kh, kw); bias (C_out).
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, F::IntPair kernel_size, Conv2dOptions options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  void reset_parameters(Generator* gen = nullptr);

  const int64_t in_channels, out_channels;
  const F::IntPair kernel_size;
  const Conv2dOptions options;
  Tensor weight, bias;
};

struct ConvTranspose2dOptions {
  F::IntPair stride = 1, padding = 0, output_padding = 0;
  int64_t groups = 1;
  bool bias = true;
  F::IntPair dilation = 1;
};

// The gradient of a Conv2d with respect to its input, as a layer. weight (C_in, C_out / groups,
// kh, kw); output size (H - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1.
class ConvTranspose2d : public Module {
 public:
  ConvTranspose2d(int64_t in_channels, int64_t out_channels, F::IntPair kernel_size,
                  ConvTranspose2dOptions options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  void reset_parameters(Generator* gen = nullptr);

  const int64_t in_channels, out_channels;
  const F::IntPair kernel_size;
  const ConvTranspose2dOptions options;
  Tensor weight, bias;
};

}  // namespace kiln::nn
