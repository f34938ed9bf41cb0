// The CUDA allocator: a plain one over cudaMalloc/cudaFree with the same counters as the CPU one.
// (A caching allocator with streams replaces it in the CUDA issue.) Also reports the device count.
#include <array>
#include <atomic>
#include <mutex>

#include "kernels/cuda/runtime.h"
#include "tensor/allocator.h"

namespace kiln::cuda {
namespace {

int count_devices() {
  // A missing driver or GPU is not an error here: it means "no CUDA devices".
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky error so later calls report their own
      return 0;
    }
    return n;
  }();
  return count;
}

class CudaAllocator final : public Allocator {
 public:
  explicit CudaAllocator(int index) : index_(index) {}

  void* allocate(size_t nbytes) override {
    num_allocs_.fetch_add(1, std::memory_order_relaxed);
    if (nbytes == 0) return nullptr;
    DeviceGuard guard(index_);
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, nbytes);
    if (err != cudaSuccess) {
      cudaGetLastError();
      detail::throw_error("CUDA allocator: cannot allocate ", nbytes, " bytes on cuda:", index_, " (",
                          cudaGetErrorString(err), "; ", allocated_.load(), " bytes in use by Kiln)");
    }
    num_system_.fetch_add(1, std::memory_order_relaxed);
    const int64_t now = allocated_.fetch_add(static_cast<int64_t>(nbytes)) + static_cast<int64_t>(nbytes);
    int64_t prev = peak_.load();
    while (now > prev && !peak_.compare_exchange_weak(prev, now)) {}
    return p;
  }

  void deallocate(void* p, size_t nbytes) override {
    if (!p) return;
    DeviceGuard guard(index_);
    cudaFree(p);  // errors at teardown (driver already unloaded) are ignored on purpose
    allocated_.fetch_sub(static_cast<int64_t>(nbytes));
  }

  Device device() const override { return Device::cuda(index_); }
  AllocatorStats stats() const override {
    return {allocated_.load(), peak_.load(), allocated_.load(), num_allocs_.load(), num_system_.load()};
  }
  void reset_peak() override { peak_.store(allocated_.load()); }

 private:
  int index_;
  std::atomic<int64_t> allocated_{0}, peak_{0}, num_allocs_{0}, num_system_{0};
};

Allocator* allocator_for_index(int index) {
  check_device(index, "CUDA allocator");
  static std::array<CudaAllocator*, 128> allocators{};
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (!allocators[static_cast<size_t>(index)]) allocators[static_cast<size_t>(index)] = new CudaAllocator(index);
  return allocators[static_cast<size_t>(index)];
}

[[maybe_unused]] const bool registered = [] {
  register_allocator(DeviceType::cuda, &allocator_for_index);
  register_device_count(&count_devices);
  return true;
}();

}  // namespace

void check_device(int index, const char* what) {
  const int n = count_devices();
  KILN_CHECK(n > 0, what, ": cuda:", index, " requested, but no CUDA device is available (no GPU or no driver)");
  KILN_CHECK(index >= 0 && index < n, what, ": cuda:", index, " does not exist (", n, " CUDA device",
             n == 1 ? "" : "s", " available)");
}

DeviceGuard::DeviceGuard(int index) {
  KILN_CUDA_CHECK(cudaGetDevice(&previous_), "cudaGetDevice");
  if (previous_ != index) KILN_CUDA_CHECK(cudaSetDevice(index), "cudaSetDevice");
}
DeviceGuard::~DeviceGuard() {
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
}

}  // namespace kiln::cuda
