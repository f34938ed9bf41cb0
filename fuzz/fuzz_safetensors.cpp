// libFuzzer target: the safetensors reader over arbitrary bytes (see fuzz_checkpoint.cpp).
#include <cstddef>
#include <cstdint>

#include "io/safetensors/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto reader = kiln::io::SafetensorsReader::from_memory(data, size, "fuzz");
    for (const auto& r : reader.records()) {
      (void)reader.get(r.name, /*zero_copy=*/true);
      (void)reader.get(r.name, /*zero_copy=*/false);
    }
  } catch (const kiln::Error&) {
  }
  return 0;
}
