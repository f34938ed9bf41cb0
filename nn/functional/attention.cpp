// Dropout and scaled dot-product attention, written as compositions of differentiable ops (STYLE
// L4): their gradients come from mul, matmul, softmax and masked_fill. A fused attention kernel
// would be a later, measured promotion with this as its reference.
#include <cmath>
#include <limits>

#include "autograd/autocast.h"
#include "nn/functional.h"
#include "tensor/factories.h"

namespace kiln::nn::functional {

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  KILN_CHECK(p >= 0 && p <= 1, "dropout: probability has to be between 0 and 1, but got ", p);
  KILN_CHECK(x.is_floating(), "dropout: expected a floating tensor, got ", x.dtype());
  if (!training || p == 0) return x;
  if (p == 1) return x * 0.0;  // keeps the graph (and the shape), as torch's zeros-times-input does
  // Inverted dropout: kept elements are scaled now so evaluation needs no rescaling.
  Tensor keep = bernoulli(x.shape(), 1.0 - p, {.dtype = x.dtype(), .device = x.device()}, gen);
  keep.mul_(1.0 / (1.0 - p));
  return x * keep;
}

namespace {

void check_attention_shapes(const Tensor& q, const Tensor& k, const Tensor& v) {
  const char* op = "scaled_dot_product_attention";
  KILN_CHECK(q.dim() >= 2 && k.dim() >= 2, op, ": query and key need at least 2 dims, got ", q.shape(), ", ",
             k.shape());
  KILN_CHECK(q.is_floating() && q.dtype() == k.dtype(), op, ": query and key must share one floating dtype, got ",
             q.dtype(), ", ", k.dtype());
  KILN_CHECK(q.size(-1) == k.size(-1), op, ": query and key embedding sizes differ: ", q.shape(), " vs ", k.shape());
  if (!v.defined()) return;  // attention_weights alone
  KILN_CHECK(v.dim() >= 2 && v.dtype() == q.dtype(), op, ": value must have at least 2 dims and dtype ", q.dtype(),
             ", got ", v.shape(), " ", v.dtype());
  KILN_CHECK(k.size(-2) == v.size(-2), op, ": key and value sequence lengths differ: ", k.shape(), " vs ",
             v.shape());
}

}  // namespace

Tensor attention_weights(const Tensor& q, const Tensor& k, const AttentionArgs& args) {
  if (autocast::active()) {  // lower_precision, as scaled_dot_product_attention (its first half)
    AttentionArgs cast_args = args;
    cast_args.attn_mask = autocast::cast_lower(args.attn_mask);
    return autocast::run<autocast::Policy::lower_precision>(attention_weights, q, k, cast_args);
  }
  const char* op = "scaled_dot_product_attention";
  check_attention_shapes(q, k, Tensor());
  const int64_t L = q.size(-2), S = k.size(-2);
  const double scale = args.scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  Tensor scores = matmul(q, k.transpose(-2, -1)) * scale;  // (..., L, S)
  constexpr double kMinusInf = -std::numeric_limits<double>::infinity();
  if (args.is_causal) {
    KILN_CHECK(!args.attn_mask.defined(), op, ": pass either attn_mask or is_causal, not both");
    // Query i may attend to keys j <= i: torch's tril(ones(L, S)), aligned to the upper left.
    const Tensor future =
        arange(S, {.device = q.device()}).unsqueeze(0) > arange(L, {.device = q.device()}).unsqueeze(1);
    scores = masked_fill(scores, future, kMinusInf);
  }
  if (const Tensor& mask = args.attn_mask; mask.defined()) {
    if (mask.dtype() == DType::boolean) {
      scores = masked_fill(scores, logical_not(mask), kMinusInf);
    } else {
      KILN_CHECK(mask.is_floating(), op, ": attn_mask must be bool or floating, got ", mask.dtype());
      scores = scores + mask.to(scores.dtype());
    }
  }
  return softmax(scores, -1);
}

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args) {
  if (autocast::active()) {  // every floating argument, the float mask too, as torch
    AttentionArgs cast_args = args;
    cast_args.attn_mask = autocast::cast_lower(args.attn_mask);
    return autocast::run<autocast::Policy::lower_precision>(scaled_dot_product_attention, q, k, v, cast_args);
  }
  check_attention_shapes(q, k, v);
  KILN_CHECK(args.dropout_p >= 0 && args.dropout_p < 1,
             "scaled_dot_product_attention: dropout_p must be in [0, 1), got ", args.dropout_p);
  Tensor weights = attention_weights(q, k, args);
  if (args.dropout_p > 0) weights = dropout(weights, args.dropout_p, true, args.generator);
  return matmul(weights, v);
}

}  // namespace kiln::nn::functional
