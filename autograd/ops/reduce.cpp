// Reduction op definitions: dim checks, output dtype and shape, dispatch, and each derivative after
// its forward. Kernels (kernels/cpu/reduce.cpp) write the keepdim form (x's rank, size 1 on reduced
// dims); keepdim=false is a view of it without those dims. Semantics, and the conventions of the
// derivatives at ties and zeros, follow torch.
#include "autograd/ops/reduce.h"

#include <cmath>
#include <limits>

#include "autograd/autocast.h"
#include "autograd/ops/elementwise.h"
#include "autograd/record.h"
#include "tensor/dispatch.h"
#include "tensor/factories.h"

namespace kiln {
namespace {

void check_defined(const Tensor& x, const char* op) { KILN_CHECK(x.defined(), op, ": got an undefined tensor"); }

void check_floating(const Tensor& x, const char* op) {
  KILN_CHECK(x.is_floating(), op, ": expected a floating input, got ", x.dtype(),
             " (convert first, e.g. x.to(DType::f32))");
}

// Bit d set when dim d is reduced; an empty list reduces every dim. A 0-d tensor accepts dim 0
// and -1, which reduce nothing.
uint32_t reduced_mask(const Tensor& x, const Dims& dims, const char* op) {
  if (dims.empty()) return (1u << x.dim()) - 1u;
  uint32_t mask = 0;
  for (int64_t d : dims) {
    const int w = wrap_dim(d, x.dim(), op);
    KILN_CHECK(!(mask >> w & 1u), op, ": dim ", w, " appears multiple times in the list of dims ", dims);
    mask |= 1u << w;
  }
  return x.dim() == 0 ? 0u : mask;
}

// Reductions without an identity (max, min) cannot take an empty slice.
void check_nonzero_reduced(const Tensor& x, uint32_t mask, const char* op) {
  for (int d = 0; d < x.dim(); ++d)
    KILN_CHECK(!(mask >> d & 1u) || x.size(d) != 0, op, ": cannot reduce over a zero-size dimension (dim ", d,
               " of shape ", x.shape(), ")");
}

// ---- derivative helpers. A reduction's output and gradient are used in their keepdim form, which
// broadcasts against the input.

// t (an output of the reduction or its gradient) with size-1 dims where the input was reduced.
Tensor keep_form(const Tensor& t, const Dims& shape, uint32_t mask, bool keepdim) {
  if (keepdim) return t;
  Dims kept = shape;
  for (int d = 0; d < shape.size(); ++d)
    if (mask >> d & 1u) kept[d] = 1;
  return t.reshape(kept);
}

// The gradient of a reduction, broadcast back over the reduced dims of the input's shape.
Tensor expand_reduced(const Tensor& g, const Dims& shape, uint32_t mask, bool keepdim) {
  return keep_form(g, shape, mask, keepdim).expand(shape);
}

// The reduced dims as a list, for the keepdim reductions inside derivatives.
Dims dims_of(uint32_t mask, int rank) {
  Dims dims;
  for (int d = 0; d < rank; ++d)
    if (mask >> d & 1u) dims.push_back(d);
  return dims;
}

// How many input elements each output element reduces.
int64_t reduced_count(const Dims& shape, uint32_t mask) {
  int64_t n = 1;
  for (int d = 0; d < shape.size(); ++d)
    if (mask >> d & 1u) n *= shape[d];
  return n;
}

// A ratio whose zero denominator gives inf (as torch's formulas divide), without a float division by 0.
double ratio(double num, double den) { return den > 0 ? num / den : std::numeric_limits<double>::infinity(); }

// Where it reached the extreme y, x shares the gradient equally among the ties (torch's
// evenly_distribute_backward); elsewhere 0. `hit` marks the extremes.
Tensor split_among(const Tensor& hit, const Tensor& g_kept, const Dims& dims) {
  return where(hit, g_kept / sum(hit, dims, true), Scalar(0));
}

// d prod / d x_i = the product of the others. Without dividing by x_i (which fails at 0): a slice
// with no zero gives p / x_i, a slice with one zero gives that zero's position the product of the
// nonzero elements and the rest 0, a slice with more zeros gives 0 everywhere (as torch).
Tensor prod_backward(const Tensor& g_kept, const Tensor& x, const Dims& dims) {
  const Tensor is_zero = x == 0;
  const Tensor nonzero = where(is_zero, Scalar(1), x);
  const Tensor p = prod(nonzero, dims, true);
  const Tensor zeros_in_slice = sum(is_zero, dims, true);
  const Tensor others = where(is_zero, p, p / nonzero);
  const Tensor valid = where(is_zero, zeros_in_slice == 1, zeros_in_slice == 0);
  return where(valid, g_kept * others, Scalar(0));
}

// d ||x||_p / dx = sign(x) |x|^(p-1) / ||x||^(p-1), with torch's special cases: p = 1 is sign(x),
// p = inf splits among the largest |x| (like amax), a zero norm gives 0, and p = 0 has none.
Tensor norm_backward(const Tensor& g_kept, const Tensor& x, const Tensor& y_kept, double p, const Dims& dims) {
  if (p == 0) return zeros_like(x);
  if (p == 1) return g_kept * sign(x);
  if (std::isinf(p)) return split_among(abs(x) == y_kept, g_kept * sign(x), dims);
  const Tensor scale = where(y_kept == 0, Scalar(0), p == 2 ? g_kept / y_kept : g_kept / y_kept.pow(p - 1));
  if (p == 2) return x * scale;
  return where(x == 0, Scalar(0), sign(x) * abs(x).pow(p - 1)) * scale;
}

Dims keepdim_shape(const Tensor& x, uint32_t mask) {
  Dims shape = x.shape();
  for (int d = 0; d < x.dim(); ++d)
    if (mask >> d & 1u) shape[d] = 1;
  return shape;
}

Tensor squeeze_reduced(const Tensor& out, uint32_t mask, bool keepdim) {
  if (keepdim) return out;
  Dims shape;
  for (int d = 0; d < out.dim(); ++d)
    if (!(mask >> d & 1u)) shape.push_back(out.size(d));
  return out.view(shape);
}

// The shared body of every ReduceKernel op: out (keepdim form, out_dtype) <- op(x).
template <Op op>
Tensor reduce(const Tensor& x, uint32_t mask, bool keepdim, DType out_dtype, ReduceArgs args = {}) {
  args.dims_mask = mask;
  Tensor out = make_tensor(keepdim_shape(x, mask), out_dtype, x.device());
  if (out.numel()) dispatch<op>(x.device(), x, args, out);
  return squeeze_reduced(out, mask, keepdim);
}

// Sum and prod of bool and integer tensors give int64, as in torch.
DType widened(DType t) { return is_integral(t, true) ? DType::i64 : t; }

template <Op op>
Tensor extreme(const Tensor& x, const Dims& dims, bool keepdim, const char* name) {
  check_defined(x, name);
  const uint32_t mask = reduced_mask(x, dims, name);
  check_nonzero_reduced(x, mask, name);
  Tensor out = reduce<op>(x, mask, keepdim, x.dtype());
  if (autograd::needs_grad(x))
    autograd::record(name, out, {x},
                     [sx = SavedTensor(x), sy = SavedTensor(out), mask, keepdim](const Tensor& g, Needs) {
                       const Tensor& x = sx.get();
                       const Tensor hit = x == keep_form(sy.get(), x.shape(), mask, keepdim);
                       return split_among(hit, keep_form(g, x.shape(), mask, keepdim), dims_of(mask, x.dim()));
                     });
  return out;
}

template <Op op>
Tensor logical(const Tensor& x, const Dims& dims, bool keepdim, const char* name) {
  check_defined(x, name);
  return reduce<op>(x, reduced_mask(x, dims, name), keepdim, DType::boolean);
}

// Values and int64 indices of the extreme along dim; the first index wins ties.
template <Op op>
TensorPair extreme_index(const Tensor& x, int64_t dim, bool keepdim, const char* name) {
  check_defined(x, name);
  const int d = wrap_dim(dim, x.dim(), name);
  const Tensor x1 = x.dim() == 0 ? x.reshape({1}) : x;
  check_nonzero_reduced(x1, 1u << d, name);
  const Dims keep = keepdim_shape(x1, 1u << d);
  Tensor values = make_tensor(keep, x.dtype(), x.device());
  Tensor indices = make_tensor(keep, DType::i64, x.device());
  if (values.numel()) dispatch<op>(x.device(), x1, d, values, indices);
  TensorPair out{values, indices};
  if (x.dim() == 0) out = {values.view({}), indices.view({})};
  else out = {squeeze_reduced(values, 1u << d, keepdim), squeeze_reduced(indices, 1u << d, keepdim)};
  // The gradient goes to the index the forward picked (no tie splitting: that is amax's rule).
  if (autograd::needs_grad(x))
    autograd::record(name, out.values, {x},
                     [shape = x.shape(), d, saved_index = SavedTensor(indices)](const Tensor& g, Needs) {
                       if (shape.empty()) return g;
                       const Tensor& keep = saved_index.get();
                       Tensor gx = zeros(shape, {.dtype = g.dtype(), .device = g.device()});
                       if (gx.numel()) dispatch<Op::scatter>(g.device(), gx, d, keep, g.reshape(keep.shape()));
                       return gx;
                     });
  return out;
}

template <Op op>
Tensor arg_extreme(const Tensor& x, std::optional<int64_t> dim, bool keepdim, const char* name) {
  check_defined(x, name);
  if (dim) return extreme_index<op>(x, *dim, keepdim, name).indices;
  // No dim: the index into the flattened input; keepdim gives x's rank with every size 1.
  KILN_CHECK(x.numel() != 0, name, ": cannot reduce over a zero-size dimension (input of shape ", x.shape(),
             " has no elements; pass a dim)");
  const Tensor index = extreme_index<op>(x.reshape({-1}), 0, false, name).indices;
  return keepdim ? index.view(Dims::filled(x.dim(), 1)) : index;
}

}  // namespace

Tensor sum(const Tensor& x, const Dims& dims, bool keepdim, std::optional<DType> dtype) {
  check_defined(x, "sum");
  const uint32_t mask = reduced_mask(x, dims, "sum");
  // torch casts the input to `dtype` first; integers reach an int64 result without the copy.
  const DType out_dtype = dtype ? *dtype : widened(x.dtype());
  const bool direct = out_dtype == x.dtype() || (out_dtype == DType::i64 && is_integral(x.dtype(), true));
  Tensor out = reduce<Op::sum>(direct ? x : x.to(out_dtype), mask, keepdim, out_dtype);
  if (autograd::needs_grad(x))
    autograd::record("sum", out, {x}, [shape = x.shape(), mask, keepdim](const Tensor& g, Needs) {
      return expand_reduced(g, shape, mask, keepdim);
    });
  return out;
}

Tensor mean(const Tensor& x, const Dims& dims, bool keepdim) {
  check_defined(x, "mean");
  check_floating(x, "mean");
  const uint32_t mask = reduced_mask(x, dims, "mean");
  Tensor out = reduce<Op::mean>(x, mask, keepdim, x.dtype());
  if (autograd::needs_grad(x))
    autograd::record("mean", out, {x}, [shape = x.shape(), mask, keepdim](const Tensor& g, Needs) {
      const int64_t n = reduced_count(shape, mask);
      return expand_reduced(g, shape, mask, keepdim) * (n ? 1.0 / static_cast<double>(n) : 0.0);
    });
  return out;
}

Tensor prod(const Tensor& x, const Dims& dims, bool keepdim) {
  if (autocast::active()) return autocast::run<autocast::Policy::fp32>(prod, x, dims, keepdim);
  check_defined(x, "prod");
  const uint32_t mask = reduced_mask(x, dims, "prod");
  Tensor out = reduce<Op::prod>(x, mask, keepdim, widened(x.dtype()));
  if (autograd::needs_grad(x))
    autograd::record("prod", out, {x}, [sx = SavedTensor(x), mask, keepdim](const Tensor& g, Needs) {
      const Tensor& x = sx.get();
      return prod_backward(keep_form(g, x.shape(), mask, keepdim), x, dims_of(mask, x.dim()));
    });
  return out;
}

Tensor amax(const Tensor& x, const Dims& dims, bool keepdim) { return extreme<Op::amax>(x, dims, keepdim, "amax"); }
Tensor amin(const Tensor& x, const Dims& dims, bool keepdim) { return extreme<Op::amin>(x, dims, keepdim, "amin"); }

Tensor var(const Tensor& x, const Dims& dims, int64_t correction, bool keepdim) {
  check_defined(x, "var");
  check_floating(x, "var");
  const uint32_t mask = reduced_mask(x, dims, "var");
  Tensor out = reduce<Op::var>(x, mask, keepdim, x.dtype(), {.correction = correction});
  // d var / dx = 2 (x - mean) / (n - correction)
  if (autograd::needs_grad(x))
    autograd::record("var", out, {x}, [sx = SavedTensor(x), mask, keepdim, correction](const Tensor& g, Needs) {
      const Tensor& x = sx.get();
      const Dims reduced = dims_of(mask, x.dim());
      const double n = static_cast<double>(reduced_count(x.shape(), mask));
      const Tensor centered = x - mean(x, reduced, true);
      return keep_form(g, x.shape(), mask, keepdim) * centered * ratio(2.0, n - static_cast<double>(correction));
    });
  return out;
}

Tensor std(const Tensor& x, const Dims& dims, int64_t correction, bool keepdim) {
  check_defined(x, "std");
  check_floating(x, "std");
  const uint32_t mask = reduced_mask(x, dims, "std");
  Tensor out = reduce<Op::var>(x, mask, keepdim, x.dtype(), {.correction = correction, .take_sqrt = true});
  // d std / dx = (x - mean) / ((n - correction) std), taken as 0 where std is 0 (a constant slice),
  // as torch does, rather than 0 / 0 = nan.
  if (autograd::needs_grad(x))
    autograd::record("std", out, {x},
                     [sx = SavedTensor(x), sy = SavedTensor(out), mask, keepdim, correction](const Tensor& g, Needs) {
                       const Tensor& x = sx.get();
                       const Dims reduced = dims_of(mask, x.dim());
                       const double n = static_cast<double>(reduced_count(x.shape(), mask));
                       const Tensor centered = x - mean(x, reduced, true);
                       const Tensor g_kept = keep_form(g, x.shape(), mask, keepdim),
                                    y_kept = keep_form(sy.get(), x.shape(), mask, keepdim);
                       const Tensor g_over_y = masked_fill(g_kept / y_kept, y_kept == 0.0, 0.0);
                       return centered * g_over_y * ratio(1.0, n - static_cast<double>(correction));
                     });
  return out;
}

Tensor norm(const Tensor& x, double p, const Dims& dims, bool keepdim) {
  check_defined(x, "norm");
  check_floating(x, "norm");
  KILN_CHECK(!std::isnan(p), "norm: p must be a number, got nan");
  const uint32_t mask = reduced_mask(x, dims, "norm");
  if (std::isinf(p)) check_nonzero_reduced(x, mask, p > 0 ? "norm (p=inf)" : "norm (p=-inf)");
  Tensor out = reduce<Op::norm>(x, mask, keepdim, x.dtype(), {.p = p});
  if (autograd::needs_grad(x))
    autograd::record("norm", out, {x},
                     [sx = SavedTensor(x), sy = SavedTensor(out), p, mask, keepdim](const Tensor& g, Needs) {
                       const Tensor& x = sx.get();
                       return norm_backward(keep_form(g, x.shape(), mask, keepdim), x,
                                            keep_form(sy.get(), x.shape(), mask, keepdim), p, dims_of(mask, x.dim()));
                     });
  return out;
}

Tensor logsumexp(const Tensor& x, const Dims& dims, bool keepdim) {
  check_defined(x, "logsumexp");
  check_floating(x, "logsumexp");
  const uint32_t mask = reduced_mask(x, dims, "logsumexp");
  Tensor out = reduce<Op::logsumexp>(x, mask, keepdim, x.dtype());
  // d/dx log sum exp x = softmax(x) = exp(x - y)
  if (autograd::needs_grad(x))
    autograd::record(
        "logsumexp", out, {x}, [sx = SavedTensor(x), sy = SavedTensor(out), mask, keepdim](const Tensor& g, Needs) {
          const Tensor& x = sx.get();
          return keep_form(g, x.shape(), mask, keepdim) * exp(x - keep_form(sy.get(), x.shape(), mask, keepdim));
        });
  return out;
}

Tensor all(const Tensor& x, const Dims& dims, bool keepdim) { return logical<Op::all>(x, dims, keepdim, "all"); }
Tensor any(const Tensor& x, const Dims& dims, bool keepdim) { return logical<Op::any>(x, dims, keepdim, "any"); }

TensorPair max(const Tensor& x, int64_t dim, bool keepdim) {
  return extreme_index<Op::max_dim>(x, dim, keepdim, "max");
}
TensorPair min(const Tensor& x, int64_t dim, bool keepdim) {
  return extreme_index<Op::min_dim>(x, dim, keepdim, "min");
}
Tensor max(const Tensor& x) { return extreme<Op::amax>(x, {}, false, "max"); }
Tensor min(const Tensor& x) { return extreme<Op::amin>(x, {}, false, "min"); }

Tensor argmax(const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
  return arg_extreme<Op::max_dim>(x, dim, keepdim, "argmax");
}
Tensor argmin(const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
  return arg_extreme<Op::min_dim>(x, dim, keepdim, "argmin");
}

// ---- Tensor methods
Tensor Tensor::sum(const Dims& dims, bool keepdim) const { return kiln::sum(*this, dims, keepdim); }
Tensor Tensor::mean(const Dims& dims, bool keepdim) const { return kiln::mean(*this, dims, keepdim); }
Tensor Tensor::prod(const Dims& dims, bool keepdim) const { return kiln::prod(*this, dims, keepdim); }
Tensor Tensor::amax(const Dims& dims, bool keepdim) const { return kiln::amax(*this, dims, keepdim); }
Tensor Tensor::amin(const Dims& dims, bool keepdim) const { return kiln::amin(*this, dims, keepdim); }
Tensor Tensor::var(const Dims& dims, int64_t correction, bool keepdim) const {
  return kiln::var(*this, dims, correction, keepdim);
}
Tensor Tensor::std(const Dims& dims, int64_t correction, bool keepdim) const {
  return kiln::std(*this, dims, correction, keepdim);
}
Tensor Tensor::norm(double p, const Dims& dims, bool keepdim) const { return kiln::norm(*this, p, dims, keepdim); }
Tensor Tensor::logsumexp(const Dims& dims, bool keepdim) const { return kiln::logsumexp(*this, dims, keepdim); }
Tensor Tensor::all(const Dims& dims, bool keepdim) const { return kiln::all(*this, dims, keepdim); }
Tensor Tensor::any(const Dims& dims, bool keepdim) const { return kiln::any(*this, dims, keepdim); }
Tensor Tensor::argmax(std::optional<int64_t> dim, bool keepdim) const { return kiln::argmax(*this, dim, keepdim); }
Tensor Tensor::argmin(std::optional<int64_t> dim, bool keepdim) const { return kiln::argmin(*this, dim, keepdim); }

}  // namespace kiln
