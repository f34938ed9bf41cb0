// kiln-run, Kiln's torchrun: starts this node's ranks of a job (distributed/launcher.h), each with
// the env:// variables and its share of the cores, relays their output prefixed "[rank N] ",
// stops them all when one fails and restarts them while --max-restarts allows. Exit status: 0,
// or the failing rank's (128 + signal when a signal killed it); 2 for wrong usage, 1 when the job
// cannot start.
#include <cstdio>
#include <string>
#include <vector>

#include "distributed/launcher.h"
#include "train/arg_parser.h"

namespace {

constexpr const char* kDescription =
    "Starts --nproc-per-node ranks of PROGRAM on this node (global rank = node rank * nproc-per-node +\n"
    "local rank) with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR,\n"
    "MASTER_PORT, OMP_NUM_THREADS and KILN_RESTART_COUNT set. Run it once per node. When a rank\n"
    "fails, the others get SIGTERM (SIGKILL 5 s later) and all restart while restarts remain.\n"
    "Arguments from PROGRAM on (or after --) are PROGRAM's own.";

}  // namespace

int main(int argc, char** argv) {
  kiln::dist::LaunchOptions o;
  std::vector<std::string> program;
  bool no_prefix = false;
  kiln::ArgParser parser("kiln-run", kDescription);
  parser.option("--nproc-per-node", o.nproc_per_node, "N", "ranks on this node", 1)
      .option("--nnodes", o.nnodes, "M", "nodes in the job", 1)
      .option("--node-rank", o.node_rank, "R", "this node's place among them, 0 to M-1", 0)
      .option("--master-addr", o.master_addr, "ADDR", "node 0's address, where the job's store is served")
      .option("--master-port", o.master_port, "PORT", "the store's port on node 0; 0: a free one (one node only)", 0)
      .option("--max-restarts", o.max_restarts, "K", "restarts of all local ranks after a failure", 0)
      .option("--threads-per-rank", o.threads_per_rank, "T",
              "OMP_NUM_THREADS of each rank; 0: this machine's cores / N, at least 1", 0)
      .flag("--no-prefix", no_prefix, "relay the ranks' output without the \"[rank N] \" prefix")
      .remainder("PROGRAM [ARGS...]", program, "the program each rank runs, and its arguments");
  if (const auto code = parser.parse(argc, argv)) return *code;
  o.prefix_output = !no_prefix;
  try {
    const kiln::dist::LaunchResult result = kiln::dist::launch(o, program);
    if (result.exit_code != 0) std::fprintf(stderr, "kiln-run: %s\n", result.reason.c_str());
    return result.exit_code;
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "kiln-run: %s\n", e.what());
    return 1;
  }
}
