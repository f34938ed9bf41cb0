// Allocator: every tensor's bytes come from one of these, chosen by device. The CPU one aligns to
// 64 bytes and keeps freed blocks in size classes for reuse; its counters feed memory statistics.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "tensor/device.h"

namespace kiln {

struct AllocatorStats {
  int64_t allocated_bytes = 0;       // in use by live storages (as requested)
  int64_t peak_allocated_bytes = 0;  // high-water mark of allocated_bytes since the last reset
  int64_t reserved_bytes = 0;        // in use plus cached, as held from the system (rounded sizes)
  int64_t num_allocs = 0;            // allocate() calls
  int64_t num_system_allocs = 0;     // of which went to the system (cache misses)
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;          // never returns null; throws kiln::Error
  virtual void deallocate(void* p, size_t nbytes) = 0;  // nbytes as given to allocate
  virtual Device device() const = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void reset_peak() = 0;
  virtual void empty_cache() {}                       // returns cached blocks to the system
};

// The allocator for a device. CUDA allocators exist only when Kiln was built with CUDA.
Allocator& allocator_for(Device d);
// Lets a backend (kernels/cuda) install its allocator at static-initialisation time.
void register_allocator(DeviceType type, Allocator* (*factory)(int index));

// Shorthands for the CPU allocator.
AllocatorStats cpu_memory_stats();
void cpu_reset_peak_memory();
void cpu_empty_cache();

}  // namespace kiln
