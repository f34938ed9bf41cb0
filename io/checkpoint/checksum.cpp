// CRC32C: reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF (as iSCSI, ext4
// and the SSE4.2 crc32 instruction define it). The tables are built at compile time.
#include "io/checkpoint/checksum.h"

#include <array>
#include <cstring>

namespace kiln::io {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;

// kTables[k][b]: the CRC of byte b followed by k zero bytes, the slicing-by-8 tables.
constexpr std::array<std::array<uint32_t, 256>, 8> make_tables() {
  std::array<std::array<uint32_t, 256>, 8> t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c & 1u) ? (c >> 1) ^ kPoly : c >> 1;
    t[0][b] = c;
  }
  for (int k = 1; k < 8; ++k)
    for (uint32_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xffu];
  return t;
}
constexpr auto kTables = make_tables();

uint32_t portable_raw(const uint8_t* p, size_t n, uint32_t c) {
  for (; n >= 8; n -= 8, p += 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);      // the format is little-endian; so are the machines Kiln targets
    std::memcpy(&hi, p + 4, 4);
    lo ^= c;
    c = kTables[7][lo & 0xffu] ^ kTables[6][(lo >> 8) & 0xffu] ^ kTables[5][(lo >> 16) & 0xffu] ^
        kTables[4][lo >> 24] ^ kTables[3][hi & 0xffu] ^ kTables[2][(hi >> 8) & 0xffu] ^
        kTables[1][(hi >> 16) & 0xffu] ^ kTables[0][hi >> 24];
  }
  for (; n > 0; --n, ++p) c = (c >> 8) ^ kTables[0][(c ^ *p) & 0xffu];
  return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t hardware_raw(const uint8_t* p, size_t n, uint32_t c) {
  uint64_t c64 = c;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c64 = __builtin_ia32_crc32di(c64, v);
  }
  uint32_t c32 = static_cast<uint32_t>(c64);
  for (; n > 0; --n, ++p) c32 = __builtin_ia32_crc32qi(c32, *p);
  return c32;
}
bool detect_hardware() { return __builtin_cpu_supports("sse4.2"); }
#else
uint32_t hardware_raw(const uint8_t* p, size_t n, uint32_t c) { return portable_raw(p, n, c); }
bool detect_hardware() { return false; }
#endif

const bool kHasHardware = detect_hardware();

}  // namespace

uint32_t crc32c_portable(const void* data, size_t nbytes, uint32_t crc) {
  return ~portable_raw(static_cast<const uint8_t*>(data), nbytes, ~crc);
}

uint32_t crc32c(const void* data, size_t nbytes, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  return ~(kHasHardware ? hardware_raw(p, nbytes, ~crc) : portable_raw(p, nbytes, ~crc));
}

bool crc32c_uses_hardware() { return kHasHardware; }

}  // namespace kiln::io
