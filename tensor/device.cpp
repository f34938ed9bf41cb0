// Device parsing and printing.
#include "tensor/device.h"

#include <charconv>

#include "tensor/error.h"

namespace kiln {

Device::Device(std::string_view spec) {
  const auto colon = spec.find(':');
  const std::string_view kind = spec.substr(0, colon);
  if (kind == "cpu") {
    type = DeviceType::cpu;
    KILN_CHECK(colon == std::string_view::npos || spec.substr(colon + 1) == "0",
               "Device: cpu has only index 0, got '", spec, "'");
    return;
  }
  KILN_CHECK(kind == "cuda", "Device: expected 'cpu', 'cuda' or 'cuda:N', got '", spec, "'");
  type = DeviceType::cuda;
  if (colon == std::string_view::npos) return;
  const std::string_view num = spec.substr(colon + 1);
  int i = -1;
  const auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), i);
  KILN_CHECK(ec == std::errc() && end == num.data() + num.size() && i >= 0 && i < 128,
             "Device: bad cuda index in '", spec, "' (expected cuda:N with 0 <= N < 128)");
  index = static_cast<int8_t>(i);
}

std::string_view device_type_name(DeviceType t) { return t == DeviceType::cpu ? "cpu" : "cuda"; }

std::string Device::str() const {
  if (type == DeviceType::cpu) return "cpu";
  return "cuda:" + std::to_string(index);
}

std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }

namespace cuda {
static int (*g_device_count)() = nullptr;
void register_device_count(int (*fn)()) { g_device_count = fn; }
int device_count() { return g_device_count ? g_device_count() : 0; }
}  // namespace cuda

}  // namespace kiln
