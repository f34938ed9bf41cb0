// Tensor indexing as in PyTorch: x[i], x.index({...}) and x.index_put_({...}, v) (the index types
// are in tensor/indexing_sugar.h), and nonzero. Reading is composed from ops that record their own
// derivatives: select, slice and unsqueeze make basic indexing a view, and index_select (after a
// permute and reshape) gathers for tensor indices. index_put_ writes in place with one scatter and
// records one node. See Note [Indexing semantics].
#include <algorithm>
#include <climits>
#include <cstring>
#include <span>
#include <sstream>
#include <string_view>

#include "autograd/engine.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/indexing.h"
#include "autograd/record.h"
#include "tensor/dispatch.h"
#include "tensor/factories.h"
#include "tensor/type_promotion.h"
#include "tensor/view_impl.h"

namespace kiln {

indexing::TensorIndex::TensorIndex(const char* ellipsis) : kind_(Kind::ellipsis) {
  KILN_CHECK(ellipsis != nullptr && std::string_view(ellipsis) == "...",
             "index: the only string index is \"...\" (Ellipsis), got \"", ellipsis ? ellipsis : "(null)", "\"");
}

Tensor nonzero(const Tensor& x) {
  KILN_CHECK(x.defined(), "nonzero: undefined tensor");
  Tensor mask;
  {
    NoGradGuard untracked;
    mask = (x.dtype() == DType::boolean ? x : x != Scalar(0)).to(Device::cpu()).contiguous();
  }
  const bool* m = mask.data_ptr<bool>();
  const int rank = x.dim();
  std::vector<int64_t> at(static_cast<size_t>(rank), 0), coords;
  int64_t count = 0;
  for (int64_t i = 0; i < mask.numel(); ++i) {
    if (m[i]) {
      coords.insert(coords.end(), at.begin(), at.end());
      ++count;
    }
    for (int d = rank - 1; d >= 0; --d) {  // the next row-major position
      if (++at[static_cast<size_t>(d)] < x.shape()[d]) break;
      at[static_cast<size_t>(d)] = 0;
    }
  }
  Tensor out = make_tensor({count, rank}, DType::i64, Device::cpu());
  if (!coords.empty()) std::memcpy(out.data_ptr(), coords.data(), coords.size() * sizeof(int64_t));
  return out.to(x.device());
}

namespace {

using indexing::Slice;
using indexing::TensorIndex;
using Kind = TensorIndex::Kind;

// Note [Indexing semantics]
// As torch's x[...] (LibTorch's x.index), which differs from NumPy in one place:
// - Integers, slices, None and "..." apply first, left to right, as select / slice / unsqueeze
//   views; an integer removes its dim (so `x[0, :, idx]` keeps idx's dims where idx stands, where
//   NumPy would move them to the front). "..." stands for as many full slices as the others leave.
// - Tensor indices are int64/int32 positions (negative counts from the end) or bool masks; a mask
//   of k dims stands for the k columns of mask.nonzero(), and a 0-d bool (or `true`) inserts a dim
//   of size 1 that it keeps or empties. They broadcast together to a shape B, and the result holds
//   the elements at those positions. If the tensor indices sit next to each other (once the basic
//   indices are applied), B's dims replace theirs in place; otherwise B's dims come first.
// - Basic indices alone give a view that shares x's storage; any tensor index gathers a copy.
// - index_put_ writes to the same places; values broadcast to the shape x.index(...) would have.
//   Where positions repeat, one of the writes wins (the last, on the CPU); torch leaves it undefined.

// A tensor index once the basic indices are applied: the dim of the view it indexes, the dim of x
// it came from (for messages; -1 for a 0-d bool), and its int64 positions on the view's device.
struct TensorIndexAt {
  int dim;
  int source_dim;
  Tensor positions;
};

// x after its basic indices (a view), and the tensor indices left to apply to that view.
struct Resolved {
  Tensor view;
  std::vector<TensorIndexAt> tensors;
};

struct Cursor {
  int dim = 0;     // the next dim of the view an index applies to
  int source = 0;  // the same dim, counted in x
};

int dims_used(const TensorIndex& i) {
  switch (i.kind()) {
    case Kind::integer:
    case Kind::slice:
      return 1;
    case Kind::tensor:
      return i.tensor().defined() && i.tensor().dtype() == DType::boolean ? i.tensor().dim() : 1;
    default:
      return 0;
  }
}

// `true` keeps a new dim of size 1, `false` empties it.
void add_bool(Resolved& r, Cursor& at, bool keep) {
  r.view = r.view.unsqueeze(at.dim);
  const Device device = r.view.device();
  r.tensors.push_back({at.dim++, -1, keep ? zeros({1}, {.dtype = DType::i64, .device = device})
                                          : empty({0}, {.dtype = DType::i64, .device = device})});
}

void add_tensor(Resolved& r, Cursor& at, const Tensor& t, size_t pos, const Tensor& x, const char* op) {
  KILN_CHECK(t.defined(), op, ": index ", pos, " is an undefined tensor");
  const Device device = r.view.device();
  if (t.dtype() == DType::boolean) {
    if (t.dim() == 0) return add_bool(r, at, t.item<bool>());
    bool fits = true;
    for (int j = 0; j < t.dim(); ++j) fits = fits && r.view.shape()[at.dim + j] == t.shape()[j];
    KILN_CHECK(fits, op, ": the mask of shape ", t.shape(), " (index ", pos, ") does not match the tensor of shape ",
               x.shape(), " from dim ", at.source);
    const Tensor where = nonzero(t).to(device);
    for (int j = 0; j < t.dim(); ++j) r.tensors.push_back({at.dim++, at.source++, detail::select(where, 1, j)});
    return;
  }
  KILN_CHECK(t.dtype() == DType::i64 || t.dtype() == DType::i32, op,
             ": tensors used as indices must be int64, int32 or bool (a mask), got ", t.dtype(), " at index ", pos);
  r.tensors.push_back({at.dim++, at.source++, t.to(device, DType::i64)});
}

Resolved resolve(const Tensor& x, std::span<const TensorIndex> indices, const char* op) {
  KILN_CHECK(x.defined(), op, ": undefined tensor");
  int used = 0, ellipses = 0;
  for (const TensorIndex& i : indices) {
    used += dims_used(i);
    ellipses += i.kind() == Kind::ellipsis;
  }
  KILN_CHECK(ellipses <= 1, op, ": an index can only have a single ellipsis ('...'), got ", ellipses);
  KILN_CHECK(used <= x.dim(), op, ": too many indices for a tensor of shape ", x.shape(), ": they index ", used,
             " dims, the tensor has ", x.dim());
  Resolved r{x, {}};
  Cursor at;
  for (size_t pos = 0; pos < indices.size(); ++pos) {
    const TensorIndex& i = indices[pos];
    switch (i.kind()) {
      case Kind::ellipsis:
        at.dim += x.dim() - used;
        at.source += x.dim() - used;
        break;
      case Kind::none:
        r.view = r.view.unsqueeze(at.dim++);
        break;
      case Kind::integer: {
        const int64_t n = r.view.shape()[at.dim], k = i.integer();
        KILN_CHECK(k >= -n && k < n, op, ": index ", k, " is out of bounds for dim ", at.source, " with size ", n,
                   " (tensor of shape ", x.shape(), ")");
        r.view = r.view.select(at.dim, k);
        ++at.source;
        break;
      }
      case Kind::slice: {
        const Slice& s = i.slice();
        const int64_t step = s.step.value_or(1);
        KILN_CHECK(step > 0, op, ": step must be greater than zero, got ", step, " (slicing dim ", at.source,
                   " of a tensor of shape ", x.shape(), ")");
        r.view = r.view.slice(at.dim++, s.start.value_or(0), s.stop.value_or(INT64_MAX), step);
        ++at.source;
        break;
      }
      case Kind::boolean:
        add_bool(r, at, i.boolean());
        break;
      case Kind::tensor:
        add_tensor(r, at, i.tensor(), pos, x, op);
        break;
    }
  }
  return r;
}

// ---- tensor indices

std::pair<int64_t, int64_t> host_min_max(const Tensor& t) {
  const Tensor h = t.to(Device::cpu()).contiguous();
  const int64_t* p = h.data_ptr<int64_t>();
  const auto [lo, hi] = std::minmax_element(p, p + h.numel());
  return {*lo, *hi};
}

std::optional<Dims> broadcast_or_none(const Dims& a, const Dims& b) {
  const int n = std::max(a.size(), b.size());
  Dims out = Dims::filled(n, 1);
  for (int i = 0; i < n; ++i) {
    const int64_t sa = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t sb = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (sa != sb && sa != 1 && sb != 1) return std::nullopt;
    out[i] = sa == 1 ? sb : sa;
  }
  return out;
}

// The tensor indices of a Resolved, checked against the view, wrapped into [0, size) and broadcast.
struct Gather {
  Dims shape;                     // B: the index tensors' broadcast shape
  std::vector<Tensor> positions;  // one per tensor index: int64 of shape B
  int at = 0;                     // where B's dims sit in the result
  Dims rest, rest_strides;        // the view's other dims, in order
};

Gather plan_gather(const Resolved& r, const Dims& x_shape, const char* op) {
  Gather g;
  std::optional<Dims> shape = Dims{};
  std::ostringstream shapes;
  for (size_t j = 0; j < r.tensors.size(); ++j) {
    const Dims& s = r.tensors[j].positions.shape();
    shapes << (j ? ", " : "") << s;
    if (shape) shape = broadcast_or_none(*shape, s);
  }
  KILN_CHECK(shape.has_value(), op, ": shape mismatch: the index tensors of shapes ", shapes.str(),
             " cannot be broadcast together");
  g.shape = *shape;
  for (const TensorIndexAt& t : r.tensors) {
    const int64_t n = r.view.shape()[t.dim];
    Tensor p = t.positions;
    if (p.numel() > 0) {
      const auto [lo, hi] = host_min_max(p);
      KILN_CHECK(lo >= -n && hi < n, op, ": index ", (hi >= n ? hi : lo), " is out of bounds for dim ", t.source_dim,
                 " with size ", n, " (tensor of shape ", x_shape, ")");
      if (lo < 0) p = p + (p < Scalar(0)).to(DType::i64) * n;
    }
    g.positions.push_back(detail::expand(p, g.shape));
  }
  bool adjacent = true;
  for (size_t j = 1; j < r.tensors.size(); ++j) adjacent = adjacent && r.tensors[j].dim == r.tensors[j - 1].dim + 1;
  g.at = adjacent ? r.tensors[0].dim : 0;
  for (int d = 0, j = 0; d < r.view.dim(); ++d) {
    if (j < static_cast<int>(r.tensors.size()) && r.tensors[static_cast<size_t>(j)].dim == d) {
      ++j;
      continue;
    }
    g.rest.push_back(r.view.shape()[d]);
    g.rest_strides.push_back(r.view.strides()[d]);
  }
  return g;
}

Dims result_shape(const Gather& g) {
  Dims out;
  for (int d = 0; d < g.at; ++d) out.push_back(g.rest[d]);
  for (int64_t s : g.shape) out.push_back(s);
  for (int d = g.at; d < g.rest.size(); ++d) out.push_back(g.rest[d]);
  return out;
}

// The order that moves dims [from, from + count) of a rank-n shape to the front, or back there.
Dims move_to_front(int n, int from, int count) {
  Dims order;
  for (int i = 0; i < count; ++i) order.push_back(from + i);
  for (int i = 0; i < n; ++i)
    if (i < from || i >= from + count) order.push_back(i);
  return order;
}
Dims move_back_from_front(int n, int to, int count) {
  Dims order;
  for (int i = 0; i < to; ++i) order.push_back(count + i);
  for (int i = 0; i < count; ++i) order.push_back(i);
  for (int i = to + count; i < n; ++i) order.push_back(i);
  return order;
}

// x.index(...) with tensor indices: recorded ops only, so the gradient is index_select's.
Tensor gather_tensor_indices(const Resolved& r, const Gather& g) {
  const Tensor& v = r.view;
  if (r.tensors.size() == 1)
    return v.index_select(r.tensors[0].dim, g.positions[0].reshape({-1})).view(result_shape(g));
  // Move the indexed dims to the front, merge them into one (row-major), and pick its rows.
  Dims order;
  int64_t rows = 1;
  for (const TensorIndexAt& t : r.tensors) {
    order.push_back(t.dim);
    rows *= v.shape()[t.dim];
  }
  for (int d = 0; d < v.dim(); ++d)
    if (std::find(order.begin(), order.end(), d) == order.end()) order.push_back(d);
  Dims flat_shape = g.rest;
  flat_shape.insert(0, rows);
  const Tensor flat = v.permute(order).reshape(flat_shape);
  Tensor row = g.positions[0];
  for (size_t j = 1; j < r.tensors.size(); ++j) row = row * v.shape()[r.tensors[j].dim] + g.positions[j];
  Dims front = g.shape;
  for (int64_t s : g.rest) front.push_back(s);
  Tensor out = flat.index_select(0, row.reshape({-1})).view(front);
  if (g.at == 0) return out;
  return out.permute(move_back_from_front(front.size(), g.at, g.shape.size())).contiguous();
}

// values seen with `shape`, leading 1s dropped first (torch accepts x[0] = v.view(1, 1, n)).
Tensor broadcast_values(const Tensor& values, const Dims& shape, const Dims& x_shape, const char* op) {
  Tensor v = values;
  while (v.dim() > shape.size() && v.shape()[0] == 1) v = detail::squeeze(v, 0);
  const std::optional<Dims> b = broadcast_or_none(v.shape(), shape);
  KILN_CHECK(b && *b == shape, op, ": values of shape ", values.shape(), " cannot be broadcast to the indexed shape ",
             shape, " (tensor of shape ", x_shape, ")");
  return detail::expand(v, shape);
}

// index_put_ with tensor indices, untracked: one scatter along a view of the whole storage whose
// dim 0 steps one element, at the storage position of each index tuple's first element. Any
// strides of self work, and nothing is copied but the values.
void scatter_tensor_indices(const Resolved& r, const Gather& g, const Tensor& values, const Dims& x_shape,
                            const char* op) {
  const Tensor& v = r.view;
  Tensor src = broadcast_values(values.to(v.device(), v.dtype()), result_shape(g), x_shape, op);
  const int b_dims = g.shape.size();
  if (g.at > 0) src = detail::permute(src, move_to_front(src.dim(), g.at, b_dims));
  const int64_t count = checked_numel(g.shape, op);
  Dims src_shape = g.rest;
  src_shape.insert(0, count);
  src = src.reshape(src_shape);
  if (src.numel() == 0) return;
  Tensor where = scalar_tensor(v.storage_offset(), DType::i64, v.device());
  for (size_t j = 0; j < r.tensors.size(); ++j) where = where + g.positions[j] * v.strides()[r.tensors[j].dim];
  where = where.reshape({-1}).contiguous();
  const int64_t capacity = static_cast<int64_t>(v.storage().nbytes() / v.element_size());
  Dims storage_shape = g.rest, storage_strides = g.rest_strides;
  storage_shape.insert(0, capacity);
  storage_strides.insert(0, 1);
  Tensor storage = detail::make_view(v, storage_shape, storage_strides, 0);
  Dims index_strides = Dims::filled(src_shape.size(), 0);
  index_strides[0] = 1;
  const Tensor index = detail::make_view(where, src_shape, index_strides, where.storage_offset());
  dispatch<Op::scatter>(v.device(), storage, 0, index, src);
}

Tensor index_of(const Tensor& x, std::span<const TensorIndex> indices) {
  const Resolved r = resolve(x, indices, "index");
  if (r.tensors.empty()) return r.view;
  return gather_tensor_indices(r, plan_gather(r, x.shape(), "index"));
}

}  // namespace

Tensor Tensor::operator[](const TensorIndex& index) const { return index_of(*this, std::span(&index, 1)); }
Tensor Tensor::index(std::initializer_list<TensorIndex> indices) const {
  return index_of(*this, std::span(indices.begin(), indices.size()));
}
Tensor Tensor::index(const std::vector<TensorIndex>& indices) const { return index_of(*this, indices); }

Tensor& Tensor::index_put_(const std::vector<TensorIndex>& indices, const Tensor& values) {
  const char* op = "index_put_";
  KILN_CHECK(defined(), op, ": undefined tensor");
  KILN_CHECK(values.defined(), op, ": values is an undefined tensor");
  autograd::check_inplace(*this, op);
  detail::check_untracked_write(*this, values, op);
  check_writable(*this, op);
  {
    NoGradGuard untracked;  // the writes go through untracked views; one node is recorded below
    const Resolved r = resolve(*this, indices, op);
    if (r.tensors.empty()) {
      Tensor target = r.view;
      target.copy_(broadcast_values(values, target.shape(), shape(), op));
    } else {
      scatter_tensor_indices(r, plan_gather(r, shape(), op), values, shape(), op);
    }
  }
  bump_version();
  if (autograd::needs_grad(*this, values))
    autograd::record(op, *this, {*this, values},
                     [indices, full = values.shape()](const Tensor& g, Needs need) {
                       Tensor gv;
                       if (need[1]) {
                         gv = g.index(indices);
                         // undo broadcast_values: sum over broadcast dims, then restore dropped 1s
                         Dims kept = full;
                         while (kept.size() > gv.dim() && kept[0] == 1) kept.erase(0);
                         gv = autograd::sum_to(gv, kept).reshape(full);
                       }
                       return TensorList{need[0] ? g.index_put(indices, Scalar(0)) : Tensor(), gv};
                     });
  return *this;
}

Tensor& Tensor::index_put_(const std::vector<TensorIndex>& indices, const Scalar& value) {
  KILN_CHECK(defined(), "index_put_: undefined tensor");
  return index_put_(indices, scalar_tensor(value, dtype(), device()));
}
Tensor& Tensor::index_put_(std::initializer_list<TensorIndex> indices, const Tensor& values) {
  return index_put_(std::vector<TensorIndex>(indices), values);
}
Tensor& Tensor::index_put_(std::initializer_list<TensorIndex> indices, const Scalar& value) {
  return index_put_(std::vector<TensorIndex>(indices), value);
}

Tensor Tensor::index_put(const std::vector<TensorIndex>& indices, const Tensor& values) const {
  Tensor out = clone();
  out.index_put_(indices, values);
  return out;
}
Tensor Tensor::index_put(const std::vector<TensorIndex>& indices, const Scalar& value) const {
  Tensor out = clone();
  out.index_put_(indices, value);
  return out;
}

}  // namespace kiln
