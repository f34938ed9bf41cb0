// One register of f32 lanes at the widest width this build's ISA level has (16 with AVX-512, 8
// with AVX2, 4 with SSE2), as GCC vector extensions, for the hand-vectorised f32 kernels
// (conv_direct.cpp, pool.cpp), plus what the extensions lack: fused multiply-add, and loads and
// stores of a register's first n lanes. Internal to kernels/cpu; every type here is one register,
// so passing them by value keeps the ABI (-Wpsabi) the same at every level.
#pragma once

#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace kiln::cpu::lanes {

#if defined(__AVX512F__)
constexpr int kWidth = 16;
#elif defined(__AVX2__)
constexpr int kWidth = 8;
#else
constexpr int kWidth = 4;
#endif

using f32v = float __attribute__((vector_size(4 * kWidth)));
using i32v = int32_t __attribute__((vector_size(4 * kWidth)));  // also the result of comparing f32v
using i64v = int64_t __attribute__((vector_size(4 * kWidth)));  // kWidth / 2 lanes

// a * b + c, rounded once where the ISA level has FMA (C++20 without GNU extensions keeps GCC from
// contracting `a * b + c` itself).
inline f32v fmadd(f32v a, f32v b, f32v c) {
#if defined(__AVX512F__)
  return _mm512_fmadd_ps(a, b, c);
#elif defined(__FMA__)
  return _mm256_fmadd_ps(a, b, c);
#else
  return a * b + c;
#endif
}

// x in every lane (x - 0 is x for every x, -0 included; x + 0 would turn -0 into +0).
inline f32v splat(float x) { return x - f32v{}; }

inline f32v load(const float* p) {
  f32v v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, f32v v) { std::memcpy(p, &v, sizeof v); }

// The first n lanes from p, the rest zero; no element past p[n - 1] is read. 0 <= n <= kWidth.
inline f32v load_first(const float* p, int64_t n) {
  if (n >= kWidth) return load(p);
#if defined(__AVX512F__)
  return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
#elif defined(__AVX2__)
  const i32v lane = {0, 1, 2, 3, 4, 5, 6, 7};
  return _mm256_maskload_ps(p, reinterpret_cast<__m256i>(lane < static_cast<int32_t>(n)));
#else
  f32v v = {};
  for (int64_t k = 0; k < n; ++k) v[k] = p[k];
  return v;
#endif
}

// v's first n < (lanes of V) lanes to p[0..n), as one store per set bit of n: the low half when n
// reaches it, then the rest from the high half. Used below AVX-512: SSE2 has no masked store, and
// AVX2's (vmaskmovps) is slow on several AMD cores.
template <class T, class V>
inline void store_pieces(T* p, const V& v, int64_t n) {
  constexpr int64_t count = sizeof(V) / sizeof(T);
  if constexpr (count > 1) {
    const auto low = [&]<size_t... k>(std::index_sequence<k...>) { return __builtin_shufflevector(v, v, k...); }(
        std::make_index_sequence<count / 2>());
    if (n < count / 2) return store_pieces(p, low, n);
    std::memcpy(p, &low, sizeof low);
    const auto high = [&]<size_t... k>(std::index_sequence<k...>) {
      return __builtin_shufflevector(v, v, (count / 2 + k)...);
    }(std::make_index_sequence<count / 2>());
    store_pieces(p + count / 2, high, n - count / 2);
  }
}

// v's first n lanes to p[0..n); nothing past them is written. 0 <= n <= kWidth.
inline void store_first(float* p, f32v v, int64_t n) {
  if (n >= kWidth) return store(p, v);
#if defined(__AVX512F__)
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
#else
  store_pieces(p, v, n);
#endif
}

// The same for int64 lanes, kWidth / 2 of them. 0 <= n <= kWidth / 2.
inline i64v load_first(const int64_t* p, int64_t n) {
  i64v v = {};
  if (n >= kWidth / 2) {
    std::memcpy(&v, p, sizeof v);
    return v;
  }
#if defined(__AVX512F__)
  return reinterpret_cast<i64v>(_mm512_maskz_loadu_epi64(static_cast<__mmask8>((1u << n) - 1), p));
#elif defined(__AVX2__)
  const i64v lane = {0, 1, 2, 3};
  return reinterpret_cast<i64v>(
      _mm256_maskload_epi64(reinterpret_cast<const long long*>(p), reinterpret_cast<__m256i>(lane < n)));
#else
  for (int64_t k = 0; k < n; ++k) v[k] = p[k];
  return v;
#endif
}

inline void store_first(int64_t* p, i64v v, int64_t n) {
  if (n >= kWidth / 2) {
    std::memcpy(p, &v, sizeof v);
    return;
  }
#if defined(__AVX512F__)
  _mm512_mask_storeu_epi64(p, static_cast<__mmask8>((1u << n) - 1), reinterpret_cast<__m512i>(v));
#else
  store_pieces(p, v, n);
#endif
}

// True when some lane of v is not zero.
inline bool any(i32v v) {
#if defined(__AVX512F__)
  return _mm512_test_epi32_mask(reinterpret_cast<__m512i>(v), reinterpret_cast<__m512i>(v)) != 0;
#else
  int32_t bits = 0;
  for (int k = 0; k < kWidth; ++k) bits |= v[k];
  return bits != 0;
#endif
}

}  // namespace kiln::cpu::lanes
