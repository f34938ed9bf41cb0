// What every process group shares: ReduceOp's names, the conveniences that wait, and the job's
// default group from the launcher's environment (init_process_group). The backends are
// process_group_gloo.cpp (CPU) and, later, an NCCL one (CUDA).
#include "distributed/process_group.h"

#include <cstdlib>
#include <cstring>
#include <numeric>

#include "distributed/cluster_environment.h"
#include "distributed/store.h"
#include "tensor/factories.h"

namespace kiln::dist {

const char* to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::avg: return "avg";
    case ReduceOp::max: return "max";
    case ReduceOp::min: return "min";
  }
  return "?";
}

namespace {
Dims with_rows(const Tensor& t, int64_t rows) {
  Dims shape = t.shape();
  shape[0] = rows;
  return shape;
}
}  // namespace

Tensor ProcessGroup::all_gather(const Tensor& input) {
  KILN_CHECK(input.defined() && input.dim() >= 1, "all_gather: input needs at least one dim (rows to gather), got ",
             input.defined() ? input.shape() : Dims{});
  const std::vector<int64_t> counts(static_cast<size_t>(size()), input.size(0));
  Tensor output = empty(with_rows(input, input.size(0) * size()), {.dtype = input.dtype()});
  all_gather(input, output, counts)->wait();
  return output;
}

Tensor ProcessGroup::all_gather_uneven(const Tensor& input) {
  KILN_CHECK(input.defined() && input.dim() >= 1, "all_gather_uneven: input needs at least one dim (rows to gather), got ",
             input.defined() ? input.shape() : Dims{});
  Tensor rows = full({1}, input.size(0), {.dtype = DType::i64});
  Tensor all_rows = all_gather(rows);
  const int64_t* r = all_rows.data_ptr<int64_t>();
  const std::vector<int64_t> counts(r, r + size());
  Tensor output = empty(with_rows(input, std::accumulate(counts.begin(), counts.end(), int64_t{0})), {.dtype = input.dtype()});
  all_gather(input, output, counts)->wait();
  return output;
}

Tensor ProcessGroup::reduce_scatter(const Tensor& input, ReduceOp op) {
  KILN_CHECK(input.defined() && input.dim() >= 1 && input.size(0) % size() == 0, "reduce_scatter: input ",
             input.defined() ? input.shape() : Dims{}, " must split along dim 0 into ", size(), " equal pieces");
  const int64_t rows = input.size(0) / size();
  Tensor output = empty(with_rows(input, rows), {.dtype = input.dtype()});
  reduce_scatter(input, output, std::vector<int64_t>(static_cast<size_t>(size()), rows), op)->wait();
  return output;
}

namespace {
std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}
}  // namespace

std::shared_ptr<ProcessGroup> init_process_group(const ClusterEnvironment& env, const std::string& backend,
                                                 const ProcessGroupOptions& options) {
  if (backend == "nccl") {
#ifdef KILN_WITH_CUDA
    detail::throw_error("init_process_group: the nccl backend is not part of this build yet; use \"gloo\" (CPU tensors)");
#else
    detail::throw_error("init_process_group: backend \"nccl\" needs a Kiln built with CUDA (-DKILN_CUDA=ON); this build "
                        "has only \"gloo\" (CPU tensors)");
#endif
  }
  KILN_CHECK(backend == "gloo", "init_process_group: unknown backend \"", backend, "\" (valid: \"gloo\", \"nccl\")");
  KILN_CHECK(env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size, "init_process_group: rank ", env.rank,
             " is outside [0, ", env.world_size, ") (from ", env.source, ")");
  // kiln-run serves the store itself when it restarts workers (KILN_AGENT_STORE=1), so a restarted
  // rank 0 finds it there; otherwise global rank 0 serves it, as torch's env:// does.
  TcpStoreOptions store_options{.host = env.master_addr,
                                .port = env.master_port,
                                .is_server = env.rank == 0 && env_or("KILN_AGENT_STORE", "0") != "1",
                                .timeout = options.timeout};
  std::shared_ptr<Store> store = make_tcp_store(store_options);
  // Each restart meets under its own keys, so a new attempt never reads the last one's addresses.
  if (const char* attempt = std::getenv("KILN_RESTART_COUNT"); attempt && *attempt)
    store = make_prefix_store(std::string("attempt") + attempt, std::move(store));
  return make_gloo_group(std::move(store), env.rank, env.world_size, options);
}

std::string broadcast_string(ProcessGroup& group, const std::string& text, int src) {
  Tensor length = kiln::tensor(std::vector<int64_t>{static_cast<int64_t>(text.size())});
  group.broadcast(length, src)->wait();
  Tensor bytes = empty({length.item<int64_t>()}, {.dtype = DType::u8});
  if (group.rank() == src) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  group.broadcast(bytes, src)->wait();
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel()));
}

}  // namespace kiln::dist
