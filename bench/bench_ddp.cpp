// DDP's cost and overlap: a small transformer LM trained with AdamW by 2 Gloo ranks on 127.0.0.1
// (each half of the global batch, one thread each) against 1 process on the whole batch (two
// threads: the same cores, the same work). Per bucket size: the step time, its ratio to one
// process, the all-reduce time, the share of it hidden behind backward (DataParallelStats; the
// issue's goal is >= 50%) and the time finish_gradient_sync() still waited. A row without sync
// (set_require_sync(false)) shows the step without communication, and one of 1 process with 1
// thread the work of both ranks done serially. The machine's load sways all of it: compare rows of
// one run. Run: build/bench/bench_ddp [steps].
// It re-executes itself once per rank (KILN_BENCH_DDP_RANK); not a Google Benchmark program.
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "distributed/data_parallel.h"
#include "distributed/store.h"
#include "kiln/kiln.h"
#include "nn/functional.h"
#include "nn/layers/attention.h"
#include "nn/layers/linear.h"

extern char** environ;

namespace {

using namespace kiln;
using Clock = std::chrono::steady_clock;

constexpr int64_t kVocab = 256, kDim = 128, kHeads = 4, kBlocks = 2, kBatch = 16, kTokens = 64;
const std::vector<double> kBucketCapsMb = {25.0, 1.0, 0.25};

class LM : public nn::Module {
 public:
  LM() : Module("LM") {
    Generator gen(1);
    CurrentGeneratorGuard guard(gen);
    embed = register_module("embed", std::make_shared<nn::Embedding>(kVocab, kDim));
    blocks = register_module("blocks", std::make_shared<nn::Sequential>());
    for (int i = 0; i < kBlocks; ++i) blocks->push_back(std::make_shared<nn::TransformerBlock>(kDim, kHeads));
    head = register_module("head", std::make_shared<nn::Linear>(kDim, kVocab));
  }
  Tensor forward(const Tensor& tokens) override { return head->forward(blocks->forward(embed->forward(tokens))); }
  std::shared_ptr<nn::Embedding> embed;
  std::shared_ptr<nn::Sequential> blocks;
  std::shared_ptr<nn::Linear> head;
};

struct Timing {
  double step_ms = 0, allreduce_ms = 0, overlap_ms = 0, exposed_ms = 0;
  int64_t buckets = 0;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// `steps` timed steps after 3 warm-up ones on rows [first, first + rows) of each global batch;
// with ddp, synchronising unless `sync` is false. Medians over the timed steps.
Timing train(LM& model, dist::DataParallel* ddp, bool sync, int64_t first, int64_t rows, int steps) {
  optim::AdamW opt(model.parameters(), {.lr = 1e-3});
  Generator gen(7);
  std::vector<double> step, allreduce, overlap, exposed;
  Timing t;
  for (int i = 0; i < 3 + steps; ++i) {
    const Tensor tokens = randint(0, kVocab, {kBatch, kTokens + 1}, {}, &gen).narrow(0, first, rows);
    const Tensor x = tokens.narrow(1, 0, kTokens).contiguous(), y = tokens.narrow(1, 1, kTokens).contiguous();
    const auto start = Clock::now();
    opt.zero_grad();
    if (ddp) ddp->set_require_sync(sync);
    if (ddp) ddp->before_forward();
    Tensor logits = model.forward(x);
    nn::F::cross_entropy(logits.reshape({-1, kVocab}), y.reshape({-1})).backward();
    if (ddp) ddp->finish_gradient_sync();
    opt.step();
    if (i < 3) continue;
    step.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    if (!ddp || !sync) continue;
    allreduce.push_back(ddp->stats().allreduce_ms);
    overlap.push_back(ddp->stats().backward_overlap_ms);
    exposed.push_back(ddp->stats().exposed_ms);
    t.buckets = ddp->stats().buckets;
  }
  t.step_ms = median(step);
  if (!allreduce.empty()) t = {t.step_ms, median(allreduce), median(overlap), median(exposed), t.buckets};
  return t;
}

std::string encode(const Timing& t) {
  std::ostringstream os;
  os << t.step_ms << ' ' << t.allreduce_ms << ' ' << t.overlap_ms << ' ' << t.exposed_ms << ' ' << t.buckets;
  return os.str();
}
Timing decode(const std::string& s) {
  Timing t;
  std::istringstream in(s);
  in >> t.step_ms >> t.allreduce_ms >> t.overlap_ms >> t.exposed_ms >> t.buckets;
  return t;
}

// One rank: every configuration in turn; rank 0 leaves its timings in the parent's store.
void run_rank(int rank, int port, int steps) {
  set_num_threads(1);
  auto store = std::make_shared<dist::TcpStore>(dist::TcpStoreOptions{.port = port});
  // The agreement check (one extra all-gather per collective) is a debugging aid torch lacks.
  auto group = dist::make_gloo_group(store, rank, 2, {.check_agreement = false});
  const int64_t rows = kBatch / 2, first = rank * rows;
  auto report = [&](const std::string& key, const Timing& t) {
    const std::string text = encode(t);
    if (rank == 0) store->set(key, dist::Bytes(text.begin(), text.end()));
  };
  {
    LM model;
    dist::DataParallel ddp(model, group);
    report("nosync", train(model, &ddp, false, first, rows, steps));
  }
  for (double cap : kBucketCapsMb) {
    LM model;
    dist::DataParallel ddp(model, group, {.bucket_cap_mb = cap});
    report("cap" + std::to_string(cap), train(model, &ddp, true, first, rows, steps));
  }
}

pid_t spawn_rank(int rank, int port, int steps) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  env.push_back("KILN_BENCH_DDP_RANK=" + std::to_string(rank) + " " + std::to_string(port) + " " +
                std::to_string(steps));
  env.push_back("OMP_NUM_THREADS=1");
  std::vector<char*> envp;
  for (std::string& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  char* argv[] = {const_cast<char*>("/proc/self/exe"), nullptr};
  pid_t pid = -1;
  KILN_CHECK(posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data()) == 0,
             "bench_ddp: posix_spawn failed");
  return pid;
}

void print_row(const char* name, const Timing& t, double base_ms, bool comm) {
  std::printf("%-28s %8.1f %8.2fx", name, t.step_ms, t.step_ms / base_ms);
  if (comm)
    std::printf(" %10.2f %7.0f%% %10.2f %7lld", t.allreduce_ms, 100.0 * t.overlap_ms / std::max(t.allreduce_ms, 1e-9),
                t.exposed_ms, static_cast<long long>(t.buckets));
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* spec = std::getenv("KILN_BENCH_DDP_RANK")) {
    int rank = 0, port = 0, steps = 0;
    std::istringstream(spec) >> rank >> port >> steps;
    run_rank(rank, port, steps);
    return 0;
  }
  // An optional step count; bench/run.sh's --benchmark_* flags are not one and are ignored.
  const int steps = argc > 1 && std::isdigit(static_cast<unsigned char>(argv[1][0])) ? std::atoi(argv[1]) : 10;
  dist::TcpStore store({.port = 0, .is_server = true});
  const pid_t ranks[] = {spawn_rank(0, store.port(), steps), spawn_rank(1, store.port(), steps)};
  int failed = 0;
  for (pid_t pid : ranks) {
    int status = 0;
    waitpid(pid, &status, 0);
    failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  KILN_CHECK(failed == 0, "bench_ddp: ", failed, " rank(s) failed");
  // After the ranks, so that it has the cores to itself as they had.
  set_num_threads(2);
  LM model;
  const Timing base = train(model, nullptr, false, 0, kBatch, steps);
  set_num_threads(1);
  LM model1;
  const Timing base1 = train(model1, nullptr, false, 0, kBatch, steps);

  auto fetch = [&](const std::string& key) {
    const dist::Bytes b = store.get(key);
    return decode(std::string(b.begin(), b.end()));
  };
  std::printf("transformer LM (%lld blocks, d=%lld, vocab %lld), global batch %lld x %lld tokens, AdamW, "
              "%d steps (medians)\n2 Gloo ranks on 127.0.0.1 with 1 thread each vs 1 process with 2 threads; "
              "kiln cpu level %s\n\n",
              static_cast<long long>(kBlocks), static_cast<long long>(kDim), static_cast<long long>(kVocab),
              static_cast<long long>(kBatch), static_cast<long long>(kTokens), steps,
              std::string(cpu_capability_name(cpu_capability())).c_str());
  std::printf("%-28s %8s %9s %10s %8s %10s %7s\n", "config", "step ms", "vs 1 proc", "allred ms", "hidden",
              "exposed ms", "buckets");
  print_row("1 process, 2 threads", base, base.step_ms, false);
  print_row("1 process, 1 thread", base1, base.step_ms, false);
  print_row("2 ranks, no sync", fetch("nosync"), base.step_ms, false);
  for (double cap : kBucketCapsMb) {
    const std::string name = "2 ranks, bucket_cap_mb " + std::to_string(cap).substr(0, 4);
    print_row(name.c_str(), fetch("cap" + std::to_string(cap)), base.step_ms, true);
  }
  return 0;
}
