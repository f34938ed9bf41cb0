// Broadcasting and torch.result_type.
#include "tensor/type_promotion.h"

#include <sstream>

#include "tensor/dispatch.h"

namespace kiln {

Dims broadcast_shapes(const Dims& a, const Dims& b, const char* op) {
  if (a == b) return a;
  const int n = std::max(a.size(), b.size());
  Dims out = Dims::filled(n, 1);
  for (int i = 0; i < n; ++i) {
    const int ia = i - (n - a.size()), ib = i - (n - b.size());
    const int64_t sa = ia >= 0 ? a[ia] : 1, sb = ib >= 0 ? b[ib] : 1;
    KILN_CHECK(sa == sb || sa == 1 || sb == 1, op, ": shapes ", a, " and ", b, " cannot be broadcast (dim ", i,
               ": ", sa, " vs ", sb, ")");
    out[i] = sa == 1 ? sb : sa;
  }
  return out;
}

namespace {
int category(DType t) { return is_floating(t) ? 2 : t == DType::boolean ? 0 : 1; }

// PyTorch's combine_categories: keep `higher` unless `lower` brings a higher category.
std::optional<DType> combine(std::optional<DType> higher, std::optional<DType> lower) {
  if (!higher) return lower;
  if (!lower) return higher;
  if (category(*lower) > category(*higher)) return promote_types(*higher, *lower);
  return higher;
}
}  // namespace

DType result_type(const Tensor& a, const Tensor& b) {
  if (a.dtype() == b.dtype()) return a.dtype();
  if ((a.dim() == 0) == (b.dim() == 0)) return promote_types(a.dtype(), b.dtype());
  const Tensor& dimmed = a.dim() ? a : b;
  const Tensor& zero = a.dim() ? b : a;
  return *combine(dimmed.dtype(), zero.dtype());
}

DType result_type(const Tensor& a, const Scalar& b) { return result_type(a.dtype(), b); }

DType result_type(DType tensor_dtype, const Scalar& b) {
  // A plain number is "wrapped": a float counts as the default dtype (float32), an int as int64.
  return *combine(tensor_dtype, b.natural_dtype());
}

Tensor scalar_tensor(const Scalar& s, DType dtype, Device device) {
  Tensor t = make_tensor({}, dtype, device);
  dispatch<Op::fill>(device, t, s);
  return t;
}

Device common_device(std::span<const Tensor> ts, const char* op) {
  std::optional<Device> d;
  for (const Tensor& t : ts) {
    if (!t.defined()) continue;
    if (!d) { d = t.device(); continue; }
    if (t.device() == *d) continue;
    std::ostringstream all;
    for (size_t i = 0; i < ts.size(); ++i) all << (i ? ", " : "") << (ts[i].defined() ? ts[i].device().str() : "undefined");
    detail::throw_error(op, ": expected all tensors on one device, got ", all.str());
  }
  return d.value_or(Device::cpu());
}

void check_writable(const Tensor& t, const char* op) {
  for (int i = 0; i < t.dim(); ++i)
    KILN_CHECK(t.strides()[i] != 0 || t.shape()[i] <= 1, op, ": cannot write in place to an expanded tensor (shape ",
               t.shape(), ", strides ", t.strides(), ": several elements share one memory location); clone it first");
}

}  // namespace kiln
