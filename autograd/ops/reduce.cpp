// Reduction op definitions: dim checks, output dtype and shape, dispatch. Kernels (kernels/cpu/
// reduce.cpp) write the keepdim form (x's rank, size 1 on reduced dims); keepdim=false is a view of
// it without those dims. Semantics follow torch. (Derivatives arrive here with autograd.)
#include "autograd/ops/reduce.h"

#include <cmath>
#include <limits>

#include "autograd/record.h"
#include "tensor/dispatch.h"

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

// The gradient of a reduction, broadcast back over the reduced dims of the input's shape.
Tensor expand_reduced(const Tensor& g, const Dims& shape, uint32_t mask, bool keepdim) {
  Dims kept = shape;
  for (int d = 0; d < static_cast<int>(shape.size()); ++d)
    if (mask >> d & 1u) kept[d] = 1;
  const Tensor g_kept = keepdim ? g : g.reshape(kept);
  return g_kept.expand(shape);
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
  return reduce<op>(x, mask, keepdim, x.dtype());
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
  if (x.dim() == 0) return {values.view({}), indices.view({})};
  return {squeeze_reduced(values, 1u << d, keepdim), squeeze_reduced(indices, 1u << d, keepdim)};
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
  return reduce<Op::mean>(x, reduced_mask(x, dims, "mean"), keepdim, x.dtype());
}

Tensor prod(const Tensor& x, const Dims& dims, bool keepdim) {
  check_defined(x, "prod");
  return reduce<Op::prod>(x, reduced_mask(x, dims, "prod"), keepdim, widened(x.dtype()));
}

Tensor amax(const Tensor& x, const Dims& dims, bool keepdim) { return extreme<Op::amax>(x, dims, keepdim, "amax"); }
Tensor amin(const Tensor& x, const Dims& dims, bool keepdim) { return extreme<Op::amin>(x, dims, keepdim, "amin"); }

Tensor var(const Tensor& x, const Dims& dims, int64_t correction, bool keepdim) {
  check_defined(x, "var");
  check_floating(x, "var");
  return reduce<Op::var>(x, reduced_mask(x, dims, "var"), keepdim, x.dtype(), {.correction = correction});
}

Tensor std(const Tensor& x, const Dims& dims, int64_t correction, bool keepdim) {
  check_defined(x, "std");
  check_floating(x, "std");
  return reduce<Op::var>(x, reduced_mask(x, dims, "std"), keepdim, x.dtype(),
                         {.correction = correction, .take_sqrt = true});
}

Tensor norm(const Tensor& x, double p, const Dims& dims, bool keepdim) {
  check_defined(x, "norm");
  check_floating(x, "norm");
  KILN_CHECK(!std::isnan(p), "norm: p must be a number, got nan");
  const uint32_t mask = reduced_mask(x, dims, "norm");
  if (std::isinf(p)) check_nonzero_reduced(x, mask, p > 0 ? "norm (p=inf)" : "norm (p=-inf)");
  return reduce<Op::norm>(x, mask, keepdim, x.dtype(), {.p = p});
}

Tensor logsumexp(const Tensor& x, const Dims& dims, bool keepdim) {
  check_defined(x, "logsumexp");
  check_floating(x, "logsumexp");
  return reduce<Op::logsumexp>(x, reduced_mask(x, dims, "logsumexp"), keepdim, x.dtype());
}

Tensor all(const Tensor& x, const Dims& dims, bool keepdim) { return logical<Op::all>(x, dims, keepdim, "all"); }
Tensor any(const Tensor& x, const Dims& dims, bool keepdim) { return logical<Op::any>(x, dims, keepdim, "any"); }

TensorPair max(const Tensor& x, int64_t dim, bool keepdim) { return extreme_index<Op::max_dim>(x, dim, keepdim, "max"); }
TensorPair min(const Tensor& x, int64_t dim, bool keepdim) { return extreme_index<Op::min_dim>(x, dim, keepdim, "min"); }
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
