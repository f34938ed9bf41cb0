// Neural-net layers that are not compositions of other ops: convolutions, pooling and the
// normalisations, each as a forward function and an explicit backward that takes what the forward
// saved plus grad_out and returns the input gradients. Defined in autograd/ops/conv.cpp, pool.cpp
// and norm.cpp; PyTorch's argument order and defaults. Sizes given as Dims take 1 value (used for
// both dims) or 2 (height, width).
#pragma once

#include <optional>

#include "tensor/tensor.h"

namespace kiln {

// The gradients of a layer's input, weight and bias; each is undefined when not asked for.
struct LayerGrads {
  Tensor input, weight, bias;
};
// Which gradients a backward computes: leaving one out skips its work.
struct LayerGradMask {
  bool input = true, weight = true, bias = true;
};

// ---- convolution. x (N,C,H,W) or unbatched (C,H,W); weight (O,C/groups,kh,kw); bias (O).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, const Dims& stride = {1},
              const Dims& padding = {0}, const Dims& dilation = {1}, int64_t groups = 1);
LayerGrads conv2d_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Dims& stride = {1},
                           const Dims& padding = {0}, const Dims& dilation = {1}, int64_t groups = 1,
                           LayerGradMask mask = {});
// x (N,C,L) or (C,L); weight (O,C/groups,k).
Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, int64_t stride = 1, int64_t padding = 0,
              int64_t dilation = 1, int64_t groups = 1);
LayerGrads conv1d_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight, int64_t stride = 1,
                           int64_t padding = 0, int64_t dilation = 1, int64_t groups = 1, LayerGradMask mask = {});
// x (N,C,H,W) or (C,H,W); weight (C,O/groups,kh,kw); out size (H-1)*stride - 2*padding +
// dilation*(k-1) + output_padding + 1.
Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, const Dims& stride = {1},
                        const Dims& padding = {0}, const Dims& output_padding = {0}, int64_t groups = 1,
                        const Dims& dilation = {1});
LayerGrads conv_transpose2d_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight,
                                     const Dims& stride = {1}, const Dims& padding = {0},
                                     const Dims& output_padding = {0}, int64_t groups = 1, const Dims& dilation = {1},
                                     LayerGradMask mask = {});

// ---- pooling. x (N,C,H,W) or (C,H,W); an empty stride means stride = kernel_size. Max pooling gives
// values, and int64 indices: the flat h * W + w position of each maximum within its (H,W) plane
// (-1 for a dilated window wholly in the padding, whose value is -inf as in torch).
TensorPair max_pool2d_with_indices(const Tensor& x, const Dims& kernel_size, const Dims& stride = {},
                                   const Dims& padding = {0}, const Dims& dilation = {1}, bool ceil_mode = false);
Tensor max_pool2d(const Tensor& x, const Dims& kernel_size, const Dims& stride = {}, const Dims& padding = {0},
                  const Dims& dilation = {1}, bool ceil_mode = false);
// max_pool2d(relu(x))'s values in one pass over x, with the maxima's indices (see Note [Fused
// pooling and ReLU] in nn/functional/layers.cpp).
TensorPair max_pool2d_relu_with_indices(const Tensor& x, const Dims& kernel_size, const Dims& stride = {},
                                        const Dims& padding = {0}, const Dims& dilation = {1}, bool ceil_mode = false);
// grad_x of input_shape: each grad_out element added at its index (none for -1). With relu_output
// (the fused op's values), grad_out counts as 0 where that output is <= 0, as ReLU's backward.
Tensor max_pool2d_backward(const Tensor& grad_out, const Tensor& indices, const Dims& input_shape,
                           const Tensor& relu_output = {});
Tensor avg_pool2d(const Tensor& x, const Dims& kernel_size, const Dims& stride = {}, const Dims& padding = {0},
                  bool ceil_mode = false, bool count_include_pad = true,
                  std::optional<int64_t> divisor_override = std::nullopt);
Tensor avg_pool2d_backward(const Tensor& grad_out, const Dims& input_shape, const Dims& kernel_size,
                           const Dims& stride = {}, const Dims& padding = {0}, bool ceil_mode = false,
                           bool count_include_pad = true, std::optional<int64_t> divisor_override = std::nullopt);
// output_size: 1 or 2 values.
Tensor adaptive_avg_pool2d(const Tensor& x, const Dims& output_size);
Tensor adaptive_avg_pool2d_backward(const Tensor& grad_out, const Dims& input_shape);

// ---- normalisation. A forward returns the output and the statistics its backward needs: mean
// and rstd = 1/sqrt(var + eps), in f64 for f64 inputs and f32 otherwise.
struct NormOutput {
  Tensor output, mean, rstd;
};

// x (N,C,...) with at least 2 dims; weight, bias, running_mean, running_var (C), each optional.
// Training normalises with the batch's biased variance and updates the running statistics in
// place: running = (1 - momentum) * running + momentum * batch (the unbiased variance there).
// Eval normalises with the running statistics (then required); mean/rstd hold them for backward.
NormOutput batch_norm_forward(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                              const Tensor& weight = {}, const Tensor& bias = {}, bool training = false,
                              double momentum = 0.1, double eps = 1e-5);
Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight = {},
                  const Tensor& bias = {}, bool training = false, double momentum = 0.1, double eps = 1e-5);
LayerGrads batch_norm_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Tensor& mean,
                               const Tensor& rstd, bool training, LayerGradMask mask = {});

// Statistics over the last normalized_shape.size() dims; weight and bias have normalized_shape.
NormOutput layer_norm_forward(const Tensor& x, const Dims& normalized_shape, const Tensor& weight = {},
                              const Tensor& bias = {}, double eps = 1e-5);
Tensor layer_norm(const Tensor& x, const Dims& normalized_shape, const Tensor& weight = {}, const Tensor& bias = {},
                  double eps = 1e-5);
LayerGrads layer_norm_backward(const Tensor& grad_out, const Tensor& x, const Dims& normalized_shape,
                               const Tensor& weight, const Tensor& mean, const Tensor& rstd, LayerGradMask mask = {});

// x * rsqrt(mean(x^2) + eps) * weight over the last dims; eps defaults to the dtype's machine
// epsilon, as torch's does. Its NormOutput has no mean; its LayerGrads no bias.
NormOutput rms_norm_forward(const Tensor& x, const Dims& normalized_shape, const Tensor& weight = {},
                            std::optional<double> eps = std::nullopt);
Tensor rms_norm(const Tensor& x, const Dims& normalized_shape, const Tensor& weight = {},
                std::optional<double> eps = std::nullopt);
LayerGrads rms_norm_backward(const Tensor& grad_out, const Tensor& x, const Dims& normalized_shape,
                             const Tensor& weight, const Tensor& rstd, LayerGradMask mask = {});

// x (N,C,...); statistics per sample over each group of C/num_groups channels; weight, bias (C).
NormOutput group_norm_forward(const Tensor& x, int64_t num_groups, const Tensor& weight = {}, const Tensor& bias = {},
                              double eps = 1e-5);
Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight = {}, const Tensor& bias = {},
                  double eps = 1e-5);
LayerGrads group_norm_backward(const Tensor& grad_out, const Tensor& x, int64_t num_groups, const Tensor& weight,
                               const Tensor& mean, const Tensor& rstd, LayerGradMask mask = {});

}  // namespace kiln
