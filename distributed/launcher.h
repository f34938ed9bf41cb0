// Starting the ranks of a job on one node: kiln-run's engine (tools/kiln_run.cpp) and the
// Trainer's own launch when a plain program asks for devices=N (Lightning's subprocess launcher).
// Each rank gets the env:// variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// GROUP_RANK, MASTER_ADDR, MASTER_PORT), its share of the cores (OMP_NUM_THREADS) and its output
// prefixed with "[rank N] ".
#pragma once

#include <chrono>
#include <string>
#include <sys/types.h>
#include <vector>

#include "distributed/cluster_environment.h"

namespace kiln::dist {

struct LaunchOptions {
  int nproc_per_node = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;  // 0 on a one-node job: a free port, which the ranks are told
  int max_restarts = 0;     // restarts of all local ranks after a failure (they resume from checkpoints)
  int threads_per_rank = 0;  // 0: this machine's cores / nproc_per_node, at least 1
  bool prefix_output = true;
  // After a failure, how long the other ranks have between SIGTERM and SIGKILL.
  std::chrono::milliseconds grace{std::chrono::seconds(5)};
};

struct LaunchResult {
  int exit_code = 0;     // 0 when every rank succeeded; else the failing rank's code (128 + signal)
  int failed_rank = -1;  // global rank of the first failure
  std::string reason;    // "rank 1 (pid 4242) failed: killed by signal 9 (SIGKILL)" and its last output lines
  int restarts = 0;
};

// Runs `argv` (program and arguments) as this node's ranks and supervises them: when one fails,
// the others are stopped (SIGTERM, then SIGKILL after a grace period), and all are restarted while
// restarts remain. SIGINT or SIGTERM sent to the launcher is passed on to the ranks (a second one
// kills them) and ends the job without restarts. On node 0 the launcher serves the job's store
// (KILN_AGENT_STORE=1), so the store outlives a restart; each attempt's keys carry
// KILN_RESTART_COUNT. The launchers of a multi-node job note a failure there, so that every node
// stops and restarts its ranks together.
LaunchResult launch(const LaunchOptions& options, const std::vector<std::string>& argv);

// The Trainer's launch from a plain program (Trainer(devices = N, strategy = "ddp")): this process
// becomes rank 0 of `nprocs` on this node, and ranks 1..nprocs-1 are copies of this program
// (/proc/self/exe with this process's arguments) started with the env:// variables, a free
// MASTER_PORT and OMP_NUM_THREADS = cores / nprocs (this process takes the same share). Each
// copy dies with this process (PR_SET_PDEATHSIG). Destroying the object waits for the copies up
// to `grace`, then kills them.
class PeerProcesses {
 public:
  explicit PeerProcesses(int nprocs, std::chrono::milliseconds grace = std::chrono::seconds(10));
  ~PeerProcesses();
  PeerProcesses(const PeerProcesses&) = delete;
  PeerProcesses& operator=(const PeerProcesses&) = delete;

  const ClusterEnvironment& environment() const { return env_; }  // this process's place: rank 0
  // Waits for every copy; a kiln::Error names the first that failed and how.
  void wait();

 private:
  ClusterEnvironment env_;
  std::vector<pid_t> pids_;  // of ranks 1..nprocs-1; -1 once reaped
  std::chrono::milliseconds grace_;
};

}  // namespace kiln::dist
