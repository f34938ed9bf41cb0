// Printing like PyTorch: tensor([[1., 2.], [3., 4.]]), with dtype and device suffixes when they
// are not the defaults, and "..." summaries past 1000 elements.
#include <cmath>
#include <cstdio>
#include <sstream>
#include <vector>

#include "tensor/tensor.h"

namespace kiln {
namespace {

constexpr int64_t kSummarizeAbove = 1000;
constexpr int64_t kEdgeItems = 3;

enum class FloatStyle { integral, fixed, scientific };

struct Formatter {
  bool floating = false, boolean = false;
  FloatStyle style = FloatStyle::fixed;
  int width = 1;

  std::string format(double v) const {
    char buf[64];
    if (boolean) return v != 0 ? "True" : "False";
    if (!floating) { std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v)); return buf; }
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    switch (style) {
      case FloatStyle::integral: std::snprintf(buf, sizeof buf, "%.0f.", v); break;
      case FloatStyle::fixed: std::snprintf(buf, sizeof buf, "%.4f", v); break;
      case FloatStyle::scientific: std::snprintf(buf, sizeof buf, "%.4e", v); break;
    }
    return buf;
  }
};

// Reads element `index` (a multi-index) of a CPU tensor as double.
double element(const Tensor& t, const std::vector<int64_t>& index) {
  int64_t off = 0;
  for (size_t d = 0; d < index.size(); ++d) off += index[d] * t.strides()[static_cast<int>(d)];
  const char* p = static_cast<const char*>(t.data_ptr()) + off * static_cast<int64_t>(t.element_size());
  return visit_dtype(t.dtype(), [&]<class T>() {
    return static_cast<double>(static_cast<compute_t<T>>(*reinterpret_cast<const T*>(p)));
  });
}

// The indices along one dim that a (possibly summarized) print shows; -1 stands for "...".
std::vector<int64_t> shown(int64_t n, bool summarize) {
  std::vector<int64_t> out;
  if (summarize && n > 2 * kEdgeItems) {
    for (int64_t i = 0; i < kEdgeItems; ++i) out.push_back(i);
    out.push_back(-1);
    for (int64_t i = n - kEdgeItems; i < n; ++i) out.push_back(i);
  } else {
    for (int64_t i = 0; i < n; ++i) out.push_back(i);
  }
  return out;
}

void collect(const Tensor& t, std::vector<int64_t>& idx, bool summarize, std::vector<double>& out) {
  if (static_cast<int>(idx.size()) == t.dim()) { out.push_back(element(t, idx)); return; }
  for (int64_t i : shown(t.shape()[static_cast<int>(idx.size())], summarize)) {
    if (i < 0) continue;
    idx.push_back(i);
    collect(t, idx, summarize, out);
    idx.pop_back();
  }
}

void render(const Tensor& t, std::vector<int64_t>& idx, bool summarize, const Formatter& f, int indent,
            std::ostringstream& os) {
  const int d = static_cast<int>(idx.size());
  if (d == t.dim()) {
    const std::string s = f.format(element(t, idx));
    os << std::string(static_cast<size_t>(std::max(0, f.width - static_cast<int>(s.size()))), ' ') << s;
    return;
  }
  os << '[';
  const auto items = shown(t.shape()[d], summarize);
  for (size_t k = 0; k < items.size(); ++k) {
    if (k) {
      os << ',';
      if (d == t.dim() - 1) os << ' ';
      else os << std::string(static_cast<size_t>(t.dim() - 1 - d), '\n') << std::string(static_cast<size_t>(indent + d + 1), ' ');
    }
    if (items[k] < 0) { os << (d == t.dim() - 1 ? " ..." : "..."); continue; }  // torch's spacing
    idx.push_back(items[k]);
    render(t, idx, summarize, f, indent, os);
    idx.pop_back();
  }
  os << ']';
}

Formatter make_formatter(const Tensor& t, const std::vector<double>& values) {
  Formatter f;
  f.boolean = t.dtype() == DType::boolean;
  f.floating = t.is_floating();
  if (f.floating) {
    bool integral = true;
    double max_abs = 0, min_abs = INFINITY;
    for (double v : values) {
      if (!std::isfinite(v)) continue;
      integral = integral && v == std::nearbyint(v);
      max_abs = std::max(max_abs, std::abs(v));
      if (v != 0) min_abs = std::min(min_abs, std::abs(v));
    }
    f.style = integral && max_abs < 1e8 ? FloatStyle::integral
              : (max_abs >= 1e8 || (min_abs < 1e-4) || (min_abs < INFINITY && max_abs / min_abs > 1000.0))
                  ? FloatStyle::scientific
                  : FloatStyle::fixed;
  }
  for (double v : values)  // like torch, non-finite values do not widen the columns
    if (std::isfinite(v) || !f.floating) f.width = std::max(f.width, static_cast<int>(f.format(v).size()));
  return f;
}

}  // namespace

std::string Tensor::str() const {
  if (!defined()) return "tensor(undefined)";
  const Tensor host = device().is_cpu() ? *this : to(Device::cpu());
  std::ostringstream os;
  os << "tensor(";
  const bool summarize = numel() > kSummarizeAbove;
  std::vector<double> values;
  std::vector<int64_t> idx;
  collect(host, idx, summarize, values);
  const Formatter f = make_formatter(host, values);
  if (numel() == 0) {
    os << "[]";
  } else {
    render(host, idx, summarize, f, static_cast<int>(std::string("tensor(").size()), os);
  }
  if (numel() == 0 && dim() != 1) {
    os << ", size=(";
    for (int i = 0; i < dim(); ++i) os << (i ? ", " : "") << shape()[i];
    os << (dim() == 1 ? ",)" : ")");
  }
  if (!device().is_cpu()) os << ", device='" << device() << "'";
  const DType t = dtype();
  if (t != DType::f32 && t != DType::i64 && t != DType::boolean) os << ", dtype=torch." << t;
  os << ')';
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace kiln
