// parallel_for over Kiln's thread pool (Note [Kiln's thread pool]); nested calls run inline.
// oneDNN keeps its own OpenMP threads: set_num_threads sets both to the same count.
#include "tensor/parallel.h"

#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "tensor/error.h"
#include "tensor/thread_pool.h"

namespace kiln {
namespace {

constexpr int kMaxThreads = 1024;

// 0 until first read: then OpenMP's default (OMP_NUM_THREADS, else the CPUs this process may use).
std::atomic<int> g_threads{0};

int threads_setting() {
  int t = g_threads.load(std::memory_order_relaxed);
  if (t != 0) return t;
  int expected = 0;
  g_threads.compare_exchange_strong(expected, std::clamp(omp_get_max_threads(), 1, kMaxThreads));
  return g_threads.load(std::memory_order_relaxed);
}

// The pool only grows: a region may still be running on a smaller one, so replaced pools are kept
// (their workers asleep) rather than destroyed. Nor are pools destroyed at exit: a forked child's
// copies have no threads to join, and a thread may still be in a region while the process exits.
std::mutex g_pool_mutex;
std::atomic<detail::ThreadPool*> g_pool{nullptr};
auto& g_pools = *new std::vector<std::unique_ptr<detail::ThreadPool>>;  // every pool made, under g_pool_mutex

// A forked child has only the forking thread: it must not wait for workers that exist only in its
// parent, so it starts a pool of its own when it first needs one.
void forget_pool_in_child() { g_pool.store(nullptr, std::memory_order_relaxed); }

detail::ThreadPool& pool_with(int threads) {
  detail::ThreadPool* pool = g_pool.load(std::memory_order_acquire);
  if (pool && pool->threads() >= threads) return *pool;
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  pool = g_pool.load(std::memory_order_acquire);
  if (pool && pool->threads() >= threads) return *pool;
  static const bool fork_handler = (pthread_atfork(nullptr, nullptr, forget_pool_in_child), true);
  (void)fork_handler;
  g_pools.push_back(std::make_unique<detail::ThreadPool>(threads));
  g_pool.store(g_pools.back().get(), std::memory_order_release);
  return *g_pools.back();
}

}  // namespace

void set_num_threads(int n) {
  KILN_CHECK(n >= 1 && n <= kMaxThreads, "set_num_threads: expected 1 to ", kMaxThreads, " threads, got ", n);
  g_threads.store(n, std::memory_order_relaxed);
  omp_set_num_threads(n);  // oneDNN's primitives run on OpenMP's threads
}
int get_num_threads() { return threads_setting(); }
bool in_parallel_region() { return detail::t_in_parallel_region; }

SingleThreadedScope::SingleThreadedScope() : outer_(detail::t_in_parallel_region) { detail::t_in_parallel_region = true; }
SingleThreadedScope::~SingleThreadedScope() { detail::t_in_parallel_region = outer_; }

namespace detail {

void parallel_run(int64_t n, int64_t grain, void (*body)(void*, int64_t, int64_t), void* ctx) {
  const int64_t max_chunks = (n + grain - 1) / grain;
  const auto threads = static_cast<int>(std::min<int64_t>(get_num_threads(), max_chunks));
  if (threads <= 1 || t_in_parallel_region) { body(ctx, 0, n); return; }
  // Contiguous chunks, one per thread, whichever thread ends up running each.
  struct Split {
    void (*body)(void*, int64_t, int64_t);
    void* ctx;
    int64_t n, chunk;
  } split{body, ctx, n, (n + threads - 1) / threads};
  const int64_t chunks = (n + split.chunk - 1) / split.chunk;
  pool_with(threads).run(chunks, [](void* p, int64_t c) {
    const auto& s = *static_cast<const Split*>(p);
    const int64_t begin = c * s.chunk;
    s.body(s.ctx, begin, std::min(s.n, begin + s.chunk));
  }, &split);
}

}  // namespace detail
}  // namespace kiln
