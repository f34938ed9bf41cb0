// The pinned-host allocator behind pin_memory (tensor/pinned.h): cudaHostAlloc'd blocks, kept for
// reuse in a bounded cache keyed by size, because cudaHostAlloc costs milliseconds and a DataLoader
// pins a batch of the same size every step. Registers itself with tensor/pinned.cpp at load time.
#include <algorithm>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/runtime.h"
#include "tensor/pinned.h"

namespace kiln::cuda {
namespace {

// Note [Pinned block reuse]
// A freed block goes back into the cache at once and the next allocation of its size takes it.
// That is safe only because every host<->device copy in Kiln is synchronous (kernels/cuda/copy.cu
// uses cudaMemcpy), so no copy can still be reading a block when its last tensor dies. An
// asynchronous (non_blocking) copy from pinned memory must first make freeing wait for it, as
// torch's CachingHostAllocator does by recording an event on the copy's stream.

constexpr size_t kBlockGranularity = 4096;               // page-locking works in whole pages
constexpr size_t kMaxCachedBytes = size_t{1} << 30;      // page-locked RAM is RAM the OS cannot page out

size_t rounded_size(size_t nbytes) { return (nbytes + kBlockGranularity - 1) / kBlockGranularity * kBlockGranularity; }

class PinnedHostAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    std::lock_guard<std::mutex> lock(mutex_);
    ++num_allocs_;
    if (nbytes == 0) return nullptr;
    const size_t size = rounded_size(nbytes);
    void* block = take_cached(size);
    if (!block) block = host_alloc(size, nbytes);
    allocated_ += static_cast<int64_t>(nbytes);
    in_use_ += static_cast<int64_t>(size);
    peak_ = std::max(peak_, allocated_);
    return block;
  }

  void deallocate(void* p, size_t nbytes) override {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t size = rounded_size(nbytes);
    allocated_ -= static_cast<int64_t>(nbytes);
    in_use_ -= static_cast<int64_t>(size);
    if (cached_ + size <= kMaxCachedBytes) {
      free_blocks_[size].push_back(p);
      cached_ += size;
    } else {
      cudaFreeHost(p);  // errors at teardown (driver already unloaded) are ignored on purpose
    }
  }

  Device device() const override { return Device::cpu(); }

  AllocatorStats stats() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return {allocated_, peak_, in_use_ + static_cast<int64_t>(cached_), num_allocs_, num_system_allocs_};
  }

  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mutex_);
    peak_ = allocated_;
  }

  void empty_cache() override {
    std::lock_guard<std::mutex> lock(mutex_);
    release_cached();
  }

 private:
  void* take_cached(size_t size) {
    const auto it = free_blocks_.find(size);
    if (it == free_blocks_.end() || it->second.empty()) return nullptr;
    void* block = it->second.back();
    it->second.pop_back();
    cached_ -= size;
    return block;
  }

  // A new block from the driver; when page-locked memory runs out, the cache goes back and it
  // tries once more.
  void* host_alloc(size_t size, size_t nbytes) {
    void* block = nullptr;
    cudaError_t err = cudaHostAlloc(&block, size, cudaHostAllocPortable);  // portable: pinned for every device
    if (err != cudaSuccess && cached_ > 0) {
      cudaGetLastError();
      release_cached();
      err = cudaHostAlloc(&block, size, cudaHostAllocPortable);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      detail::throw_error("pin_memory: cannot allocate ", nbytes, " bytes of pinned host memory (",
                          cudaGetErrorString(err), "; ", in_use_, " bytes pinned by Kiln in use)");
    }
    ++num_system_allocs_;
    return block;
  }

  void release_cached() {
    for (auto& [size, blocks] : free_blocks_)
      for (void* block : blocks) cudaFreeHost(block);
    free_blocks_.clear();
    cached_ = 0;
  }

  mutable std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_blocks_;  // by rounded size
  size_t cached_ = 0;                                          // bytes in free_blocks_
  int64_t allocated_ = 0, in_use_ = 0, peak_ = 0, num_allocs_ = 0, num_system_allocs_ = 0;
};

Allocator* pinned_host_allocator() {
  // Never destroyed: tensors freed during static destruction still return their blocks here.
  static PinnedHostAllocator* allocator = new PinnedHostAllocator();
  return allocator;
}

bool is_page_locked(const void* p) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
    cudaGetLastError();  // ordinary host memory on old drivers reports an error: not pinned
    return false;
  }
  return attributes.type == cudaMemoryTypeHost;
}

[[maybe_unused]] const bool registered = [] {
  pinned::register_backend({.allocator = &pinned_host_allocator, .is_pinned = &is_page_locked});
  return true;
}();

}  // namespace
}  // namespace kiln::cuda
