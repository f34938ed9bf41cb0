// Run only by make tsan: a parallel_for whose chunks all add to one variable, a race that the
// ThreadSanitizer build must report (tests/CMakeLists.txt expects its report), so that the edges
// parallel_for names to TSan and tests/tsan.supp are known not to hide races inside chunks.
#include <cstdio>

#include "tensor/parallel.h"

int main() {
  kiln::set_num_threads(2);
  long sum = 0;
  kiln::parallel_for(1000, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) sum += i;
  });
  std::printf("sum %ld\n", sum);
}
