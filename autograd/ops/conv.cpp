// Convolution op definitions: conv1d, conv2d and conv_transpose2d, each a forward that records one
// node and the explicit backward that node calls. Checks with torch's rules, output sizes, and one
// 4-d kernel call: conv1d is conv2d over a height of 1, an unbatched input is a batch of 1.
// Kernels: kernels/cpu/conv.cpp.
#include <algorithm>
#include <array>
#include <string>

#include "autograd/autocast.h"
#include "autograd/ops/layer_node.h"
#include "autograd/ops/nn_ops.h"
#include "tensor/dispatch.h"

namespace kiln {
namespace {

// A per-dim argument of `spatial` dims from 1 value (repeated) or `spatial` values, laid out as
// the 2-d kernel's (height, width): conv1d's single dim is the width, over a height of 1.
std::array<int64_t, 2> spatial_arg(const Dims& v, int spatial, int64_t height_value, const char* what, const char* op) {
  KILN_CHECK(v.size() == 1 || v.size() == spatial, op, ": ", what, " takes 1 or ", spatial, " values, got ", v);
  if (spatial == 1) return {height_value, v[0]};
  return {v[0], v[v.size() - 1]};
}

// "(a x b)" for the dims a message shows: only the real ones of conv1d.
std::string dims_text(const std::array<int64_t, 2>& v, int spatial) {
  return spatial == 1 ? std::to_string(v[1]) : std::to_string(v[0]) + " x " + std::to_string(v[1]);
}

struct ConvSetup {
  Tensor x, weight, bias;  // 4-d and contiguous (bias 1-d or undefined)
  ConvParams params;
  Dims out_shape;          // 4-d
  Dims user_out_shape;     // what the caller sees: unbatched and 1-d forms restored
  Device device;
};

// Checks a convolution's operands the way torch does and lays them out for the 4-d kernel.
ConvSetup setup_conv(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvParams& p, int spatial,
                     const char* op) {
  KILN_CHECK(x.defined() && weight.defined(), op, ": got an undefined input or weight");
  KILN_CHECK(x.dim() == spatial + 1 || x.dim() == spatial + 2, op, ": expected a ", spatial + 1, "-d (unbatched) or ",
             spatial + 2, "-d (batched) input, got shape ", x.shape());
  KILN_CHECK(weight.dim() == spatial + 2, op, ": expected a ", spatial + 2, "-d weight (",
             p.transposed ? "in_channels, out_channels/groups" : "out_channels, in_channels/groups",
             spatial == 1 ? ", k" : ", kh, kw", "), got shape ", weight.shape());
  KILN_CHECK(x.is_floating(), op, ": expected a floating input, got ", x.dtype());
  KILN_CHECK(weight.dtype() == x.dtype(), op, ": input dtype ", x.dtype(), " and weight dtype ", weight.dtype(),
             " differ");
  KILN_CHECK(!bias.defined() || bias.dtype() == x.dtype(), op, ": input dtype ", x.dtype(), " and bias dtype ",
             bias.dtype(), " differ");
  KILN_CHECK(x.device() == weight.device() && (!bias.defined() || bias.device() == x.device()), op,
             ": input, weight and bias must be on one device, got ", x.device(), " and ", weight.device());
  KILN_CHECK(p.groups > 0, op, ": groups must be positive, got ", p.groups);
  for (int d = 2 - spatial; d < 2; ++d) {
    KILN_CHECK(p.stride[d] > 0, op, ": stride must be positive, got ", dims_text(p.stride, spatial));
    KILN_CHECK(p.dilation[d] > 0, op, ": dilation must be positive, got ", dims_text(p.dilation, spatial));
    KILN_CHECK(p.padding[d] >= 0, op, ": padding must be non-negative, got ", dims_text(p.padding, spatial));
    KILN_CHECK(p.output_padding[d] >= 0 && (!p.transposed || p.output_padding[d] < std::max(p.stride[d], p.dilation[d])),
               op, ": output_padding must be non-negative and smaller than stride or dilation, got output_padding ",
               dims_text(p.output_padding, spatial), ", stride ", dims_text(p.stride, spatial), ", dilation ",
               dims_text(p.dilation, spatial));
  }

  ConvSetup s;
  s.params = p;
  s.device = x.device();
  Tensor x4 = x.dim() == spatial + 1 ? x.unsqueeze(0) : x;
  Tensor w4 = weight;
  if (spatial == 1) {
    x4 = x4.unsqueeze(2);
    w4 = w4.unsqueeze(2);
  }
  const int64_t N = x4.size(0), C = x4.size(1), G = p.groups;
  int64_t out_channels;
  if (!p.transposed) {
    KILN_CHECK(w4.size(0) % G == 0, op, ": out_channels (", w4.size(0), ", weight of shape ", weight.shape(),
               ") must be divisible by groups (", G, ")");
    KILN_CHECK(C == w4.size(1) * G, op, ": given groups=", G, ", weight of shape ", weight.shape(),
               " expects the input to have ", w4.size(1) * G, " channels, but input of shape ", x.shape(), " has ", C);
    out_channels = w4.size(0);
  } else {
    KILN_CHECK(C % G == 0, op, ": in_channels (", C, ", input of shape ", x.shape(), ") must be divisible by groups (",
               G, ")");
    KILN_CHECK(C == w4.size(0), op, ": weight of shape ", weight.shape(), " expects the input to have ", w4.size(0),
               " channels, but input of shape ", x.shape(), " has ", C);
    out_channels = w4.size(1) * G;
  }
  if (bias.defined())
    KILN_CHECK(bias.dim() == 1 && bias.size(0) == out_channels, op, ": expected a bias of shape [", out_channels,
               "], got ", bias.shape());

  const std::array<int64_t, 2> in{x4.size(2), x4.size(3)}, k{w4.size(2), w4.size(3)};
  std::array<int64_t, 2> out{};
  for (int d = 0; d < 2; ++d) {
    const int64_t span = p.dilation[d] * (k[d] - 1) + 1;  // the kernel's extent, dilation included
    if (!p.transposed) {
      const std::array<int64_t, 2> padded{in[0] + 2 * p.padding[0], in[1] + 2 * p.padding[1]};
      const std::array<int64_t, 2> spans{p.dilation[0] * (k[0] - 1) + 1, p.dilation[1] * (k[1] - 1) + 1};
      KILN_CHECK(padded[d] >= span, op, ": the padded input of size (", dims_text(padded, spatial),
                 ") is smaller than the dilated kernel (", dims_text(spans, spatial), "); input shape ", x.shape(),
                 ", weight shape ", weight.shape());
      out[d] = (padded[d] - span) / p.stride[d] + 1;
    } else {
      out[d] = (in[d] - 1) * p.stride[d] - 2 * p.padding[d] + span + p.output_padding[d];
      KILN_CHECK(out[d] > 0, op, ": input of shape ", x.shape(), " and weight of shape ", weight.shape(),
                 " give an output size of ", out[d], " (padding too large)");
    }
  }
  s.x = x4.contiguous();
  s.weight = w4.contiguous();
  s.bias = bias.defined() ? bias.contiguous() : bias;
  s.out_shape = {N, out_channels, out[0], out[1]};
  s.user_out_shape = s.out_shape;
  if (spatial == 1) s.user_out_shape.erase(2);
  if (x.dim() == spatial + 1) s.user_out_shape.erase(0);
  return s;
}

LayerGrads conv_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight, const ConvParams& p,
                         int spatial, LayerGradMask mask, const char* op) {
  detail::refuse_recording(op, grad_out, x, weight);
  const ConvSetup s = setup_conv(x, weight, Tensor(), p, spatial, op);
  KILN_CHECK(grad_out.defined() && grad_out.shape() == s.user_out_shape, op, ": expected grad_out of shape ",
             s.user_out_shape, " (the forward's output), got ",
             grad_out.defined() ? grad_out.shape() : Dims{});
  KILN_CHECK(grad_out.dtype() == x.dtype(), op, ": grad_out dtype ", grad_out.dtype(), " differs from input dtype ",
             x.dtype());
  const Tensor gy = grad_out.reshape(s.out_shape).contiguous();
  const int64_t out_channels = s.out_shape[1];
  Tensor gx = mask.input ? make_tensor(s.x.shape(), x.dtype(), s.device) : Tensor();
  Tensor gw = mask.weight ? make_tensor(s.weight.shape(), x.dtype(), s.device) : Tensor();
  Tensor gb = mask.bias ? make_tensor({out_channels}, x.dtype(), s.device) : Tensor();
  if (gx.defined() || gw.defined() || gb.defined())
    dispatch<Op::conv2d_backward>(s.device, gy, s.x, s.weight, s.params, gx, gw, gb);
  LayerGrads g;
  if (gx.defined()) g.input = gx.view(x.shape());
  if (gw.defined()) g.weight = gw.view(weight.shape());
  g.bias = gb;
  return g;
}

// The forward of every convolution: the kernel runs untracked (the reshapes of x would record
// nodes of their own), then one node whose backward is conv_backward with the same params.
Tensor conv_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvParams& p, int spatial,
                    const char* op, const char* backward_op) {
  Tensor out;
  {
    NoGradGuard untracked;
    const ConvSetup s = setup_conv(x, weight, bias, p, spatial, op);
    out = make_tensor(s.out_shape, x.dtype(), s.device);
    dispatch<Op::conv2d>(s.device, s.x, s.weight, s.bias, s.params, out);
    out = out.view(s.user_out_shape);
  }
  if (autograd::needs_grad(x, weight, bias))
    autograd::record(op, out, {x, weight, bias},
                     [sx = SavedTensor(x), sw = SavedTensor(weight), p, spatial, backward_op](const Tensor& g,
                                                                                              Needs need) {
                       return detail::grad_list(
                           conv_backward(g, sx.get(), sw.get(), p, spatial, detail::mask_of(need), backward_op));
                     });
  return out;
}

ConvParams params_2d(const Dims& stride, const Dims& padding, const Dims& dilation, const Dims& output_padding,
                     int64_t groups, bool transposed, const char* op) {
  ConvParams p;
  p.stride = spatial_arg(stride, 2, 1, "stride", op);
  p.padding = spatial_arg(padding, 2, 0, "padding", op);
  p.dilation = spatial_arg(dilation, 2, 1, "dilation", op);
  p.output_padding = spatial_arg(output_padding, 2, 0, "output_padding", op);
  p.groups = groups;
  p.transposed = transposed;
  return p;
}

ConvParams params_1d(int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  ConvParams p;
  p.stride = {1, stride};
  p.padding = {0, padding};
  p.dilation = {1, dilation};
  p.groups = groups;
  return p;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Dims& stride, const Dims& padding,
              const Dims& dilation, int64_t groups) {
  if (autocast::active())
    return autocast::run<autocast::Policy::lower_precision>(conv2d, x, weight, bias, stride, padding, dilation, groups);
  return conv_forward(x, weight, bias, params_2d(stride, padding, dilation, {0}, groups, false, "conv2d"), 2, "conv2d",
                      "conv2d_backward");
}

LayerGrads conv2d_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Dims& stride,
                           const Dims& padding, const Dims& dilation, int64_t groups, LayerGradMask mask) {
  const char* op = "conv2d_backward";
  return conv_backward(grad_out, x, weight, params_2d(stride, padding, dilation, {0}, groups, false, op), 2, mask, op);
}

Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding,
              int64_t dilation, int64_t groups) {
  if (autocast::active())
    return autocast::run<autocast::Policy::lower_precision>(conv1d, x, weight, bias, stride, padding, dilation, groups);
  return conv_forward(x, weight, bias, params_1d(stride, padding, dilation, groups), 1, "conv1d", "conv1d_backward");
}

LayerGrads conv1d_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight, int64_t stride,
                           int64_t padding, int64_t dilation, int64_t groups, LayerGradMask mask) {
  return conv_backward(grad_out, x, weight, params_1d(stride, padding, dilation, groups), 1, mask, "conv1d_backward");
}

Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Dims& stride,
                        const Dims& padding, const Dims& output_padding, int64_t groups, const Dims& dilation) {
  if (autocast::active())
    return autocast::run<autocast::Policy::lower_precision>(conv_transpose2d, x, weight, bias, stride, padding,
                                                            output_padding, groups, dilation);
  const char* op = "conv_transpose2d";
  return conv_forward(x, weight, bias, params_2d(stride, padding, dilation, output_padding, groups, true, op), 2, op,
                      "conv_transpose2d_backward");
}

LayerGrads conv_transpose2d_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Dims& stride,
                                     const Dims& padding, const Dims& output_padding, int64_t groups,
                                     const Dims& dilation, LayerGradMask mask) {
  const char* op = "conv_transpose2d_backward";
  return conv_backward(grad_out, x, weight, params_2d(stride, padding, dilation, output_padding, groups, true, op), 2,
                       mask, op);
}

}  // namespace kiln
