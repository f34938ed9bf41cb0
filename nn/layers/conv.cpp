// Conv1d, Conv2d and ConvTranspose2d (see conv.h).
#include "nn/layers/conv.h"

#include "nn/init.h"
#include "tensor/factories.h"

namespace kiln::nn {

namespace {

void check_channels(const char* layer, int64_t in, int64_t out, int64_t groups) {
  KILN_CHECK(groups > 0, layer, ": groups must be a positive integer, got ", groups);
  KILN_CHECK(in > 0 && out > 0, layer, ": channel counts must be positive, got in_channels=", in,
             ", out_channels=", out);
  KILN_CHECK(in % groups == 0, layer, ": in_channels (", in, ") must be divisible by groups (", groups, ")");
  KILN_CHECK(out % groups == 0, layer, ": out_channels (", out, ") must be divisible by groups (", groups, ")");
}

std::string pair_text(F::IntPair p) { return tuple_text(p.dims()); }
bool all_equal(F::IntPair p, int64_t v) { return p.h == v && p.w == v; }

// torch's _ConvNd.extra_repr: options are printed only where they differ from their defaults.
std::string conv_repr(int64_t in, int64_t out, const std::string& kernel, const std::string& stride,
                      const std::string& padding, bool padding_default, const std::string& dilation,
                      bool dilation_default, const std::string& output_padding, bool output_padding_default,
                      int64_t groups, bool bias) {
  std::string s = detail::concat(in, ", ", out, ", kernel_size=", kernel, ", stride=", stride);
  if (!padding_default) s += ", padding=" + padding;
  if (!dilation_default) s += ", dilation=" + dilation;
  if (!output_padding_default) s += ", output_padding=" + output_padding;
  if (groups != 1) s += detail::concat(", groups=", groups);
  if (!bias) s += ", bias=False";
  return s;
}

}  // namespace

Conv1d::Conv1d(int64_t in, int64_t out, int64_t k, Conv1dOptions opts)
    : Module("Conv1d"), in_channels(in), out_channels(out), kernel_size(k), options(opts) {
  check_channels("Conv1d", in, out, opts.groups);
  KILN_CHECK(k > 0, "Conv1d: kernel_size must be positive, got ", k);
  weight = register_parameter("weight", empty({out, in / opts.groups, k}));
  if (opts.bias) bias = register_parameter("bias", empty({out}));
  reset_parameters();
}

void Conv1d::reset_parameters(Generator* gen) { init::default_layer_init(weight, bias, gen); }

Tensor Conv1d::forward(const Tensor& x) {
  return F::conv1d(x, weight, bias, {options.stride, options.padding, options.dilation, options.groups});
}

std::string Conv1d::extra_repr() const {
  auto one = [](int64_t v) { return tuple_text({v}); };
  return conv_repr(in_channels, out_channels, one(kernel_size), one(options.stride), one(options.padding),
                   options.padding == 0, one(options.dilation), options.dilation == 1, "", true, options.groups,
                   bias.defined());
}

Conv2d::Conv2d(int64_t in, int64_t out, F::IntPair k, Conv2dOptions opts)
    : Module("Conv2d"), in_channels(in), out_channels(out), kernel_size(k), options(opts) {
  check_channels("Conv2d", in, out, opts.groups);
  KILN_CHECK(k.h > 0 && k.w > 0, "Conv2d: kernel_size must be positive, got ", tuple_text(k.dims()));
  weight = register_parameter("weight", empty({out, in / opts.groups, k.h, k.w}));
  if (opts.bias) bias = register_parameter("bias", empty({out}));
  reset_parameters();
}

void Conv2d::reset_parameters(Generator* gen) { init::default_layer_init(weight, bias, gen); }

Tensor Conv2d::forward(const Tensor& x) {
  return F::conv2d(x, weight, bias,
                   {.stride = options.stride, .padding = options.padding, .dilation = options.dilation,
                    .groups = options.groups});
}

std::string Conv2d::extra_repr() const {
  return conv_repr(in_channels, out_channels, pair_text(kernel_size), pair_text(options.stride),
                   pair_text(options.padding), all_equal(options.padding, 0), pair_text(options.dilation),
                   all_equal(options.dilation, 1), "", true, options.groups, bias.defined());
}

ConvTranspose2d::ConvTranspose2d(int64_t in, int64_t out, F::IntPair k, ConvTranspose2dOptions opts)
    : Module("ConvTranspose2d"), in_channels(in), out_channels(out), kernel_size(k), options(opts) {
  check_channels("ConvTranspose2d", in, out, opts.groups);
  KILN_CHECK(k.h > 0 && k.w > 0, "ConvTranspose2d: kernel_size must be positive, got ", tuple_text(k.dims()));
  weight = register_parameter("weight", empty({in, out / opts.groups, k.h, k.w}));
  if (opts.bias) bias = register_parameter("bias", empty({out}));
  reset_parameters();
}

// torch computes the fans of the (in, out/groups, k) weight as it would a convolution's, so the
// bound is 1/sqrt(out/groups * kh * kw).
void ConvTranspose2d::reset_parameters(Generator* gen) { init::default_layer_init(weight, bias, gen); }

Tensor ConvTranspose2d::forward(const Tensor& x) {
  return F::conv_transpose2d(x, weight, bias,
                             {.stride = options.stride, .padding = options.padding,
                              .output_padding = options.output_padding, .groups = options.groups,
                              .dilation = options.dilation});
}

std::string ConvTranspose2d::extra_repr() const {
  return conv_repr(in_channels, out_channels, pair_text(kernel_size), pair_text(options.stride),
                   pair_text(options.padding), all_equal(options.padding, 0), pair_text(options.dilation),
                   all_equal(options.dilation, 1), pair_text(options.output_padding),
                   all_equal(options.output_padding, 0), options.groups, bias.defined());
}

}  // namespace kiln::nn
