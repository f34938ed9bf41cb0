// Checkpoint throughput: save and load of a 1 GiB state (16 f32 tensors of 64 MiB) against a plain
// sequential write(2)+fsync / read(2) of the same bytes to the same folder, cold (page cache dropped
// for the file with posix_fadvise) and warm; plus the lazy zero-copy load of one tensor.
// A plain timed program (one-shot timings, best of KILN_BENCH_REPEATS), not a Google Benchmark loop.
// Knobs: KILN_BENCH_CKPT_MIB (1024), KILN_BENCH_DIR ($TMPDIR or /tmp), KILN_BENCH_REPEATS (3).
// The PyPI reference is bench/checkpoint_torch.py (same sizes, same folder, same cache handling).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <kiln/kiln.h>

#include "io/checkpoint/checkpoint.h"

using namespace kiln;

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

double best_seconds(int repeats, const std::function<void()>& before, const std::function<void()>& run) {
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    before();
    const auto t0 = std::chrono::steady_clock::now();
    run();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// Drops the file's pages from the page cache (they are clean after fsync), so the next read is cold.
void drop_cache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void plain_write(const std::string& path, const State& s) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  for (const auto& [name, t] : s.tensors) {
    const char* p = static_cast<const char*>(t.data_ptr());
    for (size_t done = 0; done < t.nbytes();) done += static_cast<size_t>(::write(fd, p + done, t.nbytes() - done));
  }
  ::fsync(fd);
  ::close(fd);
}

size_t plain_read(const std::string& path, size_t total) {
  std::unique_ptr<char[]> buf(new char[total]);  // fresh memory, as a load's tensors are
  const int fd = ::open(path.c_str(), O_RDONLY);
  size_t done = 0;
  for (ssize_t n; done < total && (n = ::read(fd, buf.get() + done, total - done)) > 0;) done += static_cast<size_t>(n);
  ::close(fd);
  return done;
}

void report(const char* what, double seconds, double gib, double baseline) {
  std::printf("  %-44s %8.3f s  %6.2f GiB/s", what, seconds, gib / seconds);
  if (baseline > 0) std::printf("   ratio to plain %.2f", baseline / seconds);
  std::printf("\n");
}

}  // namespace

int main() {
  const int mib = env_int("KILN_BENCH_CKPT_MIB", 1024);
  const int repeats = env_int("KILN_BENCH_REPEATS", 3);
  const char* tmp = std::getenv("KILN_BENCH_DIR");
  if (!tmp || !*tmp) tmp = std::getenv("TMPDIR");
  const std::string dir = tmp && *tmp ? tmp : "/tmp";
  const int n_tensors = 16;
  const int64_t per_tensor = static_cast<int64_t>(mib) * (1 << 20) / n_tensors / 4;
  State state;
  for (int i = 0; i < n_tensors; ++i) state.tensors.insert("layer" + std::to_string(i) + ".weight", full({per_tensor}, 0.5 + i));
  const size_t total = static_cast<size_t>(per_tensor) * 4 * n_tensors;
  const double gib = static_cast<double>(total) / (1 << 30);
  const std::string plain = dir + "/kiln-bench-plain.bin", ckpt = dir + "/kiln-bench.kiln";
  std::printf("checkpoint bench: %d tensors, %.2f GiB in %s (crc32c %s), best of %d\n", n_tensors, gib, dir.c_str(),
              io::crc32c_uses_hardware() ? "sse4.2" : "table", repeats);

  const auto nothing = [] {};
  const double w_plain = best_seconds(repeats, nothing, [&] { plain_write(plain, state); });
  const double w_kiln = best_seconds(repeats, nothing, [&] { io::save(ckpt, state); });
  report("write: plain write+fsync", w_plain, gib, 0);
  report("write: io::save (atomic, fsync)", w_kiln, gib, w_plain);

  const double r_plain = best_seconds(repeats, [&] { drop_cache(plain); }, [&] { plain_read(plain, total); });
  const double r_kiln = best_seconds(repeats, [&] { drop_cache(ckpt); }, [&] { io::load(ckpt); });
  const double r_kiln_nv = best_seconds(repeats, [&] { drop_cache(ckpt); }, [&] { io::load(ckpt, {.verify = false}); });
  report("read cold: plain read", r_plain, gib, 0);
  report("read cold: io::load (checksums verified)", r_kiln, gib, r_plain);
  report("read cold: io::load (verify = false)", r_kiln_nv, gib, r_plain);
  const double rw_plain = best_seconds(repeats, nothing, [&] { plain_read(plain, total); });
  const double rw_kiln = best_seconds(repeats, nothing, [&] { io::load(ckpt); });
  report("read warm: plain read", rw_plain, gib, 0);
  report("read warm: io::load (checksums verified)", rw_kiln, gib, rw_plain);

  drop_cache(ckpt);
  const auto t0 = std::chrono::steady_clock::now();
  const auto reader = io::CheckpointReader::open(ckpt);
  const Tensor one = reader.get("layer7.weight", /*zero_copy=*/true, /*verify=*/false);
  const double lazy = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  lazy: open + zero-copy get of one %.0f MiB tensor: %.3f ms (first element %g)\n",
              static_cast<double>(one.nbytes()) / (1 << 20), lazy * 1e3, static_cast<double>(one.data_ptr<float>()[0]));
  const auto t1 = std::chrono::steady_clock::now();
  const Tensor verified = reader.get("layer8.weight", /*zero_copy=*/true, /*verify=*/true);
  std::printf("  lazy: zero-copy get with checksum (reads its %.0f MiB, cold): %.3f ms\n",
              static_cast<double>(verified.nbytes()) / (1 << 20),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count() * 1e3);
  ::unlink(plain.c_str());
  ::unlink(ckpt.c_str());
  return 0;
}
