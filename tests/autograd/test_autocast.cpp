// Autocast against torch.autocast("cpu"): every op Kiln shares with torch gives torch's output dtype
// under bf16 and f16 autocast for f32, low-precision, mixed and f64 inputs (fixtures/autocast/
// cpu_dtypes.txt, written by make_autocast_fixtures.py; this file's table and the script's must
// list the same ops); values and gradients of a few ops within bf16 tolerance (values_bf16.txt);
// the guard's nesting, weight cache, thread-locality and errors.
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "nn/nn_fixture.h"
#include "testing.h"

namespace kt = kiln::testing;
using namespace kiln;
namespace F = kiln::nn::functional;

namespace {

Tensor r(const Dims& shape, DType d) { return randn(shape).to(d); }
Tensor pos(const Dims& shape, DType d) { return (rand(shape) + 0.5).to(d); }
Tensor idx(const Dims& shape, int64_t high) { return randint(0, high, shape); }
Tensor mask(const Dims& shape) { return rand(shape) > 0.5; }

struct OpCase {
  int floating_inputs;                          // how many floating tensors the op takes (mix needs 2)
  std::function<Tensor(DType, DType)> run;      // builds inputs (first floating in d0, others in d1), runs
};

// The Python script's OPS, op for op.
const std::map<std::string, OpCase>& ops() {
  static const std::map<std::string, OpCase> table = {
      // ---- elementwise unary
      {"abs", {1, [](DType a, DType) { return kiln::abs(r({3, 4}, a)); }}},
      {"neg", {1, [](DType a, DType) { return kiln::neg(r({3, 4}, a)); }}},
      {"exp", {1, [](DType a, DType) { return kiln::exp(r({3, 4}, a)); }}},
      {"log", {1, [](DType a, DType) { return kiln::log(pos({3, 4}, a)); }}},
      {"log1p", {1, [](DType a, DType) { return kiln::log1p(pos({3, 4}, a)); }}},
      {"expm1", {1, [](DType a, DType) { return kiln::expm1(r({3, 4}, a)); }}},
      {"sqrt", {1, [](DType a, DType) { return kiln::sqrt(pos({3, 4}, a)); }}},
      {"rsqrt", {1, [](DType a, DType) { return kiln::rsqrt(pos({3, 4}, a)); }}},
      {"sin", {1, [](DType a, DType) { return kiln::sin(r({3, 4}, a)); }}},
      {"cos", {1, [](DType a, DType) { return kiln::cos(r({3, 4}, a)); }}},
      {"tanh", {1, [](DType a, DType) { return kiln::tanh(r({3, 4}, a)); }}},
      {"sigmoid", {1, [](DType a, DType) { return kiln::sigmoid(r({3, 4}, a)); }}},
      {"relu", {1, [](DType a, DType) { return kiln::relu(r({3, 4}, a)); }}},
      {"gelu", {1, [](DType a, DType) { return F::gelu(r({3, 4}, a)); }}},
      {"silu", {1, [](DType a, DType) { return F::silu(r({3, 4}, a)); }}},
      {"softplus", {1, [](DType a, DType) { return F::softplus(r({3, 4}, a)); }}},
      {"leaky_relu", {1, [](DType a, DType) { return F::leaky_relu(r({3, 4}, a)); }}},
      {"erf", {1, [](DType a, DType) { return kiln::erf(r({3, 4}, a)); }}},
      {"sign", {1, [](DType a, DType) { return kiln::sign(r({3, 4}, a)); }}},
      {"reciprocal", {1, [](DType a, DType) { return kiln::reciprocal(pos({3, 4}, a)); }}},
      {"logical_not", {1, [](DType a, DType) { return kiln::logical_not(r({3, 4}, a)); }}},
      {"clamp", {1, [](DType a, DType) { return kiln::clamp(r({3, 4}, a), -0.5, 0.5); }}},
      {"pow_scalar", {1, [](DType a, DType) { return kiln::pow(pos({3, 4}, a), Scalar(2.5)); }}},
      {"rpow", {1, [](DType a, DType) { return kiln::pow(Scalar(2.0), r({3, 4}, a)); }}},
      {"masked_fill", {1, [](DType a, DType) { return r({3, 4}, a).masked_fill(mask({3, 4}), 1.0); }}},
      {"dropout", {1, [](DType a, DType) { return F::dropout(r({3, 4}, a), 0.5, true); }}},
      // ---- elementwise binary
      {"add", {2, [](DType a, DType b) { return kiln::add(r({3, 4}, a), r({4}, b)); }}},
      {"sub", {2, [](DType a, DType b) { return kiln::sub(r({3, 4}, a), r({4}, b)); }}},
      {"mul", {2, [](DType a, DType b) { return kiln::mul(r({3, 4}, a), r({4}, b)); }}},
      {"div", {2, [](DType a, DType b) { return kiln::div(r({3, 4}, a), pos({4}, b)); }}},
      {"pow", {2, [](DType a, DType b) { return kiln::pow(pos({3, 4}, a), r({4}, b)); }}},
      {"maximum", {2, [](DType a, DType b) { return kiln::maximum(r({3, 4}, a), r({4}, b)); }}},
      {"minimum", {2, [](DType a, DType b) { return kiln::minimum(r({3, 4}, a), r({4}, b)); }}},
      {"remainder", {2, [](DType a, DType b) { return kiln::remainder(r({3, 4}, a), pos({4}, b)); }}},
      {"eq", {2, [](DType a, DType b) { return kiln::eq(r({3, 4}, a), r({4}, b)); }}},
      {"ne", {2, [](DType a, DType b) { return kiln::ne(r({3, 4}, a), r({4}, b)); }}},
      {"lt", {2, [](DType a, DType b) { return kiln::lt(r({3, 4}, a), r({4}, b)); }}},
      {"le", {2, [](DType a, DType b) { return kiln::le(r({3, 4}, a), r({4}, b)); }}},
      {"gt", {2, [](DType a, DType b) { return kiln::gt(r({3, 4}, a), r({4}, b)); }}},
      {"ge", {2, [](DType a, DType b) { return kiln::ge(r({3, 4}, a), r({4}, b)); }}},
      {"logical_and", {2, [](DType a, DType b) { return kiln::logical_and(r({3, 4}, a), r({4}, b)); }}},
      {"logical_or", {2, [](DType a, DType b) { return kiln::logical_or(r({3, 4}, a), r({4}, b)); }}},
      {"logical_xor", {2, [](DType a, DType b) { return kiln::logical_xor(r({3, 4}, a), r({4}, b)); }}},
      {"where", {2, [](DType a, DType b) { return kiln::where(mask({3, 4}), r({3, 4}, a), r({4}, b)); }}},
      {"add_", {2, [](DType a, DType b) { return r({3, 4}, a).add_(r({4}, b)); }}},
      {"mul_", {2, [](DType a, DType b) { return r({3, 4}, a).mul_(r({4}, b)); }}},
      {"copy_", {2, [](DType a, DType b) { return r({3, 4}, a).copy_(r({4}, b)); }}},
      // ---- reductions
      {"sum", {1, [](DType a, DType) { return kiln::sum(r({3, 4}, a), {1}); }}},
      {"mean", {1, [](DType a, DType) { return kiln::mean(r({3, 4}, a), {1}); }}},
      {"prod", {1, [](DType a, DType) { return kiln::prod(r({3, 4}, a), {1}); }}},
      {"amax", {1, [](DType a, DType) { return kiln::amax(r({3, 4}, a), {1}); }}},
      {"amin", {1, [](DType a, DType) { return kiln::amin(r({3, 4}, a), {1}); }}},
      {"var", {1, [](DType a, DType) { return kiln::var(r({3, 4}, a), {1}); }}},
      {"std", {1, [](DType a, DType) { return kiln::std(r({3, 4}, a), {1}); }}},
      {"norm", {1, [](DType a, DType) { return kiln::norm(r({3, 4}, a), 2.0, {1}); }}},
      {"logsumexp", {1, [](DType a, DType) { return kiln::logsumexp(r({3, 4}, a), {1}); }}},
      {"all", {1, [](DType a, DType) { return kiln::all(r({3, 4}, a)); }}},
      {"any", {1, [](DType a, DType) { return kiln::any(r({3, 4}, a)); }}},
      {"max_dim", {1, [](DType a, DType) { return kiln::max(r({3, 4}, a), 1).values; }}},
      {"min_dim", {1, [](DType a, DType) { return kiln::min(r({3, 4}, a), 1).values; }}},
      {"max", {1, [](DType a, DType) { return kiln::max(r({3, 4}, a)); }}},
      {"min", {1, [](DType a, DType) { return kiln::min(r({3, 4}, a)); }}},
      {"argmax", {1, [](DType a, DType) { return kiln::argmax(r({3, 4}, a), 1); }}},
      {"argmin", {1, [](DType a, DType) { return kiln::argmin(r({3, 4}, a), 1); }}},
      {"cumsum", {1, [](DType a, DType) { return kiln::cumsum(r({3, 4}, a), 1); }}},
      // ---- products and softmax
      {"mm", {2, [](DType a, DType b) { return kiln::mm(r({3, 4}, a), r({4, 5}, b)); }}},
      {"bmm", {2, [](DType a, DType b) { return kiln::bmm(r({2, 3, 4}, a), r({2, 4, 5}, b)); }}},
      {"matmul", {2, [](DType a, DType b) { return kiln::matmul(r({2, 3, 4}, a), r({4, 5}, b)); }}},
      {"addmm", {3, [](DType a, DType b) { return kiln::addmm(r({5}, b), r({3, 4}, a), r({4, 5}, b)); }}},
      {"linear", {3, [](DType a, DType b) { return F::linear(r({3, 4}, a), r({5, 4}, b), r({5}, b)); }}},
      {"softmax", {1, [](DType a, DType) { return kiln::softmax(r({3, 4}, a), 1); }}},
      {"log_softmax", {1, [](DType a, DType) { return kiln::log_softmax(r({3, 4}, a), 1); }}},
      // ---- joining, indexing, sorting
      {"cat", {2, [](DType a, DType b) { return kiln::cat({r({2, 4}, a), r({3, 4}, b)}); }}},
      {"stack", {2, [](DType a, DType b) { return kiln::stack({r({3, 4}, a), r({3, 4}, b)}); }}},
      {"split", {1, [](DType a, DType) { return kiln::split(r({4, 3}, a), 2)[0]; }}},
      {"chunk", {1, [](DType a, DType) { return kiln::chunk(r({4, 3}, a), 2)[0]; }}},
      {"gather", {1, [](DType a, DType) { return kiln::gather(r({3, 4}, a), 1, idx({3, 2}, 4)); }}},
      {"scatter", {2, [](DType a, DType b) { return kiln::scatter(r({3, 4}, a), 1, idx({3, 2}, 4), r({3, 2}, b)); }}},
      {"scatter_value", {1, [](DType a, DType) { return kiln::scatter(r({3, 4}, a), 1, idx({3, 2}, 4), 1.5); }}},
      {"scatter_add",
       {2, [](DType a, DType b) { return kiln::scatter_add(r({3, 4}, a), 1, idx({3, 2}, 4), r({3, 2}, b)); }}},
      {"index_select", {1, [](DType a, DType) { return kiln::index_select(r({3, 4}, a), 0, idx({2}, 3)); }}},
      {"index_add", {2, [](DType a, DType b) { return kiln::index_add(r({3, 4}, a), 0, idx({2}, 3), r({2, 4}, b)); }}},
      {"index_tensor", {1, [](DType a, DType) { return r({3, 4}, a).index({idx({2}, 3)}); }}},
      {"index_put", {2, [](DType a, DType b) { return r({3, 4}, a).index_put({idx({2}, 3)}, r({2, 4}, b)); }}},
      {"nonzero", {1, [](DType a, DType) { return kiln::nonzero(r({3, 4}, a)); }}},
      {"embedding", {1, [](DType a, DType) { return F::embedding(idx({2, 3}, 5), r({5, 4}, a)); }}},
      {"sort", {1, [](DType a, DType) { return kiln::sort(r({3, 4}, a), 1).values; }}},
      {"topk", {1, [](DType a, DType) { return kiln::topk(r({3, 4}, a), 2, 1).values; }}},
      {"tril", {1, [](DType a, DType) { return kiln::tril(r({3, 4}, a)); }}},
      {"triu", {1, [](DType a, DType) { return kiln::triu(r({3, 4}, a)); }}},
      // ---- views and copies
      {"view", {1, [](DType a, DType) { return r({3, 4}, a).view({4, 3}); }}},
      {"reshape", {1, [](DType a, DType) { return r({3, 4}, a).reshape({2, 6}); }}},
      {"transpose", {1, [](DType a, DType) { return r({3, 4}, a).transpose(0, 1); }}},
      {"permute", {1, [](DType a, DType) { return r({2, 3, 4}, a).permute({2, 0, 1}); }}},
      {"expand", {1, [](DType a, DType) { return r({1, 4}, a).expand({3, 4}); }}},
      {"narrow", {1, [](DType a, DType) { return r({3, 4}, a).narrow(1, 1, 2); }}},
      {"select", {1, [](DType a, DType) { return r({3, 4}, a).select(0, 1); }}},
      {"unsqueeze", {1, [](DType a, DType) { return r({3, 4}, a).unsqueeze(0); }}},
      {"flatten", {1, [](DType a, DType) { return r({2, 3, 4}, a).flatten(); }}},
      {"contiguous", {1, [](DType a, DType) { return r({3, 4}, a).t().contiguous(); }}},
      {"clone", {1, [](DType a, DType) { return r({3, 4}, a).clone(); }}},
      // ---- layers
      {"conv1d", {3, [](DType a, DType b) { return F::conv1d(r({2, 3, 6}, a), r({4, 3, 3}, b), r({4}, b)); }}},
      {"conv2d", {3, [](DType a, DType b) { return F::conv2d(r({2, 3, 5, 5}, a), r({4, 3, 3, 3}, b), r({4}, b)); }}},
      {"conv_transpose2d",
       {3, [](DType a, DType b) { return F::conv_transpose2d(r({2, 3, 4, 4}, a), r({3, 4, 3, 3}, b), r({4}, b)); }}},
      {"max_pool2d", {1, [](DType a, DType) { return F::max_pool2d(r({2, 3, 4, 4}, a), 2); }}},
      {"max_pool2d_with_indices",
       {1, [](DType a, DType) { return kiln::max_pool2d_with_indices(r({2, 3, 4, 4}, a), {2}).values; }}},
      {"avg_pool2d", {1, [](DType a, DType) { return F::avg_pool2d(r({2, 3, 4, 4}, a), 2); }}},
      {"adaptive_avg_pool2d", {1, [](DType a, DType) { return F::adaptive_avg_pool2d(r({2, 3, 4, 4}, a), 2); }}},
      {"batch_norm",
       {2, [](DType a, DType b) {
          return F::batch_norm(r({4, 3, 2}, a), zeros({3}, {.dtype = b}), ones({3}, {.dtype = b}), r({3}, b), r({3}, b),
                               true);
        }}},
      {"layer_norm", {2, [](DType a, DType b) { return F::layer_norm(r({3, 4}, a), {4}, r({4}, b), r({4}, b)); }}},
      {"rms_norm", {2, [](DType a, DType b) { return F::rms_norm(r({3, 4}, a), {4}, r({4}, b)); }}},
      {"group_norm", {2, [](DType a, DType b) { return F::group_norm(r({2, 4, 3}, a), 2, r({4}, b), r({4}, b)); }}},
      {"scaled_dot_product_attention",
       {3, [](DType a, DType b) {
          return F::scaled_dot_product_attention(r({2, 3, 4}, a), r({2, 5, 4}, b), r({2, 5, 4}, b));
        }}},
      // ---- losses
      {"cross_entropy", {1, [](DType a, DType) { return F::cross_entropy(r({4, 5}, a), idx({4}, 5)); }}},
      {"cross_entropy_probs",
       {2, [](DType a, DType b) { return F::cross_entropy(r({4, 5}, a), kiln::softmax(r({4, 5}, b), 1)); }}},
      {"nll_loss", {1, [](DType a, DType) { return F::nll_loss(r({4, 5}, a), idx({4}, 5)); }}},
      {"mse_loss", {2, [](DType a, DType b) { return F::mse_loss(r({3, 4}, a), r({3, 4}, b)); }}},
      {"l1_loss", {2, [](DType a, DType b) { return F::l1_loss(r({3, 4}, a), r({3, 4}, b)); }}},
      {"smooth_l1_loss", {2, [](DType a, DType b) { return F::smooth_l1_loss(r({3, 4}, a), r({3, 4}, b)); }}},
      {"binary_cross_entropy_with_logits",
       {2, [](DType a, DType b) { return F::binary_cross_entropy_with_logits(r({3, 4}, a), rand({3, 4}).to(b)); }}},
      {"kl_div",
       {2, [](DType a, DType b) {
          return F::kl_div(kiln::log_softmax(r({3, 4}, a), 1), kiln::softmax(r({3, 4}, b), 1),
                           {.reduction = F::Reduction::batchmean});
        }}},
  };
  return table;
}

std::string short_name(DType d) {
  switch (d) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i64: return "i64";
    case DType::boolean: return "bool";
    default: return std::string(dtype_name(d));
  }
}

DType low_dtype(const std::string& name) { return name == "bf16" ? DType::bf16 : DType::f16; }

struct DtypeLine {
  std::string fast, input_case, op, result;
};

std::vector<DtypeLine> dtype_fixture() {
  const std::string path = std::string(KILN_TEST_FIXTURES) + "/autocast/cpu_dtypes.txt";
  std::ifstream in(path);
  if (!in) throw Error("missing fixture " + path + " (run tests/fixtures/make_autocast_fixtures.py)");
  std::vector<DtypeLine> lines;
  for (DtypeLine l; in >> l.fast >> l.input_case >> l.op >> l.result;) lines.push_back(l);
  return lines;
}

TEST(Autocast, TableMatchesFixtureOps) {
  std::set<std::string> fixture_ops;
  for (const DtypeLine& l : dtype_fixture()) fixture_ops.insert(l.op);
  std::set<std::string> table_ops;
  for (const auto& [name, c] : ops()) table_ops.insert(name);
  for (const std::string& op : fixture_ops) EXPECT_TRUE(table_ops.count(op)) << op << " is in the fixture, not here";
  for (const std::string& op : table_ops) EXPECT_TRUE(fixture_ops.count(op)) << op << " is here, not in the fixture";
}

TEST(Autocast, OutputDtypesMatchTorch) {
  const std::vector<DtypeLine> lines = dtype_fixture();
  ASSERT_GT(lines.size(), 400u);
  for (const DtypeLine& l : lines) {
    SCOPED_TRACE(l.fast + " autocast, " + l.input_case + " inputs, " + l.op);
    const OpCase& c = ops().at(l.op);
    const DType low = low_dtype(l.fast);
    const DType d0 = l.input_case == "f32" ? DType::f32 : l.input_case == "f64" ? DType::f64 : low;
    const DType d1 = l.input_case == "low" ? low : l.input_case == "f64" ? DType::f64 : DType::f32;
    if (l.input_case == "mix") {
      EXPECT_GE(c.floating_inputs, 2);
    }
    manual_seed(0);
    AutocastGuard autocast(DeviceType::cpu, low);
    if (l.op == "index_put" && l.input_case == "mix") {
      // Kiln's index_put converts the values to the destination's dtype (Note [Indexing semantics]);
      // torch refuses values of another dtype. A divergence of index_put itself, not of autocast.
      EXPECT_EQ(l.result, "error");
      EXPECT_EQ(c.run(d0, d1).dtype(), d0);
      continue;
    }
    if (l.result == "error") {
      EXPECT_THROW(c.run(d0, d1), Error);
      continue;
    }
    try {
      EXPECT_EQ(short_name(c.run(d0, d1).dtype()), l.result);
    } catch (const Error& e) {
      ADD_FAILURE() << "threw where torch gives " << l.result << ": " << e.what();
    }
  }
}

// ---- values and gradients against torch within bf16 tolerance

const kt::NnFixture& values_fixture() {
  static const kt::NnFixture fx("../autocast/values_bf16.txt");
  return fx;
}

// Runs fn under bf16 autocast on f32 leaves made from the fixture's inputs, backpropagates
// sum(out * gy) and compares the output and every input's gradient with torch's. The output comes
// out in out_dtype; each gradient in its leaf's dtype (f32: master weights keep f32 gradients).
void check_values(const std::string& name, int inputs, DType out_dtype,
                  const std::function<Tensor(const TensorList&)>& fn, double rtol = 1.6e-2) {
  const kt::NnFixture& fx = values_fixture();
  TensorList leaves;
  for (int i = 0; i < inputs; ++i) {
    Tensor t = fx[name + ".in" + std::to_string(i)];
    if (t.is_floating()) t.requires_grad_();
    leaves.push_back(t);
  }
  Tensor out;
  {
    AutocastGuard autocast;
    out = fn(leaves);
  }
  EXPECT_EQ(out.dtype(), out_dtype) << name;
  kt::expect_matches(out.to(DType::f32), fx[name + ".out"], name + ".out", rtol);
  (out * fx[name + ".gy"]).sum().backward();
  for (int i = 0; i < inputs; ++i) {
    const std::string key = name + ".grad" + std::to_string(i);
    if (!fx.has(key)) continue;
    ASSERT_TRUE(leaves[i].grad().defined()) << key;
    EXPECT_EQ(leaves[i].grad().dtype(), DType::f32) << key;
    kt::expect_matches(leaves[i].grad(), fx[key], key, rtol);
  }
}

TEST(Autocast, LinearValuesAndF32GradientsMatchTorch) {
  check_values("linear", 3, DType::bf16, [](const TensorList& t) { return F::linear(t[0], t[1], t[2]); });
}

TEST(Autocast, Conv2dValuesAndF32GradientsMatchTorch) {
  check_values("conv2d", 3, DType::bf16,
               [](const TensorList& t) { return F::conv2d(t[0], t[1], t[2], {.padding = 1}); });
}

TEST(Autocast, BmmValuesMatchTorch) {
  check_values("bmm", 2, DType::bf16, [](const TensorList& t) { return kiln::bmm(t[0], t[1]); });
}

TEST(Autocast, SoftmaxOfBf16StaysBf16) {
  check_values("softmax_bf16", 1, DType::bf16,
               [](const TensorList& t) { return kiln::softmax(t[0].to(DType::bf16), 1); });
}

TEST(Autocast, CrossEntropyRunsInF32) {
  // f32 logits give an f32 loss (fp32 policy); values as torch's to f32 rounding.
  check_values("cross_entropy", 2, DType::f32,
               [](const TensorList& t) { return F::cross_entropy(t[0], t[1]); }, 1e-5);
  const Tensor logits = r({6, 5}, DType::bf16);
  AutocastGuard autocast;
  EXPECT_EQ(F::cross_entropy(logits, idx({6}, 5)).dtype(), DType::f32);
}

// Note [Mixed-precision norms] (autograd/ops/norm.cpp): a bf16 input with f32 parameters gives a
// bf16 output computed in f32, and f32 parameter gradients, as torch's CPU norms.
TEST(Autocast, NormsOfBf16InputWithF32ParametersMatchTorch) {
  const DType bf16 = DType::bf16;
  check_values("layer_norm_mixed", 3, bf16,
               [&](const TensorList& t) { return F::layer_norm(t[0].to(bf16), {3}, t[1], t[2]); });
  check_values("rms_norm_mixed", 2, bf16, [&](const TensorList& t) { return F::rms_norm(t[0].to(bf16), {3}, t[1]); });
  check_values("group_norm_mixed", 3, bf16,
               [&](const TensorList& t) { return F::group_norm(t[0].to(bf16), 2, t[1], t[2]); });
  check_values("batch_norm_mixed", 3, bf16, [&](const TensorList& t) {
    return F::batch_norm(t[0].to(bf16), Tensor(), Tensor(), t[1], t[2], /*training=*/true);
  });
}

// ---- the guard

TEST(Autocast, GuardSetsAndRestoresState) {
  EXPECT_FALSE(is_autocast_enabled(DeviceType::cpu));
  EXPECT_EQ(autocast_dtype(DeviceType::cpu), DType::bf16);
  EXPECT_EQ(autocast_dtype(DeviceType::cuda), DType::f16);
  const Tensor a = r({3, 4}, DType::f32), b = r({4, 2}, DType::f32);
  {
    AutocastGuard outer(DeviceType::cpu, DType::f16);
    EXPECT_TRUE(is_autocast_enabled(DeviceType::cpu));
    EXPECT_FALSE(is_autocast_enabled(DeviceType::cuda));
    EXPECT_EQ(autocast_dtype(DeviceType::cpu), DType::f16);
    EXPECT_EQ(kiln::mm(a, b).dtype(), DType::f16);
    {
      AutocastGuard inner(DeviceType::cpu, std::nullopt, /*enabled=*/false);
      EXPECT_FALSE(is_autocast_enabled(DeviceType::cpu));
      EXPECT_EQ(kiln::mm(a, b).dtype(), DType::f32);
    }
    EXPECT_TRUE(is_autocast_enabled(DeviceType::cpu));
    EXPECT_EQ(autocast_dtype(DeviceType::cpu), DType::f16);
    EXPECT_EQ(kiln::mm(a, b).dtype(), DType::f16);
    {
      AutocastGuard inner(DeviceType::cpu, DType::bf16);
      EXPECT_EQ(kiln::mm(a, b).dtype(), DType::bf16);
    }
    EXPECT_EQ(kiln::mm(a, b).dtype(), DType::f16);
  }
  EXPECT_FALSE(is_autocast_enabled(DeviceType::cpu));
  EXPECT_EQ(autocast_dtype(DeviceType::cpu), DType::bf16);
  EXPECT_EQ(kiln::mm(a, b).dtype(), DType::f32);
}

TEST(Autocast, RejectsDtypesOtherThanBf16AndF16) {
  for (DType d : {DType::i64, DType::f32, DType::f64, DType::boolean})
    kt::expect_error([&] { AutocastGuard g(DeviceType::cpu, d); },
                     {"autocast", "bfloat16 and float16", std::string(dtype_name(d))});
  EXPECT_FALSE(is_autocast_enabled(DeviceType::cpu));  // a refused guard changed nothing
}

TEST(Autocast, StateIsPerThread) {
  AutocastGuard autocast;
  bool other_enabled = true;
  DType other_dtype = DType::f32;
  std::thread([&] {
    other_enabled = is_autocast_enabled(DeviceType::cpu);
    other_dtype = kiln::mm(r({2, 3}, DType::f32), r({3, 2}, DType::f32)).dtype();
  }).join();
  EXPECT_FALSE(other_enabled);
  EXPECT_EQ(other_dtype, DType::f32);
  EXPECT_TRUE(is_autocast_enabled(DeviceType::cpu));
}

TEST(Autocast, F64AndIntegerInputsAreNotCast) {
  AutocastGuard autocast;
  EXPECT_EQ(kiln::mm(r({3, 4}, DType::f64), r({4, 2}, DType::f64)).dtype(), DType::f64);
  EXPECT_EQ(F::linear(r({3, 4}, DType::f64), r({2, 4}, DType::f64)).dtype(), DType::f64);
  const Tensor i = randint(0, 5, {3, 4});
  EXPECT_EQ(kiln::mm(i, randint(0, 5, {4, 2})).dtype(), DType::i64);
  EXPECT_EQ(kiln::cat({r({2, 4}, DType::f64), r({2, 4}, DType::bf16)}).dtype(), DType::f64);  // f64 ignored
  EXPECT_EQ(F::mse_loss(r({3}, DType::f64), r({3}, DType::f64)).dtype(), DType::f64);
}

TEST(Autocast, PromoteRefusesTwoLowPrecisionDtypes) {
  // Under bf16, an f16 input met before any f32 one cannot be promoted (torch raises the same,
  // in the same order-dependent way); once an f32 input was seen, the result is f32.
  AutocastGuard autocast;
  kt::expect_error([] { kiln::cat({r({2}, DType::f16), r({2}, DType::bf16)}); }, {"autocast", "float16"});
  kt::expect_error([] { kiln::cat({r({2}, DType::f16), r({2}, DType::f32)}); }, {"autocast", "float16"});
  EXPECT_EQ(kiln::cat({r({2}, DType::f32), r({2}, DType::f16)}).dtype(), DType::f32);
}

// ---- the weight cache

TEST(Autocast, WeightUsedTwiceIsCastOnce) {
  Tensor w = r({4, 3}, DType::f32).requires_grad_();
  const Tensor x = r({2, 3}, DType::f32);
  Tensor y1, y2;
  {
    AutocastGuard autocast;
    y1 = F::linear(x, w);
    EXPECT_EQ(autocast_cache_size(), 1u);
    y2 = F::linear(x * 2.0, w);
    EXPECT_EQ(autocast_cache_size(), 1u);  // the second linear found w's cast
    {
      AutocastGuard nested(DeviceType::cpu, std::nullopt, false);
    }
    EXPECT_EQ(autocast_cache_size(), 1u);  // only the outermost guard clears it
    (void)kiln::mm(x, w.t());  // a view of w is not a leaf: cast, not cached
    EXPECT_EQ(autocast_cache_size(), 1u);
  }
  EXPECT_EQ(autocast_cache_size(), 0u);
  // Both uses reach w through the one cast: its gradient is the sum of both, in f32.
  (y1.to(DType::f32).sum() + y2.to(DType::f32).sum()).backward();
  ASSERT_EQ(w.grad().dtype(), DType::f32);
  const std::vector<double> xs = kt::values(x.to(DType::bf16).to(DType::f64));
  std::vector<double> want(12, 0.0);  // d/dw of sum(x w^T) + sum(2x w^T): column sums of 3x
  for (int o = 0; o < 4; ++o)
    for (int i = 0; i < 3; ++i) want[o * 3 + i] = xs[i] + xs[3 + i] + 2 * (xs[i] + xs[3 + i]);
  kt::expect_close(w.grad(), want, 2e-2, 1e-2, "w.grad");
}

TEST(Autocast, CacheOnlyForGradLeavesWithGradModeOn) {
  Tensor w = r({4, 3}, DType::f32).requires_grad_();
  const Tensor plain = r({4, 3}, DType::f32);
  const Tensor x = r({2, 3}, DType::f32);
  {
    AutocastGuard autocast;
    (void)F::linear(x, plain);
    EXPECT_EQ(autocast_cache_size(), 0u);  // needs no gradient: not a weight
    {
      NoGradGuard no_grad;
      (void)F::linear(x, w);
      EXPECT_EQ(autocast_cache_size(), 0u);
    }
    const Tensor y = F::linear(x, w);  // after no_grad, the cast still reaches w
    EXPECT_TRUE(y.requires_grad());
    EXPECT_EQ(autocast_cache_size(), 1u);
  }
  {
    AutocastGuard autocast(DeviceType::cpu, std::nullopt, true, /*cache_enabled=*/false);
    (void)F::linear(x, w);
    EXPECT_EQ(autocast_cache_size(), 0u);
    EXPECT_FALSE(is_autocast_cache_enabled());
  }
  EXPECT_TRUE(is_autocast_cache_enabled());
}

TEST(Autocast, ClearCacheByHand) {
  Tensor w = r({4, 3}, DType::f32).requires_grad_();
  AutocastGuard autocast;
  (void)F::linear(r({2, 3}, DType::f32), w);
  EXPECT_EQ(autocast_cache_size(), 1u);
  clear_autocast_cache();
  EXPECT_EQ(autocast_cache_size(), 0u);
}

}  // namespace
