// The activation layers, Dropout and Flatten (see activation.h).
#include "nn/layers/activation.h"

#include "nn/functional.h"

namespace kiln::nn {

Tensor ReLU::forward(const Tensor& x) { return F::relu(x); }

GELU::GELU(std::string approximate) : Module("GELU"), approximate(std::move(approximate)) {
  KILN_CHECK(this->approximate == "none" || this->approximate == "tanh",
             "GELU: approximate must be 'none' or 'tanh', got '", this->approximate, "'");
}
Tensor GELU::forward(const Tensor& x) { return F::gelu(x, approximate); }

Tensor SiLU::forward(const Tensor& x) { return F::silu(x); }
Tensor Tanh::forward(const Tensor& x) { return F::tanh(x); }
Tensor Sigmoid::forward(const Tensor& x) { return F::sigmoid(x); }
Tensor LeakyReLU::forward(const Tensor& x) { return F::leaky_relu(x, negative_slope); }
Tensor Softmax::forward(const Tensor& x) { return F::softmax(x, dim); }

Dropout::Dropout(double p, Generator* generator) : Module("Dropout"), p(p), generator(generator) {
  KILN_CHECK(p >= 0 && p <= 1, "Dropout: probability has to be between 0 and 1, but got ", p);
}
Tensor Dropout::forward(const Tensor& x) { return F::dropout(x, p, is_training(), generator); }

Tensor Flatten::forward(const Tensor& x) { return x.flatten(start_dim, end_dim); }

}  // namespace kiln::nn
