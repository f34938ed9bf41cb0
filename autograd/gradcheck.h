// gradcheck: compares the gradients autograd computes with f64 central finite differences, as
// torch.autograd.gradcheck does. Used by the op tests on every entry of their tables.
#pragma once

#include <functional>
#include <string>

#include "autograd/node.h"

namespace kiln::autograd {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-5;
  double rtol = 1e-3;
  uint64_t seed = 0;  // for the random weights that reduce the outputs to a scalar
};

struct GradcheckResult {
  bool ok = true;
  std::string message;  // on failure: which input, which element, analytic vs numeric
};

// fn maps the inputs to one or more outputs. Every floating input that requires grad is checked
// (inputs should be f64). The outputs are reduced to a scalar with fixed random weights, so one
// backward checks a full vector-Jacobian product per input element.
GradcheckResult gradcheck(const std::function<TensorList(const TensorList&)>& fn, const TensorList& inputs,
                          const GradcheckOptions& options = {});

}  // namespace kiln::autograd
