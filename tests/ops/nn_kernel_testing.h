// Shared by the conv, pool and norm kernel tests: central-difference gradients in f64 and the
// PyTorch fixture of tests/fixtures/nn_kernels/ (written by make_nn_kernel_fixtures.py).
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <kiln/kiln.h>

namespace kiln::testing {

// d/dt[i] of sum(f() * r) by central differences; t is f64 and contiguous, and is restored.
inline std::vector<double> numeric_grad(Tensor t, const std::function<Tensor()>& f, const Tensor& r,
                                        double h = 1e-6) {
  double* p = t.data_ptr<double>();
  std::vector<double> g(static_cast<size_t>(t.numel()));
  auto loss = [&] { return kiln::sum(f() * r).item<double>(); };
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double keep = p[i];
    p[i] = keep + h;
    const double up = loss();
    p[i] = keep - h;
    const double down = loss();
    p[i] = keep;
    g[static_cast<size_t>(i)] = (up - down) / (2 * h);
  }
  return g;
}

// The nn_kernels fixture as f32 tensors by name; one line per tensor: `name ndim d0.. v0 v1 ...`.
inline std::map<std::string, Tensor> load_nn_kernel_fixture() {
  std::ifstream in(std::string(KILN_TEST_FIXTURES) + "/nn_kernels/nn_kernels.txt");
  EXPECT_TRUE(in.good()) << "missing tests/fixtures/nn_kernels/nn_kernels.txt";
  std::map<std::string, Tensor> out;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string name;
    int nd = 0;
    ls >> name >> nd;
    Dims shape;
    for (int d = 0; d < nd; ++d) {
      int64_t s = 0;
      ls >> s;
      shape.push_back(s);
    }
    std::vector<double> v;
    for (double x; ls >> x;) v.push_back(x);
    out[name] = tensor(v, shape, {.dtype = DType::f32});
  }
  return out;
}

}  // namespace kiln::testing
