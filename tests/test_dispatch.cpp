// The dispatch table: every op has a CPU kernel; a missing device kernel is a clear error; devices
// are checked; the CUDA backend reports itself honestly.
#include "testing.h"
#include "tensor/dispatch.h"

using namespace kiln;
namespace kt = kiln::testing;

TEST(Dispatch, EveryOpHasACpuKernel) {
  for (int i = 0; i < kNumOps; ++i)
    EXPECT_NE(detail::g_kernels[i][static_cast<int>(DeviceType::cpu)], nullptr) << op_name(static_cast<Op>(i));
}

TEST(Dispatch, OpNamesAreInStepWithTheList) {
  EXPECT_EQ(op_name(Op::copy), "copy");
  EXPECT_EQ(op_name(Op::gelu_erf), "gelu_erf");
  EXPECT_EQ(op_name(static_cast<Op>(kNumOps - 1)), "adagrad_update");
}

TEST(Dispatch, MissingKernelNamesOpAndDevices) {
  // No op has a CUDA kernel for `where` in this issue: the error names what exists.
  kt::expect_error([] { (void)kernel_for<Op::where>(Device::cuda(0)); }, {"where: no kernel for cuda", "available: cpu"});
}

TEST(Dispatch, DeviceParsing) {
  EXPECT_EQ(Device("cuda:1"), Device::cuda(1));
  EXPECT_EQ(Device("cpu"), Device::cpu());
  EXPECT_EQ(Device("cuda").str(), "cuda:0");
  kt::expect_error([] { (void)Device("gpu"); }, {"Device", "'gpu'"});
  kt::expect_error([] { (void)Device("cuda:x"); }, {"cuda:x"});
}

TEST(Dispatch, CudaWithoutAGpuIsAClearError) {
  if (cuda::is_available()) GTEST_SKIP() << "a GPU is present: covered by test_cuda";
  kt::expect_error([] { (void)zeros({2}, {.device = Device::cuda(0)}); }, {"cuda:0"});
}

TEST(Dispatch, MixedDevicesAreRejected) {
  if (!cuda::is_available()) GTEST_SKIP() << "needs a GPU";
  Tensor a = zeros({2});
  Tensor b = zeros({2}, {.device = Device::cuda(0)});
  kt::expect_error([&] { (void)(a + b); }, {"add", "cpu", "cuda:0"});
}

TEST(Dispatch, DebugLevelLogsEachDispatch) {
  const int saved = detail::g_debug_level;
  detail::g_debug_level = 2;
  ::testing::internal::CaptureStderr();
  Tensor a = ones({2, 3});
  (void)(a + a);
  const std::string log = ::testing::internal::GetCapturedStderr();
  detail::g_debug_level = saved;
  EXPECT_NE(log.find("kiln: add cpu [2, 3]:float32 [2, 3]:float32 [2, 3]:float32 ("), std::string::npos) << log;
  EXPECT_NE(log.find(" us)"), std::string::npos) << log;
}
