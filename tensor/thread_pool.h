// ThreadPool: Kiln's own compute threads, behind parallel_for (Note [Kiln's thread pool]).
// Internal: user code goes through kiln::parallel_for and kiln::set_num_threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln::detail {

// True on a thread while it runs part of a parallel region (a worker, always): a parallel_for
// called there runs inline.
extern thread_local bool t_in_parallel_region;
struct ParallelRegionScope {
  bool outer = t_in_parallel_region;
  ParallelRegionScope() { t_in_parallel_region = true; }
  ~ParallelRegionScope() { t_in_parallel_region = outer; }
  ParallelRegionScope(const ParallelRegionScope&) = delete;
  ParallelRegionScope& operator=(const ParallelRegionScope&) = delete;
};

// Note [Kiln's thread pool]
// A parallel region splits its range into one chunk per thread. OpenMP ends a region with a barrier
// that waits for every thread of the team, also one that the OS has not yet scheduled: with one
// other busy process on two cores, each region then waits for a time slice (milliseconds) and a
// training step of many small regions slows down several-fold. Here chunks are claimed, not
// assigned: the calling thread claims chunks too, so a chunk whose worker is late is run by the
// caller, and a region only ever waits for chunks already running. Workers spin briefly between
// regions (a step's regions come microseconds apart) and then sleep on a futex, so a waiting
// worker neither burns a core that another process needs nor waits for a time slice to wake up.
// Every synchronisation is a std::atomic or a std::mutex, so ThreadSanitizer sees it (libgomp's
// barriers it cannot see). One region runs at a time: a thread that finds the pool busy runs its region alone.
class ThreadPool {
 public:
  using Body = void (*)(void* ctx, int64_t chunk);

  explicit ThreadPool(int threads);  // the caller counts as one: threads - 1 workers
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs body(ctx, c) for every c in [0, chunks) and returns when all have run; rethrows the first
  // exception a chunk threw. chunks <= threads(). Runs everything on the caller when the pool is
  // busy with another thread's region.
  void run(int64_t chunks, Body body, void* ctx);

 private:
  // state_: generation (high 32 bits) | chunks of the current region (bits 16-31) | next chunk to
  // claim (bits 0-15). One fetch_add claims a chunk and says which region it belongs to.
  static constexpr uint64_t kNextBits = 16, kChunkBits = 16;
  static uint64_t next_of(uint64_t s) { return s & 0xffff; }
  static uint64_t chunks_of(uint64_t s) { return (s >> kNextBits) & 0xffff; }
  static uint32_t generation_of(uint64_t s) { return static_cast<uint32_t>(s >> (kNextBits + kChunkBits)); }

  void worker_loop();
  void sleep_until_woken(uint32_t seen);  // a worker, once spinning has not seen a new region
  void wake_workers();
  bool run_claimed_chunks();  // claims and runs chunks of the current region; false if none was left
  void run_chunk(int64_t chunk);

  std::vector<std::thread> workers_;
  std::mutex region_;  // held by the thread whose region the pool runs

  std::atomic<uint64_t> state_{0};
  std::atomic<uint32_t> wake_{0};     // bumped when a region starts or the pool stops
  std::atomic<int64_t> finished_{0};  // chunks of the current region that have run
  std::atomic<bool> stopping_{false};

  // Sleeping: a worker (or the caller) announces itself in sleepers_ (caller_asleep_) before it
  // checks its condition under sleep_mutex_; whoever changes the condition checks them after. Both
  // sides use sequentially consistent operations, so one of them sees the other: no lost wake-up.
  std::mutex sleep_mutex_;
  std::condition_variable workers_wake_, caller_wake_;
  std::atomic<int> sleepers_{0};
  std::atomic<bool> caller_asleep_{false};

  // The current region, written before state_ publishes it and read only after a chunk was claimed.
  Body body_ = nullptr;
  void* ctx_ = nullptr;
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

}  // namespace kiln::detail
