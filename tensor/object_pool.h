// A per-thread cache of freed objects of one type. Every op allocates a TensorImpl and a Storage for
// its output; recycling them instead of going to malloc each time is a large share of the cost of
// a small op (see bench/bench_dispatch.cpp). Objects freed on another thread join that thread's
// cache; a thread's cache is released when the thread exits.
#pragma once

#include <cstddef>
#include <new>

namespace kiln::detail {

template <class T, int kDepth = 64>
class ObjectPool {
 public:
  static void* allocate(size_t bytes) {
    Cache& c = cache();
    if (bytes == sizeof(T) && c.count > 0) return c.items[--c.count];
    return ::operator new(bytes);
  }
  static void release(void* p, size_t bytes) {
    Cache& c = cache();
    if (bytes == sizeof(T) && c.count < kDepth) {
      c.items[c.count++] = p;
      return;
    }
    ::operator delete(p);
  }

 private:
  struct Cache {
    void* items[kDepth];
    int count = 0;
    ~Cache() {
      while (count > 0) ::operator delete(items[--count]);
    }
  };
  // initial-exec: Kiln is linked, not dlopen'ed, so TLS access needs no __tls_get_addr call.
  static Cache& cache() {
    static thread_local Cache c __attribute__((tls_model("initial-exec")));
    return c;
  }
};

}  // namespace kiln::detail
