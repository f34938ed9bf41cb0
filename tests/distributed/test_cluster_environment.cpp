// detect_cluster_environment and first_slurm_host (distributed/cluster_environment.h): each
// launcher's variables give the place torchrun, srun or mpirun meant, env:// wins over the others,
// and bad variables are errors naming each variable and its value. The environment of this
// process is changed per test and restored after.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>

#include "distributed/cluster_environment.h"
#include "testing.h"

using namespace kiln;
using namespace kiln::dist;
using kiln::testing::expect_error;

namespace {

using Env = std::map<std::string, std::string>;

// Every variable detection reads: unset for the test (plus `set`), restored after.
class ScopedEnv {
 public:
  explicit ScopedEnv(const std::map<std::string, std::string>& set = {}) {
    for (const char* name : kNames) {
      const char* v = std::getenv(name);
      if (v) saved_[name] = v;
      unsetenv(name);
    }
    for (const auto& [name, value] : set) {
      EXPECT_TRUE(is_known(name)) << name << " is not restored: add it to kNames";
      setenv(name.c_str(), value.c_str(), 1);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  ~ScopedEnv() {
    for (const char* name : kNames) unsetenv(name);
    for (const auto& [name, value] : saved_) setenv(name.c_str(), value.c_str(), 1);
  }

 private:
  static bool is_known(const std::string& name) {
    for (const char* n : kNames)
      if (name == n) return true;
    return false;
  }
  static constexpr const char* kNames[] = {
      "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
      "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NTASKS_PER_NODE",
      "SLURM_TASKS_PER_NODE", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_JOB_ID", "SLURM_JOB_NAME",
      "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
      "OMPI_COMM_WORLD_NODE_RANK"};
  std::map<std::string, std::string> saved_;
};

void expect_place(const std::optional<ClusterEnvironment>& e, const std::string& source, int rank, int world,
                  int local_rank, int local_world, int node, const std::string& addr, int port) {
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->source, source);
  EXPECT_EQ(e->rank, rank);
  EXPECT_EQ(e->world_size, world);
  EXPECT_EQ(e->local_rank, local_rank);
  EXPECT_EQ(e->local_world_size, local_world);
  EXPECT_EQ(e->node_rank, node);
  EXPECT_EQ(e->master_addr, addr);
  EXPECT_EQ(e->master_port, port);
}

const std::map<std::string, std::string> kSlurm = {
    {"SLURM_NTASKS", "6"},         {"SLURM_PROCID", "4"},           {"SLURM_LOCALID", "0"},
    {"SLURM_NODEID", "2"},         {"SLURM_TASKS_PER_NODE", "2(x3)"}, {"SLURM_JOB_NODELIST", "gpu[017-019]"},
    {"SLURM_JOB_ID", "1234567"},   {"SLURM_JOB_NAME", "train"}};

std::map<std::string, std::string> with(std::map<std::string, std::string> base,
                                        const std::map<std::string, std::string>& changes) {
  for (const auto& [k, v] : changes) base[k] = v;
  return base;
}

}  // namespace

TEST(ClusterEnvironment, APlainProgramHasNone) {
  ScopedEnv env;
  EXPECT_FALSE(detect_cluster_environment().has_value());
}

TEST(ClusterEnvironment, ReadsTorchrunsVariables) {
  {
    ScopedEnv env({{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "4"},
                   {"GROUP_RANK", "1"}, {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "1234"}});
    expect_place(detect_cluster_environment(), "env", 5, 8, 1, 4, 1, "10.0.0.1", 1234);
  }
  {  // RANK and WORLD_SIZE alone (torch's env://): one node, its defaults.
    ScopedEnv env({{"RANK", "2"}, {"WORLD_SIZE", "3"}});
    expect_place(detect_cluster_environment(), "env", 2, 3, 2, 3, 0, "127.0.0.1", 29500);
  }
  {  // GROUP_RANK absent: the node of a block of LOCAL_WORLD_SIZE ranks.
    ScopedEnv env({{"RANK", "7"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "3"}, {"LOCAL_WORLD_SIZE", "4"},
                   {"MASTER_ADDR", "h0"}});
    expect_place(detect_cluster_environment(), "env", 7, 8, 3, 4, 1, "h0", 29500);
  }
}

TEST(ClusterEnvironment, EnvWinsOverSlurmAndOpenMpi) {
  ScopedEnv env(with(kSlurm, {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_RANK", "0"},
                              {"OMPI_COMM_WORLD_SIZE", "4"}}));
  expect_place(detect_cluster_environment(), "env", 1, 2, 1, 2, 0, "127.0.0.1", 29500);
}

TEST(ClusterEnvironment, BadEnvVariablesNameThemselvesAndTheirValues) {
  auto detect = [] { detect_cluster_environment(); };
  {
    ScopedEnv env(Env{{"RANK", "1"}});
    expect_error(detect, {"RANK=1", "WORLD_SIZE unset"});
  }
  {
    ScopedEnv env({{"RANK", "4"}, {"WORLD_SIZE", "4"}});
    expect_error(detect, {"env://", "RANK=4 is outside [0, WORLD_SIZE=4)"});
  }
  {
    ScopedEnv env({{"RANK", "x1"}, {"WORLD_SIZE", "4"}});
    expect_error(detect, {"RANK='x1' is not an integer"});
  }
  {
    ScopedEnv env({{"RANK", "1"}, {"WORLD_SIZE", "4 "}});
    expect_error(detect, {"WORLD_SIZE='4 ' is not an integer"});
  }
  {
    ScopedEnv env({{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}});
    expect_error(detect, {"LOCAL_RANK=2 is outside [0, LOCAL_WORLD_SIZE=2)"});
  }
  {
    ScopedEnv env({{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}});
    expect_error(detect, {"LOCAL_RANK=1", "LOCAL_WORLD_SIZE unset"});
  }
  {
    ScopedEnv env({{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"}});
    expect_error(detect, {"WORLD_SIZE=4 spans nodes (LOCAL_WORLD_SIZE=2) but MASTER_ADDR is unset"});
  }
  {
    ScopedEnv env({{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"MASTER_PORT", "70000"}});
    expect_error(detect, {"MASTER_PORT=70000 is not a TCP port"});
  }
  {
    ScopedEnv env({{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                   {"GROUP_RANK", "2"}, {"MASTER_ADDR", "h"}});
    expect_error(detect, {"GROUP_RANK=2 does not fit WORLD_SIZE=4 with LOCAL_WORLD_SIZE=2"});
  }
}

TEST(ClusterEnvironment, ReadsSlurmsVariables) {
  {  // The port: the job id's last four digits above 15000 (Lightning's).
    ScopedEnv env(kSlurm);
    expect_place(detect_cluster_environment(), "slurm", 4, 6, 0, 2, 2, "gpu017", 15000 + 4567);
  }
  {  // SLURM_NTASKS_PER_NODE, SLURM_NODELIST and MASTER_PORT.
    ScopedEnv env(with(kSlurm, {{"SLURM_NTASKS_PER_NODE", "2"}, {"SLURM_TASKS_PER_NODE", "bad"},
                                {"SLURM_NODELIST", "a,b"}, {"MASTER_PORT", "4000"}}));
    unsetenv("SLURM_JOB_NODELIST");
    expect_place(detect_cluster_environment(), "slurm", 4, 6, 0, 2, 2, "a", 4000);
  }
  {  // Uneven nodes: this node's own count; MASTER_ADDR overrides the node list, as in Lightning.
    ScopedEnv env(with(kSlurm, {{"SLURM_NTASKS", "4"}, {"SLURM_PROCID", "3"}, {"SLURM_LOCALID", "0"},
                                {"SLURM_NODEID", "1"}, {"SLURM_TASKS_PER_NODE", "3,1"}, {"MASTER_ADDR", "m"}}));
    expect_place(detect_cluster_environment(), "slurm", 3, 4, 0, 1, 1, "m", 15000 + 4567);
  }
  {  // An interactive allocation's shell is a plain program.
    ScopedEnv env(with(kSlurm, {{"SLURM_JOB_NAME", "bash"}}));
    EXPECT_FALSE(detect_cluster_environment().has_value());
  }
}

TEST(ClusterEnvironment, BadSlurmVariablesNameThemselvesAndTheirValues) {
  auto detect = [] { detect_cluster_environment(); };
  {
    ScopedEnv env(with(kSlurm, {{"SLURM_TASKS_PER_NODE", "2(x2)"}}));
    expect_error(detect, {"slurm", "SLURM_NODEID=2 but SLURM_TASKS_PER_NODE='2(x2)' lists 2 nodes"});
  }
  {
    ScopedEnv env(with(kSlurm, {{"SLURM_TASKS_PER_NODE", "2(x3"}}));
    expect_error(detect, {"SLURM_TASKS_PER_NODE='2(x3' has a bad item '2(x3'"});
  }
  {
    ScopedEnv env(with(kSlurm, {{"SLURM_LOCALID", "2"}}));
    expect_error(detect, {"SLURM_LOCALID=2 is outside [0, SLURM_NTASKS_PER_NODE=2)"});
  }
  {
    ScopedEnv env(with(kSlurm, {{"SLURM_PROCID", "6"}}));
    expect_error(detect, {"SLURM_PROCID=6 is outside [0, SLURM_NTASKS=6)"});
  }
  {
    ScopedEnv env(kSlurm);
    unsetenv("SLURM_LOCALID");
    expect_error(detect, {"SLURM_LOCALID is not set"});
  }
  {
    ScopedEnv env(kSlurm);
    unsetenv("SLURM_JOB_NODELIST");
    expect_error(detect, {"neither SLURM_JOB_NODELIST nor SLURM_NODELIST is set"});
  }
}

TEST(ClusterEnvironment, ReadsOpenMpisVariables) {
  {  // NODE_RANK counts processes of every job on the node: not the node's index, and not read.
    ScopedEnv env({{"OMPI_COMM_WORLD_RANK", "5"}, {"OMPI_COMM_WORLD_SIZE", "8"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                   {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}, {"OMPI_COMM_WORLD_NODE_RANK", "3"},
                   {"MASTER_ADDR", "n0"}, {"MASTER_PORT", "777"}});
    expect_place(detect_cluster_environment(), "ompi", 5, 8, 1, 4, 1, "n0", 777);
  }
  {
    ScopedEnv env({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                   {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
    expect_place(detect_cluster_environment(), "ompi", 1, 2, 1, 2, 0, "127.0.0.1", 29500);
  }
  {  // Round robin over nodes (--map-by node): rank 1 is node 1's first.
    ScopedEnv env({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                   {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
    expect_error([] { detect_cluster_environment(); },
                 {"OMPI_COMM_WORLD_RANK=1 with OMPI_COMM_WORLD_LOCAL_RANK=0", "--map-by slot"});
  }
  {
    ScopedEnv env({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}});
    expect_error([] { detect_cluster_environment(); }, {"ompi", "OMPI_COMM_WORLD_LOCAL_RANK is not set"});
  }
}

TEST(ClusterEnvironment, FirstSlurmHost) {
  EXPECT_EQ(first_slurm_host("node[003-005,7],gpu1"), "node003");
  EXPECT_EQ(first_slurm_host("a,b"), "a");
  EXPECT_EQ(first_slurm_host("host"), "host");
  EXPECT_EQ(first_slurm_host("n[7,1-3]"), "n7");
  EXPECT_EQ(first_slurm_host("rack[2-3]-n[08-09],x"), "rack2-n08");
  EXPECT_EQ(first_slurm_host("gpu[1]-ib"), "gpu1-ib");
  expect_error([] { first_slurm_host("node[1-3"); }, {"SLURM node list 'node[1-3'", "never closed"});
  expect_error([] { first_slurm_host("node[a-b]"); }, {"bad range [a-b]"});
  expect_error([] { first_slurm_host(""); }, {"names no host"});
}
