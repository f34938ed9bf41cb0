// detect_cluster_environment (distributed/cluster_environment.h): reads the variables of
// kiln-run/torchrun (env://), SLURM's srun and Open MPI's mpirun, in that order of precedence, and
// checks that they agree before any rank dials another.
#include "distributed/cluster_environment.h"

#include <charconv>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "tensor/error.h"

namespace kiln::dist {
namespace {

constexpr int kDefaultPort = 29500;

// One source's variables, read by name, so every message can quote the variable and its value.
class Vars {
 public:
  explicit Vars(std::string source) : source_(std::move(source)) {}

  static const char* raw(const char* name) { return std::getenv(name); }
  static bool has(const char* name) { return raw(name) != nullptr; }

  // The integer in `name`, which must be set.
  int integer(const char* name) const {
    const char* text = raw(name);
    KILN_CHECK(text, where(), name, " is not set");
    return parse(name, text);
  }
  std::optional<int> optional_integer(const char* name) const {
    const char* text = raw(name);
    if (!text) return std::nullopt;
    return parse(name, text);
  }
  int parse(const char* name, std::string_view text) const {
    int value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    KILN_CHECK(!text.empty() && ec == std::errc() && end == text.data() + text.size(), where(), name, "='", text,
               "' is not an integer");
    return value;
  }
  // MASTER_PORT when set (a TCP port), else `fallback`.
  int port(int fallback) const {
    const std::optional<int> port = optional_integer("MASTER_PORT");
    KILN_CHECK(!port || (*port >= 1 && *port <= 65535), where(), "MASTER_PORT=", *port,
               " is not a TCP port (1 to 65535)");
    return port.value_or(fallback);
  }
  std::string where() const { return "cluster environment (" + source_ + "): "; }

 private:
  std::string source_;
};

std::string value_of(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(name) + "=" + v : std::string(name) + " unset";
}

// The checks every source shares: ranks inside their sizes.
void check_ranks(const Vars& vars, const ClusterEnvironment& e, const char* rank, const char* world,
                 const char* local_rank, const char* local_world) {
  KILN_CHECK(e.world_size >= 1, vars.where(), world, "=", e.world_size, " must be at least 1");
  KILN_CHECK(e.rank >= 0 && e.rank < e.world_size, vars.where(), rank, "=", e.rank, " is outside [0, ", world, "=",
             e.world_size, ")");
  KILN_CHECK(e.local_world_size >= 1 && e.local_world_size <= e.world_size, vars.where(), local_world, "=",
             e.local_world_size, " must be between 1 and ", world, "=", e.world_size);
  KILN_CHECK(e.local_rank >= 0 && e.local_rank < e.local_world_size, vars.where(), local_rank, "=", e.local_rank,
             " is outside [0, ", local_world, "=", e.local_world_size, ")");
  KILN_CHECK(e.node_rank >= 0 && e.node_rank <= e.rank, vars.where(), "node rank ", e.node_rank,
             " is negative or above ", rank, "=", e.rank);
}

// kiln-run and torchrun: RANK and WORLD_SIZE, with LOCAL_RANK/LOCAL_WORLD_SIZE (a single node
// when both are absent), GROUP_RANK (the node) and MASTER_ADDR/MASTER_PORT.
ClusterEnvironment from_env() {
  const Vars vars("env://");
  KILN_CHECK(Vars::has("RANK") && Vars::has("WORLD_SIZE"), vars.where(), value_of("RANK"), " but ",
             value_of("WORLD_SIZE"), ": set both (torchrun's env:// variables)");
  KILN_CHECK(Vars::has("LOCAL_RANK") == Vars::has("LOCAL_WORLD_SIZE"), vars.where(), value_of("LOCAL_RANK"), " but ",
             value_of("LOCAL_WORLD_SIZE"), ": set both or neither (neither: one node)");
  ClusterEnvironment e{.source = "env"};
  e.rank = vars.integer("RANK");
  e.world_size = vars.integer("WORLD_SIZE");
  e.local_rank = vars.optional_integer("LOCAL_RANK").value_or(e.rank);
  e.local_world_size = vars.optional_integer("LOCAL_WORLD_SIZE").value_or(e.world_size);
  check_ranks(vars, e, "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE");
  e.node_rank = vars.optional_integer("GROUP_RANK").value_or((e.rank - e.local_rank) / e.local_world_size);
  KILN_CHECK(e.node_rank >= 0 && e.node_rank * e.local_world_size < e.world_size, vars.where(), "GROUP_RANK=",
             e.node_rank, " does not fit WORLD_SIZE=", e.world_size, " with LOCAL_WORLD_SIZE=", e.local_world_size);
  // 127.0.0.1 on a job that spans nodes would leave every other node dialling itself until its timeout.
  KILN_CHECK(Vars::has("MASTER_ADDR") || e.local_world_size == e.world_size, vars.where(), "WORLD_SIZE=",
             e.world_size, " spans nodes (LOCAL_WORLD_SIZE=", e.local_world_size,
             ") but MASTER_ADDR is unset: set it to node 0's address");
  if (const char* addr = Vars::raw("MASTER_ADDR")) e.master_addr = addr;
  KILN_CHECK(!e.master_addr.empty(), vars.where(), "MASTER_ADDR is empty");
  e.master_port = vars.port(kDefaultPort);
  return e;
}

// "2(x3),1" -> {2, 2, 2, 1}: SLURM_TASKS_PER_NODE, one count per node of the job.
std::vector<int> slurm_tasks_per_node(const Vars& vars, const std::string& text) {
  std::vector<int> counts;
  size_t begin = 0;
  while (begin <= text.size()) {
    const size_t end = std::min(text.find(',', begin), text.size());
    const std::string item = text.substr(begin, end - begin);
    const size_t paren = item.find("(x");
    const int count = vars.parse("SLURM_TASKS_PER_NODE", std::string_view(item).substr(0, paren));
    int repeat = 1;
    if (paren != std::string::npos) {
      KILN_CHECK(item.back() == ')', vars.where(), "SLURM_TASKS_PER_NODE='", text, "' has a bad item '", item, "'");
      repeat = vars.parse("SLURM_TASKS_PER_NODE", std::string_view(item).substr(paren + 2, item.size() - paren - 3));
    }
    KILN_CHECK(count >= 1 && repeat >= 1, vars.where(), "SLURM_TASKS_PER_NODE='", text, "' has a bad item '", item,
               "'");
    counts.insert(counts.end(), repeat, count);
    begin = end + 1;
  }
  return counts;
}

// Lightning's SLURMEnvironment: srun sets one task per rank. An interactive allocation's shell
// (job name "bash" or "interactive") is a plain program, not a rank.
bool under_srun() {
  const char* name = Vars::raw("SLURM_JOB_NAME");
  const std::string job = name ? name : "";
  return Vars::has("SLURM_NTASKS") && job != "bash" && job != "interactive";
}

ClusterEnvironment from_slurm() {
  const Vars vars("slurm");
  ClusterEnvironment e{.source = "slurm"};
  e.rank = vars.integer("SLURM_PROCID");
  e.world_size = vars.integer("SLURM_NTASKS");
  e.local_rank = vars.integer("SLURM_LOCALID");
  e.node_rank = vars.integer("SLURM_NODEID");
  if (Vars::has("SLURM_NTASKS_PER_NODE")) {
    e.local_world_size = vars.integer("SLURM_NTASKS_PER_NODE");
  } else {
    const char* per_node = Vars::raw("SLURM_TASKS_PER_NODE");
    KILN_CHECK(per_node, vars.where(), "neither SLURM_NTASKS_PER_NODE nor SLURM_TASKS_PER_NODE is set");
    const std::vector<int> counts = slurm_tasks_per_node(vars, per_node);
    KILN_CHECK(e.node_rank >= 0 && e.node_rank < static_cast<int>(counts.size()), vars.where(), "SLURM_NODEID=",
               e.node_rank, " but SLURM_TASKS_PER_NODE='", per_node, "' lists ", counts.size(), " nodes");
    e.local_world_size = counts[e.node_rank];
  }
  check_ranks(vars, e, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE");
  if (const char* addr = Vars::raw("MASTER_ADDR")) {
    e.master_addr = addr;
  } else {
    const char* list = Vars::raw("SLURM_JOB_NODELIST") ? Vars::raw("SLURM_JOB_NODELIST") : Vars::raw("SLURM_NODELIST");
    KILN_CHECK(list, vars.where(), "neither SLURM_JOB_NODELIST nor SLURM_NODELIST is set (nor MASTER_ADDR)");
    e.master_addr = first_slurm_host(list);
  }
  // Lightning's port: the job id's last four digits above 15000, so two jobs sharing a node
  // rarely meet on one port, and every task of a job derives the same one.
  const std::optional<int> job = vars.optional_integer("SLURM_JOB_ID");
  e.master_port = vars.port(job ? 15000 + *job % 10000 : kDefaultPort);
  return e;
}

// Open MPI: OMPI_COMM_WORLD_NODE_RANK is this process's rank among every job's processes on the
// node, not the node's index, so the node comes from mpirun's default mapping by slot (a node's
// ranks are consecutive).
ClusterEnvironment from_ompi() {
  const Vars vars("ompi");
  ClusterEnvironment e{.source = "ompi"};
  e.rank = vars.integer("OMPI_COMM_WORLD_RANK");
  e.world_size = vars.integer("OMPI_COMM_WORLD_SIZE");
  e.local_rank = vars.integer("OMPI_COMM_WORLD_LOCAL_RANK");
  e.local_world_size = vars.integer("OMPI_COMM_WORLD_LOCAL_SIZE");
  check_ranks(vars, e, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
              "OMPI_COMM_WORLD_LOCAL_SIZE");
  KILN_CHECK(e.rank % e.local_world_size == e.local_rank, vars.where(), "OMPI_COMM_WORLD_RANK=", e.rank,
             " with OMPI_COMM_WORLD_LOCAL_RANK=", e.local_rank, " and OMPI_COMM_WORLD_LOCAL_SIZE=",
             e.local_world_size, " is not a mapping by slot: run mpirun --map-by slot with equal ranks per node");
  e.node_rank = e.rank / e.local_world_size;
  if (const char* addr = Vars::raw("MASTER_ADDR")) e.master_addr = addr;
  e.master_port = vars.port(kDefaultPort);
  return e;
}

}  // namespace

std::optional<ClusterEnvironment> detect_cluster_environment() {
  if (Vars::has("RANK") || Vars::has("WORLD_SIZE")) return from_env();
  if (under_srun() && Vars::has("SLURM_PROCID")) return from_slurm();
  if (Vars::has("OMPI_COMM_WORLD_RANK") || Vars::has("OMPI_COMM_WORLD_SIZE")) return from_ompi();
  return std::nullopt;
}

std::string first_slurm_host(const std::string& nodelist) {
  // The first host ends at the first comma outside brackets; each bracket group in it
  // ("rack[1-2]-n[07,9]") contributes its first number, zero padding kept.
  std::string host;
  size_t i = 0;
  while (i < nodelist.size() && nodelist[i] != ',') {
    if (nodelist[i] != '[') {
      host += nodelist[i++];
      continue;
    }
    const size_t close = nodelist.find(']', i);
    KILN_CHECK(close != std::string::npos, "SLURM node list '", nodelist, "': '[' at ", i, " is never closed");
    const std::string group = nodelist.substr(i + 1, close - i - 1);
    const std::string first = group.substr(0, group.find_first_of(",-"));
    KILN_CHECK(!first.empty() && first.find_first_not_of("0123456789") == std::string::npos, "SLURM node list '",
               nodelist, "': bad range [", group, "]");
    host += first;
    i = close + 1;
  }
  KILN_CHECK(!host.empty(), "SLURM node list '", nodelist, "' names no host");
  return host;
}

}  // namespace kiln::dist
