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

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "kernels/cpu/convert.h"
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

#ifdef __AVX512F__
// The same for f32, written out in AVX-512: at CNN widths (Wo of 7 or 14) the loop above is
// mostly its scalar tail. Sixteen outputs per step, even and odd columns split by permutes, and
// the last step masked, so every width stays vectorised. Flat indices are built in int32 (the
// caller checks that a plane fits) and widened at the store.
// pooled_relu, sixteen lanes: best where it is > 0 or NaN, else a zero with `first`'s sign where
// `first` is -0 (fpclass 0x04) and +0 otherwise.
inline __m512 pooled_relu(__m512 best, __m512 first) {
  const __mmask16 keep = _mm512_cmp_ps_mask(best, _mm512_setzero_ps(), _CMP_NLE_UQ);
  const __m512 zero = _mm512_maskz_mov_ps(_mm512_fpclass_ps_mask(first, 0x04), _mm512_set1_ps(-0.0f));
  return _mm512_mask_mov_ps(zero, keep, best);
}

// Each lane's window maximum over its top-left element `first` and the other three `candidates`
// (top-right, bottom-left, bottom-right); a NaN wins, and only a later NaN replaces it (torch's
// scan order). Returns the maximum, with the offset of its element from the top-left in `step`
// (0, 1, W or W + 1 for rows W apart).
inline __m512 window_max(__m512 first, const __m512 (&candidates)[3], int64_t W, __m512i& step) {
  const __m512i one = _mm512_set1_epi32(1), below = _mm512_set1_epi32(static_cast<int32_t>(W));
  const __m512i steps[3] = {one, below, _mm512_add_epi32(below, one)};
  __m512 best = first;
  step = _mm512_setzero_si512();
  for (int c = 0; c < 3; ++c) {
    const __m512 v = candidates[c];
    const __mmask16 take = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    best = _mm512_mask_mov_ps(best, take, v);
    step = _mm512_mask_mov_epi32(step, take, steps[c]);
  }
  return best;
}

void max_pool_plane_2x2_f32(const float* x, int64_t W, float* out, int64_t* idx, int64_t Ho, int64_t Wo, bool relu) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const auto low_bits = [](int64_t n) { return static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1); };
  for (int64_t oh = 0; oh < Ho; ++oh) {
    const float* r0 = x + 2 * oh * W;
    const float* r1 = r0 + W;
    const int32_t base = static_cast<int32_t>(2 * oh * W);
    for (int64_t ow = 0; ow < Wo; ow += 16) {
      const int64_t n = std::min<int64_t>(16, Wo - ow);
      const __mmask16 lo = low_bits(2 * n), hi = low_bits(2 * n - 16 > 0 ? 2 * n - 16 : 0), out_mask = low_bits(n);
      const __m512 r0a = _mm512_maskz_loadu_ps(lo, r0 + 2 * ow), r0b = _mm512_maskz_loadu_ps(hi, r0 + 2 * ow + 16);
      const __m512 r1a = _mm512_maskz_loadu_ps(lo, r1 + 2 * ow), r1b = _mm512_maskz_loadu_ps(hi, r1 + 2 * ow + 16);
      const __m512 candidates[3] = {_mm512_permutex2var_ps(r0a, odd, r0b), _mm512_permutex2var_ps(r1a, even, r1b),
                                    _mm512_permutex2var_ps(r1a, odd, r1b)};
      const __m512 first = _mm512_permutex2var_ps(r0a, even, r0b);
      __m512i step;
      __m512 best = window_max(first, candidates, W, step);
      const __m512i offset = _mm512_add_epi32(
          _mm512_add_epi32(_mm512_set1_epi32(base + static_cast<int32_t>(2 * ow)), _mm512_add_epi32(lane, lane)), step);
      if (relu) best = pooled_relu(best, first);
      _mm512_mask_storeu_ps(out + oh * Wo + ow, out_mask, best);
      // Zero-masked forms of the widening intrinsics: GCC 12 warns on the plain ones' undefined pass-through.
      const __m512i low = _mm512_maskz_cvtepi32_epi64(0xFF, _mm512_maskz_extracti64x4_epi64(0xF, offset, 0));
      const __m512i high = _mm512_maskz_cvtepi32_epi64(0xFF, _mm512_maskz_extracti64x4_epi64(0xF, offset, 1));
      int64_t* io = idx + oh * Wo + ow;
      _mm512_mask_storeu_epi64(io, static_cast<__mmask8>(out_mask), low);
      _mm512_mask_storeu_epi64(io + 8, static_cast<__mmask8>(out_mask >> 8), high);
    }
  }
}

// Outputs at most 8 wide (the CNN's 14x14 -> 7x7) would leave most of a 16-lane vector idle: two
// output rows share one, lanes 0-7 for row oh and 8-15 for row oh + 1 (in the CNN's loop the
// one-row kernel took 0.74 ms for 128x64x14x14, for a 6.4 MB input).
void max_pool_plane_2x2_f32_narrow(const float* x, int64_t W, float* out, int64_t* idx, int64_t Ho, int64_t Wo,
                                   bool relu) {
  // Lane k < 8 takes column 2k (+1) of the first vector, lane 8 + k column 2k (+1) of the second.
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i column = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14);
  const __mmask16 row = static_cast<__mmask16>((1u << (2 * Wo)) - 1);
  const __mmask8 outputs = static_cast<__mmask8>((1u << Wo) - 1);
  for (int64_t oh = 0; oh < Ho; oh += 2) {
    const bool pair = oh + 1 < Ho;
    const float* r0 = x + 2 * oh * W;
    const __m512 t0 = _mm512_maskz_loadu_ps(row, r0), b0 = _mm512_maskz_loadu_ps(row, r0 + W);
    const __m512 t1 = pair ? _mm512_maskz_loadu_ps(row, r0 + 2 * W) : _mm512_setzero_ps();
    const __m512 b1 = pair ? _mm512_maskz_loadu_ps(row, r0 + 3 * W) : _mm512_setzero_ps();
    const __m512 candidates[3] = {_mm512_permutex2var_ps(t0, odd, t1), _mm512_permutex2var_ps(b0, even, b1),
                                  _mm512_permutex2var_ps(b0, odd, b1)};
    const __m512 first = _mm512_permutex2var_ps(t0, even, t1);
    __m512i step;
    __m512 best = window_max(first, candidates, W, step);
    const __m512i corner = _mm512_add_epi32(
        column, _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32(static_cast<int32_t>(2 * oh * W)),
                                        _mm512_set1_epi32(static_cast<int32_t>(2 * (oh + 1) * W))));
    const __m512i offset = _mm512_add_epi32(corner, step);
    if (relu) best = pooled_relu(best, first);
    _mm256_mask_storeu_ps(out + oh * Wo, outputs, _mm512_maskz_extractf32x8_ps(0xFF, best, 0));
    _mm512_mask_storeu_epi64(idx + oh * Wo, outputs,
                             _mm512_maskz_cvtepi32_epi64(0xFF, _mm512_maskz_extracti64x4_epi64(0xF, offset, 0)));
    if (!pair) break;
    _mm256_mask_storeu_ps(out + (oh + 1) * Wo, outputs, _mm512_maskz_extractf32x8_ps(0xFF, best, 1));
    _mm512_mask_storeu_epi64(idx + (oh + 1) * Wo, outputs,
                             _mm512_maskz_cvtepi32_epi64(0xFF, _mm512_maskz_extracti64x4_epi64(0xF, offset, 1)));
  }
}
#endif

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
    parallel_for(x.size(0) * x.size(1), plane_grain(H * W), [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
#ifdef __AVX512F__
        if constexpr (std::is_same_v<T, float>)
          if (two_by_two && H * W <= std::numeric_limits<int32_t>::max()) {
            if (Wo <= 8) max_pool_plane_2x2_f32_narrow(px + k * H * W, W, po + k * Ho * Wo, pi + k * Ho * Wo, Ho, Wo, p.relu);
            else max_pool_plane_2x2_f32(px + k * H * W, W, po + k * Ho * Wo, pi + k * Ho * Wo, Ho, Wo, p.relu);
            continue;
          }
#endif
        if (two_by_two) max_pool_plane_2x2<T>(px + k * H * W, W, po + k * Ho * Wo, pi + k * Ho * Wo, Ho, Wo, p.relu);
        else max_pool_plane<T>(px + k * H * W, H, W, po + k * Ho * Wo, pi + k * Ho * Wo, Ho, Wo, p);
      }
    });
  });
}

// Note [Dense 2x2 max-pool backward]: when the input tiles exactly into 2x2 windows (H = 2 Ho,
// W = 2 Wo, the CNN case), each input position belongs to one window, so its gradient is g where
// the window's index points at it and 0 elsewhere: one streaming write per position, where the
// general path fills the plane and then scatters into it (in the CNN's loop 128x32x28x28 took
// 1.1 ms that way). The indices carry no kernel size, so each is checked to lie in its own window;
// a plane where one does not (indices from overlapping windows of the same output size, or bad
// ones) returns false and is redone by the general path, which also reports bad indices.
#ifdef __AVX512F__
// ReLU's backward mask on its output: not (y <= 0), so a NaN passes its gradient, as relu_backward.
inline __mmask16 relu_passes(__m512 y) { return _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_NLE_UQ); }

// One gradient per lane split into its window's four corners: each lane in `in` goes to the corner
// its index points at, found from the index's offset from the window's top-left element (lanes
// 0-7 in `low`, 8-15 in `high`; rows W apart). False when an index lies outside its window. Lanes
// outside `in` load index 0, so their offset is minus a corner at least 2 away: no corner's.
struct Corners {
  __m512 top_left, top_right, bottom_left, bottom_right;
};
inline bool split_by_corner(__m512 g, __m512i low, __m512i high, __mmask16 in, int64_t W, Corners& c) {
  const auto at = [&](int64_t offset) {
    const __m512i value = _mm512_set1_epi64(offset);
    return static_cast<__mmask16>(_mm512_cmpeq_epi64_mask(low, value) |
                                  (static_cast<unsigned>(_mm512_cmpeq_epi64_mask(high, value)) << 8));
  };
  const __mmask16 tl = at(0), tr = at(1), bl = at(W), br = at(W + 1);
  if (static_cast<__mmask16>(tl | tr | bl | br) != in) return false;
  c = {_mm512_maskz_mov_ps(tl, g), _mm512_maskz_mov_ps(tr, g), _mm512_maskz_mov_ps(bl, g), _mm512_maskz_mov_ps(br, g)};
  return true;
}

// Sixteen floats of one input row: lanes 8 * half .. 8 * half + 7 of `left` and `right`
// interleaved, left first (a row of windows' left and right corners).
inline __m512 interleave(__m512 left, __m512 right, int half) {
  const __m512i pick = half == 0 ? _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23)
                                 : _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  return _mm512_permutex2var_ps(left, pick, right);
}

// y, when not null, is the fused pool + ReLU's output: g counts as 0 where y <= 0 (NaN passes).
bool max_pool_backward_plane_2x2_f32(const float* go, const int64_t* ix, const float* y, float* gx, int64_t Wo,
                                     int64_t Ho) {
  const int64_t W = 2 * Wo;
  const __m512i lane2 = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
  const auto low_bits = [](int64_t n) { return static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1); };
  for (int64_t oh = 0; oh < Ho; ++oh) {
    float* r0 = gx + 2 * oh * W;
    float* r1 = r0 + W;
    for (int64_t ow = 0; ow < Wo; ow += 16) {
      const int64_t n = std::min<int64_t>(16, Wo - ow);
      const __mmask16 in = low_bits(n);
      __m512 g = _mm512_maskz_loadu_ps(in, go + oh * Wo + ow);
      if (y) g = _mm512_maskz_mov_ps(relu_passes(_mm512_maskz_loadu_ps(in, y + oh * Wo + ow)), g);
      const __m512i corner = _mm512_add_epi64(_mm512_set1_epi64(2 * oh * W + 2 * ow), lane2);
      const __m512i low = _mm512_sub_epi64(_mm512_maskz_loadu_epi64(static_cast<__mmask8>(in), ix + oh * Wo + ow), corner);
      const __m512i high = _mm512_sub_epi64(_mm512_maskz_loadu_epi64(static_cast<__mmask8>(in >> 8), ix + oh * Wo + ow + 8),
                                            _mm512_add_epi64(corner, _mm512_set1_epi64(16)));
      Corners c;
      if (!split_by_corner(g, low, high, in, W, c)) return false;
      const __mmask16 first = low_bits(2 * n), second = low_bits(2 * n - 16 > 0 ? 2 * n - 16 : 0);
      _mm512_mask_storeu_ps(r0 + 2 * ow, first, interleave(c.top_left, c.top_right, 0));
      _mm512_mask_storeu_ps(r0 + 2 * ow + 16, second, interleave(c.top_left, c.top_right, 1));
      _mm512_mask_storeu_ps(r1 + 2 * ow, first, interleave(c.bottom_left, c.bottom_right, 0));
      _mm512_mask_storeu_ps(r1 + 2 * ow + 16, second, interleave(c.bottom_left, c.bottom_right, 1));
    }
  }
  return true;
}

// Outputs at most 8 wide: two output rows per vector, as max_pool_plane_2x2_f32_narrow (in the
// CNN's loop the fill + scatter took 0.67 ms for 128x64x14x14).
bool max_pool_backward_plane_2x2_f32_narrow(const float* go, const int64_t* ix, const float* y, float* gx, int64_t Wo,
                                            int64_t Ho) {
  const int64_t W = 2 * Wo;
  const __m512i column = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
  const __mmask8 outputs = static_cast<__mmask8>((1u << Wo) - 1);
  const __mmask16 row = static_cast<__mmask16>((1u << W) - 1);
  for (int64_t oh = 0; oh < Ho; oh += 2) {
    const bool pair = oh + 1 < Ho;
    const __mmask8 second = pair ? outputs : 0;
    // Lanes 0-7: output row oh; lanes 8-15: row oh + 1.
    const auto two_rows = [&](const float* p) {
      return _mm512_insertf32x8(_mm512_insertf32x8(_mm512_setzero_ps(), _mm256_maskz_loadu_ps(outputs, p + oh * Wo), 0),
                                _mm256_maskz_loadu_ps(second, p + (oh + 1) * Wo), 1);
    };
    __m512 g = two_rows(go);
    if (y) g = _mm512_maskz_mov_ps(relu_passes(two_rows(y)), g);
    const __m512i low = _mm512_sub_epi64(_mm512_maskz_loadu_epi64(outputs, ix + oh * Wo),
                                         _mm512_add_epi64(column, _mm512_set1_epi64(2 * oh * W)));
    const __m512i high = _mm512_sub_epi64(_mm512_maskz_loadu_epi64(second, ix + (oh + 1) * Wo),
                                          _mm512_add_epi64(column, _mm512_set1_epi64(2 * (oh + 1) * W)));
    Corners c;
    if (!split_by_corner(g, low, high, static_cast<__mmask16>(outputs | (static_cast<unsigned>(second) << 8)), W, c))
      return false;
    float* r0 = gx + 2 * oh * W;
    _mm512_mask_storeu_ps(r0, row, interleave(c.top_left, c.top_right, 0));
    _mm512_mask_storeu_ps(r0 + W, row, interleave(c.bottom_left, c.bottom_right, 0));
    if (!pair) break;
    _mm512_mask_storeu_ps(r0 + 2 * W, row, interleave(c.top_left, c.top_right, 1));
    _mm512_mask_storeu_ps(r0 + 3 * W, row, interleave(c.bottom_left, c.bottom_right, 1));
  }
  return true;
}
#endif

// grad_x plane = 0, then grad_out scattered to the recorded positions (windows may overlap, so
// one position can collect several gradients); index -1 (an empty window) scatters nothing.
void max_pool2d_backward_cpu(const Tensor& grad_out, const Tensor& indices, const Tensor& relu_output,
                             Tensor& grad_x) {
  if (grad_x.numel() == 0) return;
  const int64_t plane = grad_x.size(2) * grad_x.size(3), out_plane = grad_out.size(2) * grad_out.size(3);
  [[maybe_unused]] const bool tiles_2x2 = grad_x.size(2) == 2 * grad_out.size(2) && grad_x.size(3) == 2 * grad_out.size(3);
  visit_floating(grad_x.dtype(), "max_pool2d_backward", [&]<class T>() {
    using C = compute_t<T>;
    const T* pg = static_cast<const T*>(grad_out.data_ptr());
    const int64_t* pi = static_cast<const int64_t*>(indices.data_ptr());
    const T* py = relu_output.defined() ? static_cast<const T*>(relu_output.data_ptr()) : nullptr;
    T* px = static_cast<T*>(grad_x.data_ptr());
    constexpr int64_t kNone = std::numeric_limits<int64_t>::min();
    std::atomic<int64_t> bad_index{kNone};  // an index outside its plane: reported after the loop
    parallel_for(grad_x.size(0) * grad_x.size(1), plane_grain(plane), [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        T* gx = px + k * plane;
        const T* go = pg + k * out_plane;
        const int64_t* ix = pi + k * out_plane;
        const T* y = py ? py + k * out_plane : nullptr;
#ifdef __AVX512F__
        if constexpr (std::is_same_v<T, float>)
          if (tiles_2x2 && (grad_out.size(3) <= 8
                                ? max_pool_backward_plane_2x2_f32_narrow(go, ix, y, gx, grad_out.size(3), grad_out.size(2))
                                : max_pool_backward_plane_2x2_f32(go, ix, y, gx, grad_out.size(3), grad_out.size(2))))
            continue;
#endif
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
