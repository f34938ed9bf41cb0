// TensorImpl bookkeeping, make_tensor, and the Dims helpers.
#include "tensor/tensor.h"

#include "tensor/object_pool.h"

namespace kiln {

int64_t checked_numel(const Dims& shape, const char* what) {
  int64_t n = 1;
  for (int64_t s : shape) {
    KILN_CHECK(s >= 0, what, ": negative size ", s, " in shape ", shape);
    KILN_CHECK(!__builtin_mul_overflow(n, s, &n), what, ": shape ", shape, " has more than 2^63 elements");
  }
  return n;
}

Dims contiguous_strides(const Dims& shape) {
  Dims strides = Dims::filled(shape.size(), 1);
  int64_t acc = 1;
  for (int i = shape.size() - 1; i >= 0; --i) {
    strides[i] = acc;
    acc *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

int wrap_dim(int64_t dim, int rank, const char* op) {
  const int64_t r = std::max(rank, 1);  // a 0-d tensor accepts dim 0 and -1, like torch
  KILN_CHECK(dim >= -r && dim < r, op, ": dim ", dim, " out of range for a ", rank, "-d tensor (expected [",
             -r, ", ", r - 1, "])");
  return static_cast<int>(dim < 0 ? dim + r : dim);
}

void* TensorImpl::operator new(size_t bytes) { return detail::ObjectPool<TensorImpl>::allocate(bytes); }
void TensorImpl::operator delete(void* p, size_t bytes) { detail::ObjectPool<TensorImpl>::release(p, bytes); }

void TensorImpl::refresh() {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  numel = n;
  bool c = true;
  int64_t expected = 1;
  for (int i = shape.size() - 1; i >= 0; --i) {
    if (shape[i] == 1) continue;
    if (strides[i] != expected) { c = false; break; }
    expected *= shape[i];
  }
  contiguous = c;
}

Tensor make_tensor(const Dims& shape, DType dtype, Device device) {
  const int64_t n = checked_numel(shape, "empty");
  size_t bytes = 0;
  KILN_CHECK(!__builtin_mul_overflow(static_cast<size_t>(n), dtype_size(dtype), &bytes), "empty: shape ",
             shape, " of ", dtype, " needs more than 2^64 bytes");
  auto impl = Ref<TensorImpl>::make();
  impl->storage = Ref<Storage>::make(bytes, device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->numel = n;
  impl->dtype = dtype;
  impl->contiguous = true;
  return Tensor(std::move(impl));
}

int64_t Tensor::size(int64_t dim) const { return impl_->shape[wrap_dim(dim, this->dim(), "size")]; }
int64_t Tensor::stride(int64_t dim) const { return impl_->strides[wrap_dim(dim, this->dim(), "stride")]; }

Scalar Tensor::item() const {
  KILN_CHECK(defined(), "item: tensor is undefined");
  KILN_CHECK(numel() == 1, "item: a tensor with ", numel(), " elements (shape ", shape(),
             ") cannot be converted to a scalar");
  const Tensor host = device().is_cpu() ? *this : to(Device::cpu());
  return visit_dtype(dtype(), [&]<class T>() { return Scalar(*static_cast<const T*>(host.data_ptr())); });
}

}  // namespace kiln
