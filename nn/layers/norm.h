// Normalisation layers: BatchNorm1d/2d (running statistics, momentum, eval mode), LayerNorm,
// RMSNorm and GroupNorm, with torch's parameter and buffer names (weight, bias, running_mean,
// running_var, num_batches_tracked) and default initialisation (ones and zeros).
#pragma once

#include <optional>

#include "nn/module.h"

namespace kiln::nn {

struct BatchNormOptions {
  double eps = 1e-5;
  double momentum = 0.1;
  bool affine = true;
  bool bias = true;  // with affine: a learned shift too
  bool track_running_stats = true;
};

// Normalises each channel of x (N, C, *) over the batch (and spatial dims).
class BatchNorm : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  void reset_running_stats();
  void reset_parameters();

  const int64_t num_features;
  const BatchNormOptions options;
  Tensor weight, bias;                                  // (C), when affine
  Tensor running_mean, running_var, num_batches_tracked;  // when tracking running stats

 protected:
  BatchNorm(const char* type_name, int64_t num_features, BatchNormOptions options, int min_dims, int max_dims);

 private:
  const int min_dims_, max_dims_;
};

// x (N, C) or (N, C, L).
class BatchNorm1d : public BatchNorm {
 public:
  explicit BatchNorm1d(int64_t num_features, BatchNormOptions options = {});
};
// x (N, C, H, W).
class BatchNorm2d : public BatchNorm {
 public:
  explicit BatchNorm2d(int64_t num_features, BatchNormOptions options = {});
};

struct LayerNormOptions {
  double eps = 1e-5;
  bool elementwise_affine = true;
  bool bias = true;
};

// Normalises over the trailing normalized_shape dims of x.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(const Dims& normalized_shape, LayerNormOptions options = {});
  explicit LayerNorm(int64_t normalized_size, LayerNormOptions options = {})
      : LayerNorm(Dims{normalized_size}, options) {}
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  const Dims normalized_shape;
  const LayerNormOptions options;
  Tensor weight, bias;
};

struct RMSNormOptions {
  std::optional<double> eps;  // unset: the dtype's machine epsilon, as torch
  bool elementwise_affine = true;
};

class RMSNorm : public Module {
 public:
  explicit RMSNorm(const Dims& normalized_shape, RMSNormOptions options = {});
  explicit RMSNorm(int64_t normalized_size, RMSNormOptions options = {}) : RMSNorm(Dims{normalized_size}, options) {}
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  const Dims normalized_shape;
  const RMSNormOptions options;
  Tensor weight;
};

struct GroupNormOptions {
  double eps = 1e-5;
  bool affine = true;
  bool bias = true;  // with affine: a learned shift too
};

// x (N, C, *): statistics per sample over each group of C / num_groups channels.
class GroupNorm : public Module {
 public:
  GroupNorm(int64_t num_groups, int64_t num_channels, GroupNormOptions options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  const int64_t num_groups, num_channels;
  const GroupNormOptions options;
  Tensor weight, bias;
};

}  // namespace kiln::nn
