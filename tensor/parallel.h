// Threads: kiln::set_num_threads and parallel_for, over OpenMP (Note [One team of threads] in
// parallel.cpp). Work is split into contiguous chunks of the index range, one per thread, so an
// elementwise result never depends on the thread count.
#pragma once

#include <cstdint>

namespace kiln {

void set_num_threads(int n);  // also sets oneDNN's threads (OpenMP's, which oneDNN runs on)
int get_num_threads();
bool in_parallel_region();

// While alive, parallel_for on this thread runs on it alone. The DataLoader's worker threads hold
// one (torch's worker processes set one thread each for the same reason): each of them would
// otherwise start an OpenMP team of its own beside the training loop's and oversubscribe the cores.
class SingleThreadedScope {
 public:
  SingleThreadedScope();
  ~SingleThreadedScope();
  SingleThreadedScope(const SingleThreadedScope&) = delete;
  SingleThreadedScope& operator=(const SingleThreadedScope&) = delete;

 private:
  bool outer_;
};

namespace detail {
void parallel_run(int64_t n, int64_t grain, void (*body)(void* ctx, int64_t begin, int64_t end), void* ctx);
}

// Calls fn(begin, end) on disjoint chunks covering [0, n), in parallel when n > grain.
template <class Fn>
void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
  if (n <= grain) { fn(int64_t{0}, n); return; }
  detail::parallel_run(n, grain, [](void* ctx, int64_t b, int64_t e) { (*static_cast<Fn*>(ctx))(b, e); }, &fn);
}

// Elements per chunk below which spreading an elementwise loop over threads does not pay.
inline constexpr int64_t kElementwiseGrain = 32768;

}  // namespace kiln
