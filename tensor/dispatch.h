// Dispatch: one flat table kernel[op][device type], filled by static registration in each kernel's
// own file (STYLE L3). Op definitions call dispatch<Op::x>(device, args...); a missing kernel is a
// kiln::Error naming the op and the devices that have one. KILN_DEBUG=1 logs every dispatch.
#pragma once

#include <atomic>
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "tensor/op_list.h"
#include "tensor/tensor.h"

namespace kiln {

// ---- kernel signature families. Outputs are allocated by the op definition, never by a kernel.
// Shapes: unless stated, `out` has the broadcast shape of the inputs, which the op definition has
// already expanded (stride 0) to out's shape and converted to one compute dtype.
using CopyKernel = void (*)(const Tensor& src, Tensor& dst);  // src expanded to dst; any dtypes
using FillKernel = void (*)(Tensor& out, const Scalar& value);
using RangeKernel = void (*)(Tensor& out, double a, double b);  // arange: start, step; linspace: start, end
using RandomKernel = void (*)(Tensor& out, double a, double b, Generator& gen);  // uniform: lo, hi; normal: mean, std; randint: lo, hi; bernoulli: p
using RandomLikeKernel = void (*)(const Tensor& p, Tensor& out, Generator& gen);
using UnaryKernel = void (*)(const Tensor& x, Tensor& out);
using UnaryParamKernel = void (*)(const Tensor& x, double a, double b, Tensor& out);  // softplus: beta, threshold; leaky_relu: slope; pow_scalar: exponent
using ClampKernel = void (*)(const Tensor& x, const std::optional<Scalar>& lo, const std::optional<Scalar>& hi, Tensor& out);
using BinaryKernel = void (*)(const Tensor& a, const Tensor& b, Tensor& out);
using WhereKernel = void (*)(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out);

struct ReduceArgs {
  uint32_t dims_mask = 0;    // bit d set: dim d of x is reduced
  int64_t correction = 1;    // var
  double p = 2.0;            // norm
  bool take_sqrt = false;    // var: return the standard deviation instead
};
// out has x's rank, with size 1 on the reduced dims (keepdim form); the op definition squeezes.
using ReduceKernel = void (*)(const Tensor& x, const ReduceArgs& args, Tensor& out);
// values and indices have x's shape with size 1 at `dim`.
using ReduceIndexKernel = void (*)(const Tensor& x, int dim, Tensor& values, Tensor& indices);

// out = beta * bias + alpha * (a @ b); a (M,K), b (K,N), bias broadcast to (M,N).
using AddmmKernel = void (*)(const Tensor& bias, const Tensor& a, const Tensor& b, double beta, double alpha, Tensor& out);
using DimKernel = void (*)(const Tensor& x, int dim, Tensor& out);
// Cross-entropy over class indices, log_softmax and the pick in one pass: logits (N,C) and target
// (N, int64) contiguous; loss (N) = -log_softmax(row)[target], 0 where target == ignore_index;
// stats (N,2) each row's max and log of its sum of exp(x - max), kept for backward. A target out
// of [0, C) that is not ignore_index is a kiln::Error.
using CrossEntropyKernel = void (*)(const Tensor& logits, const Tensor& target, int64_t ignore_index, Tensor& loss,
                                    Tensor& stats);
// grad_logits (N,C) = grad_loss[r] * (softmax(row) - onehot(target)), 0 on ignored rows; grad_loss
// (N) may be expanded (stride 0).
using CrossEntropyBackwardKernel = void (*)(const Tensor& logits, const Tensor& target, int64_t ignore_index,
                                            const Tensor& stats, const Tensor& grad_loss, Tensor& grad_logits);
using SortKernel = void (*)(const Tensor& x, int dim, bool descending, bool stable, Tensor& values, Tensor& indices);
using TopkKernel = void (*)(const Tensor& x, int64_t k, int dim, bool largest, bool sorted, Tensor& values, Tensor& indices);
using TriKernel = void (*)(const Tensor& x, int64_t diagonal, bool lower, Tensor& out);
using CatKernel = void (*)(std::span<const Tensor> xs, int dim, Tensor& out);
using IndexKernel = void (*)(const Tensor& x, int dim, const Tensor& index, Tensor& out);
using IndexPutKernel = void (*)(Tensor& out, int dim, const Tensor& index, const Tensor& src);  // in place into out

// ---- neural-net layers (kernels/cpu/conv.cpp, pool.cpp, norm.cpp). The op definitions hand these
// kernels contiguous inputs; every pair of sizes below is (height, width).
struct ConvParams {
  std::array<int64_t, 2> stride{1, 1}, padding{0, 0}, dilation{1, 1}, output_padding{0, 0};
  int64_t groups = 1;
  bool transposed = false;
};
// x (N,C,H,W); weight (O,C/groups,kh,kw), or (C,O/groups,kh,kw) when transposed; bias (O) or
// undefined; out (N,O,Ho,Wo).
using ConvKernel = void (*)(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvParams& p, Tensor& out);
// The gradients of a convolution's inputs; an undefined grad_* is not wanted and not computed.
using ConvBackwardKernel = void (*)(const Tensor& grad_out, const Tensor& x, const Tensor& weight, const ConvParams& p,
                                    Tensor& grad_x, Tensor& grad_weight, Tensor& grad_bias);

struct PoolParams {
  std::array<int64_t, 2> kernel{1, 1}, stride{1, 1}, padding{0, 0}, dilation{1, 1};
  bool ceil_mode = false;
  bool count_include_pad = true;  // avg_pool2d
  int64_t divisor_override = 0;   // avg_pool2d; 0: none
  bool relu = false;              // max_pool2d: each maximum goes through ReLU (the fused pool + ReLU)
};
// x (N,C,H,W), out (N,C,Ho,Wo); adaptive pooling reads its output size from out and ignores p.
using PoolKernel = void (*)(const Tensor& x, const PoolParams& p, Tensor& out);
using PoolBackwardKernel = void (*)(const Tensor& grad_out, const PoolParams& p, Tensor& grad_x);  // writes all of grad_x
// indices: i64, out's shape, the flat h * W + w position of each max within its (H,W) plane.
using MaxPoolKernel = void (*)(const Tensor& x, const PoolParams& p, Tensor& out, Tensor& indices);
// relu_output, when defined, is the fused pool + ReLU's output: grad_out counts as 0 where it is <= 0.
using MaxPoolBackwardKernel = void (*)(const Tensor& grad_out, const Tensor& indices, const Tensor& relu_output,
                                       Tensor& grad_x);

struct NormParams {
  double eps = 1e-5;
  double momentum = 0.1;  // batch_norm's running statistics
  int64_t groups = 1;     // group_norm
  bool training = true;   // batch_norm: batch statistics (and running-stat updates) or running ones
};
// Layouts: batch_norm x (N,C,L), per-channel weight/bias/running stats (C), mean/rstd (C);
// layer_norm and rms_norm x (R,D), weight/bias (D), mean/rstd (R); group_norm x (N,C,L), weight/bias
// (C), mean/rstd (N*groups). Optional tensors may be undefined; mean and rstd (1/sqrt(var + eps))
// are f64 for f64 inputs and f32 otherwise; rms_norm leaves mean alone.
using NormKernel = void (*)(const Tensor& x, const Tensor& weight, const Tensor& bias, const NormParams& p, Tensor& out,
                            Tensor& mean, Tensor& rstd);
using BatchNormKernel = void (*)(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                                 Tensor& running_var, const NormParams& p, Tensor& out, Tensor& mean, Tensor& rstd);
using NormBackwardKernel = void (*)(const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                   const Tensor& rstd, const NormParams& p, Tensor& grad_x, Tensor& grad_weight,
                                   Tensor& grad_bias);

// ---- optimizer updates (kernels/cpu/optimizer_update.cpp), in place. The op definitions
// (nn/optim/fused_update.cpp) hand the kernels a contiguous parameter, gradient and state buffers
// of one shape and dtype (f32 or f64); a state buffer the options do not use is undefined.
struct SgdUpdate {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize;
  bool first_step;  // the momentum buffer is set to the gradient instead of decayed (torch's clone)
};
using SgdUpdateKernel = void (*)(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer,
                                 const SgdUpdate& h);
struct AdamUpdate {
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled_weight_decay, amsgrad, maximize;
  double step;  // already incremented
};
using AdamUpdateKernel = void (*)(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                                  const Tensor& exp_avg_sq, const Tensor& max_exp_avg_sq, const AdamUpdate& h);
struct RmspropUpdate {
  double lr, alpha, eps, weight_decay, momentum;
  bool centered, maximize;
};
using RmspropUpdateKernel = void (*)(const Tensor& param, const Tensor& grad, const Tensor& square_avg,
                                     const Tensor& grad_avg, const Tensor& momentum_buffer, const RmspropUpdate& h);
struct AdagradUpdate {
  double lr, lr_decay, eps, weight_decay;
  bool maximize;
  double step;  // already incremented
};
using AdagradUpdateKernel = void (*)(const Tensor& param, const Tensor& grad, const Tensor& state_sum,
                                     const AdagradUpdate& h);

// ---- the op enum, generated from the op list
enum class Op : uint16_t {
#define KILN_OP_ENUM(name, family) name,
  KILN_FOR_EACH_OP(KILN_OP_ENUM)
#undef KILN_OP_ENUM
};
#define KILN_OP_COUNT(name, family) +1
inline constexpr int kNumOps = 0 KILN_FOR_EACH_OP(KILN_OP_COUNT);
#undef KILN_OP_COUNT

std::string_view op_name(Op op);

template <Op op> struct OpKernel;
#define KILN_OP_KERNEL(name, family) template <> struct OpKernel<Op::name> { using type = family; };
KILN_FOR_EACH_OP(KILN_OP_KERNEL)
#undef KILN_OP_KERNEL

namespace detail {
// Grad mode's switch, read and set through autograd/grad_mode.h; it lives here so that dispatch can
// turn it off around a kernel. Note [Kernels never record]: a kernel may take views of its inputs
// (permute, select, contiguous); with grad mode on, a view of an input that requires grad would
// record a node that nobody uses.
extern thread_local bool t_grad_enabled;

// Grad mode off for the life of a kernel call, restored on any exit.
class KernelScope {
 public:
  KernelScope() : previous_(t_grad_enabled) { t_grad_enabled = false; }
  ~KernelScope() { t_grad_enabled = previous_; }
  KernelScope(const KernelScope&) = delete;
  KernelScope& operator=(const KernelScope&) = delete;

 private:
  bool previous_;
};

using AnyKernel = void (*)();
extern AnyKernel g_kernels[kNumOps][kNumDeviceTypes];
extern std::atomic<int> g_debug_level;  // KILN_DEBUG, read once at start-up; an op trace raises it
[[noreturn]] void throw_no_kernel(Op op, Device d);
void log_dispatch_begin(Op op, Device d);
void log_dispatch_arg(const Tensor& t);
void log_dispatch_arg(const std::span<const Tensor>& ts);
template <class T> void log_dispatch_arg(const T&) {}
void log_dispatch_end(double micros);
double now_micros();
// cpu_level: the CpuCapability a CPU kernel was compiled for (0 for other devices).
bool register_kernel_any(Op op, DeviceType d, AnyKernel fn, int cpu_level);
int cpu_kernel_level(Op op);  // the level of op's CPU kernel in use
}  // namespace detail

// Registers fn for op on device type d; a CPU kernel compiled for a level above cpu_capability()
// is not registered, and one of a higher level replaces a lower one (Note [CPU capability levels]).
template <Op op>
bool register_kernel(DeviceType d, typename OpKernel<op>::type fn, int cpu_level = 0) {
  return detail::register_kernel_any(op, d, reinterpret_cast<detail::AnyKernel>(fn), cpu_level);
}

template <Op op>
typename OpKernel<op>::type kernel_for(Device d) {
  auto fn = detail::g_kernels[static_cast<int>(op)][static_cast<int>(d.type)];
  if (__builtin_expect(fn == nullptr, 0)) detail::throw_no_kernel(op, d);
  return reinterpret_cast<typename OpKernel<op>::type>(fn);
}

// Whether device d has a kernel for op: a fused op falls back to its composition where it has none.
template <Op op>
bool has_kernel(Device d) {
  return detail::g_kernels[static_cast<int>(op)][static_cast<int>(d.type)] != nullptr;
}

// Runs op's kernel for device d. The only place kernels are called from.
template <Op op, class... Args>
void dispatch(Device d, Args&&... args) {
  auto fn = kernel_for<op>(d);
  const detail::KernelScope no_recording;
  if (__builtin_expect(detail::g_debug_level.load(std::memory_order_relaxed) > 0, 0)) {
    detail::log_dispatch_begin(op, d);
    (detail::log_dispatch_arg(args), ...);
    const double t0 = detail::now_micros();
    fn(std::forward<Args>(args)...);
    detail::log_dispatch_end(detail::now_micros() - t0);
    return;
  }
  fn(std::forward<Args>(args)...);
}

int debug_level();

}  // namespace kiln

#define KILN_CONCAT_INNER(a, b) a##b
#define KILN_CONCAT(a, b) KILN_CONCAT_INNER(a, b)
// The build of kernels/cpu being compiled: CMake sets it for each level (KilnCpuLevels.cmake).
#ifndef KILN_CPU_LEVEL
#define KILN_CPU_LEVEL 0
#endif
// Registers fn as the kernel of op on device type dev (e.g. Op::gelu_erf, DeviceType::cpu).
#define KILN_REGISTER_KERNEL(op, dev, fn)                                                        \
  [[maybe_unused]] static const bool KILN_CONCAT(kiln_kernel_registered_, __LINE__) =           \
      ::kiln::register_kernel<op>(dev, fn, KILN_CPU_LEVEL)
