// SyncBatchNorm over 2 ranks with uneven slices equals BatchNorm on the concatenated batch (output,
// running statistics, input and parameter gradients, then eval mode); its backward against f64
// finite differences of the loss summed over both ranks; one rank is BatchNorm bit for bit; and
// convert_sync_batchnorm keeps names and tensors, and refuses a layer held outside the tree.
#include <gtest/gtest.h>

#include "distributed/data_parallel.h"
#include "distributed/multiprocess.h"
#include "distributed/sync_batch_norm.h"
#include "kiln/kiln.h"
#include "nn/containers.h"
#include "nn/functional.h"
#include "nn/layers/conv.h"
#include "nn/layers/activation.h"
#include "nn/layers/linear.h"
#include "testing.h"

using namespace kiln;
namespace kt = kiln::testing;
namespace mp = kiln::dist::testing;
using dist::ProcessGroup;
using dist::SyncBatchNorm;

namespace {

std::shared_ptr<ProcessGroup> unowned(ProcessGroup& group) {
  return std::shared_ptr<ProcessGroup>(&group, [](ProcessGroup*) {});
}

// Distinct weights, biases and running statistics, the same on every rank.
void set_state(nn::BatchNorm& bn, uint64_t seed) {
  Generator gen(seed);
  NoGradGuard no_grad;
  const int64_t C = bn.num_features;
  bn.weight.copy_(randn({C}, {}, &gen));
  bn.bias.copy_(randn({C}, {}, &gen));
  if (!bn.options.track_running_stats) return;
  bn.running_mean.copy_(randn({C}, {}, &gen));
  bn.running_var.copy_(rand({C}, {}, &gen) + 0.5);
}

Tensor summed_over_ranks(ProcessGroup& group, const Tensor& t) {
  Tensor s = t.clone();
  group.all_reduce(s, dist::ReduceOp::sum)->wait();
  return s;
}

void expect_near(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  kt::expect_close(got, kt::values(want), tol, tol, what);
}

// Rank 0 holds samples [0, 2), rank 1 [2, 5): counts weigh the ranks' statistics.
TEST(SyncBatchNorm, TwoRanksMatchBatchNormOnTheWholeBatch) {
  mp::run_ranks(2, [](ProcessGroup& group, int rank) {
    const int64_t start = rank == 0 ? 0 : 2, count = rank == 0 ? 2 : 3;
    for (const Dims& shape : {Dims{5, 3, 2, 3}, Dims{5, 4}}) {
      const int64_t C = shape[1];
      Generator gen(11);
      const Tensor x = randn(shape, {}, &gen) * 2.0 + 1.5, dy = randn(shape, {}, &gen);
      // One process on all five samples.
      std::shared_ptr<nn::BatchNorm> bn;
      if (shape.size() == 4) bn = std::make_shared<nn::BatchNorm2d>(C);
      else bn = std::make_shared<nn::BatchNorm1d>(C);
      set_state(*bn, 5);
      Tensor x_all = x.clone().requires_grad_();
      Tensor y_all = bn->forward(x_all);
      y_all.backward(dy);
      // This rank's slice through a converted copy.
      nn::Sequential model;
      model.push_back(shape.size() == 4 ? nn::ModulePtr(std::make_shared<nn::BatchNorm2d>(C))
                                        : nn::ModulePtr(std::make_shared<nn::BatchNorm1d>(C)));
      set_state(dynamic_cast<nn::BatchNorm&>(*model[0]), 5);
      ASSERT_EQ(dist::convert_sync_batchnorm(model, unowned(group)), 1);
      auto& sync = dynamic_cast<SyncBatchNorm&>(*model[0]);
      Tensor x_mine = x.narrow(0, start, count).clone().requires_grad_();
      Tensor y_mine = model.forward(x_mine);
      y_mine.backward(dy.narrow(0, start, count));

      expect_near(y_mine, y_all.narrow(0, start, count), 1e-5, "output");
      expect_near(x_mine.grad(), x_all.grad().narrow(0, start, count), 1e-5, "input gradient");
      expect_near(summed_over_ranks(group, sync.weight.grad()), bn->weight.grad(), 1e-5, "weight gradient");
      expect_near(summed_over_ranks(group, sync.bias.grad()), bn->bias.grad(), 1e-5, "bias gradient");
      expect_near(sync.running_mean, bn->running_mean, 1e-5, "running_mean");
      expect_near(sync.running_var, bn->running_var, 1e-5, "running_var");
      EXPECT_EQ(sync.num_batches_tracked.item<int64_t>(), 1);

      model.eval();
      bn->eval();
      NoGradGuard no_grad;
      expect_near(model.forward(x.narrow(0, start, count)), bn->forward(x).narrow(0, start, count), 1e-5, "eval");
    }
  });
}

// L = sum over ranks of <y_r, c_r>. Each rank's x.grad after backward is dL/dx_r, which depends on
// the other rank's samples through the shared statistics; the weight's is this rank's share.
TEST(SyncBatchNorm, GradientsMatchFiniteDifferencesAcrossRanks) {
  mp::run_ranks(2, [](ProcessGroup& group, int rank) {
    SyncBatchNorm sync(3, unowned(group), {.track_running_stats = false});
    sync.to(DType::f64);
    set_state(sync, 8);
    Generator gen(20 + static_cast<uint64_t>(rank));
    Tensor x = (randn({2, 3, 2}, {.dtype = DType::f64}, &gen) * 3.0).requires_grad_();
    const Tensor c = randn({2, 3, 2}, {.dtype = DType::f64}, &gen);
    auto global_loss = [&] {
      NoGradGuard no_grad;
      return summed_over_ranks(group, (sync.forward(x) * c).sum()).item<double>();
    };
    sync.forward(x).backward(c);
    const Tensor dx = x.grad().clone(), dw = summed_over_ranks(group, sync.weight.grad());

    const double h = 1e-6;
    auto central = [&](double* value, bool mine) {  // every rank evaluates; only `mine` moves
      const double v = *value;
      if (mine) *value = v + h;
      const double up = global_loss();
      if (mine) *value = v - h;
      const double down = global_loss();
      *value = v;
      return (up - down) / (2 * h);
    };
    for (int owner = 0; owner < 2; ++owner)
      for (int64_t i = 0; i < x.numel(); ++i) {
        const double fd = central(x.data_ptr<double>() + i, rank == owner);
        if (rank == owner) {
          EXPECT_NEAR(fd, kt::at(dx, i), 1e-6 * (1 + std::abs(fd))) << "x[" << i << "]";
        }
      }
    for (int64_t ch = 0; ch < 3; ++ch) {
      const double fd = central(sync.weight.data_ptr<double>() + ch, true);  // a replicated parameter
      EXPECT_NEAR(fd, kt::at(dw, ch), 1e-6 * (1 + std::abs(fd))) << "weight[" << ch << "]";
    }
  });
}

// With one rank SyncBatchNorm is BatchNorm; conversion keeps names and the tensors themselves.
TEST(SyncBatchNorm, OneRankIsBatchNormAndConversionKeepsTheTensors) {
  mp::run_ranks(1, [](ProcessGroup& group, int) {
    auto make = [] {
      Generator gen(4);
      CurrentGeneratorGuard guard(gen);
      auto inner =
          std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(6, 4), std::make_shared<nn::BatchNorm1d>(4));
      return std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(5, 6), std::make_shared<nn::BatchNorm1d>(6),
                                              std::make_shared<nn::ReLU>(), inner);
    };
    auto plain = make(), model = make();
    const TensorDict before = model->state_dict();
    const std::vector<Tensor> params = model->parameters();
    ASSERT_EQ(dist::convert_sync_batchnorm(*model, unowned(group)), 2);
    EXPECT_EQ((*model)[1]->type_name(), "SyncBatchNorm");
    const TensorDict after = model->state_dict();
    ASSERT_EQ(after.size(), before.size());
    auto a_it = after.begin();
    for (const auto& [name, t] : before) {  // same names in the same order, on the same memory
      EXPECT_EQ(a_it->first, name);
      EXPECT_EQ(a_it->second.data_ptr(), t.data_ptr()) << name;
      ++a_it;
    }
    const std::vector<Tensor> converted = model->parameters();
    for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(converted[i].is_same(params[i]));

    Generator gen(6);
    const Tensor x = randn({7, 5}, {}, &gen);
    Tensor y = model->forward(x), y_plain = plain->forward(x);
    EXPECT_EQ(kt::values(y), kt::values(y_plain));
    y.sum().backward();
    y_plain.sum().backward();
    const auto a = model->named_parameters(), b = plain->named_parameters();
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_EQ(kt::values(a[i].second.grad()), kt::values(b[i].second.grad())) << a[i].first;
    for (const auto& [name, buf] : model->named_buffers())
      EXPECT_EQ(kt::values(buf), kt::values(plain->buffer(name))) << name;

    // A BatchNorm that its parent also keeps as a typed member can't be swapped under it.
    struct Held : nn::Module {
      Held() : Module("Held") { bn = register_module("bn", std::make_shared<nn::BatchNorm1d>(3)); }
      std::shared_ptr<nn::BatchNorm1d> bn;
    };
    nn::Sequential outer;
    outer.push_back(std::make_shared<Held>());
    kt::expect_error([&] { dist::convert_sync_batchnorm(outer, unowned(group)); },
                     {"convert_sync_batchnorm: '0.bn' (BatchNorm1d) is also held outside", "SyncBatchNorm"});
    EXPECT_EQ(outer.submodule("0.bn")->type_name(), "BatchNorm1d");
  });
}

// What the Trainer's DDP strategy will run: a converted conv net under DataParallel. SyncBatchNorm's
// collectives interleave with the gradient buckets' on one group, in the same order on every rank.
// 3 SGD steps on halves of the batch equal one process with BatchNorm on the whole batch.
TEST(SyncBatchNorm, UnderDataParallelMatchesOneProcess) {
  mp::run_ranks(2, [](ProcessGroup& group, int rank) {
    auto make = [] {
      Generator gen(12);
      CurrentGeneratorGuard guard(gen);
      return std::make_shared<nn::Sequential>(
          std::make_shared<nn::Conv2d>(2, 4, 3, nn::Conv2dOptions{.padding = 1}), std::make_shared<nn::BatchNorm2d>(4),
          std::make_shared<nn::ReLU>(), std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(64, 3));
    };
    auto reference = make(), model = make();
    ASSERT_EQ(dist::convert_sync_batchnorm(*model, unowned(group)), 1);
    dist::DataParallel ddp(*model, unowned(group), {.bucket_cap_mb = 1e-4});
    optim::SGD ref_opt(reference->parameters(), {.lr = 0.1}), opt(model->parameters(), {.lr = 0.1});
    for (int step = 0; step < 3; ++step) {
      Generator gen(30 + static_cast<uint64_t>(step));
      const Tensor x = randn({6, 2, 4, 4}, {}, &gen), y = randn({6, 3}, {}, &gen);
      ref_opt.zero_grad();
      nn::F::mse_loss(reference->forward(x), y).backward();
      ref_opt.step();
      opt.zero_grad();
      ddp.before_forward();
      nn::F::mse_loss(model->forward(x.narrow(0, 3 * rank, 3)), y.narrow(0, 3 * rank, 3)).backward();
      ddp.finish_gradient_sync();
      opt.step();
    }
    const TensorDict got = model->state_dict(), want = reference->state_dict();
    for (const auto& [name, t] : want) expect_near(got.at(name), t, 1e-5, name);
  });
}

}  // namespace
