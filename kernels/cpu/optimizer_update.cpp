// CPU kernels of the optimizer updates (Op::sgd_update, adam_update, rmsprop_update,
// adagrad_update): one fused pass per parameter. Every loop body is torch's single-tensor sequence
// of ops for one element: each op rounds to T, and its Python-float scalars are cast to T first, as
// torch's CPU kernels do for float32/float64 tensors; bfloat16/float16 parameters follow Note
// [16-bit updates]. Not here: the checks and the copies of strided parameters
// (nn/optim/fused_update.cpp).
// Note [No FMA contraction]: contracting a*b+c into one fma would round differently from torch's
// separate ops and make results depend on the compiler, so this file turns contraction off.
// Note [Vectorised updates]: each loop takes its options as template flags and its arrays as
// restrict pointers, so the compiler emits one branch-free SIMD loop per combination. Lanes are
// independent elements and nothing is reassociated, so every element rounds exactly as before.
// std::sqrt vectorises only without errno: cmake/KilnCpuLevels.cmake builds this file with
// -fno-math-errno.
#pragma GCC optimize("fp-contract=off")

#include <bit>
#include <cmath>
#include <type_traits>

#include "tensor/dispatch.h"
#include "tensor/half.h"
#include "tensor/parallel.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

// torch's lerp: self + w * (end - self) for |w| < 0.5, else end - (end - self) * (1 - w). Both
// are computed and one is kept by a bit mask: GCC turns a select on the loop-invariant weight into
// a branch, which stops the loops from vectorising below AVX-512.
template <class T>
inline T lerp(T self, T end, T weight) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  const Bits keep_near = Bits(0) - Bits(std::abs(weight) < T(0.5));
  const T from_self = self + weight * (end - self), from_end = end - (end - self) * (T(1) - weight);
  return std::bit_cast<T>((std::bit_cast<Bits>(from_self) & keep_near) | (std::bit_cast<Bits>(from_end) & ~keep_near));
}

// torch.maximum: NaN wins.
template <class T>
inline T nan_max(T a, T b) {
  return (std::isnan(a) || a > b) ? a : b;
}

// Calls f(std::bool_constant<b0>{}, ...) for the run-time flags: one instantiation per combination.
template <class F>
void with_flags(F&& f) {
  f();
}
template <class F, class... Rest>
void with_flags(F&& f, bool flag, Rest... rest) {
  if (flag)
    with_flags([&](auto... bs) { f(std::true_type{}, bs...); }, rest...);
  else
    with_flags([&](auto... bs) { f(std::false_type{}, bs...); }, rest...);
}

template <class T>
T* ptr(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Runs body.template operator()<T>(param_data, grad_data, n); the op definition has checked that
// every tensor is contiguous with the parameter's shape and dtype.
template <class Body>
void run_update(const Tensor& param, const Tensor& grad, Body&& body) {
  auto run = [&]<class T>() { body.template operator()<T>(param.data_ptr<T>(), grad.data_ptr<T>(), param.numel()); };
  if (param.dtype() == DType::f32) run.template operator()<float>();
  else run.template operator()<double>();
}

// ---- 16-bit parameters
// Note [16-bit updates]: torch steps a bfloat16/float16 parameter with the same single-tensor ops
// on 16-bit tensors, and each of its CPU kernels computes in float and rounds its result to the
// 16-bit type once. So these loops hold values in float and round with r<T>() exactly where a torch
// op writes a tensor. The ops treat their Python-float scalars differently: mul, div, lerp, addcmul
// and addcdiv take them in float, while add casts its alpha, or an added scalar (`add_(eps)`), to
// the 16-bit type first (low<T>(); so Adam's default eps, 1e-8, is 0 in float16, as in torch).
// Where torch's vectorised loop fuses a multiply-add (add's alpha * other + self, lerp, addcmul's
// last step) these loops call std::fma; add's product of two 16-bit values is exact in float, so
// only lerp and addcmul could tell. A NaN from amsgrad's maximum takes that loop's bits too
// (nan_max_16). Torch runs the last (< one vector: 32 bf16 at AVX-512) elements of each thread's
// range through a scalar loop whose add rounds alpha * other to 16 bits before adding (and whose
// maximum returns another NaN); these loops follow the vectorised form for every element.

// Branch-free forms of tensor/half.h's conversions (the same bits for every input: compared over
// all 2^32 floats and 2^16 halves when written), so that the loops below vectorise: they pick
// among candidates with bit masks, as GCC turns nested selects into branches. These helpers are
// forced inline: GCC leaves a call in the larger loop bodies otherwise, which stops vectorisation too.
#define KILN_LOOP_INLINE [[gnu::always_inline]] inline

// All ones where c holds.
KILN_LOOP_INLINE uint32_t mask(bool c) { return 0u - static_cast<uint32_t>(c); }

KILN_LOOP_INLINE float decode(BFloat16 v) { return std::bit_cast<float>(static_cast<uint32_t>(v.bits) << 16); }

KILN_LOOP_INLINE float decode(Half v) {
  const uint32_t h = v.bits, sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  const uint32_t subnormal = std::bit_cast<uint32_t>(static_cast<float>(mant) * 5.9604644775390625e-08f) | sign;
  const uint32_t inf_nan = sign | 0x7f800000u | (mant << 13);
  const uint32_t normal = sign | ((exp + 112u) << 23) | (mant << 13);
  const uint32_t is_subnormal = mask(exp == 0), is_special = mask(exp == 0x1fu);
  return std::bit_cast<float>((subnormal & is_subnormal) | (inf_nan & is_special) |
                              (normal & ~(is_subnormal | is_special)));
}

template <class T>
T encode(float f);

template <>
KILN_LOOP_INLINE BFloat16 encode<BFloat16>(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16, quiet_nan = (x >> 16) | 0x0040u;
  return BFloat16::from_bits(static_cast<uint16_t>((x & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded));
}

template <>
KILN_LOOP_INLINE Half encode<Half>(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f), sign = (x >> 16) & 0x8000u, abs = x & 0x7fffffffu;
  const uint32_t inf_nan = 0x7c00u | (abs > 0x7f800000u ? 0x0200u | ((abs >> 13) & 0x3ffu) : 0u);
  // Adding 0.5f aligns a subnormal half's mantissa so the FPU rounds it to nearest even.
  const uint32_t subnormal = std::bit_cast<uint32_t>(std::bit_cast<float>(abs) + 0.5f) - 0x3f000000u;
  const uint32_t normal = (abs + 0xc8000fffu + ((abs >> 13) & 1u)) >> 13;  // rebias the exponent and round
  const uint32_t is_special = mask(abs >= 0x7f800000u), is_overflow = mask(abs >= 0x477ff000u) & ~is_special;
  const uint32_t is_subnormal = mask(abs < 0x38800000u);
  const uint32_t bits = (inf_nan & is_special) | (0x7c00u & is_overflow) | (subnormal & is_subnormal) |
                        (normal & ~(is_special | is_overflow | is_subnormal));
  return Half::from_bits(static_cast<uint16_t>(sign | bits));
}

// One of torch's rounding points: a float result written to a T tensor.
template <class T>
KILN_LOOP_INLINE float r(float x) {
  return decode(encode<T>(x));
}

// A Python scalar as add() takes it for a T tensor: cast to T (through float, as c10 casts).
template <class T>
float low(double s) {
  return r<T>(static_cast<float>(s));
}

// torch's vectorised lerp: one fused multiply-add from the end nearer to the weight, picked by a
// bit mask (a select on the weight becomes a branch that stops vectorisation).
struct LerpWeight {
  float coeff;         // weight, or weight - 1 from the far end
  uint32_t self_mask;  // all ones: start from self; zero: from end
  explicit LerpWeight(float w)
      : coeff(std::abs(w) < 0.5f ? w : w - 1.0f), self_mask(std::abs(w) < 0.5f ? 0xffffffffu : 0u) {}
};
KILN_LOOP_INLINE float lerp_fma(float self, float end, LerpWeight w) {
  const uint32_t base = (std::bit_cast<uint32_t>(self) & w.self_mask) | (std::bit_cast<uint32_t>(end) & ~w.self_mask);
  return std::fma(w.coeff, end - self, std::bit_cast<float>(base));
}

// torch's vectorised maximum: a NaN on either side gives the NaN with every bit set (0xffff once
// rounded to 16 bits), not either input.
KILN_LOOP_INLINE float nan_max_16(float a, float b) {
  constexpr uint32_t kAllOnes = 0xffffffffu;
  return (std::isnan(a) || std::isnan(b)) ? std::bit_cast<float>(kAllOnes) : (a > b ? a : b);
}

bool is_16bit(const Tensor& t) { return t.dtype() == DType::bf16 || t.dtype() == DType::f16; }

template <class Body>
void run_update_16(const Tensor& param, const Tensor& grad, Body&& body) {
  auto run = [&]<class T>() { body.template operator()<T>(param.data_ptr<T>(), grad.data_ptr<T>(), param.numel()); };
  if (param.dtype() == DType::bf16) run.template operator()<BFloat16>();
  else run.template operator()<Half>();
}

void sgd_update_16(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, const SgdUpdate& h) {
  run_update_16(param, grad, [&]<class T>(T* param_data, const T* grad_data, int64_t n) {
    T* const buf_data = ptr<T>(momentum_buffer);
    const float wd = low<T>(h.weight_decay), mom = static_cast<float>(h.momentum), mom_alpha = low<T>(h.momentum);
    const float keep = low<T>(1 - h.dampening), neg_lr = low<T>(-h.lr);
    with_flags(
        [&](auto maximize, auto use_wd, auto use_mom, auto nesterov, auto first) {
          parallel_for(n, kElementwiseGrain, [=](int64_t begin, int64_t end) {
            T* __restrict p = param_data;
            const T* __restrict g = grad_data;
            T* __restrict buf = buf_data;
#pragma omp simd
            for (int64_t i = begin; i < end; ++i) {
              const float pi = decode(p[i]);
              float d = maximize ? -decode(g[i]) : decode(g[i]);
              if constexpr (use_wd) d = r<T>(std::fma(pi, wd, d));  // grad.add(param, alpha=wd)
              if constexpr (use_mom) {
                // buf.mul_(momentum).add_(grad, alpha=1 - dampening), or grad's clone at the first step
                const float b = first ? d : r<T>(std::fma(d, keep, r<T>(decode(buf[i]) * mom)));
                buf[i] = encode<T>(b);
                d = nesterov ? r<T>(std::fma(b, mom_alpha, d)) : b;
              }
              p[i] = encode<T>(std::fma(d, neg_lr, pi));  // param.add_(grad, alpha=-lr)
            }
          });
        },
        h.maximize, h.weight_decay != 0, h.momentum != 0, h.nesterov, h.first_step);
  });
}

void adam_update_16(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                    const Tensor& max_exp_avg_sq, const AdamUpdate& h) {
  const double bias_correction2 = 1 - std::pow(h.beta2, h.step);
  const double step_size = h.lr / (1 - std::pow(h.beta1, h.step));
  run_update_16(param, grad, [&]<class T>(T* param_data, const T* grad_data, int64_t n) {
    T* const m_data = ptr<T>(exp_avg);
    T* const v_data = ptr<T>(exp_avg_sq);
    T* const vmax_data = ptr<T>(max_exp_avg_sq);
    const float decay = static_cast<float>(1 - h.lr * h.weight_decay), wd = low<T>(h.weight_decay);
    const LerpWeight w1(static_cast<float>(1 - h.beta1));
    const float b2 = static_cast<float>(h.beta2);
    const float w2 = static_cast<float>(1 - h.beta2), bc2_sqrt = static_cast<float>(std::pow(bias_correction2, 0.5));
    const float eps = low<T>(h.eps), neg_step = static_cast<float>(-step_size);
    with_flags(
        [&](auto maximize, auto use_wd, auto decoupled, auto amsgrad) {
          parallel_for(n, kElementwiseGrain, [=](int64_t begin, int64_t end) {
            T* __restrict p = param_data;
            const T* __restrict g = grad_data;
            T* __restrict m = m_data;
            T* __restrict v = v_data;
            T* __restrict vmax = vmax_data;
#pragma omp simd
            for (int64_t i = begin; i < end; ++i) {
              float d = maximize ? -decode(g[i]) : decode(g[i]);
              float pi = decode(p[i]);
              if constexpr (use_wd) {
                if constexpr (decoupled) pi = r<T>(pi * decay);  // param.mul_(1 - lr * wd)
                else d = r<T>(std::fma(pi, wd, d));              // grad.add(param, alpha=wd)
              }
              const float mi = r<T>(lerp_fma(decode(m[i]), d, w1));
              m[i] = encode<T>(mi);
              float vi = r<T>(decode(v[i]) * b2);  // exp_avg_sq.mul_(beta2)
              vi = r<T>(std::fma(w2 * d, d, vi));  // .addcmul_(grad, grad, value=1 - beta2)
              v[i] = encode<T>(vi);
              float second = vi;
              if constexpr (amsgrad) {
                second = nan_max_16(decode(vmax[i]), vi);
                vmax[i] = encode<T>(second);
              }
              float denom = r<T>(std::sqrt(second));
              denom = r<T>(denom / bc2_sqrt);
              denom = r<T>(denom + eps);
              p[i] = encode<T>(pi + neg_step * mi / denom);  // param.addcdiv_(exp_avg, denom, value=-step_size)
            }
          });
        },
        h.maximize, h.weight_decay != 0, h.decoupled_weight_decay, h.amsgrad);
  });
}

void rmsprop_update_16(const Tensor& param, const Tensor& grad, const Tensor& square_avg, const Tensor& grad_avg,
                       const Tensor& momentum_buffer, const RmspropUpdate& h) {
  run_update_16(param, grad, [&]<class T>(T* param_data, const T* grad_data, int64_t n) {
    T* const sq_data = ptr<T>(square_avg);
    T* const ga_data = ptr<T>(grad_avg);
    T* const buf_data = ptr<T>(momentum_buffer);
    const float wd = low<T>(h.weight_decay), alpha = static_cast<float>(h.alpha);
    const float w = static_cast<float>(1 - h.alpha), eps = low<T>(h.eps), mom = static_cast<float>(h.momentum);
    const LerpWeight lerp_w(w);
    const float neg_lr = static_cast<float>(-h.lr), neg_lr_alpha = low<T>(-h.lr);
    with_flags(
        [&](auto maximize, auto use_wd, auto use_mom, auto centered) {
          parallel_for(n, kElementwiseGrain, [=](int64_t begin, int64_t end) {
            T* __restrict p = param_data;
            const T* __restrict g = grad_data;
            T* __restrict sq = sq_data;
            T* __restrict ga = ga_data;
            T* __restrict buf = buf_data;
#pragma omp simd
            for (int64_t i = begin; i < end; ++i) {
              const float pi = decode(p[i]);
              float d = maximize ? -decode(g[i]) : decode(g[i]);
              if constexpr (use_wd) d = r<T>(std::fma(pi, wd, d));
              float s = r<T>(decode(sq[i]) * alpha);
              s = r<T>(std::fma(w * d, d, s));
              sq[i] = encode<T>(s);
              float avg;
              if constexpr (centered) {
                const float a = r<T>(lerp_fma(decode(ga[i]), d, lerp_w));
                ga[i] = encode<T>(a);
                avg = r<T>(std::sqrt(r<T>(std::fma(-a, a, s))));  // square_avg.addcmul(grad_avg, grad_avg, value=-1)
              } else {
                avg = r<T>(std::sqrt(s));
              }
              avg = r<T>(avg + eps);
              if constexpr (use_mom) {
                const float b = r<T>(r<T>(decode(buf[i]) * mom) + d / avg);  // buf.mul_(momentum).addcdiv_(grad, avg)
                buf[i] = encode<T>(b);
                p[i] = encode<T>(std::fma(b, neg_lr_alpha, pi));
              } else {
                p[i] = encode<T>(pi + neg_lr * d / avg);
              }
            }
          });
        },
        h.maximize, h.weight_decay != 0, h.momentum > 0, h.centered);
  });
}

void adagrad_update_16(const Tensor& param, const Tensor& grad, const Tensor& state_sum, const AdagradUpdate& h) {
  const double clr = h.lr / (1 + (h.step - 1) * h.lr_decay);
  run_update_16(param, grad, [&]<class T>(T* param_data, const T* grad_data, int64_t n) {
    T* const sum_data = ptr<T>(state_sum);
    const float wd = low<T>(h.weight_decay), eps = low<T>(h.eps), neg_clr = static_cast<float>(-clr);
    with_flags(
        [&](auto maximize, auto use_wd) {
          parallel_for(n, kElementwiseGrain, [=](int64_t begin, int64_t end) {
            T* __restrict p = param_data;
            const T* __restrict g = grad_data;
            T* __restrict sum = sum_data;
#pragma omp simd
            for (int64_t i = begin; i < end; ++i) {
              const float pi = decode(p[i]);
              float d = maximize ? -decode(g[i]) : decode(g[i]);
              if constexpr (use_wd) d = r<T>(std::fma(pi, wd, d));
              const float s = r<T>(std::fma(d, d, decode(sum[i])));  // state_sum.addcmul_(grad, grad, value=1)
              sum[i] = encode<T>(s);
              const float std_dev = r<T>(r<T>(std::sqrt(s)) + eps);
              p[i] = encode<T>(pi + neg_clr * d / std_dev);
            }
          });
        },
        h.maximize, h.weight_decay != 0);
  });
}

// ---- float32 and float64 parameters

void sgd_update_cpu(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, const SgdUpdate& h) {
  if (is_16bit(param)) return sgd_update_16(param, grad, momentum_buffer, h);
  run_update(param, grad, [&]<class T>(T* param_data, const T* grad_data, int64_t n) {
    T* const buf_data = ptr<T>(momentum_buffer);
    const T wd = T(h.weight_decay), mom = T(h.momentum), keep = T(1 - h.dampening), neg_lr = T(-h.lr);
    with_flags(
        [&](auto maximize, auto use_wd, auto use_mom, auto nesterov, auto first) {
          parallel_for(n, kElementwiseGrain, [=](int64_t begin, int64_t end) {
            T* __restrict p = param_data;
            const T* __restrict g = grad_data;
            T* __restrict buf = buf_data;
#pragma omp simd
            for (int64_t i = begin; i < end; ++i) {
              T d = maximize ? -g[i] : g[i];
              if constexpr (use_wd) d = d + wd * p[i];
              if constexpr (use_mom) {
                const T b = first ? d : buf[i] * mom + keep * d;
                buf[i] = b;
                d = nesterov ? d + mom * b : b;
              }
              p[i] = p[i] + neg_lr * d;
            }
          });
        },
        h.maximize, h.weight_decay != 0, h.momentum != 0, h.nesterov, h.first_step);
  });
}

void adam_update_cpu(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                 const Tensor& max_exp_avg_sq, const AdamUpdate& h) {
  if (is_16bit(param)) return adam_update_16(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, h);
  // Scalars exactly as torch computes them in Python floats.
  const double bias_correction1 = 1 - std::pow(h.beta1, h.step);
  const double bias_correction2 = 1 - std::pow(h.beta2, h.step);
  const double step_size = h.lr / bias_correction1;
  const double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);
  run_update(param, grad, [&]<class T>(T* param_data, const T* grad_data, int64_t n) {
    T* const m_data = ptr<T>(exp_avg);
    T* const v_data = ptr<T>(exp_avg_sq);
    T* const vmax_data = ptr<T>(max_exp_avg_sq);
    const T decay = T(1 - h.lr * h.weight_decay), wd = T(h.weight_decay);
    const T w1 = T(1 - h.beta1), b2 = T(h.beta2), w2 = T(1 - h.beta2);
    const T bc2_sqrt = T(bias_correction2_sqrt), eps = T(h.eps), neg_step = T(-step_size);
    with_flags(
        [&](auto maximize, auto use_wd, auto decoupled, auto amsgrad) {
          parallel_for(n, kElementwiseGrain, [=](int64_t begin, int64_t end) {
            T* __restrict p = param_data;
            const T* __restrict g = grad_data;
            T* __restrict m = m_data;
            T* __restrict v = v_data;
            T* __restrict vmax = vmax_data;
#pragma omp simd
            for (int64_t i = begin; i < end; ++i) {
              T d = maximize ? -g[i] : g[i];
              T pi = p[i];
              if constexpr (use_wd) {
                if constexpr (decoupled) pi = pi * decay;
                else d = d + wd * pi;
              }
              const T mi = lerp(m[i], d, w1);
              m[i] = mi;
              T vi = v[i] * b2;
              vi = vi + w2 * d * d;
              v[i] = vi;
              T second = vi;
              if constexpr (amsgrad) second = vmax[i] = nan_max(vmax[i], vi);
              const T denom = std::sqrt(second) / bc2_sqrt + eps;
              p[i] = pi + neg_step * mi / denom;
            }
          });
        },
        h.maximize, h.weight_decay != 0, h.decoupled_weight_decay, h.amsgrad);
  });
}

void rmsprop_update_cpu(const Tensor& param, const Tensor& grad, const Tensor& square_avg, const Tensor& grad_avg,
                    const Tensor& momentum_buffer, const RmspropUpdate& h) {
  if (is_16bit(param)) return rmsprop_update_16(param, grad, square_avg, grad_avg, momentum_buffer, h);
  run_update(param, grad, [&]<class T>(T* param_data, const T* grad_data, int64_t n) {
    T* const sq_data = ptr<T>(square_avg);
    T* const ga_data = ptr<T>(grad_avg);
    T* const buf_data = ptr<T>(momentum_buffer);
    const T wd = T(h.weight_decay), alpha = T(h.alpha), w = T(1 - h.alpha), eps = T(h.eps);
    const T mom = T(h.momentum), neg_lr = T(-h.lr);
    with_flags(
        [&](auto maximize, auto use_wd, auto use_mom, auto centered) {
          parallel_for(n, kElementwiseGrain, [=](int64_t begin, int64_t end) {
            T* __restrict p = param_data;
            const T* __restrict g = grad_data;
            T* __restrict sq = sq_data;
            T* __restrict ga = ga_data;
            T* __restrict buf = buf_data;
#pragma omp simd
            for (int64_t i = begin; i < end; ++i) {
              T d = maximize ? -g[i] : g[i];
              if constexpr (use_wd) d = d + wd * p[i];
              T s = sq[i] * alpha;
              s = s + w * d * d;
              sq[i] = s;
              T avg;
              if constexpr (centered) {
                const T a = lerp(ga[i], d, w);
                ga[i] = a;
                avg = std::sqrt(s + T(-1) * a * a);
              } else {
                avg = std::sqrt(s);
              }
              avg = avg + eps;
              if constexpr (use_mom) {
                T b = buf[i] * mom;
                b = b + T(1) * d / avg;
                buf[i] = b;
                p[i] = p[i] + neg_lr * b;
              } else {
                p[i] = p[i] + neg_lr * d / avg;
              }
            }
          });
        },
        h.maximize, h.weight_decay != 0, h.momentum > 0, h.centered);
  });
}

void adagrad_update_cpu(const Tensor& param, const Tensor& grad, const Tensor& state_sum, const AdagradUpdate& h) {
  if (is_16bit(param)) return adagrad_update_16(param, grad, state_sum, h);
  const double clr = h.lr / (1 + (h.step - 1) * h.lr_decay);
  run_update(param, grad, [&]<class T>(T* param_data, const T* grad_data, int64_t n) {
    T* const sum_data = ptr<T>(state_sum);
    const T wd = T(h.weight_decay), eps = T(h.eps), neg_clr = T(-clr);
    with_flags(
        [&](auto maximize, auto use_wd) {
          parallel_for(n, kElementwiseGrain, [=](int64_t begin, int64_t end) {
            T* __restrict p = param_data;
            const T* __restrict g = grad_data;
            T* __restrict sum = sum_data;
#pragma omp simd
            for (int64_t i = begin; i < end; ++i) {
              T d = maximize ? -g[i] : g[i];
              if constexpr (use_wd) d = d + wd * p[i];
              const T s = sum[i] + T(1) * d * d;
              sum[i] = s;
              const T std_dev = std::sqrt(s) + eps;
              p[i] = p[i] + neg_clr * d / std_dev;
            }
          });
        },
        h.maximize, h.weight_decay != 0);
  });
}

#undef KILN_LOOP_INLINE

}  // namespace

KILN_REGISTER_KERNEL(Op::sgd_update, DeviceType::cpu, sgd_update_cpu);
KILN_REGISTER_KERNEL(Op::adam_update, DeviceType::cpu, adam_update_cpu);
KILN_REGISTER_KERNEL(Op::rmsprop_update, DeviceType::cpu, rmsprop_update_cpu);
KILN_REGISTER_KERNEL(Op::adagrad_update, DeviceType::cpu, adagrad_update_cpu);

}  // namespace kiln::cpu
