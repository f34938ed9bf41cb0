// CRC32C (Castagnoli), the per-tensor and header checksum of the native checkpoint format. One
// implementation is a slicing-by-8 table walk that runs anywhere; the other uses the SSE4.2 crc32
// instruction and is picked at run time when the CPU has it. Both give identical values.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kiln::io {

// Continues a CRC32C: crc32c(b, nb, crc32c(a, na)) == crc32c(a ++ b). Start from 0.
uint32_t crc32c(const void* data, size_t nbytes, uint32_t crc = 0);

// The table-driven path alone (exposed so tests can compare the two paths).
uint32_t crc32c_portable(const void* data, size_t nbytes, uint32_t crc = 0);

// Whether crc32c() uses the crc32 instruction on this machine.
bool crc32c_uses_hardware();

}  // namespace kiln::io
