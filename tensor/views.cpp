// View geometry: new metadata over the same storage, no copy, no autograd (tensor/view_impl.h).
// The Tensor view methods that record derivatives wrap these in autograd/ops/views.cpp; only
// detach_view, which never records, is defined here.
#include <algorithm>
#include <numeric>

#include "tensor/view_impl.h"

namespace kiln {
namespace detail {
namespace {

// Strides that view (shape, strides) as new_shape without a copy, if any exist (torch's
// computeStride): merge runs of input dims that are contiguous with each other.
std::optional<Dims> view_strides(const Dims& shape, const Dims& strides, const Dims& new_shape) {
  Dims out = Dims::filled(new_shape.size(), 1);
  if (shape.empty()) return contiguous_strides(new_shape);
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  if (numel == 0) return contiguous_strides(new_shape);
  int view_d = new_shape.size() - 1;
  int64_t chunk_base_stride = strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int d = shape.size() - 1; d >= 0; --d) {
    tensor_numel *= shape[d];
    if (d == 0 || (shape[d - 1] != 1 && strides[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        out[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base_stride = strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return out;
}

}  // namespace

Tensor make_view(const Tensor& base, const Dims& shape, const Dims& strides, int64_t offset) {
  auto impl = Ref<TensorImpl>::make();
  impl->storage = base.impl()->storage;
  impl->offset = offset;
  impl->shape = shape;
  impl->strides = strides;
  impl->dtype = base.dtype();
  impl->refresh();
  return Tensor(std::move(impl));
}

Dims infer_shape(const Dims& shape, int64_t numel, const char* op) {
  Dims out = shape;
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      KILN_CHECK(infer < 0, op, ": only one dim can be -1, got shape ", shape);
      infer = i;
    } else {
      KILN_CHECK(out[i] >= 0, op, ": invalid size ", out[i], " in shape ", shape);
      KILN_CHECK(!__builtin_mul_overflow(known, out[i], &known), op, ": shape ", shape, " overflows int64");
    }
  }
  if (infer >= 0) {
    KILN_CHECK(known != 0 && numel % known == 0, op, ": shape ", shape, " is invalid for input of size ", numel);
    out[infer] = numel / known;
  } else {
    KILN_CHECK(known == numel, op, ": shape ", shape, " is invalid for input of size ", numel);
  }
  return out;
}

std::optional<Tensor> try_view(const Tensor& x, const Dims& shape) {
  auto st = view_strides(x.shape(), x.strides(), shape);
  if (!st) return std::nullopt;
  return make_view(x, shape, *st, x.storage_offset());
}

Tensor view(const Tensor& x, const Dims& shape) {
  const Dims s = infer_shape(shape, x.numel(), "view");
  auto st = view_strides(x.shape(), x.strides(), s);
  KILN_CHECK(st.has_value(), "view: cannot view a tensor of shape ", x.shape(), " and strides ", x.strides(),
             " as shape ", s, " without a copy; use reshape (or .contiguous().view)");
  return make_view(x, s, *st, x.storage_offset());
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  if (x.dim() == 0) {
    wrap_dim(d0, 0, "transpose");
    wrap_dim(d1, 0, "transpose");
    return x.detach_view();
  }
  const int a = wrap_dim(d0, x.dim(), "transpose"), b = wrap_dim(d1, x.dim(), "transpose");
  Dims sh = x.shape(), st = x.strides();
  std::swap(sh[a], sh[b]);
  std::swap(st[a], st[b]);
  return make_view(x, sh, st, x.storage_offset());
}

Tensor permute(const Tensor& x, const Dims& order) {
  KILN_CHECK(order.size() == x.dim(), "permute: got ", order.size(), " dims ", order, " for a ", x.dim(),
             "-d tensor of shape ", x.shape());
  Dims sh = x.shape(), st = x.strides();
  uint32_t seen = 0;
  for (int i = 0; i < x.dim(); ++i) {
    const int d = wrap_dim(order[i], x.dim(), "permute");
    KILN_CHECK(!(seen & (1u << d)), "permute: dim ", d, " repeats in ", order);
    seen |= 1u << d;
    sh[i] = x.shape()[d];
    st[i] = x.strides()[d];
  }
  return make_view(x, sh, st, x.storage_offset());
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  KILN_CHECK(x.dim() > 0, "narrow: cannot narrow a 0-d tensor");
  const int d = wrap_dim(dim, x.dim(), "narrow");
  const int64_t n = x.shape()[d];
  if (start < 0) start += n;
  KILN_CHECK(start >= 0 && length >= 0 && start <= n && length <= n - start, "narrow: start ", start,
             " and length ", length, " out of range for dim ", d, " of size ", n, " (shape ", x.shape(), ")");
  Dims sh = x.shape();
  sh[d] = length;
  return make_view(x, sh, x.strides(), x.storage_offset() + start * x.strides()[d]);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  KILN_CHECK(x.dim() > 0, "slice: cannot slice a 0-d tensor");
  const int d = wrap_dim(dim, x.dim(), "slice");
  KILN_CHECK(step > 0, "slice: step must be positive, got ", step);
  const int64_t n = x.shape()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Dims sh = x.shape(), st = x.strides();
  sh[d] = (end - start + step - 1) / step;
  st[d] *= step;
  return make_view(x, sh, st, x.storage_offset() + start * x.strides()[d]);
}

Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  KILN_CHECK(x.dim() > 0, "select: cannot select on a 0-d tensor");
  const int d = wrap_dim(dim, x.dim(), "select");
  const int64_t n = x.shape()[d];
  KILN_CHECK(index >= -n && index < n, "select: index ", index, " out of range for dim ", d, " of size ", n);
  if (index < 0) index += n;
  Dims sh = x.shape(), st = x.strides();
  sh.erase(d);
  st.erase(d);
  return make_view(x, sh, st, x.storage_offset() + index * x.strides()[d]);
}

Tensor expand(const Tensor& x, const Dims& shape) {
  KILN_CHECK(shape.size() >= x.dim(), "expand: the target shape ", shape, " has fewer dims than the tensor's ",
             x.shape());
  const int lead = shape.size() - x.dim();
  Dims sh = shape, st = Dims::filled(shape.size(), 0);
  for (int i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      KILN_CHECK(shape[i] >= 0, "expand: size -1 not allowed in a new leading dim, got ", shape);
      continue;
    }
    const int64_t cur = x.shape()[i - lead];
    if (shape[i] == -1 || shape[i] == cur) {
      sh[i] = cur;
      st[i] = x.strides()[i - lead];
    } else {
      KILN_CHECK(cur == 1, "expand: the size of dim ", i, " (", cur, ") must match the target ", shape[i],
                 " or be 1 (tensor shape ", x.shape(), ", target ", shape, ")");
      KILN_CHECK(shape[i] >= 0, "expand: invalid size ", shape[i], " in ", shape);
    }
  }
  checked_numel(sh, "expand");
  return make_view(x, sh, st, x.storage_offset());
}

Tensor squeeze(const Tensor& x) {
  Dims sh, st;
  for (int i = 0; i < x.dim(); ++i)
    if (x.shape()[i] != 1) {
      sh.push_back(x.shape()[i]);
      st.push_back(x.strides()[i]);
    }
  return make_view(x, sh, st, x.storage_offset());
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  if (x.dim() == 0) {
    wrap_dim(dim, 0, "squeeze");
    return x.detach_view();
  }
  const int d = wrap_dim(dim, x.dim(), "squeeze");
  if (x.shape()[d] != 1) return x.detach_view();
  Dims sh = x.shape(), st = x.strides();
  sh.erase(d);
  st.erase(d);
  return make_view(x, sh, st, x.storage_offset());
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  const int d = wrap_dim(dim, x.dim() + 1, "unsqueeze");
  Dims sh = x.shape(), st = x.strides();
  const int64_t stride = d < x.dim() ? x.strides()[d] * x.shape()[d] : 1;
  sh.insert(d, 1);
  st.insert(d, stride);
  return make_view(x, sh, st, x.storage_offset());
}

Tensor as_strided(const Tensor& x, const Dims& shape, const Dims& strides, int64_t offset) {
  KILN_CHECK(shape.size() == strides.size(), "as_strided: shape ", shape, " and strides ", strides,
             " differ in length");
  const int64_t n = checked_numel(shape, "as_strided");
  KILN_CHECK(offset >= 0, "as_strided: negative offset ", offset);
  int64_t last = offset;
  for (int i = 0; i < shape.size(); ++i) {
    KILN_CHECK(strides[i] >= 0, "as_strided: negative stride ", strides[i], " in ", strides);
    if (n > 0 && __builtin_add_overflow(last, (shape[i] - 1) * strides[i], &last)) last = INT64_MAX;
  }
  const int64_t capacity = static_cast<int64_t>(x.storage().nbytes() / x.element_size());
  KILN_CHECK(n == 0 || last < capacity, "as_strided: shape ", shape, ", strides ", strides, " and offset ", offset,
             " reach element ", last, " of a storage of ", capacity, " elements");
  return make_view(x, shape, strides, offset);
}

Dims flattened_shape(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  if (x.dim() == 0) return {1};
  const int s = wrap_dim(start_dim, x.dim(), "flatten"), e = wrap_dim(end_dim, x.dim(), "flatten");
  KILN_CHECK(s <= e, "flatten: start_dim ", start_dim, " comes after end_dim ", end_dim, " (shape ", x.shape(), ")");
  Dims sh;
  for (int i = 0; i < s; ++i) sh.push_back(x.shape()[i]);
  int64_t n = 1;
  for (int i = s; i <= e; ++i) n *= x.shape()[i];
  sh.push_back(n);
  for (int i = e + 1; i < x.dim(); ++i) sh.push_back(x.shape()[i]);
  return sh;
}

Dims unflattened_shape(const Tensor& x, int64_t dim, const Dims& sizes) {
  KILN_CHECK(x.dim() > 0, "unflatten: cannot unflatten a 0-d tensor");
  KILN_CHECK(!sizes.empty(), "unflatten: sizes must be non-empty");
  const int d = wrap_dim(dim, x.dim(), "unflatten");
  const Dims inner = infer_shape(sizes, x.shape()[d], "unflatten");
  Dims sh;
  for (int i = 0; i < d; ++i) sh.push_back(x.shape()[i]);
  for (int64_t s : inner) sh.push_back(s);
  for (int i = d + 1; i < x.dim(); ++i) sh.push_back(x.shape()[i]);
  return sh;
}

}  // namespace detail

Tensor Tensor::detach_view() const { return detail::make_view(*this, shape(), strides(), storage_offset()); }

}  // namespace kiln
