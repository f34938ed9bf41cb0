// Reading scheduler state back from JSON with kiln::Error messages (internal to nn/optim).
#pragma once

#include <string>

#include "tensor/error.h"
#include "tensor/state_dict.h"

namespace kiln::optim {

// Throws unless meta is a scheduler state saved by `name`.
inline void check_scheduler_meta(const Json& meta, const std::string& name, const std::string& op) {
  KILN_CHECK(meta.is_object() && meta.contains("scheduler"), op, ": not a scheduler state (no 'scheduler' key)");
  KILN_CHECK(meta["scheduler"] == name, op, ": the state was saved by ", meta["scheduler"].dump(), ", not ", name);
}

// meta[key] as T; a missing key or a value of another type throws kiln::Error.
template <class T>
T meta_field(const Json& meta, const char* key, const std::string& op) {
  KILN_CHECK(meta.is_object() && meta.contains(key), op, ": the state lacks '", key, "'");
  try {
    return meta[key].get<T>();
  } catch (const Json::exception& e) {
    detail::throw_error(op, ": bad '", key, "' (", meta[key].dump(), "): ", e.what());
  }
}

}  // namespace kiln::optim
