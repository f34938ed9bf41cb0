// launch(), kiln-run and PeerProcesses (distributed/launcher.h): the ranks see their env://
// variables and thread count, their output arrives prefixed, a failing rank stops the others and
// is named, a restart runs with KILN_RESTART_COUNT=1, the user's SIGTERM reaches the ranks, and
// PeerProcesses' copies run as ranks 1..N-1. The ranks are this test binary again, in a probe
// mode chosen by KILN_LAUNCH_PROBE that runs before GoogleTest's main.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include "distributed/cluster_environment.h"
#include "distributed/launcher.h"
#include "distributed/process_group.h"
#include "distributed/store.h"
#include "tensor/parallel.h"
#include "testing.h"

using namespace kiln;
using namespace kiln::dist;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}
int env_int(const char* name) { return std::atoi(env_or(name, "-1").c_str()); }

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

volatile sig_atomic_t g_got_term = 0;

// A barrier through files, so that a rank fails only once the others have started (and printed).
void say_ready(int rank) { std::ofstream(env_or("KILN_PROBE_DIR", ".") + "/ready" + std::to_string(rank)) << ""; }
void wait_for_the_others(int rank) {
  const auto start = Clock::now();
  for (int other = 0; other < env_int("WORLD_SIZE"); ++other)
    while (other != rank && !fs::exists(env_or("KILN_PROBE_DIR", ".") + "/ready" + std::to_string(other)) &&
           seconds_since(start) < 10)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

// What a rank does, by KILN_LAUNCH_PROBE; its exit status.
int probe(const std::string& mode) {
  const int rank = env_int("RANK"), attempt = env_int("KILN_RESTART_COUNT");
  if (mode == "env") {  // where detection puts this rank, and its threads
    const auto e = detect_cluster_environment();
    std::printf("%s rank=%d/%d local=%d/%d node=%d at %s:%d omp=%s threads=%d agent store=%s\n", e->source.c_str(),
                e->rank, e->world_size, e->local_rank, e->local_world_size, e->node_rank, e->master_addr.c_str(),
                e->master_port, env_or("OMP_NUM_THREADS", "unset").c_str(), get_num_threads(),
                env_or("KILN_AGENT_STORE", "unset").c_str());
    std::fprintf(stderr, "to stderr\nno newline");
    return 0;
  }
  if (mode == "args") {  // this process's arguments after the program
    std::ifstream in("/proc/self/cmdline", std::ios::binary);
    std::string arg;
    std::getline(in, arg, '\0');
    while (std::getline(in, arg, '\0')) std::printf("<%s>", arg.c_str());
    std::printf("\n");
    return 0;
  }
  // KILN_PROBE_FAIL_RANK (1 unless set) fails once the others wait; KILN_PROBE_DEAF_RANK ignores SIGTERM.
  const int fail_rank = std::getenv("KILN_PROBE_FAIL_RANK") ? env_int("KILN_PROBE_FAIL_RANK") : 1;
  if (mode == "fail_exit" || mode == "fail_kill") {
    std::printf("rank %d started\n", rank);
    std::fflush(stdout);
    if (rank == fail_rank) {
      wait_for_the_others(rank);
      std::fprintf(stderr, "rank %d fails now\n", rank);
      std::fflush(stderr);
      if (mode == "fail_kill") raise(SIGKILL);
      return 3;
    }
    if (rank == env_int("KILN_PROBE_DEAF_RANK")) signal(SIGTERM, SIG_IGN);
    say_ready(rank);
    while (true) pause();
  }
  if (mode == "restart") {  // the first attempt fails; the others wait to be stopped
    std::printf("attempt %d\n", attempt);
    std::fflush(stdout);
    if (attempt == 0 && rank == fail_rank) return wait_for_the_others(rank), 5;
    if (attempt == 0) {
      say_ready(rank);
      while (true) pause();
    }
    return 0;
  }
  if (mode == "all_reduce" || mode == "all_reduce_restart") {  // the job's group, through the launcher's store
    const ClusterEnvironment e = detect_cluster_environment().value();
    const auto group = init_process_group(e, "gloo", {.timeout = std::chrono::seconds(30)});
    Tensor t = tensor({e.rank + 1.0, 10.0 * (e.rank + 1)});
    group->all_reduce(t)->wait();
    std::printf("all_reduce over %d ranks: %g %g\n", group->size(), t.data_ptr<float>()[0], t.data_ptr<float>()[1]);
    std::fflush(stdout);
    // A restart meets again in the store that the launcher kept: under new keys, with no stale addresses.
    return mode == "all_reduce_restart" && attempt == 0 && rank == fail_rank ? 3 : 0;
  }
  if (mode == "wait_term") {  // says ready, then waits for SIGTERM and exits cleanly
    signal(SIGTERM, [](int) { g_got_term = 1; });
    std::printf("ready\n");
    std::fflush(stdout);
    while (!g_got_term) pause();
    std::printf("got SIGTERM\n");
    return 0;
  }
  if (mode == "peer" || mode == "peer_hang") {  // a PeerProcesses copy notes its place in a file
    std::ofstream(env_or("KILN_PROBE_DIR", ".") + "/rank" + std::to_string(rank))
        << env_or("RANK", "") << " " << env_or("WORLD_SIZE", "") << " " << env_or("LOCAL_RANK", "") << " "
        << env_or("LOCAL_WORLD_SIZE", "") << " " << env_or("MASTER_ADDR", "") << " " << env_or("MASTER_PORT", "")
        << " " << get_num_threads();
    if (mode == "peer_hang")
      while (true) pause();
    return rank == env_int("KILN_PROBE_FAIL_RANK") ? 3 : 0;
  }
  std::fprintf(stderr, "unknown probe mode %s\n", mode.c_str());
  return 99;
}

[[maybe_unused]] const bool kIsProbe = [] {
  const char* mode = std::getenv("KILN_LAUNCH_PROBE");
  if (!mode) return false;
  const int code = probe(mode);
  std::fflush(stdout);
  std::fflush(stderr);
  _exit(code);
}();

std::string self_path() { return fs::read_symlink("/proc/self/exe").string(); }

// Sets variables for a test and puts back the previous environment (and thread count) after.
class ScopedEnv {
 public:
  explicit ScopedEnv(const std::map<std::string, std::string>& set) : threads_(get_num_threads()) {
    for (const char* name : {"KILN_LAUNCH_PROBE", "KILN_PROBE_DIR", "KILN_PROBE_FAIL_RANK", "KILN_PROBE_DEAF_RANK",
                             "RANK", "WORLD_SIZE",
                             "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
                             "OMP_NUM_THREADS"}) {
      if (const char* v = std::getenv(name)) saved_[name] = v;
      else saved_[name] = std::nullopt;
      unsetenv(name);
    }
    for (const auto& [name, value] : set) {
      EXPECT_TRUE(saved_.count(name)) << name << " would not be restored";
      setenv(name.c_str(), value.c_str(), 1);
    }
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : saved_)
      value ? setenv(name.c_str(), value->c_str(), 1) : unsetenv(name.c_str());
    set_num_threads(threads_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::map<std::string, std::optional<std::string>> saved_;
  int threads_;
};

struct Output {
  std::string out, err;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// What `fn` writes to this process's stdout and stderr (launch() relays there).
Output capture(const std::function<void()>& fn) {
  const fs::path dir = fs::temp_directory_path() / ("kiln_launch_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::fflush(stdout);
  std::fflush(stderr);
  const int saved[2] = {dup(1), dup(2)};
  for (int fd : {1, 2}) {
    const int file = open((dir / std::to_string(fd)).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(file, fd);
    close(file);
  }
  try {
    fn();
  } catch (...) {
    dup2(saved[0], 1), dup2(saved[1], 2), close(saved[0]), close(saved[1]);
    throw;
  }
  dup2(saved[0], 1), dup2(saved[1], 2), close(saved[0]), close(saved[1]);
  Output o{read_file(dir / "1"), read_file(dir / "2")};
  fs::remove_all(dir);
  return o;
}

LaunchResult launch_probe(const std::string& mode, const LaunchOptions& options, Output& output,
                          std::map<std::string, std::string> env_vars = {}) {
  const fs::path dir = fs::temp_directory_path() / ("kiln_probe_" + std::to_string(getpid()));
  fs::create_directories(dir);
  env_vars["KILN_LAUNCH_PROBE"] = mode;
  env_vars["KILN_PROBE_DIR"] = dir.string();
  ScopedEnv env(env_vars);
  LaunchResult result;
  output = capture([&] { result = launch(options, {self_path(), "--gtest_filter=none"}); });
  fs::remove_all(dir);
  return result;
}

size_t count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

int free_port() {
  const auto probe = make_tcp_store({.host = "127.0.0.1", .port = 0, .is_server = true});
  return probe->port();
}

int cores() {
  cpu_set_t set;
  sched_getaffinity(0, sizeof set, &set);
  return CPU_COUNT(&set);
}

}  // namespace

TEST(Launch, RanksSeeTheirPlaceAndThreadsWithOutputPrefixed) {
  // Node 1 of 2: node 0's launcher, which serves the job's store, is played by this process.
  const auto node0 = make_tcp_store({.host = "127.0.0.1", .port = 0, .is_server = true});
  Output o;
  const LaunchResult r = launch_probe("env",
                                      {.nproc_per_node = 3, .nnodes = 2, .node_rank = 1, .master_addr = "127.0.0.1",
                                       .master_port = node0->port(), .threads_per_rank = 2},
                                      o);
  EXPECT_EQ(r.exit_code, 0) << r.reason;
  EXPECT_EQ(r.restarts, 0);
  // Node 1 of 2 with 3 ranks each holds global ranks 3, 4 and 5.
  for (int local = 0; local < 3; ++local) {
    const int global = 3 + local;
    const std::string line = "[rank " + std::to_string(global) + "] env rank=" + std::to_string(global) +
                             "/6 local=" + std::to_string(local) + "/3 node=1 at 127.0.0.1:" +
                             std::to_string(node0->port()) + " omp=2 threads=2 agent store=1\n";
    EXPECT_EQ(count(o.out, line), 1u) << o.out;
    // stderr stays stderr, and a last line without its newline is relayed with one.
    const std::string prefix = "[rank " + std::to_string(global) + "] ";
    EXPECT_EQ(count(o.err, prefix + "to stderr\n"), 1u) << o.err;
    EXPECT_EQ(count(o.err, prefix + "no newline\n"), 1u) << o.err;
  }
  EXPECT_EQ(count(o.out, "\n"), 3u) << o.out;

  // Without --threads-per-rank each rank gets its share of this process's cores, at least one;
  // with master_port 0 node 0's launcher serves the store on a free port and tells the ranks which.
  launch_probe("env", {.nproc_per_node = 2, .master_port = 0, .prefix_output = false}, o);
  const std::string threads = std::to_string(std::max(1, cores() / 2));
  EXPECT_EQ(count(o.out, " omp=" + threads + " threads=" + threads + " agent store=1\n"), 2u) << o.out;
  EXPECT_EQ(count(o.out, "env rank=1/2 local=1/2 node=0 at 127.0.0.1:"), 1u) << o.out;
  EXPECT_EQ(count(o.out, "127.0.0.1:0 "), 0u) << o.out;
  EXPECT_EQ(count(o.out, "[rank"), 0u) << o.out;
}

TEST(Launch, AFailingRankStopsTheOthersAndIsNamed) {
  for (const std::string mode : {"fail_exit", "fail_kill"}) {
    SCOPED_TRACE(mode);
    Output o;
    const auto start = Clock::now();
    // Ranks 0 and 2 would sleep forever; rank 2 ignores SIGTERM, so it takes the SIGKILL after the grace.
    const LaunchResult r =
        launch_probe(mode, {.nproc_per_node = 3, .master_port = 0, .grace = std::chrono::milliseconds(300)}, o,
                     {{"KILN_PROBE_DEAF_RANK", "2"}});
    const double took = seconds_since(start);
    EXPECT_GE(took, 0.3);  // rank 2 lasted until the SIGKILL
    EXPECT_LT(took, 5.0);
    EXPECT_EQ(r.failed_rank, 1);
    EXPECT_EQ(r.restarts, 0);
    EXPECT_EQ(r.exit_code, mode == "fail_exit" ? 3 : 128 + SIGKILL);
    EXPECT_NE(r.reason.find("rank 1 (pid "), std::string::npos) << r.reason;
    const std::string how = mode == "fail_exit" ? "exited with code 3" : "killed by signal 9 (SIGKILL)";
    EXPECT_NE(r.reason.find(") failed: " + how), std::string::npos) << r.reason;
    EXPECT_NE(r.reason.find("its last output:\n  rank 1 started\n  rank 1 fails now"), std::string::npos) << r.reason;
    EXPECT_EQ(count(o.out, "] rank "), 3u) << o.out;
  }
}

TEST(Launch, RestartsAfterAFailureWithTheRestartCount) {
  Output o;
  const LaunchResult r = launch_probe("restart", {.nproc_per_node = 2, .master_port = 0, .max_restarts = 1}, o);
  EXPECT_EQ(r.exit_code, 0) << r.reason;
  EXPECT_EQ(r.failed_rank, -1);
  EXPECT_EQ(r.restarts, 1);
  for (const char* line :
       {"[rank 0] attempt 0\n", "[rank 1] attempt 0\n", "[rank 0] attempt 1\n", "[rank 1] attempt 1\n"})
    EXPECT_EQ(count(o.out, line), 1u) << o.out;
  EXPECT_NE(o.err.find("kiln-run: rank 1 (pid "), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("exited with code 5"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("restarting the local ranks (restart 1 of 1)"), std::string::npos) << o.err;

  // Without restarts left, the same failure ends the launch.
  const LaunchResult once = launch_probe("restart", {.nproc_per_node = 2, .master_port = 0}, o);
  EXPECT_EQ(once.exit_code, 5);
  EXPECT_EQ(once.failed_rank, 1);
}

TEST(Launch, RanksMeetInTheLaunchersStoreAcrossARestart) {
  Output o;
  const LaunchResult r =
      launch_probe("all_reduce_restart", {.nproc_per_node = 3, .master_port = 0, .max_restarts = 1}, o);
  EXPECT_EQ(r.exit_code, 0) << r.reason << o.err;
  EXPECT_EQ(r.restarts, 1);
  // Each attempt's 3 ranks sum [r + 1, 10 (r + 1)] over r = 0, 1, 2: [6, 60].
  for (int rank = 0; rank < 3; ++rank)
    EXPECT_EQ(count(o.out, "[rank " + std::to_string(rank) + "] all_reduce over 3 ranks: 6 60\n"), 2u) << o.out;
}

TEST(Launch, RejectsBadOptions) {
  using kiln::testing::expect_error;
  expect_error([] { launch({.nnodes = 2, .node_rank = 2}, {"true"}); }, {"node_rank 2 is outside [0, nnodes=2)"});
  expect_error([] { launch({.nproc_per_node = 0}, {"true"}); }, {"nproc_per_node must be at least 1, got 0"});
  expect_error([] { launch({.nnodes = 2, .master_port = 0}, {"true"}); },
               {"master_port 0 is not a TCP port (1 to 65535)"});
  expect_error([] { launch({}, {"kiln-no-such-program"}); }, {"program 'kiln-no-such-program' not found in PATH"});
}

#ifdef KILN_RUN_PATH
namespace {

// kiln-run with `args`, its stdout and stderr in files 1 and 2 under `dir`; its pid. The probes'
// files go to `probe_dir` (`dir` unless given), which the launchers of one job share.
pid_t start_kiln_run(const std::vector<std::string>& args, const std::string& mode, const fs::path& dir,
                     const std::map<std::string, std::string>& env = {}) {
  fs::create_directories(dir);
  std::vector<std::string> argv = {KILN_RUN_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t pid = fork();
  if (pid == 0) {
    setenv("KILN_LAUNCH_PROBE", mode.c_str(), 1);
    setenv("KILN_PROBE_DIR", dir.c_str(), 1);
    for (const auto& [name, value] : env) setenv(name.c_str(), value.c_str(), 1);
    for (int fd : {1, 2}) {
      const int file = open((dir / std::to_string(fd)).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(file, fd);
    }
    std::vector<char*> ptrs;
    for (std::string& a : argv) ptrs.push_back(a.data());
    ptrs.push_back(nullptr);
    execv(ptrs[0], ptrs.data());
    _exit(127);
  }
  return pid;
}

int wait_exit_code(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST(KilnRun, ExitsWithTheFailingRanksCodeAndNamesIt) {
  const fs::path dir = fs::temp_directory_path() / ("kiln_run_" + std::to_string(getpid()));
  const pid_t pid = start_kiln_run({"--nproc-per-node", "2", "--master-port", "0", self_path()}, "fail_kill", dir);
  EXPECT_EQ(wait_exit_code(pid), 128 + SIGKILL);
  const std::string err = read_file(dir / "2");
  EXPECT_NE(err.find("kiln-run: rank 1 (pid "), std::string::npos) << err;
  EXPECT_NE(err.find(") failed: killed by signal 9 (SIGKILL); its last output:"), std::string::npos) << err;
  fs::remove_all(dir);
}

TEST(KilnRun, PassesTheProgramsOwnArgumentsThrough) {
  const fs::path dir = fs::temp_directory_path() / ("kiln_run_" + std::to_string(getpid()));
  const pid_t pid = start_kiln_run(
      {"--nproc-per-node", "1", "--master-port", "0", self_path(), "--help", "-x", "--", "y"}, "args", dir);
  EXPECT_EQ(wait_exit_code(pid), 0);
  EXPECT_EQ(read_file(dir / "1"), "[rank 0] <--help><-x><--><y>\n");
  const pid_t dashes =
      start_kiln_run({"--nproc-per-node", "1", "--master-port", "0", "--", self_path(), "--nnodes"}, "args", dir);
  EXPECT_EQ(wait_exit_code(dashes), 0);
  EXPECT_EQ(read_file(dir / "1"), "[rank 0] <--nnodes>\n");
  fs::remove_all(dir);
}

// Two launchers of a 2-node job on this machine, 2 ranks each: rank 3 on node 1 fails, and node 0's
// ranks, which would wait forever, are stopped through the failure note in the store; with a
// restart left, both nodes restart together.
TEST(KilnRun, NodesStopAndRestartTogether) {
  const fs::path dir = fs::temp_directory_path() / ("kiln_nodes_" + std::to_string(getpid()));
  const std::string port = std::to_string(free_port());
  auto node = [&](int rank, const std::string& mode, const std::string& restarts) {
    return start_kiln_run({"--nnodes", "2", "--node-rank", std::to_string(rank), "--nproc-per-node", "2",
                           "--master-port", port, "--max-restarts", restarts, self_path()},
                          mode, dir / std::to_string(rank),
                          {{"KILN_PROBE_DIR", dir.string()}, {"KILN_PROBE_FAIL_RANK", "3"}});
  };
  fs::create_directories(dir);
  const pid_t node0 = node(0, "fail_exit", "0"), node1 = node(1, "fail_exit", "0");
  EXPECT_EQ(wait_exit_code(node1), 3);
  EXPECT_EQ(wait_exit_code(node0), 3);
  const std::string err0 = read_file(dir / "0" / "2");
  EXPECT_NE(err0.find("kiln-run: rank 3 (pid "), std::string::npos) << err0;
  EXPECT_NE(err0.find(", node 1) failed: exited with code 3; this node's ranks were stopped for it"), std::string::npos)
      << err0;
  fs::remove_all(dir);

  fs::create_directories(dir);
  const pid_t again0 = node(0, "restart", "1"), again1 = node(1, "restart", "1");
  EXPECT_EQ(wait_exit_code(again0), 0) << read_file(dir / "0" / "2");
  EXPECT_EQ(wait_exit_code(again1), 0) << read_file(dir / "1" / "2");
  for (int n = 0; n < 2; ++n) {
    const std::string out = read_file(dir / std::to_string(n) / "1");
    for (int local = 0; local < 2; ++local)
      for (int attempt = 0; attempt < 2; ++attempt)
        EXPECT_EQ(count(out, "[rank " + std::to_string(2 * n + local) + "] attempt " + std::to_string(attempt) + "\n"),
                  1u) << out;
  }
  fs::remove_all(dir);
}

TEST(KilnRun, PassesSigtermToTheRanks) {
  const fs::path dir = fs::temp_directory_path() / ("kiln_run_" + std::to_string(getpid()));
  const pid_t pid = start_kiln_run({"--nproc-per-node", "2", "--master-port", "0", self_path()}, "wait_term", dir);
  const auto start = Clock::now();
  while (count(read_file(dir / "1"), "ready") < 2 && seconds_since(start) < 10)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  kill(pid, SIGTERM);
  EXPECT_EQ(wait_exit_code(pid), 0);  // the ranks handled it and exited cleanly
  const std::string out = read_file(dir / "1");
  EXPECT_EQ(count(out, "[rank 0] got SIGTERM\n") + count(out, "[rank 1] got SIGTERM\n"), 2u) << out;
  fs::remove_all(dir);
}
#endif

TEST(PeerProcesses, CopiesRunAsRanksOneToN) {
  const fs::path dir = fs::temp_directory_path() / ("kiln_peers_" + std::to_string(getpid()));
  fs::create_directories(dir);
  ScopedEnv env({{"KILN_LAUNCH_PROBE", "peer"}, {"KILN_PROBE_DIR", dir.string()}});
  const int threads = std::max(1, cores() / 3);
  int port = 0;
  {
    PeerProcesses peers(3);
    const ClusterEnvironment& e = peers.environment();
    EXPECT_EQ(e.rank, 0);
    EXPECT_EQ(e.world_size, 3);
    EXPECT_EQ(e.local_world_size, 3);
    port = e.master_port;
    EXPECT_GT(port, 0);
    // This process is rank 0 for the code that follows, with its share of the cores.
    const auto detected = detect_cluster_environment();
    ASSERT_TRUE(detected.has_value());
    EXPECT_EQ(detected->rank, 0);
    EXPECT_EQ(detected->world_size, 3);
    EXPECT_EQ(detected->master_port, port);
    EXPECT_EQ(env_or("OMP_NUM_THREADS", ""), std::to_string(threads));
    EXPECT_EQ(get_num_threads(), threads);
    peers.wait();
  }
  for (int r = 1; r < 3; ++r)
    EXPECT_EQ(read_file(dir / ("rank" + std::to_string(r))),
              std::to_string(r) + " 3 " + std::to_string(r) + " 3 127.0.0.1 " + std::to_string(port) + " " +
                  std::to_string(threads));
  EXPECT_FALSE(fs::exists(dir / "rank0"));
  fs::remove_all(dir);
}

TEST(PeerProcesses, WaitNamesAFailingCopyAndTheDestructorStopsHangingOnes) {
  const fs::path dir = fs::temp_directory_path() / ("kiln_peers_" + std::to_string(getpid()));
  fs::create_directories(dir);
  {
    ScopedEnv env({{"KILN_LAUNCH_PROBE", "peer"}, {"KILN_PROBE_DIR", dir.string()}, {"KILN_PROBE_FAIL_RANK", "2"}});
    PeerProcesses peers(3);
    kiln::testing::expect_error([&] { peers.wait(); }, {"PeerProcesses: rank 2 (pid ", ") exited with code 3"});
  }
  {
    ScopedEnv env({{"KILN_LAUNCH_PROBE", "peer_hang"}, {"KILN_PROBE_DIR", dir.string()}});
    const auto start = Clock::now();
    { PeerProcesses peers(2, std::chrono::milliseconds(200)); }
    EXPECT_LT(seconds_since(start), 3.0);  // killed after the grace rather than waited for
    EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1);  // and reaped: no child is left
  }
  {  // A rank never starts copies of its own.
    ScopedEnv env(std::map<std::string, std::string>{{"RANK", "1"}});
    kiln::testing::expect_error([] { PeerProcesses peers(2); }, {"already RANK=1"});
  }
  fs::remove_all(dir);
}
