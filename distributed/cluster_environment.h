// Where this process sits in a job, read from the environment that launched it: kiln-run and
// torchrun's env:// variables, SLURM's srun, or Open MPI's mpirun (Lightning's cluster
// environments). Kiln programs start unchanged under any of them.
#pragma once

#include <optional>
#include <string>

namespace kiln::dist {

struct ClusterEnvironment {
  std::string source;  // "env" (kiln-run, torchrun), "slurm" or "ompi"
  int rank = 0;        // global
  int world_size = 1;
  int local_rank = 0;  // on this node
  int local_world_size = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// nullopt when no launcher set this process up (a plain program). Inconsistent variables (RANK
// outside [0, WORLD_SIZE), LOCAL_RANK beyond LOCAL_WORLD_SIZE, a non-numeric value, a partial
// set) are a kiln::Error naming each variable and its value. Under SLURM the master address is
// the first host of SLURM_JOB_NODELIST (or SLURM_NODELIST), the port MASTER_PORT or one derived
// from the job id; under Open MPI both come from MASTER_ADDR/MASTER_PORT (default 127.0.0.1:29500).
std::optional<ClusterEnvironment> detect_cluster_environment();

// The first host of a SLURM node list: "node[003-005,7],gpu1" -> "node003".
std::string first_slurm_host(const std::string& nodelist);

}  // namespace kiln::dist
