// Linear and Embedding (see linear.h).
#include "nn/layers/linear.h"

#include "autograd/grad_mode.h"
#include "nn/functional.h"
#include "nn/init.h"
#include "tensor/factories.h"

namespace kiln::nn {

Linear::Linear(int64_t in, int64_t out, LinearOptions options) : Linear("Linear", in, out, options) {}

Linear::Linear(std::string name, int64_t in, int64_t out, LinearOptions options)
    : Module(name), in_features(in), out_features(out) {
  KILN_CHECK(in >= 0 && out >= 0, name, ": feature counts must be non-negative, got in_features=", in,
             ", out_features=", out);
  weight = register_parameter("weight", empty({out, in}));
  if (options.bias) bias = register_parameter("bias", empty({out}));
  reset_parameters();
}

void Linear::reset_parameters(Generator* gen) { init::default_layer_init(weight, bias, gen); }

Tensor Linear::forward(const Tensor& x) { return F::linear(x, weight, bias); }

std::string Linear::extra_repr() const {
  return detail::concat("in_features=", in_features, ", out_features=", out_features, ", bias=",
                        bool_text(bias.defined()));
}

namespace {
std::optional<int64_t> normalised_padding(int64_t rows, std::optional<int64_t> padding_idx) {
  if (!padding_idx) return std::nullopt;
  KILN_CHECK(*padding_idx >= -rows && *padding_idx < rows, "Embedding: padding_idx ", *padding_idx,
             " must be within num_embeddings (", rows, ")");
  return *padding_idx < 0 ? *padding_idx + rows : *padding_idx;
}
}  // namespace

Embedding::Embedding(int64_t num, int64_t dim, EmbeddingOptions options)
    : Module("Embedding"), num_embeddings(num), embedding_dim(dim),
      padding_idx(normalised_padding(num, options.padding_idx)) {
  KILN_CHECK(num >= 0 && dim >= 0, "Embedding: sizes must be non-negative, got ", num, " x ", dim);
  weight = register_parameter("weight", empty({num, dim}));
  reset_parameters();
}

void Embedding::reset_parameters(Generator* gen) {
  init::normal_(weight, 0.0, 1.0, gen);
  if (padding_idx) {
    NoGradGuard no_grad;
    weight.select(0, *padding_idx).zero_();
  }
}

Tensor Embedding::forward(const Tensor& indices) { return F::embedding(indices, weight, padding_idx); }

std::string Embedding::extra_repr() const {
  std::string out = detail::concat(num_embeddings, ", ", embedding_dim);
  if (padding_idx) out += detail::concat(", padding_idx=", *padding_idx);
  return out;
}

}  // namespace kiln::nn
