// launch() and PeerProcesses (distributed/launcher.h): fork and exec of a node's ranks with the
// env:// variables, and for launch() the supervision: one poll loop that relays each rank's output
// line by line, reaps the ranks, stops the others after a failure and restarts the set.
#include "distributed/launcher.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <thread>

#include "distributed/store.h"
#include "tensor/error.h"
#include "tensor/parallel.h"

extern char** environ;

namespace kiln::dist {
namespace {

using Clock = std::chrono::steady_clock;
constexpr Clock::time_point kNever = Clock::time_point::max();

constexpr size_t kTailLines = 5;          // a failing rank's last lines, in LaunchResult::reason
constexpr size_t kMaxPartialLine = 1 << 16;  // a longer line is relayed in pieces

// The cores this process may run on (taskset, cgroup cpusets), which the ranks share.
int available_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "an unknown signal";
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" + signal_name(WTERMSIG(status)) + ")";
  return "stopped with wait status " + std::to_string(status);
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

bool failed(int status) { return !WIFEXITED(status) || WEXITSTATUS(status) != 0; }

// This process's environment with `overrides` replacing or adding variables, as execve takes it.
class Environment {
 public:
  explicit Environment(const std::vector<std::pair<std::string, std::string>>& overrides) {
    for (char** e = environ; *e; ++e) {
      const std::string entry = *e;
      const std::string name = entry.substr(0, entry.find('='));
      if (std::none_of(overrides.begin(), overrides.end(), [&](const auto& o) { return o.first == name; }))
        entries_.push_back(entry);
    }
    for (const auto& [name, value] : overrides) entries_.push_back(name + "=" + value);
  }
  std::vector<char*> pointers() {
    std::vector<char*> p;
    for (std::string& e : entries_) p.push_back(e.data());
    p.push_back(nullptr);
    return p;
  }

 private:
  std::vector<std::string> entries_;
};

std::vector<std::pair<std::string, std::string>> rank_variables(const ClusterEnvironment& e, int threads) {
  return {{"RANK", std::to_string(e.rank)},
          {"WORLD_SIZE", std::to_string(e.world_size)},
          {"LOCAL_RANK", std::to_string(e.local_rank)},
          {"LOCAL_WORLD_SIZE", std::to_string(e.local_world_size)},
          {"GROUP_RANK", std::to_string(e.node_rank)},
          {"MASTER_ADDR", e.master_addr},
          {"MASTER_PORT", std::to_string(e.master_port)},
          {"OMP_NUM_THREADS", std::to_string(threads)}};
}

// `program` as execve needs it: a path as given, else the first executable file of that name in PATH.
std::string find_program(const std::string& program) {
  KILN_CHECK(!program.empty(), "launch: no program to run");
  if (program.find('/') != std::string::npos) {
    KILN_CHECK(access(program.c_str(), X_OK) == 0, "launch: cannot execute '", program, "': ", std::strerror(errno));
    return program;
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  for (size_t begin = 0; begin <= dirs.size();) {
    const size_t end = std::min(dirs.find(':', begin), dirs.size());
    const std::string dir = end > begin ? dirs.substr(begin, end - begin) : ".";
    const std::string candidate = dir + "/" + program;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    begin = end + 1;
  }
  KILN_CHECK(false, "launch: program '", program, "' not found in PATH (", dirs, ")");
  return {};
}

struct SpawnIo {
  int in = -1, out = -1, err = -1;  // descriptors for the child's 0, 1, 2; -1 inherits
};

// Note [Ranks in their own process groups]
// launch() puts each rank in a process group of its own, so that a signal to the group reaches the
// rank's own children too (a DataLoader's workers), and so that Ctrl-C at a terminal reaches the
// launcher alone, which passes it on once: a rank in the terminal's group would get it twice, and
// a Trainer takes a second SIGINT as "stop now". A background group may not read the terminal, so
// the ranks' stdin is /dev/null. PeerProcesses keeps its copies in this process's group, as the
// program itself is what the user started (Lightning's subprocess launcher does the same).
//
// Between fork and exec the child calls only async-signal-safe functions: the parent may have
// other threads (OpenMP's team, the store's server) whose locks the child's copy would inherit.
// PR_SET_PDEATHSIG fires when the thread that forked ends, not the process: launch() and
// PeerProcesses belong on a thread that lives as long as the job, such as the main thread.
pid_t spawn(const std::string& path, const std::vector<std::string>& argv, Environment& env, SpawnIo io,
            bool own_group) {
  std::vector<std::string> args = argv;
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  arg_ptrs.push_back(nullptr);
  std::vector<char*> env_ptrs = env.pointers();
  const std::string exec_failed = "kiln: cannot execute " + path + "\n";
  const pid_t parent = getpid();
  const pid_t pid = fork();
  KILN_CHECK(pid >= 0, "launch: fork failed: ", std::strerror(errno));
  if (pid == 0) {
    if (own_group) {  // launch()'s ranks: their own group, and SIGPIPE as a shell would leave it
      setpgid(0, 0);
      struct sigaction default_action {};
      default_action.sa_handler = SIG_DFL;
      sigaction(SIGPIPE, &default_action, nullptr);
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(128 + SIGKILL);  // the parent died before prctl took effect
    if (io.in >= 0) dup2(io.in, 0);
    if (io.out >= 0) dup2(io.out, 1);
    if (io.err >= 0) dup2(io.err, 2);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);  // a blocked signal would stay blocked across exec
    execve(path.c_str(), arg_ptrs.data(), env_ptrs.data());
    [[maybe_unused]] const ssize_t n = write(2, exec_failed.data(), exec_failed.size());
    _exit(127);
  }
  if (own_group) setpgid(pid, pid);  // also here: a signal sent before the child's own call must reach it
  return pid;
}

void write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a closed or broken output loses the ranks' text, not the job
    data += n;
    size -= static_cast<size_t>(n);
  }
}

// Note [Signals during launch]
// The handlers only write a byte to a pipe that the poll loop watches (the self-pipe trick): the
// ranks' exits (SIGCHLD) and the user's SIGINT/SIGTERM wake the loop, which does the work outside
// the handler. A signalfd would need the signals blocked in every thread, and the store's server
// thread was started without them blocked.
std::atomic<int> g_wake_fd{-1};
std::atomic<int> g_last_signal{0};
std::atomic<int> g_signal_count{0};
std::atomic<bool> g_launching{false};

extern "C" void on_launch_signal(int sig) {
  const int saved = errno;
  if (sig != SIGCHLD) {
    g_last_signal.store(sig);
    g_signal_count.fetch_add(1);
  }
  const char byte = 0;
  [[maybe_unused]] const ssize_t n = write(g_wake_fd.load(), &byte, 1);
  errno = saved;
}

class SignalScope {
 public:
  SignalScope() {
    KILN_CHECK(!g_launching.exchange(true), "launch: another launch() is running in this process");
    if (pipe2(pipe_, O_CLOEXEC | O_NONBLOCK) != 0) {
      g_launching = false;
      KILN_CHECK(false, "launch: pipe failed: ", std::strerror(errno));
    }
    g_wake_fd = pipe_[1];
    g_signal_count = 0;
    struct sigaction action {};
    action.sa_handler = on_launch_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    for (size_t i = 0; i < std::size(kSignals); ++i) sigaction(kSignals[i], &action, &saved_[i]);
    action.sa_handler = SIG_IGN;  // a closed output fails the relay's writes instead of killing the launcher
    sigaction(SIGPIPE, &action, &saved_pipe_);
  }
  ~SignalScope() {
    for (size_t i = 0; i < std::size(kSignals); ++i) sigaction(kSignals[i], &saved_[i], nullptr);
    sigaction(SIGPIPE, &saved_pipe_, nullptr);
    g_wake_fd = -1;
    close(pipe_[0]);
    close(pipe_[1]);
    g_launching = false;
  }
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;
  int wake_fd() const { return pipe_[0]; }
  void drain() const {
    char buf[64];
    while (read(pipe_[0], buf, sizeof buf) > 0) {}
  }

 private:
  static constexpr int kSignals[] = {SIGCHLD, SIGINT, SIGTERM};
  int pipe_[2] = {-1, -1};
  struct sigaction saved_[std::size(kSignals)];
  struct sigaction saved_pipe_;
};

// One local rank of one attempt: its process and the read ends of its stdout and stderr.
struct Rank {
  int global = 0;
  pid_t pid = -1;
  bool running = false;
  int status = 0;
  int fds[2] = {-1, -1};  // stdout, stderr
  std::string partial[2];
  std::deque<std::string> tail;
};

// The first failure of an attempt, on this node or (through the store) on another.
struct Failure {
  int global_rank = -1;
  int exit_code = 0;
  std::string what;  // "rank 1 (pid 4242) failed: exited with code 3"
  bool local = true;
};

// Runs the attempts of one launch(); one object per call.
class Supervisor {
 public:
  // `store`: the job's store, where the launchers of a multi-node job leave failure notes; or null.
  Supervisor(const LaunchOptions& options, const std::vector<std::string>& argv, std::string path, Store* store)
      : options_(options), argv_(argv), path_(std::move(path)), store_(store) {
    threads_ = options.threads_per_rank > 0 ? options.threads_per_rank
                                             : std::max(1, available_cores() / options.nproc_per_node);
    dev_null_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
    KILN_CHECK(dev_null_ >= 0, "launch: cannot open /dev/null: ", std::strerror(errno));
  }
  // An error mid-attempt (a failed fork or poll) leaves no rank behind.
  ~Supervisor() {
    signal_running(SIGKILL);
    for (Rank& r : ranks_) {
      if (r.running) waitpid(r.pid, nullptr, 0);
      for (int fd : r.fds)
        if (fd >= 0) close(fd);
    }
    close(dev_null_);
  }
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // One attempt, from starting every local rank to the last one's exit. Returns the first
  // failure, if any; interrupted_by() names the user's signal that ended it, if one did.
  std::optional<Failure> run(int restart_count, const std::vector<std::pair<std::string, std::string>>& extra_env);
  int interrupted_by() const { return interrupted_by_; }
  std::string reason(const Failure& f) const;

 private:
  void start(int restart_count, const std::vector<std::pair<std::string, std::string>>& extra_env);
  void relay(Rank& r, int stream);
  void emit(Rank& r, const std::string& text, bool newline, std::string& out);
  void signal_running(int sig);
  void reap(std::optional<Failure>& failure, Clock::time_point& kill_at);
  void stop(Clock::time_point& kill_at);
  void publish(const Failure& f);
  std::optional<Failure> note_from_another_node();

  const LaunchOptions& options_;
  const std::vector<std::string>& argv_;
  std::string path_;
  Store* store_;
  std::string note_key_;  // this attempt's failure note
  Clock::time_point next_note_check_{};
  int threads_ = 1;
  int dev_null_ = -1;
  SignalScope signals_;
  std::vector<Rank> ranks_;
  std::vector<Rank> finished_;  // the last attempt's ranks, for reason()
  int interrupted_by_ = 0;
  int signals_seen_ = 0;
};

void Supervisor::start(int restart_count, const std::vector<std::pair<std::string, std::string>>& extra_env) {
  ranks_.assign(options_.nproc_per_node, Rank{});
  for (int local = 0; local < options_.nproc_per_node; ++local) {
    Rank& r = ranks_[local];
    r.global = options_.node_rank * options_.nproc_per_node + local;
    const ClusterEnvironment place{.source = "env",
                                   .rank = r.global,
                                   .world_size = options_.nnodes * options_.nproc_per_node,
                                   .local_rank = local,
                                   .local_world_size = options_.nproc_per_node,
                                   .node_rank = options_.node_rank,
                                   .master_addr = options_.master_addr,
                                   .master_port = options_.master_port};
    auto vars = rank_variables(place, threads_);
    vars.emplace_back("KILN_RESTART_COUNT", std::to_string(restart_count));
    vars.insert(vars.end(), extra_env.begin(), extra_env.end());
    Environment env(vars);
    // The read ends are the rank's from the start, so that the destructor closes them after an error.
    int out[2], err[2];
    KILN_CHECK(pipe2(out, O_CLOEXEC) == 0, "launch: pipe failed: ", std::strerror(errno));
    r.fds[0] = out[0];
    if (pipe2(err, O_CLOEXEC) != 0) {
      close(out[1]);
      KILN_CHECK(false, "launch: pipe failed: ", std::strerror(errno));
    }
    r.fds[1] = err[0];
    try {
      r.pid = spawn(path_, argv_, env, {.in = dev_null_, .out = out[1], .err = err[1]}, /*own_group=*/true);
    } catch (...) {
      close(out[1]);
      close(err[1]);
      throw;
    }
    r.running = true;
    close(out[1]);
    close(err[1]);
    for (int fd : r.fds) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
}

// One relayed line, "[rank N] text\n", or a piece of an overlong line without the newline, added
// to `out`. A rank's stdout and stderr are pipes, so Kiln's progress bar writes whole lines, not
// '\r' redraws.
void Supervisor::emit(Rank& r, const std::string& text, bool newline, std::string& out) {
  if (options_.prefix_output) out += "[rank " + std::to_string(r.global) + "] ";
  out += text;
  if (newline) out += '\n';
  r.tail.push_back(text);
  if (r.tail.size() > kTailLines) r.tail.pop_front();
}

// What one read brings, relayed in one write: whole lines only, so ranks' lines never interleave.
void Supervisor::relay(Rank& r, int stream) {
  char buf[1 << 16];
  const ssize_t n = read(r.fds[stream], buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  std::string& partial = r.partial[stream];
  std::string out;
  if (n <= 0) {  // the end: a last line without its newline gets one
    if (!partial.empty()) emit(r, partial, true, out);
    partial.clear();
    close(r.fds[stream]);
    r.fds[stream] = -1;
  }
  const size_t size = n > 0 ? static_cast<size_t>(n) : 0;
  size_t begin = 0;
  while (const char* newline = static_cast<const char*>(std::memchr(buf + begin, '\n', size - begin))) {
    partial.append(buf + begin, static_cast<size_t>(newline - (buf + begin)));
    emit(r, partial, true, out);
    partial.clear();
    begin = static_cast<size_t>(newline - buf) + 1;
  }
  partial.append(buf + begin, buf + size);
  if (partial.size() >= kMaxPartialLine) {
    emit(r, partial, false, out);
    partial.clear();
  }
  write_all(stream == 0 ? STDOUT_FILENO : STDERR_FILENO, out.data(), out.size());
}

void Supervisor::signal_running(int sig) {
  for (const Rank& r : ranks_)
    if (r.running) kill(-r.pid, sig);  // the rank's group: Note [Ranks in their own process groups]
}

void Supervisor::stop(Clock::time_point& kill_at) {
  // After the user's signal the ranks are already stopping, each in its own time.
  if (interrupted_by_ != 0) return;
  signal_running(SIGTERM);
  kill_at = Clock::now() + options_.grace;
}

void Supervisor::reap(std::optional<Failure>& failure, Clock::time_point& kill_at) {
  for (Rank& r : ranks_) {
    if (!r.running || waitpid(r.pid, &r.status, WNOHANG) != r.pid) continue;
    r.running = false;
    if (!failed(r.status) || failure) continue;
    failure = Failure{.global_rank = r.global,
                      .exit_code = exit_code_of(r.status),
                      .what = "rank " + std::to_string(r.global) + " (pid " + std::to_string(r.pid) +
                              (options_.nnodes > 1 ? ", node " + std::to_string(options_.node_rank) : "") +
                              ") failed: " + describe(r.status)};
    publish(*failure);
    stop(kill_at);
  }
}

// Note [Failure notes]
// In a job of several nodes, each launcher leaves its attempt's first failure in the job's store
// and watches for another's, so that every node stops and restarts its ranks together, under the
// same KILN_RESTART_COUNT, even when the failed rank's peers are hung rather than told by Gloo.
// The store is node 0's launcher's: once it has gone (its ranks are done), the notes stop.
void Supervisor::publish(const Failure& f) {
  if (!store_ || options_.nnodes == 1) return;
  const std::string note = std::to_string(f.global_rank) + " " + std::to_string(f.exit_code) + " " + f.what;
  try {
    store_->set(note_key_, Bytes(note.begin(), note.end()));
  } catch (const std::exception&) {
    store_ = nullptr;
  }
}

std::optional<Failure> Supervisor::note_from_another_node() {
  if (!store_ || options_.nnodes == 1 || Clock::now() < next_note_check_) return std::nullopt;
  next_note_check_ = Clock::now() + std::chrono::milliseconds(100);  // a chatty rank wakes the loop far more often
  try {
    if (!store_->check({note_key_})) return std::nullopt;
    const Bytes bytes = store_->get(note_key_);
    std::istringstream note(std::string(bytes.begin(), bytes.end()));
    Failure f{.local = false};
    note >> f.global_rank >> f.exit_code >> std::ws;
    std::getline(note, f.what);
    return f;
  } catch (const std::exception&) {
    store_ = nullptr;
    return std::nullopt;
  }
}

std::optional<Failure> Supervisor::run(int restart_count,
                                       const std::vector<std::pair<std::string, std::string>>& extra_env) {
  note_key_ = "kiln-run/attempt" + std::to_string(restart_count) + "/failed";
  start(restart_count, extra_env);
  std::optional<Failure> failure;
  Clock::time_point kill_at = kNever;  // when the ranks still running get SIGKILL
  bool drained_idle = false;  // no rank runs and a poll found nothing left to read
  while (true) {
    reap(failure, kill_at);
    if (!failure && (failure = note_from_another_node())) stop(kill_at);
    const bool any_running = std::any_of(ranks_.begin(), ranks_.end(), [](const Rank& r) { return r.running; });
    std::vector<pollfd> fds{{signals_.wake_fd(), POLLIN, 0}};
    std::vector<std::pair<Rank*, int>> owners;
    for (Rank& r : ranks_)
      for (int s = 0; s < 2; ++s)
        if (r.fds[s] >= 0) fds.push_back({r.fds[s], POLLIN, 0}), owners.emplace_back(&r, s);
    // A rank's own child may hold its pipes open after the rank exits: stop once nothing comes.
    if (!any_running && (owners.empty() || drained_idle)) break;
    int timeout_ms = 100;
    if (kill_at != kNever) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(kill_at - Clock::now()).count();
      timeout_ms = static_cast<int>(std::clamp<int64_t>(left, 0, timeout_ms));
    }
    const int ready = poll(fds.data(), fds.size(), timeout_ms);
    if (ready < 0 && errno != EINTR) KILN_CHECK(false, "launch: poll failed: ", std::strerror(errno));
    if (!any_running) drained_idle = ready <= 0 || (ready == 1 && fds[0].revents);
    if (fds[0].revents) signals_.drain();
    for (size_t i = 1; i < fds.size(); ++i)
      if (fds[i].revents) relay(*owners[i - 1].first, owners[i - 1].second);
    if (const int count = g_signal_count.load(); count != signals_seen_) {
      // The user's first SIGINT/SIGTERM goes to the ranks as is; a second one kills them.
      signals_seen_ = count;
      const bool first = interrupted_by_ == 0;
      interrupted_by_ = g_last_signal.load();
      signal_running(first ? interrupted_by_ : SIGKILL);
    }
    if (Clock::now() >= kill_at) {
      signal_running(SIGKILL);
      kill_at = kNever;
    }
  }
  for (Rank& r : ranks_)
    for (int& fd : r.fds)
      if (fd >= 0) close(fd), fd = -1;
  finished_ = std::move(ranks_);
  ranks_.clear();
  return failure;
}

std::string Supervisor::reason(const Failure& f) const {
  std::string text = f.what;
  if (!f.local) text += "; this node's ranks were stopped for it";
  if (interrupted_by_) text += ", after kiln-run passed on " + signal_name(interrupted_by_);
  for (const Rank& r : finished_) {
    if (!f.local || r.global != f.global_rank || r.tail.empty()) continue;
    text += "; its last output:";
    for (const std::string& line : r.tail) text += "\n  " + line;
  }
  return text;
}

}  // namespace

LaunchResult launch(const LaunchOptions& options, const std::vector<std::string>& argv) {
  KILN_CHECK(!argv.empty(), "launch: no program to run");
  KILN_CHECK(options.nproc_per_node >= 1, "launch: nproc_per_node must be at least 1, got ", options.nproc_per_node);
  KILN_CHECK(options.nnodes >= 1, "launch: nnodes must be at least 1, got ", options.nnodes);
  KILN_CHECK(options.node_rank >= 0 && options.node_rank < options.nnodes, "launch: node_rank ", options.node_rank,
             " is outside [0, nnodes=", options.nnodes, ")");
  KILN_CHECK(options.master_port >= (options.nnodes == 1 ? 0 : 1) && options.master_port <= 65535,
             "launch: master_port ", options.master_port, " is not a TCP port (1 to 65535",
             options.nnodes == 1 ? "; 0 picks a free one" : "", ")");
  KILN_CHECK(!options.master_addr.empty(), "launch: master_addr is empty");
  KILN_CHECK(options.max_restarts >= 0 && options.threads_per_rank >= 0, "launch: max_restarts (",
             options.max_restarts, ") and threads_per_rank (", options.threads_per_rank, ") must not be negative");
  // Node 0's launcher serves the job's store for as long as the job runs, restarts included; the
  // others' keep a client for the failure notes (Note [Failure notes]).
  const std::string path = find_program(argv[0]);
  LaunchOptions o = options;
  std::unique_ptr<TcpStore> store;
  if (o.node_rank == 0 || o.nnodes > 1)
    store = make_tcp_store({.host = o.master_addr, .port = o.master_port, .is_server = o.node_rank == 0});
  if (o.node_rank == 0) o.master_port = store->port();
  Supervisor supervisor(o, argv, path, store.get());
  LaunchResult result;
  for (int attempt = 0;; ++attempt) {
    const std::optional<Failure> failure = supervisor.run(attempt, {{"KILN_AGENT_STORE", "1"}});
    result.restarts = attempt;
    if (!failure) return result;
    const std::string reason = supervisor.reason(*failure);
    if (supervisor.interrupted_by() || attempt == o.max_restarts) {
      result.exit_code = failure->exit_code;
      result.failed_rank = failure->global_rank;
      result.reason = reason;
      return result;
    }
    std::fprintf(stderr, "kiln-run: %s\nkiln-run: restarting the local ranks (restart %d of %d)\n", reason.c_str(),
                 attempt + 1, o.max_restarts);
    std::fflush(stderr);
  }
}

namespace {

// A port free now on 127.0.0.1 (the kernel's pick); the copies' store binds it moments later.
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  KILN_CHECK(fd >= 0, "PeerProcesses: socket failed: ", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  const int error = errno;
  close(fd);
  KILN_CHECK(ok, "PeerProcesses: cannot find a free port: ", std::strerror(error));
  return ntohs(addr.sin_port);
}

std::vector<std::string> own_arguments() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t begin = 0; begin < all.size();) {
    const size_t end = all.find('\0', begin);
    args.push_back(all.substr(begin, end - begin));
    begin = end == std::string::npos ? all.size() : end + 1;
  }
  KILN_CHECK(!args.empty(), "PeerProcesses: /proc/self/cmdline is empty");
  return args;
}

}  // namespace

PeerProcesses::PeerProcesses(int nprocs, std::chrono::milliseconds grace) : grace_(grace) {
  KILN_CHECK(nprocs >= 1, "PeerProcesses: nprocs must be at least 1, got ", nprocs);
  // A copy that started copies of its own would never stop.
  const char* rank = std::getenv("RANK");
  KILN_CHECK(!rank, "PeerProcesses: this process is already RANK=", rank ? rank : "",
             " of a job (started by a launcher, or a copy); only a plain program starts copies");
  const int threads = std::max(1, available_cores() / nprocs);
  env_ = {.source = "env", .rank = 0, .world_size = nprocs, .local_rank = 0, .local_world_size = nprocs,
          .node_rank = 0, .master_addr = "127.0.0.1", .master_port = nprocs > 1 ? free_port() : 29500};
  const std::vector<std::string> argv = nprocs > 1 ? own_arguments() : std::vector<std::string>{};
  for (int r = 1; r < nprocs; ++r) {
    ClusterEnvironment place = env_;
    place.rank = place.local_rank = r;
    Environment env(rank_variables(place, threads));
    try {
      pids_.push_back(spawn("/proc/self/exe", argv, env, {}, /*own_group=*/false));
    } catch (...) {
      for (pid_t pid : pids_) kill(pid, SIGKILL), waitpid(pid, nullptr, 0);
      throw;
    }
  }
  for (const auto& [name, value] : rank_variables(env_, threads)) setenv(name.c_str(), value.c_str(), 1);
  set_num_threads(threads);
}

void PeerProcesses::wait() {
  std::string first_failure;
  for (size_t left = std::count_if(pids_.begin(), pids_.end(), [](pid_t p) { return p > 0; }); left > 0;) {
    bool reaped = false;
    for (size_t i = 0; i < pids_.size(); ++i) {
      int status = 0;
      if (pids_[i] <= 0 || waitpid(pids_[i], &status, WNOHANG) != pids_[i]) continue;
      if (failed(status) && first_failure.empty())
        first_failure = "rank " + std::to_string(i + 1) + " (pid " + std::to_string(pids_[i]) + ") " + describe(status);
      pids_[i] = -1;
      --left;
      reaped = true;
    }
    // In the order they end, so "first" is the first to fail, not the lowest rank.
    if (!reaped) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  KILN_CHECK(first_failure.empty(), "PeerProcesses: ", first_failure);
}

PeerProcesses::~PeerProcesses() {
  const auto kill_at = Clock::now() + grace_;
  for (pid_t& pid : pids_) {
    if (pid <= 0) continue;
    while (waitpid(pid, nullptr, WNOHANG) == 0) {
      if (Clock::now() >= kill_at) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid = -1;
  }
}

}  // namespace kiln::dist
