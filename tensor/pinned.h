// Pinned (page-locked) host memory: CPU tensors whose bytes the GPU can DMA directly, as torch's
// Tensor.pin_memory() makes. The CUDA backend (kernels/cuda/pinned.cpp) fills the registry below at
// static-initialisation time; without CUDA, or without a driver or GPU, pinning is unavailable.
// This is not a device: a pinned tensor is an ordinary CPU tensor that every CPU kernel accepts.
#pragma once

#include "tensor/allocator.h"
#include "tensor/tensor.h"

namespace kiln {

// True when host memory can be pinned: Kiln was built with CUDA and a CUDA device is present.
bool pinned_memory_available();

// A contiguous copy of the CPU tensor `t` in pinned memory (or `t` itself when it is already
// pinned, as torch does). The copy is recorded by autograd like copy_, so gradients reach `t`.
// Throws kiln::Error naming pin_memory for a non-CPU tensor, or when pinning is unavailable.
Tensor pin_memory(const Tensor& t);

// True when the bytes of `t` are page-locked (by pin_memory or by anyone who registered them with
// CUDA). Always false when pinning is unavailable, and for an undefined or non-CPU tensor.
bool is_pinned(const Tensor& t);

// Statistics of the pinned-host allocator: num_system_allocs counts cudaHostAlloc calls (cache
// misses), reserved_bytes includes freed blocks kept for reuse. All zero when unavailable.
AllocatorStats pinned_memory_stats();
// Returns the pinned blocks kept for reuse to the system.
void pinned_empty_cache();

namespace pinned {
// What a backend provides to pin host memory. `allocator` returns a process-wide allocator whose
// device() is cpu; `is_pinned` says whether a host address lies in page-locked memory. Both are
// called only while cuda::device_count() > 0.
struct Backend {
  Allocator* (*allocator)() = nullptr;
  bool (*is_pinned)(const void* p) = nullptr;
};
void register_backend(Backend backend);
}  // namespace pinned

}  // namespace kiln
