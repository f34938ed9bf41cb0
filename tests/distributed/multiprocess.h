// Multi-process tests: run_ranks re-executes this test binary once per rank (only the current
// test, by --gtest_filter), each child joins a Gloo group of the given size and runs `body`, and
// the parent fails its test naming every rank that failed, crashed or ran past the timeout, with
// that rank's output. Header only, for any test under tests/.
//
//   TEST(Ddp, Averages) {
//     kiln::dist::testing::run_ranks(2, [](kiln::dist::ProcessGroup& pg, int rank) {
//       Tensor t = full({4}, rank + 1.0);
//       pg.all_reduce(t)->wait();
//       EXPECT_EQ(t.data_ptr<float>()[0], 3.0f);
//     });
//   }
//
// How it works, and what a test must respect:
// - The parent serves a TcpStore on a free port of 127.0.0.1 and spawns the children with
//   posix_spawn (no fork of a process whose OpenMP threads are running); KILN_TEST_RANK tells a
//   child its rank, the world size, the port and the test it belongs to.
// - A child runs the test from its start: code before run_ranks runs in every process (keep it
//   cheap; it may compute inputs), and the child exits inside run_ranks (code after it runs only in
//   the parent). So one run_ranks (or run_processes) call per TEST.
// - A child's gtest failures (EXPECT_*, ASSERT_*) and uncaught exceptions fail it; its exit code
//   and output reach the parent. KILN_TEST_VERBOSE=1 prints every rank's output, passing or not.
#pragma once

#include <gtest/gtest.h>
#include <spawn.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "distributed/process_group.h"
#include "distributed/store.h"

extern char** environ;

namespace kiln::dist::testing {

struct RunOptions {
  // The whole run, from spawning to the last exit; a rank still running then is killed.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  // For each child's group (run_ranks) and its store client; a fault test sets seconds.
  ProcessGroupOptions group{.timeout = std::chrono::seconds(20)};
};

// What happened to one child.
struct RankResult {
  int rank = 0;
  int exit_code = -1;     // when it exited
  int signal = 0;         // when a signal ended it (SIGKILL after the timeout, too)
  bool timed_out = false;
  std::string output;     // its stdout and stderr
  bool ok() const { return exit_code == 0 && !timed_out; }
  std::string describe() const {
    std::ostringstream os;
    os << "rank " << rank << " ";
    if (timed_out) os << "ran past the timeout and was killed";
    else if (signal) os << "was killed by signal " << signal << " (" << strsignal(signal) << ")";
    else os << "exited with code " << exit_code;
    return os.str();
  }
};

// What a child of run_processes gets: its place and the parent's store.
struct RankContext {
  int rank;
  int world_size;
  Store& store;     // a client of the parent's TcpStore at 127.0.0.1:store_port
  int store_port;
  const RunOptions& options;
};

using RankBody = std::function<void(ProcessGroup&, int rank)>;
using ProcessBody = std::function<void(RankContext&)>;

namespace detail {

inline std::string current_test_name() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return info ? std::string(info->test_suite_name()) + "." + info->name() : std::string();
}

// This process's part when it is a child of the current test: {rank, world, port}, else nullopt.
struct ChildSpec {
  int rank = -1, world = 0, port = 0;
};
inline bool child_spec(ChildSpec& spec) {
  const char* v = std::getenv("KILN_TEST_RANK");
  if (!v) return false;
  std::istringstream in(v);
  std::string test;
  in >> spec.rank >> spec.world >> spec.port >> test;
  return test == current_test_name();
}

// The child's side: run the body, then leave the process (the parent reads the exit code).
[[noreturn]] inline void run_child(const ChildSpec& spec, const ProcessBody& body, const RunOptions& options) {
  try {
    TcpStore store({.host = "127.0.0.1", .port = spec.port, .is_server = false, .timeout = options.group.timeout});
    RankContext ctx{spec.rank, spec.world, store, spec.port, options};
    body(ctx);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << spec.rank << ": uncaught exception: " << e.what();
  }
  const bool failed = ::testing::Test::HasFailure();
  std::fflush(stdout);
  std::fflush(stderr);
  std::exit(failed ? 1 : 0);  // exit, not _Exit: sanitizers report at exit
}

// posix_spawn of /proc/self/exe for one rank, its output into an unlinked temporary file.
inline pid_t spawn_rank(int rank, int world, int port, int out_fd) {
  // A child must run its test even under sharding, and must not write the parent's reports.
  auto dropped = [](const std::string& var) {
    for (const char* name : {"KILN_TEST_RANK=", "GTEST_SHARD_INDEX=", "GTEST_TOTAL_SHARDS=", "GTEST_OUTPUT=",
                             "XML_OUTPUT_FILE=", "TEST_PREMATURE_EXIT_FILE=", "GTEST_SHARD_STATUS_FILE="})
      if (var.rfind(name, 0) == 0) return true;
    return false;
  };
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e)
    if (!dropped(*e)) env.push_back(*e);
  env.push_back("KILN_TEST_RANK=" + std::to_string(rank) + " " + std::to_string(world) + " " + std::to_string(port) +
                " " + current_test_name());
  if (!std::getenv("OMP_NUM_THREADS")) env.push_back("OMP_NUM_THREADS=1");  // ranks share the cores
  const std::string filter = "--gtest_filter=" + current_test_name();
  std::vector<char*> argv = {const_cast<char*>("/proc/self/exe"), const_cast<char*>(filter.c_str()), nullptr};
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, out_fd, 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error(std::string("run_ranks: posix_spawn failed: ") + std::strerror(rc));
  return pid;
}

inline std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  off_t at = 0;
  for (ssize_t n; (n = pread(fd, buf, sizeof(buf), at)) > 0; at += n) out.append(buf, static_cast<size_t>(n));
  return out;
}

}  // namespace detail

// Runs `body` in world_size child processes, each given the parent's store, and returns what
// happened to each, judging nothing: for tests where a rank is meant to die.
inline std::vector<RankResult> run_processes_results(int world_size, const ProcessBody& body,
                                                     const RunOptions& options = {}) {
  detail::ChildSpec spec;
  if (detail::child_spec(spec)) detail::run_child(spec, body, options);
  TcpStore store({.host = "127.0.0.1", .port = 0, .is_server = true, .timeout = options.group.timeout});
  struct Child {
    pid_t pid = -1;
    int out_fd = -1;
    bool done = false;
  };
  std::vector<Child> children(static_cast<size_t>(world_size));
  std::vector<RankResult> results(static_cast<size_t>(world_size));
  for (int r = 0; r < world_size; ++r) {
    // Each rank's output, in a file unlinked at once (under TMPDIR, as the other tests' files).
    std::string path = (std::filesystem::temp_directory_path() / "kiln_rank_XXXXXX").string();
    Child& c = children[static_cast<size_t>(r)];
    c.out_fd = mkstemp(path.data());
    if (c.out_fd < 0) throw std::runtime_error("run_ranks: mkstemp failed");
    unlink(path.c_str());
    c.pid = detail::spawn_rank(r, world_size, store.port(), c.out_fd);
    results[static_cast<size_t>(r)].rank = r;
  }
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  for (size_t left = children.size(); left > 0;) {
    for (size_t r = 0; r < children.size(); ++r) {
      Child& c = children[r];
      if (c.done) continue;
      int status = 0;
      if (waitpid(c.pid, &status, WNOHANG) != c.pid) continue;
      c.done = true;
      --left;
      if (WIFEXITED(status)) results[r].exit_code = WEXITSTATUS(status);
      if (WIFSIGNALED(status)) results[r].signal = WTERMSIG(status);
    }
    if (left == 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      for (size_t r = 0; r < children.size(); ++r) {
        if (children[r].done) continue;
        kill(children[r].pid, SIGKILL);
        int status = 0;
        waitpid(children[r].pid, &status, 0);
        results[r].timed_out = true;
        results[r].signal = SIGKILL;
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (size_t r = 0; r < children.size(); ++r) {
    results[r].output = detail::read_all(children[r].out_fd);
    close(children[r].out_fd);
  }
  return results;
}

// Fails the current test naming each rank that did not succeed, with its output.
inline void expect_all_ok(const std::vector<RankResult>& results) {
  if (std::getenv("KILN_TEST_VERBOSE"))
    for (const RankResult& r : results) std::printf("%s; its output:\n%s\n", r.describe().c_str(), r.output.c_str());
  for (const RankResult& r : results)
    if (!r.ok()) ADD_FAILURE() << r.describe() << "; its output:\n" << r.output;
}

// Like run_processes_results, and fails the test when any rank fails.
inline void run_processes(int world_size, const ProcessBody& body, const RunOptions& options = {}) {
  expect_all_ok(run_processes_results(world_size, body, options));
}

// Each child joins a Gloo group of world_size ranks (options.group) and runs body(group, rank).
inline std::vector<RankResult> run_ranks_results(int world_size, const RankBody& body, const RunOptions& options = {}) {
  return run_processes_results(world_size, [&](RankContext& ctx) {
    std::shared_ptr<ProcessGroup> group = make_gloo_group(
        std::shared_ptr<Store>(&ctx.store, [](Store*) {}), ctx.rank, ctx.world_size, options.group);
    body(*group, ctx.rank);
  }, options);
}

inline void run_ranks(int world_size, const RankBody& body, const RunOptions& options = {}) {
  expect_all_ok(run_ranks_results(world_size, body, options));
}

}  // namespace kiln::dist::testing
