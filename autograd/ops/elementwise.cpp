// Elementwise op definitions: checks, broadcasting, type promotion, output allocation, dispatch,
// and each op's derivative right after its forward. Kernels (kernels/cpu/unary.cpp, binary.cpp) see
// inputs already expanded to the output shape and converted to one compute dtype. Derivatives are
// compositions of these same ops, or one backward kernel for the activations every model runs
// (relu, gelu, silu; kernels/cpu/activation_backward.cpp). They never reduce broadcasting or cast
// back: the engine does (Note [One check of every gradient]).
#include "autograd/ops/elementwise.h"

#include <array>
#include <cmath>

#include "autograd/ops/reduce.h"
#include "autograd/record.h"
#include "tensor/dispatch.h"
#include "tensor/factories.h"
#include "tensor/type_promotion.h"
#include "tensor/view_impl.h"

namespace kiln {
namespace {

// float32 for the math functions of integer and bool tensors (torch's "int to float" ops).
DType float_compute(DType t) { return is_floating(t) ? t : DType::f32; }

Tensor as_dtype(const Tensor& t, DType d) { return t.dtype() == d ? t : t.to(d); }
// A kernel operand broadcast to the output's shape: a raw view, never recorded (the op records itself).
Tensor as_shape(const Tensor& t, const Dims& shape) { return t.shape() == shape ? t : detail::expand(t, shape); }

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

// The bytes t's elements span within its storage: [first, last).
std::pair<int64_t, int64_t> byte_span(const Tensor& t) {
  int64_t lo = t.storage_offset(), hi = t.storage_offset();
  for (int i = 0; i < t.dim(); ++i) {
    const int64_t reach = (t.shape()[i] - 1) * t.strides()[i];
    (reach < 0 ? lo : hi) += reach;
  }
  const int64_t size = static_cast<int64_t>(t.element_size());
  return {lo * size, (hi + 1) * size};
}

// An in-place op reads `other` while it writes `self`. Reading exactly the element being written
// (x.add_(x)) is safe; any other overlap (x.add_(x.t()), x.add_(x[0])) would read elements the
// kernel has already overwritten, so it is refused, as torch refuses it.
void check_no_partial_overlap(const Tensor& self, const Tensor& other, const char* name) {
  if (&self.storage() != &other.storage() || self.numel() == 0 || other.numel() == 0) return;
  if (self.data_ptr() == other.data_ptr() && self.shape() == other.shape() && self.strides() == other.strides() &&
      self.dtype() == other.dtype())
    return;
  const auto [a0, a1] = byte_span(self);
  const auto [b0, b1] = byte_span(other);
  KILN_CHECK(a1 <= b0 || b1 <= a0, name, ": the input (shape ", other.shape(), ", strides ", other.strides(),
             ") shares memory with the tensor written in place (shape ", self.shape(), ", strides ", self.strides(),
             ") without being the same view, so some of its elements would be read after being overwritten; "
             "clone() it first");
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
  check_no_partial_overlap(self, other, name);
  if (t != self.dtype()) {
    NoGradGuard untracked;  // the caller records the in-place op as a whole
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

// The default alpha of add and sub: an integer 1, which needs no checks and scales nothing.
bool is_unit(const Scalar& alpha) { return alpha.is_integral() && alpha.to_int() == 1; }

// alpha * b for a + alpha * b, in the dtype of the sum, so b is not first rounded to its own dtype.
// torch's rules: no floating alpha with integer results, no bool alpha with non-bool results.
Tensor times_alpha(const Tensor& a, const Tensor& b, const Scalar& alpha, const char* name) {
  check_defined(a, name);
  check_defined(b, name);
  if (is_unit(alpha)) return b;  // passes both checks below
  const DType t = result_type(a, b);
  KILN_CHECK(!alpha.is_bool() || t == DType::boolean, name, ": a bool alpha is only supported for bool results, got ",
             t);
  KILN_CHECK(!alpha.is_floating() || is_floating(t), name, ": for integral input tensors (", t,
             "), argument alpha must not be a floating point number, got ", alpha);
  if (alpha.to_double() == 1.0) return b;
  return mul(as_dtype(b, t), scalar_tensor(alpha, t, b.device()));
}

// ---- derivative helpers

// What a unary derivative reads besides the gradient; only that is saved for backward.
enum Saves : unsigned { kNothing = 0, kInput = 1, kOutput = 2 };

// Records a one-input op whose derivative is formula(g, x, y) (x and y as saved, else undefined).
template <unsigned saves, class F>
Tensor with_derivative(const char* name, const Tensor& x, Tensor out, F formula) {
  if (autograd::needs_grad(x))
    autograd::record(name, out, {x},
                     [sx = (saves & kInput) ? SavedTensor(x) : SavedTensor(),
                      sy = (saves & kOutput) ? SavedTensor(out) : SavedTensor(), formula](const Tensor& g, Needs) {
                       return formula(g, sx.get(), sy.get());
                     });
  return out;
}

// A tensor saved only when `wanted` (the other operand's gradient needs it).
SavedTensor save_if(bool wanted, const Tensor& t) { return wanted ? SavedTensor(t) : SavedTensor(); }

// g where the mask holds, 0 elsewhere: one pass, no multiply by a 0/1 tensor.
Tensor pass_where(const Tensor& mask, const Tensor& g) { return where(mask, g, Scalar(0)); }

constexpr double kTwoOverSqrtPi = 1.1283791670955126;  // erf'(0)

// g times an activation's derivative at the saved tensor, by one backward kernel.
template <Op op>
Tensor activation_backward(const Tensor& g, const Tensor& saved, const char* name) {
  const DType t = result_type(g, saved);
  return binary<op>(g, saved, name, t, t);
}

// The gradients of maximum/minimum: the winner takes g, a tie splits it equally (as torch 2.x).
Tensor winner_gradient(const Tensor& g, const Tensor& wins, const Tensor& ties) {
  return where(ties, g * 0.5, pass_where(wins, g));
}

}  // namespace

// ---- unary
Tensor abs(const Tensor& x) {
  return with_derivative<kInput>("abs", x, unary_same<Op::abs>(x, "abs"),
                                 [](const Tensor& g, const Tensor& x, const Tensor&) { return g * sign(x); });
}
Tensor neg(const Tensor& x) {
  KILN_CHECK(!x.defined() || x.dtype() != DType::boolean,
             "neg: negation of a bool tensor is not supported; use logical_not");
  return with_derivative<kNothing>("neg", x, unary_same<Op::neg>(x, "neg"),
                                   [](const Tensor& g, const Tensor&, const Tensor&) { return neg(g); });
}
Tensor exp(const Tensor& x) {
  return with_derivative<kOutput>("exp", x, unary_float<Op::exp>(x, "exp"),
                                  [](const Tensor& g, const Tensor&, const Tensor& y) { return g * y; });
}
Tensor log(const Tensor& x) {
  return with_derivative<kInput>("log", x, unary_float<Op::log>(x, "log"),
                                 [](const Tensor& g, const Tensor& x, const Tensor&) { return g / x; });
}
Tensor log1p(const Tensor& x) {
  return with_derivative<kInput>("log1p", x, unary_float<Op::log1p>(x, "log1p"),
                                 [](const Tensor& g, const Tensor& x, const Tensor&) { return g / (x + 1); });
}
Tensor expm1(const Tensor& x) {
  return with_derivative<kOutput>("expm1", x, unary_float<Op::expm1>(x, "expm1"),
                                  [](const Tensor& g, const Tensor&, const Tensor& y) { return g * (y + 1); });
}
Tensor sqrt(const Tensor& x) {
  return with_derivative<kOutput>("sqrt", x, unary_float<Op::sqrt>(x, "sqrt"),
                                  [](const Tensor& g, const Tensor&, const Tensor& y) { return g * 0.5 / y; });
}
Tensor rsqrt(const Tensor& x) {  // d/dx x^-1/2 = -1/2 y^3
  return with_derivative<kOutput>("rsqrt", x, unary_float<Op::rsqrt>(x, "rsqrt"),
                                  [](const Tensor& g, const Tensor&, const Tensor& y) { return g * -0.5 * y.pow(3); });
}
Tensor sin(const Tensor& x) {
  return with_derivative<kInput>("sin", x, unary_float<Op::sin>(x, "sin"),
                                 [](const Tensor& g, const Tensor& x, const Tensor&) { return g * cos(x); });
}
Tensor cos(const Tensor& x) {
  return with_derivative<kInput>("cos", x, unary_float<Op::cos>(x, "cos"),
                                 [](const Tensor& g, const Tensor& x, const Tensor&) { return g * -1 * sin(x); });
}
Tensor tanh(const Tensor& x) {
  return with_derivative<kOutput>("tanh", x, unary_float<Op::tanh>(x, "tanh"),
                                  [](const Tensor& g, const Tensor&, const Tensor& y) { return g * (1 - y * y); });
}
Tensor sigmoid(const Tensor& x) {
  return with_derivative<kOutput>("sigmoid", x, unary_float<Op::sigmoid>(x, "sigmoid"),
                                  [](const Tensor& g, const Tensor&, const Tensor& y) { return g * y * (1 - y); });
}
// relu' is taken as 0 at 0, as torch does; the output's sign is the mask.
Tensor relu(const Tensor& x) {
  KILN_CHECK(!x.defined() || x.dtype() != DType::boolean, "relu: not defined for bool tensors");
  return with_derivative<kOutput>("relu", x, unary_same<Op::relu>(x, "relu"),
                                  [](const Tensor& g, const Tensor&, const Tensor& y) {
                                    return activation_backward<Op::relu_backward>(g, y, "relu");
                                  });
}
Tensor gelu(const Tensor& x, std::string_view approximate) {
  if (approximate == "none")
    return with_derivative<kInput>(
        "gelu", x, unary_float<Op::gelu_erf>(x, "gelu"),
        [](const Tensor& g, const Tensor& x, const Tensor&) {
          return activation_backward<Op::gelu_erf_backward>(g, x, "gelu");
        });
  KILN_CHECK(approximate == "tanh", "gelu: approximate must be 'none' or 'tanh', got '", approximate, "'");
  return with_derivative<kInput>(
      "gelu", x, unary_float<Op::gelu_tanh>(x, "gelu"),
      [](const Tensor& g, const Tensor& x, const Tensor&) {
        return activation_backward<Op::gelu_tanh_backward>(g, x, "gelu");
      });
}
Tensor silu(const Tensor& x) {  // d/dx x s(x) = s (1 + x (1 - s))
  return with_derivative<kInput>("silu", x, unary_float<Op::silu>(x, "silu"),
                                 [](const Tensor& g, const Tensor& x, const Tensor&) {
                                   return activation_backward<Op::silu_backward>(g, x, "silu");
                                 });
}
// Above the threshold softplus is the identity, and so is its derivative.
Tensor softplus(const Tensor& x, double beta, double threshold) {
  KILN_CHECK(beta != 0, "softplus: beta must be nonzero");
  return with_derivative<kInput>("softplus", x, unary_param<Op::softplus>(x, "softplus", beta, threshold),
                                 [beta, threshold](const Tensor& g, const Tensor& x, const Tensor&) {
                                   const Tensor z = x * beta;
                                   return where(z > threshold, g, g * sigmoid(z));
                                 });
}
Tensor leaky_relu(const Tensor& x, double negative_slope) {
  return with_derivative<kInput>("leaky_relu", x, unary_param<Op::leaky_relu>(x, "leaky_relu", negative_slope, 0.0),
                                 [negative_slope](const Tensor& g, const Tensor& x, const Tensor&) {
                                   return where(x > 0, g, g * negative_slope);
                                 });
}
Tensor erf(const Tensor& x) {
  return with_derivative<kInput>(
      "erf", x, unary_float<Op::erf>(x, "erf"),
      [](const Tensor& g, const Tensor& x, const Tensor&) { return g * exp(x * x * -1) * kTwoOverSqrtPi; });
}
// Piecewise constant: a zero gradient (not none, so sign(x).sum().backward() works as in torch).
Tensor sign(const Tensor& x) {
  return with_derivative<kNothing>("sign", x, unary_same<Op::sign>(x, "sign"),
                                   [](const Tensor& g, const Tensor&, const Tensor&) { return zeros_like(g); });
}
Tensor reciprocal(const Tensor& x) {
  return with_derivative<kOutput>("reciprocal", x, unary_float<Op::reciprocal>(x, "reciprocal"),
                                  [](const Tensor& g, const Tensor&, const Tensor& y) { return g * -1 * y * y; });
}
Tensor logical_not(const Tensor& x) {
  check_defined(x, "logical_not");
  return unary<Op::logical_not>(x, "logical_not", x.dtype(), DType::boolean);
}

// The gradient passes where min <= x <= max (bounds included, as torch), and is 0 where clamped.
Tensor clamp(const Tensor& x, std::optional<Scalar> min, std::optional<Scalar> max) {
  check_defined(x, "clamp");
  KILN_CHECK(min || max, "clamp: at least one of min and max must be given");
  DType t = x.dtype();
  if (min) t = result_type(t, *min);
  if (max) t = result_type(t, *max);
  const Tensor xc = as_dtype(x, t);
  Tensor out = make_tensor(x.shape(), t, x.device());
  if (out.numel()) dispatch<Op::clamp>(x.device(), xc, min, max, out);
  return with_derivative<kInput>("clamp", x, std::move(out),
                                 [min, max](const Tensor& g, const Tensor& x, const Tensor&) {
                                   Tensor inside = min ? x >= *min : Tensor();
                                   if (max) inside = inside.defined() ? logical_and(inside, x <= *max) : x <= *max;
                                   return pass_where(inside, g);
                                 });
}

// ---- binary
namespace {
Tensor add_unscaled(const Tensor& a, const Tensor& b) {
  Tensor out = binary_promote<Op::add>(a, b, "add");
  if (autograd::needs_grad(a, b))
    autograd::record("add", out, {a, b}, [](const Tensor& g, Needs need) {
      return TensorList{need[0] ? g : Tensor(), need[1] ? g : Tensor()};
    });
  return out;
}
}  // namespace

Tensor add(const Tensor& a, const Tensor& b, const Scalar& alpha) {
  // Not through times_alpha for the default alpha: its returned copy of b's handle costs two atomic
  // updates, 15-20 ns of bench_autograd's ~100 ns add with grad mode off.
  return is_unit(alpha) ? add_unscaled(a, b) : add_unscaled(a, times_alpha(a, b, alpha, "add"));
}
Tensor sub(const Tensor& a, const Tensor& b, const Scalar& alpha) {
  check_sub_operands(a, b, "sub");
  const Tensor scaled = times_alpha(a, b, alpha, "sub");
  Tensor out = binary_promote<Op::sub>(a, scaled, "sub");
  if (autograd::needs_grad(a, scaled))
    autograd::record("sub", out, {a, scaled}, [](const Tensor& g, Needs need) {
      return TensorList{need[0] ? g : Tensor(), need[1] ? kiln::neg(g) : Tensor()};
    });
  return out;
}
Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_promote<Op::mul>(a, b, "mul");
  if (autograd::needs_grad(a, b))
    autograd::record("mul", out, {a, b},
                     [sa = save_if(autograd::requires_grad_of(b), a), sb = save_if(autograd::requires_grad_of(a), b)](
                         const Tensor& g, Needs need) {
                       return TensorList{need[0] ? g * sb.get() : Tensor(), need[1] ? g * sa.get() : Tensor()};
                     });
  return out;
}
// d(a/b)/db = -a/b^2 = -(g/b) * y: the quotient is saved instead of a.
Tensor div(const Tensor& a, const Tensor& b) {
  check_defined(a, "div");
  check_defined(b, "div");
  const DType t = float_compute(result_type(a, b));
  Tensor out = binary<Op::div>(a, b, "div", t, t);
  if (autograd::needs_grad(a, b))
    autograd::record(
        "div", out, {a, b},
        [sb = SavedTensor(b), sy = save_if(autograd::requires_grad_of(b), out)](const Tensor& g, Needs need) {
          const Tensor g_over_b = g / sb.get();
          return TensorList{need[0] ? g_over_b : Tensor(), need[1] ? g_over_b * sy.get() * -1 : Tensor()};
        });
  return out;
}
// torch's conventions at 0: a zero exponent gives the base no gradient (even at a = 0), and a zero
// base with a non-negative exponent gives the exponent none (instead of 0 * log 0 = NaN).
Tensor pow(const Tensor& a, const Tensor& b) {
  Tensor out = binary_promote<Op::pow>(a, b, "pow");
  if (autograd::needs_grad(a, b))
    autograd::record("pow", out, {a, b},
                     [sa = SavedTensor(a), sb = SavedTensor(b), sy = save_if(autograd::requires_grad_of(b), out)](
                         const Tensor& g, Needs need) {
                       const Tensor &a = sa.get(), &b = sb.get();
                       Tensor ga, gb;
                       if (need[0]) ga = where(b == 0, Scalar(0), g * b * pow(a, b - 1));
                       if (need[1]) gb = where(logical_and(a == 0, b >= 0), Scalar(0), g * sy.get() * log(a));
                       return TensorList{ga, gb};
                     });
  return out;
}
Tensor pow(const Tensor& a, const Scalar& e) {
  check_defined(a, "pow");
  const DType t = result_type(a, e);
  if (!is_floating(t)) {
    KILN_CHECK(e.is_bool() || e.to_int() >= 0, "pow: integers to negative integer powers are not allowed (", t,
               " tensor, exponent ", e, ")");
    return pow(a, wrap(a, e));
  }
  const double p = e.to_double();
  return with_derivative<kInput>("pow", a, unary_param<Op::pow_scalar>(as_dtype(a, t), "pow", p, 0.0),
                                 [p](const Tensor& g, const Tensor& a, const Tensor&) {
                                   return p == 0 ? zeros_like(g) : g * p * a.pow(p - 1);
                                 });
}
Tensor pow(const Scalar& base, const Tensor& e) { return pow(wrap(e, base), e); }
Tensor maximum(const Tensor& a, const Tensor& b) {
  Tensor out = binary_promote<Op::maximum>(a, b, "maximum");
  if (autograd::needs_grad(a, b))
    autograd::record("maximum", out, {a, b}, [sa = SavedTensor(a), sb = SavedTensor(b)](const Tensor& g, Needs need) {
      const Tensor &a = sa.get(), &b = sb.get();
      const Tensor ties = a == b;
      return TensorList{need[0] ? winner_gradient(g, a > b, ties) : Tensor(),
                        need[1] ? winner_gradient(g, b > a, ties) : Tensor()};
    });
  return out;
}
Tensor minimum(const Tensor& a, const Tensor& b) {
  Tensor out = binary_promote<Op::minimum>(a, b, "minimum");
  if (autograd::needs_grad(a, b))
    autograd::record("minimum", out, {a, b}, [sa = SavedTensor(a), sb = SavedTensor(b)](const Tensor& g, Needs need) {
      const Tensor &a = sa.get(), &b = sb.get();
      const Tensor ties = a == b;
      return TensorList{need[0] ? winner_gradient(g, a < b, ties) : Tensor(),
                        need[1] ? winner_gradient(g, b < a, ties) : Tensor()};
    });
  return out;
}
// a = b * floor(a / b) + y, so d/db = -floor(a / b) = (y - a) / b.
Tensor remainder(const Tensor& a, const Tensor& b) {
  Tensor out = binary_promote<Op::remainder>(a, b, "remainder");
  if (autograd::needs_grad(a, b))
    autograd::record(
        "remainder", out, {a, b},
        [sa = save_if(autograd::requires_grad_of(b), a), sb = save_if(autograd::requires_grad_of(b), b),
         sy = save_if(autograd::requires_grad_of(b), out)](const Tensor& g, Needs need) {
          return TensorList{need[0] ? g : Tensor(), need[1] ? g * (sy.get() - sa.get()) / sb.get() : Tensor()};
        });
  return out;
}
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
    dispatch<Op::where>(device, as_shape(cond, shape), as_shape(as_dtype(a, t), shape), as_shape(as_dtype(b, t), shape),
                        out);
  if (autograd::needs_grad(a, b))
    autograd::record("where", out, {a, b}, [sc = SavedTensor(cond)](const Tensor& g, Needs need) {
      const Tensor& cond = sc.get();
      return TensorList{need[0] ? pass_where(cond, g) : Tensor(), need[1] ? where(cond, Scalar(0), g) : Tensor()};
    });
  return out;
}
Tensor where(const Tensor& cond, const Tensor& a, const Scalar& b) { return where(cond, a, wrap(a, b)); }
Tensor where(const Tensor& cond, const Scalar& a, const Tensor& b) { return where(cond, wrap(b, a), b); }

// A composition: where() records the derivative (g where the mask is off).
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
  NoGradGuard untracked;
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

// ---- in place. Each records like its out-of-place form, with self among both the inputs and the
// outputs: attach() makes the new node self's history and the old history its input 0. A formula
// that needs self's old value saves a copy taken before the change, and only then.

namespace {
bool shares_storage(const Tensor& a, const Tensor& b) { return &a.storage() == &b.storage(); }
// `other` as backward will read it: a copy when the in-place op is about to overwrite it (x.mul_(x)).
SavedTensor save_operand(const Tensor& self, const Tensor& other) {
  return SavedTensor(shares_storage(self, other) ? other.detach().clone() : other);
}
}  // namespace

Tensor& Tensor::add_(const Tensor& o, const Scalar& alpha) {
  autograd::check_inplace(*this, "add_");
  const Tensor scaled = times_alpha(*this, o, alpha, "add_");
  detail::check_untracked_write(*this, scaled, "add_");
  binary_inplace<Op::add>(*this, scaled, "add_");
  if (autograd::needs_grad(*this, scaled))
    autograd::record("add_", *this, {*this, scaled}, [](const Tensor& g, Needs need) {
      return TensorList{need[0] ? g : Tensor(), need[1] ? g : Tensor()};
    });
  return *this;
}
Tensor& Tensor::add_(const Scalar& o) { return add_(wrap(*this, o)); }
Tensor& Tensor::sub_(const Tensor& o, const Scalar& alpha) {
  autograd::check_inplace(*this, "sub_");
  check_sub_operands(*this, o, "sub_");
  const Tensor scaled = times_alpha(*this, o, alpha, "sub_");
  detail::check_untracked_write(*this, scaled, "sub_");
  binary_inplace<Op::sub>(*this, scaled, "sub_");
  if (autograd::needs_grad(*this, scaled))
    autograd::record("sub_", *this, {*this, scaled}, [](const Tensor& g, Needs need) {
      return TensorList{need[0] ? g : Tensor(), need[1] ? kiln::neg(g) : Tensor()};
    });
  return *this;
}
Tensor& Tensor::sub_(const Scalar& o) { return sub_(wrap(*this, o)); }
Tensor& Tensor::mul_(const Tensor& o) {
  check_defined(*this, "mul_");
  check_defined(o, "mul_");
  autograd::check_inplace(*this, "mul_");
  detail::check_untracked_write(*this, o, "mul_");
  const bool recording = autograd::needs_grad(*this, o);
  SavedTensor self_before, other;
  if (recording && autograd::requires_grad_of(o)) self_before = SavedTensor(detach().clone());
  if (recording && requires_grad()) other = save_operand(*this, o);
  binary_inplace<Op::mul>(*this, o, "mul_");
  if (recording)
    autograd::record("mul_", *this, {*this, o}, [self_before, other](const Tensor& g, Needs need) {
      return TensorList{need[0] ? g * other.get() : Tensor(), need[1] ? g * self_before.get() : Tensor()};
    });
  return *this;
}
Tensor& Tensor::mul_(const Scalar& o) { return mul_(wrap(*this, o)); }
// d(self / o)/do = -(g / o) * result: the result (self after the change) is saved, not a copy.
Tensor& Tensor::div_(const Tensor& o) {
  KILN_CHECK(!defined() || is_floating(), "div_: true division of a ", dtype(),
             " tensor in place can't keep its dtype");
  check_defined(*this, "div_");
  check_defined(o, "div_");
  autograd::check_inplace(*this, "div_");
  detail::check_untracked_write(*this, o, "div_");
  const bool recording = autograd::needs_grad(*this, o);
  const SavedTensor divisor = recording ? save_operand(*this, o) : SavedTensor();
  binary_inplace<Op::div>(*this, o, "div_");
  if (recording)
    autograd::record("div_", *this, {*this, o},
                     [divisor, result = save_if(autograd::requires_grad_of(o), *this)](const Tensor& g, Needs need) {
                       const Tensor g_over_o = g / divisor.get();
                       return TensorList{need[0] ? g_over_o : Tensor(),
                                         need[1] ? g_over_o * result.get() * -1 : Tensor()};
                     });
  return *this;
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
