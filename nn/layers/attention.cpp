// MultiheadAttention and TransformerBlock (see attention.h). The heads are a reshape of one
// projection; attention itself is nn::functional's composite.
#include "nn/layers/attention.h"

#include <cmath>
#include <limits>

#include "autograd/ops/indexing.h"
#include "nn/functional.h"
#include "nn/init.h"
#include "tensor/factories.h"

namespace kiln::nn {

MultiheadAttention::MultiheadAttention(int64_t e, int64_t heads, MultiheadAttentionOptions opts)
    : Module("MultiheadAttention"), embed_dim(e), num_heads(heads), head_dim(heads > 0 ? e / heads : 0),
      options(opts) {
  KILN_CHECK(heads > 0 && e > 0 && e % heads == 0, "MultiheadAttention: embed_dim (", e,
             ") must be divisible by num_heads (", heads, ")");
  KILN_CHECK(opts.dropout >= 0 && opts.dropout < 1, "MultiheadAttention: dropout must be in [0, 1), got ",
             opts.dropout);
  in_proj_weight = register_parameter("in_proj_weight", empty({3 * e, e}));
  if (opts.bias) in_proj_bias = register_parameter("in_proj_bias", empty({3 * e}));
  out_proj = register_module("out_proj", std::make_shared<Linear>(e, e, LinearOptions{.bias = opts.bias}));
  reset_parameters();
}

void MultiheadAttention::reset_parameters(Generator* gen) {
  init::xavier_uniform_(in_proj_weight, 1.0, gen);
  out_proj->reset_parameters(gen);
  if (options.bias) {
    init::zeros_(in_proj_bias);
    init::zeros_(out_proj->bias);
  }
}

namespace {

constexpr double kMinusInf = -std::numeric_limits<double>::infinity();

// A bool mask (true = masked out) as an additive float mask; a float mask as it is.
Tensor additive(const Tensor& mask, DType dtype, const char* what) {
  if (mask.dtype() == DType::boolean)
    return masked_fill(zeros(mask.shape(), {.dtype = dtype, .device = mask.device()}), mask, kMinusInf);
  KILN_CHECK(mask.is_floating(), "MultiheadAttention: ", what, " must be bool or floating, got ", mask.dtype());
  return mask.to(dtype);
}

}  // namespace

AttentionOutput MultiheadAttention::forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                            const AttentionArgs& args) {
  const char* op = "MultiheadAttention";
  KILN_CHECK(query.dim() == 3 || query.dim() == 2, op, ": query must be 3-d (batched) or 2-d (unbatched), got ",
             query.shape());
  KILN_CHECK(key.dim() == query.dim() && value.dim() == query.dim(), op,
             ": query, key and value must have the same number of dims, got ", query.shape(), ", ", key.shape(), ", ",
             value.shape());
  const bool unbatched = query.dim() == 2;
  const bool batch_first = options.batch_first || unbatched;  // unbatched: (L, E) is treated as (1, L, E)
  auto to_nle = [&](const Tensor& t) {
    if (unbatched) return t.unsqueeze(0);
    return batch_first ? t : t.transpose(0, 1);
  };
  const Tensor q = to_nle(query), k = to_nle(key), v = to_nle(value);
  const int64_t N = q.size(0), L = q.size(1), S = k.size(1), E = embed_dim, H = num_heads, Dh = head_dim;
  KILN_CHECK(q.size(2) == E && k.size(2) == E && v.size(2) == E, op, ": expected embedding size ", E,
             " in query, key and value, got ", query.shape(), ", ", key.shape(), ", ", value.shape());
  KILN_CHECK(k.size(0) == N && v.size(0) == N && v.size(1) == S, op, ": key and value must match query's batch and ",
             "each other's length, got ", query.shape(), ", ", key.shape(), ", ", value.shape());

  const std::vector<Tensor> w = split(in_proj_weight, E, 0);
  const std::vector<Tensor> b = in_proj_bias.defined() ? split(in_proj_bias, E, 0) : std::vector<Tensor>(3);
  auto heads = [&](const Tensor& x, int64_t len) { return x.reshape({N, len, H, Dh}).transpose(1, 2); };
  const Tensor qh = heads(F::linear(q, w[0], b[0]), L);  // (N, H, L, Dh)
  const Tensor kh = heads(F::linear(k, w[1], b[1]), S);
  const Tensor vh = heads(F::linear(v, w[2], b[2]), S);

  Tensor mask;  // additive, broadcasting to (N, H, L, S)
  if (args.attn_mask.defined()) {
    const Tensor& m = args.attn_mask;
    const bool per_head = m.dim() == 3;
    KILN_CHECK((m.dim() == 2 && m.shape() == Dims({L, S})) || (per_head && m.shape() == Dims({N * H, L, S})), op,
               ": attn_mask must have shape [", L, ", ", S, "] or [", N * H, ", ", L, ", ", S, "], got ", m.shape());
    mask = additive(per_head ? m.view({N, H, L, S}) : m, q.dtype(), "attn_mask");
  } else if (args.is_causal) {
    const Tensor future = arange(S).unsqueeze(0) > arange(L).unsqueeze(1);
    mask = additive(future, q.dtype(), "attn_mask");
  }
  if (args.key_padding_mask.defined()) {
    const Tensor& m = args.key_padding_mask;
    KILN_CHECK(m.shape() == Dims({N, S}) || (unbatched && m.shape() == Dims({S})), op,
               ": key_padding_mask must have shape [", N, ", ", S, "], got ", m.shape());
    const Tensor padding = additive(m, q.dtype(), "key_padding_mask").reshape({N, 1, 1, S});
    mask = mask.defined() ? mask + padding : padding;
  }

  Tensor weights = F::attention_weights(qh, kh, {.attn_mask = mask});  // (N, H, L, S)
  if (is_training() && options.dropout > 0) weights = F::dropout(weights, options.dropout, true, options.generator);
  Tensor out = out_proj->forward(matmul(weights, vh).transpose(1, 2).reshape({N, L, E}));

  AttentionOutput result;
  result.output = unbatched ? out.squeeze(0) : (batch_first ? out : out.transpose(0, 1));
  if (args.need_weights) {
    result.weights = args.average_attn_weights ? weights.mean({1}) : weights;
    if (unbatched) result.weights = result.weights.squeeze(0);
  }
  return result;
}

Tensor MultiheadAttention::forward(const Tensor& x) { return forward(x, x, x, {.need_weights = false}).output; }

TransformerBlock::TransformerBlock(int64_t d, int64_t heads, TransformerBlockOptions opts)
    : Module("TransformerBlock") {
  const int64_t hidden = opts.mlp_hidden > 0 ? opts.mlp_hidden : 4 * d;
  ln1 = register_module("ln1", std::make_shared<LayerNorm>(d, LayerNormOptions{.eps = opts.layer_norm_eps}));
  attn = register_module("attn", std::make_shared<MultiheadAttention>(
                                      d, heads, MultiheadAttentionOptions{.dropout = opts.dropout, .bias = opts.bias,
                                                                          .batch_first = true,
                                                                          .generator = opts.generator}));
  ln2 = register_module("ln2", std::make_shared<LayerNorm>(d, LayerNormOptions{.eps = opts.layer_norm_eps}));
  mlp = register_module("mlp", std::make_shared<Sequential>(std::initializer_list<ModulePtr>{
                                   std::make_shared<Linear>(d, hidden, LinearOptions{.bias = opts.bias}),
                                   std::make_shared<GELU>(),
                                   std::make_shared<Linear>(hidden, d, LinearOptions{.bias = opts.bias}),
                                   std::make_shared<Dropout>(opts.dropout, opts.generator)}));
  resid_dropout = register_module("resid_dropout", std::make_shared<Dropout>(opts.dropout, opts.generator));
}

Tensor TransformerBlock::forward(const Tensor& x) {
  KILN_CHECK(x.dim() == 3, "TransformerBlock: expected x of shape (N, T, d_model), got ", x.shape());
  const Tensor h = ln1->forward(x);
  const Tensor y =
      x + resid_dropout->forward(attn->forward(h, h, h, {.need_weights = false, .is_causal = true}).output);
  return y + mlp->forward(ln2->forward(y));
}

}  // namespace kiln::nn
