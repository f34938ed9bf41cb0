// Storage: one contiguous block of bytes on one device, shared by a tensor and all its views.
// It also carries the version counter: every in-place write to any view bumps it, which is how
// autograd later detects that a tensor saved for backward was modified.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "tensor/allocator.h"
#include "tensor/device.h"
#include "tensor/ref.h"

namespace kiln {

class Storage : public RefCounted {
 public:
  // Owned bytes from the device's allocator.
  Storage(size_t nbytes, Device device);
  // Borrowed bytes (from_blob): freed by `deleter` when the last view dies, or never if it is empty.
  Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter);
  ~Storage();

  static void* operator new(size_t bytes);  // recycled per thread (tensor/object_pool.h)
  static void operator delete(void* p, size_t bytes);

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  uint32_t version() const { return version_.load(std::memory_order_relaxed); }
  void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Allocator* allocator_ = nullptr;                          // null for borrowed bytes
  std::unique_ptr<std::function<void(void*)>> deleter_;     // only for borrowed bytes
  Device device_;
  std::atomic<uint32_t> version_{0};
};

}  // namespace kiln
