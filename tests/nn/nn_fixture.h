// Reads the PyTorch reference files of tests/fixtures/nn/ (written by make_nn_fixtures.py and
// make_edge_fixtures.py): one tensor per line, `name dtype ndim d0 .. dn-1 v0 v1 ...`. Shared by the
// tests of tests/nn/ and by those of tests/ops/ that check edges.txt.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <kiln/kiln.h>

#include "testing.h"

namespace kiln::testing {

class NnFixture {
 public:
  explicit NnFixture(const std::string& file) {
    const std::string path = std::string(KILN_TEST_FIXTURES) + "/nn/" + file;
    std::ifstream in(path);
    if (!in) throw Error("missing fixture " + path + " (run tests/fixtures/make_nn_fixtures.py)");
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      std::istringstream ls(line);
      std::string name, kind;
      int ndim = 0;
      ls >> name >> kind >> ndim;
      std::vector<int64_t> dims(static_cast<size_t>(ndim));
      int64_t n = 1;
      for (auto& d : dims) ls >> d, n *= d;
      std::vector<double> values(static_cast<size_t>(n));
      for (auto& v : values) {  // strtod, as >> does not read the nan and inf that edge cases hold
        std::string token;
        ls >> token;
        v = std::strtod(token.c_str(), nullptr);
      }
      Tensor t = tensor(values, Dims(dims), {.dtype = DType::f64});
      const DType dtype = kind == "bool" ? DType::boolean : kind == "i64" ? DType::i64 : kind == "f64" ? DType::f64
                                                                                                          : DType::f32;
      tensors_[name] = t.to(dtype);
    }
  }

  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  Tensor operator[](const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw Error("fixture has no tensor '" + name + "'");
    return it->second.clone();  // a fresh copy each time: tests may mark it requires_grad
  }
  // Entries under "prefix.", with the prefix removed, in file order of names (sorted).
  std::map<std::string, Tensor> with_prefix(const std::string& prefix) const {
    std::map<std::string, Tensor> out;
    for (const auto& [name, t] : tensors_)
      if (name.rfind(prefix + ".", 0) == 0) out[name.substr(prefix.size() + 1)] = t.clone();
    return out;
  }

 private:
  std::map<std::string, Tensor> tensors_;
};

// Expects got to match want (same shape) within rtol relative to want's largest magnitude: f32
// kernels that sum in another order differ by ulps of the largest terms, not of each element.
inline void expect_matches(const Tensor& got, const Tensor& want, const std::string& what, double rtol = 1e-5) {
  ASSERT_TRUE(got.defined()) << what << ": undefined";
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const std::vector<double> w = values(want);
  double scale = 0;  // of the finite values: an inf would make every tolerance infinite
  for (double v : w)
    if (std::isfinite(v)) scale = std::max(scale, std::abs(v));
  expect_close(got, w, rtol, rtol * std::max(scale, 1e-3), what);
}

}  // namespace kiln::testing
