// Test-only: ranks as threads of one process, over an in-memory ProcessGroup (all_reduce,
// broadcast, all_gather, barrier) whose operations run in order on a thread of each rank, as a
// real group's do. For checking reducer logic without processes; the multi-process harness
// (multiprocess.h) is what the distributed tests run on. Reductions are computed in f64 in rank
// order and rounded once, so they may differ from Gloo's in the last bit.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "distributed/process_group.h"
#include "kiln/kiln.h"

namespace kiln::testing {

// Where the ranks' threads meet: operation `seq` completes when every rank has handed in its input.
class ThreadWorld {
 public:
  explicit ThreadWorld(int size, std::chrono::milliseconds timeout = std::chrono::seconds(20))
      : size_(size), timeout_(timeout) {}
  int size() const { return size_; }

  std::vector<Tensor> exchange(uint64_t seq, int rank, Tensor input, const char* op) {
    std::unique_lock lock(mutex_);
    Round& r = rounds_[seq];
    if (r.inputs.empty()) r.inputs.resize(static_cast<size_t>(size_));
    r.inputs[static_cast<size_t>(rank)] = std::move(input);
    if (++r.arrived == size_) cv_.notify_all();
    const bool all = cv_.wait_for(lock, timeout_, [&] { return rounds_[seq].arrived == size_; });
    KILN_CHECK(all, op, " (operation ", seq, ") on rank ", rank, ": timed out waiting for the other ranks");
    Round& done = rounds_[seq];
    std::vector<Tensor> inputs = done.inputs;
    if (++done.left == size_) rounds_.erase(seq);
    return inputs;
  }

 private:
  struct Round {
    std::vector<Tensor> inputs;
    int arrived = 0, left = 0;
  };
  const int size_;
  const std::chrono::milliseconds timeout_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<uint64_t, Round> rounds_;
};

class ThreadGroup final : public dist::ProcessGroup {
 public:
  ThreadGroup(std::shared_ptr<ThreadWorld> world, int rank) : world_(std::move(world)), rank_(rank) {
    worker_ = std::thread([this] { run(); });
  }
  ~ThreadGroup() override {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }

  std::string backend() const override { return "threads"; }
  int rank() const override { return rank_; }
  int size() const override { return world_->size(); }
  std::chrono::milliseconds timeout() const override { return std::chrono::seconds(20); }

  dist::WorkPtr all_reduce(const Tensor& tensor, dist::ReduceOp op) override {
    return enqueue([this, tensor, op](uint64_t seq) {
      const std::vector<Tensor> in = world_->exchange(seq, rank_, tensor.to(DType::f64).clone(), "all_reduce");  // a copy: the result overwrites tensor while others read
      Tensor acc = in[0].clone();
      const int64_t n = acc.numel();
      double* a = acc.data_ptr<double>();
      for (size_t r = 1; r < in.size(); ++r) {
        const double* b = in[r].data_ptr<double>();
        for (int64_t i = 0; i < n; ++i) {
          if (op == dist::ReduceOp::max) a[i] = std::max(a[i], b[i]);
          else if (op == dist::ReduceOp::min) a[i] = std::min(a[i], b[i]);
          else a[i] += b[i];
        }
      }
      if (op == dist::ReduceOp::avg)
        for (int64_t i = 0; i < n; ++i) a[i] /= static_cast<double>(in.size());
      Tensor target = tensor;
      target.copy_(acc.to(tensor.dtype()));
    });
  }
  dist::WorkPtr broadcast(const Tensor& tensor, int src) override {
    return enqueue([this, tensor, src](uint64_t seq) {
      const std::vector<Tensor> in = world_->exchange(seq, rank_, tensor.clone(), "broadcast");
      KILN_CHECK(in[static_cast<size_t>(src)].numel() == tensor.numel(), "broadcast: rank ", rank_, " has ",
                 tensor.numel(), " elements, rank ", src, " sends ", in[static_cast<size_t>(src)].numel());
      Tensor target = tensor;
      target.copy_(in[static_cast<size_t>(src)]);
    });
  }
  dist::WorkPtr all_gather(const Tensor& input, const Tensor& output, const std::vector<int64_t>&) override {
    return enqueue([this, input, output](uint64_t seq) {
      const std::vector<Tensor> in = world_->exchange(seq, rank_, input.clone(), "all_gather");
      Tensor target = output;
      target.copy_(cat(in));
    });
  }
  dist::WorkPtr barrier() override {
    return enqueue([this](uint64_t seq) { world_->exchange(seq, rank_, Tensor(), "barrier"); });
  }
  dist::WorkPtr reduce_scatter(const Tensor&, const Tensor&, const std::vector<int64_t>&, dist::ReduceOp) override {
    detail::throw_error("ThreadGroup: reduce_scatter is not needed by these tests");
  }
  dist::WorkPtr send(const Tensor&, int, int) override { detail::throw_error("ThreadGroup: no send"); }
  dist::WorkPtr recv(const Tensor&, int, int) override { detail::throw_error("ThreadGroup: no recv"); }

 private:
  dist::WorkPtr enqueue(std::function<void(uint64_t)> op) {
    auto task = std::make_shared<std::packaged_task<void()>>([this, op = std::move(op)] {
      NoGradGuard no_grad;
      op(next_seq_++);  // only the worker touches next_seq_
    });
    auto work = std::make_shared<dist::Work>(task->get_future().share());
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(task));
    }
    cv_.notify_all();
    return work;
  }

  void run() {
    for (;;) {
      std::shared_ptr<std::packaged_task<void()>> task;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      (*task)();
    }
  }

  std::shared_ptr<ThreadWorld> world_;
  const int rank_;
  uint64_t next_seq_ = 0;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<std::packaged_task<void()>>> queue_;
  bool stop_ = false;
  std::thread worker_;
};

// Runs body(group) on `world` threads, one per rank; returns each rank's error message ("" when
// it succeeded).
inline std::vector<std::string> run_thread_ranks(int world,
                                                 const std::function<void(std::shared_ptr<dist::ProcessGroup>)>& body) {
  auto shared = std::make_shared<ThreadWorld>(world);
  std::vector<std::string> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        body(std::make_shared<ThreadGroup>(shared, r));
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  for (std::thread& t : threads) t.join();
  return errors;
}

}  // namespace kiln::testing
