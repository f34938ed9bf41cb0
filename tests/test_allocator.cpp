// The CPU caching allocator: 64-byte alignment, reuse of freed blocks, and the current/peak counters.
#include "testing.h"

using namespace kiln;
namespace kt = kiln::testing;

TEST(Allocator, AlignsTo64Bytes) {
  for (int64_t n : {1, 3, 17, 1000, 123457}) {
    Tensor t = empty({n}, {.dtype = DType::u8});
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % 64, 0u) << n;
  }
}

TEST(Allocator, CountsCurrentAndPeakBytes) {
  const AllocatorStats before = cpu_memory_stats();
  cpu_reset_peak_memory();
  {
    Tensor a = empty({1000}, {.dtype = DType::f32});
    Tensor b = empty({500}, {.dtype = DType::f64});
    const AllocatorStats during = cpu_memory_stats();
    EXPECT_EQ(during.allocated_bytes - before.allocated_bytes, 8000);
    EXPECT_GE(during.peak_allocated_bytes, during.allocated_bytes);
  }
  const AllocatorStats after = cpu_memory_stats();
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_GE(after.peak_allocated_bytes - before.allocated_bytes, 8000);
}

TEST(Allocator, ReusesFreedBlocks) {
  void* first = nullptr;
  { Tensor a = empty({12345}); first = a.data_ptr(); }
  const AllocatorStats s0 = cpu_memory_stats();
  Tensor b = empty({12345});
  const AllocatorStats s1 = cpu_memory_stats();
  EXPECT_EQ(b.data_ptr(), first);
  EXPECT_EQ(s1.num_system_allocs, s0.num_system_allocs);  // served from the cache
  b = Tensor();
  cpu_empty_cache();
  EXPECT_LE(cpu_memory_stats().reserved_bytes, s1.reserved_bytes);
}

TEST(Allocator, ViewsKeepStorageAlive) {
  const int64_t base = cpu_memory_stats().allocated_bytes;
  Tensor v;
  {
    Tensor a = zeros({256});
    v = a.slice(0, 10, 20);
  }
  EXPECT_EQ(cpu_memory_stats().allocated_bytes - base, 1024);
  v = Tensor();
  EXPECT_EQ(cpu_memory_stats().allocated_bytes, base);
}

TEST(Allocator, RefusesAbsurdSizes) {
  kt::expect_error([] { (void)empty({int64_t{1} << 40, int64_t{1} << 23}, {.dtype = DType::f64}); }, {"2^63"});
  kt::expect_error([] { (void)empty({int64_t{1} << 52}, {.dtype = DType::u8}); }, {"refusing to allocate"});
}

TEST(Allocator, LargeBlocksAreWholeHugePages) {
  cpu_empty_cache();
  const AllocatorStats before = cpu_memory_stats();
  Tensor t = empty({(int64_t{4} << 20) + 1}, {.dtype = DType::u8});  // class 5 MiB, rounded to 6 MiB
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % (uintptr_t{2} << 20), 0u);
  EXPECT_EQ(cpu_memory_stats().reserved_bytes - before.reserved_bytes, int64_t{6} << 20);
  t = Tensor();
  cpu_empty_cache();
  EXPECT_EQ(cpu_memory_stats().reserved_bytes, before.reserved_bytes);
}
