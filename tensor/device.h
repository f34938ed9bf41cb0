// Device: where a tensor's bytes live (cpu, or cuda:N).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>

namespace kiln {

enum class DeviceType : uint8_t { cpu, cuda };
inline constexpr int kNumDeviceTypes = 2;

struct Device {
  DeviceType type = DeviceType::cpu;
  int8_t index = 0;  // always 0 for cpu

  constexpr Device() = default;
  constexpr Device(DeviceType t, int i = 0) : type(t), index(static_cast<int8_t>(i)) {}  // NOLINT
  Device(std::string_view spec);  // "cpu", "cuda", "cuda:1"; NOLINT: implicit like torch.device("cuda")
  Device(const char* spec) : Device(std::string_view(spec)) {}  // NOLINT

  static constexpr Device cpu() { return Device(DeviceType::cpu, 0); }
  static constexpr Device cuda(int i = 0) { return Device(DeviceType::cuda, i); }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  std::string str() const;

  friend bool operator==(const Device& a, const Device& b) = default;
};

std::string_view device_type_name(DeviceType t);

namespace cuda {
// How many CUDA devices this process can use: 0 when Kiln was built without CUDA, when no driver
// is installed, or when no GPU is present.
int device_count();
inline bool is_available() { return device_count() > 0; }
// Lets the CUDA backend report its device count (set at static-initialisation time).
void register_device_count(int (*fn)());
}  // namespace cuda
std::ostream& operator<<(std::ostream& os, const Device& d);

}  // namespace kiln
