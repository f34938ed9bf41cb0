// Matrix product and softmax op definitions: checks, torch's matmul rank rules, output allocation,
// dispatch, derivatives. The primitives are mm, bmm, addmm, softmax and log_softmax, each with its
// derivative; matmul is a composition of them (views and reshapes around one product), so every
// rank case gets its gradient from theirs. linear records one node of its own, so that the weight's
// gradient comes out contiguous as (out, in). Kernels: kernels/cpu/matmul.cpp, kernels/cpu/softmax.cpp.
#include "autograd/ops/linalg.h"

#include <algorithm>
#include <span>

#include "autograd/autocast.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/reduce.h"
#include "autograd/record.h"
#include "tensor/dispatch.h"
#include "tensor/type_promotion.h"

namespace kiln {
namespace {

void check_defined(const Tensor& t, const char* op) { KILN_CHECK(t.defined(), op, ": got an undefined tensor"); }

// An operand saved for backward only when the other operand's gradient needs it.
SavedTensor save_if(bool wanted, const Tensor& t) { return wanted ? SavedTensor(t) : SavedTensor(); }
Tensor scaled(const Tensor& t, double factor) { return factor == 1.0 ? t : t * factor; }

// The checks every product shares: defined, one device, one dtype (torch does not promote here),
// a dtype with a kernel.
Device check_operands(const Tensor& a, const Tensor& b, const char* op) {
  check_defined(a, op);
  check_defined(b, op);
  const Tensor both[] = {a, b};
  const Device device = common_device(both, op);
  KILN_CHECK(a.dtype() == b.dtype(), op, ": expected both operands to have the same dtype, got ", a.dtype(), " and ",
             b.dtype());
  KILN_CHECK(a.dtype() != DType::boolean, op,
             ": bool tensors are not supported; convert them to an integer or floating dtype first");
  return device;
}

void check_inner(const Tensor& a, const Tensor& b, int64_t ka, int64_t kb, const char* op) {
  KILN_CHECK(ka == kb, op, ": shapes ", a.shape(), " and ", b.shape(), " cannot be multiplied (", ka, " != ", kb, ")");
}

void check_rank(const Tensor& t, int rank, const char* op, const char* which) {
  KILN_CHECK(t.dim() == rank, op, ": expected ", which, " to be ", rank, "-d, got shape ", t.shape());
}

// Integer products take integer alpha and beta only (torch's rule): a float would be truncated.
void check_scalars(DType t, const Scalar& beta, const Scalar& alpha, const char* op) {
  if (is_floating(t)) return;
  KILN_CHECK(!beta.is_floating() && !alpha.is_floating(), op, ": for ", t,
             " tensors, beta and alpha must be integers, got beta = ", beta, ", alpha = ", alpha);
}

// t viewed (or copied) as a matrix: its leading dims folded into rows. Counts rows by hand, since
// reshape's -1 cannot infer them when the last dim is 0.
Tensor fold_rows(const Tensor& t) {
  int64_t rows = 1;
  for (int d = 0; d < t.dim() - 1; ++d) rows *= t.size(d);
  return t.reshape({rows, t.size(-1)});
}

// The broadcast of the batch dims (all but the last two) of a and b, as torch.matmul takes them.
Dims broadcast_batch(const Tensor& a, const Tensor& b) {
  const Dims a_batch(std::span<const int64_t>(a.shape()).first(a.dim() - 2));
  const Dims b_batch(std::span<const int64_t>(b.shape()).first(b.dim() - 2));
  const int n = std::max(a_batch.size(), b_batch.size());
  for (int i = 0; i < n; ++i) {
    const int ia = i - (n - a_batch.size()), ib = i - (n - b_batch.size());
    const int64_t sa = ia >= 0 ? a_batch[ia] : 1, sb = ib >= 0 ? b_batch[ib] : 1;
    KILN_CHECK(sa == sb || sa == 1 || sb == 1, "matmul: batch dims of shapes ", a.shape(), " and ", b.shape(),
               " cannot be broadcast (", sa, " vs ", sb, ")");
  }
  return broadcast_shapes(a_batch, b_batch, "matmul");
}

template <Op op>
Tensor softmax_like(const Tensor& x, int64_t dim, const char* name) {
  check_defined(x, name);
  KILN_CHECK(is_floating(x.dtype()), name, ": expected a floating dtype, got ", x.dtype());
  // A 0-d tensor is a row of one element, as torch treats it (dim 0 or -1).
  if (x.dim() == 0) {
    wrap_dim(dim, 1, name);
    return softmax_like<op>(x.view({1}), 0, name).view({});
  }
  const int d = wrap_dim(dim, x.dim(), name);
  Tensor out = make_tensor(x.shape(), x.dtype(), x.device());
  if (out.numel()) dispatch<op>(x.device(), x, d, out);
  // Both derivatives read the output only: softmax y (g - sum(g y)), log_softmax g - e^y sum(g).
  if (autograd::needs_grad(x))
    autograd::record(name, out, {x}, [sy = SavedTensor(out), d](const Tensor& g, Needs) {
      const Tensor& y = sy.get();
      if constexpr (op == Op::softmax) return y * (g - (g * y).sum({d}, true));
      else return g - exp(y) * g.sum({d}, true);
    });
  return out;
}

}  // namespace

Tensor mm(const Tensor& a, const Tensor& b) {
  if (autocast::active()) return autocast::run<autocast::Policy::lower_precision>(mm, a, b);
  const Device device = check_operands(a, b, "mm");
  check_rank(a, 2, "mm", "the first operand");
  check_rank(b, 2, "mm", "the second operand");
  check_inner(a, b, a.size(1), b.size(0), "mm");
  Tensor out = make_tensor({a.size(0), b.size(1)}, a.dtype(), device);
  if (out.numel()) dispatch<Op::mm>(device, a, b, out);
  if (autograd::needs_grad(a, b))
    autograd::record(
        "mm", out, {a, b},
        [sa = save_if(autograd::requires_grad_of(b), a), sb = save_if(autograd::requires_grad_of(a), b)](
            const Tensor& g, Needs need) {
          return TensorList{need[0] ? mm(g, sb.get().t()) : Tensor(), need[1] ? mm(sa.get().t(), g) : Tensor()};
        });
  return out;
}

Tensor bmm(const Tensor& a, const Tensor& b) {
  if (autocast::active()) return autocast::run<autocast::Policy::lower_precision>(bmm, a, b);
  const Device device = check_operands(a, b, "bmm");
  check_rank(a, 3, "bmm", "the first operand");
  check_rank(b, 3, "bmm", "the second operand");
  KILN_CHECK(a.size(0) == b.size(0), "bmm: batch sizes of ", a.shape(), " and ", b.shape(), " differ (", a.size(0),
             " != ", b.size(0), ")");
  check_inner(a, b, a.size(2), b.size(1), "bmm");
  Tensor out = make_tensor({a.size(0), a.size(1), b.size(2)}, a.dtype(), device);
  if (out.numel()) dispatch<Op::bmm>(device, a, b, out);
  if (autograd::needs_grad(a, b))
    autograd::record("bmm", out, {a, b},
                     [sa = save_if(autograd::requires_grad_of(b), a), sb = save_if(autograd::requires_grad_of(a), b)](
                         const Tensor& g, Needs need) {
                       return TensorList{need[0] ? bmm(g, sb.get().transpose(1, 2)) : Tensor(),
                                         need[1] ? bmm(sa.get().transpose(1, 2), g) : Tensor()};
                     });
  return out;
}

Tensor addmm(const Tensor& bias, const Tensor& a, const Tensor& b, const Scalar& beta, const Scalar& alpha) {
  if (autocast::active()) return autocast::run<autocast::Policy::lower_precision>(addmm, bias, a, b, beta, alpha);
  const Device device = check_operands(a, b, "addmm");
  check_defined(bias, "addmm");
  const Tensor all3[] = {bias, a, b};
  common_device(all3, "addmm");
  KILN_CHECK(bias.dtype() == a.dtype(), "addmm: expected bias to have the operands' dtype ", a.dtype(), ", got ",
             bias.dtype());
  check_rank(a, 2, "addmm", "the first operand");
  check_rank(b, 2, "addmm", "the second operand");
  check_inner(a, b, a.size(1), b.size(0), "addmm");
  check_scalars(a.dtype(), beta, alpha, "addmm");
  const Dims shape{a.size(0), b.size(1)};
  KILN_CHECK(bias.dim() <= 2 && broadcast_shapes(bias.shape(), shape, "addmm") == shape, "addmm: bias of shape ",
             bias.shape(), " does not broadcast to the product's shape ", shape);
  Tensor out = make_tensor(shape, a.dtype(), device);
  const double beta_ = beta.to_double(), alpha_ = alpha.to_double();
  if (out.numel()) dispatch<Op::addmm>(device, bias.detach_view().expand(shape), a, b, beta_, alpha_, out);
  // out = beta bias + alpha a b; the engine sums the bias gradient back to the bias's shape.
  if (autograd::needs_grad(bias, a, b))
    autograd::record("addmm", out, {bias, a, b},
                     [sa = save_if(autograd::requires_grad_of(b), a), sb = save_if(autograd::requires_grad_of(a), b),
                      beta_, alpha_](const Tensor& g, Needs need) {
                       return TensorList{need[0] ? scaled(g, beta_) : Tensor(),
                                         need[1] ? scaled(mm(g, sb.get().t()), alpha_) : Tensor(),
                                         need[2] ? scaled(mm(sa.get().t(), g), alpha_) : Tensor()};
                     });
  return out;
}

// torch.matmul. 1-d operands become a row (left) or a column (right) and lose that dim again at
// the end; an N-d @ 1-d/2-d product folds a's batch dims into its rows (one mm, no copy when a's
// layout allows); otherwise batch dims broadcast and the product is one bmm.
Tensor matmul(const Tensor& a, const Tensor& b) {
  if (autocast::active()) return autocast::run<autocast::Policy::lower_precision>(matmul, a, b);
  check_defined(a, "matmul");
  check_defined(b, "matmul");
  KILN_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both operands need at least 1 dim, got shapes ", a.shape(),
             " and ", b.shape());
  check_operands(a, b, "matmul");
  const int64_t kb = b.dim() == 1 ? b.size(0) : b.size(-2);
  check_inner(a, b, a.size(-1), kb, "matmul");

  if (a.dim() <= 2 && b.dim() <= 2) {
    const Tensor a2 = a.dim() == 1 ? a.unsqueeze(0) : a;
    const Tensor b2 = b.dim() == 1 ? b.unsqueeze(1) : b;
    Tensor out = mm(a2, b2);
    if (b.dim() == 1) out = out.squeeze(1);
    if (a.dim() == 1) out = out.squeeze(0);
    return out;
  }
  if (b.dim() <= 2) {
    const Tensor b2 = b.dim() == 1 ? b.unsqueeze(1) : b;
    Dims shape = a.shape();
    shape[shape.size() - 1] = b2.size(1);
    if (b.dim() == 1) shape.erase(shape.size() - 1);
    return mm(fold_rows(a), b2).view(shape);
  }

  const Tensor a3 = a.dim() == 1 ? a.unsqueeze(0) : a;
  const Tensor b3 = b.dim() == 1 ? b.unsqueeze(1) : b;
  const int64_t M = a3.size(-2), K = a3.size(-1), N = b3.size(-1);
  const Dims batch = broadcast_batch(a3, b3);
  const int64_t B = checked_numel(batch, "matmul");
  auto batched = [&](const Tensor& t, int64_t rows, int64_t cols) {
    Dims full = batch;
    full.push_back(rows);
    full.push_back(cols);
    return t.expand(full).reshape({B, rows, cols});
  };
  Tensor out = bmm(batched(a3, M, K), batched(b3, K, N));
  Dims shape = batch;
  if (a.dim() > 1) shape.push_back(M);
  if (b.dim() > 1) shape.push_back(N);
  return out.view(shape);
}

namespace {
void check_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const char* op) {
  check_defined(x, op);
  check_defined(weight, op);
  KILN_CHECK(weight.dim() == 2, op, ": expected a 2-d weight (out_features, in_features), got shape ",
             weight.shape());
  KILN_CHECK(x.dim() >= 1, op, ": expected an input with at least 1 dim, got shape ", x.shape());
  KILN_CHECK(x.size(-1) == weight.size(1), op, ": input of shape ", x.shape(), " and weight of shape ",
             weight.shape(), " cannot be multiplied (", x.size(-1), " != ", weight.size(1),
             "; weight is (out_features, in_features))");
  if (!bias.defined()) return;
  KILN_CHECK(bias.dtype() == x.dtype(), op, ": expected bias to have the input's dtype ", x.dtype(), ", got ",
             bias.dtype());
  KILN_CHECK(bias.dim() == 0 || bias.size(-1) == 1 || bias.size(-1) == weight.size(0), op, ": bias of shape ",
             bias.shape(), " does not match the ", weight.size(0), " output features of weight ", weight.shape());
}

// x's shape with its last dim replaced by the layer's output features.
Dims linear_shape(const Tensor& x, const Tensor& weight) {
  Dims shape = x.shape();
  shape[shape.size() - 1] = weight.size(0);
  return shape;
}

// t as a matrix: a vector is one row, leading dims fold into the rows.
Tensor as_rows(const Tensor& t) { return fold_rows(t.dim() == 1 ? t.unsqueeze(0) : t); }

// What the gradients of x and weight read: each side saved only when the other needs a gradient.
struct LinearSaved {
  SavedTensor x, weight;
  Dims x_shape;
};
LinearSaved save_linear(const Tensor& x, const Tensor& weight) {
  return {save_if(autograd::requires_grad_of(weight), x), save_if(autograd::requires_grad_of(x), weight), x.shape()};
}

// linear's gradients from its output's gradient g. With rows = x folded to (R, in) and g to
// (R, out): dx = g w, dw = g^T x (contiguous), db = sum_R g.
TensorList linear_grads(const Tensor& g, const LinearSaved& s, Needs need) {
  const Tensor g2 = as_rows(g);
  Tensor gx, gw, gb;
  if (need[0]) gx = mm(g2, s.weight.get()).view(s.x_shape);
  if (need[1]) gw = mm(g2.t(), as_rows(s.x.get()));
  if (need[2]) gb = g2.sum({0});
  return TensorList{gx, gw, gb};
}
}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (autocast::active()) return autocast::run<autocast::Policy::lower_precision>(linear, x, weight, bias);
  check_linear(x, weight, bias, "linear");
  if (bias.defined() && bias.dim() > 1) return matmul(x, weight.t()) + bias;  // a bias with batch dims of its own
  const Dims shape = linear_shape(x, weight);
  Tensor out;
  {
    NoGradGuard untracked;  // one node for the whole op, recorded below
    const Tensor x2 = as_rows(x);
    const Tensor wt = weight.t();  // a transposed view: oneDNN reads it in place
    out = (bias.defined() ? addmm(bias, x2, wt) : mm(x2, wt)).view(shape);
  }
  if (autograd::needs_grad(x, weight, bias))
    autograd::record("linear", out, {x, weight, bias},
                     [s = save_linear(x, weight)](const Tensor& g, Needs need) { return linear_grads(g, s, need); });
  return out;
}

// Note [Fused linear and ReLU]: relu(linear(x)) is the most common pair in a network. As two ops
// it writes the product, then reads it back and writes a new tensor for the ReLU, and records two
// nodes. Fused, the ReLU runs in place on the product while it is still in cache, and one node does
// both backwards: relu_backward, then the bias's sum and the two products (figures in
// bench/README.md, "Fusions"). Values and gradients are the composition's, bit for bit. oneDNN's
// ReLU post-op is not used: it turns NaN into 0, where torch's relu keeps it. A one-pass
// relu_backward with column sums for the bias's gradient was tried and lost inside the training
// loop, where its inputs arrive cold from memory. A non-floating dtype or a bias with batch dims
// takes the composition. nn::LinearReLU is this op as a layer.
Tensor linear_relu(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (autocast::active()) return autocast::run<autocast::Policy::lower_precision>(linear_relu, x, weight, bias);
  check_linear(x, weight, bias, "linear_relu");
  if (!is_floating(x.dtype()) || (bias.defined() && bias.dim() > 1)) return relu(linear(x, weight, bias));
  Tensor out;
  {
    NoGradGuard untracked;  // one node for the whole op, recorded below
    out = linear(x, weight, bias);
  }
  if (out.numel()) dispatch<Op::relu>(out.device(), out, out);
  if (autograd::needs_grad(x, weight, bias))
    autograd::record("linear_relu", out, {x, weight, bias},
                     [s = save_linear(x, weight), sy = SavedTensor(out)](const Tensor& g, Needs need) {
                       const Tensor& y = sy.get();
                       Tensor masked = make_tensor(y.shape(), y.dtype(), y.device());
                       if (masked.numel()) dispatch<Op::relu_backward>(y.device(), g, y, masked);
                       return linear_grads(masked, s, need);
                     });
  return out;
}

Tensor cross_entropy_rows(const Tensor& logits, const Tensor& target, int64_t ignore_index) {
  if (autocast::active())
    return autocast::run<autocast::Policy::fp32>(cross_entropy_rows, logits, target, ignore_index);
  const char* op = "cross_entropy";
  check_defined(logits, op);
  check_defined(target, op);
  KILN_CHECK(logits.dim() == 2, op, ": expected (N, C) logits, got shape ", logits.shape());
  KILN_CHECK(target.dim() == 1 && target.size(0) == logits.size(0), op, ": input ", logits.shape(),
             " needs a target of shape [", logits.size(0), "], got ", target.shape());
  KILN_CHECK(target.dtype() == DType::i64 || target.dtype() == DType::i32, op,
             ": class-index targets must be int64 (or int32), got ", target.dtype());
  const Tensor both[] = {logits, target};
  const Device device = common_device(both, op);
  Tensor x, t;
  {
    NoGradGuard untracked;  // the node below takes the gradient straight to logits
    x = logits.contiguous();
    t = target.to(DType::i64).contiguous();
  }
  const int64_t rows = x.size(0);
  Tensor loss = make_tensor({rows}, x.dtype(), device);
  Tensor stats = make_tensor({rows, 2}, x.dtype(), device);
  if (rows) dispatch<Op::cross_entropy>(device, x, t, ignore_index, loss, stats);
  if (autograd::needs_grad(logits))
    autograd::record(op, loss, {logits},
                     [sx = SavedTensor(x), t, stats, ignore_index](const Tensor& g, Needs) {
                       const Tensor& x = sx.get();
                       Tensor grad = make_tensor(x.shape(), x.dtype(), x.device());
                       if (grad.numel())
                         dispatch<Op::cross_entropy_backward>(x.device(), x, t, ignore_index, stats, g, grad);
                       return grad;
                     });
  return loss;
}

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_like<Op::softmax>(x, dim, "softmax"); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_like<Op::log_softmax>(x, dim, "log_softmax"); }

Tensor Tensor::matmul(const Tensor& other) const { return kiln::matmul(*this, other); }
Tensor Tensor::mm(const Tensor& other) const { return kiln::mm(*this, other); }
Tensor Tensor::bmm(const Tensor& other) const { return kiln::bmm(*this, other); }
Tensor Tensor::softmax(int64_t dim) const { return kiln::softmax(*this, dim); }
Tensor Tensor::log_softmax(int64_t dim) const { return kiln::log_softmax(*this, dim); }

}  // namespace kiln
