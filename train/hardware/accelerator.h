// Accelerator: the kind of device a run computes on (Lightning's Accelerator): whether this
// machine has it, how many, which devices a `devices` setting means, per-device setup and
// teardown, memory statistics, and which dtypes its kernels run. The Strategy asks it for
// devices; nothing in the loops asks what kind of device it is.
#pragma once

#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tensor/device.h"
#include "tensor/dtype.h"

namespace kiln {

class Accelerator {
 public:
  virtual ~Accelerator() = default;
  virtual std::string name() const = 0;  // as Trainer(accelerator = ...) names it: "cpu", "cuda"
  virtual DeviceType device_type() const = 0;
  virtual bool is_available() const = 0;
  virtual int auto_device_count() const = 0;  // what devices = -1 (all) means
  // The most `devices` may ask for: the devices there are, unless each "device" is a process.
  virtual int max_devices() const { return auto_device_count(); }
  // The devices `devices` (N > 0, or -1 for all) stands for; throws when there are not that many.
  std::vector<Device> parse_devices(int devices) const;
  virtual void setup_device(const Device&) {}
  virtual void teardown() {}
  // Memory and utilisation figures for DeviceStatsMonitor-style logging (name -> value).
  virtual std::map<std::string, double> device_stats(const Device& device) const;
  // Whether this accelerator computes in `dtype` (the 16-bit precisions check it before a run).
  virtual bool supports_dtype(DType) const { return true; }
};

// Kiln's CPU kernels: one device ("cpu"); every dtype runs (16-bit floats through f32 where the CPU
// lacks instructions for them, Note [16-bit products through f32] in kernels/cpu/matmul.cpp).
class CpuAccelerator : public Accelerator {
 public:
  std::string name() const override { return "cpu"; }
  DeviceType device_type() const override { return DeviceType::cpu; }
  bool is_available() const override { return true; }
  int auto_device_count() const override { return 1; }
  // devices = N means N processes on this machine's CPU (Lightning's), each with device "cpu".
  int max_devices() const override { return std::numeric_limits<int>::max(); }
  std::map<std::string, double> device_stats(const Device& device) const override;
};

// NVIDIA GPUs through Kiln's CUDA backend; available when Kiln was built with CUDA and a GPU is present.
class CudaAccelerator : public Accelerator {
 public:
  std::string name() const override { return "cuda"; }
  DeviceType device_type() const override { return DeviceType::cuda; }
  bool is_available() const override { return cuda::device_count() > 0; }
  int auto_device_count() const override { return cuda::device_count(); }
};

// The registered accelerators by name ("cpu", "cuda"; "gpu" is an alias of "cuda" as in Lightning).
std::vector<std::string> accelerator_names();
std::shared_ptr<Accelerator> make_accelerator(const std::string& name);

}  // namespace kiln
