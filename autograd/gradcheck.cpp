// Finite-difference checking of autograd's gradients.
#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "tensor/factories.h"
#include "tensor/generator.h"

namespace kiln::autograd {
namespace {

// sum_k w_k * out_k, in f64, for weights fixed per output.
double weighted_sum(const TensorList& outs, const TensorList& weights) {
  double total = 0;
  for (size_t k = 0; k < outs.size(); ++k)
    if (weights[k].defined()) total += (outs[k].to(DType::f64) * weights[k]).sum().item<double>();
  return total;
}

}  // namespace

GradcheckResult gradcheck(const std::function<TensorList(const TensorList&)>& fn, const TensorList& inputs,
                          const GradcheckOptions& options) {
  TensorList outs = fn(inputs);
  Generator gen(options.seed + 12345);
  TensorList weights(outs.size());
  TensorList differentiable_outs;
  TensorList grad_outs;
  for (size_t k = 0; k < outs.size(); ++k) {
    if (!outs[k].defined() || !outs[k].is_floating()) continue;
    weights[k] = empty(outs[k].shape(), {.dtype = DType::f64});
    uniform_(weights[k], -1.0, 1.0, &gen);
    if (outs[k].requires_grad()) {
      differentiable_outs.push_back(outs[k]);
      grad_outs.push_back(weights[k].to(outs[k].dtype()));
    }
  }
  TensorList checked;
  for (const Tensor& in : inputs)
    if (in.defined() && in.requires_grad()) checked.push_back(in);
  TensorList analytic(checked.size());
  if (!differentiable_outs.empty())
    analytic = grad(differentiable_outs, checked, {.grad_outputs = grad_outs, .allow_unused = true});

  NoGradGuard no_grad;
  for (size_t i = 0; i < checked.size(); ++i) {
    Tensor x = checked[i];
    KILN_CHECK(x.is_contiguous(), "gradcheck: input ", i, " must be contiguous");
    const Tensor a = analytic[i].defined() ? analytic[i].to(DType::f64).contiguous() : zeros_like(x, {.dtype = DType::f64});
    for (int64_t e = 0; e < x.numel(); ++e) {
      Tensor flat = x.detach().view({-1});
      Tensor elem = flat.narrow(0, e, 1);
      const Tensor original = elem.clone();
      elem.copy_(original + options.eps);
      const double plus = weighted_sum(fn(inputs), weights);
      elem.copy_(original - options.eps);
      const double minus = weighted_sum(fn(inputs), weights);
      elem.copy_(original);
      const double numeric = (plus - minus) / (2 * options.eps);
      const double got = a.view({-1}).narrow(0, e, 1).item<double>();
      if (!(std::abs(got - numeric) <= options.atol + options.rtol * std::abs(numeric))) {
        std::ostringstream os;
        os << "gradcheck: input " << i << " (shape " << x.shape() << "), element " << e << ": analytic " << got
           << " vs numeric " << numeric;
        return {false, os.str()};
      }
    }
  }
  return {};
}

}  // namespace kiln::autograd
