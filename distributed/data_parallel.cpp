// DataParallel's reducer (data_parallel.h): the model check and rank 0's values at construction,
// gradient buckets filled from post-accumulate-grad hooks and all-reduced in index order while
// backward goes on, and finish_gradient_sync() writing the ranks' mean back into each .grad.
// Single-threaded by contract: hooks run on the thread that runs backward, which also calls
// finish_gradient_sync(); only the Work handles complete on the group's thread.
#include "distributed/data_parallel.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <sstream>

#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "autograd/ops/indexing.h"
#include "tensor/factories.h"

namespace kiln::dist {

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// ---- the model check

// One line per tensor, "<kind>\t<name>\t<dtype>\t<shape>\t<requires_grad>", parameters first, in
// registration order. requires_grad is part of it because it decides the bucket layout.
std::string describe(const nn::NamedTensors& params, const nn::NamedTensors& buffers) {
  std::ostringstream os;
  for (const auto& [name, t] : params)
    os << "parameter\t" << name << '\t' << t.dtype() << '\t' << t.shape() << '\t' << t.requires_grad() << '\n';
  for (const auto& [name, t] : buffers) os << "buffer\t" << name << '\t' << t.dtype() << '\t' << t.shape() << "\t0\n";
  return os.str();
}

std::vector<std::vector<std::string>> parse(const std::string& description) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream lines(description);
  for (std::string line; std::getline(lines, line);) {
    std::vector<std::string> fields;
    std::istringstream cells(line);
    for (std::string cell; std::getline(cells, cell, '\t');) fields.push_back(cell);
    KILN_ASSERT(fields.size() == 5, "DataParallel: malformed model description line '", line, "'");
    rows.push_back(std::move(fields));
  }
  return rows;
}

// The first difference between rank 0's description and rank `rank`'s, in words.
std::string first_difference(const std::string& ours, const std::string& theirs, int rank) {
  const auto a = parse(ours), b = parse(theirs);
  const std::string r = detail::concat("rank ", rank, "'s ");
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const auto &x = a[i], &y = b[i];
    if (x[0] != y[0] || x[1] != y[1])
      return detail::concat(r, y[0], " ", i, " is '", y[1], "' where rank 0's ", x[0], " ", i, " is '", x[1], "'");
    if (x[3] != y[3])
      return detail::concat(r, y[0], " '", y[1], "' has shape ", y[3], " where rank 0's has shape ", x[3]);
    if (x[2] != y[2]) return detail::concat(r, y[0], " '", y[1], "' has dtype ", y[2], " where rank 0's has ", x[2]);
    if (x[4] != y[4])
      return detail::concat(r, y[0], " '", y[1], "' has requires_grad ", y[4] == "1" ? "true" : "false",
                            " where rank 0's has ", x[4] == "1" ? "true" : "false");
  }
  const bool longer = b.size() > a.size();
  const auto& extra = longer ? b[a.size()] : a[b.size()];
  return detail::concat("rank ", longer ? rank : 0, " has ", extra[0], " '", extra[1], "' (shape ", extra[3],
                        ") which rank ", longer ? 0 : rank, " lacks (", a.size(), " parameters and buffers on rank 0, ",
                        b.size(), " on rank ", rank, ")");
}

// Every rank compares its description with rank 0's, then all agree (one all-reduce) on the
// lowest rank that differs, which sends its description so that every rank, not only the one that
// differs, throws the same error instead of waiting in the next collective.
void check_same_model(ProcessGroup& group, const std::string& description) {
  const std::string rank0 = broadcast_string(group, description, 0);
  Tensor first = kiln::tensor(std::vector<int64_t>{rank0 == description ? group.size() : group.rank()});
  group.all_reduce(first, ReduceOp::min)->wait();
  const int differing = static_cast<int>(first.item<int64_t>());
  if (differing == group.size()) return;
  const std::string theirs = broadcast_string(group, description, differing);
  detail::throw_error("DataParallel: the ranks' models differ: ", first_difference(rank0, theirs, differing),
                      " (seen on rank ", group.rank(), " of ", group.size(),
                      "; every rank must build the same model before wrapping it)");
}

// Rank 0's values into `tensors` on every rank: one flat buffer per dtype and per `cap_bytes`, all
// broadcasts in flight at once, then copied back in place (each tensor keeps its identity).
void broadcast_coalesced(ProcessGroup& group, const std::vector<Tensor>& tensors, size_t cap_bytes) {
  struct Chunk {
    std::vector<Tensor> members;
    Tensor flat;
    WorkPtr work;
  };
  std::vector<Chunk> chunks;
  std::map<DType, size_t> open;  // the chunk being filled for each dtype
  std::map<DType, size_t> open_bytes;
  for (const Tensor& t : tensors) {
    auto it = open.find(t.dtype());
    if (it == open.end() || open_bytes[t.dtype()] >= cap_bytes) {
      it = open.insert_or_assign(t.dtype(), chunks.size()).first;
      chunks.emplace_back();
      open_bytes[t.dtype()] = 0;
    }
    chunks[it->second].members.push_back(t);
    open_bytes[t.dtype()] += t.nbytes();
  }
  autograd::NoGradGuard no_grad;
  for (Chunk& c : chunks) {
    std::vector<Tensor> flat_members;
    for (const Tensor& t : c.members) flat_members.push_back(t.detach().reshape({-1}));
    c.flat = cat(flat_members).contiguous();
    c.work = group.broadcast(c.flat, 0);
  }
  for (Chunk& c : chunks) {
    c.work->wait();
    if (group.rank() == 0) continue;
    int64_t offset = 0;
    for (const Tensor& t : c.members) {
      Tensor target = t;
      target.copy_(c.flat.narrow(0, offset, t.numel()).view(t.shape()));
      offset += t.numel();
    }
  }
}

}  // namespace

// Note [Gradient buckets]: parameters that require grad, in reverse registration order (about
// the order backward produces their gradients), are grouped by dtype into buckets of at least
// bucket_cap_mb (the last of each dtype smaller), as torch's compute_bucket_assignment_by_size.
// Each bucket owns one flat buffer: its parameters' gradients, then one "used" flag per parameter
// (1 where this rank had a .grad for it). A parameter's gradient is copied in when its
// post-accumulate hook fires; a bucket whose parameters are all in is all-reduced (ReduceOp::avg,
// in the gradients' own dtype) once every lower-index bucket has been, so every rank issues the
// same collectives in the same order whatever order backward runs in. A parameter without a
// gradient in this backward (unused) is copied in by finish_gradient_sync(): its .grad from an
// earlier no-sync backward if it has one, else zeros with flag 0. The averaged flags tell every
// rank whether any rank had a gradient; where none had, .grad stays undefined, as a single process
// would leave it (and as torch's reducer does for globally unused parameters), so optimizers skip
// it rather than decaying it.
//
// The averaged gradients are copied back into .grad rather than .grad being made a view of the
// bucket (torch's gradient_as_bucket_view): zero_grad() sets .grad to none by default and the first
// gradient of a backward is then a fresh tensor, so a view would have to be re-established every
// step anyway; a copy keeps .grad an ordinary tensor that optimizers, clipping and checkpoints may
// hold or replace. It costs two copies of the gradients per step, small next to backward.
struct DataParallel::Impl {
  struct Param {
    Tensor tensor;
    std::string name;
    size_t bucket = 0;
    int64_t offset = 0;  // into the bucket's flat buffer
    size_t slot = 0;     // position in the bucket: its flag is at flat[grad_numel + slot]
    bool ready = false;  // its gradient for this synchronisation is in the bucket
  };
  struct Bucket {
    DType dtype = DType::f32;
    std::vector<size_t> params;
    int64_t grad_numel = 0;
    Tensor flat;
    size_t pending = 0;  // parameters not yet ready
    WorkPtr work;
    Clock::time_point launched, done;
  };

  Impl(DataParallel& dp, nn::Module& module, DataParallelOptions opts)
      : owner(dp), group(*dp.group_), options(opts) {
    const nn::NamedTensors named = module.named_parameters();
    const nn::NamedTensors named_buffers = module.named_buffers();
    for (const auto& [name, b] : named_buffers) buffers.push_back(b);
    for (const auto& [name, p] : named)
      if (p.requires_grad()) params.push_back({p, name});
    std::reverse(params.begin(), params.end());
    if (!options.average_gradients) params.clear();  // no buckets, no hooks
    assign_buckets(options.bucket_cap_mb);
    if (group.size() == 1) return;  // nothing to agree on or average: no hooks, no buckets in use
    check_same_model(group, describe(named, named_buffers));
    std::vector<Tensor> state;
    for (const auto& [name, p] : named) state.push_back(p);
    state.insert(state.end(), buffers.begin(), buffers.end());
    broadcast_coalesced(group, state, kBroadcastCapBytes);
    for (size_t i = 0; i < params.size(); ++i)
      hooks.push_back(autograd::register_post_accumulate_grad_hook(params[i].tensor, [this, i](const Tensor&) {
        if (owner.require_sync_) mark_ready(i);
      }));
  }

  ~Impl() {
    for (autograd::HookHandle& h : hooks) h.remove();
  }

  void assign_buckets(double cap_mb) {
    KILN_CHECK(cap_mb > 0, "DataParallel: bucket_cap_mb must be positive, got ", cap_mb);
    const double cap_bytes = cap_mb * 1024 * 1024;
    std::map<DType, size_t> open;  // the bucket being filled for each dtype
    for (size_t i = 0; i < params.size(); ++i) {
      const Tensor& p = params[i].tensor;
      auto it = open.find(p.dtype());
      if (it == open.end()) {
        it = open.emplace(p.dtype(), buckets.size()).first;
        buckets.push_back({.dtype = p.dtype()});
      }
      Bucket& b = buckets[it->second];
      params[i].bucket = it->second;
      params[i].offset = b.grad_numel;
      params[i].slot = b.params.size();
      b.params.push_back(i);
      b.grad_numel += p.numel();
      if (static_cast<double>(b.grad_numel) * static_cast<double>(p.element_size()) >= cap_bytes) open.erase(it);
    }
    for (Bucket& b : buckets) {
      b.flat = zeros({b.grad_numel + static_cast<int64_t>(b.params.size())},
                     {.dtype = b.dtype, .device = params[b.params[0]].tensor.device()});
      b.pending = b.params.size();
    }
  }

  // Called from parameter i's post-accumulate hook, or for an unused parameter at the end.
  void mark_ready(size_t i) {
    Param& p = params[i];
    KILN_CHECK(!p.ready, "DataParallel: parameter '", p.name, "' got a second gradient before finish_gradient_sync(); "
               "synchronise once per backward (or turn sync off with set_require_sync(false) for the earlier "
               "micro-batches)");
    p.ready = true;
    Bucket& b = buckets[p.bucket];
    const Tensor& grad = p.tensor.grad();
    autograd::NoGradGuard no_grad;
    Tensor slot = b.flat.narrow(0, p.offset, p.tensor.numel());
    Tensor flag = b.flat.narrow(0, b.grad_numel + static_cast<int64_t>(p.slot), 1);
    if (grad.defined()) {
      slot.view(p.tensor.shape()).copy_(grad);
      flag.fill_(1);
    } else {
      slot.zero_();
      flag.zero_();
    }
    if (--b.pending == 0) launch_ready_buckets();
    note_completions(Clock::now());
  }

  void launch_ready_buckets() {
    for (; next_launch < buckets.size() && buckets[next_launch].pending == 0; ++next_launch) {
      Bucket& b = buckets[next_launch];
      b.launched = Clock::now();
      b.work = group.all_reduce(b.flat, ReduceOp::avg);
    }
  }

  // Completion times as first seen (at a hook or at the end of backward): the group runs its
  // operations in order, so only the oldest unfinished bucket needs asking.
  void note_completions(Clock::time_point now) {
    for (; next_seen < next_launch && buckets[next_seen].work->is_completed(); ++next_seen)
      buckets[next_seen].done = now;
  }

  void finish(DataParallelStats& stats) {
    const Clock::time_point backward_end = Clock::now();
    note_completions(backward_end);
    for (size_t i = 0; i < params.size(); ++i)
      if (!params[i].ready) mark_ready(i);
    KILN_ASSERT(next_launch == buckets.size(), "DataParallel: ", next_launch, " of ", buckets.size(),
                " buckets launched");
    for (size_t i = next_seen; i < buckets.size(); ++i) {
      buckets[i].work->wait();
      buckets[i].done = Clock::now();
    }
    const Clock::time_point waited = Clock::now();
    write_back();

    stats = {};
    stats.exposed_ms = ms_between(backward_end, waited);
    Clock::time_point free_at{};  // when the group's thread finished the previous bucket
    for (const Bucket& b : buckets) {
      const Clock::time_point start = std::max(b.launched, free_at);
      stats.buckets += 1;
      stats.bytes += b.grad_numel * static_cast<int64_t>(dtype_size(b.dtype));
      stats.allreduce_ms += ms_between(start, std::max(start, b.done));
      stats.backward_overlap_ms += ms_between(start, std::max(start, std::min(b.done, backward_end)));
      free_at = b.done;
    }
  }

  // Each .grad = the bucket's average, where any rank had a gradient (flag average > 0).
  void write_back() {
    autograd::NoGradGuard no_grad;
    for (Bucket& b : buckets) {
      const auto n = static_cast<int64_t>(b.params.size());
      const Tensor flags = b.flat.narrow(0, b.grad_numel, n).to(DType::f64).contiguous();
      const double* used = flags.data_ptr<double>();
      for (size_t i : b.params) {
        Param& p = params[i];
        if (used[p.slot] == 0) continue;
        Tensor mean = b.flat.narrow(0, p.offset, p.tensor.numel()).view(p.tensor.shape());
        Tensor& grad = p.tensor.mutable_grad();
        if (grad.defined()) grad.copy_(mean);
        else grad = mean.clone();
      }
    }
  }

  // Ready for the next backward, also after a failed wait.
  void reset() {
    for (Param& p : params) p.ready = false;
    for (Bucket& b : buckets) {
      b.pending = b.params.size();
      b.work.reset();
    }
    next_launch = next_seen = 0;
  }

  static constexpr size_t kBroadcastCapBytes = size_t{64} << 20;

  DataParallel& owner;
  ProcessGroup& group;
  const DataParallelOptions options;
  std::vector<Param> params;  // in bucket order: reverse registration order
  std::vector<Bucket> buckets;
  std::vector<Tensor> buffers;
  std::vector<autograd::HookHandle> hooks;
  size_t next_launch = 0;  // buckets below it are launched
  size_t next_seen = 0;    // buckets below it are seen completed
};

DataParallel::DataParallel(nn::Module& module, std::shared_ptr<ProcessGroup> group, DataParallelOptions options)
    : group_(std::move(group)) {
  KILN_CHECK(group_ != nullptr, "DataParallel: the process group is null");
  impl_ = std::make_unique<Impl>(*this, module, options);
}

DataParallel::~DataParallel() = default;

void DataParallel::before_forward() {
  if (!impl_->options.broadcast_buffers || group_->size() == 1 || impl_->buffers.empty()) return;
  broadcast_coalesced(*group_, impl_->buffers, Impl::kBroadcastCapBytes);
}

void DataParallel::finish_gradient_sync() {
  if (!require_sync_ || group_->size() == 1 || !impl_->options.average_gradients) return;
  try {
    impl_->finish(stats_);
  } catch (...) {
    impl_->reset();
    throw;
  }
  impl_->reset();
}

}  // namespace kiln::dist
