// CPU 2-d convolution, plain and transposed, forward and backward: oneDNN's convolution primitives
// for f32 and bf16 (cached by shape, like matmul.cpp's plans), direct loops for f64 and for the
// geometries oneDNN refuses; f16, and bf16 where oneDNN refuses it, compute in f32. Not here: shape
// checks and conv1d (autograd/ops/conv.cpp).
// x, weight, bias, grad_out arrive contiguous (NCHW, OIHW); outputs are contiguous.
#include <algorithm>
#include <array>
#include <cstdlib>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "kernels/cpu/conv_direct.h"
#include "kernels/cpu/convert.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/onednn_common.h"
#include "tensor/dispatch.h"
#include "tensor/parallel.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

// Note [Transposed convolution as a plain one]: every kernel here speaks of one plain convolution
// src (N,C,H,W) -> dst (N,O,Ho,Wo) with weight (O,C/G,kh,kw). A transposed convolution of x into y
// is the plain convolution of y into x run backwards, with the same weight tensor: its forward is
// the plain backward-data pass, its input gradient the plain forward pass, and its weight gradient
// the plain backward-weights pass with src = grad_y and diff_dst = x.
struct Geometry {
  int64_t n, c, h, w, o, ho, wo, kh, kw, groups;
  int64_t stride[2], dilation[2], pad_l[2], pad_r[2];
};

Geometry geometry_of(const Dims& src, const Dims& dst, const Dims& weight, const ConvParams& p) {
  Geometry g{src[0], src[1], src[2], src[3], dst[1], dst[2], dst[3], weight[2], weight[3], p.groups, {}, {}, {}, {}};
  const int64_t src_size[2] = {g.h, g.w}, dst_size[2] = {g.ho, g.wo}, k[2] = {g.kh, g.kw};
  for (int d = 0; d < 2; ++d) {
    g.stride[d] = p.stride[d];
    g.dilation[d] = p.dilation[d];
    g.pad_l[d] = p.padding[d];
    // The least right padding that gives dst's size under oneDNN's floor division; rows past it are
    // never read (a transposed convolution's output_padding). Negative when even 0 is too much.
    g.pad_r[d] = (dst_size[d] - 1) * g.stride[d] + g.dilation[d] * (k[d] - 1) + 1 - src_size[d] - g.pad_l[d];
    g.pad_r[d] = std::max<int64_t>(g.pad_r[d], std::min<int64_t>(0, g.pad_r[d] + g.stride[d] - 1));
  }
  return g;
}

// ---------------------------------------------------------------------------------------------
// The loop path. Sums run in the compute type (double for f64).

// dst = conv(src, weight) + bias; parallel over (n, o) planes.
template <class T>
void loop_forward(const Geometry& g, const T* src, const T* weight, const T* bias, T* dst) {
  using C = compute_t<T>;
  const int64_t cg = g.c / g.groups, og = g.o / g.groups;
  parallel_for(g.n * g.o, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / g.o, o = p % g.o, grp = o / og;
      T* out = dst + p * g.ho * g.wo;
      for (int64_t oh = 0; oh < g.ho; ++oh)
        for (int64_t ow = 0; ow < g.wo; ++ow) {
          C acc = bias ? static_cast<C>(bias[o]) : C(0);
          for (int64_t ci = 0; ci < cg; ++ci) {
            const T* plane = src + (n * g.c + grp * cg + ci) * g.h * g.w;
            const T* wk = weight + (o * cg + ci) * g.kh * g.kw;
            for (int64_t i = 0; i < g.kh; ++i) {
              const int64_t ih = oh * g.stride[0] - g.pad_l[0] + i * g.dilation[0];
              if (ih < 0 || ih >= g.h) continue;
              for (int64_t j = 0; j < g.kw; ++j) {
                const int64_t iw = ow * g.stride[1] - g.pad_l[1] + j * g.dilation[1];
                if (iw < 0 || iw >= g.w) continue;
                acc += static_cast<C>(plane[ih * g.w + iw]) * static_cast<C>(wk[i * g.kw + j]);
              }
            }
          }
          out[oh * g.wo + ow] = convert<T>(acc);
        }
    }
  });
}

// diff_src = conv^T(diff_dst, weight): each (n, group) scatters into its own slab of diff_src.
template <class T>
void loop_backward_data(const Geometry& g, const T* diff_dst, const T* weight, T* diff_src) {
  using C = compute_t<T>;
  const int64_t cg = g.c / g.groups, og = g.o / g.groups, plane = g.h * g.w;
  parallel_for(g.n * g.groups, 1, [&](int64_t p0, int64_t p1) {
    std::vector<C> acc(static_cast<size_t>(cg * plane));
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / g.groups, grp = p % g.groups;
      std::fill(acc.begin(), acc.end(), C(0));
      for (int64_t oi = 0; oi < og; ++oi) {
        const int64_t o = grp * og + oi;
        const T* dy = diff_dst + (n * g.o + o) * g.ho * g.wo;
        for (int64_t oh = 0; oh < g.ho; ++oh)
          for (int64_t ow = 0; ow < g.wo; ++ow) {
            const C gy = static_cast<C>(dy[oh * g.wo + ow]);
            for (int64_t ci = 0; ci < cg; ++ci) {
              const T* wk = weight + (o * cg + ci) * g.kh * g.kw;
              C* a = acc.data() + ci * plane;
              for (int64_t i = 0; i < g.kh; ++i) {
                const int64_t ih = oh * g.stride[0] - g.pad_l[0] + i * g.dilation[0];
                if (ih < 0 || ih >= g.h) continue;
                for (int64_t j = 0; j < g.kw; ++j) {
                  const int64_t iw = ow * g.stride[1] - g.pad_l[1] + j * g.dilation[1];
                  if (iw >= 0 && iw < g.w) a[ih * g.w + iw] += gy * static_cast<C>(wk[i * g.kw + j]);
                }
              }
            }
          }
      }
      T* out = diff_src + (n * g.c + grp * cg) * plane;
      for (int64_t k = 0; k < cg * plane; ++k) out[k] = convert<T>(acc[static_cast<size_t>(k)]);
    }
  });
}

// diff_weight[o, ci, i, j] = sum over n, oh, ow of diff_dst * src; parallel over o.
template <class T>
void loop_backward_weights(const Geometry& g, const T* src, const T* diff_dst, T* diff_weight) {
  using C = compute_t<T>;
  const int64_t cg = g.c / g.groups, og = g.o / g.groups;
  parallel_for(g.o, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      const int64_t grp = o / og;
      for (int64_t ci = 0; ci < cg; ++ci)
        for (int64_t i = 0; i < g.kh; ++i)
          for (int64_t j = 0; j < g.kw; ++j) {
            C acc = 0;
            for (int64_t n = 0; n < g.n; ++n) {
              const T* plane = src + (n * g.c + grp * cg + ci) * g.h * g.w;
              const T* dy = diff_dst + (n * g.o + o) * g.ho * g.wo;
              for (int64_t oh = 0; oh < g.ho; ++oh) {
                const int64_t ih = oh * g.stride[0] - g.pad_l[0] + i * g.dilation[0];
                if (ih < 0 || ih >= g.h) continue;
                for (int64_t ow = 0; ow < g.wo; ++ow) {
                  const int64_t iw = ow * g.stride[1] - g.pad_l[1] + j * g.dilation[1];
                  if (iw >= 0 && iw < g.w)
                    acc += static_cast<C>(dy[oh * g.wo + ow]) * static_cast<C>(plane[ih * g.w + iw]);
                }
              }
            }
            diff_weight[((o * cg + ci) * g.kh + i) * g.kw + j] = convert<T>(acc);
          }
    }
  });
}

// grad_bias[o] = sum of grad_out (N,O,HW) over n and the plane; parallel over o.
template <class T>
void bias_grad(const T* grad_out, int64_t n, int64_t o, int64_t plane, T* grad_bias) {
  using C = double;  // sums of up to N*H*W terms
  parallel_for(o, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      C acc = 0;
      for (int64_t b = 0; b < n; ++b) {
        const T* p = grad_out + (b * o + c) * plane;
        C part = 0;
#pragma omp simd reduction(+ : part)
        for (int64_t k = 0; k < plane; ++k) part += static_cast<C>(static_cast<compute_t<T>>(p[k]));
        acc += part;
      }
      grad_bias[c] = convert<T>(acc);
    }
  });
}

// out (N,O,HW) += bias[o]
template <class T>
void add_bias(T* out, const T* bias, int64_t n, int64_t o, int64_t plane) {
  parallel_for(n * o, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, plane)), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const compute_t<T> b = static_cast<compute_t<T>>(bias[p % o]);
      T* q = out + p * plane;
      for (int64_t k = 0; k < plane; ++k) q[k] = convert<T>(static_cast<compute_t<T>>(q[k]) + b);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The oneDNN path.

enum class Pass : int64_t { forward, backward_data, backward_weights };

struct PlanKey {
  static constexpr int kSize = 21;
  std::array<int64_t, kSize> v{};
  bool operator==(const PlanKey&) const = default;
};
struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the words
    for (int64_t x : k.v) h = (h ^ static_cast<uint64_t>(x)) * 1099511628211ull;
    return static_cast<size_t>(h);
  }
};

PlanKey key_of(Pass pass, DType dtype, const Geometry& g, bool with_bias) {
  PlanKey k;
  k.v = {static_cast<int64_t>(pass), static_cast<int64_t>(dtype), with_bias, g.n, g.c, g.h, g.w, g.o, g.ho, g.wo, g.kh,
         g.kw, g.groups, g.stride[0], g.stride[1], g.dilation[0], g.dilation[1], g.pad_l[0], g.pad_l[1],
         // pad_r follows from the rest, except through output_padding, which only changes src's size
         g.pad_r[0] * 1000003 + g.pad_r[1],
         // oneDNN splits a primitive's work for the threads it sees when the primitive is made
         get_num_threads()};
  return k;
}

// One primitive with the layouts it wants. Arguments in a layout other than the plain one the
// caller holds (NCHW / OIHW) are reordered in and out by the cached reorder primitives.
struct Plan {
  dnnl::primitive prim;
  // Per argument slot: 0 src, 1 weights, 2 dst, 3 bias (plain layout in both).
  std::array<dnnl::memory::desc, 4> user_md, prim_md;
  std::array<dnnl::reorder, 3> to_prim, from_prim;
  std::array<bool, 3> reordered{};
  dnnl::memory::desc scratch_md;
  size_t scratch_bytes = 0;
};

// See Note [Primitive cache] (onednn_common.h); a null plan means oneDNN refused the geometry.
using ConvPlans = PlanCache<PlanKey, PlanKeyHash, Plan, 128>;

ConvPlans& plan_cache() {
  static ConvPlans cache;
  return cache;
}

// Note [Convolution layouts].
bool channels_last_pays(const Geometry& g) { return g.groups == 1 && g.c >= 16 && g.o >= 16; }

std::shared_ptr<const Plan> make_plan(Pass pass, DType dtype, const Geometry& g, bool with_bias) {
  using md = dnnl::memory::desc;
  using tag = dnnl::memory::format_tag;
  const auto dt = dtype == DType::bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
  const dnnl::memory::dims src_dims{g.n, g.c, g.h, g.w}, dst_dims{g.n, g.o, g.ho, g.wo}, bias_dims{g.o};
  const dnnl::memory::dims w_dims = g.groups > 1 ? dnnl::memory::dims{g.groups, g.o / g.groups, g.c / g.groups, g.kh, g.kw}
                                                 : dnnl::memory::dims{g.o, g.c, g.kh, g.kw};
  const dnnl::memory::dims strides{g.stride[0], g.stride[1]}, dilates{g.dilation[0] - 1, g.dilation[1] - 1},
      pad_l{g.pad_l[0], g.pad_l[1]}, pad_r{g.pad_r[0], g.pad_r[1]};
  auto plan = std::make_shared<Plan>();
  plan->user_md = {md(src_dims, dt, tag::nchw), md(w_dims, dt, g.groups > 1 ? tag::goihw : tag::oihw),
                   md(dst_dims, dt, tag::nchw), md(bias_dims, dt, tag::x)};
  // Note [Convolution layouts]: with 16 channels or more on both sides, oneDNN's fastest kernels
  // read channels-last activations (on the demo CNN's 32->64 layer: about 1.3x its blocked kernels
  // forward, 1.5x backward-weights); with fewer (its 1->32 layer), the channel-blocked ones it picks
  // itself ("any") are faster. Weights always take the layout the primitive asks for.
  const tag act = channels_last_pays(g) ? tag::nhwc : tag::any;
  const md src_any(src_dims, dt, act), w_any(w_dims, dt, tag::any), dst_any(dst_dims, dt, act);
  const md& bias_md = plan->user_md[3];
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const auto algo = dnnl::algorithm::convolution_direct;
  const auto fwd_desc = with_bias && pass == Pass::forward
                            ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, algo, src_any, w_any,
                                                              bias_md, dst_any, strides, dilates, pad_l, pad_r)
                            : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, algo, src_any, w_any,
                                                              dst_any, strides, dilates, pad_l, pad_r);
  const dnnl::convolution_forward::primitive_desc fwd_pd(fwd_desc, attr, cpu_engine());
  md scratch;
  if (pass == Pass::forward) {
    plan->prim = dnnl::convolution_forward(fwd_pd);
    plan->prim_md = {fwd_pd.src_desc(), fwd_pd.weights_desc(), fwd_pd.dst_desc(), bias_md};
    scratch = fwd_pd.scratchpad_desc();
  } else if (pass == Pass::backward_data) {
    const dnnl::convolution_backward_data::desc d(algo, src_any, w_any, dst_any, strides, dilates, pad_l, pad_r);
    const dnnl::convolution_backward_data::primitive_desc pd(d, attr, cpu_engine(), fwd_pd);
    plan->prim = dnnl::convolution_backward_data(pd);
    plan->prim_md = {pd.diff_src_desc(), pd.weights_desc(), pd.diff_dst_desc(), bias_md};
    scratch = pd.scratchpad_desc();
  } else {
    const auto d = with_bias ? dnnl::convolution_backward_weights::desc(algo, src_any, w_any, bias_md, dst_any, strides,
                                                                       dilates, pad_l, pad_r)
                             : dnnl::convolution_backward_weights::desc(algo, src_any, w_any, dst_any, strides,
                                                                       dilates, pad_l, pad_r);
    const dnnl::convolution_backward_weights::primitive_desc pd(d, attr, cpu_engine(), fwd_pd);
    plan->prim = dnnl::convolution_backward_weights(pd);
    plan->prim_md = {pd.src_desc(), pd.diff_weights_desc(), pd.diff_dst_desc(), bias_md};
    scratch = pd.scratchpad_desc();
  }
  for (size_t k = 0; k < 3; ++k) {
    plan->reordered[k] = plan->prim_md[k] != plan->user_md[k];
    if (!plan->reordered[k]) continue;
    plan->to_prim[k] = dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), plan->user_md[k], cpu_engine(), plan->prim_md[k]));
    plan->from_prim[k] = dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), plan->prim_md[k], cpu_engine(), plan->user_md[k]));
  }
  plan->scratch_md = scratch;
  plan->scratch_bytes = scratch.get_size();
  return plan;
}

// The plan for a pass, or null when oneDNN cannot run this geometry (the loop path takes it).
std::shared_ptr<const Plan> plan_for(Pass pass, DType dtype, const Geometry& g, bool with_bias) {
  return plan_cache().get(key_of(pass, dtype, g, with_bias), [&]() -> std::shared_ptr<const Plan> {
    try {
      return make_plan(pass, dtype, g, with_bias);
    } catch (const dnnl::error&) {
      return nullptr;
    }
  });
}

// A reordered copy of one input slot, kept for a later pass of the same backward: the data and
// weights passes share one reorder of diff_dst.
struct Staged {
  dnnl::memory::desc md;
  Tensor data;
};

// Runs a plan on plain buffers: slots 0 src, 1 weights, 2 dst, 3 bias (may be null). `outputs`
// says which of slots 0..2 the pass writes; those are reordered back after the run. With `shared`,
// input slot `shared_slot` reads shared's copy when it is in this plan's layout, and otherwise
// leaves its own reordered copy there.
void run_plan(const Plan& plan, std::array<void*, 4> data, std::array<bool, 3> outputs, int src_arg, int weights_arg,
              int dst_arg, int bias_arg, Staged* shared = nullptr, size_t shared_slot = 0) {
  thread_local dnnl::stream stream(cpu_engine());
  dnnl::engine& eng = cpu_engine();
  std::array<dnnl::memory, 3> user, prim;
  std::array<Tensor, 3> staging;  // blocked copies, from Kiln's caching allocator
  for (size_t k = 0; k < 3; ++k) {
    user[k] = dnnl::memory(plan.user_md[k], eng, data[k]);
    if (!plan.reordered[k]) { prim[k] = user[k]; continue; }
    Staged* share = shared && k == shared_slot && !outputs[k] ? shared : nullptr;
    if (share && share->data.defined() && share->md == plan.prim_md[k]) {
      prim[k] = dnnl::memory(share->md, eng, share->data.data_ptr());
      continue;
    }
    const int64_t bytes = static_cast<int64_t>(plan.prim_md[k].get_size());
    staging[k] = make_tensor({bytes}, DType::u8, Device::cpu());
    prim[k] = dnnl::memory(plan.prim_md[k], eng, staging[k].data_ptr());
    if (!outputs[k]) plan.to_prim[k].execute(stream, user[k], prim[k]);
    if (share && !share->data.defined()) *share = {plan.prim_md[k], staging[k]};
  }
  std::unordered_map<int, dnnl::memory> args{{src_arg, prim[0]}, {weights_arg, prim[1]}, {dst_arg, prim[2]}};
  if (data[3]) args[bias_arg] = dnnl::memory(plan.user_md[3], eng, data[3]);
  if (plan.scratch_bytes)
    args[DNNL_ARG_SCRATCHPAD] = dnnl::memory(plan.scratch_md, eng, thread_scratch(plan.scratch_bytes, "conv2d"));
  plan.prim.execute(stream, args);
  for (size_t k = 0; k < 3; ++k)
    if (outputs[k] && plan.reordered[k]) plan.from_prim[k].execute(stream, prim[k], user[k]);
  stream.wait();
}

// ---------------------------------------------------------------------------------------------
// The three passes, each by oneDNN when it takes the geometry, else by loops.

bool onednn_dtype(DType t) { return t == DType::f32 || t == DType::bf16; }

// Note [bf16 convolutions through f32]: oneDNN 2.6 has bf16 convolutions only on CPUs with
// AVX-512; below that it refuses every bf16 primitive (remembered as a null plan, Note [Primitive
// cache]). A refused bf16 pass then runs as the f32 pass on f32 copies (oneDNN's f32 kernels or the
// direct ones; the bf16 loops were 15-130x slower, bench/README.md) and rounds each output once.
// The numerics are those of oneDNN's bf16 kernels: bf16 values and their products are exact in
// f32, the sums accumulate in f32 (a fused bias included), and each result is rounded once to bf16.
// A transposed convolution's bias is added after its pass, in bf16, on both paths.
Tensor as_f32(const Tensor& t) { return t.defined() ? t.to(DType::f32) : t; }
Tensor f32_like(const Tensor& t) { return t.defined() ? make_tensor(t.shape(), DType::f32, t.device()) : t; }

void round_into(const Tensor& src32, Tensor& dst) {
  if (!dst.defined()) return;
  visit_floating(dst.dtype(), "conv2d", [&]<class T>() {
    unary_loop<T, float>(src32, dst, [](float v) { return convert<T>(v); });
  });
}

// Note [Few-channel convolution] (conv_direct.cpp): f32, stride 1, no dilation, one group and
// fewer than 16 input channels, where oneDNN would take channel-blocked layouts and reorders.
std::optional<DirectConvShape> direct_shape(const Geometry& g, DType t) {
  if (t != DType::f32 || g.groups != 1 || g.c >= 16) return std::nullopt;
  for (int d = 0; d < 2; ++d)
    if (g.stride[d] != 1 || g.dilation[d] != 1) return std::nullopt;
  const DirectConvShape s{g.n, g.c, g.h, g.w, g.o, g.ho, g.wo, g.kh, g.kw, g.pad_l[0], g.pad_l[1]};
  if (!direct_conv_takes(s)) return std::nullopt;
  return s;
}

void pass_forward(const Geometry& g, const Tensor& src, const Tensor& weight, const Tensor& bias, Tensor& dst) {
  const DType t = dst.dtype();
  if (const auto s = direct_shape(g, t))
    return direct_conv_forward_f32(*s, static_cast<const float*>(src.data_ptr()), static_cast<const float*>(weight.data_ptr()),
                                   bias.defined() ? static_cast<const float*>(bias.data_ptr()) : nullptr,
                                   static_cast<float*>(dst.data_ptr()));
  if (onednn_dtype(t))
    if (auto plan = plan_for(Pass::forward, t, g, bias.defined()))
      return run_plan(*plan, {src.data_ptr(), weight.data_ptr(), dst.data_ptr(), bias.defined() ? bias.data_ptr() : nullptr},
                      {false, false, true}, DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS);
  if (t == DType::bf16) {  // Note [bf16 convolutions through f32]
    Tensor dst32 = f32_like(dst);
    pass_forward(g, as_f32(src), as_f32(weight), as_f32(bias), dst32);
    return round_into(dst32, dst);
  }
  visit_floating(t, "conv2d", [&]<class T>() {
    loop_forward<T>(g, static_cast<const T*>(src.data_ptr()), static_cast<const T*>(weight.data_ptr()),
                    bias.defined() ? static_cast<const T*>(bias.data_ptr()) : nullptr, static_cast<T*>(dst.data_ptr()));
  });
}

// Note [Backward data as a forward convolution]: with stride 1 and no dilation, a convolution's
// input gradient is the forward convolution of grad_out with the weight flipped in space and its
// two channel dims swapped, padded by k - 1 - pad on each side. On channels-last data oneDNN's
// forward kernels (brgemm) are far faster than its backward-data ones: 3.3 against 5.5 ms on the
// demo CNN's 32->64 layer. The sums are the same terms in another order.
bool runs_as_forward(const Geometry& g) {
  if (!channels_last_pays(g)) return false;
  const int64_t k[2] = {g.kh, g.kw};
  for (int d = 0; d < 2; ++d)
    if (g.stride[d] != 1 || g.dilation[d] != 1 || g.pad_l[d] > k[d] - 1 || g.pad_r[d] > k[d] - 1 || g.pad_r[d] < 0)
      return false;
  return true;
}

// The forward convolution of grad_out (N,O,Ho,Wo) into grad_in (N,C,H,W).
Geometry flipped(const Geometry& g) {
  Geometry f = g;
  f.c = g.o, f.h = g.ho, f.w = g.wo;
  f.o = g.c, f.ho = g.h, f.wo = g.w;
  const int64_t k[2] = {g.kh, g.kw};
  for (int d = 0; d < 2; ++d) {
    f.pad_l[d] = k[d] - 1 - g.pad_l[d];
    f.pad_r[d] = k[d] - 1 - g.pad_r[d];
  }
  return f;
}

// weight (O,C,kh,kw) -> (C,O,kh,kw), each kernel rotated by 180 degrees.
Tensor flipped_weight(const Tensor& weight) {
  const int64_t O = weight.size(0), C = weight.size(1), kh = weight.size(2), kw = weight.size(3);
  Tensor out = make_tensor({C, O, kh, kw}, weight.dtype(), weight.device());
  visit_floating(weight.dtype(), "conv2d", [&]<class T>() {
    const T* w = static_cast<const T*>(weight.data_ptr());
    T* f = static_cast<T*>(out.data_ptr());
    for (int64_t o = 0; o < O; ++o)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < kh; ++i)
          for (int64_t j = 0; j < kw; ++j)
            f[((c * O + o) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)] = w[((o * C + c) * kh + i) * kw + j];
  });
  return out;
}

// `staged`, when given, receives diff_dst as this pass's primitive read it, for the weights pass.
void pass_backward_data(const Geometry& g, const Tensor& diff_dst, const Tensor& weight, Tensor& diff_src,
                        Staged* staged = nullptr) {
  const DType t = diff_src.dtype();
  if (onednn_dtype(t) && runs_as_forward(g))
    if (auto plan = plan_for(Pass::forward, t, flipped(g), false)) {
      const Tensor w = flipped_weight(weight);
      return run_plan(*plan, {diff_dst.data_ptr(), w.data_ptr(), diff_src.data_ptr(), nullptr}, {false, false, true},
                      DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, 0, staged, 0);
    }
  if (onednn_dtype(t))
    if (auto plan = plan_for(Pass::backward_data, t, g, false))
      return run_plan(*plan, {diff_src.data_ptr(), weight.data_ptr(), diff_dst.data_ptr(), nullptr}, {true, false, false},
                      DNNL_ARG_DIFF_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_DST, 0, staged, 2);
  if (t == DType::bf16) {  // Note [bf16 convolutions through f32]; `staged` then holds an f32 copy
    Tensor diff_src32 = f32_like(diff_src);
    pass_backward_data(g, as_f32(diff_dst), as_f32(weight), diff_src32, staged);
    return round_into(diff_src32, diff_src);
  }
  visit_floating(t, "conv2d", [&]<class T>() {
    loop_backward_data<T>(g, static_cast<const T*>(diff_dst.data_ptr()), static_cast<const T*>(weight.data_ptr()),
                          static_cast<T*>(diff_src.data_ptr()));
  });
}

// diff_bias is filled too when defined (fused into oneDNN's pass).
// `staged` may hold diff_dst already reordered by the data pass.
void pass_backward_weights(const Geometry& g, const Tensor& src, const Tensor& diff_dst, Tensor& diff_weight,
                           Tensor& diff_bias, Staged* staged = nullptr) {
  const DType t = diff_weight.dtype();
  if (const auto s = direct_shape(g, t))
    return direct_conv_backward_weights_f32(*s, static_cast<const float*>(src.data_ptr()),
                                            static_cast<const float*>(diff_dst.data_ptr()),
                                            static_cast<float*>(diff_weight.data_ptr()),
                                            diff_bias.defined() ? static_cast<float*>(diff_bias.data_ptr()) : nullptr);
  if (onednn_dtype(t))
    if (auto plan = plan_for(Pass::backward_weights, t, g, diff_bias.defined()))
      return run_plan(*plan,
                      {src.data_ptr(), diff_weight.data_ptr(), diff_dst.data_ptr(),
                       diff_bias.defined() ? diff_bias.data_ptr() : nullptr},
                      {false, true, false}, DNNL_ARG_SRC, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_BIAS,
                      staged, 2);
  if (t == DType::bf16) {  // Note [bf16 convolutions through f32]
    Tensor diff_weight32 = f32_like(diff_weight), diff_bias32 = f32_like(diff_bias);
    pass_backward_weights(g, as_f32(src), as_f32(diff_dst), diff_weight32, diff_bias32, staged);
    round_into(diff_weight32, diff_weight);
    return round_into(diff_bias32, diff_bias);
  }
  visit_floating(t, "conv2d", [&]<class T>() {
    loop_backward_weights<T>(g, static_cast<const T*>(src.data_ptr()), static_cast<const T*>(diff_dst.data_ptr()),
                             static_cast<T*>(diff_weight.data_ptr()));
    if (diff_bias.defined())
      bias_grad<T>(static_cast<const T*>(diff_dst.data_ptr()), g.n, g.o, g.ho * g.wo, static_cast<T*>(diff_bias.data_ptr()));
  });
}

// ---------------------------------------------------------------------------------------------
// The kernels.

// f16 has no oneDNN convolution on the CPUs Kiln targets and only a slow loop otherwise: it
// computes in f32 (as bf16 does where oneDNN refuses it, Note [bf16 convolutions through f32]).
void conv2d_cpu(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvParams& p, Tensor& out) {
  if (out.numel() == 0) return;
  if (x.dtype() == DType::f16) {
    Tensor out32 = make_tensor(out.shape(), DType::f32, out.device());
    conv2d_cpu(as_f32(x), as_f32(weight), as_f32(bias), p, out32);
    out.copy_(out32);
    return;
  }
  if (!p.transposed) return pass_forward(geometry_of(x.shape(), out.shape(), weight.shape(), p), x, weight, bias, out);
  // Note [Transposed convolution as a plain one]: forward is the plain backward-data pass.
  const Geometry g = geometry_of(out.shape(), x.shape(), weight.shape(), p);
  pass_backward_data(g, x, weight, out);
  if (bias.defined())
    visit_floating(out.dtype(), "conv_transpose2d", [&]<class T>() {
      add_bias<T>(static_cast<T*>(out.data_ptr()), static_cast<const T*>(bias.data_ptr()), g.n, g.c, g.h * g.w);
    });
}

void conv2d_backward_cpu(const Tensor& grad_out, const Tensor& x, const Tensor& weight, const ConvParams& p,
                         Tensor& grad_x, Tensor& grad_weight, Tensor& grad_bias) {
  if (x.dtype() == DType::f16) {
    Tensor gx = f32_like(grad_x), gw = f32_like(grad_weight), gb = f32_like(grad_bias);
    conv2d_backward_cpu(as_f32(grad_out), as_f32(x), as_f32(weight), p, gx, gw, gb);
    const std::array<std::pair<Tensor*, Tensor*>, 3> results{{{&grad_x, &gx}, {&grad_weight, &gw}, {&grad_bias, &gb}}};
    for (auto [dst, src] : results)
      if (dst->defined()) dst->copy_(*src);
    return;
  }
  const Tensor& src = p.transposed ? grad_out : x;  // the plain convolution's src and dst
  const Tensor& dst = p.transposed ? x : grad_out;
  const Geometry g = geometry_of(src.shape(), dst.shape(), weight.shape(), p);
  const bool empty = x.numel() == 0 || grad_out.numel() == 0;
  if (empty) {  // an empty batch: every sum is empty
    for (Tensor* t : {&grad_x, &grad_weight, &grad_bias})
      if (t->defined()) t->zero_();
    return;
  }
  Staged diff_dst;  // a plain convolution's grad_out, reordered once for both passes
  if (grad_x.defined()) {
    if (p.transposed) pass_forward(g, grad_out, weight, Tensor(), grad_x);
    else pass_backward_data(g, grad_out, weight, grad_x, &diff_dst);
  }
  // A plain convolution's bias gradient fuses into the weights pass; a transposed one's is the sum
  // of grad_out, which is the plain src there.
  Tensor fused_bias = p.transposed ? Tensor() : grad_bias;
  if (grad_weight.defined()) pass_backward_weights(g, src, dst, grad_weight, fused_bias, &diff_dst);
  if (grad_bias.defined() && (p.transposed || !grad_weight.defined()))
    visit_floating(grad_out.dtype(), "conv2d", [&]<class T>() {
      bias_grad<T>(static_cast<const T*>(grad_out.data_ptr()), grad_out.size(0), grad_out.size(1),
                   grad_out.size(2) * grad_out.size(3), static_cast<T*>(grad_bias.data_ptr()));
    });
}

}  // namespace

KILN_REGISTER_KERNEL(Op::conv2d, DeviceType::cpu, conv2d_cpu);
KILN_REGISTER_KERNEL(Op::conv2d_backward, DeviceType::cpu, conv2d_backward_cpu);

}  // namespace kiln::cpu
