// kiln::Error and the two check macros (STYLE L7).
// KILN_CHECK reports a user error: it throws kiln::Error, and its message parts are formatted only on
// failure. KILN_ASSERT marks an internal invariant: a failure is a kiln bug, reported as such.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace kiln {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <class... Parts>
[[noreturn]] void throw_error(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw Error(os.str());
}
[[noreturn]] void throw_internal(const char* cond, const char* file, int line, const std::string& msg);

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}
}  // namespace detail

}  // namespace kiln

#define KILN_CHECK(cond, ...)                                  \
  do {                                                         \
    if (__builtin_expect(!(cond), 0)) ::kiln::detail::throw_error(__VA_ARGS__); \
  } while (0)

#define KILN_ASSERT(cond, ...)                                                             \
  do {                                                                                     \
    if (__builtin_expect(!(cond), 0))                                                      \
      ::kiln::detail::throw_internal(#cond, __FILE__, __LINE__, ::kiln::detail::concat("" __VA_OPT__(,) __VA_ARGS__)); \
  } while (0)
