// The optimizers' fused elementwise updates (see fused_update.h). Every loop body is torch's
// single-tensor sequence of ops for one element: each op rounds to T, and its Python-float scalars
// are cast to T first, as torch's CPU kernels do for float32/float64 tensors.
// Note [No FMA contraction]: contracting a*b+c into one fma would round differently from torch's
// separate ops and make results depend on the compiler, so this file turns contraction off.
#pragma GCC optimize("fp-contract=off")

#include "nn/optim/fused_update.h"

#include <cmath>

#include "tensor/parallel.h"

namespace kiln::optim {
namespace {

// torch's lerp: self + w * (end - self) for |w| < 0.5, else end - (end - self) * (1 - w).
template <class T>
inline T lerp(T self, T end, T weight) {
  return std::abs(weight) < T(0.5) ? self + weight * (end - self) : end - (end - self) * (T(1) - weight);
}

// torch.maximum: NaN wins.
template <class T>
inline T nan_max(T a, T b) {
  return (std::isnan(a) || a > b) ? a : b;
}

template <class T>
T* ptr(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Runs body.template operator()<T>(param_data, grad_data, n) over contiguous copies where needed,
// writes a strided parameter back, and bumps the parameter's version (it changed in place).
template <class Body>
void run_update(const Tensor& param, const Tensor& grad, const char* op, Body&& body) {
  KILN_CHECK(param.shape() == grad.shape() && param.dtype() == grad.dtype(), op, ": parameter ", param.shape(), " ",
             param.dtype(), " and gradient ", grad.shape(), " ", grad.dtype(), " differ");
  const Tensor g = grad.contiguous();
  const bool direct = param.is_contiguous();
  Tensor work = direct ? param : param.contiguous();
  auto run = [&]<class T>() { body.template operator()<T>(work.data_ptr<T>(), g.data_ptr<T>(), param.numel()); };
  switch (param.dtype()) {
    case DType::f32: run.template operator()<float>(); break;
    case DType::f64: run.template operator()<double>(); break;
    default: detail::throw_error(op, ": parameters of dtype ", param.dtype(), " are not supported (float32, float64)");
  }
  if (direct) {
    param.bump_version();
  } else {
    Tensor target = param;
    target.copy_(work);
  }
}

}  // namespace

void sgd_update(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, const SgdUpdate& h) {
  run_update(param, grad, "SGD", [&]<class T>(T* p, const T* g, int64_t n) {
    T* buf = ptr<T>(momentum_buffer);
    const T wd = T(h.weight_decay), mom = T(h.momentum), keep = T(1 - h.dampening), neg_lr = T(-h.lr);
    const bool use_wd = h.weight_decay != 0, use_mom = h.momentum != 0;
    const bool maximize = h.maximize, nesterov = h.nesterov, first = h.first_step;
    parallel_for(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        T d = maximize ? -g[i] : g[i];
        if (use_wd) d = d + wd * p[i];
        if (use_mom) {
          buf[i] = first ? d : buf[i] * mom + keep * d;
          d = nesterov ? d + mom * buf[i] : buf[i];
        }
        p[i] = p[i] + neg_lr * d;
      }
    });
  });
}

void adam_update(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                 const Tensor& max_exp_avg_sq, const AdamUpdate& h) {
  // Scalars exactly as torch computes them in Python floats.
  const double bias_correction1 = 1 - std::pow(h.beta1, h.step);
  const double bias_correction2 = 1 - std::pow(h.beta2, h.step);
  const double step_size = h.lr / bias_correction1;
  const double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);
  run_update(param, grad, "Adam", [&]<class T>(T* p, const T* g, int64_t n) {
    T* m = ptr<T>(exp_avg);
    T* v = ptr<T>(exp_avg_sq);
    T* vmax = ptr<T>(max_exp_avg_sq);
    const T decay = T(1 - h.lr * h.weight_decay), wd = T(h.weight_decay);
    const T w1 = T(1 - h.beta1), b2 = T(h.beta2), w2 = T(1 - h.beta2);
    const T bc2_sqrt = T(bias_correction2_sqrt), eps = T(h.eps), neg_step = T(-step_size);
    const bool use_wd = h.weight_decay != 0, decoupled = h.decoupled_weight_decay, amsgrad = h.amsgrad;
    const bool maximize = h.maximize;
    parallel_for(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        T d = maximize ? -g[i] : g[i];
        if (use_wd) {
          if (decoupled) p[i] = p[i] * decay;
          else d = d + wd * p[i];
        }
        m[i] = lerp(m[i], d, w1);
        v[i] = v[i] * b2;
        v[i] = v[i] + w2 * d * d;
        T second = v[i];
        if (amsgrad) second = vmax[i] = nan_max(vmax[i], v[i]);
        const T denom = std::sqrt(second) / bc2_sqrt + eps;
        p[i] = p[i] + neg_step * m[i] / denom;
      }
    });
  });
}

void rmsprop_update(const Tensor& param, const Tensor& grad, const Tensor& square_avg, const Tensor& grad_avg,
                    const Tensor& momentum_buffer, const RmspropUpdate& h) {
  run_update(param, grad, "RMSprop", [&]<class T>(T* p, const T* g, int64_t n) {
    T* sq = ptr<T>(square_avg);
    T* ga = ptr<T>(grad_avg);
    T* buf = ptr<T>(momentum_buffer);
    const T wd = T(h.weight_decay), alpha = T(h.alpha), w = T(1 - h.alpha), eps = T(h.eps);
    const T mom = T(h.momentum), neg_lr = T(-h.lr);
    const bool use_wd = h.weight_decay != 0, use_mom = h.momentum > 0, centered = h.centered;
    const bool maximize = h.maximize;
    parallel_for(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        T d = maximize ? -g[i] : g[i];
        if (use_wd) d = d + wd * p[i];
        sq[i] = sq[i] * alpha;
        sq[i] = sq[i] + w * d * d;
        T avg;
        if (centered) {
          ga[i] = lerp(ga[i], d, w);
          avg = std::sqrt(sq[i] + T(-1) * ga[i] * ga[i]);
        } else {
          avg = std::sqrt(sq[i]);
        }
        avg = avg + eps;
        if (use_mom) {
          buf[i] = buf[i] * mom;
          buf[i] = buf[i] + T(1) * d / avg;
          p[i] = p[i] + neg_lr * buf[i];
        } else {
          p[i] = p[i] + neg_lr * d / avg;
        }
      }
    });
  });
}

void adagrad_update(const Tensor& param, const Tensor& grad, const Tensor& state_sum, const AdagradUpdate& h) {
  const double clr = h.lr / (1 + (h.step - 1) * h.lr_decay);
  run_update(param, grad, "Adagrad", [&]<class T>(T* p, const T* g, int64_t n) {
    T* sum = ptr<T>(state_sum);
    const T wd = T(h.weight_decay), eps = T(h.eps), neg_clr = T(-clr);
    const bool use_wd = h.weight_decay != 0, maximize = h.maximize;
    parallel_for(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        T d = maximize ? -g[i] : g[i];
        if (use_wd) d = d + wd * p[i];
        sum[i] = sum[i] + T(1) * d * d;
        const T std_dev = std::sqrt(sum[i]) + eps;
        p[i] = p[i] + neg_clr * d / std_dev;
      }
    });
  });
}

}  // namespace kiln::optim
