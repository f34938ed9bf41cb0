// 16-bit floats (BFloat16, Half) in memory to and from one register of f32 lanes (lanes::f32v), for
// the f16/bf16 paths of the CPU kernels, which compute in f32 and round once. Contract, at every
// CPU level alike (tests/ops/test_lowp_kernels.cpp checks it bit for bit): load16 gives each
// element's float value, as static_cast<float> does, except that an f16 signalling NaN comes out
// quiet (F16C's vcvtph2ps does so); store16 gives T(float): round to nearest even, overflow to inf,
// NaN kept a quiet NaN. Note [16-bit lane conversions] says which instructions do it.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/lanes.h"
#include "tensor/half.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace lanes {

// Note [16-bit lane conversions]
// bf16 -> f32 is a 16-bit shift. f32 -> bf16 adds 0x7fff plus the lowest kept bit and shifts (round
// to nearest even in integer lanes), with NaN lanes made quiet instead. AVX512_BF16's vcvtneps2bf16
// would do it in one instruction, but it flushes f32 denormals to zero (measured on this EPYC:
// 0x00400000 gives 0x0000, not 0x0040), so it cannot match the scalar conversion, and the
// x86-64-v4 level does not include it anyway. f16 uses F16C (vcvtph2ps, vcvtps2ph with RNE) where
// the level has it (avx2, avx512); baseline runs the same conversions in integer lanes. At avx2 and
// avx512 the elementwise kernels are bound by memory either way; baseline (SSE2, no 32-to-16 pack)
// is not a speed target and runs about as fast as the scalar conversions did (bench/README.md,
// "f16 and bf16 kernels"; bench/bench_lowp.cpp prints which of these ran).
using u16v = uint16_t __attribute__((vector_size(2 * kWidth)));
using u32v = uint32_t __attribute__((vector_size(4 * kWidth)));

template <class T>
inline constexpr bool kIs16 = std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>;

// A comparison's all-ones or zero lanes as unsigned bits.
inline u32v as_bits(i32v mask) { return std::bit_cast<u32v>(mask); }

inline f32v bf16_to_f32(u16v h) { return std::bit_cast<f32v>(__builtin_convertvector(h, u32v) << 16); }

inline u16v f32_to_bf16(f32v v) {
  const u32v x = std::bit_cast<u32v>(v);
  const u32v rounded = x + 0x7fffu + ((x >> 16) & 1u);
  const u32v r = (x & 0x7fffffffu) > 0x7f800000u ? (x | 0x00400000u) : rounded;
  return __builtin_convertvector(r >> 16, u16v);
}

inline f32v f16_to_f32(u16v h) {
#if defined(__AVX512F__)
  return _mm512_maskz_cvtph_ps(0xffff, std::bit_cast<__m256i>(h));  // maskz: the plain form trips GCC 12's
                                                                      // -Wmaybe-uninitialized
#elif defined(__F16C__)
  return _mm256_cvtph_ps(std::bit_cast<__m128i>(h));
#else
  const u32v w = __builtin_convertvector(h, u32v);
  const u32v sign = (w & 0x8000u) << 16, em = w & 0x7fffu;  // em: exponent and mantissa
  const u32v normal = (em << 13) + (112u << 23);             // rebias 15 -> 127
  const u32v special = (em << 13) | 0x7f800000u | (as_bits(em > 0x7c00u) & 0x00400000u);  // inf, quiet NaN
  const f32v sub = __builtin_convertvector(std::bit_cast<i32v>(em), f32v) * 0x1p-24f;  // exact
  const u32v mag = em < 0x0400u ? std::bit_cast<u32v>(sub) : (em >= 0x7c00u ? special : normal);
  return std::bit_cast<f32v>(mag | sign);
#endif
}

inline u16v f32_to_f16(f32v v) {
#if defined(__AVX512F__)
  return std::bit_cast<u16v>(_mm512_maskz_cvtps_ph(0xffff, v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif defined(__F16C__)
  return std::bit_cast<u16v>(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
  // detail::float_to_half_bits (tensor/half.h), lane by lane.
  const u32v x = std::bit_cast<u32v>(v);
  const u32v sign = (x >> 16) & 0x8000u, abs = x & 0x7fffffffu;
  const u32v nan_payload = as_bits(abs > 0x7f800000u) & (0x0200u | ((abs >> 13) & 0x3ffu));
  const u32v special = 0x7c00u | nan_payload;  // inf, NaN, and finite values that round to inf
  // Below f16's normal range, adding 0.5f aligns the mantissa so the FPU rounds to nearest even.
  const u32v sub = std::bit_cast<u32v>(std::bit_cast<f32v>(abs) + 0.5f) - 0x3f000000u;
  const u32v normal = (abs + 0xc8000fffu + ((abs >> 13) & 1u)) >> 13;
  const u32v mag = abs >= 0x477ff000u ? special : (abs < 0x38800000u ? sub : normal);
  return __builtin_convertvector(mag | sign, u16v);
#endif
}

inline u16v load_u16(const void* p) {
  u16v h;
  std::memcpy(&h, p, sizeof h);
  return h;
}

// The kWidth elements at p, as floats.
template <class T>
inline f32v load16(const T* p) {
  static_assert(kIs16<T>);
  if constexpr (std::is_same_v<T, BFloat16>) return bf16_to_f32(load_u16(p));
  else return f16_to_f32(load_u16(p));
}

// v rounded into the kWidth elements at p.
template <class T>
inline void store16(T* p, f32v v) {
  static_assert(kIs16<T>);
  const u16v h = std::is_same_v<T, BFloat16> ? f32_to_bf16(v) : f32_to_f16(v);
  std::memcpy(static_cast<void*>(p), &h, sizeof h);
}

// The first n <= kWidth elements at p, the rest of the lanes zero; nothing past p[n - 1] is read.
template <class T>
inline f32v load16_first(const T* p, int64_t n) {
  if (n >= kWidth) return load16(p);
  u16v h = {};
  std::memcpy(&h, static_cast<const void*>(p), static_cast<size_t>(n) * sizeof(T));
  return std::is_same_v<T, BFloat16> ? bf16_to_f32(h) : f16_to_f32(h);
}

// v's first n <= kWidth lanes rounded into p[0..n); nothing past them is written.
template <class T>
inline void store16_first(T* p, f32v v, int64_t n) {
  if (n >= kWidth) return store16(p, v);
  const u16v h = std::is_same_v<T, BFloat16> ? f32_to_bf16(v) : f32_to_f16(v);
  std::memcpy(static_cast<void*>(p), &h, static_cast<size_t>(n) * sizeof(T));
}

// y[0..n) = the floats of x[0..n) (to_f32), or x rounded into T (from_f32): the row conversions of
// softmax, the reductions and the norms, and contiguous copies.
template <class T>
inline void to_f32(const T* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) store(y + i, load16(x + i));
  if (i < n) store_first(y + i, load16_first(x + i, n - i), n - i);
}
template <class T>
inline void from_f32(const float* x, T* y, int64_t n) {
  int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) store16(y + i, load(x + i));
  if (i < n) store16_first(y + i, load_first(x + i, n - i), n - i);
}

// The same for a strided run of n elements of T (f32 or 16-bit) `stride` bytes apart, as the
// block loops over StridedIter see them: a register at a time where a 16-bit run is dense, one
// element at a time otherwise (static_cast, which rounds alike; only a NaN's sign may differ).
template <class T>
inline void strided_to_f32(const char* x, int64_t stride, float* y, int64_t n) {
  if constexpr (kIs16<T>)
    if (stride == static_cast<int64_t>(sizeof(T))) return to_f32(reinterpret_cast<const T*>(x), y, n);
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(*reinterpret_cast<const T*>(x + i * stride));
}
template <class T>
inline void strided_from_f32(const float* x, char* y, int64_t stride, int64_t n) {
  if constexpr (kIs16<T>)
    if (stride == static_cast<int64_t>(sizeof(T))) return from_f32(x, reinterpret_cast<T*>(y), n);
  for (int64_t i = 0; i < n; ++i) *reinterpret_cast<T*>(y + i * stride) = static_cast<T>(x[i]);
}

}  // namespace lanes
}  // namespace kiln::cpu
