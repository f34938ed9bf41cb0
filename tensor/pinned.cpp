// pin_memory / is_pinned over the registry that the CUDA backend fills. Holds no CUDA code: a
// build without CUDA compiles this file and reports pinning as unavailable.
#include "tensor/pinned.h"

#include "tensor/factories.h"

namespace kiln {
namespace {

// Constant-initialised, so a backend registering from its own static initialiser finds it ready.
pinned::Backend g_backend{};

}  // namespace

void pinned::register_backend(Backend backend) { g_backend = backend; }

bool pinned_memory_available() { return g_backend.allocator != nullptr && cuda::device_count() > 0; }

bool is_pinned(const Tensor& t) {
  if (!t.defined() || !t.device().is_cpu() || !pinned_memory_available()) return false;
  const void* bytes = t.storage().data();  // the block's start: a view's data_ptr may be past its end
  return bytes != nullptr && g_backend.is_pinned(bytes);
}

Tensor pin_memory(const Tensor& t) {
  KILN_CHECK(t.defined(), "pin_memory: the tensor is undefined");
  KILN_CHECK(t.device().is_cpu(), "pin_memory: only CPU tensors can be pinned, got a tensor on ", t.device());
  KILN_CHECK(g_backend.allocator != nullptr, "pin_memory: Kiln was built without CUDA, so host memory cannot be ",
             "pinned (check pinned_memory_available() before asking)");
  KILN_CHECK(cuda::device_count() > 0, "pin_memory: no CUDA device is available (no GPU or no driver), so host ",
             "memory cannot be pinned (check pinned_memory_available() before asking)");
  if (is_pinned(t)) return t;
  Allocator* allocator = g_backend.allocator();
  const size_t nbytes = t.nbytes();
  void* block = allocator->allocate(nbytes);
  Tensor pinned;
  try {
    pinned = from_blob(block, t.shape(), t.dtype(), [allocator, nbytes](void* p) { allocator->deallocate(p, nbytes); });
  } catch (...) {
    allocator->deallocate(block, nbytes);
    throw;
  }
  pinned.copy_(t);  // from here on the tensor owns the block, also when the copy throws
  return pinned;
}

AllocatorStats pinned_memory_stats() {
  return pinned_memory_available() ? g_backend.allocator()->stats() : AllocatorStats{};
}

void pinned_empty_cache() {
  if (pinned_memory_available()) g_backend.allocator()->empty_cache();
}

}  // namespace kiln
