// Joining, splitting, gathering and scattering op definitions: checks, result shape and dtype,
// output allocation, dispatch (kernels in kernels/cpu/indexing.cpp), derivatives. split and chunk
// return views (one node for all pieces); scatter, scatter_add and index_add return new tensors
// (torch's out-of-place forms). Index values are range-checked by the kernels. The gradient of a
// gather-like op is the matching scatter-add of g, and the other way round; indices get none.
#include <algorithm>
#include <climits>
#include <string>

#include "autograd/autocast.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/indexing.h"
#include "autograd/record.h"
#include "tensor/dispatch.h"
#include "tensor/factories.h"
#include "tensor/type_promotion.h"
#include "tensor/view_impl.h"

namespace kiln {
namespace {

void check_defined(const Tensor& t, const char* op, const char* what) {
  KILN_CHECK(t.defined(), op, ": ", what, " is an undefined tensor");
}

Tensor as_dtype(const Tensor& t, DType d) { return t.dtype() == d ? t : t.to(d); }

// Torch treats a 0-d tensor as 1-d of size 1 in the indexing ops; kernels only see the 1-d form.
Tensor at_least_1d(const Tensor& t) { return t.dim() == 0 ? t.view({1}) : t; }
int rank_at_least_1(const Tensor& t) { return std::max(t.dim(), 1); }

void check_index_dtype(const Tensor& index, const char* op, bool allow_int32) {
  const bool ok = index.dtype() == DType::i64 || (allow_int32 && index.dtype() == DType::i32);
  KILN_CHECK(ok, op, ": index must be an int64", (allow_int32 ? " or int32" : ""), " tensor, got ", index.dtype());
}

// The shape rule of gather and scatter: index has the input's rank and fits inside `bound` in every
// dim but `dim` (and inside `src` in every dim, when given).
void check_index_shape(const char* op, const Tensor& x, int dim, const Tensor& index, const Tensor* src) {
  KILN_CHECK(rank_at_least_1(index) == rank_at_least_1(x), op, ": index of shape ", index.shape(),
             " must have as many dims as the input of shape ", x.shape());
  const Tensor xi = at_least_1d(x), ii = at_least_1d(index);
  for (int d = 0; d < xi.dim(); ++d)
    KILN_CHECK(d == dim || ii.shape()[d] <= xi.shape()[d], op, ": index of shape ", index.shape(),
               " is larger than the input of shape ", x.shape(), " in dim ", d);
  if (!src) return;
  KILN_CHECK(rank_at_least_1(*src) == rank_at_least_1(x), op, ": src of shape ", src->shape(),
             " must have as many dims as the input of shape ", x.shape());
  const Tensor si = at_least_1d(*src);
  for (int d = 0; d < si.dim(); ++d)
    KILN_CHECK(ii.shape()[d] <= si.shape()[d], op, ": index of shape ", index.shape(), " is larger than src of shape ",
               src->shape(), " in dim ", d);
}

// The shared body of scatter and scatter_add: out = x.clone(), then the kernel writes src into it.
template <Op op>
Tensor scatter_into_clone(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src, const char* name) {
  check_defined(x, name, "input");
  check_defined(index, name, "index");
  check_defined(src, name, "src");
  const Tensor all[] = {x, index, src};
  const Device device = common_device(all, name);
  check_index_dtype(index, name, false);
  KILN_CHECK(src.dtype() == x.dtype(), name, ": src dtype ", src.dtype(), " must match the input's dtype ", x.dtype());
  const int d = wrap_dim(dim, x.dim(), name);
  check_index_shape(name, x, d, index, &src);
  Tensor out = x.clone();
  if (index.numel()) {
    Tensor o = at_least_1d(out);
    dispatch<op>(device, o, d, at_least_1d(index), at_least_1d(src));
  }
  return out;
}

std::string format_sizes(const std::vector<int64_t>& sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

// Lowest and highest value of an int64 tensor, read on the host (one_hot needs them as numbers).
std::pair<int64_t, int64_t> host_min_max(const Tensor& t) {
  const Tensor h = t.to(Device::cpu()).contiguous();
  const int64_t* p = h.data_ptr<int64_t>();
  const auto [lo, hi] = std::minmax_element(p, p + h.numel());
  return {*lo, *hi};
}

// ---- derivative helpers

Tensor zeros_of(const Dims& shape, const Tensor& like) {
  return zeros(shape, {.dtype = like.dtype(), .device = like.device()});
}

// Zeros of `shape` with src added at index along dim (scatter_add for `op = scatter_add`, index_add
// for `op = index_add`): the gradient of gather and index_select.
template <Op op>
Tensor add_into_zeros(const Dims& shape, int dim, const Tensor& index, const Tensor& src) {
  Tensor out = zeros_of(shape, src);
  if (index.numel()) {
    Tensor o = at_least_1d(out);
    dispatch<op>(src.device(), o, dim, at_least_1d(index), at_least_1d(src));
  }
  return out;
}

// t (shaped like an index) grown with zeros to `shape`: src may be larger than the index in
// scatter, and its elements past the index get no gradient.
Tensor pad_to(const Tensor& t, const Dims& shape) {
  if (t.shape() == shape) return t;
  Tensor out = zeros_of(shape, t);
  Tensor part = out;
  for (int d = 0; d < t.dim(); ++d) part = detail::narrow(part, d, 0, t.shape()[d]);
  part.copy_(t);
  return out;
}

// g with the positions scatter overwrote set to 0: x's values there did not reach the output.
Tensor without_scattered(const Tensor& g, int dim, const Tensor& index) {
  Tensor out = g.clone();
  if (index.numel()) {
    Tensor o = at_least_1d(out);
    const Tensor zero = scalar_tensor(0, g.dtype(), g.device()).expand(at_least_1d(index).shape());
    dispatch<Op::scatter>(g.device(), o, dim, at_least_1d(index), zero);
  }
  return out;
}

}  // namespace

// ---- joining and splitting

// Note [cat skips 1-d empty tensors]: torch.cat ignores inputs of shape exactly [0] when checking
// shapes (a legacy rule that lets `torch.cat([torch.empty(0), x])` start an accumulation); they
// still take part in the result dtype.
Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  if (autocast::active()) return autocast::run<autocast::Policy::promote>(cat, xs, dim);
  KILN_CHECK(!xs.empty(), "cat: expected a non-empty list of tensors");
  for (size_t i = 0; i < xs.size(); ++i) KILN_CHECK(xs[i].defined(), "cat: tensor ", i, " is undefined");
  const Device device = common_device(xs, "cat");
  DType dtype = xs[0].dtype();
  for (const Tensor& x : xs) dtype = promote_types(dtype, x.dtype());
  auto legacy_empty = [](const Tensor& t) { return t.dim() == 1 && t.shape()[0] == 0; };
  for (size_t i = 0; i < xs.size(); ++i)
    KILN_CHECK(xs[i].dim() > 0, "cat: zero-dimensional tensor (at position ", i, ") cannot be concatenated");
  const auto ref_it = std::find_if_not(xs.begin(), xs.end(), legacy_empty);
  if (ref_it == xs.end()) {
    wrap_dim(dim, 1, "cat");
    return make_tensor({0}, dtype, device);
  }
  const Tensor& ref = *ref_it;
  const size_t r = static_cast<size_t>(ref_it - xs.begin());
  const int d = wrap_dim(dim, ref.dim(), "cat");
  Dims shape = ref.shape();
  shape[d] = 0;
  std::vector<Tensor> parts;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    if (legacy_empty(x)) continue;
    KILN_CHECK(x.dim() == ref.dim(), "cat: tensors must have the same number of dims: tensor ", r, " has shape ",
               ref.shape(), " but tensor ", i, " has shape ", x.shape());
    for (int k = 0; k < x.dim(); ++k)
      KILN_CHECK(k == d || x.shape()[k] == ref.shape()[k], "cat: sizes must match except in dim ", d, ": tensor ", r,
                 " has shape ", ref.shape(), " but tensor ", i, " has shape ", x.shape(), " (they differ in dim ", k,
                 ")");
    shape[d] += x.shape()[d];
    parts.push_back(as_dtype(x, dtype));
  }
  Tensor out = make_tensor(shape, dtype, device);
  if (out.numel()) dispatch<Op::cat>(device, std::span<const Tensor>(parts), d, out);
  if (autograd::needs_grad(std::span<const Tensor>(xs))) {
    std::vector<int64_t> sizes;  // along d; -1 for a skipped legacy empty input (no gradient)
    for (const Tensor& x : xs) sizes.push_back(legacy_empty(x) ? -1 : x.shape()[d]);
    autograd::record("cat", out, std::span<const Tensor>(xs),
                     [sizes = std::move(sizes), d](const Tensor& g, Needs need) {
                       TensorList grads(sizes.size());
                       int64_t start = 0;
                       for (size_t i = 0; i < sizes.size(); ++i) {
                         if (sizes[i] < 0) continue;
                         if (need[i]) grads[i] = g.narrow(d, start, sizes[i]);
                         start += sizes[i];
                       }
                       return grads;
                     });
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  if (autocast::active()) return autocast::run<autocast::Policy::promote>(stack, xs, dim);
  KILN_CHECK(!xs.empty(), "stack: expected a non-empty list of tensors");
  for (size_t i = 0; i < xs.size(); ++i) {
    KILN_CHECK(xs[i].defined(), "stack: tensor ", i, " is undefined");
    KILN_CHECK(xs[i].shape() == xs[0].shape(), "stack: expects tensors of one shape, but tensor 0 has shape ",
               xs[0].shape(), " and tensor ", i, " has shape ", xs[i].shape());
  }
  const int d = wrap_dim(dim, xs[0].dim() + 1, "stack");
  std::vector<Tensor> rows;
  rows.reserve(xs.size());
  for (const Tensor& x : xs) rows.push_back(x.unsqueeze(d));
  return cat(rows, d);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  check_defined(x, "split", "input");
  KILN_CHECK(x.dim() > 0, "split: expects a tensor with at least 1 dim, got a 0-d tensor");
  const int d = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    KILN_CHECK(s >= 0, "split: split sizes must be non-negative, got ", format_sizes(sizes));
    total += std::min(s, x.shape()[d] + 1);  // capped: a wild size must not overflow the sum
  }
  KILN_CHECK(total == x.shape()[d], "split: split sizes ", format_sizes(sizes), " don't add up to the size ",
             x.shape()[d], " of dim ", d, " (shape ", x.shape(), ")");
  std::vector<Tensor> out;
  out.reserve(sizes.size());
  int64_t start = 0;
  for (int64_t s : sizes) {
    out.push_back(detail::narrow(x, d, start, s));
    start += s;
  }
  // One node for all the pieces: the gradient is the pieces' gradients joined again, with zeros for
  // pieces that got none.
  if (autograd::needs_grad(x)) {
    autograd::record(
        "split", std::span<Tensor>(out), {x}, [sizes, d, shape = x.shape()](const TensorList& grads, Needs) {
          const bool all_defined = std::all_of(grads.begin(), grads.end(), [](const Tensor& g) { return g.defined(); });
          if (all_defined) return TensorList{cat(grads, d)};
          const auto first = std::find_if(grads.begin(), grads.end(), [](const Tensor& g) { return g.defined(); });
          if (first == grads.end()) return TensorList{Tensor()};
          Tensor gx = zeros_of(shape, *first);
          int64_t at = 0;
          for (size_t i = 0; i < sizes.size(); ++i) {
            if (grads[i].defined()) detail::narrow(gx, d, at, sizes[i]).copy_(grads[i]);
            at += sizes[i];
          }
          return TensorList{gx};
        });
    for (const Tensor& piece : out) autograd::mark_view(piece);
  }
  return out;
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  check_defined(x, "split", "input");
  KILN_CHECK(x.dim() > 0, "split: expects a tensor with at least 1 dim, got a 0-d tensor");
  const int d = wrap_dim(dim, x.dim(), "split");
  const int64_t n = x.shape()[d];
  KILN_CHECK(split_size >= 0, "split: split_size must be non-negative, got ", split_size);
  KILN_CHECK(split_size > 0 || n == 0, "split: split_size can only be 0 if dim ", d, " has size 0, got size ", n);
  const int64_t pieces = split_size == 0 ? 1 : std::max<int64_t>(n / split_size + (n % split_size != 0), 1);
  std::vector<int64_t> sizes(static_cast<size_t>(pieces), split_size);
  sizes.back() = n - split_size * (pieces - 1);
  return split(x, sizes, d);
}

// torch.chunk: pieces of ceil(n / chunks), so there may be fewer than `chunks` of them; a dim of
// size 0 gives `chunks` empty pieces.
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  check_defined(x, "chunk", "input");
  KILN_CHECK(x.dim() > 0, "chunk: expects a tensor with at least 1 dim, got a 0-d tensor");
  KILN_CHECK(chunks > 0, "chunk: chunks must be greater than 0, got ", chunks);
  const int d = wrap_dim(dim, x.dim(), "chunk");
  const int64_t n = x.shape()[d];
  if (n == 0) return split(x, std::vector<int64_t>(static_cast<size_t>(chunks), 0), d);
  return split(x, n / chunks + (n % chunks != 0), d);
}

// ---- gathering and scattering

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  check_defined(x, "gather", "input");
  check_defined(index, "gather", "index");
  const Tensor both[] = {x, index};
  const Device device = common_device(both, "gather");
  check_index_dtype(index, "gather", false);
  const int d = wrap_dim(dim, x.dim(), "gather");
  check_index_shape("gather", x, d, index, nullptr);
  Tensor out = make_tensor(index.shape(), x.dtype(), device);
  if (out.numel()) {
    Tensor o = at_least_1d(out);
    dispatch<Op::gather>(device, at_least_1d(x), d, at_least_1d(index), o);
  }
  if (autograd::needs_grad(x))
    autograd::record("gather", out, {x}, [shape = x.shape(), d, si = SavedTensor(index)](const Tensor& g, Needs) {
      return add_into_zeros<Op::scatter_add>(shape, d, si.get(), g);
    });
  return out;
}

Tensor scatter(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  Tensor out;
  {
    NoGradGuard untracked;  // recorded below as one node
    out = scatter_into_clone<Op::scatter>(x, dim, index, src, "scatter");
  }
  if (autograd::needs_grad(x, src)) {
    const int d = wrap_dim(dim, x.dim(), "scatter");
    autograd::record("scatter", out, {x, src},
                     [d, si = SavedTensor(index), src_shape = src.shape()](const Tensor& g, Needs need) {
                       const Tensor& index = si.get();
                       return TensorList{need[0] ? without_scattered(g, d, index) : Tensor(),
                                         need[1] ? pad_to(gather(g, d, index), src_shape) : Tensor()};
                     });
  }
  return out;
}

Tensor scatter(const Tensor& x, int64_t dim, const Tensor& index, const Scalar& value) {
  check_defined(x, "scatter", "input");
  check_defined(index, "scatter", "index");
  KILN_CHECK(is_floating(x.dtype()) || !value.is_floating(), "scatter: cannot write the floating value ", value,
             " into a ", x.dtype(), " tensor");
  const Tensor src = scalar_tensor(value, x.dtype(), x.device()).expand(index.shape());
  Tensor out;
  {
    NoGradGuard untracked;
    out = scatter_into_clone<Op::scatter>(x, dim, index, src, "scatter");
  }
  if (autograd::needs_grad(x)) {
    const int d = wrap_dim(dim, x.dim(), "scatter");
    autograd::record("scatter", out, {x}, [d, si = SavedTensor(index)](const Tensor& g, Needs) {
      return without_scattered(g, d, si.get());
    });
  }
  return out;
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  Tensor out;
  {
    NoGradGuard untracked;
    out = scatter_into_clone<Op::scatter_add>(x, dim, index, src, "scatter_add");
  }
  if (autograd::needs_grad(x, src)) {
    const int d = wrap_dim(dim, x.dim(), "scatter_add");
    autograd::record(
        "scatter_add", out, {x, src},
        [d, si = SavedTensor(index), src_shape = src.shape()](const Tensor& g, Needs need) {
          return TensorList{need[0] ? g : Tensor(), need[1] ? pad_to(gather(g, d, si.get()), src_shape) : Tensor()};
        });
  }
  return out;
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  check_defined(x, "index_select", "input");
  check_defined(index, "index_select", "index");
  const Tensor both[] = {x, index};
  const Device device = common_device(both, "index_select");
  check_index_dtype(index, "index_select", true);
  KILN_CHECK(index.dim() <= 1, "index_select: index must be 0-d or 1-d, got shape ", index.shape());
  const int d = wrap_dim(dim, x.dim(), "index_select");
  KILN_CHECK(x.dim() > 0 || index.numel() == 1, "index_select: a 0-d input takes an index of one element, got shape ",
             index.shape());
  const Tensor xi = at_least_1d(x);
  Dims shape = xi.shape();
  shape[d] = index.numel();
  Tensor out = make_tensor(shape, x.dtype(), device);
  if (out.numel()) dispatch<Op::index_select>(device, xi, d, at_least_1d(index), out);
  if (x.dim() == 0) out = detail::view(out, {});
  if (autograd::needs_grad(x))
    autograd::record("index_select", out, {x}, [shape = x.shape(), d, si = SavedTensor(index)](const Tensor& g, Needs) {
      return add_into_zeros<Op::index_add>(shape, d, si.get(), g);
    });
  return out;
}

Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src, const Scalar& alpha) {
  check_defined(x, "index_add", "input");
  check_defined(index, "index_add", "index");
  check_defined(src, "index_add", "src");
  const Tensor all[] = {x, index, src};
  const Device device = common_device(all, "index_add");
  check_index_dtype(index, "index_add", true);
  KILN_CHECK(index.dim() <= 1, "index_add: index must be 0-d or 1-d, got shape ", index.shape());
  KILN_CHECK(src.dtype() == x.dtype(), "index_add: src dtype ", src.dtype(), " must match the input's dtype ",
             x.dtype());
  KILN_CHECK(is_floating(x.dtype()) || !alpha.is_floating(), "index_add: alpha must not be a floating number (",
             alpha, ") for a ", x.dtype(), " input");
  const int d = wrap_dim(dim, x.dim(), "index_add");
  const Tensor xi = at_least_1d(x), si = at_least_1d(src);
  bool fits = si.dim() == xi.dim() && si.shape()[d] == index.numel();
  for (int k = 0; fits && k < xi.dim(); ++k) fits = k == d || si.shape()[k] == xi.shape()[k];
  KILN_CHECK(fits, "index_add: src of shape ", src.shape(), " must match the input's shape ", x.shape(),
             " except in dim ", d, ", where it must equal the index's length ", index.numel());
  const bool unit = alpha.is_bool() ? alpha.to<bool>() : alpha.to_double() == 1.0;
  Tensor out;
  {
    NoGradGuard untracked;  // recorded below as one node
    const Tensor scaled = unit ? si : as_dtype(si * alpha, x.dtype());
    out = x.clone();
    if (scaled.numel()) {
      Tensor o = at_least_1d(out);
      dispatch<Op::index_add>(device, o, d, at_least_1d(index), scaled);
    }
  }
  if (autograd::needs_grad(x, src))
    autograd::record(
        "index_add", out, {x, src},
        [d, si = SavedTensor(index), alpha = alpha.to_double(), src_shape = src.shape()](const Tensor& g, Needs need) {
          Tensor gsrc;
          if (need[1]) {
            gsrc = at_least_1d(g).index_select(d, si.get()).reshape(src_shape);
            if (alpha != 1.0) gsrc = gsrc * alpha;
          }
          return TensorList{need[0] ? g : Tensor(), gsrc};
        });
  return out;
}

Tensor one_hot(const Tensor& indices, int64_t num_classes) {
  check_defined(indices, "one_hot", "indices");
  KILN_CHECK(indices.dtype() == DType::i64, "one_hot: indices must be an int64 tensor, got ", indices.dtype());
  KILN_CHECK(num_classes >= -1, "one_hot: num_classes must be -1 (infer) or non-negative, got ", num_classes);
  if (indices.numel() > 0) {
    const auto [lo, hi] = host_min_max(indices);
    KILN_CHECK(lo >= 0, "one_hot: class values must be non-negative, got ", lo);
    if (num_classes == -1) {
      KILN_CHECK(hi < INT64_MAX, "one_hot: class value ", hi, " is too large");
      num_classes = hi + 1;
    }
    KILN_CHECK(hi < num_classes, "one_hot: class value ", hi, " is out of range for num_classes = ", num_classes);
  }
  KILN_CHECK(num_classes >= 0, "one_hot: cannot infer num_classes from an empty tensor; pass it explicitly");
  Dims shape = indices.shape();
  shape.push_back(num_classes);
  Tensor zero = make_tensor(shape, DType::i64, indices.device());
  zero.zero_();
  return scatter(zero, -1, indices.unsqueeze(-1), Scalar(1));
}

Tensor embedding(const Tensor& weight, const Tensor& indices, std::optional<int64_t> padding_idx) {
  check_defined(weight, "embedding", "weight");
  check_defined(indices, "embedding", "indices");
  KILN_CHECK(weight.dim() == 2, "embedding: weight must be 2-d (num_embeddings, embedding_dim), got shape ",
             weight.shape());
  KILN_CHECK(indices.dtype() == DType::i64 || indices.dtype() == DType::i32,
             "embedding: indices must be an integer tensor, int64 or int32, got ", indices.dtype());
  const int64_t rows = weight.shape()[0];
  if (padding_idx) {
    KILN_CHECK(*padding_idx >= -rows && *padding_idx < rows, "embedding: padding_idx ", *padding_idx,
               " is out of range for ", rows, " embeddings");
    if (*padding_idx < 0) *padding_idx += rows;
  }
  Dims shape = indices.shape();
  shape.push_back(weight.shape()[1]);
  Tensor out;
  try {
    NoGradGuard untracked;  // recorded below as one node
    out = index_select(weight, 0, indices.reshape({-1})).view(shape);
  } catch (const Error& e) {
    // Name this op, not the one it is built on: "embedding: index 12 is out of bounds ...".
    std::string msg = e.what();
    const std::string inner = "index_select: ";
    if (msg.rfind(inner, 0) == 0) msg.erase(0, inner.size());
    throw Error("embedding: " + msg);
  }
  // Rows add up the gradients of every position that looked them up; the padding row gets none.
  if (autograd::needs_grad(weight))
    autograd::record("embedding", out, {weight},
                     [w_shape = weight.shape(), si = SavedTensor(indices), padding_idx](const Tensor& g, Needs) {
                       const Tensor flat = si.get().reshape({-1});
                       Tensor gw =
                           add_into_zeros<Op::index_add>(w_shape, 0, flat, g.reshape({flat.numel(), w_shape[1]}));
                       if (padding_idx) detail::select(gw, 0, *padding_idx).zero_();
                       return gw;
                     });
  return out;
}

// ---- Tensor methods
Tensor Tensor::gather(int64_t dim, const Tensor& index) const { return kiln::gather(*this, dim, index); }
Tensor Tensor::index_select(int64_t dim, const Tensor& index) const { return kiln::index_select(*this, dim, index); }

}  // namespace kiln
