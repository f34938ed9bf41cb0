// Dims: a tensor's shape or strides, stored inline (no heap) up to kMaxDims entries.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <span>
#include <vector>

#include "tensor/error.h"

namespace kiln {

inline constexpr int kMaxDims = 16;

class Dims {
 public:
  Dims() = default;
  Dims(std::initializer_list<int64_t> v) { assign(v.begin(), v.size()); }
  Dims(std::span<const int64_t> v) { assign(v.data(), v.size()); }  // NOLINT: implicit from any int span
  Dims(const std::vector<int64_t>& v) { assign(v.data(), v.size()); }  // NOLINT
  static Dims filled(int n, int64_t value) {
    Dims d;
    d.resize(n, value);
    return d;
  }

  int size() const { return n_; }
  bool empty() const { return n_ == 0; }
  int64_t* data() { return v_; }
  const int64_t* data() const { return v_; }
  int64_t& operator[](int i) { return v_[i]; }
  int64_t operator[](int i) const { return v_[i]; }
  int64_t* begin() { return v_; }
  int64_t* end() { return v_ + n_; }
  const int64_t* begin() const { return v_; }
  const int64_t* end() const { return v_ + n_; }
  int64_t back() const { return v_[n_ - 1]; }
  operator std::span<const int64_t>() const { return {v_, static_cast<size_t>(n_)}; }  // NOLINT
  std::vector<int64_t> vec() const { return {v_, v_ + n_}; }

  void resize(int n, int64_t value = 0) {
    KILN_CHECK(n >= 0 && n <= kMaxDims, "tensors have at most ", kMaxDims, " dims, asked for ", n);
    for (int i = n_; i < n; ++i) v_[i] = value;
    n_ = n;
  }
  void push_back(int64_t x) {
    KILN_CHECK(n_ < kMaxDims, "tensors have at most ", kMaxDims, " dims");
    v_[n_++] = x;
  }
  void insert(int pos, int64_t x) {
    KILN_CHECK(n_ < kMaxDims, "tensors have at most ", kMaxDims, " dims");
    std::copy_backward(v_ + pos, v_ + n_, v_ + n_ + 1);
    v_[pos] = x;
    ++n_;
  }
  void erase(int pos) {
    std::copy(v_ + pos + 1, v_ + n_, v_ + pos);
    --n_;
  }

  friend bool operator==(const Dims& a, const Dims& b) {
    if (a.n_ != b.n_) return false;
    for (int i = 0; i < a.n_; ++i)  // a plain loop: std::equal calls memcmp for a few integers
      if (a.v_[i] != b.v_[i]) return false;
    return true;
  }

 private:
  void assign(const int64_t* p, size_t n) {
    KILN_CHECK(n <= static_cast<size_t>(kMaxDims), "tensors have at most ", kMaxDims, " dims, got ", n);
    std::copy(p, p + n, v_);
    n_ = static_cast<int>(n);
  }
  int64_t v_[kMaxDims];
  int n_ = 0;
};

inline std::ostream& operator<<(std::ostream& os, const Dims& d) {
  os << '[';
  for (int i = 0; i < d.size(); ++i) os << (i ? ", " : "") << d[i];
  return os << ']';
}

// Product of the sizes, checked against int64 overflow; `what` names the caller in the error.
int64_t checked_numel(const Dims& shape, const char* what);
// Strides of a contiguous (row-major) tensor of this shape, in elements.
Dims contiguous_strides(const Dims& shape);
// Wraps a possibly negative dim into [0, rank); `op` names the caller in the error.
int wrap_dim(int64_t dim, int rank, const char* op);

}  // namespace kiln
