// The CPU caching allocator and the per-device allocator registry.
//
// Note [CPU block cache]
// Training allocates the same sizes every step, and glibc's malloc returns large blocks to the
// system (mmap/munmap) each time, which costs page faults on every reuse. We round each request up
// to a size class (4 classes per power of two, so at most 25% waste), keep freed blocks on a free
// list per class, and hand them out again. The cache is bounded (kMaxCachedBytes): past that,
// freed blocks go back to the system. Blocks are 64-byte aligned for AVX-512 loads.
// Small blocks also go through a per-thread cache of a few blocks per class, so the common
// allocate-free-allocate pattern of an op loop takes no lock.
#include "tensor/allocator.h"

#include <array>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

#include <sys/mman.h>

#include "tensor/error.h"

namespace kiln {
namespace {

constexpr size_t kAlignment = 64;
constexpr size_t kMaxCachedBytes = size_t{2} << 30;
constexpr int kNumClasses = 4 + (50 - 8 + 1) * 4;  // up to the 2^50-byte cap

// Note [Huge pages for large blocks]
// Streaming over a large tensor with 4 KiB pages walks the page tables every 4 KiB; with 2 MiB
// pages the same loop runs markedly faster (see bench/bench_elementwise.cpp). Linux gives huge pages
// only to 2 MiB-aligned ranges and, in its default "madvise" mode, only where asked. So blocks from
// kHugeBlock up are whole huge pages (their class sizes round up to 2 MiB), aligned and advised.
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kHugeBlock = 2 * kHugePage;

// Size class of n: 64, 128, 192, 256 bytes, then 4 classes per power of two (all multiples of 64).
int size_class(size_t n) {
  if (n <= 256) return n == 0 ? 0 : static_cast<int>((n - 1) / 64);
  const size_t m = n - 1;
  const int log2 = 63 - __builtin_clzll(m);  // m in [2^log2, 2^(log2+1)), log2 >= 8
  const int sub = static_cast<int>((m >> (log2 - 2)) & 3u);
  return 4 + (log2 - 8) * 4 + sub;
}
size_t class_bytes(int c) {
  if (c < 4) return static_cast<size_t>(c + 1) * 64;
  const int log2 = (c - 4) / 4 + 8;
  const int sub = (c - 4) % 4;
  const size_t bytes = (size_t{1} << log2) + (static_cast<size_t>(sub) + 1) * (size_t{1} << (log2 - 2));
  return bytes < kHugeBlock ? bytes : (bytes + kHugePage - 1) / kHugePage * kHugePage;
}

// bytes is a class size, so large blocks are already whole huge pages.
void* system_alloc(size_t bytes) {
  if (bytes < kHugeBlock) return std::aligned_alloc(kAlignment, bytes);
  void* p = std::aligned_alloc(kHugePage, bytes);
  if (p) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure changes nothing
  return p;
}

// Per-thread cache of small blocks: up to kLocalDepth blocks for each class below kLocalClasses
// (64 KiB and smaller). Returned to the shared cache when the thread exits.
constexpr int kLocalClasses = 40;
constexpr int kLocalDepth = 8;
class CpuCachingAllocator;
struct LocalCache {
  void* blocks[kLocalClasses][kLocalDepth];
  int count[kLocalClasses] = {};
  CpuCachingAllocator* owner = nullptr;
  ~LocalCache();
};
thread_local LocalCache t_local __attribute__((tls_model("initial-exec")));

void update_peak(std::atomic<int64_t>& peak, int64_t now) {
  int64_t prev = peak.load(std::memory_order_relaxed);
  while (now > prev && !peak.compare_exchange_weak(prev, now, std::memory_order_relaxed)) {}
}

class CpuCachingAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    num_allocs_.fetch_add(1, std::memory_order_relaxed);
    const int64_t now = allocated_.fetch_add(static_cast<int64_t>(nbytes), std::memory_order_relaxed) +
                        static_cast<int64_t>(nbytes);
    update_peak(peak_, now);
    if (nbytes == 0) return &zero_sized_;
    KILN_CHECK(nbytes <= (size_t{1} << 50), "CPU allocator: refusing to allocate ", nbytes, " bytes");
    const int c = size_class(nbytes);
    if (c < kLocalClasses && t_local.count[c] > 0) return t_local.blocks[c][--t_local.count[c]];
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto& list = free_[c];
      if (!list.empty()) {
        void* p = list.back();
        list.pop_back();
        cached_ -= class_bytes(c);
        return p;
      }
    }
    const size_t bytes = class_bytes(c);
    void* p = system_alloc(bytes);
    if (!p) {
      empty_cache();
      p = system_alloc(bytes);
    }
    if (!p) {
      allocated_.fetch_sub(static_cast<int64_t>(nbytes), std::memory_order_relaxed);
      detail::throw_error("CPU allocator: out of memory allocating ", nbytes, " bytes (",
                          allocated_.load(), " bytes in use)");
    }
    num_system_.fetch_add(1, std::memory_order_relaxed);
    reserved_.fetch_add(static_cast<int64_t>(bytes), std::memory_order_relaxed);
    return p;
  }

  void deallocate(void* p, size_t nbytes) override {
    allocated_.fetch_sub(static_cast<int64_t>(nbytes), std::memory_order_relaxed);
    if (p == &zero_sized_) return;
    const int c = size_class(nbytes);
    if (c < kLocalClasses && t_local.count[c] < kLocalDepth) {
      t_local.owner = this;
      t_local.blocks[c][t_local.count[c]++] = p;
      return;
    }
    give_back(p, c);
  }

  // Puts a block of class c in the shared cache, or frees it when the cache is full.
  void give_back(void* p, int c) {
    const size_t bytes = class_bytes(c);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + bytes <= kMaxCachedBytes) {
        free_[c].push_back(p);
        cached_ += bytes;
        return;
      }
    }
    reserved_.fetch_sub(static_cast<int64_t>(bytes), std::memory_order_relaxed);
    std::free(p);
  }

  void empty_cache() override {
    for (int c = 0; c < kLocalClasses; ++c)  // this thread's blocks; other threads keep theirs
      while (t_local.count[c] > 0) give_back(t_local.blocks[c][--t_local.count[c]], c);
    std::lock_guard<std::mutex> lock(mutex_);
    for (int c = 0; c < kNumClasses; ++c) {
      for (void* p : free_[c]) std::free(p);
      reserved_.fetch_sub(static_cast<int64_t>(class_bytes(c) * free_[c].size()), std::memory_order_relaxed);
      free_[c].clear();
    }
    cached_ = 0;
  }

  Device device() const override { return Device::cpu(); }
  AllocatorStats stats() const override {
    return {allocated_.load(), peak_.load(), reserved_.load(), num_allocs_.load(), num_system_.load()};
  }
  void reset_peak() override { peak_.store(allocated_.load()); }

  ~CpuCachingAllocator() override { empty_cache(); }

 private:
  std::mutex mutex_;
  std::array<std::vector<void*>, kNumClasses> free_;
  size_t cached_ = 0;
  alignas(64) char zero_sized_ = 0;  // one distinct address for all zero-byte allocations
  std::atomic<int64_t> allocated_{0}, peak_{0}, reserved_{0}, num_allocs_{0}, num_system_{0};
};

LocalCache::~LocalCache() {
  if (!owner) return;
  for (int c = 0; c < kLocalClasses; ++c)
    while (count[c] > 0) owner->give_back(blocks[c][--count[c]], c);
}

struct Registry {
  std::array<Allocator* (*)(int), kNumDeviceTypes> factories{};
};
Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

void register_allocator(DeviceType type, Allocator* (*factory)(int index)) {
  registry().factories[static_cast<int>(type)] = factory;
}

Allocator& allocator_for(Device d) {
  if (d.is_cpu()) {
    // Leaked on purpose: storages may die during static destruction, after a static would.
    static Allocator* cpu = new CpuCachingAllocator();
    return *cpu;
  }
  auto factory = registry().factories[static_cast<int>(d.type)];
  KILN_CHECK(factory != nullptr, "no allocator for ", d, ": this Kiln was built without ",
             device_type_name(d.type), " support");
  return *factory(d.index);
}

AllocatorStats cpu_memory_stats() { return allocator_for(Device::cpu()).stats(); }
void cpu_reset_peak_memory() { allocator_for(Device::cpu()).reset_peak(); }
void cpu_empty_cache() { allocator_for(Device::cpu()).empty_cache(); }

}  // namespace kiln
