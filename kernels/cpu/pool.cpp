// CPU 2-d pooling, forward and backward: max (with torch's flat per-plane indices), average and
// adaptive average. Every kernel walks (H,W) planes, one plane per task, in parallel over N*C:
// pooling is memory-bound, so each plane is read once and each gradient plane written once (its
// zero fill fused with the scatter). Not here: output sizes and checks (autograd/ops/pool.cpp).
// x, grad_out, indices arrive contiguous (N,C,H,W); outputs are contiguous.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cpu/convert.h"
#include "kernels/cpu/lanes.h"
#include "kernels/cpu/lanes16.h"
#include "kernels/cpu/loops.h"
#include "tensor/dispatch.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

// Planes per task: enough that a task moves ~32K elements.
int64_t plane_grain(int64_t plane) { return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, plane)); }

// The window of output position o along one dim: [start, end) stepping by dilation, clipped to
// the input (the first tap moved up by whole dilations while it lies in the padding).
struct Window {
  int64_t start, end;
};
inline Window max_window(int64_t o, int64_t size, int64_t k, int64_t s, int64_t pad, int64_t dil) {
  int64_t start = o * s - pad;
  const int64_t end = std::min(start + (k - 1) * dil + 1, size);
  while (start < 0) start += dil;
  return {start, end};
}

// ---------------------------------------------------------------------------------------------
// max_pool2d

// The fused pool + ReLU's value for a window whose maximum is `best` and whose first element (in
// scan order) is `first`, as the written order relu-then-pool computes it: a positive or NaN
// maximum is kept; otherwise every element is a zero after ReLU, the first one wins the tie, and
// it is -0 only where `first` is -0 (ReLU keeps -0 and turns negatives into +0). Taking
// relu(best) instead would give -0 for a window (-1, -0) where the written order gives +0.
template <class C>
inline C pooled_relu(C best, C first) {
  if (best > C(0) || std::isnan(best)) return best;
  return first == C(0) && std::signbit(first) ? -C(0) : C(0);
}

// One plane; ties keep the first maximum in row-major order and a NaN wins, as in torch.
template <class T>
void max_pool_plane(const T* x, int64_t H, int64_t W, T* out, int64_t* idx, int64_t Ho, int64_t Wo, const PoolParams& p) {
  using C = compute_t<T>;
  for (int64_t oh = 0; oh < Ho; ++oh) {
    const Window wh = max_window(oh, H, p.kernel[0], p.stride[0], p.padding[0], p.dilation[0]);
    for (int64_t ow = 0; ow < Wo; ++ow) {
      const Window ww = max_window(ow, W, p.kernel[1], p.stride[1], p.padding[1], p.dilation[1]);
      // A dilated window can lie wholly in the padding: -inf, as torch, with index -1 (no element;
      // torch's index there points outside the window, and its backward adds the gradient there).
      const bool empty = wh.start >= wh.end || ww.start >= ww.end;
      C best = -std::numeric_limits<C>::infinity();
      int64_t best_at = empty ? -1 : wh.start * W + ww.start;
      for (int64_t h = wh.start; h < wh.end; h += p.dilation[0])
        for (int64_t w = ww.start; w < ww.end; w += p.dilation[1]) {
          const C v = static_cast<C>(x[h * W + w]);
          if (v > best || std::isnan(v)) { best = v; best_at = h * W + w; }
        }
      if (p.relu && !empty) best = pooled_relu(best, static_cast<C>(x[wh.start * W + ww.start]));
      out[oh * Wo + ow] = convert<T>(best);
      idx[oh * Wo + ow] = best_at;
    }
  }
}

// The CNN case: 2x2 windows, stride 2, no padding or dilation. On random data the comparisons
// are coin flips, so a branchy loop mispredicts ~3 times per output; this one is a SIMD loop of
// selects, tracking the winner as a 2-bit code (bit 0: right column, bit 1: lower row) whose width
// matches the values', and turning it into a flat index only at the store.
template <class T>
void max_pool_plane_2x2(const T* x, int64_t W, T* out, int64_t* idx, int64_t Ho, int64_t Wo, bool relu) {
  using C = compute_t<T>;
  for (int64_t oh = 0; oh < Ho; ++oh) {
    const T* r0 = x + 2 * oh * W;
    const T* r1 = r0 + W;
    T* o = out + oh * Wo;
    int64_t* io = idx + oh * Wo;
    const int64_t base = 2 * oh * W;
#pragma omp simd
    for (int64_t ow = 0; ow < Wo; ++ow) {
      const C a = static_cast<C>(r0[2 * ow]), b = static_cast<C>(r0[2 * ow + 1]);
      const C c = static_cast<C>(r1[2 * ow]), d = static_cast<C>(r1[2 * ow + 1]);
      // v != v: a NaN wins, and only a later NaN replaces it (torch's scan order).
      C best = a;
      int32_t code = 0;
      const bool take_b = (b > best) | (b != b);  // `|`, not `||`: no branch
      best = take_b ? b : best;
      code = take_b ? 1 : code;
      const bool take_c = (c > best) | (c != c);
      best = take_c ? c : best;
      code = take_c ? 2 : code;
      const bool take_d = (d > best) | (d != d);
      best = take_d ? d : best;
      code = take_d ? 3 : code;
      o[ow] = convert<T>(relu ? pooled_relu(best, a) : best);
      io[ow] = base + 2 * ow + (code & 1) + (code >> 1) * W;
    }
  }
}

// The same for f32, one register of lanes at a time (lanes.h): at CNN widths (Wo of 7 or 14) the
// loop above is mostly its scalar tail. A register of outputs per step, even and odd columns split
// by shuffles, and the last step partial, so every width stays vectorised. Flat indices are built
// in int32 (the caller checks that a plane fits) and widened at the store.
using lanes::f32v;
using lanes::i32v;
using lanes::i64v;
using lanes::kWidth;

constexpr int64_t kHalf = kWidth / 2;

// Lane k holds k.
inline i32v lane_numbers() {
  return []<size_t... k>(std::index_sequence<k...>) { return i32v{static_cast<int32_t>(k)...}; }(
      std::make_index_sequence<kWidth>());
}

// Shuffles of two registers a and b read as one list of 2 * kWidth lanes, a's first.
template <class V>
inline V even_lanes(V a, V b) {
  return [&]<size_t... k>(std::index_sequence<k...>) { return __builtin_shufflevector(a, b, (2 * k)...); }(
      std::make_index_sequence<kWidth>());
}
template <class V>
inline V odd_lanes(V a, V b) {
  return [&]<size_t... k>(std::index_sequence<k...>) { return __builtin_shufflevector(a, b, (2 * k + 1)...); }(
      std::make_index_sequence<kWidth>());
}
// Half `half` (0: low, 1: high) of `left` and of `right`, interleaved, left first (a row of
// windows' left and right corners).
template <int half>
inline f32v interleave(f32v left, f32v right) {
  return [&]<size_t... k>(std::index_sequence<k...>) {
    return __builtin_shufflevector(left, right, (half * kHalf + k / 2 + k % 2 * kWidth)...);
  }(std::make_index_sequence<kWidth>());
}
// v's high half moved down to lanes 0..kHalf - 1.
inline f32v high_half(f32v v) {
  return [&]<size_t... k>(std::index_sequence<k...>) { return __builtin_shufflevector(v, v, (k + kHalf) % kWidth...); }(
      std::make_index_sequence<kWidth>());
}
// Half `half` of v, widened to int64.
template <int half>
inline i64v widen(i32v v) {
  return [&]<size_t... k>(std::index_sequence<k...>) {
    return __builtin_convertvector(__builtin_shufflevector(v, v, (half * kHalf + k)...), i64v);
  }(std::make_index_sequence<kHalf>());
}

// pooled_relu, lane-wise: best where it is > 0 or NaN, else a zero with `first`'s sign where
// `first` is -0 (its sign bit alone) and +0 otherwise.
inline f32v pooled_relu(f32v best, f32v first) {
  constexpr int32_t kSign = std::numeric_limits<int32_t>::min();
  const i32v negative_zero = reinterpret_cast<i32v>(first) == kSign;
  return best <= 0.0f ? reinterpret_cast<f32v>(negative_zero & kSign) : best;
}

// Each lane's window maximum over its top-left element `first` and the other three `candidates`
// (top-right, bottom-left, bottom-right); a NaN wins, and only a later NaN replaces it (torch's
// scan order). Returns the maximum, with the offset of its element from the top-left in `step`
// (0, 1, W or W + 1 for rows W apart).
inline f32v window_max(f32v first, const f32v (&candidates)[3], int64_t W, i32v& step) {
  const int32_t steps[3] = {1, static_cast<int32_t>(W), static_cast<int32_t>(W + 1)};
  f32v best = first;
  step = i32v{};
  for (int c = 0; c < 3; ++c) {
    const f32v v = candidates[c];
    const i32v take = (v > best) | (v != v);
    best = take ? v : best;
    step = take ? i32v{} + steps[c] : step;
  }
  return best;
}

void max_pool_plane_2x2_f32(const float* x, int64_t W, float* out, int64_t* idx, int64_t Ho, int64_t Wo, bool relu) {
  const i32v lane = lane_numbers();
  for (int64_t oh = 0; oh < Ho; ++oh) {
    const float* r0 = x + 2 * oh * W;
    const float* r1 = r0 + W;
    const int32_t base = static_cast<int32_t>(2 * oh * W);
    for (int64_t ow = 0; ow < Wo; ow += kWidth) {
      const int64_t n = std::min<int64_t>(kWidth, Wo - ow), lo = std::min<int64_t>(2 * n, kWidth), hi = 2 * n - lo;
      const f32v r0a = lanes::load_first(r0 + 2 * ow, lo), r0b = lanes::load_first(r0 + 2 * ow + kWidth, hi);
      const f32v r1a = lanes::load_first(r1 + 2 * ow, lo), r1b = lanes::load_first(r1 + 2 * ow + kWidth, hi);
      const f32v candidates[3] = {odd_lanes(r0a, r0b), even_lanes(r1a, r1b), odd_lanes(r1a, r1b)};
      const f32v first = even_lanes(r0a, r0b);
      i32v step;
      f32v best = window_max(first, candidates, W, step);
      const i32v offset = (base + static_cast<int32_t>(2 * ow)) + lane + lane + step;
      if (relu) best = pooled_relu(best, first);
      lanes::store_first(out + oh * Wo + ow, best, n);
      int64_t* io = idx + oh * Wo + ow;
      lanes::store_first(io, widen<0>(offset), std::min(n, kHalf));
      lanes::store_first(io + kHalf, widen<1>(offset), std::max<int64_t>(0, n - kHalf));
    }
  }
}

// Outputs at most kWidth / 2 wide (the CNN's 14x14 -> 7x7 with AVX-512) would leave most of a
// register idle: two output rows share one, the low half for row oh and the high half for row
// oh + 1.
void max_pool_plane_2x2_f32_narrow(const float* x, int64_t W, float* out, int64_t* idx, int64_t Ho, int64_t Wo,
                                   bool relu) {
  // Lane k < kHalf takes column 2k (+1) of the first register, lane kHalf + k column 2k (+1) of the second.
  const i32v lane = lane_numbers();
  const i32v column = 2 * (lane % static_cast<int32_t>(kHalf));
  const i32v upper = lane >= static_cast<int32_t>(kHalf);
  for (int64_t oh = 0; oh < Ho; oh += 2) {
    const bool pair = oh + 1 < Ho;
    const float* r0 = x + 2 * oh * W;
    const f32v t0 = lanes::load_first(r0, 2 * Wo), b0 = lanes::load_first(r0 + W, 2 * Wo);
    const f32v t1 = pair ? lanes::load_first(r0 + 2 * W, 2 * Wo) : f32v{};
    const f32v b1 = pair ? lanes::load_first(r0 + 3 * W, 2 * Wo) : f32v{};
    const f32v candidates[3] = {odd_lanes(t0, t1), even_lanes(b0, b1), odd_lanes(b0, b1)};
    const f32v first = even_lanes(t0, t1);
    i32v step;
    f32v best = window_max(first, candidates, W, step);
    const i32v corner = column + static_cast<int32_t>(2 * oh * W) + (upper & static_cast<int32_t>(2 * W));
    const i32v offset = corner + step;
    if (relu) best = pooled_relu(best, first);
    lanes::store_first(out + oh * Wo, best, Wo);
    lanes::store_first(idx + oh * Wo, widen<0>(offset), Wo);
    if (!pair) break;
    lanes::store_first(out + (oh + 1) * Wo, high_half(best), Wo);
    lanes::store_first(idx + (oh + 1) * Wo, widen<1>(offset), Wo);
  }
}

// Note [16-bit pooling through f32]: the 2x2 fast paths are written over f32 lanes; a bf16/f16
// plane is converted to f32 (exact), pooled there, and the results rounded back, which is exact
// too: a max (or a routed gradient, or 0) is one of the plane's own values. So 16-bit planes get
// the same bits as the element-by-element path at the f32 kernels' speed.
void max_pool2d_cpu(const Tensor& x, const PoolParams& p, Tensor& out, Tensor& indices) {
  if (out.numel() == 0) return;
  const int64_t H = x.size(2), W = x.size(3), Ho = out.size(2), Wo = out.size(3);
  const bool two_by_two = p.kernel == std::array<int64_t, 2>{2, 2} && p.stride == std::array<int64_t, 2>{2, 2} &&
                          p.padding == std::array<int64_t, 2>{0, 0} && p.dilation == std::array<int64_t, 2>{1, 1} &&
                          2 * Ho <= H && 2 * Wo <= W;
  visit_floating(x.dtype(), "max_pool2d", [&]<class T>() {
    const T* px = static_cast<const T*>(x.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    int64_t* pi = static_cast<int64_t*>(indices.data_ptr());
    const bool fast_2x2 = two_by_two && H * W <= std::numeric_limits<int32_t>::max();
    const auto plane_2x2 = Wo <= kHalf ? max_pool_plane_2x2_f32_narrow : max_pool_plane_2x2_f32;
    parallel_for(x.size(0) * x.size(1), plane_grain(H * W), [&](int64_t b, int64_t e) {
      std::vector<float> in32, out32;  // Note [16-bit pooling through f32]
      if constexpr (lanes::kIs16<T>)
        if (fast_2x2) in32.resize(static_cast<size_t>(H * W)), out32.resize(static_cast<size_t>(Ho * Wo));
      for (int64_t k = b; k < e; ++k) {
        if constexpr (std::is_same_v<T, float>)
          if (fast_2x2) {
            plane_2x2(px + k * H * W, W, po + k * Ho * Wo, pi + k * Ho * Wo, Ho, Wo, p.relu);
            continue;
          }
        if constexpr (lanes::kIs16<T>)
          if (fast_2x2) {
            lanes::to_f32(px + k * H * W, in32.data(), H * W);
            plane_2x2(in32.data(), W, out32.data(), pi + k * Ho * Wo, Ho, Wo, p.relu);
            lanes::from_f32(out32.data(), po + k * Ho * Wo, Ho * Wo);
            continue;
          }
        if (two_by_two) max_pool_plane_2x2<T>(px + k * H * W, W, po + k * Ho * Wo, pi + k * Ho * Wo, Ho, Wo, p.relu);
        else max_pool_plane<T>(px + k * H * W, H, W, po + k * Ho * Wo, pi + k * Ho * Wo, Ho, Wo, p);
      }
    });
  });
}

// Note [Dense 2x2 max-pool backward]: when the input tiles exactly into 2x2 windows (H = 2 Ho,
// W = 2 Wo, the CNN case), each input position belongs to one window, so its gradient is g where
// the window's index points at it and 0 elsewhere: one streaming write per position, where the
// general path fills the plane and then scatters into it. The indices carry no kernel size, so
// each is checked to lie in its own window; a plane where one does not (indices from overlapping
// windows of the same output size, or bad ones) returns false and is redone by the general path,
// which also reports bad indices. Written once over lanes.h's registers, as the forward above.

// ReLU's backward mask on its output: not (y <= 0), so a NaN passes its gradient, as relu_backward.
inline i32v relu_passes(f32v y) { return ~(y <= 0.0f); }

// One gradient per lane split into its window's four corners: each lane in `in` goes to the corner
// its index points at, found from the index's offset from the window's top-left element (lanes
// 0..kHalf - 1 in `low`, the rest in `high`; rows W apart). False when an index in `in` lies
// outside its window. Lanes outside `in` hold a zero gradient, so their corner does not matter.
struct Corners {
  f32v top_left, top_right, bottom_left, bottom_right;
};
inline bool split_by_corner(f32v g, i64v low, i64v high, i32v in, int64_t W, Corners& c) {
  // Compared in int32, lined up with g's lanes: each int64 offset's low half, where its high half
  // (`above`) is 0 for every offset inside the window (W + 1 fits in int32: the caller checks).
  const i32v offset = even_lanes(reinterpret_cast<i32v>(low), reinterpret_cast<i32v>(high));
  const i32v above = odd_lanes(reinterpret_cast<i32v>(low), reinterpret_cast<i32v>(high));
  const int32_t w = static_cast<int32_t>(W);
  const i32v tl = offset == 0, tr = offset == 1, bl = offset == w, br = offset == w + 1;
  if (lanes::any(in & (above | ~(tl | tr | bl | br)))) return false;
  const f32v zero = {};
  c = {tl ? g : zero, tr ? g : zero, bl ? g : zero, br ? g : zero};
  return true;
}

// y, when not null, is the fused pool + ReLU's output: g counts as 0 where y <= 0 (NaN passes).
bool max_pool_backward_plane_2x2_f32(const float* go, const int64_t* ix, const float* y, float* gx, int64_t Wo,
                                     int64_t Ho) {
  const int64_t W = 2 * Wo;
  const i32v lane = lane_numbers();
  const i64v lane2 = 2 * widen<0>(lane);  // 0, 2, 4, ...: the low half's corners
  for (int64_t oh = 0; oh < Ho; ++oh) {
    float* r0 = gx + 2 * oh * W;
    float* r1 = r0 + W;
    for (int64_t ow = 0; ow < Wo; ow += kWidth) {
      const int64_t n = std::min<int64_t>(kWidth, Wo - ow), n_low = std::min(n, kHalf);
      f32v g = lanes::load_first(go + oh * Wo + ow, n);
      if (y) g = relu_passes(lanes::load_first(y + oh * Wo + ow, n)) ? g : f32v{};
      const i64v corner = (2 * oh * W + 2 * ow) + lane2;
      const i64v low = lanes::load_first(ix + oh * Wo + ow, n_low) - corner;
      const i64v high = lanes::load_first(ix + oh * Wo + ow + kHalf, n - n_low) - (corner + kWidth);
      Corners c;
      if (!split_by_corner(g, low, high, lane < static_cast<int32_t>(n), W, c)) return false;
      const int64_t first = std::min<int64_t>(2 * n, kWidth), second = 2 * n - first;
      lanes::store_first(r0 + 2 * ow, interleave<0>(c.top_left, c.top_right), first);
      lanes::store_first(r0 + 2 * ow + kWidth, interleave<1>(c.top_left, c.top_right), second);
      lanes::store_first(r1 + 2 * ow, interleave<0>(c.bottom_left, c.bottom_right), first);
      lanes::store_first(r1 + 2 * ow + kWidth, interleave<1>(c.bottom_left, c.bottom_right), second);
    }
  }
  return true;
}

// Outputs at most kWidth / 2 wide: two output rows per register, as max_pool_plane_2x2_f32_narrow.
bool max_pool_backward_plane_2x2_f32_narrow(const float* go, const int64_t* ix, const float* y, float* gx, int64_t Wo,
                                            int64_t Ho) {
  const int64_t W = 2 * Wo;
  const i32v lane = lane_numbers();
  const i64v column = 2 * widen<0>(lane);
  const i32v in_row = lane % static_cast<int32_t>(kHalf) < static_cast<int32_t>(Wo);
  // Rows oh and oh + 1 lie next to each other: lane kHalf + k takes element Wo + k of the pair.
  const i32v spread = lane < static_cast<int32_t>(kHalf) ? lane : lane - static_cast<int32_t>(kHalf - Wo);
  for (int64_t oh = 0; oh < Ho; oh += 2) {
    const bool pair = oh + 1 < Ho;
    const int64_t second = pair ? Wo : 0;
    // Low half: output row oh; high half: row oh + 1 (lanes past Wo in each half are not stored).
    const auto two_rows = [&](const float* p) {
      return __builtin_shuffle(lanes::load_first(p + oh * Wo, Wo + second), spread);
    };
    f32v g = two_rows(go);
    if (y) g = relu_passes(two_rows(y)) ? g : f32v{};
    const i64v low = lanes::load_first(ix + oh * Wo, Wo) - (column + 2 * oh * W);
    const i64v high = lanes::load_first(ix + (oh + 1) * Wo, second) - (column + 2 * (oh + 1) * W);
    Corners c;
    if (!split_by_corner(g, low, high, pair ? in_row : in_row & (lane < static_cast<int32_t>(kHalf)), W, c))
      return false;
    float* r0 = gx + 2 * oh * W;
    lanes::store_first(r0, interleave<0>(c.top_left, c.top_right), W);
    lanes::store_first(r0 + W, interleave<0>(c.bottom_left, c.bottom_right), W);
    if (!pair) break;
    lanes::store_first(r0 + 2 * W, interleave<1>(c.top_left, c.top_right), W);
    lanes::store_first(r0 + 3 * W, interleave<1>(c.bottom_left, c.bottom_right), W);
  }
  return true;
}

// grad_x plane = 0, then grad_out scattered to the recorded positions (windows may overlap, so
// one position can collect several gradients); index -1 (an empty window) scatters nothing.
void max_pool2d_backward_cpu(const Tensor& grad_out, const Tensor& indices, const Tensor& relu_output,
                             Tensor& grad_x) {
  if (grad_x.numel() == 0) return;
  const int64_t plane = grad_x.size(2) * grad_x.size(3), Ho = grad_out.size(2), Wo = grad_out.size(3);
  const int64_t out_plane = Ho * Wo;
  const bool tiles_2x2 = grad_x.size(2) == 2 * grad_out.size(2) && grad_x.size(3) == 2 * grad_out.size(3) &&
                         grad_x.size(3) < std::numeric_limits<int32_t>::max();
  visit_floating(grad_x.dtype(), "max_pool2d_backward", [&]<class T>() {
    using C = compute_t<T>;
    const T* pg = static_cast<const T*>(grad_out.data_ptr());
    const int64_t* pi = static_cast<const int64_t*>(indices.data_ptr());
    const T* py = relu_output.defined() ? static_cast<const T*>(relu_output.data_ptr()) : nullptr;
    T* px = static_cast<T*>(grad_x.data_ptr());
    constexpr int64_t kNone = std::numeric_limits<int64_t>::min();
    std::atomic<int64_t> bad_index{kNone};  // an index outside its plane: reported after the loop
    const auto dense_2x2 = Wo <= kHalf ? max_pool_backward_plane_2x2_f32_narrow : max_pool_backward_plane_2x2_f32;
    parallel_for(grad_x.size(0) * grad_x.size(1), plane_grain(plane), [&](int64_t b, int64_t e) {
      std::vector<float> go32, y32, gx32;  // Note [16-bit pooling through f32]
      if constexpr (lanes::kIs16<T>)
        if (tiles_2x2) {
          go32.resize(static_cast<size_t>(out_plane)), gx32.resize(static_cast<size_t>(plane));
          if (py) y32.resize(static_cast<size_t>(out_plane));
        }
      for (int64_t k = b; k < e; ++k) {
        T* gx = px + k * plane;
        const T* go = pg + k * out_plane;
        const int64_t* ix = pi + k * out_plane;
        const T* y = py ? py + k * out_plane : nullptr;
        if constexpr (std::is_same_v<T, float>)
          if (tiles_2x2 && dense_2x2(go, ix, y, gx, Wo, Ho)) continue;
        if constexpr (lanes::kIs16<T>)
          if (tiles_2x2) {
            lanes::to_f32(go, go32.data(), out_plane);
            if (y) lanes::to_f32(y, y32.data(), out_plane);
            if (dense_2x2(go32.data(), ix, y ? y32.data() : nullptr, gx32.data(), Wo, Ho)) {
              lanes::from_f32(gx32.data(), gx, plane);
              continue;
            }
          }
        std::fill(gx, gx + plane, T(0));
        for (int64_t j = 0; j < out_plane; ++j) {
          const int64_t at = ix[j];
          if (at == -1) continue;  // a window wholly in the padding: its output came from no element
          if (at < 0 || at >= plane) { bad_index.store(at, std::memory_order_relaxed); continue; }
          // ReLU's mask (a NaN output passes); a masked gradient is still added as +0, as relu_backward's
          // output would be, so a -0 already there becomes +0 as in the composition.
          const C g = y && static_cast<C>(y[j]) <= C(0) ? C(0) : static_cast<C>(go[j]);
          gx[at] = convert<T>(static_cast<C>(gx[at]) + g);
        }
      }
    });
    const int64_t bad = bad_index.load();
    KILN_CHECK(bad == kNone, "max_pool2d_backward: index ", bad, " lies outside its ", grad_x.size(2), "x",
               grad_x.size(3), " plane; pass the indices max_pool2d returned");
  });
}

// ---------------------------------------------------------------------------------------------
// avg_pool2d

// torch's averaging window along one dim: the divisor counts the padding the window covers (up
// to size + pad), the sum only the input.
struct AvgWindow {
  int64_t start, end, padded_len;
};
inline AvgWindow avg_window(int64_t o, int64_t size, int64_t k, int64_t s, int64_t pad) {
  const int64_t start = o * s - pad;
  const int64_t end = std::min(start + k, size + pad);
  return {std::max<int64_t>(start, 0), std::min(end, size), end - start};
}

inline int64_t avg_divisor(const AvgWindow& wh, const AvgWindow& ww, const PoolParams& p) {
  if (p.divisor_override) return p.divisor_override;
  if (p.count_include_pad) return wh.padded_len * ww.padded_len;
  return (wh.end - wh.start) * (ww.end - ww.start);
}

void avg_pool2d_cpu(const Tensor& x, const PoolParams& p, Tensor& out) {
  if (out.numel() == 0) return;
  const int64_t H = x.size(2), W = x.size(3), Ho = out.size(2), Wo = out.size(3);
  visit_floating(x.dtype(), "avg_pool2d", [&]<class T>() {
    using C = compute_t<T>;
    const T* px = static_cast<const T*>(x.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    parallel_for(x.size(0) * x.size(1), plane_grain(H * W), [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const T* xp = px + k * H * W;
        T* op = po + k * Ho * Wo;
        for (int64_t oh = 0; oh < Ho; ++oh) {
          const AvgWindow wh = avg_window(oh, H, p.kernel[0], p.stride[0], p.padding[0]);
          for (int64_t ow = 0; ow < Wo; ++ow) {
            const AvgWindow ww = avg_window(ow, W, p.kernel[1], p.stride[1], p.padding[1]);
            C sum = 0;
            for (int64_t h = wh.start; h < wh.end; ++h)
              for (int64_t w = ww.start; w < ww.end; ++w) sum += static_cast<C>(xp[h * W + w]);
            const int64_t div = avg_divisor(wh, ww, p);
            // A window wholly in the padding (ceil_mode, count_include_pad=False) has divisor 0:
            // torch returns 0/0 there too, so keep the NaN.
            op[oh * Wo + ow] = convert<T>(sum / static_cast<C>(div));
          }
        }
      }
    });
  });
}

void avg_pool2d_backward_cpu(const Tensor& grad_out, const PoolParams& p, Tensor& grad_x) {
  if (grad_x.numel() == 0) return;
  const int64_t H = grad_x.size(2), W = grad_x.size(3), Ho = grad_out.size(2), Wo = grad_out.size(3);
  visit_floating(grad_x.dtype(), "avg_pool2d_backward", [&]<class T>() {
    using C = compute_t<T>;
    const T* pg = static_cast<const T*>(grad_out.data_ptr());
    T* px = static_cast<T*>(grad_x.data_ptr());
    parallel_for(grad_x.size(0) * grad_x.size(1), plane_grain(H * W), [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        T* gx = px + k * H * W;
        const T* go = pg + k * Ho * Wo;
        std::fill(gx, gx + H * W, T(0));
        for (int64_t oh = 0; oh < Ho; ++oh) {
          const AvgWindow wh = avg_window(oh, H, p.kernel[0], p.stride[0], p.padding[0]);
          for (int64_t ow = 0; ow < Wo; ++ow) {
            const AvgWindow ww = avg_window(ow, W, p.kernel[1], p.stride[1], p.padding[1]);
            const C g = static_cast<C>(go[oh * Wo + ow]) / static_cast<C>(avg_divisor(wh, ww, p));
            for (int64_t h = wh.start; h < wh.end; ++h)
              for (int64_t w = ww.start; w < ww.end; ++w) gx[h * W + w] = convert<T>(static_cast<C>(gx[h * W + w]) + g);
          }
        }
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// adaptive_avg_pool2d: output cell i of `out` covers [floor(i*in/out), ceil((i+1)*in/out)).

inline int64_t adaptive_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
inline int64_t adaptive_end(int64_t i, int64_t in, int64_t out) { return ((i + 1) * in + out - 1) / out; }

void adaptive_avg_pool2d_cpu(const Tensor& x, const PoolParams&, Tensor& out) {
  if (out.numel() == 0) return;
  const int64_t H = x.size(2), W = x.size(3), Ho = out.size(2), Wo = out.size(3);
  visit_floating(x.dtype(), "adaptive_avg_pool2d", [&]<class T>() {
    using C = compute_t<T>;
    const T* px = static_cast<const T*>(x.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    parallel_for(x.size(0) * x.size(1), plane_grain(H * W), [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const T* xp = px + k * H * W;
        T* op = po + k * Ho * Wo;
        for (int64_t oh = 0; oh < Ho; ++oh) {
          const int64_t h0 = adaptive_start(oh, H, Ho), h1 = adaptive_end(oh, H, Ho);
          for (int64_t ow = 0; ow < Wo; ++ow) {
            const int64_t w0 = adaptive_start(ow, W, Wo), w1 = adaptive_end(ow, W, Wo);
            C sum = 0;
            for (int64_t h = h0; h < h1; ++h)
              for (int64_t w = w0; w < w1; ++w) sum += static_cast<C>(xp[h * W + w]);
            op[oh * Wo + ow] = convert<T>(sum / static_cast<C>((h1 - h0) * (w1 - w0)));
          }
        }
      }
    });
  });
}

void adaptive_avg_pool2d_backward_cpu(const Tensor& grad_out, const PoolParams&, Tensor& grad_x) {
  if (grad_x.numel() == 0) return;
  const int64_t H = grad_x.size(2), W = grad_x.size(3), Ho = grad_out.size(2), Wo = grad_out.size(3);
  visit_floating(grad_x.dtype(), "adaptive_avg_pool2d_backward", [&]<class T>() {
    using C = compute_t<T>;
    const T* pg = static_cast<const T*>(grad_out.data_ptr());
    T* px = static_cast<T*>(grad_x.data_ptr());
    parallel_for(grad_x.size(0) * grad_x.size(1), plane_grain(H * W), [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        T* gx = px + k * H * W;
        const T* go = pg + k * Ho * Wo;
        std::fill(gx, gx + H * W, T(0));
        for (int64_t oh = 0; oh < Ho; ++oh) {
          const int64_t h0 = adaptive_start(oh, H, Ho), h1 = adaptive_end(oh, H, Ho);
          for (int64_t ow = 0; ow < Wo; ++ow) {
            const int64_t w0 = adaptive_start(ow, W, Wo), w1 = adaptive_end(ow, W, Wo);
            const C g = static_cast<C>(go[oh * Wo + ow]) / static_cast<C>((h1 - h0) * (w1 - w0));
            for (int64_t h = h0; h < h1; ++h)
              for (int64_t w = w0; w < w1; ++w) gx[h * W + w] = convert<T>(static_cast<C>(gx[h * W + w]) + g);
          }
        }
      }
    });
  });
}

}  // namespace

KILN_REGISTER_KERNEL(Op::max_pool2d, DeviceType::cpu, max_pool2d_cpu);
KILN_REGISTER_KERNEL(Op::max_pool2d_backward, DeviceType::cpu, max_pool2d_backward_cpu);
KILN_REGISTER_KERNEL(Op::avg_pool2d, DeviceType::cpu, avg_pool2d_cpu);
KILN_REGISTER_KERNEL(Op::avg_pool2d_backward, DeviceType::cpu, avg_pool2d_backward_cpu);
KILN_REGISTER_KERNEL(Op::adaptive_avg_pool2d, DeviceType::cpu, adaptive_avg_pool2d_cpu);
KILN_REGISTER_KERNEL(Op::adaptive_avg_pool2d_backward, DeviceType::cpu, adaptive_avg_pool2d_backward_cpu);

}  // namespace kiln::cpu
