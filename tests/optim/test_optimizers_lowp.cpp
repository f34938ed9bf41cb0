// kiln::optim on bfloat16 and float16 parameters: every optimizer config of
// tests/fixtures/optim/optimizers_lowp.json matches torch bit for bit (parameters after each of 8
// steps, state after the last), and so does clip_grad on 16-bit gradients. Also: a group mixing
// float32 and bfloat16 parameters, state_dict round trips that keep the state's dtype, and strided
// and multi-threaded 16-bit parameters.
#include <cstdio>
#include <cstring>

#include "nn/optim/clip_grad.h"
#include "optim/optim_cases.h"

namespace kt = kiln::testing;
using namespace kiln;
using namespace kiln::optim;
using namespace kiln::optim::cases;

namespace {

DType dtype_of_key(const std::string& key) { return key == "bf16" ? DType::bf16 : DType::f16; }

// A tensor from the fixture's hex string: 4 hex digits (little-endian bytes) per 16-bit element.
Tensor from_hex(const std::string& hex, const Dims& shape, DType dtype) {
  Tensor t = empty(shape, {.dtype = dtype});
  EXPECT_EQ(hex.size(), static_cast<size_t>(4 * t.numel()));
  auto* bits = static_cast<uint16_t*>(t.data_ptr());
  for (int64_t i = 0; i < t.numel(); ++i) {
    const unsigned lo = std::stoul(hex.substr(4 * i, 2), nullptr, 16);
    const unsigned hi = std::stoul(hex.substr(4 * i + 2, 2), nullptr, 16);
    bits[i] = static_cast<uint16_t>(lo | hi << 8);
  }
  return t;
}

// The bits of t (any layout) equal the fixture's; on failure, how many differ and the first.
void expect_bits(const Tensor& t, const std::string& hex, const std::string& what) {
  const Tensor want = from_hex(hex, t.shape(), t.dtype());
  const Tensor got = t.detach().contiguous();
  const auto* g = static_cast<const uint16_t*>(got.data_ptr());
  const auto* w = static_cast<const uint16_t*>(want.data_ptr());
  int64_t differ = 0, first = -1;
  for (int64_t i = 0; i < t.numel(); ++i)
    if (g[i] != w[i] && differ++ == 0) first = i;
  EXPECT_EQ(differ, 0) << what << ": " << differ << " of " << t.numel() << " elements differ; first at " << first
                       << ": got " << kt::at(got, first) << ", torch " << kt::at(want, first);
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  const Tensor x = a.detach().contiguous(), y = b.detach().contiguous();
  return std::memcmp(x.data_ptr(), y.data_ptr(), x.numel() * dtype_size(x.dtype())) == 0;
}

struct LowpFixture {
  Json fx = read_fixture("optimizers_lowp.json");
  std::vector<Dims> shapes;
  LowpFixture() {
    for (const Json& s : fx["shapes"]) shapes.push_back(s.get<std::vector<int64_t>>());
  }
  std::vector<Tensor> params(const std::string& key) const {
    std::vector<Tensor> out;
    for (size_t i = 0; i < shapes.size(); ++i)
      out.push_back(from_hex(fx["init"][key][i], shapes[i], dtype_of_key(key)).requires_grad_());
    return out;
  }
  Tensor grad(const std::string& key, size_t step, size_t i) const {
    return from_hex(fx["grads"][key][step][i], shapes[i], dtype_of_key(key));
  }
  const Json& find_case(const std::string& name) const {
    for (const Json& c : fx["cases"])
      if (c["name"] == name) return c;
    ADD_FAILURE() << "no fixture case " << name;
    return fx["cases"][0];
  }
};

}  // namespace

// Every config, both 16-bit dtypes: the parameters after each step and the final state are torch's
// bits, the state is held in the parameter's dtype and `step` in f32.
TEST(OptimizersLowp, MatchTorchBitForBit) {
  const LowpFixture f;
  const size_t steps = f.fx["steps"];
  for (const Json& c : f.fx["cases"]) {
    for (const std::string key : {"bf16", "f16"}) {
      const std::string what = c["name"].get<std::string>() + " " + key;
      std::vector<Tensor> params = f.params(key);
      auto opt = build_case(c, params);
      for (size_t step = 0; step < steps; ++step) {
        for (size_t i = 0; i < params.size(); ++i) set_grad(params[i], f.grad(key, step, i));
        opt->step();
        for (size_t i = 0; i < params.size(); ++i)
          expect_bits(params[i], c[key]["params"][step][i], what + " step " + std::to_string(step + 1) + " param " +
                                                                std::to_string(i));
      }
      for (size_t i = 0; i < params.size(); ++i) {
        const TensorDict* state = opt->state_of(params[i]);
        const Json& want = c[key]["state"][i];
        if (want.empty() && state == nullptr) continue;  // SGD without momentum keeps no state, as torch
        ASSERT_NE(state, nullptr) << what;
        EXPECT_EQ(state->size(), want.size() + (state->contains("step") ? 1 : 0)) << what;
        for (const auto& [name, t] : *state) {
          if (name == "step") {
            EXPECT_EQ(t.dtype(), DType::f32) << what;
            EXPECT_EQ(t.item<double>(), static_cast<double>(steps)) << what;
            continue;
          }
          EXPECT_EQ(t.dtype(), params[i].dtype()) << what << " " << name;
          ASSERT_TRUE(want.contains(name)) << what << " has state '" << name << "' torch lacks";
          expect_bits(t, want[name], what + " state " + name + " of param " + std::to_string(i));
        }
      }
    }
  }
}

namespace {

// make_optim_fixtures.py's lcg_values: n floats in [-1, 1), exact in float32.
Tensor lcg_values(uint32_t seed, int64_t n) {
  std::vector<double> values;
  uint32_t x = seed;
  for (int64_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    values.push_back(static_cast<double>(x >> 8) / 16777216.0 * 2 - 1);
  }
  return tensor(values).to(DType::f32);
}

// make_optim_fixtures.py's fnv1a of a 16-bit tensor's little-endian bytes, as 16 hex digits.
std::string fnv1a(const Tensor& t) {
  const Tensor c = t.detach().contiguous();
  const auto* bytes = static_cast<const unsigned char*>(c.data_ptr());
  uint64_t h = 0xcbf29ce484222325ull;
  for (int64_t i = 0; i < c.numel() * 2; ++i) h = (h ^ bytes[i]) * 0x100000001b3ull;
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return out;
}

}  // namespace

// The fused multiply-adds of torch's lerp and addcmul change one element in a few hundred or a
// few thousand, so a 16384-element parameter checks them: its bits and its state's after 4 steps
// are torch's (digests).
TEST(OptimizersLowp, LargeParameterMatchesTorchBitForBit) {
  const LowpFixture f;
  const Json& large = f.fx["large"];
  const int64_t n = large["n"];
  for (const Json& c : large["cases"]) {
    for (const std::string key : {"bf16", "f16"}) {
      const DType dtype = dtype_of_key(key);
      std::vector<Tensor> params = {lcg_values(7, n).to(dtype).requires_grad_()};
      Json spec = f.find_case(c["name"]);
      spec["groups"] = Json::array({Json{{"params", Json::array({0})}, {"options", Json::object()}}});
      auto opt = build_case(spec, params);
      for (int s = 0; s < large["steps"].get<int>(); ++s) {
        set_grad(params[0], (lcg_values(100 + s, n) * 0.5).to(dtype));
        opt->step();
      }
      const std::string what = c["name"].get<std::string>() + " " + key;
      EXPECT_EQ(fnv1a(params[0]), c[key]["param"]) << what << " param";
      const TensorDict& state = *opt->state_of(params[0]);
      EXPECT_EQ(state.size(), c[key].size()) << what;  // Kiln's step for the fixture's param digest
      for (const auto& [name, t] : state) {
        if (name == "step") continue;
        EXPECT_EQ(fnv1a(t), c[key].value(name, "")) << what << " state " << name;
      }
    }
  }
}

// One Adam over a bf16 and an f32 parameter: the bf16 one follows torch's bf16 trajectory, the
// f32 one what an f32-only Adam gives it.
TEST(OptimizersLowp, MixedDtypeGroup) {
  const LowpFixture f;
  const Json& c = f.find_case("adam");
  std::vector<Tensor> bf = f.params("bf16");
  Tensor wide = bf[1].detach().to(DType::f32).requires_grad_();
  Tensor alone = wide.detach().clone().requires_grad_();
  Adam mixed({bf[0], wide}, {.lr = c["defaults"]["lr"].get<double>()});
  Adam reference({alone}, {.lr = c["defaults"]["lr"].get<double>()});
  for (size_t step = 0; step < f.fx["steps"].get<size_t>(); ++step) {
    set_grad(bf[0], f.grad("bf16", step, 0));
    set_grad(wide, f.grad("bf16", step, 1).to(DType::f32));
    set_grad(alone, f.grad("bf16", step, 1).to(DType::f32));
    mixed.step();
    reference.step();
    expect_bits(bf[0], c["bf16"]["params"][step][0], "bf16 param, step " + std::to_string(step + 1));
  }
  EXPECT_TRUE(same_bits(wide, alone));
  EXPECT_EQ(mixed.state_of(bf[0])->at("exp_avg").dtype(), DType::bf16);
  EXPECT_EQ(mixed.state_of(wide)->at("exp_avg").dtype(), DType::f32);
}

namespace {

using Factory = std::function<std::unique_ptr<Optimizer>(const std::vector<Tensor>&)>;

const std::vector<std::pair<std::string, Factory>>& factories() {
  static const std::vector<std::pair<std::string, Factory>> f = {
      {"SGD nesterov", [](const auto& p) { return std::make_unique<SGD>(p, SGDOptions{.lr = 0.1, .momentum = 0.9,
                                                                            .weight_decay = 1e-4, .nesterov = true}); }},
      {"Adam amsgrad", [](const auto& p) { return std::make_unique<Adam>(p, AdamOptions{.lr = 1e-2, .amsgrad = true}); }},
      {"AdamW", [](const auto& p) { return std::make_unique<AdamW>(p, AdamOptions{.lr = 3e-3, .betas = {{0.8, 0.99}}}); }},
      {"RMSprop", [](const auto& p) { return std::make_unique<RMSprop>(p, RMSpropOptions{.momentum = 0.5, .centered = true}); }},
      {"Adagrad", [](const auto& p) { return std::make_unique<Adagrad>(p, AdagradOptions{.lr = 0.1, .lr_decay = 0.01}); }},
  };
  return f;
}

std::vector<Tensor> fresh_params(DType dtype) {
  return {kt::random_tensor({5, 7}, dtype, -1, 1, 1).requires_grad_(),
          kt::random_tensor({13}, dtype, -1, 1, 2).requires_grad_()};
}

void train(Optimizer& opt, std::vector<Tensor>& params, int from, int to) {
  for (int s = from; s < to; ++s) {
    for (size_t i = 0; i < params.size(); ++i)
      set_grad(params[i], kt::random_tensor(params[i].shape(), params[i].dtype(), -1, 1, 1000 + 17 * s + i));
    opt.step();
  }
}

std::vector<Tensor> clones(const std::vector<Tensor>& params) {
  std::vector<Tensor> out;
  for (const Tensor& p : params) out.push_back(p.detach().clone().requires_grad_());
  return out;
}

}  // namespace

// 5 steps, save, load into a fresh optimizer over copies, 5 more: the bits of 10 straight steps,
// with the saved and loaded state in the parameters' 16-bit dtype.
TEST(OptimizersLowp, StateDictRoundTripKeepsDtype) {
  for (DType dtype : {DType::bf16, DType::f16}) {
    for (const auto& [name, factory] : factories()) {
      std::vector<Tensor> straight = fresh_params(dtype);
      auto a = factory(straight);
      train(*a, straight, 0, 10);
      std::vector<Tensor> first = fresh_params(dtype);
      auto b = factory(first);
      train(*b, first, 0, 5);
      const State saved = b->state_dict();
      for (const auto& [key, t] : saved.tensors)
        EXPECT_EQ(t.dtype(), key.ends_with(".step") ? DType::f32 : dtype) << name << " " << key;
      std::vector<Tensor> resumed = clones(first);
      auto c = factory(resumed);
      c->load_state_dict(saved);
      for (const Tensor& p : resumed)
        for (const auto& [key, t] : *c->state_of(p)) EXPECT_EQ(t.dtype(), key == "step" ? DType::f32 : dtype) << name;
      train(*c, resumed, 5, 10);
      for (size_t i = 0; i < straight.size(); ++i)
        EXPECT_TRUE(same_bits(straight[i], resumed[i])) << name << " param " << i;
      const State sa = a->state_dict(), sc = c->state_dict();
      ASSERT_EQ(sa.tensors.keys(), sc.tensors.keys()) << name;
      for (const auto& [key, t] : sa.tensors) EXPECT_TRUE(same_bits(t, sc.tensors.at(key))) << name << " " << key;
    }
  }
}

// A strided 16-bit parameter (and gradient) gets the bits a contiguous one gets.
TEST(OptimizersLowp, StridedParameter) {
  for (DType dtype : {DType::bf16, DType::f16}) {
    for (const auto& [name, factory] : factories()) {
      Tensor strided = kt::random_tensor({6, 4}, dtype, -1, 1, 5).t();
      strided.requires_grad_();
      ASSERT_FALSE(strided.is_contiguous());
      Tensor dense = strided.contiguous().detach().clone().requires_grad_();
      auto a = factory({strided});
      auto b = factory({dense});
      for (int s = 0; s < 3; ++s) {
        Tensor g = kt::random_tensor({4, 6}, dtype, -1, 1, 50 + s);
        set_grad(strided, kt::noncontiguous(g));
        set_grad(dense, g);
        a->step();
        b->step();
      }
      EXPECT_TRUE(same_bits(strided, dense)) << name << " " << dtype;
    }
  }
}

// A bf16 parameter split over threads gets exactly what its pieces get alone.
TEST(OptimizersLowp, LargeParameterMatchesPieces) {
  const int64_t n = 3 * kElementwiseGrain + 123;
  Tensor big = kt::random_tensor({n}, DType::bf16, -1, 1, 7).requires_grad_();
  std::vector<Tensor> pieces;
  for (int64_t start = 0; start < n; start += 1000)
    pieces.push_back(big.detach().narrow(0, start, std::min<int64_t>(1000, n - start)).clone().requires_grad_());
  Adam a({big}, {.lr = 0.01, .weight_decay = 0.01, .amsgrad = true});
  Adam b(pieces, {.lr = 0.01, .weight_decay = 0.01, .amsgrad = true});
  for (int s = 0; s < 3; ++s) {
    Tensor g = kt::random_tensor({n}, DType::bf16, -1, 1, 70 + s);
    set_grad(big, g);
    for (size_t i = 0; i < pieces.size(); ++i) set_grad(pieces[i], g.narrow(0, 1000 * i, pieces[i].numel()).clone());
    a.step();
    b.step();
  }
  for (size_t i = 0; i < pieces.size(); ++i)
    ASSERT_TRUE(same_bits(big.detach().narrow(0, 1000 * i, pieces[i].numel()), pieces[i])) << "piece " << i;
}

// clip_grad_norm_ (2, 1, 3, inf; clipping and not) and clip_grad_value_ on 16-bit gradients: the
// total norm (in the gradients' dtype) and the clipped gradients are torch's bits.
TEST(OptimizersLowp, ClipGradMatchesTorch) {
  const LowpFixture f;
  for (const Json& c : f.fx["clip"]) {
    const std::string key = c["dtype"];
    std::vector<Tensor> params = f.params(key);
    for (size_t i = 0; i < params.size(); ++i) set_grad(params[i], f.grad(key, 0, i));
    std::string what = key;
    if (c.contains("clip_value")) {
      what += " clip_grad_value_";
      clip_grad_value_(params, c["clip_value"].get<double>());
    } else {
      const double p = c["norm_type"] == "inf" ? kt::kInf : c["norm_type"].get<double>();
      what += " clip_grad_norm_ p=" + c["norm_type"].dump() + " max_norm=" + c["max_norm"].dump();
      const Tensor total = clip_grad_norm_(params, c["max_norm"].get<double>(), p);
      EXPECT_EQ(total.dtype(), dtype_of_key(key)) << what;
      expect_bits(total, c["total_norm"], what + " total");
    }
    for (size_t i = 0; i < params.size(); ++i)
      expect_bits(params[i].grad(), c["grads"][i], what + " grad " + std::to_string(i));
  }
}

TEST(OptimizersLowp, RejectsIntegerParameters) {
  kt::expect_error([] { SGD({zeros({2}, {.dtype = DType::i32})}); }, {"SGD", "dtype int32", "floating-point"});
}
