// Small pieces the built-in callbacks share: numbers printed and parsed the way Python does
// (Lightning's checkpoint names and messages come from Python's str.format), JSON for scores that
// may be infinite, and a question about the run's validation schedule.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "tensor/state_dict.h"  // defines: Json

namespace kiln {
class Trainer;
}

namespace kiln::callbacks {

using Metrics = std::map<std::string, double>;

// Python's repr(float): the shortest text that reads back to v ("0.1", "1.0", "1e-05", "inf").
std::string python_float_repr(double v);
// Python's format(v, spec) for a float, or for an int when `is_integer` (Lightning's {epoch:02d}):
// [[fill]align][sign][0][width][.precision][type] with type one of d e E f F g G % or none.
std::string python_format(double v, const std::string& spec, bool is_integer);

// JSON has no inf or nan: such scores are saved as the strings "inf", "-inf" and "nan".
Json score_to_json(double v);
double score_from_json(const Json& j, const char* what);

// The metric names of `metrics` as Lightning lists them in errors: ['a', 'b'].
std::string python_key_list(const Metrics& metrics);

// Lightning's `trainer.val_check_interval == 1.0 and check_val_every_n_epoch == 1`: validation runs
// once per training epoch, at its end.
bool validates_once_per_epoch(const Trainer& trainer);

// A wall clock for intervals (monotonic), in seconds.
double monotonic_seconds();

}  // namespace kiln::callbacks
