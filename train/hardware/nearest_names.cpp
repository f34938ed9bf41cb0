// Levenshtein distance over lower-cased names; a name counts as near when at most a third of it
// (and at least two characters) differs, or when one name contains the other ("bf16" in "bf16-mixed").
#include "train/hardware/nearest_names.h"

#include <algorithm>
#include <cctype>
#include <numeric>
#include <utility>

namespace kiln {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  std::iota(row.begin(), row.end(), size_t{0});
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

std::vector<std::string> nearest_names(std::string_view given, const std::vector<std::string>& valid) {
  const std::string g = lower(given);
  std::vector<std::pair<size_t, std::string>> near;
  for (const std::string& name : valid) {
    const std::string n = lower(name);
    const size_t distance = edit_distance(g, n);
    const size_t allowed = std::max<size_t>(2, n.size() / 3);
    const bool contains = !g.empty() && (n.find(g) != std::string::npos || g.find(n) != std::string::npos);
    if (distance <= allowed || contains) near.emplace_back(distance, name);
  }
  std::stable_sort(near.begin(), near.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  for (auto& [distance, name] : near) out.push_back(std::move(name));
  return out;
}

std::string did_you_mean(std::string_view given, const std::vector<std::string>& valid) {
  const std::vector<std::string> near = nearest_names(given, valid);
  if (near.empty()) return "";
  std::string out = "; did you mean ";
  for (size_t i = 0; i < near.size() && i < 3; ++i) {
    if (i > 0) out += i + 1 == std::min<size_t>(near.size(), 3) ? " or " : ", ";
    out += "'" + near[i] + "'";
  }
  return out + "?";
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace kiln
