// Pooling op definitions: max_pool2d (with indices, and fused with a ReLU), avg_pool2d and
// adaptive_avg_pool2d, each a forward that records one node and the explicit backward that node
// calls. torch's checks and output sizes (ceil_mode included); an unbatched (C,H,W) input is a
// batch of 1. Kernels: kernels/cpu/pool.cpp.
#include <array>

#include "autograd/ops/layer_node.h"
#include "autograd/ops/nn_ops.h"
#include "tensor/dispatch.h"

namespace kiln {
namespace {

std::array<int64_t, 2> pair_arg(const Dims& v, const char* what, const char* op) {
  KILN_CHECK(v.size() == 1 || v.size() == 2, op, ": ", what, " takes 1 or 2 values, got ", v);
  return {v[0], v[v.size() - 1]};
}

void check_input(const Tensor& x, const char* op) {
  KILN_CHECK(x.defined(), op, ": got an undefined input");
  KILN_CHECK(x.dim() == 3 || x.dim() == 4, op, ": expected a 3-d (C,H,W) or 4-d (N,C,H,W) input, got shape ",
             x.shape());
  KILN_CHECK(x.is_floating(), op, ": expected a floating input, got ", x.dtype());
  for (int d = x.dim() - 3; d < x.dim(); ++d)
    KILN_CHECK(x.size(d) > 0, op, ": expected non-empty channel and spatial dims, got shape ", x.shape());
}

// torch's pooling_output_shape: floor or ceil division; with ceil_mode the last window must start
// inside the input or its left padding.
int64_t pooled_size(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dil, bool ceil_mode) {
  const int64_t num = in + 2 * pad - dil * (k - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  int64_t out = (num >= 0 ? num / stride : -((-num + stride - 1) / stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

// (N,C,H,W) -> (N,C,oh,ow), dropping N again for an unbatched input.
Dims pooled_shape(const Dims& in, int64_t oh, int64_t ow) {
  Dims s = in;
  s[s.size() - 2] = oh;
  s[s.size() - 1] = ow;
  return s;
}

Tensor as_batched(const Tensor& t) { return (t.dim() == 3 ? t.unsqueeze(0) : t).contiguous(); }

// Checks kernel, stride, padding and dilation and gives the params and the output shape.
PoolParams pool_params(const Dims& input_shape, const Dims& kernel_size, const Dims& stride, const Dims& padding,
                       const Dims& dilation, bool ceil_mode, const char* op, Dims& out_shape) {
  PoolParams p;
  p.kernel = pair_arg(kernel_size, "kernel_size", op);
  p.stride = stride.empty() ? p.kernel : pair_arg(stride, "stride", op);
  p.padding = pair_arg(padding, "padding", op);
  p.dilation = pair_arg(dilation, "dilation", op);
  p.ceil_mode = ceil_mode;
  KILN_CHECK(p.kernel[0] > 0 && p.kernel[1] > 0, op, ": kernel_size must be positive, got ", kernel_size);
  KILN_CHECK(p.stride[0] > 0 && p.stride[1] > 0, op, ": stride must be positive, got ", stride);
  KILN_CHECK(p.dilation[0] > 0 && p.dilation[1] > 0, op, ": dilation must be positive, got ", dilation);
  KILN_CHECK(p.padding[0] >= 0 && p.padding[1] >= 0, op, ": padding must be non-negative, got ", padding);
  KILN_CHECK(p.padding[0] <= p.kernel[0] / 2 && p.padding[1] <= p.kernel[1] / 2, op,
             ": padding must be at most half the kernel size, got padding ", padding, " for kernel_size ",
             kernel_size);
  const int n = input_shape.size();
  const int64_t H = input_shape[n - 2], W = input_shape[n - 1];
  const int64_t oh = pooled_size(H, p.kernel[0], p.padding[0], p.stride[0], p.dilation[0], ceil_mode);
  const int64_t ow = pooled_size(W, p.kernel[1], p.padding[1], p.stride[1], p.dilation[1], ceil_mode);
  KILN_CHECK(oh > 0 && ow > 0, op, ": input of shape ", input_shape, " gives an output of ", oh, " x ", ow,
             " for kernel_size ", kernel_size, ", padding ", padding, " and dilation ", dilation,
             "; the output must not be empty");
  out_shape = pooled_shape(input_shape, oh, ow);
  return p;
}

// Checks a backward's grad_out against the output shape its forward would give.
void check_grad_out(const Tensor& grad_out, const Dims& expected, const char* op) {
  KILN_CHECK(grad_out.defined() && grad_out.shape() == expected, op, ": expected grad_out of shape ", expected,
             " (the forward's output), got ", grad_out.defined() ? grad_out.shape() : Dims{});
  KILN_CHECK(grad_out.is_floating(), op, ": expected a floating grad_out, got ", grad_out.dtype());
}

void check_input_shape(const Dims& input_shape, const char* op) {
  KILN_CHECK(input_shape.size() == 3 || input_shape.size() == 4, op,
             ": expected a 3-d or 4-d input shape, got ", input_shape);
}

Dims batched_shape(const Dims& s) {
  Dims b = s;
  if (b.size() == 3) b.insert(0, 1);
  return b;
}

}  // namespace

namespace {
// max_pool2d, or with `relu` the fused max_pool2d(relu(x)). Its node keeps the argmax positions
// (and, fused, the output for ReLU's mask), not the input.
TensorPair max_pool_values_and_indices(const Tensor& x, const Dims& kernel_size, const Dims& stride, const Dims& padding,
                                       const Dims& dilation, bool ceil_mode, bool relu) {
  const char* op = relu ? "max_pool2d_relu" : "max_pool2d";
  TensorPair r;
  {
    NoGradGuard untracked;
    check_input(x, op);
    Dims out_shape;
    PoolParams p = pool_params(x.shape(), kernel_size, stride, padding, dilation, ceil_mode, op, out_shape);
    p.relu = relu;
    const Dims out4 = batched_shape(out_shape);
    Tensor values = make_tensor(out4, x.dtype(), x.device());
    Tensor indices = make_tensor(out4, DType::i64, x.device());
    dispatch<Op::max_pool2d>(x.device(), as_batched(x), p, values, indices);
    r = {values.view(out_shape), indices.view(out_shape)};
  }
  if (autograd::needs_grad(x))
    autograd::record(op, r.values, {x},
                     [indices = r.indices, sy = relu ? SavedTensor(r.values) : SavedTensor(),
                      shape = x.shape()](const Tensor& g, Needs) {
                       return max_pool2d_backward(g, indices, shape, sy.get());
                     });
  return r;
}
}  // namespace

TensorPair max_pool2d_with_indices(const Tensor& x, const Dims& kernel_size, const Dims& stride, const Dims& padding,
                                   const Dims& dilation, bool ceil_mode) {
  return max_pool_values_and_indices(x, kernel_size, stride, padding, dilation, ceil_mode, false);
}

Tensor max_pool2d(const Tensor& x, const Dims& kernel_size, const Dims& stride, const Dims& padding,
                  const Dims& dilation, bool ceil_mode) {
  return max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode).values;
}

// Note [Fused pooling and ReLU]: max_pool2d(relu(x)) as one op that pools first, the order
// Sequential runs a ReLU followed by a MaxPool2d in (Note [Pooling before ReLU] in
// nn/containers.cpp). The pooling kernel passes each maximum through ReLU as it stores it (a
// window with no positive or NaN element gives the zero relu(x) would put first in it), and its
// backward applies ReLU's mask (output <= 0, NaN passing) to grad_out as it scatters, so the pooled
// tensor is neither read again forward nor masked in a pass of its own backward (measured in
// bench/README.md, "Fusions"). Values and gradients are max_pool2d(relu(x))'s, bit for bit.
TensorPair max_pool2d_relu_with_indices(const Tensor& x, const Dims& kernel_size, const Dims& stride,
                                        const Dims& padding, const Dims& dilation, bool ceil_mode) {
  return max_pool_values_and_indices(x, kernel_size, stride, padding, dilation, ceil_mode, true);
}

Tensor max_pool2d_relu(const Tensor& x, const Dims& kernel_size, const Dims& stride, const Dims& padding,
                       const Dims& dilation, bool ceil_mode) {
  return max_pool2d_relu_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode).values;
}

Tensor max_pool2d_backward(const Tensor& grad_out, const Tensor& indices, const Dims& input_shape,
                           const Tensor& relu_output) {
  const char* op = "max_pool2d_backward";
  detail::refuse_recording(op, grad_out, relu_output);
  check_input_shape(input_shape, op);
  KILN_CHECK(grad_out.defined() && indices.defined(), op, ": got an undefined grad_out or indices");
  KILN_CHECK(grad_out.is_floating(), op, ": expected a floating grad_out, got ", grad_out.dtype());
  KILN_CHECK(indices.dtype() == DType::i64, op, ": expected int64 indices, got ", indices.dtype());
  KILN_CHECK(grad_out.shape() == indices.shape() && grad_out.dim() == input_shape.size(), op, ": grad_out of shape ",
             grad_out.shape(), " and indices of shape ", indices.shape(), " do not match each other or the input shape ",
             input_shape);
  for (int d = 0; d < input_shape.size() - 2; ++d)
    KILN_CHECK(grad_out.size(d) == input_shape[d], op, ": grad_out of shape ", grad_out.shape(),
               " does not match the batch and channel dims of the input shape ", input_shape);
  KILN_CHECK(!relu_output.defined() || (relu_output.shape() == grad_out.shape() &&
                                        relu_output.dtype() == grad_out.dtype() &&
                                        relu_output.device() == grad_out.device()),
             op, ": relu_output ", relu_output.shape(), " ", relu_output.dtype(), " on ", relu_output.device(),
             " does not match grad_out ", grad_out.shape(), " ", grad_out.dtype(), " on ", grad_out.device());
  Tensor grad_x = make_tensor(batched_shape(input_shape), grad_out.dtype(), grad_out.device());
  const Tensor mask = relu_output.defined() ? as_batched(relu_output) : Tensor();
  dispatch<Op::max_pool2d_backward>(grad_out.device(), as_batched(grad_out), as_batched(indices), mask, grad_x);
  return grad_x.view(input_shape);
}

Tensor avg_pool2d(const Tensor& x, const Dims& kernel_size, const Dims& stride, const Dims& padding, bool ceil_mode,
                  bool count_include_pad, std::optional<int64_t> divisor_override) {
  const char* op = "avg_pool2d";
  Tensor out;
  {
    NoGradGuard untracked;
    check_input(x, op);
    KILN_CHECK(!divisor_override || *divisor_override != 0, op, ": divisor_override must be non-zero");
    Dims out_shape;
    PoolParams p = pool_params(x.shape(), kernel_size, stride, padding, {1}, ceil_mode, op, out_shape);
    p.count_include_pad = count_include_pad;
    p.divisor_override = divisor_override.value_or(0);
    out = make_tensor(batched_shape(out_shape), x.dtype(), x.device());
    dispatch<Op::avg_pool2d>(x.device(), as_batched(x), p, out);
    out = out.view(out_shape);
  }
  if (autograd::needs_grad(x))
    autograd::record(op, out, {x},
                     [shape = x.shape(), kernel_size, stride, padding, ceil_mode, count_include_pad,
                      divisor_override](const Tensor& g, Needs) {
                       return avg_pool2d_backward(g, shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                                  divisor_override);
                     });
  return out;
}

Tensor avg_pool2d_backward(const Tensor& grad_out, const Dims& input_shape, const Dims& kernel_size, const Dims& stride,
                           const Dims& padding, bool ceil_mode, bool count_include_pad,
                           std::optional<int64_t> divisor_override) {
  const char* op = "avg_pool2d_backward";
  detail::refuse_recording(op, grad_out);
  check_input_shape(input_shape, op);
  KILN_CHECK(!divisor_override || *divisor_override != 0, op, ": divisor_override must be non-zero");
  Dims out_shape;
  PoolParams p = pool_params(input_shape, kernel_size, stride, padding, {1}, ceil_mode, op, out_shape);
  p.count_include_pad = count_include_pad;
  p.divisor_override = divisor_override.value_or(0);
  check_grad_out(grad_out, out_shape, op);
  Tensor grad_x = make_tensor(batched_shape(input_shape), grad_out.dtype(), grad_out.device());
  dispatch<Op::avg_pool2d_backward>(grad_out.device(), as_batched(grad_out), p, grad_x);
  return grad_x.view(input_shape);
}

Tensor adaptive_avg_pool2d(const Tensor& x, const Dims& output_size) {
  const char* op = "adaptive_avg_pool2d";
  Tensor out;
  {
    NoGradGuard untracked;
    check_input(x, op);
    const std::array<int64_t, 2> size = pair_arg(output_size, "output_size", op);
    KILN_CHECK(size[0] >= 0 && size[1] >= 0, op, ": output_size must be non-negative, got ", output_size);
    const Dims out_shape = pooled_shape(x.shape(), size[0], size[1]);
    out = make_tensor(batched_shape(out_shape), x.dtype(), x.device());
    dispatch<Op::adaptive_avg_pool2d>(x.device(), as_batched(x), PoolParams{}, out);
    out = out.view(out_shape);
  }
  if (autograd::needs_grad(x))
    autograd::record(op, out, {x}, [shape = x.shape()](const Tensor& g, Needs) {
      return adaptive_avg_pool2d_backward(g, shape);
    });
  return out;
}

Tensor adaptive_avg_pool2d_backward(const Tensor& grad_out, const Dims& input_shape) {
  const char* op = "adaptive_avg_pool2d_backward";
  detail::refuse_recording(op, grad_out);
  check_input_shape(input_shape, op);
  KILN_CHECK(grad_out.defined() && grad_out.dim() == input_shape.size(), op, ": expected a ", input_shape.size(),
             "-d grad_out for input shape ", input_shape, ", got ", grad_out.defined() ? grad_out.shape() : Dims{});
  check_grad_out(grad_out, pooled_shape(input_shape, grad_out.size(-2), grad_out.size(-1)), op);
  Tensor grad_x = make_tensor(batched_shape(input_shape), grad_out.dtype(), grad_out.device());
  dispatch<Op::adaptive_avg_pool2d_backward>(grad_out.device(), as_batched(grad_out), PoolParams{}, grad_x);
  return grad_x.view(input_shape);
}

}  // namespace kiln
