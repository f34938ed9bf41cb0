// MultiheadAttention (torch.nn.MultiheadAttention's parameters, masks and layouts) and a small
// pre-norm TransformerBlock for GPT-style models: x + attn(ln1(x)) with a causal mask, then
// x + mlp(ln2(x)) with a GELU MLP.
#pragma once

#include <memory>

#include "nn/containers.h"
#include "nn/layers/activation.h"
#include "nn/layers/linear.h"
#include "nn/layers/norm.h"
#include "nn/module.h"

namespace kiln::nn {

struct MultiheadAttentionOptions {
  double dropout = 0.0;        // on the attention weights, in training mode
  bool bias = true;
  bool batch_first = false;    // (N, L, E) when true, (L, N, E) otherwise, as torch
  Generator* generator = nullptr;  // for dropout; the default generator when null
};

struct AttentionArgs {
  Tensor key_padding_mask;     // (N, S): bool (true = ignore that key) or float (added)
  bool need_weights = true;
  Tensor attn_mask;            // (L, S) or (N * num_heads, L, S): bool (true = not allowed) or float (added)
  bool average_attn_weights = true;
  bool is_causal = false;      // without attn_mask: mask future keys (torch requires attn_mask too)
};

struct AttentionOutput {
  Tensor output;   // like query
  Tensor weights;  // (N, L, S) averaged over heads, (N, H, L, S) otherwise; undefined without need_weights
};

class MultiheadAttention : public Module {
 public:
  MultiheadAttention(int64_t embed_dim, int64_t num_heads, MultiheadAttentionOptions options = {});
  AttentionOutput forward(const Tensor& query, const Tensor& key, const Tensor& value, const AttentionArgs& args = {});
  Tensor forward(const Tensor& x) override;  // self-attention, output only
  void reset_parameters(Generator* gen = nullptr);

  const int64_t embed_dim, num_heads, head_dim;
  const MultiheadAttentionOptions options;
  Tensor in_proj_weight, in_proj_bias;  // (3E, E) and (3E): the q, k and v projections stacked
  std::shared_ptr<Linear> out_proj;
};

struct TransformerBlockOptions {
  int64_t mlp_hidden = 0;      // 0: 4 * d_model
  double dropout = 0.0;        // on attention weights and after each residual branch
  double layer_norm_eps = 1e-5;
  bool bias = true;
  Generator* generator = nullptr;
};

// x (N, T, d_model) -> same. Submodules: ln1, attn, ln2, mlp (0: Linear, 1: GELU, 2: Linear,
// 3: Dropout), resid_dropout.
class TransformerBlock : public Module {
 public:
  TransformerBlock(int64_t d_model, int64_t num_heads, TransformerBlockOptions options = {});
  Tensor forward(const Tensor& x) override;

  std::shared_ptr<LayerNorm> ln1, ln2;
  std::shared_ptr<MultiheadAttention> attn;
  std::shared_ptr<Sequential> mlp;
  std::shared_ptr<Dropout> resid_dropout;
};

}  // namespace kiln::nn
