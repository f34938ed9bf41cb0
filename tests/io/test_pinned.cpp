// Pinned host memory where it cannot exist (no CUDA build, or no GPU): pinned_memory_available()
// is false, pin_memory raises a clear error, is_pinned is false, and a DataLoader with
// pin_memory = true warns once and yields bitwise the same batches as without. A fake backend, in a
// child process, runs the pinning path itself; the real CUDA side is tested in tests/test_cuda.cpp.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "io/data/dataloader.h"
#include "tensor/pinned.h"
#include "testing.h"

namespace kt = kiln::testing;
using kiln::DType;
using kiln::Tensor;
using namespace kiln::data;

namespace {

constexpr const char* kNoAcceleratorWarning =
    "'pin_memory' argument is set as true but no accelerator is found, then device pinned memory won't be used";

bool gpu_present() { return kiln::pinned_memory_available(); }

// 37 samples of three fields with different dtypes and shapes, so that every byte of a batch
// depends on which samples went into it.
std::shared_ptr<const Dataset> mixed_dataset() {
  std::vector<int64_t> labels(37);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int64_t>(i * 7 % 10);
  return std::make_shared<TensorDataset>(TensorDataset{kt::random_tensor({37, 3, 4}, DType::f32, -5, 5, 11),
                                                       kiln::tensor(labels),
                                                       kt::random_tensor({37, 2}, DType::bf16, -1, 1, 12)});
}

// A pass's batches, each field as its raw bytes (plus dtype and shape), for bitwise comparison.
// Checks on the way that fields are pinned exactly when the loader asked and pinning is available.
struct FieldBytes {
  DType dtype;
  kiln::Dims shape;
  std::vector<unsigned char> bytes;
  bool operator==(const FieldBytes&) const = default;
};

std::vector<std::vector<FieldBytes>> all_batches(DataLoader& loader) {
  std::vector<std::vector<FieldBytes>> out;
  for (Batch& batch : loader) {
    std::vector<FieldBytes> fields;
    for (const Tensor& field : batch.fields) {
      EXPECT_EQ(kiln::is_pinned(field), loader.options().pin_memory && kiln::pinned_memory_available());
      const Tensor packed = field.contiguous();
      const auto* begin = static_cast<const unsigned char*>(packed.data_ptr());
      fields.push_back({field.dtype(), field.shape(), std::vector<unsigned char>(begin, begin + packed.nbytes())});
    }
    out.push_back(std::move(fields));
  }
  return out;
}

// Sample i of epoch e: {[i, e]} as float64; an end after n examples.
class CountingStream : public IterableDataset {
 public:
  explicit CountingStream(int64_t n) : n_(n) {}
  void start(int64_t epoch) override {
    next_ = 0;
    epoch_ = epoch;
  }
  std::optional<Example> next() override {
    if (next_ == n_) return std::nullopt;
    const double i = static_cast<double>(next_++);
    return Example{kiln::tensor({i, static_cast<double>(epoch_)}, {.dtype = DType::f64})};
  }

 private:
  int64_t n_, next_ = 0, epoch_ = 0;
};

// A stand-in for the CUDA backend, so the pinning path runs on a machine without a GPU: plain
// malloc'd blocks, "pinned" while live, with the thread that allocated each one recorded.
class FakePinnedAllocator final : public kiln::Allocator {
 public:
  void* allocate(size_t nbytes) override {
    std::lock_guard<std::mutex> lock(mutex_);
    ++num_allocs_;
    if (nbytes == 0) return nullptr;
    void* block = std::malloc(nbytes);
    live_.insert(block);
    (std::this_thread::get_id() == main_thread_ ? on_main_thread : on_other_threads)++;
    return block;
  }
  void deallocate(void* p, size_t) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (p && live_.erase(p) == 1) std::free(p);
  }
  kiln::Device device() const override { return kiln::Device::cpu(); }
  kiln::AllocatorStats stats() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return {.num_allocs = num_allocs_, .num_system_allocs = num_allocs_};
  }
  void reset_peak() override {}
  bool holds(const void* p) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return live_.count(p) == 1;
  }
  size_t live_blocks() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return live_.size();
  }

  int64_t on_main_thread = 0, on_other_threads = 0;

 private:
  mutable std::mutex mutex_;
  std::set<const void*> live_;
  int64_t num_allocs_ = 0;
  const std::thread::id main_thread_ = std::this_thread::get_id();
};

FakePinnedAllocator* fake_allocator() {
  static FakePinnedAllocator* allocator = new FakePinnedAllocator();  // outlives every tensor
  return allocator;
}

// Failed expectations of a death-test child, which reports them on stderr and in its exit code.
struct ChildChecks {
  std::string failures;
  void expect(bool ok, const std::string& what) {
    if (!ok) failures += "FAILED: " + what + "\n";
  }
  [[noreturn]] void exit() {
    std::fputs(failures.c_str(), stderr);
    std::exit(failures.empty() ? 0 : 1);
  }
};

// The body of the next test, in its child process: installs the fake backend, then checks
// pin_memory and the loader's pinning. Never returns.
[[noreturn]] void check_pinning_with_a_fake_backend(const std::shared_ptr<const Dataset>& dataset) {
  ChildChecks checks;
  kiln::cuda::register_device_count([] { return 1; });
  kiln::pinned::register_backend({.allocator = [] { return static_cast<kiln::Allocator*>(fake_allocator()); },
                                  .is_pinned = [](const void* p) { return fake_allocator()->holds(p); }});
  checks.expect(kiln::pinned_memory_available(), "pinned_memory_available() with a backend and a device");

  Tensor a = kiln::tensor({1.0, 2.0, 3.0}).requires_grad_();
  Tensor p = kiln::pin_memory(a);
  checks.expect(kiln::is_pinned(p) && !kiln::is_pinned(a), "pin_memory pins a copy");
  checks.expect(kt::values(p) == kt::values(a), "pinned values");
  checks.expect(kiln::pin_memory(p).is_same(p), "an already pinned tensor comes back as is");
  (p * kiln::tensor({4.0, 5.0, 6.0})).sum().backward();
  checks.expect(a.grad().defined() && kt::values(a.grad()) == std::vector<double>{4, 5, 6},
                "the gradient reaches the unpinned tensor");
  const Tensor strided = kt::noncontiguous(kt::random_tensor({5, 6}, DType::f64, -1, 1, 13));
  const Tensor packed = kiln::pin_memory(strided);
  checks.expect(packed.is_contiguous() && kt::values(packed) == kt::values(strided), "a strided tensor");

  ::testing::internal::CaptureStderr();
  for (const int workers : {0, 2}) {
    DataLoaderOptions options{.batch_size = 5, .shuffle = true, .seed = 9, .num_workers = workers};
    DataLoader unpinned_loader(dataset, options);
    options.pin_memory = true;
    DataLoader pinned_loader(dataset, options);
    FakePinnedAllocator& fake = *fake_allocator();
    const int64_t main_before = fake.on_main_thread, others_before = fake.on_other_threads;
    const auto want = all_batches(unpinned_loader);  // pinned or not: checked inside
    const auto got = all_batches(pinned_loader);
    checks.expect(got == want, "the same bytes, workers " + std::to_string(workers));
    const int64_t blocks = 3 * static_cast<int64_t>(want.size());  // three fields a batch
    checks.expect(fake.on_main_thread - main_before == (workers == 0 ? blocks : 0) &&
                      fake.on_other_threads - others_before == (workers == 0 ? 0 : blocks),
                  "pinned on the thread that made the batch, workers " + std::to_string(workers));
  }
  checks.expect(::testing::internal::GetCapturedStderr().empty(), "no warning when pinning is available");
  checks.expect(!::testing::Test::HasFailure(), "every batch field pinned");
  p = Tensor();
  checks.expect(fake_allocator()->live_blocks() == 1, "blocks go back when their tensors die (one left: packed)");
  checks.exit();
}

}  // namespace

TEST(PinnedDeathTest, WithABackendTheLoaderPinsEveryBatchOnItsWorkers) {
  if (gpu_present()) GTEST_SKIP() << "a CUDA device is present: its backend is tested in test_cuda";
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // a fresh process: the fake backend stays in it
  const auto dataset = mixed_dataset();
  EXPECT_EXIT(check_pinning_with_a_fake_backend(dataset), ::testing::ExitedWithCode(0), "");
}

TEST(Pinned, UnavailableWithoutAGpu) {
  if (gpu_present()) GTEST_SKIP() << "a CUDA device is present: pinning is tested in test_cuda";
  EXPECT_FALSE(kiln::pinned_memory_available());
  const Tensor t = kt::random_tensor({4, 5}, DType::f32);
  EXPECT_FALSE(kiln::is_pinned(t));
  EXPECT_FALSE(kiln::is_pinned(Tensor()));
#if KILN_WITH_CUDA
  const std::string why = "no CUDA device is available";
#else
  const std::string why = "Kiln was built without CUDA";
#endif
  kt::expect_error([&] { (void)kiln::pin_memory(t); }, {"pin_memory", why, "cannot be pinned",
                                                        "pinned_memory_available()"});
  const kiln::AllocatorStats stats = kiln::pinned_memory_stats();
  EXPECT_EQ(stats.num_allocs, 0);
  EXPECT_EQ(stats.reserved_bytes, 0);
  kiln::pinned_empty_cache();  // nothing to release, and no CUDA call to fail
}

TEST(Pinned, PinMemoryRejectsAnUndefinedTensor) {
  kt::expect_error([] { (void)kiln::pin_memory(Tensor()); }, {"pin_memory", "undefined"});
}

TEST(Pinned, LoaderBatchesAreBitwiseTheSameWithPinMemory) {
  const auto dataset = mixed_dataset();
  for (const int workers : {0, 2}) {
    for (const bool shuffle : {false, true}) {
      const DataLoaderOptions plain{.batch_size = 5, .shuffle = shuffle, .seed = 3, .num_workers = workers};
      DataLoaderOptions pinned = plain;
      pinned.pin_memory = true;
      DataLoader unpinned_loader(dataset, plain), pinned_loader(dataset, pinned);
      for (int epoch = 0; epoch < 2; ++epoch) {  // the second epoch reshuffles
        const auto want = all_batches(unpinned_loader);
        const auto got = all_batches(pinned_loader);
        ASSERT_EQ(want.size(), 8u);
        EXPECT_TRUE(got == want) << "workers " << workers << ", shuffle " << shuffle << ", epoch " << epoch;
      }
    }
  }
}

TEST(Pinned, StreamBatchesAreTheSameWithPinMemory) {
  auto stream = std::make_shared<CountingStream>(11);
  for (const int workers : {0, 1}) {
    DataLoader plain(stream, {.batch_size = 4, .num_workers = workers});
    const auto want = all_batches(plain);
    DataLoader pinned(stream, {.batch_size = 4, .num_workers = workers, .pin_memory = true});
    const auto got = all_batches(pinned);
    ASSERT_EQ(want.size(), 3u);
    EXPECT_TRUE(got == want) << "workers " << workers;
  }
}

// In a fresh process (the threadsafe death-test style re-runs the binary for this test alone), so
// that no earlier loader has used up the one warning.
TEST(PinnedDeathTest, LoaderWarnsOncePerProcessWhenPinningIsUnavailable) {
  if (gpu_present()) GTEST_SKIP() << "a CUDA device is present: pinning is available, nothing to warn about";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const auto dataset = mixed_dataset();
  EXPECT_EXIT(
      {
        ::testing::internal::CaptureStderr();
        for (int loader_count = 0; loader_count < 3; ++loader_count) {
          DataLoader loader(dataset, {.batch_size = 8, .num_workers = loader_count % 2, .pin_memory = true});
          for (Batch& batch : loader) (void)batch;
        }
        const std::string err = ::testing::internal::GetCapturedStderr();
        size_t warnings = 0;
        for (size_t at = err.find(kNoAcceleratorWarning); at != std::string::npos;
             at = err.find(kNoAcceleratorWarning, at + 1))
          ++warnings;
        std::fprintf(stderr, "%zu warning(s): %s", warnings, err.c_str());
        std::exit(warnings == 1 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "1 warning\\(s\\): warning: DataLoader: 'pin_memory' argument is set as true");
}

TEST(Pinned, LoaderWithoutPinMemoryNeverWarns) {
  ::testing::internal::CaptureStderr();
  DataLoader loader(mixed_dataset(), {.batch_size = 8});
  for (Batch& batch : loader) (void)batch;
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}
