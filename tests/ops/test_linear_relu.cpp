// Tests of the fused linear_relu (Note [Fused linear and ReLU], autograd/ops/linalg.cpp) and of
// Sequential running Linear -> ReLU through it: values against a naive f64 loop, and values and
// every gradient against the unfused composition relu(linear(...)) bit for bit (the sign of zero
// included), over several shapes, 1 and 2 threads, f32 and f64.
#include <cmath>
#include <memory>
#include <sstream>

#include "autograd/gradcheck.h"
#include "testing.h"

namespace kiln {
namespace {

using testing::at;

// Element by element: equal values with equal signs of zero, or NaN on both sides.
void expect_same_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  int64_t mismatches = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double g = at(got, i), w = at(want, i);
    const bool same = (std::isnan(g) && std::isnan(w)) || (g == w && std::signbit(g) == std::signbit(w));
    if (!same && mismatches++ < 5) ADD_FAILURE() << what << ": element " << i << " is " << g << ", want " << w;
  }
  EXPECT_EQ(mismatches, 0) << what;
}

// max(0, x W^T + b) row by row in f64, x folded to (rows, in).
std::vector<double> reference(const Tensor& x, const Tensor& w, const Tensor& b) {
  const int64_t in = w.size(1), out = w.size(0), rows = in ? x.numel() / in : 0;
  std::vector<double> y(static_cast<size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = b.defined() ? at(b, o) : 0.0;
      for (int64_t k = 0; k < in; ++k) acc += at(x, r * in + k) * at(w, o * in + k);
      y[static_cast<size_t>(r * out + o)] = std::max(acc, 0.0);
    }
  return y;
}

struct Shapes {
  Dims x;
  int64_t out;
};
// Output widths below and past a vector's 8 or 16 lanes; leading dims folded.
const std::vector<Shapes> kShapes = {{{5}, 4}, {{3, 5}, 7}, {{2, 3, 5}, 8}, {{0, 5}, 4}, {{130, 37}, 300}, {{16, 9}, 513}};

TEST(LinearRelu, ValuesAndGradientsEqualTheComposition) {
  for (DType t : {DType::f32, DType::f64})
    for (const Shapes& s : kShapes)
      for (bool with_bias : {true, false})
        for (int threads : {1, 2}) {
          set_num_threads(threads);
          std::ostringstream what;
          what << t << " x " << s.x << " out " << s.out << (with_bias ? " bias" : " no bias") << " threads " << threads;
          const int64_t in = s.x[s.x.size() - 1];
          const Tensor x0 = testing::random_tensor(s.x, t, -1, 1, 1);
          const Tensor w0 = testing::random_tensor({s.out, in}, t, -1, 1, 2);
          const Tensor b0 = with_bias ? testing::random_tensor({s.out}, t, -1, 1, 3) : Tensor();
          Dims y_shape = s.x;
          y_shape[y_shape.size() - 1] = s.out;
          const Tensor gy = testing::random_tensor(y_shape, t, -1, 1, 4);

          auto leaf = [](const Tensor& v) { return v.defined() ? v.detach().clone().requires_grad_() : Tensor(); };
          const Tensor x1 = leaf(x0), w1 = leaf(w0), b1 = leaf(b0);
          const Tensor x2 = leaf(x0), w2 = leaf(w0), b2 = leaf(b0);
          const Tensor fused = linear_relu(x1, w1, b1);
          const Tensor composed = relu(linear(x2, w2, b2));
          expect_same_bits(fused, composed, what.str() + " output");
          testing::expect_close(fused, reference(x0, w0, b0), testing::tolerance(t) * in, testing::tolerance(t) * in,
                                what.str() + " against f64");
          if (s.x.size() > 1 && s.x[0] > 0) {
            EXPECT_EQ(fused.grad_fn()->name(), "linear_relu") << what.str();
          }

          fused.backward(gy);
          composed.backward(gy);
          expect_same_bits(x1.grad(), x2.grad(), what.str() + " grad x");
          expect_same_bits(w1.grad(), w2.grad(), what.str() + " grad weight");
          if (with_bias) expect_same_bits(b1.grad(), b2.grad(), what.str() + " grad bias");
        }
  set_num_threads(2);
}

// Negative pre-activations come out +0 and NaN stays NaN (oneDNN's ReLU post-op would give -0 and
// 0), and a NaN output passes its gradient through as relu's does.
TEST(LinearRelu, SignOfZeroAndNaN) {
  const Tensor x = tensor(std::vector<float>{1, -2, 3, std::nanf(""), 0, 1}, Dims{3, 2}).requires_grad_();
  const Tensor w = tensor(std::vector<float>{1, 1, -1, -1}, Dims{2, 2}).requires_grad_();
  const Tensor y = linear_relu(x, w);
  testing::expect_close(y, {0, 1, testing::kNaN, testing::kNaN, 1, 0}, 0, 0, "linear_relu");
  EXPECT_FALSE(std::signbit(at(y, 0)));
  EXPECT_FALSE(std::signbit(at(y, 5)));
  y.backward(ones({3, 2}));
  // Rows 0 and 2 pass one output's gradient each; row 1 passes both (NaN outputs pass g).
  testing::expect_close(x.grad(), {-1, -1, 0, 0, 1, 1}, 0, 0, "grad x");
}

TEST(LinearRelu, GradcheckF64) {
  for (const Dims& xs : {Dims{5}, Dims{3, 5}, Dims{2, 3, 5}})
    for (bool with_bias : {true, false}) {
      TensorList inputs{testing::random_tensor(xs, DType::f64, -2, 2, 1).requires_grad_(),
                        testing::random_tensor({4, 5}, DType::f64, -2, 2, 2).requires_grad_()};
      if (with_bias) inputs.push_back(testing::random_tensor({4}, DType::f64, -2, 2, 3).requires_grad_());
      const autograd::GradcheckResult r = autograd::gradcheck(
          [&](const TensorList& in) { return TensorList{linear_relu(in[0], in[1], with_bias ? in[2] : Tensor())}; },
          inputs);
      EXPECT_TRUE(r.ok) << "linear_relu x " << xs << (with_bias ? " bias" : "") << ": " << r.message;
    }
}

// The half dtypes agree with the composition too (bf16 through oneDNN, f16 through the loop).
TEST(LinearRelu, HalfDTypesAgreeWithTheComposition) {
  for (DType t : {DType::bf16, DType::f16}) {
    const std::string what(dtype_name(t));
    const Tensor x0 = testing::random_tensor({6, 8}, t, -1, 1, 1), w0 = testing::random_tensor({5, 8}, t, -1, 1, 2);
    const Tensor b0 = testing::random_tensor({5}, t, -1, 1, 3);
    const Tensor w1 = w0.clone().requires_grad_(), w2 = w0.clone().requires_grad_();
    const Tensor fused = linear_relu(x0, w1, b0), composed = relu(linear(x0, w2, b0));
    expect_same_bits(fused, composed, what);
    fused.sum().backward();
    composed.sum().backward();
    expect_same_bits(w1.grad(), w2.grad(), what + " grad weight");
  }
}

TEST(LinearRelu, Errors) {
  const Tensor x = zeros({2, 3});
  testing::expect_error([&] { linear_relu(x, zeros({4, 2})); }, {"linear_relu", "[2, 3]", "[4, 2]"});
  testing::expect_error([&] { linear_relu(x, zeros({4, 3}), zeros({4}, {.dtype = DType::f64})); },
                        {"linear_relu", "bias", "float64"});
  testing::expect_error([&] { linear_relu(x, zeros({4, 3}), zeros({5})); }, {"linear_relu", "[5]"});
}

// Sequential runs an exact Linear -> ReLU pair as linear_relu, with the composition's values and
// gradients; a subclass of ReLU may compute something else, so it is left alone.
TEST(LinearRelu, SequentialFusesExactLinearThenReLU) {
  struct ShiftedReLU : nn::ReLU {
    Tensor forward(const Tensor& x) override { return nn::ReLU::forward(x) + 1; }
  };
  auto first = std::make_shared<nn::Linear>(6, 5);
  auto second = std::make_shared<nn::Linear>(5, 3);
  nn::Sequential fused_model(first, std::make_shared<nn::ReLU>(), second, std::make_shared<nn::ReLU>());
  const Tensor x = testing::random_tensor({4, 6}, DType::f32, -1, 1, 5);
  const Tensor y = fused_model(x);
  EXPECT_EQ(y.grad_fn()->name(), "linear_relu");
  const Tensor want = relu(linear(relu(linear(x, first->weight, first->bias)), second->weight, second->bias));
  expect_same_bits(y, want, "Sequential output");

  y.sum().backward();
  const Tensor fused_grad = first->weight.grad().clone();
  fused_model.zero_grad();
  want.sum().backward();
  expect_same_bits(fused_grad, first->weight.grad(), "first weight's gradient");

  nn::Sequential shifted(first, std::make_shared<ShiftedReLU>());
  const Tensor ys = shifted(x);
  EXPECT_NE(ys.grad_fn()->name(), "linear_relu");
  expect_same_bits(ys, relu(linear(x, first->weight, first->bias)) + 1, "Sequential with a ReLU subclass");
}

}  // namespace
}  // namespace kiln
