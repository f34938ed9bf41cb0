// Tensor: a cheap, ref-counted handle to a strided view of a Storage. Copying a Tensor copies the
// handle, not the data (as in PyTorch). The methods declared here are defined next to the op they
// forward to (views in tensor/views.cpp, math in autograd/ops/<family>.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "tensor/device.h"
#include "tensor/dims.h"
#include "tensor/dtype.h"
#include "tensor/ref.h"
#include "tensor/scalar.h"
#include "tensor/storage.h"

namespace kiln {

class Generator;
namespace indexing {
class TensorIndex;
}

namespace autograd {
struct AutogradMeta;
class Node;
class HookHandle;
struct MetaDeleter {
  void operator()(AutogradMeta* meta) const;  // defined in autograd/, where AutogradMeta is complete
};
}  // namespace autograd

// The body a Tensor handle points to: metadata over a shared Storage.
struct TensorImpl : RefCounted {
  Ref<Storage> storage;
  int64_t offset = 0;  // in elements
  Dims shape;
  Dims strides;        // in elements
  int64_t numel = 0;
  DType dtype = DType::f32;
  bool contiguous = true;
  std::unique_ptr<autograd::AutogradMeta, autograd::MetaDeleter> autograd;  // null until needed

  void refresh();  // recomputes numel and contiguous after shape/strides change

  static void* operator new(size_t bytes);  // recycled per thread (tensor/object_pool.h)
  static void operator delete(void* p, size_t bytes);
};


class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(Ref<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return static_cast<bool>(impl_); }
  TensorImpl* impl() const { return impl_.get(); }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }

  // ---- metadata
  const Dims& shape() const { return impl_->shape; }
  const Dims& sizes() const { return impl_->shape; }
  int64_t size(int64_t dim) const;
  int dim() const { return impl_->shape.size(); }
  int64_t numel() const { return impl_->numel; }
  const Dims& strides() const { return impl_->strides; }
  int64_t stride(int64_t dim) const;
  int64_t storage_offset() const { return impl_->offset; }
  DType dtype() const { return impl_->dtype; }
  Device device() const { return impl_->storage->device(); }
  bool is_contiguous() const { return impl_->contiguous; }
  bool is_floating() const { return kiln::is_floating(dtype()); }
  size_t element_size() const { return dtype_size(dtype()); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * element_size(); }
  const Storage& storage() const { return *impl_->storage; }
  uint32_t version() const { return impl_->storage->version(); }
  void bump_version() const { impl_->storage->bump_version(); }

  // ---- raw data (CPU pointers are only valid to read on the CPU)
  void* data_ptr() const {
    return static_cast<char*>(impl_->storage->data()) + impl_->offset * static_cast<int64_t>(element_size());
  }
  template <class T>
  T* data_ptr() const {
    KILN_CHECK(dtype_v<T> == dtype(), "data_ptr: tensor has dtype ", dtype(), ", asked for ", dtype_v<T>);
    return static_cast<T*>(data_ptr());
  }
  template <class T>
  T item() const { return item().to<T>(); }
  Scalar item() const;  // the one element, as a Scalar (copies from the device if needed)

  // ---- views: no copy, share storage (tensor/views.cpp)
  Tensor view(const Dims& shape) const;              // one dim may be -1
  Tensor reshape(const Dims& shape) const;           // a view when possible, else a copy
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor permute(const Dims& order) const;
  Tensor t() const;                                  // transpose of a <= 2-d tensor
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;  // end clamps
  Tensor select(int64_t dim, int64_t index) const;
  Tensor expand(const Dims& shape) const;            // -1 keeps a size
  Tensor expand_as(const Tensor& other) const { return expand(other.shape()); }
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor unflatten(int64_t dim, const Dims& sizes) const;
  Tensor as_strided(const Dims& shape, const Dims& strides, int64_t offset) const;
  Tensor contiguous() const;                         // itself when already contiguous
  Tensor detach_view() const;                        // a new handle on the same data

  // ---- autograd (autograd/tensor_autograd.cpp), with PyTorch's semantics
  bool requires_grad() const;
  Tensor& requires_grad_(bool requires_grad = true);  // leaves only
  bool is_leaf() const;                               // no grad_fn: created by the user
  const Tensor& grad() const;                         // undefined until a backward reaches it
  Tensor& mutable_grad();                             // for optimizers and for setting .grad by hand
  const Ref<autograd::Node>& grad_fn() const;         // null for leaves
  // Backpropagates from this tensor (a scalar, or with `gradient` of its shape) into the .grad of
  // every leaf that requires grad. The graph is freed afterwards unless retain_graph.
  void backward(const Tensor& gradient = {}, bool retain_graph = false) const;
  Tensor detach() const;                              // same data, out of the graph
  Tensor& detach_();
  void retain_grad() const;                           // keep .grad of a non-leaf too
  bool retains_grad() const;
  // Calls `hook(grad)` when this tensor's gradient is computed; a defined result replaces it.
  autograd::HookHandle register_hook(std::function<Tensor(const Tensor&)> hook) const;

  // ---- conversion and copies (autograd/ops/copy.cpp)
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  Tensor to(Device device, DType dtype) const;
  Tensor clone() const;
  Tensor& copy_(const Tensor& src);                  // src broadcasts to this shape; any dtype/device
  Tensor& fill_(const Scalar& value);
  Tensor& zero_() { return fill_(0); }

  // ---- in-place arithmetic (autograd/ops/elementwise.cpp)
  Tensor& add_(const Tensor& other, const Scalar& alpha = 1);
  Tensor& add_(const Scalar& other);
  Tensor& sub_(const Tensor& other, const Scalar& alpha = 1);
  Tensor& sub_(const Scalar& other);
  Tensor& mul_(const Tensor& other);
  Tensor& mul_(const Scalar& other);
  Tensor& div_(const Tensor& other);
  Tensor& div_(const Scalar& other);

  // ---- elementwise (autograd/ops/elementwise.cpp)
  Tensor abs() const;
  Tensor neg() const;
  Tensor exp() const;
  Tensor log() const;
  Tensor log1p() const;
  Tensor expm1() const;
  Tensor sqrt() const;
  Tensor rsqrt() const;
  Tensor sin() const;
  Tensor cos() const;
  Tensor tanh() const;
  Tensor sigmoid() const;
  Tensor relu() const;
  Tensor erf() const;
  Tensor pow(const Tensor& exponent) const;
  Tensor pow(const Scalar& exponent) const;
  Tensor clamp(std::optional<Scalar> min, std::optional<Scalar> max) const;
  Tensor masked_fill(const Tensor& mask, const Scalar& value) const;
  Tensor eq(const Tensor& other) const;
  Tensor ne(const Tensor& other) const;
  Tensor lt(const Tensor& other) const;
  Tensor le(const Tensor& other) const;
  Tensor gt(const Tensor& other) const;
  Tensor ge(const Tensor& other) const;

  // ---- reductions (autograd/ops/reduce.cpp); an empty dim list means all dims
  Tensor sum(const Dims& dims = {}, bool keepdim = false) const;
  Tensor mean(const Dims& dims = {}, bool keepdim = false) const;
  Tensor prod(const Dims& dims = {}, bool keepdim = false) const;
  Tensor amax(const Dims& dims = {}, bool keepdim = false) const;
  Tensor amin(const Dims& dims = {}, bool keepdim = false) const;
  Tensor var(const Dims& dims = {}, int64_t correction = 1, bool keepdim = false) const;
  Tensor std(const Dims& dims = {}, int64_t correction = 1, bool keepdim = false) const;
  Tensor norm(double p = 2.0, const Dims& dims = {}, bool keepdim = false) const;
  Tensor logsumexp(const Dims& dims, bool keepdim = false) const;
  Tensor all(const Dims& dims = {}, bool keepdim = false) const;
  Tensor any(const Dims& dims = {}, bool keepdim = false) const;
  Tensor argmax(std::optional<int64_t> dim = std::nullopt, bool keepdim = false) const;
  Tensor argmin(std::optional<int64_t> dim = std::nullopt, bool keepdim = false) const;

  // ---- linear algebra and friends (autograd/ops/linalg.cpp, autograd/ops/indexing.cpp)
  Tensor matmul(const Tensor& other) const;
  Tensor mm(const Tensor& other) const;
  Tensor bmm(const Tensor& other) const;
  Tensor softmax(int64_t dim) const;
  Tensor log_softmax(int64_t dim) const;
  Tensor cumsum(int64_t dim) const;
  Tensor gather(int64_t dim, const Tensor& index) const;
  Tensor index_select(int64_t dim, const Tensor& index) const;
  Tensor tril(int64_t diagonal = 0) const;
  Tensor triu(int64_t diagonal = 0) const;

  // ---- indexing as in PyTorch (tensor/indexing_sugar.h; autograd/ops/index_sugar.cpp):
  // x[i], x.index({Slice(1, None), "...", None, mask, idx}), x.index_put_({...}, values).
  // Integers, slices, None and "..." give a view; a tensor index (int64/int32 positions or a bool
  // mask) gathers a copy. Gradients flow through all of them. See Note [Indexing semantics].
  Tensor operator[](const indexing::TensorIndex& index) const;
  Tensor index(std::initializer_list<indexing::TensorIndex> indices) const;
  Tensor index(const std::vector<indexing::TensorIndex>& indices) const;
  // Writes values (broadcast to the indexed shape, converted to this dtype) at the indexed places.
  Tensor& index_put_(std::initializer_list<indexing::TensorIndex> indices, const Tensor& values);
  Tensor& index_put_(std::initializer_list<indexing::TensorIndex> indices, const Scalar& value);
  Tensor& index_put_(const std::vector<indexing::TensorIndex>& indices, const Tensor& values);
  Tensor& index_put_(const std::vector<indexing::TensorIndex>& indices, const Scalar& value);
  Tensor index_put(const std::vector<indexing::TensorIndex>& indices, const Tensor& values) const;  // on a clone
  Tensor index_put(const std::vector<indexing::TensorIndex>& indices, const Scalar& value) const;

  std::string str() const;  // as std::cout << t prints it

 private:
  Ref<TensorImpl> impl_;
};

struct TensorPair {
  Tensor values;
  Tensor indices;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- operators (autograd/ops/elementwise.cpp). Comparisons return bool tensors, as in torch.
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, const Scalar& b);
Tensor operator-(const Tensor& a, const Scalar& b);
Tensor operator*(const Tensor& a, const Scalar& b);
Tensor operator/(const Tensor& a, const Scalar& b);
Tensor operator+(const Scalar& a, const Tensor& b);
Tensor operator-(const Scalar& a, const Tensor& b);
Tensor operator*(const Scalar& a, const Tensor& b);
Tensor operator/(const Scalar& a, const Tensor& b);
Tensor operator-(const Tensor& a);
Tensor operator==(const Tensor& a, const Tensor& b);
Tensor operator!=(const Tensor& a, const Tensor& b);
Tensor operator<(const Tensor& a, const Tensor& b);
Tensor operator<=(const Tensor& a, const Tensor& b);
Tensor operator>(const Tensor& a, const Tensor& b);
Tensor operator>=(const Tensor& a, const Tensor& b);
Tensor operator==(const Tensor& a, const Scalar& b);
Tensor operator!=(const Tensor& a, const Scalar& b);
Tensor operator<(const Tensor& a, const Scalar& b);
Tensor operator<=(const Tensor& a, const Scalar& b);
Tensor operator>(const Tensor& a, const Scalar& b);
Tensor operator>=(const Tensor& a, const Scalar& b);

// A new contiguous tensor with uninitialised contents; the low-level constructor every op uses.
Tensor make_tensor(const Dims& shape, DType dtype, Device device);

}  // namespace kiln

// The index types need the complete Tensor, and every user of x[i] needs them.
#include "tensor/indexing_sugar.h"  // defines: kiln::indexing::{TensorIndex, Slice, None, Ellipsis}
