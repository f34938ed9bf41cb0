// The native checkpoint format's constants and its 64-byte fixed header (docs/checkpoint-format.md
// is the specification). Shared by the writer, the reader, the fuzz targets and the tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace kiln::io::format {

inline constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'C', 'K', 'P', 'T'};
inline constexpr uint32_t kVersion = 1;              // the newest version this build reads and writes
inline constexpr size_t kFixedHeaderBytes = 64;
inline constexpr size_t kAlignment = 64;             // of the data section and of every tensor in it
inline constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // JSON header cap, as safetensors' 100 MB
inline constexpr int kMaxJsonDepth = 64;             // nesting of arrays/objects in any JSON header
inline constexpr size_t kMaxNameBytes = 4096;
inline constexpr std::string_view kFormatName = "kiln-checkpoint";

// Byte positions of the fixed header's fields (all little-endian).
inline constexpr size_t kAtMagic = 0;          // 8 bytes
inline constexpr size_t kAtVersion = 8;        // u32
inline constexpr size_t kAtFlags = 12;         // u32, 0 in version 1
inline constexpr size_t kAtHeaderBytes = 16;   // u64, length of the JSON header
inline constexpr size_t kAtHeaderCrc = 24;     // u32, CRC32C of the JSON header
inline constexpr size_t kAtReserved0 = 28;     // u32, 0
inline constexpr size_t kAtDataOffset = 32;    // u64, = align(64 + header bytes)
inline constexpr size_t kAtDataBytes = 40;     // u64, length of the data section; ends the file
inline constexpr size_t kAtReserved1 = 48;     // 16 bytes, 0

struct FixedHeader {
  uint32_t version = kVersion;
  uint32_t flags = 0;
  uint64_t header_bytes = 0;
  uint32_t header_crc = 0;
  uint64_t data_offset = 0;
  uint64_t data_bytes = 0;
};

inline constexpr uint64_t align_up(uint64_t x, uint64_t a = kAlignment) { return (x + a - 1) / a * a; }

template <class T>
inline T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // little-endian hosts only (x86-64, aarch64)
  return v;
}
template <class T>
inline void store_le(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

inline void encode(const FixedHeader& h, uint8_t out[kFixedHeaderBytes]) {
  std::memset(out, 0, kFixedHeaderBytes);
  std::memcpy(out + kAtMagic, kMagic, sizeof(kMagic));
  store_le(out + kAtVersion, h.version);
  store_le(out + kAtFlags, h.flags);
  store_le(out + kAtHeaderBytes, h.header_bytes);
  store_le(out + kAtHeaderCrc, h.header_crc);
  store_le(out + kAtDataOffset, h.data_offset);
  store_le(out + kAtDataBytes, h.data_bytes);
}

}  // namespace kiln::io::format
