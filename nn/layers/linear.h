// Linear and Embedding: the two layers that are a weight matrix, with torch's parameter names,
// shapes and default initialisation.
#pragma once

#include <optional>

#include "nn/module.h"
#include "tensor/generator.h"

namespace kiln::nn {

struct LinearOptions {
  bool bias = true;
};

// y = x W^T + b. x (*, in_features) -> (*, out_features); weight (out, in), bias (out).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, LinearOptions options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  void reset_parameters(Generator* gen = nullptr);  // torch's default: U(+-1/sqrt(in_features))

  const int64_t in_features, out_features;
  Tensor weight, bias;  // bias undefined without one

 protected:
  Linear(std::string name, int64_t in_features, int64_t out_features, LinearOptions options);  // for LinearReLU
};

struct EmbeddingOptions {
  std::optional<int64_t> padding_idx;  // negative counts from num_embeddings
};

// Rows of weight (num_embeddings, embedding_dim) picked by integer indices: (*) -> (*, dim).
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim, EmbeddingOptions options = {});
  Tensor forward(const Tensor& indices) override;
  std::string extra_repr() const override;
  void reset_parameters(Generator* gen = nullptr);  // N(0, 1), the padding row zeroed

  const int64_t num_embeddings, embedding_dim;
  const std::optional<int64_t> padding_idx;  // normalised to [0, num_embeddings)
  Tensor weight;
};

}  // namespace kiln::nn
