// The shapes of saved state shared by every layer: a TensorDict (named tensors in insertion order,
// like PyTorch's OrderedDict state_dict) and a State (tensors plus JSON metadata), which is what a
// checkpoint file stores. Modules, optimizers, schedulers, loaders and loops all save into these.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tensor/error.h"
#include "tensor/tensor.h"

namespace kiln {

using Json = nlohmann::json;

// Named tensors in insertion order with O(1) lookup. Names are unique.
class TensorDict {
 public:
  using Item = std::pair<std::string, Tensor>;

  // Adds a new entry; a name that is already present is an error.
  void insert(std::string name, Tensor value) {
    auto [it, inserted] = index_.emplace(name, items_.size());
    KILN_CHECK(inserted, "TensorDict: duplicate name '", name, "'");
    items_.emplace_back(std::move(name), std::move(value));
  }
  // Adds or replaces.
  void set(const std::string& name, Tensor value) {
    if (auto it = index_.find(name); it != index_.end()) items_[it->second].second = std::move(value);
    else insert(name, std::move(value));
  }
  bool contains(std::string_view name) const { return index_.count(std::string(name)) != 0; }
  const Tensor* find(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &items_[it->second].second;
  }
  const Tensor& at(std::string_view name) const {
    const Tensor* t = find(name);
    KILN_CHECK(t, "TensorDict: no entry named '", name, "'");
    return *t;
  }
  // Removes an entry if present; returns whether it was.
  bool erase(std::string_view name) {
    auto it = index_.find(std::string(name));
    if (it == index_.end()) return false;
    items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(it->second));
    rebuild_index();
    return true;
  }

  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }
  const std::vector<Item>& items() const { return items_; }
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    out.reserve(items_.size());
    for (const auto& [name, t] : items_) out.push_back(name);
    return out;
  }

 private:
  void rebuild_index() {
    index_.clear();
    for (size_t i = 0; i < items_.size(); ++i) index_.emplace(items_[i].first, i);
  }

  std::vector<Item> items_;
  std::unordered_map<std::string, size_t> index_;
};

// Tensors plus everything else (numbers, strings, nested objects) as JSON. A checkpoint file holds
// exactly one State; composite states nest by prefixing tensor names ("optimizer.state.0.exp_avg").
struct State {
  TensorDict tensors;
  Json meta = Json::object();
};

}  // namespace kiln
