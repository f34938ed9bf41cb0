// CPU backward kernels of the activations: out = g * f'(x) (or relu's mask on its output) in one
// pass, where composing the derivative from elementwise ops would take two to eight passes and as
// many temporaries. g, the saved tensor and out share one shape and one floating dtype. The GELUs'
// derivatives run in float lanes (Note [f32 lane math]; dense 16-bit runs converted a register at
// a time, kernels/cpu/lanes16.h); silu's in double, eight lanes at a time
// for contiguous f32 (Note [Vectorized float math]); relu's is a select, exact in any dtype, which
// the plain element loop vectorises in the tensor's own type (through the eight-double path,
// 128x512 took 28 us in the MLP's loop, 16 us so).
#include <cmath>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/lanes16.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/cpu/wide_math.h"
#include "tensor/dispatch.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

using lanes::f32v;
constexpr double kSqrt2OverPi = 0.7978845608028654;  // sqrt(2 / pi), gelu's tanh approximation
constexpr double kInvSqrt2Pi = 0.3989422804014327;   // 1 / sqrt(2 pi), the normal density's scale
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kGeluCubic = 0.044715;

// relu: torch's threshold_backward, g where the output is above 0; a NaN output passes g through.
// No wide form (see the header).
struct ReluBackward {
  double operator()(double g, double y) const { return y <= 0.0 ? 0.0 : g; }
};
// d/dx x s(x) = s (1 + x (1 - s)), s = sigmoid(x).
struct SiluBackward {
  template <class V> V wide(V g, V x) const {
    const V s = wide::sigmoid(x);
    return g * (s * (1.0 + x * (1.0 - s)));
  }
  double operator()(double g, double x) const {
    const double s = 1.0 / (1.0 + std::exp(-x));
    return g * (s * (1.0 + x * (1.0 - s)));
  }
};
// d/dx 0.5 x (1 + tanh(a)), a = k (x + c x^3): 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2).
// f32 runs vmath::gelu_tanh_derivative (the same function, written through sigmoid(2a)).
struct GeluTanhBackward {
  static f32v lanes(f32v g, f32v x) { return g * vmath::gelu_tanh_derivative(x); }
  double operator()(double g, double x) const {
    const double t = std::tanh(kSqrt2OverPi * (x + kGeluCubic * x * x * x));
    return g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * (kSqrt2OverPi * (1.0 + 3.0 * kGeluCubic * x * x)));
  }
};
// d/dx x Phi(x) = Phi(x) + x phi(x).
struct GeluErfBackward {
  static f32v lanes(f32v g, f32v x) { return g * vmath::gelu_erf_derivative(x); }
  double operator()(double g, double x) const {
    const double cdf = 0.5 * std::erfc(-x * kInvSqrt2);
    return g * (cdf + x * kInvSqrt2Pi * std::exp(-0.5 * x * x));
  }
};

template <class F>
concept HasWide = requires(const F& f, double v) { f.wide(v, v); };

// Contiguous f32: eight double lanes at a time, the ragged tail padded into one more vector.
template <class F>
void wide_contiguous_f32(const float* g, const float* x, float* out, int64_t n, const F& f) {
  parallel_for(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i += 8) {
      const bool full = end - i >= 8;
      const size_t bytes = full ? sizeof(wide::f32x8) : static_cast<size_t>(end - i) * sizeof(float);
      wide::f32x8 vg = {}, vx = {};
      if (full) {
        std::memcpy(&vg, g + i, sizeof vg);
        std::memcpy(&vx, x + i, sizeof vx);
      } else {
        std::memcpy(&vg, g + i, bytes);
        std::memcpy(&vx, x + i, bytes);
      }
      const wide::f64x8 r = f.wide(__builtin_convertvector(vg, wide::f64x8), __builtin_convertvector(vx, wide::f64x8));
      const wide::f32x8 r32 = __builtin_convertvector(r, wide::f32x8);
      if (full) std::memcpy(out + i, &r32, sizeof r32);
      else std::memcpy(out + i, &r32, bytes);
    }
  });
}

// out = F::lanes(g, x) for f32, f16 and bf16 (Note [f32 lane math]); contiguous f32 directly, other
// layouts and dtypes through float buffers a block at a time, so they round alike. f64: <cmath>.
template <class F>
void lanes_backward_map(const Tensor& g, const Tensor& x, Tensor& out, const char* op, const F& f) {
  visit_floating(g.dtype(), op, [&]<class T>() {
    if constexpr (std::is_same_v<T, double>) {
      binary_loop<T, T>(g, x, out, f);
    } else {
      if constexpr (std::is_same_v<T, float>) {
        if (g.is_contiguous() && x.is_contiguous() && out.is_contiguous()) {
          const float* pg = static_cast<const float*>(g.data_ptr());
          const float* px = static_cast<const float*>(x.data_ptr());
          float* po = static_cast<float*>(out.data_ptr());
          return parallel_for(out.numel(), kElementwiseGrain,
                              [&](int64_t b, int64_t e) { vmath::map(pg + b, px + b, po + b, e - b, F::lanes); });
        }
      }
      StridedIter<3> it({&out, &g, &x});
      it.run([&](int64_t n, char** p, const int64_t* s) {
        constexpr int64_t kBlock = 256;
        float bg[kBlock], bx[kBlock];
        for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
          const int64_t m = std::min(kBlock, n - i0);
          lanes::strided_to_f32<T>(p[1] + i0 * s[1], s[1], bg, m);
          lanes::strided_to_f32<T>(p[2] + i0 * s[2], s[2], bx, m);
          vmath::map(bg, bx, bg, m, F::lanes);
          lanes::strided_from_f32<T>(bg, p[0] + i0 * s[0], s[0], m);
        }
      });
    }
  });
}

template <class F>
void backward_map(const Tensor& g, const Tensor& x, Tensor& out, const char* op, const F& f) {
  visit_floating(g.dtype(), op, [&]<class T>() {
    if constexpr (std::is_same_v<T, float> && HasWide<F>) {
      if (g.is_contiguous() && x.is_contiguous() && out.is_contiguous())
        return wide_contiguous_f32(static_cast<const float*>(g.data_ptr()), static_cast<const float*>(x.data_ptr()),
                                   static_cast<float*>(out.data_ptr()), out.numel(), f);
    }
    // Other float layouts run the same wide math on one lane, so every layout rounds alike.
    binary_loop<T, T>(g, x, out, [&f](T gv, T xv) {
      const double gd = static_cast<double>(static_cast<compute_t<T>>(gv));
      const double xd = static_cast<double>(static_cast<compute_t<T>>(xv));
      if constexpr (!std::is_same_v<T, double> && HasWide<F>) return static_cast<T>(static_cast<float>(f.wide(gd, xd)));
      else return static_cast<T>(f(gd, xd));
    });
  });
}

void relu_backward_cpu(const Tensor& g, const Tensor& y, Tensor& out) {
  backward_map(g, y, out, "relu backward", ReluBackward{});
}
void silu_backward_cpu(const Tensor& g, const Tensor& x, Tensor& out) {
  backward_map(g, x, out, "silu backward", SiluBackward{});
}
void gelu_tanh_backward_cpu(const Tensor& g, const Tensor& x, Tensor& out) {
  lanes_backward_map(g, x, out, "gelu backward", GeluTanhBackward{});
}
void gelu_erf_backward_cpu(const Tensor& g, const Tensor& x, Tensor& out) {
  lanes_backward_map(g, x, out, "gelu backward", GeluErfBackward{});
}

}  // namespace

KILN_REGISTER_KERNEL(Op::relu_backward, DeviceType::cpu, relu_backward_cpu);
KILN_REGISTER_KERNEL(Op::silu_backward, DeviceType::cpu, silu_backward_cpu);
KILN_REGISTER_KERNEL(Op::gelu_tanh_backward, DeviceType::cpu, gelu_tanh_backward_cpu);
KILN_REGISTER_KERNEL(Op::gelu_erf_backward, DeviceType::cpu, gelu_erf_backward_cpu);

}  // namespace kiln::cpu
