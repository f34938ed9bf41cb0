// CPU matrix products (mm, bmm, addmm): oneDNN's matmul primitive for f32 and bf16 (bf16 output,
// f32 accumulation), f16 and refused bf16 products on f32 copies, a blocked loop for every other
// dtype (f64; integers wrapping as torch does). Not here: shape checks and broadcasting of batch
// dims (autograd/ops/linalg.cpp).
// a: (M,K) or (B,M,K), b: (K,N) or (B,K,N), out: (M,N) or (B,M,N); any strides (a batch stride
// of 0 is a broadcast batch); addmm's bias arrives expanded to (M,N).
#include <algorithm>
#include <array>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "kernels/cpu/convert.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/onednn_common.h"
#include "kernels/cpu/small_matmul.h"
#include "tensor/dispatch.h"
#include "tensor/parallel.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

// ---------------------------------------------------------------------------------------------
// The oneDNN path.

// A matrix operand as oneDNN sees it: (B,R,C) dims and element strides. A size-1 dim's stride is
// normalised so that, e.g., a (1,K) row of a transposed matrix still reads as a plain layout.
struct Layout {
  int64_t dims[3];
  int64_t strides[3];
};

Layout layout_of(const Tensor& t) {
  Layout l{};
  const int off = 3 - t.dim();
  for (int d = 0; d < 3; ++d) {
    l.dims[d] = d < off ? 1 : t.size(d - off);
    l.strides[d] = d < off ? 0 : t.stride(d - off);
  }
  int64_t& r = l.dims[1];
  int64_t& c = l.dims[2];
  int64_t& sr = l.strides[1];
  int64_t& sc = l.strides[2];
  if (c == 1) sc = 1;
  if (r == 1) sr = sc == 1 ? c : 1;
  // A broadcast batch (stride 0) is a batch dim of 1, which oneDNN's matmul broadcasts itself.
  if (l.strides[0] == 0 || l.dims[0] == 1) { l.dims[0] = 1; l.strides[0] = r * c; }
  return l;
}

// Row-major or column-major with a leading dimension: what oneDNN's GEMM kernels take directly.
bool is_plain(const Layout& l) {
  const int64_t r = l.dims[1], c = l.dims[2], sr = l.strides[1], sc = l.strides[2];
  const bool row_major = sc == 1 && sr >= c;
  const bool col_major = sr == 1 && sc >= r;
  return (row_major || col_major) && l.strides[0] > 0;
}

Layout contiguous_layout(const Layout& l) {
  Layout c = l;
  c.strides[2] = 1;
  c.strides[1] = l.dims[2];
  c.strides[0] = l.dims[1] * l.dims[2];
  return c;
}

dnnl::memory::desc desc_of(const Layout& l, int ndim, dnnl::memory::data_type dt) {
  const int off = 3 - ndim;
  dnnl::memory::dims dims(l.dims + off, l.dims + 3), strides(l.strides + off, l.strides + 3);
  return dnnl::memory::desc(dims, dt, strides);
}

enum class BiasMode : int64_t { none, fused_row, sum };

// Everything a primitive depends on, flattened into integers so it hashes and compares bytewise.
struct PlanKey {
  static constexpr int kSize = 24;
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

struct Plan {
  dnnl::matmul prim;
  dnnl::memory::desc a_md, b_md, c_md, bias_md, scratch_md;
  size_t scratch_bytes = 0;
  bool dense_a = false, dense_b = false;  // the operand is read from a contiguous copy
  bool reference = false;                 // oneDNN chose its (slow) reference implementation
};

// See Note [Primitive cache] (onednn_common.h).
using MatmulPlans = PlanCache<PlanKey, PlanKeyHash, Plan, 256>;

MatmulPlans& plan_cache() {
  static MatmulPlans cache;
  return cache;
}

struct PlanSpec {
  DType dtype;
  int ndim;  // 2 for mm/addmm, 3 for bmm
  Layout a, b, c;
  BiasMode bias;
  float alpha, beta;

  PlanKey key() const {
    PlanKey k;
    size_t i = 0;
    auto put = [&](int64_t x) { k.v[i++] = x; };
    put(static_cast<int64_t>(dtype));
    put(ndim);
    for (const Layout* l : {&a, &b, &c})
      for (int d = 0; d < 3; ++d) { put(l->dims[d]); put(l->strides[d]); }
    put(static_cast<int64_t>(bias));
    put(std::bit_cast<int32_t>(alpha));
    put(std::bit_cast<int32_t>(beta));
    // oneDNN sizes a primitive's work split for the threads it sees when the primitive is made, so
    // a plan made at 1 thread would keep running on 1 after set_num_threads(2).
    put(get_num_threads());
    KILN_ASSERT(i == PlanKey::kSize, "matmul plan key has ", i, " words");
    return k;
  }
};

Plan make_plan(const PlanSpec& s, bool dense_a, bool dense_b) {
  using dt = dnnl::memory::data_type;
  const dt type = s.dtype == DType::bf16 ? dt::bf16 : dt::f32;
  Plan p;
  p.dense_a = dense_a;
  p.dense_b = dense_b;
  p.a_md = desc_of(dense_a ? contiguous_layout(s.a) : s.a, s.ndim, type);
  p.b_md = desc_of(dense_b ? contiguous_layout(s.b) : s.b, s.ndim, type);
  p.c_md = desc_of(s.c, s.ndim, type);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (s.alpha != 1.0f) attr.set_output_scales(0, {s.alpha});
  if (s.bias == BiasMode::sum) {
    dnnl::post_ops ops;
    ops.append_sum(s.beta);
    attr.set_post_ops(ops);
  }
  if (s.bias == BiasMode::fused_row) p.bias_md = dnnl::memory::desc({1, s.c.dims[2]}, type, {s.c.dims[2], 1});
  const dnnl::matmul::desc desc = s.bias == BiasMode::fused_row ? dnnl::matmul::desc(p.a_md, p.b_md, p.bias_md, p.c_md)
                                                                 : dnnl::matmul::desc(p.a_md, p.b_md, p.c_md);
  const dnnl::matmul::primitive_desc pd(desc, attr, cpu_engine());
  p.prim = dnnl::matmul(pd);
  p.reference = std::string(pd.impl_info_str()).find("ref") != std::string::npos;
  p.scratch_md = pd.scratchpad_desc();
  p.scratch_bytes = p.scratch_md.get_size();
  return p;
}

// Note [Bound memory objects]: creating a oneDNN memory object costs about as much as running a
// tiny product, so each thread keeps the memory objects of the last few plans it ran and only
// swaps their data pointers. A slot holds its plan alive, so a pointer match cannot be a new plan
// at a recycled address.
struct BoundPlan {
  std::shared_ptr<const Plan> plan;
  dnnl::memory a, b, c, bias, scratch;
};

BoundPlan& bind(const std::shared_ptr<const Plan>& plan) {
  constexpr size_t kSlots = 8;
  thread_local std::array<BoundPlan, kSlots> slots;
  thread_local size_t next = 0;
  for (BoundPlan& slot : slots)
    if (slot.plan == plan) return slot;
  BoundPlan& slot = slots[next++ % kSlots];
  dnnl::engine& eng = cpu_engine();
  slot.plan = plan;
  slot.a = dnnl::memory(plan->a_md, eng, nullptr);
  slot.b = dnnl::memory(plan->b_md, eng, nullptr);
  slot.c = dnnl::memory(plan->c_md, eng, nullptr);
  slot.bias = !plan->bias_md.is_zero() ? dnnl::memory(plan->bias_md, eng, nullptr) : dnnl::memory();
  slot.scratch = plan->scratch_bytes ? dnnl::memory(plan->scratch_md, eng, nullptr) : dnnl::memory();
  return slot;
}

void run_plan(const std::shared_ptr<const Plan>& plan, const Tensor& a, const Tensor& b, const Tensor* bias,
              Tensor& c) {
  thread_local dnnl::stream stream(cpu_engine());
  BoundPlan& m = bind(plan);
  m.a.set_data_handle(a.data_ptr());
  m.b.set_data_handle(b.data_ptr());
  m.c.set_data_handle(c.data_ptr());
  dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, m.a.get()}, {DNNL_ARG_WEIGHTS, m.b.get()}, {DNNL_ARG_DST, m.c.get()}};
  int n = 3;
  if (bias) {
    m.bias.set_data_handle(bias->data_ptr());
    args[n++] = {DNNL_ARG_BIAS, m.bias.get()};
  }
  if (plan->scratch_bytes) {
    m.scratch.set_data_handle(thread_scratch(plan->scratch_bytes, "matmul"));
    args[n++] = {DNNL_ARG_SCRATCHPAD, m.scratch.get()};
  }
  dnnl::error::wrap_c_api(dnnl_primitive_execute(plan->prim.get(), stream.get(), n, args), "matmul: oneDNN execute");
  stream.wait();
}

template <class T>
void copy_into(const Tensor& src, Tensor& dst) {
  unary_loop<T, T>(src, dst, [](T v) { return v; });
}

// The operand in the contiguous layout a plan's dense_a / dense_b asks for. A broadcast batch
// stays a batch of 1 there, so only its first matrix is copied.
Tensor dense(const Tensor& t, const Layout& l) {
  if (l.dims[0] == 1 && t.dim() == 3) return t.select(0, 0).contiguous();
  return t.contiguous();
}

// out = beta * bias + alpha * (a @ b) through oneDNN; a, b, out of dtype f32 or bf16; K > 0.
// False, with out untouched, when oneDNN has no kernel for a bf16 product on this CPU (Note [16-bit
// products through f32]); it always multiplies f32.
bool onednn_matmul(const Tensor& a, const Tensor& b, const Tensor* bias, double beta, double alpha, Tensor& out) {
  // Both batches broadcast: oneDNN needs a real batch on one side, and every batch is one product.
  if (out.dim() == 3 && out.size(0) > 1 && layout_of(a).dims[0] == 1 && layout_of(b).dims[0] == 1) {
    Tensor first = out.select(0, 0);
    if (!onednn_matmul(a.select(0, 0), b.select(0, 0), nullptr, 0.0, alpha, first)) return false;
    Tensor rest = out.narrow(0, 1, out.size(0) - 1);
    const Tensor src = out.narrow(0, 0, 1).expand(rest.shape());
    visit_dtype(out.dtype(), [&]<class T>() { copy_into<T>(src, rest); });
    return true;
  }
  PlanSpec s{out.dtype(), out.dim(), layout_of(a), layout_of(b), layout_of(out), BiasMode::none,
             static_cast<float>(alpha), static_cast<float>(bias ? beta : 0.0)};
  // The bias of a linear layer (a row broadcast over M, alpha = beta = 1) fuses into the primitive;
  // any other bias is copied into out first and added back by a sum post-op scaled by beta.
  const bool row_bias =
      bias && (bias->stride(0) == 0 || bias->size(0) == 1) && (bias->stride(1) == 1 || bias->size(1) == 1);
  if (bias && beta != 0.0) s.bias = alpha == 1.0 && beta == 1.0 && row_bias ? BiasMode::fused_row : BiasMode::sum;
  if (s.bias != BiasMode::sum) s.beta = 0.0f;

  // Strides oneDNN cannot take at full speed mean contiguous copies (inputs) or a temporary (out).
  Tensor c_tmp;
  Tensor& c = is_plain(s.c) ? out : (c_tmp = make_tensor(out.shape(), out.dtype(), out.device()));
  if (!is_plain(s.c)) s.c = layout_of(c);

  auto plan = plan_cache().get(s.key(), [&]() -> std::shared_ptr<const Plan> {
    // Strides that look plain may still be ones oneDNN refuses, or takes only with its reference
    // kernel (e.g. overlapping batches), which is far slower than a copy.
    try {
      Plan p = make_plan(s, !is_plain(s.a), !is_plain(s.b));
      if (!p.reference || (p.dense_a && p.dense_b)) return std::make_shared<const Plan>(std::move(p));
    } catch (const dnnl::error&) {
    }
    try {
      return std::make_shared<const Plan>(make_plan(s, true, true));
    } catch (const dnnl::error& e) {
      if (s.dtype != DType::f32) return nullptr;  // remembered: the next call goes straight to f32
      detail::throw_error("matmul: oneDNN cannot multiply shapes ", a.shape(), " and ", b.shape(), " of dtype ",
                          out.dtype(), ": ", e.what());
    }
  });
  if (!plan) return false;
  const Tensor a_dense = plan->dense_a ? dense(a, s.a) : a;
  const Tensor b_dense = plan->dense_b ? dense(b, s.b) : b;
  Tensor fused_bias;
  if (s.bias == BiasMode::fused_row) fused_bias = bias->select(0, 0).contiguous();
  if (s.bias == BiasMode::sum)
    visit_dtype(out.dtype(), [&]<class T>() { copy_into<T>(*bias, c); });
  run_plan(plan, a_dense, b_dense, s.bias == BiasMode::fused_row ? &fused_bias : nullptr, c);
  if (&c != &out) visit_dtype(out.dtype(), [&]<class T>() { copy_into<T>(c, out); });
  return true;
}

// ---------------------------------------------------------------------------------------------
// The loop path, for f64, integers and empty sums.

// Integers accumulate in uint64: wrapping is what torch does, and signed overflow would be UB.
template <class T>
using acc_t = std::conditional_t<std::is_integral_v<T>, uint64_t, compute_t<T>>;

template <class T>
acc_t<T> to_acc(T v) {
  if constexpr (std::is_integral_v<T>) return static_cast<uint64_t>(static_cast<int64_t>(v));
  else return static_cast<acc_t<T>>(v);
}
template <class T>
acc_t<T> scalar_acc(double v) {
  if constexpr (std::is_integral_v<T>) return static_cast<uint64_t>(convert<int64_t>(v));
  else return static_cast<acc_t<T>>(v);
}
template <class T>
T from_acc(acc_t<T> v) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(v);  // modular since C++20
  else return convert<T>(v);
}

// One batch: out (M,N) = beta * bias + alpha * a (M,K) @ b (K,N); element strides, bias may be null.
// Rows go in blocks of 4 and columns in tiles of 256 so each loaded row of b serves 4 rows of a,
// and the accumulator tile stays in L1.
template <class T>
void loop_matmul_batch(const T* a, const int64_t sa[2], const T* b, const int64_t sb[2], const T* bias,
                       const int64_t sbias[2], T* out, const int64_t so[2], int64_t M, int64_t K, int64_t N,
                       double beta, double alpha) {
  using A = acc_t<T>;
  constexpr int64_t kRows = 4, kCols = 256;
  const A al = scalar_acc<T>(alpha), be = scalar_acc<T>(beta);
  const int64_t row_blocks = (M + kRows - 1) / kRows;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, kRows * K * N));
  parallel_for(row_blocks, grain, [&](int64_t rb0, int64_t rb1) {
    A acc[kRows][kCols];
    A brow[kCols];
    for (int64_t rb = rb0; rb < rb1; ++rb) {
      const int64_t i0 = rb * kRows, rows = std::min(kRows, M - i0);
      for (int64_t j0 = 0; j0 < N; j0 += kCols) {
        const int64_t cols = std::min(kCols, N - j0);
        for (int64_t r = 0; r < kRows; ++r) std::fill(acc[r], acc[r] + kCols, A(0));
        for (int64_t k = 0; k < K; ++k) {
          for (int64_t j = 0; j < cols; ++j) brow[j] = to_acc(b[k * sb[0] + (j0 + j) * sb[1]]);
          for (int64_t r = 0; r < rows; ++r) {
            const A av = to_acc(a[(i0 + r) * sa[0] + k * sa[1]]);
            for (int64_t j = 0; j < cols; ++j) acc[r][j] += av * brow[j];
          }
        }
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < cols; ++j) {
            A v = al * acc[r][j];
            if (bias) v += be * to_acc(bias[(i0 + r) * sbias[0] + (j0 + j) * sbias[1]]);
            out[(i0 + r) * so[0] + (j0 + j) * so[1]] = from_acc<T>(v);
          }
      }
    }
  });
}

void loop_matmul(const Tensor& a, const Tensor& b, const Tensor* bias, double beta, double alpha, Tensor& out) {
  const bool batched = out.dim() == 3;
  const int64_t B = batched ? out.size(0) : 1, M = out.size(-2), N = out.size(-1), K = a.size(-1);
  auto mat_strides = [](const Tensor& t, int64_t s[2]) { s[0] = t.stride(-2); s[1] = t.stride(-1); };
  int64_t sa[2], sb[2], so[2], sbias[2] = {0, 0};
  mat_strides(a, sa);
  mat_strides(b, sb);
  mat_strides(out, so);
  if (bias) mat_strides(*bias, sbias);
  visit_dtype(out.dtype(), [&]<class T>() {
    if constexpr (std::is_same_v<T, bool>) {
      KILN_ASSERT(false, "matmul kernel called on bool tensors");
    } else {
      const T* pa = static_cast<const T*>(a.data_ptr());
      const T* pb = static_cast<const T*>(b.data_ptr());
      T* po = static_cast<T*>(out.data_ptr());
      const T* pbias = bias && beta != 0.0 ? static_cast<const T*>(bias->data_ptr()) : nullptr;
      for (int64_t i = 0; i < B; ++i) {
        const int64_t oa = batched ? i * a.stride(0) : 0, ob = batched ? i * b.stride(0) : 0;
        loop_matmul_batch<T>(pa + oa, sa, pb + ob, sb, pbias, sbias, po + (batched ? i * out.stride(0) : 0), so, M, K,
                             N, beta, alpha);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------

// f32 products with N <= 8, or M <= 8 and b's columns contiguous, take small_matmul.cpp's kernel
// (Note [Skinny products]): there it beats oneDNN; M or N of 9-16, large b, column-major b at small
// M, and batches stay with oneDNN, where it ties or loses (bench/README.md, "Skinny products").
bool small_matmul_wins(const Tensor& a, const Tensor& b, const Tensor& out) {
  if (out.dtype() != DType::f32 || out.dim() != 2 || out.stride(1) != 1) return false;
  const int64_t M = out.size(0), N = out.size(1), K = a.size(1);
  if (K == 0) return false;
  if (N <= kSmallMatmulDim) return true;
  return M <= kSmallMatmulDim && b.stride(1) == 1 && K * N <= (int64_t{1} << 20);
}

void small_matmul(const Tensor& a, const Tensor& b, const Tensor* bias, double beta, double alpha, Tensor& out) {
  auto view = [](const Tensor& t) {
    return StridedF32{static_cast<const float*>(t.data_ptr()), t.stride(0), t.stride(1)};
  };
  small_matmul_f32(view(a), view(b), bias ? view(*bias) : StridedF32{nullptr, 0, 0}, static_cast<float>(beta),
                   static_cast<float>(alpha), out.data_ptr<float>(), out.stride(0), out.size(0), a.size(1), out.size(1));
}

// ---------------------------------------------------------------------------------------------
// Note [16-bit products through f32]: oneDNN 2.6 multiplies bf16 only on CPUs with AVX-512; below
// that it refuses the primitive, and the refusal stays in the plan cache as a null plan. Kiln never
// hands it f16. Those products run on f32 copies of their operands and round once into the output.
// That is the arithmetic of oneDNN's own bf16 kernels: a bf16 (f16) value is exact in f32, and so
// is the product of two, having 16 (22) significant bits of f32's 24; the sum accumulates in f32,
// and beta * bias + alpha * sum is rounded once to bf16 (f16). The error against the exact result
// is about K * 2^-24 * sum |a||b| at most from the accumulation, plus the final rounding, at most
// 2^-8 of |c| for bf16 (2^-11 for f16): inside the tests' 1.6e-2 (2e-3) of |c| + sum |a||b|.
// f16 takes this path on every CPU: oneDNN's f32 kernels and three conversions are 10-40x faster
// than the f32-accumulating loop it took before (bench/README.md, bench_matmul).

// An f32 copy of t whose broadcast (stride-0) dims stay broadcast, so an expanded batch or bias
// converts once.
Tensor f32_copy(const Tensor& t) {
  Tensor compact = t;
  for (int d = 0; d < t.dim(); ++d)
    if (t.stride(d) == 0 && t.size(d) > 1) compact = compact.narrow(d, 0, 1);
  Tensor c = make_tensor(compact.shape(), DType::f32, t.device());
  visit_floating(t.dtype(), "matmul", [&]<class T>() {
    unary_loop<float, T>(compact, c, [](T v) { return convert<float>(v); });
  });
  return c.expand(t.shape());
}

void matmul_any(const Tensor& a, const Tensor& b, const Tensor* bias, double beta, double alpha, Tensor& out);

// out = beta * bias + alpha * (a @ b) for 16-bit float operands, through f32; see the Note above.
void matmul_through_f32(const Tensor& a, const Tensor& b, const Tensor* bias, double beta, double alpha, Tensor& out) {
  const Tensor bias32 = bias && beta != 0.0 ? f32_copy(*bias) : Tensor();
  Tensor out32 = make_tensor(out.shape(), DType::f32, out.device());
  matmul_any(f32_copy(a), f32_copy(b), bias32.defined() ? &bias32 : nullptr, beta, alpha, out32);
  visit_floating(out.dtype(), "matmul", [&]<class T>() {
    unary_loop<T, float>(out32, out, [](float v) { return convert<T>(v); });
  });
}

void matmul_any(const Tensor& a, const Tensor& b, const Tensor* bias, double beta, double alpha, Tensor& out) {
  if (out.numel() == 0) return;
  if (small_matmul_wins(a, b, out)) return small_matmul(a, b, bias, beta, alpha, out);
  const DType t = out.dtype();
  // K = 0 (an empty sum) or a dtype without a float path: the loop gives beta * bias, or zeros, directly.
  if (a.size(-1) > 0) {
    if ((t == DType::f32 || t == DType::bf16) && onednn_matmul(a, b, bias, beta, alpha, out)) return;
    if (t == DType::bf16 || t == DType::f16) return matmul_through_f32(a, b, bias, beta, alpha, out);
  }
  loop_matmul(a, b, bias, beta, alpha, out);
}

void mm_cpu(const Tensor& a, const Tensor& b, Tensor& out) { matmul_any(a, b, nullptr, 0.0, 1.0, out); }
void bmm_cpu(const Tensor& a, const Tensor& b, Tensor& out) { matmul_any(a, b, nullptr, 0.0, 1.0, out); }
void addmm_cpu(const Tensor& bias, const Tensor& a, const Tensor& b, double beta, double alpha, Tensor& out) {
  matmul_any(a, b, &bias, beta, alpha, out);
}

}  // namespace

KILN_REGISTER_KERNEL(Op::mm, DeviceType::cpu, mm_cpu);
KILN_REGISTER_KERNEL(Op::bmm, DeviceType::cpu, bmm_cpu);
KILN_REGISTER_KERNEL(Op::addmm, DeviceType::cpu, addmm_cpu);

}  // namespace kiln::cpu
