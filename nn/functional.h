// nn::functional: the differentiable functions layers are built from, with torch.nn.functional's
// names, defaults and semantics. Every op here is the kiln:: op itself, which records its own
// gradient (autograd/ops/): re-exported as is, or forwarded from torch's argument structs by an
// inline overload below; none records a node of its own. Dropout and attention (attention.cpp)
// and the losses (losses.cpp) are compositions of differentiable ops.
#pragma once

#include <optional>

#include "autograd/ops/elementwise.h"
#include "autograd/ops/indexing.h"
#include "autograd/ops/linalg.h"
#include "autograd/ops/nn_ops.h"
#include "tensor/generator.h"
#include "tensor/tensor.h"

namespace kiln::nn::functional {

// ---- activations and linear, as defined by the ops (linear_relu: relu(linear(x)) fused, the
// layer nn::LinearReLU, and what Sequential runs for a Linear followed by a ReLU)
using kiln::gelu;
using kiln::leaky_relu;
using kiln::linear;
using kiln::linear_relu;
using kiln::log_softmax;
using kiln::relu;
using kiln::sigmoid;
using kiln::silu;
using kiln::softmax;
using kiln::softplus;
using kiln::tanh;

// A size or step of a 2-d window: one number for both dims (printed as torch prints an int) or
// (height, width). Converts from an int, so options read `{.stride = 2, .padding = {1, 0}}`.
struct IntPair {
  int64_t h = 0, w = 0;
  bool square = true;  // given as one number
  IntPair(int64_t both) : h(both), w(both) {}  // NOLINT: implicit, as torch's int-or-tuple
  IntPair(int64_t height, int64_t width) : h(height), w(width), square(false) {}
  Dims dims() const { return {h, w}; }
};

// ---- convolution
struct Conv1dArgs {
  int64_t stride = 1, padding = 0, dilation = 1, groups = 1;
};
struct Conv2dArgs {
  IntPair stride = 1, padding = 0, dilation = 1;
  int64_t groups = 1;
};
struct ConvTranspose2dArgs {
  IntPair stride = 1, padding = 0, output_padding = 0;
  int64_t groups = 1;
  IntPair dilation = 1;
};
// x (N,C,L) or (C,L); weight (O, C/groups, k); bias (O) or undefined.
inline Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, const Conv1dArgs& a = {}) {
  return kiln::conv1d(x, weight, bias, a.stride, a.padding, a.dilation, a.groups);
}
// x (N,C,H,W) or (C,H,W); weight (O, C/groups, kh, kw).
inline Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, const Conv2dArgs& a = {}) {
  return kiln::conv2d(x, weight, bias, a.stride.dims(), a.padding.dims(), a.dilation.dims(), a.groups);
}
// weight (C, O/groups, kh, kw).
inline Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {},
                               const ConvTranspose2dArgs& a = {}) {
  return kiln::conv_transpose2d(x, weight, bias, a.stride.dims(), a.padding.dims(), a.output_padding.dims(), a.groups,
                                a.dilation.dims());
}

// ---- pooling. No stride means stride = kernel_size.
struct MaxPool2dArgs {
  std::optional<IntPair> stride;
  IntPair padding = 0, dilation = 1;
  bool ceil_mode = false;
};
struct AvgPool2dArgs {
  std::optional<IntPair> stride;
  IntPair padding = 0;
  bool ceil_mode = false, count_include_pad = true;
  std::optional<int64_t> divisor_override;
};
inline Tensor max_pool2d(const Tensor& x, IntPair kernel_size, const MaxPool2dArgs& a = {}) {
  return kiln::max_pool2d(x, kernel_size.dims(), a.stride.value_or(kernel_size).dims(), a.padding.dims(),
                          a.dilation.dims(), a.ceil_mode);
}
// max_pool2d(relu(x)) in one op that pools first, with the same values and gradients: the layer
// nn::MaxPool2dReLU, and what Sequential runs for a ReLU followed by a MaxPool2d.
inline Tensor max_pool2d_relu(const Tensor& x, IntPair kernel_size, const MaxPool2dArgs& a = {}) {
  return kiln::max_pool2d_relu(x, kernel_size.dims(), a.stride.value_or(kernel_size).dims(), a.padding.dims(),
                               a.dilation.dims(), a.ceil_mode);
}
inline Tensor avg_pool2d(const Tensor& x, IntPair kernel_size, const AvgPool2dArgs& a = {}) {
  return kiln::avg_pool2d(x, kernel_size.dims(), a.stride.value_or(kernel_size).dims(), a.padding.dims(),
                          a.ceil_mode, a.count_include_pad, a.divisor_override);
}
inline Tensor adaptive_avg_pool2d(const Tensor& x, IntPair output_size) {
  return kiln::adaptive_avg_pool2d(x, output_size.dims());
}

// ---- normalisation, with torch's signatures already. batch_norm updates running_mean and
// running_var in place when training.
using kiln::batch_norm;
using kiln::group_norm;
using kiln::layer_norm;
using kiln::rms_norm;

// ---- embedding: rows of weight (V, D) picked by integer indices, giving (*indices.shape, D). The
// row at padding_idx (negative counts from V) gets no gradient, as in torch. torch's argument
// order (indices first) for kiln::embedding.
inline Tensor embedding(const Tensor& indices, const Tensor& weight,
                        std::optional<int64_t> padding_idx = std::nullopt) {
  return kiln::embedding(weight, indices, padding_idx);
}

// ---- dropout: zeroes each element with probability p and scales the rest by 1/(1-p) when
// training; the identity otherwise. Draws from gen, or the device's default generator.
Tensor dropout(const Tensor& x, double p = 0.5, bool training = true, Generator* gen = nullptr);

// ---- attention. q (..., L, E), k (..., S, E), v (..., S, Ev) -> (..., L, Ev).
// attn_mask broadcasts to (..., L, S): bool (true = may attend) or float (added to the scores).
// is_causal masks position j > i (the upper-left triangle, as torch); scale defaults to 1/sqrt(E).
struct AttentionArgs {
  Tensor attn_mask;
  double dropout_p = 0.0;
  bool is_causal = false;
  std::optional<double> scale;
  Generator* generator = nullptr;
};
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args = {});
// The attention weights softmax(q k^T * scale + mask) before dropout, for need_weights.
Tensor attention_weights(const Tensor& q, const Tensor& k, const AttentionArgs& args = {});

// ---- losses. batchmean is kl_div's alone.
enum class Reduction { none, mean, sum, batchmean };

struct CrossEntropyArgs {
  Tensor weight;               // (C) per-class weights
  int64_t ignore_index = -100; // class-index targets only
  Reduction reduction = Reduction::mean;
  double label_smoothing = 0.0;
};
// input: logits (N, C, d1...) or (C); target: class indices (N, d1...) / () as int64, or class
// probabilities of input's shape (floating).
Tensor cross_entropy(const Tensor& input, const Tensor& target, const CrossEntropyArgs& args = {});

struct NllLossArgs {
  Tensor weight;
  int64_t ignore_index = -100;
  Reduction reduction = Reduction::mean;
};
// input: log-probabilities (N, C, d1...) or (C); target: int64 class indices (N, d1...) or ().
Tensor nll_loss(const Tensor& input, const Tensor& target, const NllLossArgs& args = {});

struct LossArgs {
  Reduction reduction = Reduction::mean;
};
Tensor mse_loss(const Tensor& input, const Tensor& target, const LossArgs& args = {});
Tensor l1_loss(const Tensor& input, const Tensor& target, const LossArgs& args = {});

struct SmoothL1Args {
  Reduction reduction = Reduction::mean;
  double beta = 1.0;  // 0 gives l1_loss
};
Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, const SmoothL1Args& args = {});

struct BceWithLogitsArgs {
  Tensor weight;      // broadcasts to input
  Tensor pos_weight;  // broadcasts to input along the class (last) dim
  Reduction reduction = Reduction::mean;
};
Tensor binary_cross_entropy_with_logits(const Tensor& input, const Tensor& target, const BceWithLogitsArgs& args = {});

struct KlDivArgs {
  Reduction reduction = Reduction::mean;  // torch's default; batchmean is the mathematically right one
  bool log_target = false;
};
// input: log-probabilities; target: probabilities (or log-probabilities when log_target).
Tensor kl_div(const Tensor& input, const Tensor& target, const KlDivArgs& args = {});

}  // namespace kiln::nn::functional

namespace kiln::nn {
namespace F = functional;
}  // namespace kiln::nn
