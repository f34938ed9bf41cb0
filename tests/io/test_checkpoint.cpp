// Native checkpoint format: round trips of every dtype and layout, the bytes on disk, the reader's
// options (subset, zero-copy, verify), fixtures written by an independent Python writer, CRC32C,
// memory bounds of loading and saving, format detection, and the writer's own errors.
#include <sys/stat.h>

#include "ckpt_helpers.h"
#include "io/checkpoint/format.h"

namespace kt = kiln::testing;
namespace kc = kiln::testing::ckpt;
using namespace kiln;

TEST(Checksum, KnownVectorsAndBothPathsAgree) {
  // CRC32C check values (RFC 3720 B.4 and the common "123456789" check).
  EXPECT_EQ(io::crc32c("123456789", 9), 0xE3069283u);
  const std::vector<uint8_t> zeros(32, 0), ones(32, 0xff);
  EXPECT_EQ(io::crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(io::crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(io::crc32c_portable("123456789", 9), 0xE3069283u);
  std::vector<uint8_t> data(10007);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 131 + 7);
  for (size_t n : {0, 1, 7, 8, 9, 63, 64, 1000, 10007}) {
    EXPECT_EQ(io::crc32c(data.data(), n), io::crc32c_portable(data.data(), n)) << n;
    // Continuation: crc(a ++ b) == crc(b, crc(a)).
    EXPECT_EQ(io::crc32c(data.data() + n / 3, n - n / 3, io::crc32c(data.data(), n / 3)), io::crc32c(data.data(), n));
  }
}

TEST(Checkpoint, RoundTripsEveryDtypeAndLayout) {
  kc::ScratchDir dir;
  const State state = kc::sample_state();
  io::save(dir / "a.kiln", state);
  const State back = io::load(dir / "a.kiln");
  kc::expect_identical(back.tensors, state.tensors);
  EXPECT_EQ(back.meta, state.meta);
  for (const auto& [name, t] : back.tensors) EXPECT_TRUE(t.is_contiguous()) << name;
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"a.kiln"});  // no temporary left behind
}

TEST(Checkpoint, FileLayoutMatchesTheSpecification) {
  kc::ScratchDir dir;
  State s;
  s.tensors.insert("x", tensor({1.0, 2.0, 3.0}));
  s.tensors.insert("y", tensor(std::vector<int64_t>{7, 8}));
  io::save(dir / "l.kiln", s);
  const auto bytes = kc::read_bytes(dir / "l.kiln");
  namespace f = io::format;
  ASSERT_GE(bytes.size(), 64u);
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 8), "KILNCKPT");
  EXPECT_EQ(f::load_le<uint32_t>(&bytes[8]), 1u);
  const uint64_t hb = f::load_le<uint64_t>(&bytes[16]);
  const uint64_t data_offset = f::load_le<uint64_t>(&bytes[32]);
  EXPECT_EQ(data_offset % 64, 0u);
  EXPECT_EQ(data_offset, (64 + hb + 63) / 64 * 64);
  EXPECT_EQ(f::load_le<uint64_t>(&bytes[40]), 64u + 16u);  // x at 0 (12 bytes), y at 64 (16 bytes)
  EXPECT_EQ(bytes.size(), data_offset + 80);
  const std::string json(bytes.begin() + 64, bytes.begin() + 64 + static_cast<int64_t>(hb));
  EXPECT_EQ(f::load_le<uint32_t>(&bytes[24]), io::crc32c(json.data(), json.size()));
  const Json h = Json::parse(json);
  EXPECT_EQ(h["format"], "kiln-checkpoint");
  EXPECT_EQ(h["tensors"][1]["name"], "y");
  EXPECT_EQ(h["tensors"][1]["offset"], 64);
  EXPECT_EQ(h["tensors"][1]["nbytes"], 16);
  EXPECT_EQ(h["tensors"][0]["dtype"], "float32");
  EXPECT_EQ(h["tensors"][0]["shape"], Json::array({3}));
  // The data itself, little-endian, at the offsets the table gives.
  float x1;
  std::memcpy(&x1, &bytes[data_offset + 4], 4);
  EXPECT_EQ(x1, 2.0f);
  int64_t y1;
  std::memcpy(&y1, &bytes[data_offset + 64 + 8], 8);
  EXPECT_EQ(y1, 8);
  char crc[16];
  std::snprintf(crc, sizeof crc, "%08x", io::crc32c(&bytes[data_offset + 64], 16));
  EXPECT_EQ(h["tensors"][1]["crc32c"], crc);
}

TEST(Checkpoint, LoadsASubsetZeroCopyAndLazily) {
  kc::ScratchDir dir;
  const State state = kc::sample_state(5);
  io::save(dir / "z.kiln", state);
  const State part = io::load(dir / "z.kiln", {.names = {"w.int64", "scalar"}});
  EXPECT_EQ(part.tensors.keys(), (std::vector<std::string>{"w.int64", "scalar"}));
  kc::expect_identical(part.tensors.at("w.int64"), state.tensors.at("w.int64"), "subset");

  Tensor view;
  {
    const auto reader = io::CheckpointReader::open(dir / "z.kiln");
    view = reader.get("w.float32", /*zero_copy=*/true);
    const auto* base = reinterpret_cast<const uint8_t*>(reader.raw(*reader.find("w.float32")));
    EXPECT_EQ(view.data_ptr(), base);            // a view of the mapping, not a copy
    EXPECT_EQ(reinterpret_cast<uintptr_t>(base) % 64, 0u);
  }
  // The reader is gone; the tensor keeps the mapping alive, and writes to it stay private.
  kc::expect_identical(view, state.tensors.at("w.float32"), "zero-copy after the reader died");
  view.fill_(7.0);
  EXPECT_EQ(kt::at(view, 0), 7.0);
  kc::expect_identical(io::load(dir / "z.kiln").tensors.at("w.float32"), state.tensors.at("w.float32"), "file unchanged");

  kt::expect_error([&] { io::load(dir / "z.kiln", {.names = {"nope"}}); }, {"no tensor named 'nope'", "w.float32"});
}

TEST(Checkpoint, ReadsFilesFromTheIndependentPythonWriter) {
  for (DType d : kt::kAllDTypes) {
    const std::string path = kc::fixture_dir() + "/valid/" + std::string(dtype_name(d)) + ".kiln";
    const State s = io::load(path);
    EXPECT_EQ(s.meta["dtype"], dtype_name(d));
    const Tensor m = s.tensors.at(std::string(dtype_name(d)) + ".matrix");
    EXPECT_EQ(m.shape(), (Dims{2, 3}));
    for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(kt::at(m, i), kc::corpus_value(d, i)) << dtype_name(d) << " " << i;
    const Tensor scalar = s.tensors.at(std::string(dtype_name(d)) + ".scalar");
    EXPECT_EQ(scalar.dim(), 0);
    EXPECT_EQ(kt::at(scalar, 0), kc::corpus_value(d, 0));
    EXPECT_EQ(s.tensors.at(std::string(dtype_name(d)) + ".empty").shape(), (Dims{0, 4}));
  }
  const State all = io::load(kc::fixture_dir() + "/valid/all.kiln");
  EXPECT_EQ(all.tensors.size(), 24u);
  EXPECT_EQ(all.meta["nested"]["list"][1], 2.5);
}

TEST(Checkpoint, SavingThenLoadingAgainIsByteStable) {
  kc::ScratchDir dir;
  io::save(dir / "1.kiln", io::load(kc::fixture_dir() + "/valid/all.kiln"));
  EXPECT_EQ(kc::read_bytes(dir / "1.kiln"), kc::read_bytes(kc::fixture_dir() + "/valid/all.kiln"));
}

TEST(Checkpoint, LoadingAllocatesNoMoreThanTheFileHolds) {
  kc::ScratchDir dir;
  State big;
  for (int i = 0; i < 4; ++i) big.tensors.insert("t" + std::to_string(i), kt::random_tensor({256, 1024}, DType::f32));
  io::save(dir / "big.kiln", big);
  struct stat st {};
  ASSERT_EQ(::stat((dir / "big.kiln").c_str(), &st), 0);
  const int64_t before = cpu_memory_stats().allocated_bytes;
  cpu_reset_peak_memory();
  {
    const State s = io::load(dir / "big.kiln");
    const int64_t grown = cpu_memory_stats().peak_allocated_bytes - before;
    EXPECT_LE(grown, st.st_size + (16 << 20));
    EXPECT_GE(grown, 4 * 256 * 1024 * 4);  // the tensors themselves were counted
  }
  // A tiny file whose header claims 2^40-byte tensors: rejected before any allocation.
  auto bytes = kc::read_bytes(kc::fixture_dir() + "/native/41_extends_past_end.kiln");
  cpu_reset_peak_memory();
  const int64_t base = cpu_memory_stats().allocated_bytes;
  kt::expect_error([&] { io::CheckpointReader::from_memory(bytes.data(), bytes.size()).load(); }, {"past the end"});
  EXPECT_LE(cpu_memory_stats().peak_allocated_bytes - base, 16 << 20);
  // Zero-copy loads allocate no tensor memory at all.
  cpu_reset_peak_memory();
  const int64_t base2 = cpu_memory_stats().allocated_bytes;
  const State zc = io::load(dir / "big.kiln", {.zero_copy = true});
  EXPECT_EQ(cpu_memory_stats().peak_allocated_bytes - base2, 0);
}

TEST(Checkpoint, SavingNonContiguousTensorsMakesNoFullCopy) {
  kc::ScratchDir dir;
  State s;
  const Tensor base = kt::random_tensor({512, 2048}, DType::f32);
  s.tensors.insert("t", base.transpose(0, 1));                 // 4 MiB, non-contiguous
  s.tensors.insert("e", base.slice(1, 0, 2048, 2));            // 2 MiB, strided rows
  cpu_reset_peak_memory();
  const int64_t before = cpu_memory_stats().allocated_bytes;
  io::save(dir / "nc.kiln", s, {.chunk_bytes = 64 << 10});
  EXPECT_EQ(cpu_memory_stats().peak_allocated_bytes - before, 0);  // staged through a 64 KiB buffer only
  kc::expect_identical(io::load(dir / "nc.kiln").tensors, s.tensors);
}

TEST(Checkpoint, DetectsTheFormatByContent) {
  kc::ScratchDir dir;
  State s;
  s.tensors.insert("x", tensor({1.0}));
  io::save(dir / "model.safetensors", s);  // a native file, whatever its name says
  io::save_safetensors(dir / "model.kiln", s.tensors);
  EXPECT_EQ(io::detect_format(dir / "model.safetensors"), "kiln");
  EXPECT_EQ(io::detect_format(dir / "model.kiln"), "safetensors");
  kc::write_bytes(dir / "junk", {'h', 'e', 'l', 'l', 'o'});
  EXPECT_EQ(io::detect_format(dir / "junk"), "unknown");
  EXPECT_EQ(io::detect_format(dir.path()), "unknown");
  kt::expect_error([&] { io::detect_format(dir / "missing"); }, {"detect_format", "missing"});
}

TEST(Checkpoint, SaveRejectsWhatItCannotWrite) {
  kc::ScratchDir dir;
  State s;
  s.tensors.insert("", tensor({1.0}));
  kt::expect_error([&] { io::save(dir / "e.kiln", s); }, {"save", "tensor name is empty"});
  State undefined;
  undefined.tensors.insert("u", Tensor());
  kt::expect_error([&] { io::save(dir / "u.kiln", undefined); }, {"save", "'u' is undefined"});
  State bad_meta;
  bad_meta.meta = Json::array({1, 2});
  kt::expect_error([&] { io::save(dir / "m.kiln", bad_meta); }, {"save", "must be a JSON object", "array"});
  State invalid_utf8;
  invalid_utf8.meta = {{"k", std::string("\xff\xfe")}};
  kt::expect_error([&] { io::save(dir / "j.kiln", invalid_utf8); }, {"save", "cannot be written as JSON"});
  kt::expect_error([&] { io::save(dir / "no/such/dir/x.kiln", State{}); }, {"save", "cannot create", "No such file"});
  EXPECT_EQ(dir.entries(), std::vector<std::string>{});  // nothing half-written
  kt::expect_error([&] { io::load(dir / "absent.kiln"); }, {"load", "cannot open", "absent.kiln"});
}

TEST(Checkpoint, AnEmptyStateRoundTrips) {
  kc::ScratchDir dir;
  io::save(dir / "empty.kiln", State{});
  const State s = io::load(dir / "empty.kiln");
  EXPECT_TRUE(s.tensors.empty());
  EXPECT_EQ(s.meta, Json::object());
}

TEST(Checkpoint, UnverifiedLoadsCopyTheSameBytesAndSkipOnlyTheChecksum) {
  kc::ScratchDir dir;
  const State state = kc::sample_state(9);
  io::save(dir / "u.kiln", state);
  kc::expect_identical(io::load(dir / "u.kiln", {.verify = false}).tensors, state.tensors);
  // Flip the first byte of one tensor's data: only the verified load notices.
  const auto reader = io::CheckpointReader::open(dir / "u.kiln");
  const io::TensorRecord& r = *reader.find("w.float32");
  auto bytes = kc::read_bytes(dir / "u.kiln");
  // The data section ends the file, so a tensor starts at size - data bytes + its offset.
  uint64_t data_bytes = 0;
  for (const auto& rec : reader.records()) data_bytes = std::max(data_bytes, rec.offset + rec.nbytes);
  const size_t at = bytes.size() - data_bytes + r.offset;
  bytes[at] ^= 0x40;
  kc::write_bytes(dir / "bad.kiln", bytes);
  kt::expect_error([&] { io::load(dir / "bad.kiln"); }, {"tensor 'w.float32'", "checksum mismatch"});
  const Tensor got = io::load(dir / "bad.kiln", {.verify = false}).tensors.at("w.float32");
  EXPECT_NE(kc::logical_bytes(got), kc::logical_bytes(state.tensors.at("w.float32")));
}

TEST(Checkpoint, FileBytesCopyOutMatchesTheFileAtAnyOffset) {
  kc::ScratchDir dir;
  std::vector<uint8_t> bytes(3 * 4096 + 123);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 131 + (i >> 8));
  kc::write_bytes(dir / "b.bin", bytes);
  const auto mapped = io::FileBytes::map(dir / "b.bin", "test");
  const auto borrowed = io::FileBytes::borrow(bytes.data(), bytes.size(), "test");
  for (const auto& fb : {mapped, borrowed})
    for (const auto& [offset, length] :
         std::vector<std::pair<size_t, size_t>>{{0, 0}, {4093, 8000}, {1, bytes.size() - 1}}) {
      std::vector<uint8_t> out(length);
      fb->copy_out(offset, out.data(), length);
      EXPECT_TRUE(std::equal(out.begin(), out.end(), bytes.begin() + static_cast<std::ptrdiff_t>(offset)))
          << offset << " " << length;
    }
}

TEST(Checkpoint, AFiftyThousandTensorHeaderParses) {
  kc::ScratchDir dir;
  State state;
  for (int i = 0; i < 50'000; ++i) state.tensors.insert("layers." + std::to_string(i) + ".b", full({1}, i));
  io::save(dir / "many.kiln", state, {.fsync = false});
  const auto reader = io::CheckpointReader::open(dir / "many.kiln");
  ASSERT_EQ(reader.records().size(), 50'000u);
  EXPECT_EQ(reader.records()[31337].name, "layers.31337.b");
  EXPECT_EQ(kt::at(reader.get("layers.49999.b"), 0), 49999.0);
}
