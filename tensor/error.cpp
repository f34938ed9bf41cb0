// Formatting of internal-invariant failures (KILN_ASSERT).
#include "tensor/error.h"

namespace kiln::detail {

void throw_internal(const char* cond, const char* file, int line, const std::string& msg) {
  std::ostringstream os;
  os << "kiln bug: internal check '" << cond << "' failed at " << file << ":" << line;
  if (!msg.empty()) os << ": " << msg;
  os << " (please report it)";
  throw Error(os.str());
}

}  // namespace kiln::detail
