// Per-thread caches of freed small objects. Every op allocates a TensorImpl and a Storage for its
// output, and every recorded op an autograd node and metadata; recycling them instead of going to
// malloc each time is a large share of the cost of a small op (see bench/bench_dispatch.cpp and
// bench/bench_autograd.cpp). glibc's own per-thread cache holds only 7 blocks per size, which a
// graph of a hundred nodes freed at once overflows.
//
// A freed block is kept on an intrusive free list (its first bytes hold the next pointer), so the
// cache costs two words per size class. Blocks freed on another thread join that thread's cache;
// a thread's cache is released when the thread exits.
#pragma once

#include <cstddef>
#include <new>
#include <utility>

namespace kiln::detail {

// Blocks of up to kClasses * kClassBytes bytes, one free list per kClassBytes-wide class, each
// capped at kDepth blocks. Tag keeps the caches of different users apart.
template <class Tag, size_t kClassBytes, int kClasses, int kDepth = 1024>
class SizeClassPool {
  static_assert(kClassBytes >= sizeof(void*) && kClassBytes % alignof(std::max_align_t) == 0);

 public:
  static void* allocate(size_t bytes) {
    const size_t c = class_of(bytes);
    if (c >= kClasses) return ::operator new(bytes);
    Cache& cache = local();
    if (void* p = cache.head[c]) {
      cache.head[c] = *static_cast<void**>(p);
      --cache.count[c];
      return p;
    }
    return ::operator new((c + 1) * kClassBytes);
  }
  static void release(void* p, size_t bytes) {
    const size_t c = class_of(bytes);
    Cache& cache = local();
    if (c >= kClasses || cache.count[c] >= kDepth) {
      ::operator delete(p);
      return;
    }
    *static_cast<void**>(p) = cache.head[c];
    cache.head[c] = p;
    ++cache.count[c];
  }

 private:
  static size_t class_of(size_t bytes) { return bytes == 0 ? 0 : (bytes - 1) / kClassBytes; }

  struct Cache {
    void* head[kClasses] = {};
    int count[kClasses] = {};
    ~Cache() {
      for (void*& p : head)
        while (p) ::operator delete(std::exchange(p, *static_cast<void**>(p)));
    }
  };
  // initial-exec: Kiln is linked, not dlopen'ed, so TLS access needs no __tls_get_addr call.
  static Cache& local() {
    static thread_local Cache cache __attribute__((tls_model("initial-exec")));
    return cache;
  }
};

// The cache for objects of one type T.
template <class T>
using ObjectPool = SizeClassPool<T, (sizeof(T) + alignof(std::max_align_t) - 1) / alignof(std::max_align_t) *
                                        alignof(std::max_align_t), 1>;

}  // namespace kiln::detail
