// The differentiable convolutions, pooling, normalisations and embedding: each forward kernel of
// autograd/ops/nn_ops.h runs with recording off, then one node is recorded whose backward calls
// the matching explicit backward (llm.c's forward/backward pairs, on the tape).
#include "autograd/ops/indexing.h"
#include "autograd/ops/nn_ops.h"
#include "autograd/record.h"
#include "nn/functional.h"
#include "tensor/factories.h"

namespace kiln::nn::functional {

namespace {

LayerGradMask mask_of(Needs need) { return {need[0], need[1], need[2]}; }
TensorList list_of(LayerGrads g) { return {std::move(g.input), std::move(g.weight), std::move(g.bias)}; }

}  // namespace

// ---- convolution

Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv1dArgs& a) {
  Tensor out;
  {
    NoGradGuard no_grad;
    out = kiln::conv1d(x, weight, bias, a.stride, a.padding, a.dilation, a.groups);
  }
  if (autograd::needs_grad(x, weight, bias))
    autograd::record("conv1d", out, {x, weight, bias},
                     [sx = SavedTensor(x), sw = SavedTensor(weight), a](const Tensor& g, Needs need) {
                       return list_of(kiln::conv1d_backward(g, sx.get(), sw.get(), a.stride, a.padding, a.dilation,
                                                            a.groups, mask_of(need)));
                     });
  return out;
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dArgs& a) {
  Tensor out;
  {
    NoGradGuard no_grad;
    out = kiln::conv2d(x, weight, bias, a.stride.dims(), a.padding.dims(), a.dilation.dims(), a.groups);
  }
  if (autograd::needs_grad(x, weight, bias))
    autograd::record("conv2d", out, {x, weight, bias},
                     [sx = SavedTensor(x), sw = SavedTensor(weight), a](const Tensor& g, Needs need) {
                       return list_of(kiln::conv2d_backward(g, sx.get(), sw.get(), a.stride.dims(), a.padding.dims(),
                                                            a.dilation.dims(), a.groups, mask_of(need)));
                     });
  return out;
}

Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvTranspose2dArgs& a) {
  Tensor out;
  {
    NoGradGuard no_grad;
    out = kiln::conv_transpose2d(x, weight, bias, a.stride.dims(), a.padding.dims(), a.output_padding.dims(), a.groups,
                                  a.dilation.dims());
  }
  if (autograd::needs_grad(x, weight, bias))
    autograd::record("conv_transpose2d", out, {x, weight, bias},
                     [sx = SavedTensor(x), sw = SavedTensor(weight), a](const Tensor& g, Needs need) {
                       return list_of(kiln::conv_transpose2d_backward(g, sx.get(), sw.get(), a.stride.dims(),
                                                                      a.padding.dims(), a.output_padding.dims(),
                                                                      a.groups, a.dilation.dims(), mask_of(need)));
                     });
  return out;
}

// ---- pooling

namespace {
// max_pool2d, or with `relu` the fused max_pool2d(relu(x)). Its node keeps the argmax positions
// (and, fused, the output for ReLU's mask), not the input.
Tensor recorded_max_pool(const Tensor& x, IntPair kernel_size, const MaxPool2dArgs& a, bool relu) {
  const auto pool = relu ? kiln::max_pool2d_relu_with_indices : kiln::max_pool2d_with_indices;
  TensorPair r;
  {
    NoGradGuard no_grad;
    r = pool(x, kernel_size.dims(), a.stride.value_or(kernel_size).dims(), a.padding.dims(), a.dilation.dims(),
             a.ceil_mode);
  }
  if (autograd::needs_grad(x))
    autograd::record(relu ? "max_pool2d_relu" : "max_pool2d", r.values, {x},
                     [indices = r.indices, sy = relu ? SavedTensor(r.values) : SavedTensor(),
                      shape = x.shape()](const Tensor& g, Needs) {
                       return kiln::max_pool2d_backward(g, indices, shape, sy.get());
                     });
  return r.values;
}
}  // namespace

Tensor max_pool2d(const Tensor& x, IntPair kernel_size, const MaxPool2dArgs& a) {
  return recorded_max_pool(x, kernel_size, a, false);
}

// Note [Fused pooling and ReLU]: max_pool2d(relu(x)) as one op that pools first, the order
// Sequential runs a ReLU followed by a MaxPool2d in (Note [Pooling before ReLU] in
// nn/containers.cpp). The pooling kernel passes each maximum through ReLU as it stores it (a
// window with no positive or NaN element gives the zero relu(x) would put first in it), and its
// backward applies ReLU's mask (output <= 0, NaN passing) to grad_out as it scatters, so the pooled
// tensor is neither read again forward nor masked in a pass of its own backward (in the demo CNN
// those two passes profiled at 0.8 ms of a 27.5 ms step; end to end the step gained 0.25 ms).
// Values and gradients are max_pool2d(relu(x))'s, bit for bit.
Tensor max_pool2d_relu(const Tensor& x, IntPair kernel_size, const MaxPool2dArgs& a) {
  return recorded_max_pool(x, kernel_size, a, true);
}

Tensor avg_pool2d(const Tensor& x, IntPair kernel_size, const AvgPool2dArgs& a) {
  const Dims kernel = kernel_size.dims(), stride = a.stride.value_or(kernel_size).dims(), padding = a.padding.dims();
  Tensor out;
  {
    NoGradGuard no_grad;
    out = kiln::avg_pool2d(x, kernel, stride, padding, a.ceil_mode, a.count_include_pad, a.divisor_override);
  }
  if (autograd::needs_grad(x))
    autograd::record("avg_pool2d", out, {x}, [shape = x.shape(), kernel, stride, padding, a](const Tensor& g, Needs) {
      return kiln::avg_pool2d_backward(g, shape, kernel, stride, padding, a.ceil_mode, a.count_include_pad,
                                       a.divisor_override);
    });
  return out;
}

Tensor adaptive_avg_pool2d(const Tensor& x, IntPair output_size) {
  Tensor out;
  {
    NoGradGuard no_grad;
    out = kiln::adaptive_avg_pool2d(x, output_size.dims());
  }
  if (autograd::needs_grad(x))
    autograd::record("adaptive_avg_pool2d", out, {x}, [shape = x.shape()](const Tensor& g, Needs) {
      return kiln::adaptive_avg_pool2d_backward(g, shape);
    });
  return out;
}

// ---- normalisation

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum, double eps) {
  NormOutput r;
  {
    NoGradGuard no_grad;
    r = kiln::batch_norm_forward(x, running_mean, running_var, weight, bias, training, momentum, eps);
  }
  if (autograd::needs_grad(x, weight, bias))
    autograd::record("batch_norm", r.output, {x, weight, bias},
                     [sx = SavedTensor(x), sw = SavedTensor(weight), mean = r.mean, rstd = r.rstd, training](
                         const Tensor& g, Needs need) {
                       return list_of(kiln::batch_norm_backward(g, sx.get(), sw.get(), mean, rstd, training,
                                                                mask_of(need)));
                     });
  return r.output;
}

Tensor layer_norm(const Tensor& x, const Dims& normalized_shape, const Tensor& weight, const Tensor& bias, double eps) {
  NormOutput r;
  {
    NoGradGuard no_grad;
    r = kiln::layer_norm_forward(x, normalized_shape, weight, bias, eps);
  }
  if (autograd::needs_grad(x, weight, bias))
    autograd::record("layer_norm", r.output, {x, weight, bias},
                     [sx = SavedTensor(x), sw = SavedTensor(weight), mean = r.mean, rstd = r.rstd, normalized_shape](
                         const Tensor& g, Needs need) {
                       return list_of(kiln::layer_norm_backward(g, sx.get(), normalized_shape, sw.get(), mean, rstd,
                                                                mask_of(need)));
                     });
  return r.output;
}

Tensor rms_norm(const Tensor& x, const Dims& normalized_shape, const Tensor& weight, std::optional<double> eps) {
  NormOutput r;
  {
    NoGradGuard no_grad;
    r = kiln::rms_norm_forward(x, normalized_shape, weight, eps);
  }
  if (autograd::needs_grad(x, weight))
    autograd::record("rms_norm", r.output, {x, weight},
                     [sx = SavedTensor(x), sw = SavedTensor(weight), rstd = r.rstd, normalized_shape](const Tensor& g,
                                                                                                       Needs need) {
                       LayerGrads grads = kiln::rms_norm_backward(g, sx.get(), normalized_shape, sw.get(), rstd,
                                                                  {need[0], need[1], false});
                       return TensorList{grads.input, grads.weight};
                     });
  return r.output;
}

Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias, double eps) {
  NormOutput r;
  {
    NoGradGuard no_grad;
    r = kiln::group_norm_forward(x, num_groups, weight, bias, eps);
  }
  if (autograd::needs_grad(x, weight, bias))
    autograd::record("group_norm", r.output, {x, weight, bias},
                     [sx = SavedTensor(x), sw = SavedTensor(weight), mean = r.mean, rstd = r.rstd, num_groups](
                         const Tensor& g, Needs need) {
                       return list_of(kiln::group_norm_backward(g, sx.get(), num_groups, sw.get(), mean, rstd,
                                                                mask_of(need)));
                     });
  return r.output;
}

// ---- embedding

Tensor embedding(const Tensor& indices, const Tensor& weight, std::optional<int64_t> padding_idx) {
  KILN_CHECK(weight.dim() == 2, "embedding: weight must be 2-d (num_embeddings, embedding_dim), got shape ",
             weight.shape());
  KILN_CHECK(!indices.is_floating() && indices.dtype() != DType::boolean,
             "embedding: indices must be an integer tensor, got ", indices.dtype());
  const int64_t rows = weight.size(0);
  if (padding_idx) {
    KILN_CHECK(*padding_idx >= -rows && *padding_idx < rows, "embedding: padding_idx ", *padding_idx,
               " is out of range for ", rows, " embeddings");
    if (*padding_idx < 0) *padding_idx += rows;
  }
  Tensor out;
  {
    NoGradGuard no_grad;
    out = kiln::embedding(weight, indices);
  }
  if (autograd::needs_grad(weight))
    autograd::record("embedding", out, {weight},
                     [flat = indices.reshape({-1}).to(DType::i64), shape = weight.shape(), padding_idx](const Tensor& g,
                                                                                                     Needs) {
                       // Rows picked several times sum their gradients; the padding row gets none.
                       Tensor grad = zeros(shape, {.dtype = g.dtype(), .device = g.device()});
                       grad = kiln::index_add(grad, 0, flat, g.reshape({-1, shape[1]}));
                       if (padding_idx) grad.select(0, *padding_idx).zero_();
                       return grad;
                     });
  return out;
}

}  // namespace kiln::nn::functional
