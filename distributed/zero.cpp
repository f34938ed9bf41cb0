// ZeRO's bookkeeping: who owns which parameter, the flat buffers the collectives move (laid out by
// owner, one per dtype), and the optimizer state gathered on rank 0 for a checkpoint.
#include "distributed/zero.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>

#include "autograd/grad_mode.h"
#include "nn/optim/clip_grad.h"
#include "nn/optim/optimizer.h"
#include "tensor/error.h"
#include "tensor/factories.h"

namespace kiln::dist {
namespace {

// The parameters of one dtype in the order the flat buffers hold them: by owner, then by index.
struct Layout {
  std::vector<size_t> order;    // indices into the parameter list
  std::vector<int64_t> counts;  // elements per owner rank
};

std::map<DType, Layout> layouts(const std::vector<Tensor>& params, const std::vector<int>& owners, int world) {
  std::map<DType, Layout> out;
  for (int r = 0; r < world; ++r)
    for (size_t i = 0; i < params.size(); ++i) {
      if (owners[i] != r) continue;
      Layout& l = out[params[i].dtype()];
      if (l.counts.empty()) l.counts.assign(static_cast<size_t>(world), 0);
      l.order.push_back(i);
      l.counts[static_cast<size_t>(r)] += params[i].numel();
    }
  return out;
}

Tensor bytes_of(const std::string& s) {
  Tensor t = empty({static_cast<int64_t>(s.size())}, {.dtype = DType::u8});
  if (!s.empty()) std::memcpy(t.data_ptr(), s.data(), s.size());
  return t;
}

}  // namespace

std::vector<int> assign_owners(const std::vector<int64_t>& numels, int world_size) {
  KILN_CHECK(world_size >= 1, "assign_owners: world_size must be at least 1, got ", world_size);
  std::vector<size_t> by_size(numels.size());
  std::iota(by_size.begin(), by_size.end(), size_t{0});
  std::stable_sort(by_size.begin(), by_size.end(), [&](size_t a, size_t b) { return numels[a] > numels[b]; });
  std::vector<int64_t> load(static_cast<size_t>(world_size), 0);
  std::vector<int> owners(numels.size(), 0);
  for (size_t i : by_size) {
    const auto lightest = std::min_element(load.begin(), load.end());
    owners[i] = static_cast<int>(lightest - load.begin());
    *lightest += numels[i];
  }
  return owners;
}

ZeroShards::ZeroShards(std::vector<Tensor> params, std::shared_ptr<ProcessGroup> group)
    : params_(std::move(params)), group_(std::move(group)) {
  KILN_CHECK(group_, "ZeroShards: no process group");
  std::vector<int64_t> numels;
  for (const Tensor& p : params_) numels.push_back(p.numel());
  owners_ = assign_owners(numels, group_->size());
  for (size_t i = 0; i < params_.size(); ++i) owner_of_.emplace(params_[i].impl(), owners_[i]);
}

bool ZeroShards::owns(const Tensor& param) const {
  if (const auto it = owner_of_.find(param.impl()); it != owner_of_.end()) return it->second == group_->rank();
  detail::throw_error("ZeRO: a parameter of shape ", param.shape(), " that the optimizer steps is not one of the "
                      "module's trainable parameters; ZeRO shards the module's parameters only");
}

int64_t ZeroShards::owned_numel() const {
  int64_t n = 0;
  for (size_t i = 0; i < params_.size(); ++i)
    if (owners_[i] == group_->rank()) n += params_[i].numel();
  return n;
}

void ZeroShards::drop_unowned_gradients() {
  for (size_t i = 0; i < params_.size(); ++i)
    if (owners_[i] != group_->rank()) params_[i].mutable_grad() = Tensor();
}

bool ZeroShards::reduce_scatter_gradients() {
  autograd::NoGradGuard no_grad;
  const int rank = group_->rank();
  bool non_finite = false;
  for (const auto& [dtype, layout] : layouts(params_, owners_, group_->size())) {
    const int64_t total = std::accumulate(layout.counts.begin(), layout.counts.end(), int64_t{0});
    Tensor flat = empty({total}, {.dtype = dtype});
    int64_t offset = 0;
    for (size_t i : layout.order) {
      Tensor& p = params_[i];
      Tensor slot = flat.narrow(0, offset, p.numel());
      if (p.grad().defined()) slot.copy_(p.grad().reshape({p.numel()}));
      else slot.zero_();
      p.mutable_grad() = Tensor();  // copied: gradients and the flat buffer are never both whole
      offset += p.numel();
    }
    Tensor mine = empty({layout.counts[static_cast<size_t>(rank)]}, {.dtype = dtype});
    group_->reduce_scatter(flat, mine, layout.counts, ReduceOp::avg)->wait();
    flat = Tensor();  // the full-size buffer goes before the owned gradients are made
    offset = 0;
    for (size_t i : layout.order) {
      if (owners_[i] != rank) continue;
      Tensor& p = params_[i];
      p.mutable_grad() = mine.narrow(0, offset, p.numel()).view(p.shape());  // views of one buffer: no copy
      offset += p.numel();
    }
    if (mine.numel() > 0) non_finite |= !std::isfinite(mine.to(DType::f64).sum().item<double>());
  }
  drop_unowned_gradients();
  Tensor any = full({1}, non_finite ? 1 : 0, {.dtype = DType::i64});
  group_->all_reduce(any, ReduceOp::max)->wait();
  return any.item<int64_t>() > 0;
}

double ZeroShards::clip_grad_norm(double max_norm, double norm_type) {
  std::vector<Tensor> owned;
  for (size_t i = 0; i < params_.size(); ++i)
    if (owners_[i] == group_->rank()) owned.push_back(params_[i]);
  const optim::NormCombine across_ranks = [this](double partial, bool inf_norm) {
    // [value, NaN seen]: a NaN anywhere makes the total NaN, whatever max() does with it.
    Tensor parts = full({2}, 0.0, {.dtype = DType::f64});
    parts.data_ptr<double>()[0] = std::isnan(partial) ? 0.0 : partial;
    parts.data_ptr<double>()[1] = std::isnan(partial) ? 1.0 : 0.0;
    Tensor value = parts.narrow(0, 0, 1).clone(), nans = parts.narrow(0, 1, 1).clone();
    group_->all_reduce(value, inf_norm ? ReduceOp::max : ReduceOp::sum)->wait();
    group_->all_reduce(nans, ReduceOp::sum)->wait();
    return nans.item<double>() > 0 ? std::nan("") : value.item<double>();
  };
  return optim::clip_grad_norm_(owned, max_norm, norm_type, false, across_ranks).item<double>();
}

void ZeroShards::gather_parameters() {
  autograd::NoGradGuard no_grad;
  const int rank = group_->rank();
  for (const auto& [dtype, layout] : layouts(params_, owners_, group_->size())) {
    const int64_t total = std::accumulate(layout.counts.begin(), layout.counts.end(), int64_t{0});
    Tensor mine = empty({layout.counts[static_cast<size_t>(rank)]}, {.dtype = dtype});
    int64_t offset = 0;
    for (size_t i : layout.order) {
      if (owners_[i] != rank) continue;
      mine.narrow(0, offset, params_[i].numel()).copy_(params_[i].detach().reshape({params_[i].numel()}));
      offset += params_[i].numel();
    }
    Tensor all = empty({total}, {.dtype = dtype});
    group_->all_gather(mine, all, layout.counts)->wait();
    offset = 0;
    for (size_t i : layout.order) {
      const Tensor& p = params_[i];
      if (owners_[i] != rank) p.detach().copy_(all.narrow(0, offset, p.numel()).view(p.shape()));
      offset += p.numel();
    }
  }
}

// Every rank's owned part travels to rank 0 as a JSON list of (name, dtype, shape) and one byte
// buffer; rank 0 adds each part to its own state_dict.
State ZeroShards::consolidate(const optim::Optimizer& optimizer) const {
  State mine = optimizer.state_dict();
  const int rank = group_->rank();
  if (rank != 0) {
    Json header = Json::array();
    int64_t payload_bytes = 0;
    for (const auto& [name, t] : mine.tensors) {
      header.push_back({{"name", name}, {"dtype", static_cast<int>(t.dtype())}, {"shape", std::vector<int64_t>(t.shape().begin(), t.shape().end())}});
      payload_bytes += static_cast<int64_t>(t.nbytes());
    }
    Tensor payload = empty({payload_bytes}, {.dtype = DType::u8});
    int64_t offset = 0;
    for (const auto& [name, t] : mine.tensors) {
      const Tensor c = t.contiguous();
      std::memcpy(static_cast<char*>(payload.data_ptr()) + offset, c.data_ptr(), c.nbytes());
      offset += static_cast<int64_t>(c.nbytes());
    }
    Tensor text = bytes_of(header.dump());
    Tensor sizes = tensor(std::vector<int64_t>{text.numel(), payload_bytes});
    group_->send(sizes, 0, 1)->wait();
    group_->send(text, 0, 2)->wait();
    group_->send(payload, 0, 3)->wait();
    return {};
  }
  for (int r = 1; r < group_->size(); ++r) {
    Tensor sizes = empty({2}, {.dtype = DType::i64});
    group_->recv(sizes, r, 1)->wait();
    Tensor text = empty({sizes.data_ptr<int64_t>()[0]}, {.dtype = DType::u8});
    Tensor payload = empty({sizes.data_ptr<int64_t>()[1]}, {.dtype = DType::u8});
    group_->recv(text, r, 2)->wait();
    group_->recv(payload, r, 3)->wait();
    const Json header = Json::parse(std::string(static_cast<const char*>(text.data_ptr()),
                                                static_cast<size_t>(text.numel())));
    int64_t offset = 0;
    for (const Json& entry : header) {
      Tensor t = empty(Dims(entry.at("shape").get<std::vector<int64_t>>()), {.dtype = static_cast<DType>(entry.at("dtype").get<int>())});
      std::memcpy(t.data_ptr(), static_cast<const char*>(payload.data_ptr()) + offset, t.nbytes());
      offset += static_cast<int64_t>(t.nbytes());
      const std::string name = entry.at("name").get<std::string>();
      KILN_ASSERT(!mine.tensors.contains(name), "ZeRO: optimizer state '", name, "' is held by two ranks");
      mine.tensors.insert(name, std::move(t));
    }
  }
  return mine;
}

void ZeroShards::drop_unowned_state(optim::Optimizer& optimizer) const {
  for (const auto& group : optimizer.param_groups())
    for (const Tensor& p : group.params)
      if (!owns(p)) optimizer.clear_state_of(p);
}

}  // namespace kiln::dist
