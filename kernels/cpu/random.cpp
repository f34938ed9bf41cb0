// CPU ranges and random fills. out is contiguous (the op definitions allocate it).
// Random streams: element i of a call draws from Philox counter base + i / 4 (base reserved from
// the generator), so values do not depend on the thread count; normals use Box-Muller on pairs.
#include <cmath>

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

void normal_cpu(Tensor& out, double mean, double stddev, Generator& gen) {
  const int64_t n = out.numel();
  visit_floating(out.dtype(), "normal_", [&]<class T>() {
    T* p = static_cast<T*>(out.data_ptr());
    // Box-Muller turns two uniforms into two normals; 4 elements take 8 words (2 counters), and
    // doubles take 64-bit uniforms (4 counters).
    constexpr uint64_t kBlocks = std::is_same_v<T, double> ? 4 : 2;
    for_each_random(n, gen, kBlocks, [&](int64_t g, uint64_t ctr, uint64_t seed) {
      double u[4];
      if constexpr (std::is_same_v<T, double>) {
        for (int k = 0; k < 4; ++k) {
          const auto w = philox(seed, ctr + static_cast<uint64_t>(k));
          u[k] = uniform_double(w[0], w[1]);
        }
      } else {
        const auto w0 = philox(seed, ctr), w1 = philox(seed, ctr + 1);
        u[0] = uniform_float(w0[0]); u[1] = uniform_float(w0[1]);
        u[2] = uniform_float(w1[0]); u[3] = uniform_float(w1[1]);
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
