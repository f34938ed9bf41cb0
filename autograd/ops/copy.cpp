// Copies and conversions: copy_, fill_, to, clone, contiguous.
// (Derivatives arrive with autograd; each is the identity, cast back to the input's dtype.)
#include "tensor/dispatch.h"
#include "tensor/type_promotion.h"

namespace kiln {

Tensor& Tensor::copy_(const Tensor& src) {
  KILN_CHECK(defined() && src.defined(), "copy_: undefined tensor");
  if (is_same(src)) return *this;
  KILN_CHECK(broadcast_shapes(shape(), src.shape(), "copy_") == shape(), "copy_: source shape ", src.shape(),
             " does not broadcast to destination shape ", shape());
  check_writable(*this, "copy_");
  const Tensor s = src.expand(shape());
  // Copies between devices run on the non-CPU side, which knows how to move bytes both ways.
  const Device d = device().is_cpu() ? s.device() : device();
  dispatch<Op::copy>(d, s, *this);
  bump_version();
  return *this;
}

Tensor& Tensor::fill_(const Scalar& value) {
  KILN_CHECK(defined(), "fill_: undefined tensor");
  check_writable(*this, "fill_");
  if (numel()) dispatch<Op::fill>(device(), *this, value);
  bump_version();
  return *this;
}

Tensor Tensor::to(DType dtype) const { return to(device(), dtype); }
Tensor Tensor::to(Device device) const { return to(device, dtype()); }

Tensor Tensor::to(Device device_, DType dtype_) const {
  KILN_CHECK(defined(), "to: undefined tensor");
  if (device_ == device() && dtype_ == dtype()) return *this;
  Tensor out = make_tensor(shape(), dtype_, device_);
  if (device_ != device() && dtype_ != dtype()) {
    // Convert on the source device, then move bytes: one cross-device copy of a plain layout.
    out.copy_(to(dtype_));
    return out;
  }
  out.copy_(*this);
  return out;
}

Tensor Tensor::clone() const {
  KILN_CHECK(defined(), "clone: undefined tensor");
  Tensor out = make_tensor(shape(), dtype(), device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::contiguous() const {
  KILN_CHECK(defined(), "contiguous: undefined tensor");
  return is_contiguous() ? *this : clone();
}

}  // namespace kiln
