// The demo until the trainer exists: a least-squares fit by gradient descent, written with Kiln's
// tensor ops (gradients by hand), showing the loss fall and the recovered weights.
#include <kiln/kiln.h>

#include <iostream>

int main() {
  using namespace kiln;
  manual_seed(0);
  const Tensor true_w = tensor({2.0, -3.0, 0.5, 1.0}).reshape({4, 1});
  const Tensor x = randn({1024, 4});
  const Tensor y = matmul(x, true_w) + randn({1024, 1}) * 0.01;
  Tensor w = zeros({4, 1});
  for (int step = 0; step <= 100; ++step) {
    const Tensor err = matmul(x, w) - y;
    const Tensor grad = matmul(x.t(), err) * (2.0 / 1024);
    w.sub_(grad * 0.1);
    if (step % 20 == 0) std::cout << "step " << step << "  mse " << mean(err * err).item<float>() << "\n";
  }
  std::cout << "recovered w = " << w.flatten() << "\ntrue w      = " << true_w.flatten() << "\n";
  return 0;
}
