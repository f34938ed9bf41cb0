// Direct f32 convolution for layers with few input channels (see Note [Few-channel convolution]
// in conv_direct.cpp). Internal to kernels/cpu: conv.cpp decides when to call it. Not here: the
// input gradient, other dtypes, strides, dilation, groups.
#pragma once

#include <cstdint>

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]

// A plain convolution's geometry as the direct kernels take it: src (N,C,H,W), weight (O,C,kh,kw),
// dst (N,O,Ho,Wo), stride 1, dilation 1, one group; pad_top/pad_left are the zero rows/columns
// before the input, and rows/columns past it read zero (or are never read).
struct DirectConvShape {
  int64_t n, c, h, w, o, ho, wo, kh, kw, pad_top, pad_left;
};

// True when the shape is one the kernels take (at every ISA level): stride 1, dilation 1, one
// group (the caller checks those) and at most kDirectConvTaps weights per output channel, each
// output row at least 16 wide.
bool direct_conv_takes(const DirectConvShape& s);

// dst = conv(src, weight) + bias (bias may be null). All buffers contiguous.
void direct_conv_forward_f32(const DirectConvShape& s, const float* src, const float* weight, const float* bias,
                             float* dst);

// diff_weight (O,C,kh,kw) and, when not null, diff_bias (O) from src and diff_dst.
void direct_conv_backward_weights_f32(const DirectConvShape& s, const float* src, const float* diff_dst,
                                      float* diff_weight, float* diff_bias);

}  // namespace kiln::cpu
