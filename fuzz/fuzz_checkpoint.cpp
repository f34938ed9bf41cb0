// libFuzzer target: the native checkpoint reader over arbitrary bytes. Any input must end in a
// loaded State or a kiln::Error; sanitizers turn every other outcome into a crash report.
// Built and run by scripts/run-fuzz.sh.
#include <cstddef>
#include <cstdint>

#include "io/checkpoint/reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto reader = kiln::io::CheckpointReader::from_memory(data, size, "fuzz");
    (void)reader.meta().dump();
    for (const auto& r : reader.records()) {
      (void)reader.get(r.name, /*zero_copy=*/true, /*verify=*/true);
      (void)reader.get(r.name, /*zero_copy=*/false, /*verify=*/false);
    }
  } catch (const kiln::Error&) {
  }
  return 0;
}
