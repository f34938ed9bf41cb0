// Copies and conversions: copy_, fill_, to, clone, contiguous, with their derivatives (the
// identity, cast back to the input's dtype and device; fill_ cuts the history it overwrites).
#include "autograd/ops/elementwise.h"
#include "autograd/record.h"
#include "tensor/dispatch.h"
#include "tensor/factories.h"
#include "tensor/type_promotion.h"
#include "tensor/view_impl.h"

namespace kiln {
namespace {

// dst <- src (broadcast to dst's shape, converted to dst's dtype), no autograd.
void copy_values(Tensor& dst, const Tensor& src) {
  KILN_CHECK(broadcast_shapes(dst.shape(), src.shape(), "copy_") == dst.shape(), "copy_: source shape ", src.shape(),
             " does not broadcast to destination shape ", dst.shape());
  check_writable(dst, "copy_");
  const Tensor s = src.shape() == dst.shape() ? src : detail::expand(src, dst.shape());
  // Copies between devices run on the non-CPU side, which knows how to move bytes both ways.
  const Device d = dst.device().is_cpu() ? s.device() : dst.device();
  dispatch<Op::copy>(d, s, dst);
  dst.bump_version();
}

// The gradient of a copy flows back unchanged, on the source's device and in its dtype.
auto identity_to(Device device, DType dtype) {
  return [device, dtype](const Tensor& g, Needs) { return g.to(device, dtype); };
}

}  // namespace

void detail::check_untracked_write(const Tensor& self, const Tensor& src, const char* op) {
  if (!autograd::needs_grad(src)) return;
  const bool whole_storage = self.storage_offset() == 0 && self.nbytes() == self.storage().nbytes();
  KILN_CHECK(whole_storage, op, ": writing a tensor that requires grad into part of another tensor (shape ",
             self.shape(), " at element offset ", self.storage_offset(),
             ") would not reach that tensor's gradient; build the "
             "result out of place (cat, stack, where, scatter, index_add) or write under NoGradGuard");
}

Tensor& Tensor::copy_(const Tensor& src) {
  KILN_CHECK(defined() && src.defined(), "copy_: undefined tensor");
  if (is_same(src)) return *this;
  autograd::check_inplace(*this, "copy_");
  detail::check_untracked_write(*this, src, "copy_");
  copy_values(*this, src);
  // self's old history is overwritten entirely: only src gets a gradient (summed over broadcasting).
  if (autograd::needs_grad(*this, src))
    autograd::record("copy_", *this, {*this, src},
                     [device = src.device(), dtype = src.dtype()](const Tensor& g, Needs need) {
                       return TensorList{Tensor(), need[1] ? g.to(device, dtype) : Tensor()};
                     });
  return *this;
}

Tensor& Tensor::fill_(const Scalar& value) {
  KILN_CHECK(defined(), "fill_: undefined tensor");
  autograd::check_inplace(*this, "fill_");
  check_writable(*this, "fill_");
  if (numel()) dispatch<Op::fill>(device(), *this, value);
  bump_version();
  if (autograd::needs_grad(*this))
    autograd::record("fill_", *this, {*this}, [](const Tensor& g, Needs) { return zeros_like(g); });
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
    copy_values(out, detach_view().to(dtype_));
  } else {
    copy_values(out, *this);
  }
  if (autograd::needs_grad(*this)) autograd::record("to", out, {*this}, identity_to(device(), dtype()));
  return out;
}

Tensor Tensor::clone() const {
  KILN_CHECK(defined(), "clone: undefined tensor");
  Tensor out = make_tensor(shape(), dtype(), device());
  copy_values(out, *this);
  if (autograd::needs_grad(*this)) autograd::record("clone", out, {*this}, [](const Tensor& g, Needs) { return g; });
  return out;
}

Tensor Tensor::contiguous() const {
  KILN_CHECK(defined(), "contiguous: undefined tensor");
  return is_contiguous() ? *this : clone();
}

}  // namespace kiln
