// parallel_for over OpenMP, the runtime oneDNN's primitives run on too (Note [One team of threads]).
// Nested calls, and calls on a thread holding a SingleThreadedScope, run inline.
#include "tensor/parallel.h"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <mutex>

#include "tensor/error.h"

// Note [One team of threads]
// Debian's oneDNN runs its primitives on libgomp's threads, which spin for a while after each
// region before they sleep. A pool of Kiln's own beside them (tried in session 10: chunks claimed
// so that the caller runs a late worker's chunk, workers spinning 50 us then sleeping) put two
// teams on the same cores: right after a oneDNN product, Kiln's worker competed with a spinning
// libgomp thread. On the idle 2-core EPYC the MLP step went from 1.16-1.19 ms to 1.25-1.83 ms and
// the CNN's from 10.6-10.9 to 12.6-13.1 ms, and with one busy process beside it the pool was no
// better (MLP 3.4-4.0 ms against 3.2-3.3). So Kiln's loops run on OpenMP's team too. One pool of
// Kiln's for everything would need oneDNN built with its threadpool runtime, which Debian's is not.
//
// ThreadSanitizer cannot see libgomp's barriers (libgomp is not instrumented), so a TSan build
// (make tsan) tells it about the two edges a region has: the caller's work before it happens
// before every chunk, and every chunk before the caller's work after it.
#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace kiln {
namespace {

constexpr int kMaxThreads = 1024;

inline void tsan_acquire([[maybe_unused]] void* edge) {
#if defined(__SANITIZE_THREAD__)
  __tsan_acquire(edge);
#endif
}
inline void tsan_release([[maybe_unused]] void* edge) {
#if defined(__SANITIZE_THREAD__)
  __tsan_release(edge);
#endif
}
thread_local bool t_single_threaded = false;  // a SingleThreadedScope is alive on this thread
// Addresses that name a region's two edges to TSan. Not the region's own variables: the outlined
// region reads its captured variables from the caller's frame, and that read must come after the
// edge. Regions that several threads run at once share them, so TSan sees more order than there is
// between those regions (it may miss a race between them; it never reports a false one).
char g_region_start, g_region_end;

}  // namespace

void set_num_threads(int n) {
  KILN_CHECK(n >= 1 && n <= kMaxThreads, "set_num_threads: expected 1 to ", kMaxThreads, " threads, got ", n);
  omp_set_num_threads(n);
}
int get_num_threads() { return omp_get_max_threads(); }
bool in_parallel_region() { return omp_in_parallel(); }

SingleThreadedScope::SingleThreadedScope() : outer_(t_single_threaded) { t_single_threaded = true; }
SingleThreadedScope::~SingleThreadedScope() { t_single_threaded = outer_; }

namespace detail {

void parallel_run(int64_t n, int64_t grain, void (*body)(void*, int64_t, int64_t), void* ctx) {
  const int64_t max_chunks = (n + grain - 1) / grain;
  const int threads = static_cast<int>(std::min<int64_t>(get_num_threads(), max_chunks));
  if (threads <= 1 || t_single_threaded || omp_in_parallel()) { body(ctx, 0, n); return; }
  // An exception must not escape an OpenMP region: keep the first and rethrow it after.
  std::exception_ptr error;
  std::mutex error_mutex;
  tsan_release(&g_region_start);
#pragma omp parallel num_threads(threads)
  {
    tsan_acquire(&g_region_start);  // first: a chunk's reads of the region's variables come after
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
    tsan_release(&g_region_end);
  }
  tsan_acquire(&g_region_end);
  if (error) std::rethrow_exception(error);
}

}  // namespace detail
}  // namespace kiln
