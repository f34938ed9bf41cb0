// One register of f32 lanes at the widest width this build's ISA level has (16 with AVX-512, 8
// with AVX2, 4 with SSE2), as GCC vector extensions, for the hand-vectorised f32 kernels
// (conv_direct.cpp, pool.cpp), plus what the extensions lack: fused multiply-add, and loads and
// stores of a register's first n lanes. Internal to kernels/cpu; every type here is one register,
// so passing them by value keeps the ABI (-Wpsabi) the same at every level.
#pragma once

#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace lanes {

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

// N lanes of T as a GCC vector type: the halves, quarters... that load_pieces assembles.
template <class T, int N>
struct Vec;
template <int N>
struct Vec<float, N> {
  typedef float type __attribute__((vector_size(4 * N)));
};
template <int N>
struct Vec<int64_t, N> {
  typedef int64_t type __attribute__((vector_size(8 * N)));
};

// The first n < N lanes from p, the rest zero, as one load per set bit of n: the low half when n
// reaches it, then the rest into the high half. Used below AVX-512: SSE2 has no masked load, and
// AVX2's (vmaskmovps) is slow on some AMD cores.
template <class T, int N>
inline typename Vec<T, N>::type load_pieces(const T* p, int64_t n) {
  using V = typename Vec<T, N>::type;
  if constexpr (N == 2) {
    return n ? V{p[0], T(0)} : V{};
  } else {
    typename Vec<T, N / 2>::type low = {}, high = {};
    if (n >= N / 2) {
      std::memcpy(&low, p, sizeof low);
      high = load_pieces<T, N / 2>(p + N / 2, n - N / 2);
    } else {
      low = load_pieces<T, N / 2>(p, n);
    }
    return [&]<size_t... k>(std::index_sequence<k...>) { return __builtin_shufflevector(low, high, k...); }(
        std::make_index_sequence<N>());
  }
}

// The first n lanes from p, the rest zero; no element past p[n - 1] is read. 0 <= n <= kWidth.
inline f32v load_first(const float* p, int64_t n) {
  if (n >= kWidth) return load(p);
#if defined(__AVX512F__)
  return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
#else
  return load_pieces<float, kWidth>(p, n);
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
  i64v v;
  if (n >= kWidth / 2) {
    std::memcpy(&v, p, sizeof v);
    return v;
  }
#if defined(__AVX512F__)
  return reinterpret_cast<i64v>(_mm512_maskz_loadu_epi64(static_cast<__mmask8>((1u << n) - 1), p));
#else
  return load_pieces<int64_t, kWidth / 2>(p, n);
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
#elif defined(__AVX2__)
  return !_mm256_testz_si256(reinterpret_cast<__m256i>(v), reinterpret_cast<__m256i>(v));
#elif defined(__SSE2__)
  return _mm_movemask_epi8(_mm_cmpeq_epi32(reinterpret_cast<__m128i>(v), __m128i{})) != 0xFFFF;
#else
  int32_t bits = 0;
  for (int k = 0; k < kWidth; ++k) bits |= v[k];
  return bits != 0;
#endif
}

}  // namespace lanes
}  // namespace kiln::cpu
