// Elementwise op definitions: checks, broadcasting, type promotion, output allocation, dispatch.
// Kernels (kernels/cpu/unary.cpp, binary.cpp) see inputs already expanded to the output shape and
// converted to one compute dtype. (Derivatives arrive here with autograd.)
#include "autograd/ops/elementwise.h"

#include <array>

#include "autograd/ops/reduce.h"
#include "autograd/record.h"
#include "tensor/dispatch.h"
#include "tensor/type_promotion.h"

namespace kiln {
namespace {

// float32 for the math functions of integer and bool tensors (torch's "int to float" ops).
DType float_compute(DType t) { return is_floating(t) ? t : DType::f32; }

Tensor as_dtype(const Tensor& t, DType d) { return t.dtype() == d ? t : t.to(d); }
Tensor as_shape(const Tensor& t, const Dims& shape) { return t.shape() == shape ? t : t.expand(shape); }

void check_defined(const Tensor& t, const char* op) { KILN_CHECK(t.defined(), op, ": got an undefined tensor"); }

// torch.can_cast: no float into an integer, no number into bool.
bool can_cast(DType from, DType to) {
  if (is_floating(from) && !is_floating(to)) return false;
  if (from != DType::boolean && to == DType::boolean) return false;
  return true;
}

template <Op op>
Tensor unary(const Tensor& x, const char* name, DType compute, DType out_dtype) {
  check_defined(x, name);
  const Tensor xc = as_dtype(x, compute);
  Tensor out = make_tensor(x.shape(), out_dtype, x.device());
  if (out.numel()) dispatch<op>(x.device(), xc, out);
  return out;
}
template <Op op>
Tensor unary_float(const Tensor& x, const char* name) {
  check_defined(x, name);
  const DType t = float_compute(x.dtype());
  return unary<op>(x, name, t, t);
}
template <Op op>
Tensor unary_same(const Tensor& x, const char* name) {
  check_defined(x, name);
  return unary<op>(x, name, x.dtype(), x.dtype());
}

template <Op op>
Tensor unary_param(const Tensor& x, const char* name, double p0, double p1) {
  check_defined(x, name);
  const DType t = float_compute(x.dtype());
  const Tensor xc = as_dtype(x, t);
  Tensor out = make_tensor(x.shape(), t, x.device());
  if (out.numel()) dispatch<op>(x.device(), xc, p0, p1, out);
  return out;
}

template <Op op>
Tensor binary(const Tensor& a, const Tensor& b, const char* name, DType compute, DType out_dtype) {
  check_defined(a, name);
  check_defined(b, name);
  const Device device = a.device() == b.device() ? a.device() : common_device(std::array{a, b}, name);
  const bool same_shape = a.shape() == b.shape();
  const Dims shape = same_shape ? a.shape() : broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = make_tensor(shape, out_dtype, device);
  if (out.numel() == 0) return out;
  // The common case (one shape, one dtype) passes the inputs through without new handles.
  if (same_shape && a.dtype() == compute && b.dtype() == compute) dispatch<op>(device, a, b, out);
  else dispatch<op>(device, as_shape(as_dtype(a, compute), shape), as_shape(as_dtype(b, compute), shape), out);
  return out;
}
template <Op op>
Tensor binary_promote(const Tensor& a, const Tensor& b, const char* name) {
  const DType t = result_type(a, b);
  return binary<op>(a, b, name, t, t);
}
template <Op op>
Tensor compare(const Tensor& a, const Tensor& b, const char* name) {
  return binary<op>(a, b, name, result_type(a, b), DType::boolean);
}

// A plain number as a 0-d tensor of the dtype it promotes to against t.
Tensor wrap(const Tensor& t, const Scalar& s) {
  check_defined(t, "scalar op");
  return scalar_tensor(s, result_type(t, s), t.device());
}

// self <- op(self, other), computed in the promoted dtype and cast back to self's.
template <Op op>
Tensor& binary_inplace(Tensor& self, const Tensor& other, const char* name) {
  check_defined(self, name);
  check_defined(other, name);
  const DType t = result_type(self, other);
  KILN_CHECK(can_cast(t, self.dtype()), name, ": result type ", t, " can't be cast to the desired output type ",
             self.dtype());
  KILN_CHECK(broadcast_shapes(self.shape(), other.shape(), name) == self.shape(), name, ": shape ", other.shape(),
             " doesn't broadcast to the in-place target's shape ", self.shape());
  check_writable(self, name);
  if (t != self.dtype()) {
    self.copy_(binary<op>(self, other, name, t, t));
    return self;
  }
  const Tensor both[] = {self, other};
  const Device device = common_device(both, name);
  if (self.numel()) dispatch<op>(device, self, as_shape(as_dtype(other, t), self.shape()), self);
  self.bump_version();
  return self;
}

// torch refuses subtraction with a bool operand (a - b of bools has no bool meaning).
void check_sub_operands(const Tensor& a, const Tensor& b, const char* name) {
  check_defined(a, name);
  check_defined(b, name);
  KILN_CHECK(a.dtype() != DType::boolean && b.dtype() != DType::boolean, name,
             ": subtraction with a bool tensor is not supported (got ", a.dtype(), " and ", b.dtype(),
             "); use logical_xor or logical_not");
}

// alpha * b for a + alpha * b, in the dtype of the sum, so b is not first rounded to its own dtype.
// torch's rules: no floating alpha with integer results, no bool alpha with non-bool results.
Tensor times_alpha(const Tensor& a, const Tensor& b, const Scalar& alpha, const char* name) {
  check_defined(a, name);
  check_defined(b, name);
  const DType t = result_type(a, b);
  KILN_CHECK(!alpha.is_bool() || t == DType::boolean, name, ": a bool alpha is only supported for bool results, got ",
             t);
  KILN_CHECK(!alpha.is_floating() || is_floating(t), name, ": for integral input tensors (", t,
             "), argument alpha must not be a floating point number, got ", alpha);
  if (alpha.to_double() == 1.0) return b;
  return mul(as_dtype(b, t), scalar_tensor(alpha, t, b.device()));
}

}  // namespace

// ---- unary
Tensor abs(const Tensor& x) { return unary_same<Op::abs>(x, "abs"); }
Tensor neg(const Tensor& x) {
  KILN_CHECK(!x.defined() || x.dtype() != DType::boolean, "neg: negation of a bool tensor is not supported; use logical_not");
  return unary_same<Op::neg>(x, "neg");
}
Tensor exp(const Tensor& x) { return unary_float<Op::exp>(x, "exp"); }
Tensor log(const Tensor& x) { return unary_float<Op::log>(x, "log"); }
Tensor log1p(const Tensor& x) { return unary_float<Op::log1p>(x, "log1p"); }
Tensor expm1(const Tensor& x) { return unary_float<Op::expm1>(x, "expm1"); }
Tensor sqrt(const Tensor& x) { return unary_float<Op::sqrt>(x, "sqrt"); }
Tensor rsqrt(const Tensor& x) { return unary_float<Op::rsqrt>(x, "rsqrt"); }
Tensor sin(const Tensor& x) { return unary_float<Op::sin>(x, "sin"); }
Tensor cos(const Tensor& x) { return unary_float<Op::cos>(x, "cos"); }
Tensor tanh(const Tensor& x) { return unary_float<Op::tanh>(x, "tanh"); }
Tensor sigmoid(const Tensor& x) { return unary_float<Op::sigmoid>(x, "sigmoid"); }
Tensor relu(const Tensor& x) {
  KILN_CHECK(!x.defined() || x.dtype() != DType::boolean, "relu: not defined for bool tensors");
  return unary_same<Op::relu>(x, "relu");
}
Tensor gelu(const Tensor& x, std::string_view approximate) {
  if (approximate == "none") return unary_float<Op::gelu_erf>(x, "gelu");
  KILN_CHECK(approximate == "tanh", "gelu: approximate must be 'none' or 'tanh', got '", approximate, "'");
  return unary_float<Op::gelu_tanh>(x, "gelu");
}
Tensor silu(const Tensor& x) { return unary_float<Op::silu>(x, "silu"); }
Tensor softplus(const Tensor& x, double beta, double threshold) {
  KILN_CHECK(beta != 0, "softplus: beta must be nonzero");
  return unary_param<Op::softplus>(x, "softplus", beta, threshold);
}
Tensor leaky_relu(const Tensor& x, double negative_slope) {
  return unary_param<Op::leaky_relu>(x, "leaky_relu", negative_slope, 0.0);
}
Tensor erf(const Tensor& x) { return unary_float<Op::erf>(x, "erf"); }
Tensor sign(const Tensor& x) { return unary_same<Op::sign>(x, "sign"); }
Tensor reciprocal(const Tensor& x) { return unary_float<Op::reciprocal>(x, "reciprocal"); }
Tensor logical_not(const Tensor& x) {
  check_defined(x, "logical_not");
  return unary<Op::logical_not>(x, "logical_not", x.dtype(), DType::boolean);
}

Tensor clamp(const Tensor& x, std::optional<Scalar> min, std::optional<Scalar> max) {
  check_defined(x, "clamp");
  KILN_CHECK(min || max, "clamp: at least one of min and max must be given");
  DType t = x.dtype();
  if (min) t = result_type(t, *min);
  if (max) t = result_type(t, *max);
  const Tensor xc = as_dtype(x, t);
  Tensor out = make_tensor(x.shape(), t, x.device());
  if (out.numel()) dispatch<Op::clamp>(x.device(), xc, min, max, out);
  return out;
}

// ---- binary
Tensor add(const Tensor& a, const Tensor& b, const Scalar& alpha) {
  const Tensor scaled = times_alpha(a, b, alpha, "add");
  Tensor out = binary_promote<Op::add>(a, scaled, "add");
  if (autograd::needs_grad(a, scaled))
    autograd::record("add", out, {a, scaled}, [](const Tensor& g, Needs need) {
      return TensorList{need[0] ? g : Tensor(), need[1] ? g : Tensor()};
    });
  return out;
}
Tensor sub(const Tensor& a, const Tensor& b, const Scalar& alpha) {
  check_sub_operands(a, b, "sub");
  const Tensor scaled = times_alpha(a, b, alpha, "sub");
  Tensor out = binary_promote<Op::sub>(a, scaled, "sub");
  if (autograd::needs_grad(a, scaled))
    autograd::record("sub", out, {a, scaled}, [](const Tensor& g, Needs need) {
      return TensorList{need[0] ? g : Tensor(), need[1] ? neg(g) : Tensor()};
    });
  return out;
}
Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_promote<Op::mul>(a, b, "mul");
  if (autograd::needs_grad(a, b))
    autograd::record("mul", out, {a, b}, [sa = SavedTensor(a), sb = SavedTensor(b)](const Tensor& g, Needs need) {
      return TensorList{need[0] ? g * sb.get() : Tensor(), need[1] ? g * sa.get() : Tensor()};
    });
  return out;
}
Tensor div(const Tensor& a, const Tensor& b) {
  check_defined(a, "div");
  check_defined(b, "div");
  const DType t = float_compute(result_type(a, b));
  return binary<Op::div>(a, b, "div", t, t);
}
Tensor pow(const Tensor& a, const Tensor& b) { return binary_promote<Op::pow>(a, b, "pow"); }
Tensor pow(const Tensor& a, const Scalar& e) {
  check_defined(a, "pow");
  const DType t = result_type(a, e);
  if (!is_floating(t)) {
    KILN_CHECK(e.is_bool() || e.to_int() >= 0, "pow: integers to negative integer powers are not allowed (", t,
               " tensor, exponent ", e, ")");
    return pow(a, wrap(a, e));
  }
  return unary_param<Op::pow_scalar>(as_dtype(a, t), "pow", e.to_double(), 0.0);
}
Tensor pow(const Scalar& base, const Tensor& e) { return pow(wrap(e, base), e); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary_promote<Op::maximum>(a, b, "maximum"); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary_promote<Op::minimum>(a, b, "minimum"); }
Tensor remainder(const Tensor& a, const Tensor& b) { return binary_promote<Op::remainder>(a, b, "remainder"); }
Tensor eq(const Tensor& a, const Tensor& b) { return compare<Op::eq>(a, b, "eq"); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare<Op::ne>(a, b, "ne"); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare<Op::lt>(a, b, "lt"); }
Tensor le(const Tensor& a, const Tensor& b) { return compare<Op::le>(a, b, "le"); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare<Op::gt>(a, b, "gt"); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare<Op::ge>(a, b, "ge"); }
Tensor logical_and(const Tensor& a, const Tensor& b) { return compare<Op::logical_and>(a, b, "logical_and"); }
Tensor logical_or(const Tensor& a, const Tensor& b) { return compare<Op::logical_or>(a, b, "logical_or"); }
Tensor logical_xor(const Tensor& a, const Tensor& b) { return compare<Op::logical_xor>(a, b, "logical_xor"); }

// ---- selection
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_defined(cond, "where");
  check_defined(a, "where");
  check_defined(b, "where");
  KILN_CHECK(cond.dtype() == DType::boolean, "where: condition must be a bool tensor, got ", cond.dtype());
  const Tensor all3[] = {cond, a, b};
  const Device device = common_device(all3, "where");
  const Dims shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  const DType t = result_type(a, b);
  Tensor out = make_tensor(shape, t, device);
  if (out.numel())
    dispatch<Op::where>(device, as_shape(cond, shape), as_shape(as_dtype(a, t), shape), as_shape(as_dtype(b, t), shape), out);
  return out;
}
Tensor where(const Tensor& cond, const Tensor& a, const Scalar& b) { return where(cond, a, wrap(a, b)); }
Tensor where(const Tensor& cond, const Scalar& a, const Tensor& b) { return where(cond, wrap(b, a), b); }

Tensor masked_fill(const Tensor& x, const Tensor& mask, const Scalar& value) {
  check_defined(x, "masked_fill");
  check_defined(mask, "masked_fill");
  KILN_CHECK(mask.dtype() == DType::boolean, "masked_fill: mask must be a bool tensor, got ", mask.dtype());
  KILN_CHECK(broadcast_shapes(x.shape(), mask.shape(), "masked_fill") == x.shape(), "masked_fill: mask of shape ",
             mask.shape(), " does not broadcast to the input's shape ", x.shape());
  KILN_CHECK(is_floating(x.dtype()) || !value.is_floating(), "masked_fill: cannot fill a ", x.dtype(),
             " tensor with the floating value ", value);
  return where(mask, scalar_tensor(value, x.dtype(), x.device()), x);
}

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol, bool equal_nan) {
  check_defined(a, "allclose");
  check_defined(b, "allclose");
  if (a.shape() != b.shape()) return false;
  const Tensor x = a.to(DType::f64), y = b.to(DType::f64);
  Tensor close = le(abs(sub(x, y)), add(abs(y) * rtol, scalar_tensor(atol, DType::f64, y.device())));
  close = logical_or(close, eq(x, y));  // equal infinities
  if (equal_nan) close = logical_or(close, logical_and(ne(x, x), ne(y, y)));
  return all(close).item<bool>();
}

bool equal(const Tensor& a, const Tensor& b) {
  check_defined(a, "equal");
  check_defined(b, "equal");
  return a.shape() == b.shape() && all(eq(a, b)).item<bool>();
}

// ---- Tensor methods and operators
Tensor Tensor::abs() const { return kiln::abs(*this); }
Tensor Tensor::neg() const { return kiln::neg(*this); }
Tensor Tensor::exp() const { return kiln::exp(*this); }
Tensor Tensor::log() const { return kiln::log(*this); }
Tensor Tensor::log1p() const { return kiln::log1p(*this); }
Tensor Tensor::expm1() const { return kiln::expm1(*this); }
Tensor Tensor::sqrt() const { return kiln::sqrt(*this); }
Tensor Tensor::rsqrt() const { return kiln::rsqrt(*this); }
Tensor Tensor::sin() const { return kiln::sin(*this); }
Tensor Tensor::cos() const { return kiln::cos(*this); }
Tensor Tensor::tanh() const { return kiln::tanh(*this); }
Tensor Tensor::sigmoid() const { return kiln::sigmoid(*this); }
Tensor Tensor::relu() const { return kiln::relu(*this); }
Tensor Tensor::erf() const { return kiln::erf(*this); }
Tensor Tensor::pow(const Tensor& e) const { return kiln::pow(*this, e); }
Tensor Tensor::pow(const Scalar& e) const { return kiln::pow(*this, e); }
Tensor Tensor::clamp(std::optional<Scalar> lo, std::optional<Scalar> hi) const { return kiln::clamp(*this, lo, hi); }
Tensor Tensor::masked_fill(const Tensor& mask, const Scalar& v) const { return kiln::masked_fill(*this, mask, v); }
Tensor Tensor::eq(const Tensor& o) const { return kiln::eq(*this, o); }
Tensor Tensor::ne(const Tensor& o) const { return kiln::ne(*this, o); }
Tensor Tensor::lt(const Tensor& o) const { return kiln::lt(*this, o); }
Tensor Tensor::le(const Tensor& o) const { return kiln::le(*this, o); }
Tensor Tensor::gt(const Tensor& o) const { return kiln::gt(*this, o); }
Tensor Tensor::ge(const Tensor& o) const { return kiln::ge(*this, o); }

Tensor& Tensor::add_(const Tensor& o, const Scalar& alpha) {
  return binary_inplace<Op::add>(*this, times_alpha(*this, o, alpha, "add_"), "add_");
}
Tensor& Tensor::add_(const Scalar& o) { return binary_inplace<Op::add>(*this, wrap(*this, o), "add_"); }
Tensor& Tensor::sub_(const Tensor& o, const Scalar& alpha) {
  check_sub_operands(*this, o, "sub_");
  return binary_inplace<Op::sub>(*this, times_alpha(*this, o, alpha, "sub_"), "sub_");
}
Tensor& Tensor::sub_(const Scalar& o) { return sub_(wrap(*this, o)); }
Tensor& Tensor::mul_(const Tensor& o) { return binary_inplace<Op::mul>(*this, o, "mul_"); }
Tensor& Tensor::mul_(const Scalar& o) { return binary_inplace<Op::mul>(*this, wrap(*this, o), "mul_"); }
Tensor& Tensor::div_(const Tensor& o) {
  KILN_CHECK(!defined() || is_floating(), "div_: true division of a ", dtype(), " tensor in place can't keep its dtype");
  return binary_inplace<Op::div>(*this, o, "div_");
}
Tensor& Tensor::div_(const Scalar& o) { return div_(wrap(*this, o)); }

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator+(const Tensor& a, const Scalar& b) { return add(a, wrap(a, b)); }
Tensor operator-(const Tensor& a, const Scalar& b) { return sub(a, wrap(a, b)); }
Tensor operator*(const Tensor& a, const Scalar& b) { return mul(a, wrap(a, b)); }
Tensor operator/(const Tensor& a, const Scalar& b) { return div(a, wrap(a, b)); }
Tensor operator+(const Scalar& a, const Tensor& b) { return add(wrap(b, a), b); }
Tensor operator-(const Scalar& a, const Tensor& b) { return sub(wrap(b, a), b); }
Tensor operator*(const Scalar& a, const Tensor& b) { return mul(wrap(b, a), b); }
Tensor operator/(const Scalar& a, const Tensor& b) { return div(wrap(b, a), b); }
Tensor operator-(const Tensor& a) { return neg(a); }
Tensor operator==(const Tensor& a, const Tensor& b) { return eq(a, b); }
Tensor operator!=(const Tensor& a, const Tensor& b) { return ne(a, b); }
Tensor operator<(const Tensor& a, const Tensor& b) { return lt(a, b); }
Tensor operator<=(const Tensor& a, const Tensor& b) { return le(a, b); }
Tensor operator>(const Tensor& a, const Tensor& b) { return gt(a, b); }
Tensor operator>=(const Tensor& a, const Tensor& b) { return ge(a, b); }
Tensor operator==(const Tensor& a, const Scalar& b) { return eq(a, wrap(a, b)); }
Tensor operator!=(const Tensor& a, const Scalar& b) { return ne(a, wrap(a, b)); }
Tensor operator<(const Tensor& a, const Scalar& b) { return lt(a, wrap(a, b)); }
Tensor operator<=(const Tensor& a, const Scalar& b) { return le(a, wrap(a, b)); }
Tensor operator>(const Tensor& a, const Scalar& b) { return gt(a, wrap(a, b)); }
Tensor operator>=(const Tensor& a, const Scalar& b) { return ge(a, wrap(a, b)); }

}  // namespace kiln
