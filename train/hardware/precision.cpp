// The plain and true precisions, and the precision names Trainer takes.
#include "train/hardware/precision.h"

#include <map>

#include "tensor/error.h"
#include "train/hardware/nearest_names.h"

namespace kiln {
namespace {

DType true_dtype(const std::string& name) {
  if (name == "64-true") return DType::f64;
  if (name == "bf16-true") return DType::bf16;
  if (name == "16-true") return DType::f16;
  detail::throw_error("TruePrecision: '", name, "' is not one of: 64-true, bf16-true, 16-true");
}

}  // namespace

void Precision::convert_module(nn::Module& module) const { module.to(param_dtype_); }

data::Batch Precision::convert_batch(const data::Batch& batch) const {
  data::Batch out = batch;
  for (Tensor& t : out.fields)
    if (t.defined() && t.is_floating() && t.dtype() != param_dtype_) t = t.to(param_dtype_);
  return out;
}

TruePrecision::TruePrecision(const std::string& name) : Precision(name, true_dtype(name)) {}

std::vector<std::string> precision_names() {
  return {"64-true", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true"};
}

// Lightning's _PRECISION_INPUT: the 2.x names plus the short and integer forms it still maps.
std::string canonical_precision_name(const std::string& name) {
  static const std::map<std::string, std::string> aliases = {
      {"64", "64-true"}, {"32", "32-true"}, {"16", "16-mixed"}, {"bf16", "bf16-mixed"}};
  if (auto it = aliases.find(name); it != aliases.end()) return it->second;
  for (const std::string& valid : precision_names())
    if (name == valid) return name;
  detail::throw_error("Precision '", name, "' is invalid. Allowed precision values: ", join_names(precision_names()),
                      " (or 64, 32, 16, bf16)", did_you_mean(name, precision_names()));
}

}  // namespace kiln
