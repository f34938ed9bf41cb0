// Checkpoint reading, side by side in one run:
// - opening a header of 10,000 and 50,000 tensors (safetensors and native), against nlohmann's
//   callback parser over the same safetensors JSON (what the readers used before Note [Linear JSON
//   parsing]; quadratic, so it runs at 10,000 and 20,000 tensors only: 50,000 take ~30 s);
// - io::load of a 256 MiB native checkpoint (16 tensors) with and without checksums, cold (the
//   file's pages dropped before each iteration, outside the timing) and warm, against a plain
//   memcpy out of the cold mapping (the unverified path before Note [Copying out of a mapping]).
// Knobs: KILN_BENCH_DIR ($TMPDIR or /tmp) for the checkpoint file.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <kiln/kiln.h>

#include "io/checkpoint/checkpoint.h"
#include "io/safetensors/safetensors.h"

namespace {

using namespace kiln;
std::vector<uint8_t> safetensors_with(int tensors) {
  std::string header = "{";
  for (int i = 0; i < tensors; ++i)
    header += std::string(i ? "," : "") + "\"model.layers." + std::to_string(i) +
              ".weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[" + std::to_string(16 * i) + "," +
              std::to_string(16 * i + 16) + "]}";
  header += "}";
  header.resize((header.size() + 7) / 8 * 8, ' ');
  std::vector<uint8_t> out(8 + header.size() + 16 * static_cast<size_t>(tensors), 0);
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

std::string bench_dir() {
  for (const char* var : {"KILN_BENCH_DIR", "TMPDIR"})
    if (const char* v = std::getenv(var); v && *v) return v;
  return "/tmp";
}

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::vector<uint8_t> out;
  const int fd = ::open(path.c_str(), O_RDONLY);
  uint8_t buf[1 << 16];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.insert(out.end(), buf, buf + n);
  ::close(fd);
  return out;
}

void BM_SafetensorsOpen(benchmark::State& state) {
  const auto bytes = safetensors_with(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    const auto r = io::SafetensorsReader::from_memory(bytes.data(), bytes.size(), "bench");
    benchmark::DoNotOptimize(r.records().data());
  }
}
BENCHMARK(BM_SafetensorsOpen)->ArgName("tensors")->Arg(10'000)->Arg(20'000)->Arg(50'000)->Unit(benchmark::kMillisecond);

// The parser the readers used before: a callback parse of the same JSON (duplicate keys and depth
// were checked in the callback; an empty one shows the parser's own cost).
void BM_SafetensorsJsonCallbackParser(benchmark::State& state) {
  const auto bytes = safetensors_with(static_cast<int>(state.range(0)));
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  const char* json = reinterpret_cast<const char*>(bytes.data() + 8);
  for (auto _ : state) {
    const Json j = Json::parse(json, json + n, [](int, Json::parse_event_t, Json&) { return true; });
    benchmark::DoNotOptimize(j.size());
  }
}
BENCHMARK(BM_SafetensorsJsonCallbackParser)->ArgName("tensors")->Arg(10'000)->Arg(20'000)->Iterations(1)
    ->Unit(benchmark::kMillisecond);

void BM_NativeOpen(benchmark::State& state) {
  const std::string path = bench_dir() + "/kiln-bench-headers.kiln";
  State s;
  for (int64_t i = 0; i < state.range(0); ++i)
    s.tensors.insert("model.layers." + std::to_string(i) + ".weight", zeros({2, 2}));
  io::save(path, s, {.fsync = false});
  const auto bytes = file_bytes(path);
  ::unlink(path.c_str());
  for (auto _ : state) {
    const auto r = io::CheckpointReader::from_memory(bytes.data(), bytes.size(), "bench");
    benchmark::DoNotOptimize(r.records().data());
  }
}
BENCHMARK(BM_NativeOpen)->ArgName("tensors")->Arg(50'000)->Unit(benchmark::kMillisecond);

// A 256 MiB checkpoint of 16 f32 tensors, written once per process.
const std::string& big_checkpoint() {
  static const std::string path = [] {
    const std::string p = bench_dir() + "/kiln-bench-load.kiln";
    State s;
    for (int i = 0; i < 16; ++i)
      s.tensors.insert(std::string("w").append(std::to_string(i)), full({int64_t{1} << 22}, 0.5 + i));
    io::save(p, s);
    std::atexit([] { ::unlink((bench_dir() + "/kiln-bench-load.kiln").c_str()); });
    return p;
  }();
  return path;
}

void drop_cache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// range(0): 1 = checksums verified; range(1): 1 = cold.
void BM_Load256MiB(benchmark::State& state) {
  const std::string& path = big_checkpoint();
  const bool verify = state.range(0), cold = state.range(1);
  for (auto _ : state) {
    if (cold) {
      state.PauseTiming();
      drop_cache(path);
      state.ResumeTiming();
    }
    const State s = io::load(path, {.verify = verify});
    benchmark::DoNotOptimize(s.tensors.size());
  }
  state.SetBytesProcessed(state.iterations() * (int64_t{256} << 20));
}
BENCHMARK(BM_Load256MiB)->ArgNames({"verify", "cold"})->Args({1, 1})->Args({0, 1})->Args({1, 0})->Args({0, 0})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// The old unverified path: fresh tensors filled by memcpy straight out of the cold mapping.
void BM_MemcpyFromColdMapping256MiB(benchmark::State& state) {
  const std::string& path = big_checkpoint();
  for (auto _ : state) {
    state.PauseTiming();
    drop_cache(path);
    state.ResumeTiming();
    const auto r = io::CheckpointReader::open(path);
    const auto first = reinterpret_cast<uintptr_t>(r.raw(r.records().front())) & ~uintptr_t{4095};
    const auto last = reinterpret_cast<uintptr_t>(r.raw(r.records().back())) + r.records().back().nbytes;
    ::madvise(reinterpret_cast<void*>(first), last - first, MADV_SEQUENTIAL);  // as the old load did
    ::madvise(reinterpret_cast<void*>(first), last - first, MADV_WILLNEED);
    std::vector<Tensor> out;
    for (const auto& rec : r.records()) {
      out.push_back(make_tensor(rec.shape, rec.dtype, Device::cpu()));
      std::memcpy(out.back().data_ptr(), r.raw(rec), rec.nbytes);
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * (int64_t{256} << 20));
}
BENCHMARK(BM_MemcpyFromColdMapping256MiB)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
