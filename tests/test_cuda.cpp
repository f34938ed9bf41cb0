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

// ---- Pinned host memory (tensor/pinned.h); the CPU-only side is in tests/io/test_pinned.cpp.

TEST(CudaPinned, PinMemoryCopiesIntoPageLockedMemory) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: CUDA tests skipped";
  ASSERT_TRUE(pinned_memory_available());
  for (DType dt : kt::kAllDTypes) {
    Tensor a = kt::random_tensor({37, 5}, dt, -50, 50, 4);
    EXPECT_FALSE(is_pinned(a)) << "the CPU allocator's memory is pageable";
    Tensor p = pin_memory(a);
    EXPECT_TRUE(is_pinned(p)) << dtype_name(dt);
    EXPECT_TRUE(p.device().is_cpu());
    EXPECT_EQ(p.dtype(), dt);
    EXPECT_EQ(p.shape(), a.shape());
    EXPECT_EQ(kt::values(p), kt::values(a)) << dtype_name(dt);
    Tensor back = p.to(Device::cuda(0)).to(Device::cpu());
    EXPECT_EQ(kt::values(back), kt::values(a)) << dtype_name(dt);
  }
  Tensor strided = kt::noncontiguous(kt::random_tensor({6, 7}, DType::f32, -1, 1, 5));
  Tensor p = pin_memory(strided);
  EXPECT_TRUE(p.is_contiguous());
  EXPECT_EQ(kt::values(p), kt::values(strided));
  EXPECT_TRUE(pin_memory(p).is_same(p)) << "an already pinned tensor comes back as is";
  EXPECT_TRUE(is_pinned(p.slice(0, 2, 5))) << "a view of pinned memory is pinned";
  Tensor g = zeros({3}, {.device = Device::cuda(0)});
  kt::expect_error([&] { (void)pin_memory(g); }, {"pin_memory", "only CPU tensors", "cuda:0"});
  EXPECT_FALSE(is_pinned(g));
}

TEST(CudaPinned, PinMemoryKeepsTheGradientPath) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: CUDA tests skipped";
  Tensor a = tensor({1.0, 2.0, 3.0}).requires_grad_();
  Tensor p = pin_memory(a);
  EXPECT_TRUE(p.requires_grad());
  (p * tensor({4.0, 5.0, 6.0})).sum().backward();
  kt::expect_close(a.grad(), {4, 5, 6}, 0, 0, "gradient through pin_memory");
}

TEST(CudaPinned, FreedBlocksAreReusedBySize) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: CUDA tests skipped";
  pinned_empty_cache();
  const AllocatorStats start = pinned_memory_stats();
  Tensor batch = kt::random_tensor({64, 100}, DType::f32, -1, 1, 6);  // 25,600 bytes
  (void)pin_memory(batch);
  EXPECT_EQ(pinned_memory_stats().num_system_allocs, start.num_system_allocs + 1);
  EXPECT_EQ(pinned_memory_stats().allocated_bytes, start.allocated_bytes) << "the block came back";
  EXPECT_GE(pinned_memory_stats().reserved_bytes, start.reserved_bytes + 25600) << "and stays cached";
  for (int step = 0; step < 5; ++step) (void)pin_memory(batch);
  EXPECT_EQ(pinned_memory_stats().num_system_allocs, start.num_system_allocs + 1) << "same size: no new cudaHostAlloc";
  EXPECT_EQ(pinned_memory_stats().num_allocs, start.num_allocs + 6);
  {
    Tensor first = pin_memory(batch), second = pin_memory(batch);  // two live at once: one more block
    EXPECT_NE(first.data_ptr(), second.data_ptr());
    EXPECT_EQ(pinned_memory_stats().num_system_allocs, start.num_system_allocs + 2);
  }
  (void)pin_memory(kt::random_tensor({64, 200}, DType::f32, -1, 1, 7));  // another size: a new block
  EXPECT_EQ(pinned_memory_stats().num_system_allocs, start.num_system_allocs + 3);
  pinned_empty_cache();
  EXPECT_EQ(pinned_memory_stats().reserved_bytes, start.reserved_bytes);
}

TEST(CudaPinned, LoaderWithPinMemoryYieldsPinnedBatches) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: CUDA tests skipped";
  std::vector<int64_t> labels(23);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int64_t>(i);
  auto dataset = std::make_shared<data::TensorDataset>(
      data::TensorDataset{kt::random_tensor({23, 3, 4}, DType::f32, -1, 1, 8), tensor(labels)});
  for (const int workers : {0, 2}) {
    data::DataLoader plain(dataset, {.batch_size = 5, .shuffle = true, .seed = 1, .num_workers = workers});
    data::DataLoader pinned(dataset, {.batch_size = 5, .shuffle = true, .seed = 1, .num_workers = workers,
                                      .pin_memory = true});
    std::vector<std::vector<double>> want;
    for (data::Batch& b : plain)
      for (const Tensor& field : b.fields) want.push_back(kt::values(field));
    size_t k = 0;
    for (data::Batch& b : pinned) {
      for (const Tensor& field : b.fields) {
        EXPECT_TRUE(is_pinned(field)) << "workers " << workers;
        ASSERT_LT(k, want.size());
        EXPECT_EQ(kt::values(field), want[k++]) << "workers " << workers;
      }
    }
    EXPECT_EQ(k, want.size());
  }
  // On the caller's thread, a second epoch pins into the first epoch's blocks.
  data::DataLoader loader(dataset, {.batch_size = 5, .pin_memory = true});
  for (data::Batch& b : loader) (void)b;
  const int64_t host_allocs = pinned_memory_stats().num_system_allocs;
  for (data::Batch& b : loader) (void)b;
  EXPECT_EQ(pinned_memory_stats().num_system_allocs, host_allocs);
}
