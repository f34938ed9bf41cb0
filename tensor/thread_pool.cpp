// ThreadPool: claimed chunks, brief spinning, then futex sleep (Note [Kiln's thread pool]).
#include "tensor/thread_pool.h"

#include <chrono>

#include "tensor/error.h"

namespace kiln::detail {

thread_local bool t_in_parallel_region = false;

namespace {

// A training step's regions follow each other within microseconds, so a worker that spins this
// long usually catches the next one without the tens of microseconds a futex wake costs; beyond
// it, the worker sleeps and leaves the core to whoever else wants it.
constexpr auto kSpin = std::chrono::microseconds(50);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins until pred() holds or kSpin has passed; returns pred().
template <class Pred>
bool spin_until(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (pred()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return pred();
  }
}

}  // namespace

ThreadPool::ThreadPool(int threads) {
  KILN_ASSERT(threads >= 1 && threads < (1 << kChunkBits) / 2, "ThreadPool: bad thread count ", threads);
  workers_.reserve(static_cast<size_t>(threads - 1));
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  stopping_.store(true);
  wake_workers();
  for (std::thread& w : workers_) w.join();
}

void ThreadPool::wake_workers() {
  wake_.fetch_add(1);
  if (sleepers_.load() == 0) return;
  std::lock_guard<std::mutex> lock(sleep_mutex_);  // a worker between its check and its wait holds it
  workers_wake_.notify_all();
}

void ThreadPool::sleep_until_woken(uint32_t seen) {
  std::unique_lock<std::mutex> lock(sleep_mutex_);
  sleepers_.fetch_add(1);
  workers_wake_.wait(lock, [&] { return wake_.load() != seen; });
  sleepers_.fetch_sub(1);
}

void ThreadPool::run(int64_t chunks, Body body, void* ctx) {
  KILN_ASSERT(chunks >= 0 && chunks <= threads(), "ThreadPool::run: ", chunks, " chunks for ", threads(), " threads");
  std::unique_lock<std::mutex> region(region_, std::try_to_lock);
  if (chunks <= 1 || !region.owns_lock()) {
    ParallelRegionScope scope;
    for (int64_t c = 0; c < chunks; ++c) body(ctx, c);
    return;
  }
  ParallelRegionScope scope;
  body_ = body;
  ctx_ = ctx;
  error_ = nullptr;
  finished_.store(0, std::memory_order_relaxed);
  const uint64_t generation = generation_of(state_.load(std::memory_order_relaxed)) + 1;
  state_.store((generation << (kNextBits + kChunkBits)) | (static_cast<uint64_t>(chunks) << kNextBits),
               std::memory_order_release);
  wake_workers();

  while (run_claimed_chunks()) {
  }
  // Only chunks that a worker has claimed are left, and they are running now.
  const auto all_finished = [&] { return finished_.load(std::memory_order_acquire) == chunks; };
  if (!spin_until(all_finished)) {
    std::unique_lock<std::mutex> lock(sleep_mutex_);
    caller_asleep_.store(true);
    caller_wake_.wait(lock, [&] { return finished_.load() == chunks; });
    caller_asleep_.store(false);
  }
  if (error_) std::rethrow_exception(error_);
}

bool ThreadPool::run_claimed_chunks() {
  const uint64_t claimed = state_.fetch_add(1, std::memory_order_acq_rel);
  const auto chunk = static_cast<int64_t>(next_of(claimed)), chunks = static_cast<int64_t>(chunks_of(claimed));
  if (chunk >= chunks) return false;  // the region is fully claimed (or long over)
  run_chunk(chunk);
  if (finished_.fetch_add(1) + 1 == chunks && caller_asleep_.load()) {
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    caller_wake_.notify_one();
  }
  return true;
}

void ThreadPool::run_chunk(int64_t chunk) {
  try {
    body_(ctx_, chunk);
  } catch (...) {
    std::lock_guard<std::mutex> lock(error_mutex_);
    if (!error_) error_ = std::current_exception();
  }
}

void ThreadPool::worker_loop() {
  ParallelRegionScope scope;  // a worker only ever runs chunks: nested regions run inline
  // stopping_ is set before the wake that announces it, so a worker that read `seen` after that
  // wake (one that started late, say) sees stopping_ here and never sleeps through its shutdown.
  for (uint32_t seen = wake_.load(std::memory_order_acquire);; seen = wake_.load(std::memory_order_acquire)) {
    if (stopping_.load()) return;
    while (run_claimed_chunks()) {
    }
    const auto woken = [&] { return wake_.load(std::memory_order_acquire) != seen; };
    if (!spin_until(woken)) sleep_until_woken(seen);
  }
}

}  // namespace kiln::detail
