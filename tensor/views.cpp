// View ops: new metadata over the same storage, no copy. reshape and contiguous copy only when no
// view can express the result.
#include <numeric>

#include "tensor/tensor.h"

namespace kiln {
namespace {

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

// Fills in a -1 in `shape` so that it holds numel elements.
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

Tensor Tensor::view(const Dims& shape) const {
  const Dims s = infer_shape(shape, numel(), "view");
  auto st = view_strides(this->shape(), strides(), s);
  KILN_CHECK(st.has_value(), "view: cannot view a tensor of shape ", this->shape(), " and strides ", strides(),
             " as shape ", s, " without a copy; use reshape (or .contiguous().view)");
  return make_view(*this, s, *st, storage_offset());
}

Tensor Tensor::reshape(const Dims& shape) const {
  const Dims s = infer_shape(shape, numel(), "reshape");
  if (auto st = view_strides(this->shape(), strides(), s)) return make_view(*this, s, *st, storage_offset());
  return contiguous().view(s);
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  if (dim() == 0) { wrap_dim(d0, 0, "transpose"); wrap_dim(d1, 0, "transpose"); return detach_view(); }
  const int a = wrap_dim(d0, dim(), "transpose"), b = wrap_dim(d1, dim(), "transpose");
  Dims sh = shape(), st = strides();
  std::swap(sh[a], sh[b]);
  std::swap(st[a], st[b]);
  return make_view(*this, sh, st, storage_offset());
}

Tensor Tensor::permute(const Dims& order) const {
  KILN_CHECK(order.size() == dim(), "permute: got ", order.size(), " dims ", order, " for a ", dim(),
             "-d tensor of shape ", shape());
  Dims sh = shape(), st = strides();
  uint32_t seen = 0;
  for (int i = 0; i < dim(); ++i) {
    const int d = wrap_dim(order[i], dim(), "permute");
    KILN_CHECK(!(seen & (1u << d)), "permute: dim ", d, " repeats in ", order);
    seen |= 1u << d;
    sh[i] = shape()[d];
    st[i] = strides()[d];
  }
  return make_view(*this, sh, st, storage_offset());
}

Tensor Tensor::t() const {
  KILN_CHECK(dim() <= 2, "t: expects a tensor with <= 2 dims, got shape ", shape(), " (use transpose or mT)");
  return dim() < 2 ? detach_view() : transpose(0, 1);
}

Tensor Tensor::narrow(int64_t dim_, int64_t start, int64_t length) const {
  KILN_CHECK(this->dim() > 0, "narrow: cannot narrow a 0-d tensor");
  const int d = wrap_dim(dim_, this->dim(), "narrow");
  const int64_t n = shape()[d];
  if (start < 0) start += n;
  KILN_CHECK(start >= 0 && length >= 0 && start <= n && length <= n - start, "narrow: start ", start,
             " and length ", length, " out of range for dim ", d, " of size ", n, " (shape ", shape(), ")");
  Dims sh = shape();
  sh[d] = length;
  return make_view(*this, sh, strides(), storage_offset() + start * strides()[d]);
}

Tensor Tensor::slice(int64_t dim_, int64_t start, int64_t end, int64_t step) const {
  KILN_CHECK(this->dim() > 0, "slice: cannot slice a 0-d tensor");
  const int d = wrap_dim(dim_, this->dim(), "slice");
  KILN_CHECK(step > 0, "slice: step must be positive, got ", step);
  const int64_t n = shape()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Dims sh = shape(), st = strides();
  sh[d] = (end - start + step - 1) / step;
  st[d] *= step;
  return make_view(*this, sh, st, storage_offset() + start * strides()[d]);
}

Tensor Tensor::select(int64_t dim_, int64_t index) const {
  KILN_CHECK(this->dim() > 0, "select: cannot select on a 0-d tensor");
  const int d = wrap_dim(dim_, this->dim(), "select");
  const int64_t n = shape()[d];
  KILN_CHECK(index >= -n && index < n, "select: index ", index, " out of range for dim ", d, " of size ", n);
  if (index < 0) index += n;
  Dims sh = shape(), st = strides();
  sh.erase(d);
  st.erase(d);
  return make_view(*this, sh, st, storage_offset() + index * strides()[d]);
}

Tensor Tensor::expand(const Dims& shape_) const {
  KILN_CHECK(shape_.size() >= dim(), "expand: the target shape ", shape_, " has fewer dims than the tensor's ",
             shape());
  const int lead = shape_.size() - dim();
  Dims sh = shape_, st = Dims::filled(shape_.size(), 0);
  for (int i = 0; i < shape_.size(); ++i) {
    if (i < lead) {
      KILN_CHECK(shape_[i] >= 0, "expand: size -1 not allowed in a new leading dim, got ", shape_);
      continue;
    }
    const int64_t cur = shape()[i - lead];
    if (shape_[i] == -1 || shape_[i] == cur) {
      sh[i] = cur;
      st[i] = strides()[i - lead];
    } else {
      KILN_CHECK(cur == 1, "expand: the size of dim ", i, " (", cur, ") must match the target ", shape_[i],
                 " or be 1 (tensor shape ", shape(), ", target ", shape_, ")");
      KILN_CHECK(shape_[i] >= 0, "expand: invalid size ", shape_[i], " in ", shape_);
    }
  }
  checked_numel(sh, "expand");
  return make_view(*this, sh, st, storage_offset());
}

Tensor Tensor::squeeze() const {
  Dims sh, st;
  for (int i = 0; i < dim(); ++i)
    if (shape()[i] != 1) { sh.push_back(shape()[i]); st.push_back(strides()[i]); }
  return make_view(*this, sh, st, storage_offset());
}

Tensor Tensor::squeeze(int64_t dim_) const {
  if (dim() == 0) { wrap_dim(dim_, 0, "squeeze"); return detach_view(); }
  const int d = wrap_dim(dim_, dim(), "squeeze");
  if (shape()[d] != 1) return detach_view();
  Dims sh = shape(), st = strides();
  sh.erase(d);
  st.erase(d);
  return make_view(*this, sh, st, storage_offset());
}

Tensor Tensor::unsqueeze(int64_t dim_) const {
  const int d = wrap_dim(dim_, dim() + 1, "unsqueeze");
  Dims sh = shape(), st = strides();
  const int64_t stride = d < dim() ? strides()[d] * shape()[d] : 1;
  sh.insert(d, 1);
  st.insert(d, stride);
  return make_view(*this, sh, st, storage_offset());
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  const int s = wrap_dim(start_dim, dim(), "flatten"), e = wrap_dim(end_dim, dim(), "flatten");
  KILN_CHECK(s <= e, "flatten: start_dim ", start_dim, " comes after end_dim ", end_dim, " (shape ", shape(), ")");
  Dims sh;
  for (int i = 0; i < s; ++i) sh.push_back(shape()[i]);
  int64_t n = 1;
  for (int i = s; i <= e; ++i) n *= shape()[i];
  sh.push_back(n);
  for (int i = e + 1; i < dim(); ++i) sh.push_back(shape()[i]);
  return reshape(sh);
}

Tensor Tensor::unflatten(int64_t dim_, const Dims& sizes) const {
  KILN_CHECK(dim() > 0, "unflatten: cannot unflatten a 0-d tensor");
  KILN_CHECK(!sizes.empty(), "unflatten: sizes must be non-empty");
  const int d = wrap_dim(dim_, dim(), "unflatten");
  const Dims inner = infer_shape(sizes, shape()[d], "unflatten");
  Dims sh;
  for (int i = 0; i < d; ++i) sh.push_back(shape()[i]);
  for (int64_t s : inner) sh.push_back(s);
  for (int i = d + 1; i < dim(); ++i) sh.push_back(shape()[i]);
  return view(sh);
}

Tensor Tensor::as_strided(const Dims& shape_, const Dims& strides_, int64_t offset) const {
  KILN_CHECK(shape_.size() == strides_.size(), "as_strided: shape ", shape_, " and strides ", strides_,
             " differ in length");
  const int64_t n = checked_numel(shape_, "as_strided");
  KILN_CHECK(offset >= 0, "as_strided: negative offset ", offset);
  int64_t last = offset;
  for (int i = 0; i < shape_.size(); ++i) {
    KILN_CHECK(strides_[i] >= 0, "as_strided: negative stride ", strides_[i], " in ", strides_);
    if (n > 0 && __builtin_add_overflow(last, (shape_[i] - 1) * strides_[i], &last)) last = INT64_MAX;
  }
  const int64_t capacity = static_cast<int64_t>(storage().nbytes() / element_size());
  KILN_CHECK(n == 0 || last < capacity, "as_strided: shape ", shape_, ", strides ", strides_, " and offset ",
             offset, " reach element ", last, " of a storage of ", capacity, " elements");
  return make_view(*this, shape_, strides_, offset);
}

Tensor Tensor::detach_view() const { return make_view(*this, shape(), strides(), storage_offset()); }

}  // namespace kiln
