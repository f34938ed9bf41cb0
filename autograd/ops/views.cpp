// The Tensor view methods with their derivatives. The geometry lives in tensor/views.cpp
// (detail::); here each view records, when its input needs grad, a node whose backward maps the
// output's gradient back onto the input's shape, and marks the output as a view (in-place changes
// to it are then refused, see check_inplace). reshape, flatten and unflatten are compositions.
#include <algorithm>

#include "autograd/engine.h"
#include "autograd/ops/indexing.h"
#include "autograd/ops/reduce.h"
#include "autograd/record.h"
#include "tensor/factories.h"
#include "tensor/type_promotion.h"
#include "tensor/view_impl.h"

namespace kiln {
namespace {

// Records a view: `out` shares x's storage; backward(g) returns x's gradient.
template <class F>
Tensor recorded_view(const char* name, const Tensor& x, Tensor out, F backward) {
  if (autograd::needs_grad(x)) {
    autograd::record(name, out, {x}, std::move(backward));
    autograd::mark_view(out);
  }
  return out;
}

// The gradient of a view that picks part of x: zeros of x's shape, with g written where the view
// sits (`place` rebuilds the same view on the zeros).
template <class Place>
Tensor scatter_into_zeros(const Tensor& g, const Dims& shape, Place place) {
  Tensor gx = zeros(shape, {.dtype = g.dtype(), .device = g.device()});
  Tensor part = place(gx);
  part.copy_(g);
  return gx;
}

// The storage positions of a strided geometry, as an int64 tensor of `shape` (arange per dim,
// broadcast and summed).
Tensor storage_positions(const Dims& shape, const Dims& strides, int64_t offset, Device device) {
  Tensor pos = scalar_tensor(offset, DType::i64, device);
  for (int d = 0; d < shape.size(); ++d)
    pos = pos.unsqueeze(-1) + arange(shape[d], {.dtype = DType::i64, .device = device}) * strides[d];
  return pos;
}

bool overlaps_by_broadcast(const Dims& shape, const Dims& strides) {
  for (int d = 0; d < shape.size(); ++d)
    if (strides[d] == 0 && shape[d] > 1) return true;
  return false;
}

// as_strided's backward (the general case PyTorch handles the same way): add g into a buffer that
// stands for the storage, at the output's positions (overlapping outputs add up), then read the
// buffer at the input's positions. An input whose elements alias each other (expanded) shares the
// gradient of a storage element equally among its aliases, as torch does.
Tensor as_strided_backward(const Tensor& g, const Dims& in_shape, const Dims& in_strides, int64_t in_offset,
                           const Dims& shape, const Dims& strides, int64_t offset) {
  const Device device = g.device();
  const Tensor out_pos = storage_positions(shape, strides, offset, device).reshape({-1});
  const Tensor in_pos = storage_positions(in_shape, in_strides, in_offset, device).reshape({-1});
  int64_t extent = 0;
  if (out_pos.numel()) extent = std::max(extent, out_pos.amax().item<int64_t>() + 1);
  if (in_pos.numel()) extent = std::max(extent, in_pos.amax().item<int64_t>() + 1);
  const Tensor storage = zeros({extent}, {.dtype = g.dtype(), .device = device});
  const Tensor summed = index_add(storage, 0, out_pos, g.reshape({-1}));
  Tensor gx = summed.index_select(0, in_pos);
  if (overlaps_by_broadcast(in_shape, in_strides)) {
    const Tensor aliases =
        index_add(storage, 0, in_pos, ones({in_pos.numel()}, {.dtype = g.dtype(), .device = device}));
    gx = gx / aliases.index_select(0, in_pos);
  }
  return gx.view(in_shape);
}

}  // namespace

Tensor Tensor::view(const Dims& shape) const {
  return recorded_view("view", *this, detail::view(*this, shape),
                       [in = this->shape()](const Tensor& g, Needs) { return g.reshape(in); });
}

// A view when the strides allow one, else a copy (contiguous() then view: both record).
Tensor Tensor::reshape(const Dims& shape) const {
  const Dims s = detail::infer_shape(shape, numel(), "reshape");
  if (auto v = detail::try_view(*this, s))
    return recorded_view("reshape", *this, std::move(*v),
                         [in = this->shape()](const Tensor& g, Needs) { return g.reshape(in); });
  return contiguous().view(s);
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  return recorded_view("transpose", *this, detail::transpose(*this, d0, d1),
                       [d0, d1](const Tensor& g, Needs) { return g.transpose(d0, d1); });
}

Tensor Tensor::permute(const Dims& order) const {
  Tensor out = detail::permute(*this, order);
  Dims inverse = Dims::filled(dim(), 0);
  for (int i = 0; i < dim(); ++i) inverse[wrap_dim(order[i], dim(), "permute")] = i;
  return recorded_view("permute", *this, std::move(out),
                       [inverse](const Tensor& g, Needs) { return g.permute(inverse); });
}

Tensor Tensor::t() const {
  KILN_CHECK(dim() <= 2, "t: expects a tensor with <= 2 dims, got shape ", shape(), " (use transpose or mT)");
  return dim() < 2 ? transpose(0, 0) : transpose(0, 1);
}

Tensor Tensor::narrow(int64_t dim_, int64_t start, int64_t length) const {
  return recorded_view("narrow", *this, detail::narrow(*this, dim_, start, length),
                       [in = shape(), dim_, start, length](const Tensor& g, Needs) {
                         return scatter_into_zeros(
                             g, in, [&](const Tensor& z) { return detail::narrow(z, dim_, start, length); });
                       });
}

Tensor Tensor::slice(int64_t dim_, int64_t start, int64_t end, int64_t step) const {
  return recorded_view("slice", *this, detail::slice(*this, dim_, start, end, step),
                       [in = shape(), dim_, start, end, step](const Tensor& g, Needs) {
                         return scatter_into_zeros(
                             g, in, [&](const Tensor& z) { return detail::slice(z, dim_, start, end, step); });
                       });
}

Tensor Tensor::select(int64_t dim_, int64_t index) const {
  return recorded_view(
      "select", *this, detail::select(*this, dim_, index), [in = shape(), dim_, index](const Tensor& g, Needs) {
        return scatter_into_zeros(g, in, [&](const Tensor& z) { return detail::select(z, dim_, index); });
      });
}

// The broadcast copies of an element all feed its gradient: sum them back.
Tensor Tensor::expand(const Dims& shape_) const {
  return recorded_view("expand", *this, detail::expand(*this, shape_),
                       [in = shape()](const Tensor& g, Needs) { return autograd::sum_to(g, in); });
}

Tensor Tensor::squeeze() const {
  return recorded_view("squeeze", *this, detail::squeeze(*this),
                       [in = shape()](const Tensor& g, Needs) { return g.reshape(in); });
}

Tensor Tensor::squeeze(int64_t dim_) const {
  return recorded_view("squeeze", *this, detail::squeeze(*this, dim_),
                       [in = shape()](const Tensor& g, Needs) { return g.reshape(in); });
}

Tensor Tensor::unsqueeze(int64_t dim_) const {
  return recorded_view("unsqueeze", *this, detail::unsqueeze(*this, dim_),
                       [in = shape()](const Tensor& g, Needs) { return g.reshape(in); });
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  return reshape(detail::flattened_shape(*this, start_dim, end_dim));
}

Tensor Tensor::unflatten(int64_t dim_, const Dims& sizes) const {
  return view(detail::unflattened_shape(*this, dim_, sizes));
}

Tensor Tensor::as_strided(const Dims& shape_, const Dims& strides_, int64_t offset) const {
  return recorded_view("as_strided", *this, detail::as_strided(*this, shape_, strides_, offset),
                       [in = shape(), in_strides = strides(), in_offset = storage_offset(), shape_, strides_,
                        offset](const Tensor& g, Needs) {
                         return as_strided_backward(g, in, in_strides, in_offset, shape_, strides_, offset);
                       });
}

}  // namespace kiln
