// CUDA tensors: allocation, fills and copies in both directions (any dtype, any strides). Skipped,
// with a message, when no GPU is present.
#include "testing.h"

using namespace kiln;
namespace kt = kiln::testing;

namespace {
bool have_gpu() { return cuda::is_available(); }
}  // namespace

TEST(Cuda, RoundTripKeepsEveryDtype) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: CUDA tests skipped";
  for (DType dt : kt::kAllDTypes) {
    Tensor a = kt::random_tensor({37, 5}, dt, -50, 50, 3);
    Tensor g = a.to(Device::cuda(0));
    EXPECT_EQ(g.device(), Device::cuda(0));
    Tensor back = g.to(Device::cpu());
    EXPECT_EQ(kt::values(back), kt::values(a)) << dtype_name(dt);
  }
}

TEST(Cuda, StridedCopiesAndConversions) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: CUDA tests skipped";
  Tensor a = arange(0, 24, 1, {.dtype = DType::f32}).view({4, 6});
  Tensor g = a.to(Device::cuda(0));
  Tensor gt = g.t().to(DType::f16);             // strided read + conversion on the device
  Tensor back = gt.to(Device::cpu(), DType::f64);
  kt::expect_close(back, kt::values(a.t()), 0, 0, "transpose on device");
  Tensor z = zeros({3, 4}, {.device = Device::cuda(0)});
  z.slice(1, 0, 4, 2).fill_(5);                 // strided fill
  kt::expect_close(z.to(Device::cpu()), {5, 0, 5, 0, 5, 0, 5, 0, 5, 0, 5, 0}, 0, 0, "strided fill");
  Tensor host = zeros({4, 6});
  host.t().copy_(g.t());                        // device -> strided host
  kt::expect_close(host, kt::values(a), 0, 0, "device to strided host");
}

TEST(Cuda, AllocatorCountsBytes) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: CUDA tests skipped";
  Allocator& alloc = allocator_for(Device::cuda(0));
  const int64_t before = alloc.stats().allocated_bytes;
  {
    Tensor t = empty({1024}, {.device = Device::cuda(0)});
    EXPECT_EQ(alloc.stats().allocated_bytes - before, 4096);
  }
  EXPECT_EQ(alloc.stats().allocated_bytes, before);
  kt::expect_error([] { (void)zeros({2}, {.device = Device::cuda(100)}); }, {"cuda:100", "does not exist"});
}
