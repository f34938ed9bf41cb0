// What matmul.cpp and conv.cpp share around oneDNN: the CPU engine, a bounded LRU of prepared
// plans, and the per-thread scratch memory their primitives run with. Internal to kernels/cpu.
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

#include <oneapi/dnnl/dnnl.hpp>

#include "tensor/cpu_capability.h"
#include "tensor/error.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]

// oneDNN runs at Kiln's CPU level (Note [CPU capability levels]) unless the user capped it with
// oneDNN's own variable. Must run before oneDNN generates its first kernel; every primitive is
// made on cpu_engine(), which calls this first.
inline void cap_onednn_isa() {
  const CpuCapability level = cpu_capability();
  if (level >= CpuCapability::avx512 || std::getenv("ONEDNN_MAX_CPU_ISA") || std::getenv("DNNL_MAX_CPU_ISA")) return;
  try {
    dnnl::set_max_cpu_isa(level == CpuCapability::avx2 ? dnnl::cpu_isa::avx2 : dnnl::cpu_isa::sse41);
  } catch (const dnnl::error& e) {  // a oneDNN built without the control: it runs at the CPU's level
    std::fprintf(stderr, "kiln: could not cap oneDNN at %s: %s\n", cpu_capability_name(level).data(), e.what());
  }
}

inline dnnl::engine& cpu_engine() {
  static dnnl::engine engine = (cap_onednn_isa(), dnnl::engine(dnnl::engine::kind::cpu, 0));
  return engine;
}

// Note [Primitive cache]: creating a oneDNN primitive costs tens of microseconds, more than a small
// product itself, so plans are kept by key in a bounded LRU shared by all threads. A plan is handed
// out as a shared_ptr so that eviction never frees one that another thread is executing. `make`
// returns the shared_ptr; a null one (oneDNN refused the problem) is remembered like any other.
// Primitives run with a user scratchpad (thread_scratch): with oneDNN's default global scratchpad,
// two threads executing one primitive at once would share its scratch memory.
template <class Key, class Hash, class Plan, size_t kCapacity>
class PlanCache {
 public:
  template <class Make>
  std::shared_ptr<const Plan> get(const Key& key, Make&& make) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (auto it = index_.find(key); it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->second;
    }
    std::shared_ptr<const Plan> plan = make();
    lru_.emplace_front(key, plan);
    index_[key] = lru_.begin();
    if (lru_.size() > kCapacity) {
      index_.erase(lru_.back().first);
      lru_.pop_back();
    }
    return plan;
  }

 private:
  std::mutex mutex_;
  std::list<std::pair<Key, std::shared_ptr<const Plan>>> lru_;
  std::unordered_map<Key, typename decltype(lru_)::iterator, Hash> index_;
};

// Per-thread scratch memory for a user scratchpad, grown on demand, 64-byte aligned; `op` names
// the caller in the out-of-memory error.
inline void* thread_scratch(size_t bytes, const char* op) {
  struct Buffer {
    void* p = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(p); }
  };
  thread_local Buffer buf;
  if (bytes > buf.size) {
    std::free(buf.p);
    buf.p = nullptr;
    buf.size = 0;
    const size_t rounded = (bytes + 63) / 64 * 64;
    buf.p = std::aligned_alloc(64, rounded);
    KILN_CHECK(buf.p != nullptr, op, ": out of memory for a ", bytes, "-byte oneDNN scratchpad");
    buf.size = rounded;
  }
  return buf.p;
}

}  // namespace kiln::cpu
