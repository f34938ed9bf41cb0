// CUDA runtime helpers for the CUDA backend: error checks that throw kiln::Error, and a guard that
// makes a device current for a scope. Only kernels/cuda includes this.
#pragma once

#include <cuda_runtime.h>

#include "tensor/device.h"
#include "tensor/error.h"

namespace kiln::cuda {

#define KILN_CUDA_CHECK(expr, what)                                                                 \
  do {                                                                                             \
    const cudaError_t kiln_cuda_err = (expr);                                                      \
    KILN_CHECK(kiln_cuda_err == cudaSuccess, what, ": CUDA error ", cudaGetErrorName(kiln_cuda_err), \
               " (", cudaGetErrorString(kiln_cuda_err), ")");                                      \
  } while (0)

// Checks that device index i exists; `what` names the caller in the error.
void check_device(int index, const char* what);

class DeviceGuard {
 public:
  explicit DeviceGuard(int index);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace kiln::cuda
