// parallel_for over OpenMP. Nested calls run serially (OpenMP nesting is off).
#include "tensor/parallel.h"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <mutex>

#include "tensor/error.h"

namespace kiln {

void set_num_threads(int n) {
  KILN_CHECK(n >= 1, "set_num_threads: expected at least 1 thread, got ", n);
  omp_set_num_threads(n);
}
int get_num_threads() { return omp_get_max_threads(); }
bool in_parallel_region() { return omp_in_parallel(); }

namespace detail {

void parallel_run(int64_t n, int64_t grain, void (*body)(void*, int64_t, int64_t), void* ctx) {
  const int64_t max_chunks = (n + grain - 1) / grain;
  const int threads = static_cast<int>(std::min<int64_t>(get_num_threads(), max_chunks));
  if (threads <= 1 || omp_in_parallel()) { body(ctx, 0, n); return; }
  // An exception must not escape an OpenMP region: keep the first and rethrow it after.
  std::exception_ptr error;
  std::mutex error_mutex;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t chunk = (n + nt - 1) / nt;
    const int64_t begin = std::min<int64_t>(n, t * chunk), end = std::min<int64_t>(n, begin + chunk);
    if (begin < end) {
      try {
        body(ctx, begin, end);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace detail
}  // namespace kiln
