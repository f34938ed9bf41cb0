// CUDA copy (with dtype conversion, any strides, within a device and to/from the host) and fill.
// Conversions follow kernels/cpu/convert.h exactly: NaN -> 0 and saturation for float -> integer,
// round-to-nearest-even into f16/bf16.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "kernels/cuda/runtime.h"
#include "tensor/dispatch.h"

namespace kiln::cuda {
namespace {

struct StridedLayout {
  int ndim;
  int64_t shape[kMaxDims];
  int64_t src_strides[kMaxDims];  // elements
  int64_t dst_strides[kMaxDims];
};

// Device-side element types: the CPU's Half/BFloat16 are bit-compatible with __half/__nv_bfloat16.
template <DType D> struct Elem;
template <> struct Elem<DType::f32> { using type = float; };
template <> struct Elem<DType::f64> { using type = double; };
template <> struct Elem<DType::f16> { using type = __half; };
template <> struct Elem<DType::bf16> { using type = __nv_bfloat16; };
template <> struct Elem<DType::i64> { using type = int64_t; };
template <> struct Elem<DType::i32> { using type = int32_t; };
template <> struct Elem<DType::u8> { using type = uint8_t; };
template <> struct Elem<DType::boolean> { using type = bool; };

template <class T> __device__ double to_double(T v) { return static_cast<double>(v); }
template <> __device__ double to_double(__half v) { return static_cast<double>(__half2float(v)); }
template <> __device__ double to_double(__nv_bfloat16 v) { return static_cast<double>(__bfloat162float(v)); }

template <class To> __device__ To from_double(double d) {
  if constexpr (std::is_same_v<To, bool>) {
    return d != 0.0;
  } else if constexpr (std::is_same_v<To, __half>) {
    return __float2half_rn(static_cast<float>(d));
  } else if constexpr (std::is_same_v<To, __nv_bfloat16>) {
    return __float2bfloat16_rn(static_cast<float>(d));
  } else if constexpr (std::is_integral_v<To>) {
    if (d != d) return To(0);
    if (d <= static_cast<double>(std::numeric_limits<To>::min())) return std::numeric_limits<To>::min();
    if (d >= static_cast<double>(std::numeric_limits<To>::max())) return std::numeric_limits<To>::max();
    return static_cast<To>(d);
  } else {
    return static_cast<To>(d);
  }
}

template <class To, class From>
__device__ To convert(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_integral_v<To> && std::is_integral_v<From> && !std::is_same_v<To, bool>) {
    return static_cast<To>(v);  // integer narrowing wraps, as on the CPU
  } else if constexpr (std::is_same_v<From, int64_t>) {
    return from_double<To>(static_cast<double>(v));
  } else {
    return from_double<To>(to_double(v));
  }
}

template <class To, class From>
__global__ void strided_copy_kernel(const From* src, To* dst, int64_t n, StridedLayout layout) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rem = i, so = 0, dof = 0;
    for (int d = layout.ndim - 1; d >= 0; --d) {
      const int64_t idx = rem % layout.shape[d];
      rem /= layout.shape[d];
      so += idx * layout.src_strides[d];
      dof += idx * layout.dst_strides[d];
    }
    dst[dof] = convert<To>(src[so]);
  }
}

template <class T>
__global__ void strided_fill_kernel(T* dst, int64_t n, StridedLayout layout, T value) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rem = i, off = 0;
    for (int d = layout.ndim - 1; d >= 0; --d) {
      off += (rem % layout.shape[d]) * layout.dst_strides[d];
      rem /= layout.shape[d];
    }
    dst[off] = value;
  }
}

template <class Fn>
void visit_cuda_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn.template operator()<float>();
    case DType::f64: return fn.template operator()<double>();
    case DType::f16: return fn.template operator()<__half>();
    case DType::bf16: return fn.template operator()<__nv_bfloat16>();
    case DType::i64: return fn.template operator()<int64_t>();
    case DType::i32: return fn.template operator()<int32_t>();
    case DType::u8: return fn.template operator()<uint8_t>();
    case DType::boolean: return fn.template operator()<bool>();
  }
}

StridedLayout layout_of(const Tensor& src, const Tensor& dst) {
  StridedLayout l{};
  l.ndim = dst.dim();
  for (int d = 0; d < dst.dim(); ++d) {
    l.shape[d] = dst.shape()[d];
    l.src_strides[d] = src.defined() ? src.strides()[d] : 0;
    l.dst_strides[d] = dst.strides()[d];
  }
  return l;
}

unsigned blocks_for(int64_t n) { return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65535)); }

// Both on one CUDA device: src expanded to dst's shape.
void copy_on_device(const Tensor& src, Tensor& dst) {
  DeviceGuard guard(dst.device().index);
  const int64_t n = dst.numel();
  const StridedLayout layout = layout_of(src, dst);
  visit_cuda_dtype(dst.dtype(), [&]<class To>() {
    visit_cuda_dtype(src.dtype(), [&]<class From>() {
      strided_copy_kernel<To, From><<<blocks_for(n), 256>>>(static_cast<const From*>(src.data_ptr()),
                                                           static_cast<To*>(dst.data_ptr()), n, layout);
    });
  });
  KILN_CUDA_CHECK(cudaGetLastError(), "copy_ (cuda kernel launch)");
}

// A contiguous tensor like t (shape, `dtype`) on `device`.
Tensor contiguous_like(const Tensor& t, DType dtype, Device device) { return make_tensor(t.shape(), dtype, device); }

void copy_cuda(const Tensor& src, Tensor& dst) {
  if (dst.numel() == 0) return;
  if (src.device().is_cuda() && dst.device().is_cuda()) {
    KILN_CHECK(src.device() == dst.device(), "copy_: copies between two GPUs (", src.device(), " -> ", dst.device(),
               ") are not supported yet; go through the CPU");
    return copy_on_device(src, dst);
  }
  if (dst.device().is_cuda()) {  // host -> device: convert and lay out on the host, then one memcpy
    Tensor staged = contiguous_like(dst, dst.dtype(), Device::cpu());
    staged.copy_(src);
    DeviceGuard guard(dst.device().index);
    if (dst.is_contiguous()) {
      KILN_CUDA_CHECK(cudaMemcpy(dst.data_ptr(), staged.data_ptr(), dst.nbytes(), cudaMemcpyHostToDevice), "copy_ (host to device)");
      return;
    }
    Tensor on_device = contiguous_like(dst, dst.dtype(), dst.device());
    KILN_CUDA_CHECK(cudaMemcpy(on_device.data_ptr(), staged.data_ptr(), dst.nbytes(), cudaMemcpyHostToDevice), "copy_ (host to device)");
    return copy_on_device(on_device, dst);
  }
  // device -> host: lay out (and convert) on the device, one memcpy, then place on the host.
  Tensor packed = src;
  if (!src.is_contiguous() || src.dtype() != dst.dtype() || src.numel() != dst.numel()) {
    packed = contiguous_like(dst, dst.dtype(), src.device());
    copy_on_device(src, packed);
  }
  DeviceGuard guard(src.device().index);
  if (dst.is_contiguous()) {
    KILN_CUDA_CHECK(cudaMemcpy(dst.data_ptr(), packed.data_ptr(), dst.nbytes(), cudaMemcpyDeviceToHost), "copy_ (device to host)");
    return;
  }
  Tensor host = contiguous_like(dst, dst.dtype(), Device::cpu());
  KILN_CUDA_CHECK(cudaMemcpy(host.data_ptr(), packed.data_ptr(), dst.nbytes(), cudaMemcpyDeviceToHost), "copy_ (device to host)");
  dst.copy_(host);
}

void fill_cuda(Tensor& out, const Scalar& value) {
  DeviceGuard guard(out.device().index);
  const int64_t n = out.numel();
  const StridedLayout layout = layout_of(Tensor(), out);
  // The value is converted on the host exactly as the CPU would, then its bits are broadcast.
  Tensor host = make_tensor({}, out.dtype(), Device::cpu());
  host.fill_(value);
  visit_cuda_dtype(out.dtype(), [&]<class T>() {
    T v;
    std::memcpy(&v, host.data_ptr(), sizeof(T));
    strided_fill_kernel<T><<<blocks_for(n), 256>>>(static_cast<T*>(out.data_ptr()), n, layout, v);
  });
  KILN_CUDA_CHECK(cudaGetLastError(), "fill_ (cuda kernel launch)");
}

}  // namespace

KILN_REGISTER_KERNEL(Op::copy, DeviceType::cuda, copy_cuda);
KILN_REGISTER_KERNEL(Op::fill, DeviceType::cuda, fill_cuda);

}  // namespace kiln::cuda
