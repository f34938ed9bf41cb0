// The CPU and CUDA accelerators and the name registry.
#include "train/hardware/accelerator.h"

#include <fstream>
#include <sstream>

#include "tensor/allocator.h"
#include "tensor/error.h"
#include "train/hardware/nearest_names.h"

namespace kiln {
namespace {

// The machine's memory in use as a percentage, from /proc/meminfo (psutil's virtual_memory().percent).
double memory_percent_in_use() {
  std::ifstream meminfo("/proc/meminfo");
  double total = 0, available = 0;
  std::string key;
  double value = 0;
  std::string unit;
  while (meminfo >> key >> value >> unit) {
    if (key == "MemTotal:") total = value;
    else if (key == "MemAvailable:") available = value;
  }
  return total > 0 ? 100.0 * (total - available) / total : 0.0;
}

// This process's resident set, from /proc/self/statm (pages).
double resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  double size = 0, resident = 0;
  statm >> size >> resident;
  return resident * 4096.0;
}

}  // namespace

std::vector<Device> Accelerator::parse_devices(int devices) const {
  KILN_CHECK(devices == -1 || devices > 0, "Trainer(devices=", devices, "): devices must be a positive number or -1 "
             "(all), using the ", name(), " accelerator");
  const int count = devices == -1 ? auto_device_count() : devices;
  KILN_CHECK(count <= max_devices(), "Trainer(devices=", devices, "): you requested ", count, " ", name(),
             " device(s), but your machine only has ", auto_device_count());
  std::vector<Device> out;
  for (int i = 0; i < count; ++i) out.push_back(Device(device_type(), device_type() == DeviceType::cpu ? 0 : i));
  return out;
}

std::map<std::string, double> Accelerator::device_stats(const Device& device) const {
  const AllocatorStats s = allocator_for(device).stats();
  return {{"allocated_bytes", static_cast<double>(s.allocated_bytes)},
          {"peak_allocated_bytes", static_cast<double>(s.peak_allocated_bytes)},
          {"reserved_bytes", static_cast<double>(s.reserved_bytes)},
          {"num_allocs", static_cast<double>(s.num_allocs)},
          {"num_system_allocs", static_cast<double>(s.num_system_allocs)}};
}

std::map<std::string, double> CpuAccelerator::device_stats(const Device& device) const {
  std::map<std::string, double> stats = Accelerator::device_stats(device);
  stats["cpu_vm_percent"] = memory_percent_in_use();
  stats["rss_bytes"] = resident_bytes();
  return stats;
}

std::vector<std::string> accelerator_names() { return {"cpu", "cuda", "gpu"}; }

std::shared_ptr<Accelerator> make_accelerator(const std::string& name) {
  if (name == "cpu") return std::make_shared<CpuAccelerator>();
  if (name == "cuda" || name == "gpu") return std::make_shared<CudaAccelerator>();
  detail::throw_error("You selected an invalid accelerator name: `accelerator='", name,
                      "'`. Available names are: auto, ", join_names(accelerator_names()),
                      did_you_mean(name, accelerator_names()));
}

}  // namespace kiln
