// The optimizer fixture cases of tests/fixtures/make_optim_fixtures.py, as Kiln optimizers: a
// case's "optimizer", "defaults" and "groups" (options by torch's names) over given parameters.
// Shared by test_optimizers.cpp and test_optimizers_lowp.cpp.
#pragma once

#include <fstream>
#include <memory>

#include "nn/optim/adagrad.h"
#include "nn/optim/adam.h"
#include "nn/optim/rmsprop.h"
#include "nn/optim/sgd.h"
#include "testing.h"

namespace kiln::optim::cases {

inline Json read_fixture(const std::string& name) {
  std::ifstream in(std::string(KILN_TEST_FIXTURES) + "/optim/" + name);
  EXPECT_TRUE(in.good()) << "missing fixture " << name << "; run tests/fixtures/make_optim_fixtures.py";
  return Json::parse(in);
}

inline Tensor make(const std::vector<double>& values, const Dims& shape, DType dtype) {
  return tensor(values, shape).to(dtype);
}

template <class T>
inline void set_if(std::optional<T>& field, const Json& j, const char* key) {
  if (j.contains(key)) field = j[key].get<T>();
}
inline void set_betas(std::optional<std::pair<double, double>>& field, const Json& j) {
  if (j.contains("betas")) field = std::pair{j["betas"][0].get<double>(), j["betas"][1].get<double>()};
}

inline SGDOptions sgd_options(const Json& j) {
  SGDOptions o;
  set_if(o.lr, j, "lr"), set_if(o.momentum, j, "momentum"), set_if(o.dampening, j, "dampening");
  set_if(o.weight_decay, j, "weight_decay"), set_if(o.nesterov, j, "nesterov"), set_if(o.maximize, j, "maximize");
  return o;
}
inline AdamOptions adam_options(const Json& j) {
  AdamOptions o;
  set_if(o.lr, j, "lr"), set_betas(o.betas, j), set_if(o.eps, j, "eps"), set_if(o.weight_decay, j, "weight_decay");
  set_if(o.amsgrad, j, "amsgrad"), set_if(o.maximize, j, "maximize");
  return o;
}
inline RMSpropOptions rmsprop_options(const Json& j) {
  RMSpropOptions o;
  set_if(o.lr, j, "lr"), set_if(o.alpha, j, "alpha"), set_if(o.eps, j, "eps");
  set_if(o.weight_decay, j, "weight_decay"), set_if(o.momentum, j, "momentum"), set_if(o.centered, j, "centered");
  set_if(o.maximize, j, "maximize");
  return o;
}
inline AdagradOptions adagrad_options(const Json& j) {
  AdagradOptions o;
  set_if(o.lr, j, "lr"), set_if(o.lr_decay, j, "lr_decay"), set_if(o.weight_decay, j, "weight_decay");
  set_if(o.initial_accumulator_value, j, "initial_accumulator_value"), set_if(o.eps, j, "eps");
  set_if(o.maximize, j, "maximize");
  return o;
}

template <class Opt, class Options>
inline std::unique_ptr<Optimizer> build(const Json& c, const std::vector<Tensor>& params, Options (*options)(const Json&)) {
  std::vector<GroupSpec<Options>> groups;
  for (const Json& g : c["groups"]) {
    std::vector<Tensor> ps;
    for (const Json& i : g["params"]) ps.push_back(params[i.get<size_t>()]);
    groups.push_back({.params = ps, .options = options(g["options"])});
  }
  return std::make_unique<Opt>(groups, options(c["defaults"]));
}

// The optimizer a fixture case describes, over params.
inline std::unique_ptr<Optimizer> build_case(const Json& c, const std::vector<Tensor>& params) {
  const std::string kind = c["optimizer"];
  if (kind == "SGD") return build<SGD>(c, params, sgd_options);
  if (kind == "Adam") return build<Adam>(c, params, adam_options);
  if (kind == "AdamW") return build<AdamW>(c, params, adam_options);
  if (kind == "RMSprop") return build<RMSprop>(c, params, rmsprop_options);
  if (kind == "Adagrad") return build<Adagrad>(c, params, adagrad_options);
  ADD_FAILURE() << "unknown optimizer " << kind;
  return nullptr;
}

inline void set_grad(Tensor& p, const Tensor& g) { p.mutable_grad() = g; }


}  // namespace kiln::optim::cases
