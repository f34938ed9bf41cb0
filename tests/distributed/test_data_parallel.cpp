// DataParallel (DDP's reducer) at 2 and 4 ranks against one process on the whole batch: 20 training
// steps of an MLP and of a small transformer LM with several buckets, no_sync accumulation, unused
// parameters, bf16 gradients, rank 0's weights and buffers, and a model mismatch that fails on
// every rank instead of hanging. Each rank computes the one-process reference itself
// from the same data, so a body only compares local tensors.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>

#include "distributed/data_parallel.h"
#include "distributed/multiprocess.h"
#include "kiln/kiln.h"
#include "nn/containers.h"
#include "nn/functional.h"
#include "nn/layers/activation.h"
#include "nn/layers/attention.h"
#include "nn/layers/linear.h"
#include "nn/layers/norm.h"
#include "testing.h"

using namespace kiln;
namespace kt = kiln::testing;
namespace mp = kiln::dist::testing;
using dist::DataParallel;
using dist::ProcessGroup;

namespace {

using Body = std::function<void(std::shared_ptr<ProcessGroup>)>;

// One process per rank (multiprocess.h); a body reports a failed comparison by throwing, which
// fails its rank and so the test.
void run_ranks(int world, const Body& body) {
  mp::run_ranks(world, [&](ProcessGroup& group, int) {
    body(std::shared_ptr<ProcessGroup>(&group, [](ProcessGroup*) {}));
  });
}

template <class... Parts>
void require(bool ok, const Parts&... parts) {
  if (!ok) throw std::runtime_error(detail::concat(parts...));
}

// The largest |a - b| / (|b| + floor) over the elements of two same-shaped tensors.
double max_relative_diff(const Tensor& a, const Tensor& b, double floor) {
  const std::vector<double> x = kt::values(a), y = kt::values(b);
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(x[i] - y[i]) / (std::abs(y[i]) + floor));
  return worst;
}

// Forwards to a real group and counts the all-reduces, to see when buckets launch.
class CountingGroup final : public ProcessGroup {
 public:
  explicit CountingGroup(std::shared_ptr<ProcessGroup> inner) : inner_(std::move(inner)) {}
  std::string backend() const override { return inner_->backend(); }
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::chrono::milliseconds timeout() const override { return inner_->timeout(); }
  dist::WorkPtr all_reduce(const Tensor& t, dist::ReduceOp op) override {
    all_reduces.fetch_add(1);
    return inner_->all_reduce(t, op);
  }
  dist::WorkPtr broadcast(const Tensor& t, int src) override { return inner_->broadcast(t, src); }
  dist::WorkPtr all_gather(const Tensor& in, const Tensor& out, const std::vector<int64_t>& counts) override {
    return inner_->all_gather(in, out, counts);
  }
  dist::WorkPtr reduce_scatter(const Tensor& in, const Tensor& out, const std::vector<int64_t>& counts,
                               dist::ReduceOp op) override {
    return inner_->reduce_scatter(in, out, counts, op);
  }
  dist::WorkPtr barrier() override { return inner_->barrier(); }
  dist::WorkPtr send(const Tensor& t, int dst, int tag) override { return inner_->send(t, dst, tag); }
  dist::WorkPtr recv(const Tensor& t, int src, int tag) override { return inner_->recv(t, src, tag); }

  std::atomic<int> all_reduces{0};

 private:
  std::shared_ptr<ProcessGroup> inner_;
};

std::shared_ptr<nn::Module> mlp(uint64_t seed, int64_t hidden = 32) {
  Generator gen(seed);
  CurrentGeneratorGuard guard(gen);
  return std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(12, hidden), std::make_shared<nn::Tanh>(),
                                          std::make_shared<nn::Linear>(hidden, hidden), std::make_shared<nn::ReLU>(),
                                          std::make_shared<nn::Linear>(hidden, 3));
}

// Token ids (N, T) -> logits (N, T, vocab): embeddings, one pre-norm block, a head.
class TinyLM : public nn::Module {
 public:
  TinyLM(uint64_t seed, int64_t vocab = 11, int64_t d = 16) : Module("TinyLM") {
    Generator gen(seed);
    CurrentGeneratorGuard guard(gen);
    embed = register_module("embed", std::make_shared<nn::Embedding>(vocab, d));
    block = register_module("block", std::make_shared<nn::TransformerBlock>(d, 2));
    head = register_module("head", std::make_shared<nn::Linear>(d, vocab));
  }
  Tensor forward(const Tensor& tokens) override { return head->forward(block->forward(embed->forward(tokens))); }
  std::shared_ptr<nn::Embedding> embed;
  std::shared_ptr<nn::TransformerBlock> block;
  std::shared_ptr<nn::Linear> head;
};

struct Batch {
  Tensor x, y;
  Batch slice(int rank, int world) const {
    const int64_t n = x.size(0) / world;
    return {x.narrow(0, rank * n, n), y.narrow(0, rank * n, n)};
  }
};

Batch regression_batch(int step, DType dtype, int64_t n = 8) {
  Generator gen(1000 + static_cast<uint64_t>(step));
  return {randn({n, 12}, {.dtype = dtype}, &gen), randn({n, 3}, {.dtype = dtype}, &gen)};
}

Batch token_batch(int step, int64_t n = 4, int64_t t = 6, int64_t vocab = 11) {
  Generator gen(2000 + static_cast<uint64_t>(step));
  return {randint(0, vocab, {n, t}, {}, &gen), randint(0, vocab, {n, t}, {}, &gen)};
}

Tensor loss_of(nn::Module& model, const Batch& b, bool tokens) {
  Tensor out = model.forward(b.x);
  if (!tokens) return nn::F::mse_loss(out, b.y);
  return nn::F::cross_entropy(out.reshape({-1, out.size(-1)}), b.y.reshape({-1}));
}

enum class Opt { sgd, adamw };

std::unique_ptr<optim::Optimizer> make_optimizer(Opt kind, std::vector<Tensor> params) {
  if (kind == Opt::sgd)
    return std::make_unique<optim::SGD>(std::move(params), optim::SGDOptions{.lr = 0.1, .momentum = 0.9});
  return std::make_unique<optim::AdamW>(std::move(params), optim::AdamOptions{.lr = 1e-2});
}

// 20 steps: rank r trains on its slice of each global batch under DDP, and the same rank trains a
// reference on the whole batch alone; parameters must agree after every step. The reference starts
// from rank 0's initial weights (seed 100) while rank r starts from seed 100 + r, so the
// comparison also checks that construction took rank 0's values.
//
// Tolerance, on |ddp - one process| / (|one process| + 0.01): in f64 1e-10 (9e-15 seen). In f32
// the first step already differs by up to 2e-7 (the weight gradient sums the batch in another
// order: per rank, then across ranks), and momentum and Adam carry such differences forward, up to
// 4e-6 after 20 steps here; hence 1e-5 for f32.
void train_and_compare(std::shared_ptr<ProcessGroup> inner, Opt opt, bool tokens, DType dtype) {
  const double tolerance = dtype == DType::f64 ? 1e-10 : 1e-5;
  const int world = inner->size();
  auto group = std::make_shared<CountingGroup>(inner);
  const int rank = group->rank();
  auto make = [&](uint64_t seed) -> std::shared_ptr<nn::Module> {
    return tokens ? std::shared_ptr<nn::Module>(std::make_shared<TinyLM>(seed)) : mlp(seed);
  };
  auto reference = make(100);
  auto model = make(100 + static_cast<uint64_t>(rank));
  reference->to(dtype);
  model->to(dtype);
  // The gradients that arrive last (the first layer's) must find buckets already launched.
  const Tensor first_weight = model->named_parameters()[0].second;
  int launched_before_last = -1;
  autograd::register_post_accumulate_grad_hook(first_weight, [&](const Tensor&) {
    launched_before_last = group->all_reduces.load();
  });
  DataParallel ddp(*model, group, {.bucket_cap_mb = 3e-4});  // 78 f32 values: 3+ buckets
  const auto ref_params = reference->named_parameters();
  const auto params = model->named_parameters();
  for (size_t i = 0; i < params.size(); ++i)
    require(kt::values(params[i].second) == kt::values(ref_params[i].second), "rank ", rank, ": '",
            params[i].first, "' is not rank 0's value after construction");
  auto ref_opt = make_optimizer(opt, reference->parameters());
  auto ddp_opt = make_optimizer(opt, model->parameters());
  for (int step = 0; step < 20; ++step) {
    const Batch global = tokens ? token_batch(step) : regression_batch(step, dtype);
    ref_opt->zero_grad();
    loss_of(*reference, global, tokens).backward();
    ref_opt->step();

    ddp_opt->zero_grad();
    ddp.before_forward();
    const int before = group->all_reduces.load();
    loss_of(*model, global.slice(rank, world), tokens).backward();
    ddp.finish_gradient_sync();
    ddp_opt->step();
    const int buckets = group->all_reduces.load() - before;
    require(buckets >= 3 && ddp.stats().buckets == buckets, "rank ", rank, ": ", buckets, " all-reduces, stats say ",
            ddp.stats().buckets);
    require(launched_before_last >= before + 1, "rank ", rank, ": no bucket launched before the last gradient");
    for (size_t i = 0; i < params.size(); ++i) {
      const double d = max_relative_diff(params[i].second, ref_params[i].second, 1e-2);
      require(d <= tolerance, "rank ", rank, " step ", step, ": '", params[i].first,
              "' differs from one process by ", d);
    }
  }
}

void mlp_runs(std::shared_ptr<ProcessGroup> group) {
  for (DType dtype : {DType::f32, DType::f64})
    for (Opt opt : {Opt::sgd, Opt::adamw}) train_and_compare(group, opt, /*tokens=*/false, dtype);
}
TEST(DataParallel, MlpMatchesOneProcessEveryStepAt2Ranks) { run_ranks(2, mlp_runs); }
TEST(DataParallel, MlpMatchesOneProcessEveryStepAt4Ranks) { run_ranks(4, mlp_runs); }

// SGD: the key projection's bias has an exactly zero gradient (softmax ignores a shift shared by
// all keys), which Adam would turn from rounding noise into steps of +-lr.
void transformer_runs(std::shared_ptr<ProcessGroup> group) {
  for (DType dtype : {DType::f32, DType::f64}) train_and_compare(group, Opt::sgd, /*tokens=*/true, dtype);
}
TEST(DataParallel, TransformerMatchesOneProcessEveryStepAt2Ranks) { run_ranks(2, transformer_runs); }
TEST(DataParallel, TransformerMatchesOneProcessEveryStepAt4Ranks) { run_ranks(4, transformer_runs); }

// Backward with sync off only accumulates; the next synchronised backward averages the sum, which
// equals one process accumulating the two global micro-batches.
TEST(DataParallel, NoSyncAccumulatesThenAveragesTheSum) {
  run_ranks(2, [](std::shared_ptr<ProcessGroup> inner) {
    auto group = std::make_shared<CountingGroup>(inner);
    auto reference = mlp(5), model = mlp(5);
    reference->to(DType::f64);
    model->to(DType::f64);
    DataParallel ddp(*model, group, {.bucket_cap_mb = 3e-4});
    const Batch b0 = regression_batch(0, DType::f64), b1 = regression_batch(1, DType::f64);
    loss_of(*reference, b0, false).backward();
    loss_of(*reference, b1, false).backward();

    const int constructed = group->all_reduces.load();
    ddp.set_require_sync(false);
    loss_of(*model, b0.slice(group->rank(), 2), false).backward();
    ddp.finish_gradient_sync();  // a no-op
    require(group->all_reduces.load() == constructed, "an all-reduce ran during a backward without sync");
    ddp.set_require_sync(true);
    loss_of(*model, b1.slice(group->rank(), 2), false).backward();
    ddp.finish_gradient_sync();
    require(group->all_reduces.load() - constructed == ddp.stats().buckets, "one all-reduce per bucket");
    const auto params = model->named_parameters(), ref_params = reference->named_parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      const double d = max_relative_diff(params[i].second.grad(), ref_params[i].second.grad(), 1e-6);
      require(d < 1e-12, "'", params[i].first, "'.grad differs from one process by ", d);
    }
  });
}

// `shared` is used on every rank, `rank0` on rank 0 only, `never` nowhere.
class PartlyUsed : public nn::Module {
 public:
  explicit PartlyUsed(int rank) : Module("PartlyUsed"), rank_(rank) {
    Generator gen(9);
    CurrentGeneratorGuard guard(gen);
    shared = register_module("shared", std::make_shared<nn::Linear>(12, 3));
    rank0 = register_module("rank0", std::make_shared<nn::Linear>(12, 3));
    never = register_module("never", std::make_shared<nn::Linear>(12, 3));
    to(DType::f64);
  }
  Tensor forward(const Tensor& x) override {
    return rank_ == 0 ? shared->forward(x) + rank0->forward(x) : shared->forward(x);
  }
  std::shared_ptr<nn::Linear> shared, rank0, never;

 private:
  int rank_;
};

// A parameter without a gradient on some ranks counts as zero there; one without a gradient on
// any rank keeps an undefined .grad, as it would in one process. Twice, so the buckets reset.
TEST(DataParallel, UnusedParametersCountAsZeroOrStayWithoutGrad) {
  run_ranks(2, [](std::shared_ptr<ProcessGroup> group) {
    PartlyUsed model(group->rank());
    DataParallel ddp(model, group, {.bucket_cap_mb = 1e-4});
    for (int step = 0; step < 2; ++step) {
      // Expected: the mean over ranks of each rank's own gradients, each computed here.
      const Batch global = regression_batch(step, DType::f64, 4);
      std::vector<Tensor> expected;
      for (int r = 0; r < 2; ++r) {
        PartlyUsed alone(r);
        loss_of(alone, global.slice(r, 2), false).backward();
        const auto ps = alone.parameters();
        for (size_t i = 0; i < ps.size(); ++i) {
          const Tensor g = ps[i].grad().defined() ? ps[i].grad() / 2.0 : Tensor();
          if (r == 0) expected.push_back(g);
          else if (g.defined()) expected[i] = expected[i].defined() ? expected[i] + g : g;
        }
      }
      model.zero_grad();
      loss_of(model, global.slice(group->rank(), 2), false).backward();
      ddp.finish_gradient_sync();
      const auto named = model.named_parameters();
      for (size_t i = 0; i < named.size(); ++i) {
        const Tensor& got = named[i].second.grad();
        require(got.defined() == expected[i].defined(), "'", named[i].first, "'.grad defined: ", got.defined());
        if (got.defined())
          require(max_relative_diff(got, expected[i], 1e-6) < 1e-12, "'", named[i].first, "'.grad is not the mean");
      }
      require(!model.never->weight.grad().defined(), "a parameter unused on every rank got a .grad");
    }
  });
}

// 16-bit gradients are all-reduced in their own dtype, in a bucket of their own.
TEST(DataParallel, Bf16GradientsReduceInBf16) {
  run_ranks(2, [](std::shared_ptr<ProcessGroup> group) {
    nn::Module model;
    Tensor w16 = model.register_parameter("w16", zeros({4}, {.dtype = DType::bf16}));
    Tensor w32 = model.register_parameter("w32", zeros({2}));
    DataParallel ddp(model, group);
    const double scale = group->rank() + 1.0;  // gradients 1x and 2x: mean 1.5x, exact in bf16
    Tensor loss = (w16.to(DType::f32) * kiln::tensor({1.0, 2.0, 3.0, 4.0}) * scale).sum() +
                  (w32 * kiln::tensor({1.0, -1.0}) * scale).sum();
    loss.backward();
    ddp.finish_gradient_sync();
    require(w16.grad().dtype() == DType::bf16, "w16.grad is ", w16.grad().dtype());
    require(kt::values(w16.grad()) == std::vector<double>{1.5, 3, 4.5, 6}, "w16.grad is not the mean");
    require(kt::values(w32.grad()) == std::vector<double>{1.5, -1.5}, "w32.grad is not the mean");
    require(ddp.stats().buckets == 2 && ddp.stats().bytes == 4 * 2 + 2 * 4, "stats: ", ddp.stats().buckets,
            " buckets, ", ddp.stats().bytes, " bytes");
  });
}

// Buffers take rank 0's values at construction and before each forward.
TEST(DataParallel, BuffersFollowRankZero) {
  run_ranks(2, [](std::shared_ptr<ProcessGroup> group) {
    auto make = [] {
      return std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(12, 4),
                                              std::make_shared<nn::BatchNorm1d>(4));
    };
    auto model = make();
    model->buffer("1.running_mean").fill_(static_cast<double>(group->rank()));
    DataParallel ddp(*model, group);
    require(kt::values(model->buffer("1.running_mean")) == std::vector<double>(4, 0.0), "running_mean is not rank 0's");
    auto rank0 = make();  // what rank 0's model does with rank 0's slice
    rank0->load_state_dict(model->state_dict());
    const Batch global = regression_batch(0, DType::f32);
    rank0->forward(global.slice(0, 2).x);
    model->forward(global.slice(group->rank(), 2).x);
    const auto want = kt::values(rank0->buffer("1.running_mean"));
    require((kt::values(model->buffer("1.running_mean")) == want) == (group->rank() == 0), "statistics before sync");
    ddp.before_forward();
    for (const char* name : {"1.running_mean", "1.running_var", "1.num_batches_tracked"})
      require(kt::values(model->buffer(name)) == kt::values(rank0->buffer(name)), name, " is not rank 0's");
  });
}

// Different models: every rank throws the same error, naming the tensor and both shapes, and none
// waits for the group's timeout.
void expect_every_rank_refuses(const std::function<std::shared_ptr<nn::Module>(int rank)>& make,
                               const std::vector<std::string>& parts) {
  const auto start = std::chrono::steady_clock::now();
  const std::vector<mp::RankResult> results = mp::run_ranks_results(2, [&](ProcessGroup& group, int rank) {
    auto model = make(rank);
    DataParallel ddp(*model, std::shared_ptr<ProcessGroup>(&group, [](ProcessGroup*) {}));
  });
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));  // the group's timeout is 20 s
  for (const mp::RankResult& r : results) {
    EXPECT_FALSE(r.ok()) << r.describe();
    for (const std::string& part : parts) EXPECT_NE(r.output.find(part), std::string::npos) << r.output;
  }
}

TEST(DataParallel, DifferentShapesFailOnEveryRank) {
  expect_every_rank_refuses([](int rank) { return mlp(1, rank == 1 ? 24 : 32); },
                            {"DataParallel: the ranks' models differ",
                             "rank 1's parameter '0.weight' has shape [24, 12] where rank 0's has shape [32, 12]"});
}

TEST(DataParallel, AnExtraLayerFailsOnEveryRank) {
  expect_every_rank_refuses(
      [](int rank) {
        auto model = std::dynamic_pointer_cast<nn::Sequential>(mlp(1));
        if (rank == 1) model->push_back(std::make_shared<nn::Linear>(3, 3));
        return model;
      },
      {"rank 1 has parameter '5.weight' (shape [3, 3]) which rank 0 lacks (6 parameters and buffers on rank 0, "
       "8 on rank 1)"});
}

}  // namespace
