// CPU reduction kernels: sum, mean, prod, amax, amin, var, norm, logsumexp, all, any, and max/min
// along one dim with indices. Every reduction is first brought to one layout (see ReduceLayout) and
// run by one driver, parameterised by a small reducer. Not here: output shapes, dtype rules and
// user-error checks, which the op definitions in autograd/ops/reduce.cpp do before dispatching.
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "kernels/cpu/convert.h"
#include "kernels/cpu/lanes16.h"
#include "tensor/dispatch.h"
#include "tensor/parallel.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

// Note [Deterministic reduction order]
// A row of n elements is cut into pieces of kPiece elements at fixed offsets; each piece is reduced
// into kLanes interleaved accumulators (so the compiler vectorizes the loop) that are merged as a
// tree, and the pieces are merged as a tree too. Threads only choose who computes which piece, so
// results never depend on the thread count. f32 and f64 accumulate in f64, f16/bf16 in f32,
// integers in wrapping int64: with f64 lanes, 16M x 0.1f sums to within 1e-9 relative.
constexpr int64_t kPiece = 16384;
constexpr int kLanes = 16;
constexpr int64_t kTile = 4096;         // columns of the inner dim accumulated side by side
constexpr int64_t kMinPieceRows = 64;   // keeps the partial results of a column piece small

template <class T> struct acc_type { using type = int64_t; };  // integers and bool
template <> struct acc_type<float> { using type = double; };
template <> struct acc_type<double> { using type = double; };
template <> struct acc_type<Half> { using type = float; };
template <> struct acc_type<BFloat16> { using type = float; };
template <class T> using acc_t = typename acc_type<T>::type;

template <class A, class T>
A to_acc(T v) { return static_cast<A>(static_cast<compute_t<T>>(v)); }

// Signed overflow is undefined in C++; torch wraps around, so integer sums compute in unsigned.
template <class A>
A add_wrap(A a, A b) {
  if constexpr (std::is_integral_v<A>) return static_cast<A>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
  else return a + b;
}
template <class A>
A mul_wrap(A a, A b) {
  if constexpr (std::is_integral_v<A>) return static_cast<A>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
  else return a * b;
}

// NaN-propagating max/min, as torch's amax: once an accumulator is NaN it stays NaN.
template <class C> C max_nan(C a, C v) { return (v > a || v != v) ? v : a; }
template <class C> C min_nan(C a, C v) { return (v < a || v != v) ? v : a; }

template <class C> C lowest() {
  if constexpr (std::numeric_limits<C>::has_infinity) return -std::numeric_limits<C>::infinity();
  else return std::numeric_limits<C>::lowest();
}
template <class C> C highest() {
  if constexpr (std::numeric_limits<C>::has_infinity) return std::numeric_limits<C>::infinity();
  else return std::numeric_limits<C>::max();
}

// A reducer: identity, add(acc, value, position along n, output index k), merge(a, b) where b
// covers later positions than a, and finish(acc, k), which writes output k. The value comes as
// compute_t<T> (Note [16-bit reductions]). kPlainSum marks an add that is a plain `acc += value`,
// which the f32 fast paths below may regroup.
template <class A, class Add, class Merge, class Finish, bool kPlain = false>
struct Reducer {
  using Acc = A;
  static constexpr bool kPlainSum = kPlain;
  A identity;
  Add add;
  Merge merge;
  Finish finish;
};
template <class A, class Add, class Merge, class Finish>
Reducer<A, Add, Merge, Finish> reducer(A identity, Add add, Merge merge, Finish finish) {
  return {identity, add, merge, finish};
}

template <class A>
auto plus() { return [](A a, A b) { return add_wrap(a, b); }; }

// sum(x) in acc_t<T>, handing the total of output k to finish(total, k).
template <class T, class Finish>
auto sum_reducer(Finish finish) {
  using A = acc_t<T>;
  using C = compute_t<T>;
  auto add = [](A& a, C v, int64_t, int64_t) { a = add_wrap(a, to_acc<A>(v)); };
  return Reducer<A, decltype(add), decltype(plus<A>()), Finish, true>{A(0), add, plus<A>(), finish};
}

// Note [f32 sums in groups of four]
// Widening every f32 to f64 halves the in-cache speed of a sum (the conversions, not the loads,
// are the bottleneck). So plain f32 sums add four values in f32 first, then widen: four terms lose
// at most a few ulps, and the f64 accumulation over the rest keeps 16M x 0.1f exact to ~1e-9.
template <class R, class T>
inline constexpr bool kGroupsOfFour = R::kPlainSum && std::is_same_v<T, float>;

// Note [Reduction layout]
// x: (outer, n, inner) contiguous, the middle dim reduced; out: (outer, inner) contiguous. A
// contiguous x whose reduced dims form one run (size-1 dims aside) is used as it is. Otherwise x is
// permuted to (kept dims, reduced dims), which is already contiguous for e.g. a transposed input,
// and copied when it is not (strided, expanded, or reduced dims that are not neighbours).
struct ReduceLayout {
  Tensor x;
  int64_t outer = 1, n = 1, inner = 1;
};

ReduceLayout plan_layout(const Tensor& x, uint32_t mask) {
  const Dims& shape = x.shape();
  if (x.is_contiguous()) {
    int64_t sizes[3] = {1, 1, 1};
    int stage = 0;  // 0: before the reduced run, 1: inside it, 2: after it
    bool one_run = true;
    for (int d = 0; d < x.dim() && one_run; ++d) {
      if (shape[d] == 1) continue;
      if (mask >> d & 1u) {
        one_run = stage != 2;
        stage = 1;
        sizes[1] *= shape[d];
      } else {
        if (stage == 1) stage = 2;
        sizes[stage] *= shape[d];
      }
    }
    if (one_run) return {x, sizes[0], sizes[1], sizes[2]};
  }
  Dims order;
  int64_t outer = 1, n = 1;
  for (int d = 0; d < x.dim(); ++d)
    if (!(mask >> d & 1u)) { order.push_back(d); outer *= shape[d]; }
  for (int d = 0; d < x.dim(); ++d)
    if (mask >> d & 1u) { order.push_back(d); n *= shape[d]; }
  Tensor p = x.permute(order);
  return {p.is_contiguous() ? p : p.contiguous(), outer, n, 1};
}

// Merges count accumulators a[0], a[stride], ... as a balanced tree.
template <class R>
typename R::Acc merge_tree(const typename R::Acc* a, int64_t count, int64_t stride, const R& r) {
  if (count == 1) return a[0];
  const int64_t half = count / 2;
  return r.merge(merge_tree(a, half, stride, r), merge_tree(a + half * stride, count - half, stride, r));
}

// The sum of x[0, len) as Note [f32 sums in groups of four] describes.
inline double sum_f32_in_fours(const float* x, int64_t len) {
  constexpr int kWide = 16;  // f64 lanes; each takes the f32 sum of four values at a time (64 wide
                             // ran 30% slower from DRAM on Zen 4, 16 matches a plain read loop)
  double lanes[kWide] = {};
  int64_t i = 0;
  for (; i + 4 * kWide <= len; i += 4 * kWide)
    for (int l = 0; l < kWide; ++l)
      lanes[l] += static_cast<double>(x[i + l] + x[i + kWide + l] + x[i + 2 * kWide + l] + x[i + 3 * kWide + l]);
  double tail = 0;
  for (; i < len; ++i) tail += static_cast<double>(x[i]);
  for (int w = kWide / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) lanes[l] += lanes[l + w];
  return lanes[0] + tail;
}

// Reduces x[0, len) (positions first, first + 1, ... along n) for output k. x holds the values of a
// T tensor as compute_t<T>: floats for f16/bf16 (see span_values).
template <class T, class R>
typename R::Acc reduce_span(const compute_t<T>* x, int64_t len, int64_t first, int64_t k, const R& r) {
  using Acc = typename R::Acc;
  if constexpr (kGroupsOfFour<R, T>) {
    return sum_f32_in_fours(x, len);
  } else {
    Acc tail = r.identity;
    if (len < 2 * kLanes) {
      for (int64_t i = 0; i < len; ++i) r.add(tail, x[i], first + i, k);
      return tail;
    }
    Acc lanes[kLanes];
    for (int l = 0; l < kLanes; ++l) lanes[l] = r.identity;
    int64_t i = 0;
    for (; i + kLanes <= len; i += kLanes)
      for (int l = 0; l < kLanes; ++l) r.add(lanes[l], x[i + l], first + i + l, k);
    for (; i < len; ++i) r.add(tail, x[i], first + i, k);
    for (int w = kLanes / 2; w >= 1; w /= 2)
      for (int l = 0; l < w; ++l) lanes[l] = r.merge(lanes[l], lanes[l + w]);
    return r.merge(lanes[0], tail);
  }
}

// Note [16-bit reductions]: reducers read f16/bf16 as floats (their add takes compute_t<T>), and
// each span or row segment is converted a register at a time into a per-thread float buffer first
// (lanes16.h), instead of an element at a time inside the add. The values, the order of the adds
// and so the results are those of the element-wise loop: f32 accumulators, Note [Deterministic
// reduction order].
float* float_buffer(int64_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < static_cast<size_t>(n)) buf.resize(static_cast<size_t>(n));
  return buf.data();
}

// x[0, len) as reducers read it: x itself, or a 16-bit T's floats in the per-thread buffer.
template <class T>
const compute_t<T>* span_values(const T* x, int64_t len) {
  if constexpr (lanes::kIs16<T>) {
    float* buf = float_buffer(len);
    lanes::to_f32(x, buf, len);
    return buf;
  } else {
    return x;
  }
}

// Reduction over the last dim: x (outer, n) contiguous.
template <class T, class R>
void reduce_rows(const T* x, int64_t outer, int64_t n, const R& r) {
  using Acc = typename R::Acc;
  const int64_t pieces = n <= kPiece ? 1 : (n + kPiece - 1) / kPiece;
  if (pieces == 1) {
    parallel_for(outer, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) r.finish(reduce_span<T>(span_values(x + o * n, n), n, 0, o, r), o);
    });
    return;
  }
  std::unique_ptr<Acc[]> partial(new Acc[static_cast<size_t>(outer * pieces)]);
  parallel_for(outer * pieces, std::max<int64_t>(1, kElementwiseGrain / kPiece), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t o = t / pieces, first = (t % pieces) * kPiece;
      const int64_t len = std::min(kPiece, n - first);
      partial[t] = reduce_span<T>(span_values(x + o * n + first, len), len, first, o, r);
    }
  });
  parallel_for(outer, std::max<int64_t>(1, kElementwiseGrain / pieces), [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) r.finish(merge_tree(&partial[o * pieces], pieces, 1, r), o);
  });
}

// Reduction over a leading or middle dim: x (outer, n, inner) contiguous with inner > 1. Whole rows
// of a column tile are accumulated at once, so memory is read in order; long n is cut into pieces
// of rows as in Note [Deterministic reduction order].
template <class T, class R>
void reduce_columns(const T* x, int64_t outer, int64_t n, int64_t inner, const R& r) {
  using Acc = typename R::Acc;
  const int64_t tiles = (inner + kTile - 1) / kTile;
  const int64_t rows_per_piece = std::max<int64_t>(kMinPieceRows, kPiece / std::min(inner, kTile));
  const int64_t pieces = std::max<int64_t>(1, (n + rows_per_piece - 1) / rows_per_piece);
  std::unique_ptr<Acc[]> partial(pieces > 1 ? new Acc[static_cast<size_t>(outer * pieces * inner)] : nullptr);
  const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / (std::min(n, rows_per_piece) * std::min(inner, kTile) + 1));
  parallel_for(outer * tiles * pieces, grain, [&](int64_t b, int64_t e) {
    std::unique_ptr<Acc[]> acc(new Acc[static_cast<size_t>(std::min(inner, kTile))]);
    float* buf = lanes::kIs16<T> ? float_buffer(4 * std::min(inner, kTile)) : nullptr;  // Note [16-bit reductions]
    for (int64_t t = b; t < e; ++t) {
      const int64_t p = t % pieces, tile = t / pieces % tiles, o = t / pieces / tiles;
      const int64_t j0 = tile * kTile, w = std::min(kTile, inner - j0), k0 = o * inner + j0;
      const int64_t r0 = p * rows_per_piece, r1 = std::min(n, r0 + rows_per_piece);
      for (int64_t j = 0; j < w; ++j) acc[j] = r.identity;
      // Four rows per sweep: each accumulator is loaded and stored once per four additions.
      int64_t i = r0;
      for (; i + 4 <= r1; i += 4) {
        const T* row = x + (o * n + i) * inner + j0;
        if constexpr (kGroupsOfFour<R, T>) {
          for (int64_t j = 0; j < w; ++j)
            acc[j] += static_cast<double>(row[j] + row[inner + j] + row[2 * inner + j] + row[3 * inner + j]);
        } else {
          const compute_t<T>* v;  // the four rows' values, row u at v + u * vs
          int64_t vs;
          if constexpr (lanes::kIs16<T>) {
            for (int u = 0; u < 4; ++u) lanes::to_f32(row + u * inner, buf + u * w, w);
            v = buf;
            vs = w;
          } else {
            v = row;
            vs = inner;
          }
          for (int64_t j = 0; j < w; ++j) {
            Acc a = acc[j];
            for (int u = 0; u < 4; ++u) r.add(a, v[u * vs + j], i + u, k0 + j);
            acc[j] = a;
          }
        }
      }
      for (; i < r1; ++i) {
        const compute_t<T>* v = span_values(x + (o * n + i) * inner + j0, w);
        for (int64_t j = 0; j < w; ++j) r.add(acc[j], v[j], i, k0 + j);
      }
      if (pieces == 1) {
        for (int64_t j = 0; j < w; ++j) r.finish(acc[j], k0 + j);
      } else {
        Acc* dst = &partial[(o * pieces + p) * inner + j0];
        for (int64_t j = 0; j < w; ++j) dst[j] = acc[j];
      }
    }
  });
  if (pieces == 1) return;
  parallel_for(outer * inner, std::max<int64_t>(1, kElementwiseGrain / pieces), [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const int64_t o = k / inner, j = k % inner;
      r.finish(merge_tree(&partial[o * pieces * inner + j], pieces, inner, r), k);
    }
  });
}

// Runs r over the layout; r.finish is called once for each of the outer * inner outputs.
template <class T, class R>
void run(const ReduceLayout& l, const R& r) {
  if (l.n == 0) {  // an empty slice: every output is the identity (and x may have no memory)
    parallel_for(l.outer * l.inner, kElementwiseGrain, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) r.finish(r.identity, k);
    });
    return;
  }
  const T* x = static_cast<const T*>(l.x.data_ptr());
  if (l.inner == 1) reduce_rows(x, l.outer, l.n, r);
  else reduce_columns(x, l.outer, l.n, l.inner, r);
}

template <class T>
T* out_ptr(Tensor& out) {
  KILN_ASSERT(out.is_contiguous(), "reduction kernels write a contiguous output, got strides ", out.strides());
  return static_cast<T*>(out.data_ptr());
}

// Calls fn<O>() with O the output's element type: T, or int64 for the integer sum and prod.
template <class T, class Fn>
void visit_sum_out(const Tensor& out, Fn&& fn) {
  if (out.dtype() == dtype_v<T>) return fn.template operator()<T>();
  KILN_ASSERT(out.dtype() == DType::i64 && !is_floating(dtype_v<T>), "sum/prod: output ", out.dtype(),
              " for input ", dtype_v<T>);
  fn.template operator()<int64_t>();
}

// ---- the kernels. x: any layout, reduced over args.dims_mask; out: contiguous, keepdim shape.
void sum_cpu(const Tensor& x, const ReduceArgs& args, Tensor& out) {
  const ReduceLayout l = plan_layout(x, args.dims_mask);
  visit_dtype(x.dtype(), [&]<class T>() {
    visit_sum_out<T>(out, [&]<class O>() {
      O* o = out_ptr<O>(out);
      run<T>(l, sum_reducer<T>([o](acc_t<T> a, int64_t k) { o[k] = convert<O>(a); }));
    });
  });
}

void prod_cpu(const Tensor& x, const ReduceArgs& args, Tensor& out) {
  const ReduceLayout l = plan_layout(x, args.dims_mask);
  visit_dtype(x.dtype(), [&]<class T>() {
    using C = compute_t<T>;
    visit_sum_out<T>(out, [&]<class O>() {
      using A = acc_t<T>;
      O* o = out_ptr<O>(out);
      run<T>(l, reducer(A(1), [](A& a, C v, int64_t, int64_t) { a = mul_wrap(a, to_acc<A>(v)); },
                        [](A a, A b) { return mul_wrap(a, b); }, [o](A a, int64_t k) { o[k] = convert<O>(a); }));
    });
  });
}

void mean_cpu(const Tensor& x, const ReduceArgs& args, Tensor& out) {
  const ReduceLayout l = plan_layout(x, args.dims_mask);
  visit_floating(x.dtype(), "mean", [&]<class T>() {
    using A = acc_t<T>;
    T* o = out_ptr<T>(out);
    const A n = static_cast<A>(l.n);  // 0 for an empty slice: the mean is 0/0 = NaN, as in torch
    run<T>(l, sum_reducer<T>([o, n](A a, int64_t k) { o[k] = convert<T>(a / n); }));
  });
}

template <bool kMax>
void extreme_cpu(const Tensor& x, const ReduceArgs& args, Tensor& out) {
  const ReduceLayout l = plan_layout(x, args.dims_mask);
  visit_dtype(x.dtype(), [&]<class T>() {
    using C = compute_t<T>;
    T* o = out_ptr<T>(out);
    auto pick = [](C a, C b) { return kMax ? max_nan(a, b) : min_nan(a, b); };
    run<T>(l, reducer(kMax ? lowest<C>() : highest<C>(), [pick](C& a, C v, int64_t, int64_t) { a = pick(a, v); },
                      pick, [o](C a, int64_t k) { o[k] = convert<T>(a); }));
  });
}

// Two passes, so that data with a large mean loses no digits: the mean of each slice (in the
// accumulator type), then the sum of squared deviations from it. The mean is taken as the slice's
// first element plus the mean of the differences from it, so a constant slice has a mean equal to
// its values and a variance of exactly 0, as torch's Welford gives (sum / n can be an ulp off).
void var_cpu(const Tensor& x, const ReduceArgs& args, Tensor& out) {
  const ReduceLayout l = plan_layout(x, args.dims_mask);
  visit_floating(x.dtype(), "var", [&]<class T>() {
    using C = compute_t<T>;  // what the reducers read: Note [16-bit reductions]
    using A = acc_t<T>;
    T* o = out_ptr<T>(out);
    std::unique_ptr<A[]> mean(new A[static_cast<size_t>(l.outer * l.inner)]);
    const A n = static_cast<A>(l.n);
    // mean[k] holds slice k's first element (0 for an empty slice) until the first pass adds to it.
    const T* px = static_cast<const T*>(l.x.data_ptr());
    parallel_for(l.outer, std::max<int64_t>(1, kElementwiseGrain / l.inner), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        for (int64_t j = 0; j < l.inner; ++j)
          mean[i * l.inner + j] = l.n > 0 ? to_acc<A>(px[i * l.n * l.inner + j]) : A(0);
    });
    run<T>(l, reducer(A(0), [m = mean.get()](A& a, C v, int64_t, int64_t k) { a += to_acc<A>(v) - m[k]; }, plus<A>(),
                      [m = mean.get(), n](A a, int64_t k) { m[k] += a / n; }));
    // torch divides by max(n - correction, 0): a zero divisor gives inf, or NaN for 0/0.
    const A divisor = l.n > args.correction ? static_cast<A>(l.n - args.correction) : A(0);
    const bool take_sqrt = args.take_sqrt;
    run<T>(l, reducer(A(0), [m = mean.get()](A& a, C v, int64_t, int64_t k) { const A d = to_acc<A>(v) - m[k]; a += d * d; },
                      plus<A>(), [o, divisor, take_sqrt](A a, int64_t k) {
                        const A v = a / divisor;
                        o[k] = convert<T>(take_sqrt ? std::sqrt(v) : v);
                      }));
  });
}

void norm_cpu(const Tensor& x, const ReduceArgs& args, Tensor& out) {
  const ReduceLayout l = plan_layout(x, args.dims_mask);
  const double p = args.p;
  visit_floating(x.dtype(), "norm", [&]<class T>() {
    using C = compute_t<T>;  // what the reducers read: Note [16-bit reductions]
    using A = acc_t<T>;
    T* o = out_ptr<T>(out);
    auto sum_of = [&](auto f, auto finish) {
      run<T>(l, reducer(A(0), [f](A& a, C v, int64_t, int64_t) { a += f(to_acc<A>(v)); }, plus<A>(),
                        [o, finish](A a, int64_t k) { o[k] = convert<T>(finish(a)); }));
    };
    auto same = [](A a) { return a; };
    if (p == 0) return sum_of([](A v) { return A(v != 0); }, same);
    if (p == 1) return sum_of([](A v) { return std::abs(v); }, same);
    if (p == 2) return sum_of([](A v) { return v * v; }, [](A a) { return std::sqrt(a); });
    if (std::isinf(p)) {
      auto pick = [p](A a, A b) { return p > 0 ? max_nan(a, b) : min_nan(a, b); };
      return run<T>(l, reducer(p > 0 ? A(0) : highest<A>(), [pick](A& a, C v, int64_t, int64_t) { a = pick(a, std::abs(to_acc<A>(v))); },
                               pick, [o](A a, int64_t k) { o[k] = convert<T>(a); }));
    }
    const A pa = static_cast<A>(p), inv = static_cast<A>(1.0 / p);
    sum_of([pa](A v) { return std::pow(std::abs(v), pa); }, [inv](A a) { return std::pow(a, inv); });
  });
}

// max + log(sum(exp(x - max))), the max taken as 0 when it is infinite (as torch does): an all -inf
// slice then gives log(0) = -inf, and a +inf element gives +inf.
void logsumexp_cpu(const Tensor& x, const ReduceArgs& args, Tensor& out) {
  const ReduceLayout l = plan_layout(x, args.dims_mask);
  visit_floating(x.dtype(), "logsumexp", [&]<class T>() {
    using C = compute_t<T>;
    using A = acc_t<T>;
    T* o = out_ptr<T>(out);
    std::unique_ptr<C[]> shift(new C[static_cast<size_t>(l.outer * l.inner)]);
    auto pick = [](C a, C b) { return max_nan(a, b); };
    run<T>(l, reducer(lowest<C>(), [pick](C& a, C v, int64_t, int64_t) { a = pick(a, v); }, pick,
                      [s = shift.get()](C a, int64_t k) { s[k] = std::isinf(a) ? C(0) : a; }));
    run<T>(l, reducer(A(0), [s = shift.get()](A& a, C v, int64_t, int64_t k) { a += static_cast<A>(std::exp(v - s[k])); },
                      plus<A>(), [o, s = shift.get()](A a, int64_t k) { o[k] = convert<T>(std::log(a) + static_cast<A>(s[k])); }));
  });
}

template <bool kAll>
void all_any_cpu(const Tensor& x, const ReduceArgs& args, Tensor& out) {
  const ReduceLayout l = plan_layout(x, args.dims_mask);
  visit_dtype(x.dtype(), [&]<class T>() {
    using C = compute_t<T>;
    bool* o = out_ptr<bool>(out);
    auto merge = [](bool a, bool b) { return kAll ? (a && b) : (a || b); };
    run<T>(l, reducer(kAll, [merge](bool& a, C v, int64_t, int64_t) { a = merge(a, v != C(0)); },
                      merge, [o](bool a, int64_t k) { o[k] = a; }));
  });
}

// ---- max/min along one dim, with the index of the first extreme (a NaN counts as the extreme).
template <class C>
struct ValueIndex {
  C value;
  int64_t index;  // -1: nothing seen yet
};

// Whether (v, i) should replace a. Ties go to the lower index, so that merging in any order gives
// the first occurrence.
template <bool kMax, class C>
bool beats(C v, int64_t i, const ValueIndex<C>& a) {
  if (a.index < 0) return true;
  const bool v_nan = v != v, a_nan = a.value != a.value;
  if (v_nan || a_nan) return v_nan && (!a_nan || i < a.index);
  if (v == a.value) return i < a.index;
  return kMax ? v > a.value : v < a.value;
}

template <bool kMax>
void extreme_index_cpu(const Tensor& x, int dim, Tensor& values, Tensor& indices) {
  const ReduceLayout l = plan_layout(x, 1u << dim);
  visit_dtype(x.dtype(), [&]<class T>() {
    using C = compute_t<T>;
    using VI = ValueIndex<C>;
    T* ov = out_ptr<T>(values);
    int64_t* oi = out_ptr<int64_t>(indices);
    run<T>(l, reducer(VI{C(0), -1},
                      [](VI& a, C v, int64_t i, int64_t) { if (beats<kMax>(v, i, a)) a = {v, i}; },
                      [](VI a, const VI& b) { return b.index >= 0 && beats<kMax>(b.value, b.index, a) ? b : a; },
                      [ov, oi](const VI& a, int64_t k) { ov[k] = convert<T>(a.value); oi[k] = a.index; }));
  });
}

}  // namespace

KILN_REGISTER_KERNEL(Op::sum, DeviceType::cpu, sum_cpu);
KILN_REGISTER_KERNEL(Op::mean, DeviceType::cpu, mean_cpu);
KILN_REGISTER_KERNEL(Op::prod, DeviceType::cpu, prod_cpu);
KILN_REGISTER_KERNEL(Op::amax, DeviceType::cpu, extreme_cpu<true>);
KILN_REGISTER_KERNEL(Op::amin, DeviceType::cpu, extreme_cpu<false>);
KILN_REGISTER_KERNEL(Op::var, DeviceType::cpu, var_cpu);
KILN_REGISTER_KERNEL(Op::norm, DeviceType::cpu, norm_cpu);
KILN_REGISTER_KERNEL(Op::logsumexp, DeviceType::cpu, logsumexp_cpu);
KILN_REGISTER_KERNEL(Op::all, DeviceType::cpu, all_any_cpu<true>);
KILN_REGISTER_KERNEL(Op::any, DeviceType::cpu, all_any_cpu<false>);
KILN_REGISTER_KERNEL(Op::max_dim, DeviceType::cpu, extreme_index_cpu<true>);
KILN_REGISTER_KERNEL(Op::min_dim, DeviceType::cpu, extreme_index_cpu<false>);

}  // namespace kiln::cpu
