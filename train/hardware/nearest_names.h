// Suggestions for a misspelt name: the valid names closest to what the user wrote, for errors
// such as "precision 'bf16-mix' is not one of ...; did you mean 'bf16-mixed'?".
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kiln {

// The names of `valid` within a small edit distance of `given` (case-insensitive), nearest first.
std::vector<std::string> nearest_names(std::string_view given, const std::vector<std::string>& valid);

// "; did you mean 'a' or 'b'?" when some are near, else "".
std::string did_you_mean(std::string_view given, const std::vector<std::string>& valid);

// "a, b, c".
std::string join_names(const std::vector<std::string>& names);

}  // namespace kiln
