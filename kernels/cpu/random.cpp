// CPU ranges and random fills. out is contiguous (the op definitions allocate it).
// Random streams: element i of a call draws from Philox counter base + i / 4 (base reserved from
// the generator), so values do not depend on the thread count; normals use Box-Muller on pairs,
// in float lanes for f32/f16/bf16 (Note [Vectorized normals]).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <utility>

#include "kernels/cpu/lanes.h"
#include "kernels/cpu/vec_math.h"

#include "kernels/cpu/convert.h"
#include "kernels/cpu/loops.h"
#include "tensor/dispatch.h"
#include "tensor/generator.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

constexpr int64_t kRandomGrain = 16384;

void arange_cpu(Tensor& out, double start, double step) {
  visit_dtype(out.dtype(), [&]<class T>() {
    T* p = static_cast<T*>(out.data_ptr());
    parallel_for(out.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) p[i] = convert<T>(start + static_cast<double>(i) * step);
    });
  });
}

void linspace_cpu(Tensor& out, double start, double end) {
  const int64_t n = out.numel();
  const double step = n > 1 ? (end - start) / static_cast<double>(n - 1) : 0.0;
  const int64_t half = n == 1 ? 1 : n / 2;  // a single step is `start`, as in torch
  visit_dtype(out.dtype(), [&]<class T>() {
    T* p = static_cast<T*>(out.data_ptr());
    // Like torch: the first half steps up from start, the second half steps down from end, so both
    // ends are exact.
    parallel_for(n, kElementwiseGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        p[i] = convert<T>(i < half ? start + step * static_cast<double>(i) : end - step * static_cast<double>(n - 1 - i));
    });
  });
}

// Calls f(i, words) for each element i with 4 fresh random words of counter base + i / 4.
// Each element uses only the word (i % 4) unless it needs more (doubles, normals).
template <class F>
void for_each_random(int64_t n, Generator& gen, uint64_t blocks_per_4, F f) {
  const uint64_t seed = gen.seed();
  const uint64_t base = gen.reserve(static_cast<uint64_t>((n + 3) / 4) * blocks_per_4);
  parallel_for((n + 3) / 4, kRandomGrain / 4, [&](int64_t b, int64_t e) {
    for (int64_t g = b; g < e; ++g) f(g, base + static_cast<uint64_t>(g) * blocks_per_4, seed);
  });
}

void uniform_cpu(Tensor& out, double lo, double hi, Generator& gen) {
  const int64_t n = out.numel();
  visit_floating(out.dtype(), "uniform_", [&]<class T>() {
    T* p = static_cast<T*>(out.data_ptr());
    if constexpr (std::is_same_v<T, double>) {
      for_each_random(n, gen, 2, [&](int64_t g, uint64_t ctr, uint64_t seed) {
        const auto w0 = philox(seed, ctr), w1 = philox(seed, ctr + 1);
        const uint32_t w[8] = {w0[0], w0[1], w0[2], w0[3], w1[0], w1[1], w1[2], w1[3]};
        for (int j = 0; j < 4 && g * 4 + j < n; ++j) p[g * 4 + j] = lo + (hi - lo) * uniform_double(w[2 * j], w[2 * j + 1]);
      });
    } else {
      const float flo = static_cast<float>(lo), span = static_cast<float>(hi - lo);
      for_each_random(n, gen, 1, [&](int64_t g, uint64_t ctr, uint64_t seed) {
        const auto w = philox(seed, ctr);
        for (int j = 0; j < 4 && g * 4 + j < n; ++j) p[g * 4 + j] = T(flo + span * uniform_float(w[j]));
      });
    }
  });
}

// Note [Vectorized normals]
// Float normals draw what the scalar loop always drew: for the 4 elements of group g, Philox
// blocks base + 2g and base + 2g + 1, words 0 and 1 of each, as two Box-Muller pairs (u0, u1) and
// (u2, u3): z = sqrt(-2 log(1 - u_even)) (cos, sin)(2 pi u_odd). So the stream of uniforms, and
// the generator's state after a call, are unchanged; the normals now come from float lanes
// (vmath's log and sincos_2pi, a few ulp) instead of <cmath> in double, so a value may differ from
// the old one in its last bits. Philox runs in 64-bit lanes, one group per lane, each lane holding
// a 32-bit word: the ISA's 32x32->64 multiply reads only the low halves, so the high halves may
// carry junk until the words are narrowed.
namespace normals {

constexpr int kGroups = lanes::kWidth / 2;
typedef uint64_t u64v __attribute__((vector_size(4 * lanes::kWidth)));  // one group per lane
typedef uint32_t u32h __attribute__((vector_size(4 * kGroups)));
typedef uint32_t u32v __attribute__((vector_size(4 * lanes::kWidth)));

inline u64v mul_wide(u64v a, uint32_t b) {  // the low 32 bits of each lane of a, times b, as 64 bits
  const u64v bv = u64v{} + b;
#if defined(__AVX512F__)
  // The masked form: GCC 12 warns on the plain one's undefined pass-through.
  return reinterpret_cast<u64v>(
      _mm512_maskz_mul_epu32(0xff, reinterpret_cast<__m512i>(a), reinterpret_cast<__m512i>(bv)));
#elif defined(__AVX2__)
  return reinterpret_cast<u64v>(_mm256_mul_epu32(reinterpret_cast<__m256i>(a), reinterpret_cast<__m256i>(bv)));
#else
  return reinterpret_cast<u64v>(_mm_mul_epu32(reinterpret_cast<__m128i>(a), reinterpret_cast<__m128i>(bv)));
#endif
}

// Words 0 and 1 of Philox4x32-10 (tensor/generator.cpp) for the counters in ctr.
inline void philox_01(uint64_t seed, u64v ctr, u64v& w0, u64v& w1) {
  u64v c0 = ctr, c1 = ctr >> 32, c2 = u64v{}, c3 = u64v{};
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const u64v p0 = mul_wide(c0, 0xD2511F53u), p1 = mul_wide(c2, 0xCD9E8D57u);
    const u64v n0 = (p1 >> 32) ^ c1 ^ k0, n2 = (p0 >> 32) ^ c3 ^ k1;
    c1 = p1;
    c3 = p0;
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  w0 = c0;
  w1 = c1;
}

// Uniforms in [0, 1) from the low words of a and b: a's groups in the low lanes, b's in the high.
inline lanes::f32v uniforms(u64v a, u64v b) {
  const u32h la = __builtin_convertvector(a, u32h), lb = __builtin_convertvector(b, u32h);
  const u32v both = [&]<size_t... k>(std::index_sequence<k...>) {
    return __builtin_shufflevector(la, lb, k..., (k + kGroups)...);
  }(std::make_index_sequence<kGroups>());
  return __builtin_convertvector(std::bit_cast<lanes::i32v>(both >> 8), lanes::f32v) * (1.0f / 16777216.0f);
}

// The 4 * kGroups normals of groups [g, g + kGroups), in element order.
inline void fill(uint64_t seed, uint64_t base, int64_t g, float* z) {
  const u64v ctr_a = [&]<size_t... k>(std::index_sequence<k...>) {
    return u64v{(base + 2 * (static_cast<uint64_t>(g) + k))...};
  }(std::make_index_sequence<kGroups>());
  u64v a0, a1, b0, b1;
  philox_01(seed, ctr_a, a0, a1);
  philox_01(seed, ctr_a + 1, b0, b1);
  const lanes::f32v radius = vmath::sqrt(-2.0f * vmath::log(1.0f - uniforms(a0, b0)));  // 1 - u in (0, 1]
  lanes::f32v c, s;
  vmath::sincos_2pi(uniforms(a1, b1), c, s);
  const lanes::f32v zc = radius * c, zs = radius * s;
  // Group j's elements are zc[j], zs[j], zc[kGroups + j], zs[kGroups + j]: interleave the floats of
  // each half, then the pairs of the two halves.
  constexpr int W = lanes::kWidth;
  const auto [lo, hi] = [&]<size_t... k>(std::index_sequence<k...>) {
    return std::pair{lanes::f32v(__builtin_shufflevector(zc, zs, (k % 2 ? W + k / 2 : k / 2)...)),
                     lanes::f32v(__builtin_shufflevector(zc, zs, (k % 2 ? W + kGroups + k / 2 : kGroups + k / 2)...))};
  }(std::make_index_sequence<W>());
  const u64v p = std::bit_cast<u64v>(lo), q = std::bit_cast<u64v>(hi);
  const auto [first, second] = [&]<size_t... k>(std::index_sequence<k...>) {
    return std::pair{u64v(__builtin_shufflevector(p, q, (k % 2 ? kGroups + k / 2 : k / 2)...)),
                     u64v(__builtin_shufflevector(p, q, (k % 2 ? kGroups + kGroups / 2 + k / 2 : kGroups / 2 + k / 2)...))};
  }(std::make_index_sequence<kGroups>());
  std::memcpy(z, &first, sizeof first);
  std::memcpy(z + W, &second, sizeof second);
}

}  // namespace normals

void normal_cpu(Tensor& out, double mean, double stddev, Generator& gen) {
  const int64_t n = out.numel();
  visit_floating(out.dtype(), "normal_", [&]<class T>() {
    T* p = static_cast<T*>(out.data_ptr());
    if constexpr (!std::is_same_v<T, double>) {
      const uint64_t seed = gen.seed();
      const int64_t groups = (n + 3) / 4;
      const uint64_t base = gen.reserve(static_cast<uint64_t>(groups) * 2);
      const float fm = static_cast<float>(mean), fs = static_cast<float>(stddev);
      const bool standard = std::is_same_v<T, float> && fm == 0.0f && fs == 1.0f;
      parallel_for(groups, kRandomGrain / 4, [&](int64_t b, int64_t e) {
        float z[4 * normals::kGroups];
        for (int64_t g = b; g < e; g += normals::kGroups) {
          normals::fill(seed, base, g, z);
          const int64_t m = std::min(4 * std::min<int64_t>(normals::kGroups, e - g), n - 4 * g);
          if (standard) std::memcpy(p + 4 * g, z, static_cast<size_t>(m) * sizeof(float));
          else for (int64_t i = 0; i < m; ++i) p[4 * g + i] = static_cast<T>(z[i] * fs + fm);
        }
      });
      return;
    }
    // Doubles take 64-bit uniforms: 4 counters per 4 elements.
    for_each_random(n, gen, 4, [&](int64_t g, uint64_t ctr, uint64_t seed) {
      double u[4];
      for (int k = 0; k < 4; ++k) {
        const auto w = philox(seed, ctr + static_cast<uint64_t>(k));
        u[k] = uniform_double(w[0], w[1]);
      }
      double z[4];
      for (int k = 0; k < 2; ++k) {
        const double r = std::sqrt(-2.0 * std::log(1.0 - u[2 * k]));  // 1 - u is in (0, 1]
        const double theta = 2.0 * M_PI * u[2 * k + 1];
        z[2 * k] = r * std::cos(theta);
        z[2 * k + 1] = r * std::sin(theta);
      }
      for (int j = 0; j < 4 && g * 4 + j < n; ++j) p[g * 4 + j] = convert<T>(mean + stddev * z[j]);
    });
  });
}

void randint_cpu(Tensor& out, double lo, double hi, Generator& gen) {
  const int64_t n = out.numel();
  const uint64_t range = static_cast<uint64_t>(static_cast<int64_t>(hi) - static_cast<int64_t>(lo));
  const int64_t low = static_cast<int64_t>(lo);
  visit_dtype(out.dtype(), [&]<class T>() {
    T* p = static_cast<T*>(out.data_ptr());
    // 64 random bits per element; the modulo bias is below 2^-32 for ranges under 2^32.
    for_each_random(n, gen, 2, [&](int64_t g, uint64_t ctr, uint64_t seed) {
      const auto w0 = philox(seed, ctr), w1 = philox(seed, ctr + 1);
      const uint32_t w[8] = {w0[0], w0[1], w0[2], w0[3], w1[0], w1[1], w1[2], w1[3]};
      for (int j = 0; j < 4 && g * 4 + j < n; ++j) {
        const uint64_t bits = (static_cast<uint64_t>(w[2 * j]) << 32) | w[2 * j + 1];
        p[g * 4 + j] = convert<T>(low + static_cast<int64_t>(bits % range));
      }
    });
  });
}

void bernoulli_cpu(Tensor& out, double prob, double, Generator& gen) {
  const int64_t n = out.numel();
  const float pf = static_cast<float>(prob);
  visit_dtype(out.dtype(), [&]<class T>() {
    T* p = static_cast<T*>(out.data_ptr());
    for_each_random(n, gen, 1, [&](int64_t g, uint64_t ctr, uint64_t seed) {
      const auto w = philox(seed, ctr);
      for (int j = 0; j < 4 && g * 4 + j < n; ++j) p[g * 4 + j] = convert<T>(uniform_float(w[j]) < pf ? 1 : 0);
    });
  });
}

// probs is contiguous with out's shape, any floating dtype.
void bernoulli_tensor_cpu(const Tensor& probs, Tensor& out, Generator& gen) {
  const int64_t n = out.numel();
  visit_floating(probs.dtype(), "bernoulli", [&]<class P>() {
    const P* pp = static_cast<const P*>(probs.data_ptr());
    visit_dtype(out.dtype(), [&]<class T>() {
      T* p = static_cast<T*>(out.data_ptr());
      for_each_random(n, gen, 1, [&](int64_t g, uint64_t ctr, uint64_t seed) {
        const auto w = philox(seed, ctr);
        for (int j = 0; j < 4 && g * 4 + j < n; ++j) {
          const double pr = static_cast<double>(static_cast<compute_t<P>>(pp[g * 4 + j]));
          p[g * 4 + j] = convert<T>(static_cast<double>(uniform_float(w[j])) < pr ? 1 : 0);
        }
      });
    });
  });
}

}  // namespace

KILN_REGISTER_KERNEL(Op::arange, DeviceType::cpu, arange_cpu);
KILN_REGISTER_KERNEL(Op::linspace, DeviceType::cpu, linspace_cpu);
KILN_REGISTER_KERNEL(Op::uniform, DeviceType::cpu, uniform_cpu);
KILN_REGISTER_KERNEL(Op::normal, DeviceType::cpu, normal_cpu);
KILN_REGISTER_KERNEL(Op::randint, DeviceType::cpu, randint_cpu);
KILN_REGISTER_KERNEL(Op::bernoulli, DeviceType::cpu, bernoulli_cpu);
KILN_REGISTER_KERNEL(Op::bernoulli_tensor, DeviceType::cpu, bernoulli_tensor_cpu);

}  // namespace kiln::cpu
