// Note [Few-channel convolution]: a first layer reads one to three input channels (1->32 3x3 in
// the demo CNN). oneDNN has no channels-last kernel worth using at so few channels and takes the
// 16-channel-blocked layout, so every call reorders its output (or, backward, the output's
// gradient) between blocked and NCHW, which costs more than the convolution itself; and its
// results then depend on the thread count. Here each output row is computed straight in NCHW, one
// register of columns at a time (lanes.h: 16 with AVX-512, 8 with AVX2, 4 with SSE2), as bias plus
// one FMA per weight over a zero-padded copy of the image's input planes; the backward-weights pass
// is the same walk with one register accumulator per weight, added lane-wise into doubles once per
// (image, output channel). Each sum has one order whatever the thread count, at every ISA level.
// bench/bench_conv.cpp times both passes against oneDNN (figures in bench/README.md).
#include "kernels/cpu/conv_direct.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/lanes.h"
#include "tensor/parallel.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

using lanes::f32v;
using lanes::kWidth;

// Weights per output channel (C * kh * kw) the kernels take: 3 channels of 3x3, or one of 5x5.
// Backward keeps one vector accumulator per weight (in registers for the compiled layouts).
constexpr int64_t kDirectConvTaps = 27;

// Output rows narrower than this leave most of an AVX-512 register idle. The same bound at every
// ISA level, so a shape takes the same path on every machine; it is at least kWidth, which
// forward_row needs.
constexpr int64_t kMinRowWidth = 16;
static_assert(kMinRowWidth >= kWidth);

}  // namespace

bool direct_conv_takes(const DirectConvShape& s) {
  return s.c * s.kh * s.kw <= kDirectConvTaps && s.wo >= kMinRowWidth;
}

namespace {

// One image's input planes with their zero border: (C, Hp, Wp), Hp = Ho + kh - 1, Wp = Wo + kw - 1,
// so output (oh, ow) reads rows oh..oh+kh-1 and columns ow..ow+kw-1 with no bounds checks.
struct PaddedImage {
  int64_t hp, wp;
  std::vector<float> data;

  explicit PaddedImage(const DirectConvShape& s)
      : hp(s.ho + s.kh - 1), wp(s.wo + s.kw - 1), data(static_cast<size_t>(s.c * hp * wp)) {}

  void load(const DirectConvShape& s, const float* image) {
    for (int64_t c = 0; c < s.c; ++c)
      for (int64_t r = 0; r < hp; ++r) {
        float* row = data.data() + (c * hp + r) * wp;
        const int64_t ih = r - s.pad_top;
        if (ih < 0 || ih >= s.h) {
          std::fill(row, row + wp, 0.0f);
          continue;
        }
        const float* in = image + (c * s.h + ih) * s.w;
        for (int64_t col = 0; col < wp; ++col) {
          const int64_t iw = col - s.pad_left;
          row[col] = iw >= 0 && iw < s.w ? in[iw] : 0.0f;
        }
      }
  }
};

// Lane-wise sums in double, kWidth per weight: a plane's float partial sums are added once per
// (image, output channel) without a horizontal sum (which, at kWidth serial adds per weight, costs
// as much as the plane's own FMAs), and summed across lanes once at the end.
void add_lanes(double* into, f32v v) {
  using f64v = double __attribute__((vector_size(8 * kWidth)));  // two registers: kept in this body
  f64v sum;
  std::memcpy(&sum, into, sizeof sum);
  sum += __builtin_convertvector(v, f64v);
  std::memcpy(into, &sum, sizeof sum);
}

double sum_lanes(const double* lane) {
  double sum = 0;
  for (int64_t k = 0; k < kWidth; ++k) sum += lane[k];
  return sum;
}

// Rows (C * kh, the input rows one output row reads) and Kw are compile-time where with_layout
// finds them, so the loops unroll, the vectors stay in registers and each load is one instruction
// (row offset in a register, column in the displacement); 0 means read them from the shape.
template <int Rows, int Kw>
struct Taps {
  int64_t rows, kw;
  int64_t row_offset[Rows ? Rows : kDirectConvTaps];  // of input row r = (c, i): (c * Hp + i) * Wp

  Taps(const DirectConvShape& s, const PaddedImage& x) : rows(Rows ? Rows : s.c * s.kh), kw(Kw ? Kw : s.kw) {
    for (int64_t r = 0; r < rows; ++r) row_offset[r] = (r / s.kh * x.hp + r % s.kh) * x.wp;
  }
  int64_t n_rows() const { return Rows ? Rows : rows; }
  int64_t n_cols() const { return Kw ? Kw : kw; }
  int64_t count() const { return n_rows() * n_cols(); }
};

// One output row of every output channel: each input vector is loaded once and serves all
// channels, whose sums (bias, then weights in (c, i, j) order) are independent chains. Where the
// row is not a whole number of registers, its last register ends at the row's end and overlaps
// the one before: the overlapped outputs are computed again, to the same values, by this thread.
template <int Rows, int Kw>
void forward_row(const DirectConvShape& s, const PaddedImage& x, const Taps<Rows, Kw>& taps, const float* w,
                 const float* bias, float* dst_image, int64_t oh) {
  const int64_t plane = s.ho * s.wo, n_taps = taps.count();
  for (int64_t step = 0; step < s.wo; step += kWidth) {
    const int64_t ow = std::min(step, s.wo - kWidth);
    const float* at = x.data.data() + oh * x.wp + ow;
    f32v in[Rows && Kw ? Rows * Kw : kDirectConvTaps];
    for (int64_t r = 0; r < taps.n_rows(); ++r)
      for (int64_t j = 0; j < taps.n_cols(); ++j) in[r * taps.n_cols() + j] = lanes::load(at + taps.row_offset[r] + j);
    float* out = dst_image + oh * s.wo + ow;
    for (int64_t o = 0; o < s.o; ++o) {
      const float* wo = w + o * n_taps;
      f32v acc = lanes::splat(bias ? bias[o] : 0.0f);
      // Unrolled, a channel's chain is short enough for the out-of-order core to overlap the next
      // channels' chains with it (GCC leaves 27 taps rolled, one FMA's latency per tap).
#pragma GCC unroll 32
      for (int64_t t = 0; t < n_taps; ++t) acc = lanes::fmadd(lanes::splat(wo[t]), in[t], acc);
      lanes::store(out + o * plane, acc);
    }
  }
}

// Lanes of sums[t] += g * (input under weight t) over the plane, and of sums[count] += g.
// (Two output channels per input load, tried for one channel of 3x3, ran 1.6x slower: GCC kept
// the 20 accumulators on the stack.)
// A row's last, partial register loads only its lanes (the rest read as zero, so they add exact
// zeros whatever the input holds there).
template <int Rows, int Kw>
void weights_plane(const DirectConvShape& s, const PaddedImage& x, const Taps<Rows, Kw>& taps, const float* g,
                   double* sums) {
  f32v acc[Rows && Kw ? Rows * Kw : kDirectConvTaps] = {};
  f32v acc_b = {};
  const auto accumulate = [&](int64_t oh, int64_t ow, auto load) {
    const f32v gv = load(g + oh * s.wo + ow);
    const float* at = x.data.data() + oh * x.wp + ow;
    acc_b += gv;
    for (int64_t r = 0; r < taps.n_rows(); ++r)
      for (int64_t j = 0; j < taps.n_cols(); ++j)
        acc[r * taps.n_cols() + j] = lanes::fmadd(gv, load(at + taps.row_offset[r] + j), acc[r * taps.n_cols() + j]);
  };
  const int64_t whole = s.wo / kWidth * kWidth, tail = s.wo - whole;
  for (int64_t oh = 0; oh < s.ho; ++oh) {
    for (int64_t ow = 0; ow < whole; ow += kWidth) accumulate(oh, ow, [](const float* p) { return lanes::load(p); });
    if (tail) accumulate(oh, whole, [tail](const float* p) { return lanes::load_first(p, tail); });
  }
  for (int64_t t = 0; t < taps.count(); ++t) add_lanes(sums + t * kWidth, acc[t]);
  add_lanes(sums + taps.count() * kWidth, acc_b);
}

// Calls f.template operator()<Rows, Kw>() with the compile-time layout where one exists: one or
// three channels of 3x3.
template <class F>
void with_layout(const DirectConvShape& s, F&& f) {
  if (s.kw == 3 && s.c * s.kh == 3) return f.template operator()<3, 3>();
  if (s.kw == 3 && s.c * s.kh == 9) return f.template operator()<9, 3>();
  return f.template operator()<0, 0>();
}

}  // namespace

void direct_conv_forward_f32(const DirectConvShape& s, const float* src, const float* weight, const float* bias,
                             float* dst) {
  with_layout(s, [&]<int Rows, int Kw>() {
    // Parallel over (image, output row); a task loads an image's padded planes once per image.
    parallel_for(s.n * s.ho, std::max<int64_t>(1, kElementwiseGrain / (s.o * s.wo)), [&](int64_t r0, int64_t r1) {
      PaddedImage x(s);
      const Taps<Rows, Kw> taps(s, x);
      int64_t loaded = -1;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t img = r / s.ho;
        if (img != loaded) x.load(s, src + img * s.c * s.h * s.w), loaded = img;
        forward_row(s, x, taps, weight, bias, dst + img * s.o * s.ho * s.wo, r % s.ho);
      }
    });
  });
}

void direct_conv_backward_weights_f32(const DirectConvShape& s, const float* src, const float* diff_dst,
                                      float* diff_weight, float* diff_bias) {
  const int64_t taps = s.c * s.kh * s.kw, plane = s.ho * s.wo;
  with_layout(s, [&]<int Rows, int Kw>() {
    // Parallel over output channels, each summing over every image in the same order: the result
    // does not depend on the thread count.
    parallel_for(s.o, 1, [&](int64_t o0, int64_t o1) {
      PaddedImage x(s);
      const Taps<Rows, Kw> layout(s, x);
      const int64_t slots = taps + 1;  // the weights, then the bias
      std::vector<double> sums(static_cast<size_t>((o1 - o0) * slots * kWidth), 0.0);
      for (int64_t img = 0; img < s.n; ++img) {
        x.load(s, src + img * s.c * s.h * s.w);
        for (int64_t o = o0; o < o1; ++o)
          weights_plane(s, x, layout, diff_dst + (img * s.o + o) * plane, sums.data() + (o - o0) * slots * kWidth);
      }
      for (int64_t o = o0; o < o1; ++o) {
        const double* own = sums.data() + (o - o0) * slots * kWidth;
        for (int64_t t = 0; t < taps; ++t) diff_weight[o * taps + t] = static_cast<float>(sum_lanes(own + t * kWidth));
        if (diff_bias) diff_bias[o] = static_cast<float>(sum_lanes(own + taps * kWidth));
      }
    });
  });
}

}  // namespace kiln::cpu
