// libFuzzer target: the native checkpoint reader over arbitrary bytes. Any input must end in a
// loaded State or a kiln::Error; sanitizers turn every other outcome into a crash report.
// Each input is read twice: as it is, and with the JSON header's checksum recomputed, since
// random mutations almost never match a CRC and would otherwise stop at the checksum check,
// leaving the JSON and tensor-table validation unexplored. Built and run by scripts/run-fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "io/checkpoint/checksum.h"
#include "io/checkpoint/format.h"
#include "io/checkpoint/reader.h"

namespace {
void read_all(const uint8_t* data, size_t size) {
  try {
    const auto reader = kiln::io::CheckpointReader::from_memory(data, size, "fuzz");
    (void)reader.meta().dump();
    for (const auto& r : reader.records()) {
      (void)reader.get(r.name, /*zero_copy=*/true, /*verify=*/true);
      (void)reader.get(r.name, /*zero_copy=*/false, /*verify=*/false);
    }
  } catch (const kiln::Error&) {
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace f = kiln::io::format;
  read_all(data, size);
  if (size < f::kFixedHeaderBytes) return 0;
  const uint64_t header_bytes = f::load_le<uint64_t>(data + f::kAtHeaderBytes);
  if (header_bytes == 0 || header_bytes > size - f::kFixedHeaderBytes) return 0;
  std::vector<uint8_t> fixed(data, data + size);
  f::store_le<uint32_t>(fixed.data() + f::kAtHeaderCrc, kiln::io::crc32c(data + f::kFixedHeaderBytes, header_bytes));
  read_all(fixed.data(), fixed.size());
  return 0;
}
