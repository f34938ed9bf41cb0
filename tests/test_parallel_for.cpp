// parallel_for (Note [One team of threads]): every index runs exactly once in the documented
// contiguous chunks, exceptions reach the caller, nested regions and a SingleThreadedScope run
// inline, regions from several threads at once and changing thread counts all cover their range.
#include <atomic>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "testing.h"

namespace kiln {
namespace {

// Restores the thread count a test changed.
struct ThreadCount {
  int saved = get_num_threads();
  explicit ThreadCount(int n) { set_num_threads(n); }
  ~ThreadCount() { set_num_threads(saved); }
};

TEST(ParallelFor, EveryIndexRunsOnceInContiguousChunks) {
  for (int threads : {2, 3, 4, 7}) {
    const ThreadCount count(threads);
    for (int64_t n : {int64_t{2}, int64_t{5}, int64_t{100}, int64_t{1001}}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::mutex m;
      std::set<std::pair<int64_t, int64_t>> ranges;
      parallel_for(n, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
        std::lock_guard<std::mutex> lock(m);
        ranges.emplace(b, e);
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "index " << i << " of " << n;
      // The chunks are ceil(n / t) long, t = min(threads, n): fixed by n and the thread count only.
      const int64_t t = std::min<int64_t>(threads, n), chunk = (n + t - 1) / t;
      std::set<std::pair<int64_t, int64_t>> expected;
      for (int64_t b = 0; b < n; b += chunk) expected.emplace(b, std::min(n, b + chunk));
      EXPECT_EQ(ranges, expected) << n << " elements on " << threads << " threads";
    }
  }
}

TEST(ParallelFor, WorkBelowTheGrainRunsOnTheCaller) {
  const ThreadCount count(4);
  const auto caller = std::this_thread::get_id();
  std::thread::id ran_on;
  bool nested = true;
  parallel_for(100, 100, [&](int64_t, int64_t) { ran_on = std::this_thread::get_id(), nested = in_parallel_region(); });
  EXPECT_EQ(ran_on, caller);
  EXPECT_FALSE(nested);
}

TEST(ParallelFor, ASingleThreadedScopeKeepsRegionsOnItsThread) {
  const ThreadCount count(4);
  std::thread loader([] {
    const SingleThreadedScope serial;
    const auto me = std::this_thread::get_id();
    int chunks = 0;
    parallel_for(1000, 1, [&](int64_t b, int64_t e) {
      EXPECT_EQ(std::this_thread::get_id(), me);
      EXPECT_EQ(e - b, 1000);
      ++chunks;
    });
    EXPECT_EQ(chunks, 1);
  });
  loader.join();
  std::atomic<int> chunks{0};  // the scope ended with its thread: this thread's regions still split
  parallel_for(1000, 1, [&](int64_t, int64_t) { chunks.fetch_add(1); });
  EXPECT_EQ(chunks.load(), 4);
}

TEST(ParallelFor, NestedRegionsRunInline) {
  const ThreadCount count(4);
  std::atomic<int> inner_calls{0}, outer_flag_seen{0};
  parallel_for(4, 1, [&](int64_t, int64_t) {
    if (in_parallel_region()) outer_flag_seen.fetch_add(1);
    const auto me = std::this_thread::get_id();
    parallel_for(8, 1, [&](int64_t b, int64_t e) {
      EXPECT_EQ(b, 0);  // one chunk: the whole range
      EXPECT_EQ(e, 8);
      EXPECT_EQ(std::this_thread::get_id(), me);
      inner_calls.fetch_add(1);
    });
  });
  EXPECT_EQ(outer_flag_seen.load(), 4);
  EXPECT_EQ(inner_calls.load(), 4);
  EXPECT_FALSE(in_parallel_region());
}

TEST(ParallelFor, TheFirstExceptionReachesTheCallerAndLaterRegionsRun) {
  const ThreadCount count(4);
  for (int round = 0; round < 3; ++round) {
    EXPECT_THROW(parallel_for(4, 1, [&](int64_t b, int64_t) {
                   if (b >= 2) throw std::runtime_error("chunk failed");
                 }),
                 std::runtime_error);
    EXPECT_FALSE(in_parallel_region());
    std::atomic<int64_t> sum{0};
    parallel_for(1000, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum.fetch_add(i);
    });
    EXPECT_EQ(sum.load(), 999 * 1000 / 2);
  }
}

TEST(ParallelFor, RegionsFromManyThreadsAtOnceAllComplete) {
  const ThreadCount count(3);
  constexpr int kCallers = 4, kRegions = 300;
  std::vector<int64_t> sums(kCallers, 0);
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c)
    callers.emplace_back([&, c] {
      for (int r = 0; r < kRegions; ++r) {
        std::atomic<int64_t> sum{0};
        parallel_for(64 + r, 1, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) sum.fetch_add(i + c);
        });
        sums[static_cast<size_t>(c)] += sum.load();
      }
    });
  for (std::thread& t : callers) t.join();
  for (int c = 0; c < kCallers; ++c) {
    int64_t expected = 0;
    for (int r = 0; r < kRegions; ++r) {
      const int64_t n = 64 + r;
      expected += n * (n - 1) / 2 + n * c;
    }
    EXPECT_EQ(sums[static_cast<size_t>(c)], expected) << "caller " << c;
  }
}

TEST(ParallelFor, MoreThreadsThanCoresAndChangingCountsStillCoverTheRange) {
  for (int threads : {1, 8, 2, 16, 3}) {
    const ThreadCount count(threads);
    EXPECT_EQ(get_num_threads(), threads);
    for (int r = 0; r < 50; ++r) {
      std::vector<int> hits(257, 0);  // each chunk writes only its own elements
      parallel_for(257, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) ++hits[static_cast<size_t>(i)];
      });
      for (int h : hits) ASSERT_EQ(h, 1) << threads << " threads";
    }
  }
}

TEST(ParallelFor, RefusesABadThreadCount) {
  EXPECT_THROW(set_num_threads(0), Error);
  EXPECT_THROW(set_num_threads(-2), Error);
  EXPECT_THROW(set_num_threads(100000), Error);
}

}  // namespace
}  // namespace kiln
