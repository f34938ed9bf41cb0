// Gloo all-reduce (f32 sum) between 2 processes on loopback, 1 KiB .. 256 MiB, against a plain TCP
// exchange of the same bytes in the same run: each rank sends N bytes and receives N bytes, which
// is what a 2-rank ring all-reduce must move, so the ratio is Gloo's efficiency over the wire's.
// Bus bandwidth as nccl-tests defines it: N / time x 2(n-1)/n, which is N / time at n = 2. Also the
// cost of the agreement check (Note [Collective agreement]): the group with check_agreement off;
// and Kiln's layer itself (a queue, a worker thread, a future): gloo::allreduce called directly on
// this thread, with the same reduction, over a context of its own.
// Not a Google Benchmark: two processes must run the same iterations, so this main spawns rank 1
// (itself again, KILN_BENCH_RANK set) and both follow one fixed schedule. Accepts and ignores
// bench/run.sh's --benchmark_* flags. Knobs: KILN_BENCH_MAX_MIB (256), KILN_BENCH_BUDGET_MIB
// (bytes moved per size and variant, 256).
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <gloo/allreduce.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <kiln/kiln.h>

#include "distributed/process_group.h"
#include "distributed/store.h"

extern char** environ;

namespace {

using namespace kiln;
using namespace kiln::dist;
using Clock = std::chrono::steady_clock;

size_t env_size(const char* name, size_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? static_cast<size_t>(std::atoll(v)) : fallback;
}

// Rank 0 listens, rank 1 connects; the port travels through the store.
int tcp_pair(Store& store, int rank) {
  const int one = 1;
  if (rank == 0) {
    const int listener = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    listen(listener, 1);
    socklen_t len = sizeof(a);
    getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
    const std::string port = std::to_string(ntohs(a.sin_port));
    store.set("tcp_port", Bytes(port.begin(), port.end()));
    const int fd = accept(listener, nullptr, nullptr);
    close(listener);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
  }
  const Bytes port = store.get("tcp_port");
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(std::stoi(std::string(port.begin(), port.end()))));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) std::abort();
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

// Sends `out` while receiving as many bytes into `in`: one poll loop, both directions at once.
void exchange(int fd, const char* out, char* in, size_t n) {
  size_t sent = 0, got = 0;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  while (sent < n || got < n) {
    pollfd p{fd, static_cast<short>((sent < n ? POLLOUT : 0) | (got < n ? POLLIN : 0)), 0};
    poll(&p, 1, -1);
    if (sent < n && (p.revents & POLLOUT)) {
      const ssize_t k = send(fd, out + sent, n - sent, MSG_NOSIGNAL);
      if (k > 0) sent += static_cast<size_t>(k);
    }
    if (got < n && (p.revents & POLLIN)) {
      const ssize_t k = recv(fd, in + got, n - got, 0);
      if (k > 0) got += static_cast<size_t>(k);
      if (k == 0) std::abort();
    }
  }
}

// Gloo's rendezvous over Kiln's store, for the direct context.
class RawStore final : public gloo::rendezvous::Store {
 public:
  explicit RawStore(kiln::dist::Store& s) : s_(s) {}
  void set(const std::string& k, const std::vector<char>& v) override { s_.set("raw/" + k, v); }
  std::vector<char> get(const std::string& k) override { return s_.get("raw/" + k); }
  void wait(const std::vector<std::string>& keys) override {
    std::vector<std::string> prefixed;
    for (const auto& k : keys) prefixed.push_back("raw/" + k);
    s_.wait(prefixed);
  }

 private:
  kiln::dist::Store& s_;
};

void sum_f32(void* out, const void* a, const void* b, size_t n) {
  for (size_t i = 0; i < n; ++i)
    static_cast<float*>(out)[i] = static_cast<const float*>(a)[i] + static_cast<const float*>(b)[i];
}

double seconds(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int run(int rank, int port) {
  auto base = std::shared_ptr<Store>(
      make_tcp_store({.host = "127.0.0.1", .port = port, .is_server = false, .timeout = std::chrono::seconds(60)}));
  const ProcessGroupOptions checked{.timeout = std::chrono::seconds(60)};
  ProcessGroupOptions unchecked = checked;
  unchecked.check_agreement = false;
  auto pg = make_gloo_group(make_prefix_store("checked", base), rank, 2, checked);
  auto raw = make_gloo_group(make_prefix_store("unchecked", base), rank, 2, unchecked);
  const int fd = tcp_pair(*base, rank);
  gloo::transport::tcp::attr attr;
  attr.hostname = "127.0.0.1";
  auto device = gloo::transport::tcp::CreateDevice(attr);
  auto context = std::make_shared<gloo::rendezvous::Context>(rank, 2);
  RawStore raw_store(*base);
  context->connectFullMesh(raw_store, device);
  uint32_t raw_tag = 0;
  auto direct = [&](Tensor& t) {
    gloo::AllreduceOptions o(context);
    o.setOutput(t.data_ptr<float>(), static_cast<size_t>(t.numel()));
    o.setReduceFunction(sum_f32);
    o.setTag(raw_tag++);
    gloo::allreduce(o);
  };

  const size_t max_bytes = env_size("KILN_BENCH_MAX_MIB", 256) << 20;
  const size_t budget = env_size("KILN_BENCH_BUDGET_MIB", 256) << 20;
  if (rank == 0) {
    std::printf("Gloo all-reduce (f32 sum, 2 processes, loopback) vs a plain TCP exchange of the same bytes\n");
    std::printf("us = mean time per call; GB/s = bus bandwidth = bytes / time (2 ranks); vs TCP = kiln GB/s / TCP GB/s\n");
    std::printf("kiln: make_gloo_group's all_reduce; nocheck: check_agreement off; direct: gloo::allreduce on this thread\n");
    std::printf("%10s %5s | %9s %9s %9s %9s | %8s %8s | %7s\n", "bytes", "iters", "kiln us", "nocheck", "direct",
                "TCP us", "kiln GB/s", "TCP GB/s", "vs TCP");
  }
  for (size_t bytes = 1024; bytes <= max_bytes; bytes *= 4) {
    const int64_t n = static_cast<int64_t>(bytes / 4);
    Tensor x = full({n}, 1.0f);
    std::vector<char> out(bytes, 1), in(bytes);
    const int iters = static_cast<int>(std::clamp<size_t>(budget / bytes, 3, 2000));
    // One warm-up of each, then the four timed side by side.
    pg->all_reduce(x)->wait();
    raw->all_reduce(x)->wait();
    direct(x);
    exchange(fd, out.data(), in.data(), bytes);
    pg->barrier()->wait();
    auto t = Clock::now();
    for (int i = 0; i < iters; ++i) pg->all_reduce(x)->wait();
    const double gloo = seconds(t) / iters;
    pg->barrier()->wait();
    t = Clock::now();
    for (int i = 0; i < iters; ++i) raw->all_reduce(x)->wait();
    const double nocheck = seconds(t) / iters;
    pg->barrier()->wait();
    t = Clock::now();
    for (int i = 0; i < iters; ++i) direct(x);
    const double gloo_direct = seconds(t) / iters;
    pg->barrier()->wait();
    t = Clock::now();
    for (int i = 0; i < iters; ++i) exchange(fd, out.data(), in.data(), bytes);
    const double tcp = seconds(t) / iters;
    if (rank == 0)
      std::printf("%10zu %5d | %9.1f %9.1f %9.1f %9.1f | %8.3f %8.3f | %7.2f\n", bytes, iters, gloo * 1e6, nocheck * 1e6,
                  gloo_direct * 1e6, tcp * 1e6, bytes / gloo / 1e9, bytes / tcp / 1e9, tcp / gloo);
  }
  close(fd);
  pg->barrier()->wait();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  (void)argc;
  (void)argv;
  if (const char* spec = std::getenv("KILN_BENCH_RANK")) return run(1, std::atoi(spec));
  auto server = make_tcp_store({.host = "127.0.0.1", .port = 0, .is_server = true, .timeout = std::chrono::seconds(60)});
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  env.push_back("KILN_BENCH_RANK=" + std::to_string(server->port()));
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  char* child_argv[] = {const_cast<char*>("/proc/self/exe"), nullptr};
  pid_t pid = -1;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, child_argv, envp.data()) != 0) return 1;
  const int rc = run(0, server->port());
  int status = 0;
  waitpid(pid, &status, 0);
  return rc != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}
