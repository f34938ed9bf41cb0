// Op definitions along one dim (cumsum, sort, topk) and on the last two dims (tril, triu): checks,
// result shape and dtype, output allocation, dispatch (kernels in kernels/cpu/sorting.cpp), and
// derivatives. NaN sorts as the largest value, as in torch. sort and topk send each value's gradient
// back to the position it came from (the indices); the indices themselves carry none.
#include <algorithm>

#include "autograd/ops/elementwise.h"
#include "autograd/ops/indexing.h"
#include "autograd/ops/reduce.h"
#include "autograd/record.h"
#include "tensor/dispatch.h"
#include "tensor/factories.h"

namespace kiln {
namespace {

void check_defined(const Tensor& t, const char* op) { KILN_CHECK(t.defined(), op, ": got an undefined tensor"); }

// Kernels see a 0-d tensor as 1-d of size 1 (torch gives 0-d tensors one slice along dim 0).
Tensor at_least_1d(const Tensor& t) { return t.dim() == 0 ? t.view({1}) : t; }

template <Op op>
Tensor triangle(const Tensor& x, int64_t diagonal, bool lower, const char* name) {
  check_defined(x, name);
  KILN_CHECK(x.dim() >= 2, name, ": expected a tensor with at least 2 dims, got shape ", x.shape());
  Tensor out = make_tensor(x.shape(), x.dtype(), x.device());
  if (out.numel()) dispatch<op>(x.device(), x, diagonal, lower, out);
  if (autograd::needs_grad(x))
    autograd::record(name, out, {x}, [diagonal, lower](const Tensor& g, Needs) {
      return lower ? tril(g, diagonal) : triu(g, diagonal);
    });
  return out;
}

// The gradient of values picked from x along dim d: each goes back to its index, the rest is 0.
// Indices along a slice are distinct, so a plain scatter suffices.
void record_picked(const char* name, Tensor& values, const Tensor& x, int d, const Tensor& indices) {
  if (!autograd::needs_grad(x)) return;
  autograd::record(name, values, {x},
                   [shape = x.shape(), d, saved_index = SavedTensor(indices)](const Tensor& g, Needs) {
                     Tensor gx = zeros(shape, {.dtype = g.dtype(), .device = g.device()});
                     if (g.numel() == 0) return gx;
                     Tensor gx1 = at_least_1d(gx);
                     dispatch<Op::scatter>(g.device(), gx1, d, at_least_1d(saved_index.get()), at_least_1d(g));
                     return gx;
                   });
}

}  // namespace

// Integer and bool inputs sum in int64, as torch does; 16-bit floats accumulate in float.
Tensor cumsum(const Tensor& x, int64_t dim) {
  check_defined(x, "cumsum");
  const int d = wrap_dim(dim, x.dim(), "cumsum");
  const DType t = is_floating(x.dtype()) ? x.dtype() : DType::i64;
  const Tensor xt = x.dtype() == t ? x : x.to(t);
  Tensor out = make_tensor(x.shape(), t, x.device());
  if (out.numel()) {
    Tensor o = at_least_1d(out);
    dispatch<Op::cumsum>(x.device(), at_least_1d(xt), d, o);
  }
  // Each input feeds every later output: the gradient is g summed from the end, sum(g) - cumsum(g) + g.
  if (autograd::needs_grad(x))
    autograd::record("cumsum", out, {x}, [d](const Tensor& g, Needs) {
      if (g.dim() == 0) return g;
      return g.sum({d}, true) - g.cumsum(d) + g;
    });
  return out;
}

TensorPair sort(const Tensor& x, int64_t dim, bool descending, bool stable) {
  check_defined(x, "sort");
  const int d = wrap_dim(dim, x.dim(), "sort");
  TensorPair out{make_tensor(x.shape(), x.dtype(), x.device()), make_tensor(x.shape(), DType::i64, x.device())};
  if (x.numel()) {
    Tensor v = at_least_1d(out.values), i = at_least_1d(out.indices);
    dispatch<Op::sort>(x.device(), at_least_1d(x), d, descending, stable, v, i);
  }
  record_picked("sort", out.values, x, d, out.indices);
  return out;
}

// A 0-d input has one slice of one element: k = 1 gives 0-d results, k = 0 gives shape [0].
TensorPair topk(const Tensor& x, int64_t k, int64_t dim, bool largest, bool sorted) {
  check_defined(x, "topk");
  const int d = wrap_dim(dim, x.dim(), "topk");
  const Tensor xi = at_least_1d(x);
  const int64_t n = xi.shape()[d];
  KILN_CHECK(k >= 0 && k <= n, "topk: k = ", k, " is out of range for dim ", d, " of size ", n, " (shape ",
             x.shape(), ")");
  Dims shape = xi.shape();
  shape[d] = k;
  TensorPair out{make_tensor(shape, x.dtype(), x.device()), make_tensor(shape, DType::i64, x.device())};
  if (out.values.numel()) dispatch<Op::topk>(x.device(), xi, k, d, largest, sorted, out.values, out.indices);
  if (x.dim() == 0 && k == 1) out = {out.values.view({}), out.indices.view({})};
  record_picked("topk", out.values, x, d, out.indices);
  return out;
}

Tensor tril(const Tensor& x, int64_t diagonal) { return triangle<Op::tril>(x, diagonal, true, "tril"); }
Tensor triu(const Tensor& x, int64_t diagonal) { return triangle<Op::triu>(x, diagonal, false, "triu"); }

// ---- Tensor methods
Tensor Tensor::cumsum(int64_t dim) const { return kiln::cumsum(*this, dim); }
Tensor Tensor::tril(int64_t diagonal) const { return kiln::tril(*this, diagonal); }
Tensor Tensor::triu(int64_t diagonal) const { return kiln::triu(*this, diagonal); }

}  // namespace kiln
