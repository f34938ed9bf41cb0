// Hostile files: the malformed corpus (tests/fixtures/ckpt, one file per class of loader bug, in
// both formats), truncation at every header byte and at 1,000 data offsets, and 10,000 single-bit
// flips. Each must end in a kiln::Error (with the expected words, for the corpus), never a crash
// and never a silent load.
#include <random>

#include "ckpt_helpers.h"
#include "io/checkpoint/format.h"

namespace kt = kiln::testing;
namespace kc = kiln::testing::ckpt;
using namespace kiln;

namespace {

struct Case {
  std::string file;
  std::vector<std::string> fragments;
};

std::vector<Case> read_cases(const std::string& prefix) {
  std::ifstream in(kc::fixture_dir() + "/cases.tsv");
  EXPECT_TRUE(in) << "missing " << kc::fixture_dir() << "/cases.tsv (run tests/fixtures/ckpt/make_corpus.py)";
  std::vector<Case> out;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#' || line.compare(0, prefix.size(), prefix) != 0) continue;
    std::stringstream fields(line);
    Case c;
    std::getline(fields, c.file, '\t');
    for (std::string f; std::getline(fields, f, '\t');) c.fragments.push_back(f);
    out.push_back(std::move(c));
  }
  return out;
}

// Opens and fully loads (every tensor, checksums verified) a native file held in memory.
void load_native(const std::vector<uint8_t>& bytes) {
  io::CheckpointReader::from_memory(bytes.data(), bytes.size(), "corpus").load();
}
void load_safetensors(const std::vector<uint8_t>& bytes) {
  io::SafetensorsReader::from_memory(bytes.data(), bytes.size(), "corpus").load();
}

// Runs fn, which must throw kiln::Error; returns false (with a failure) if it loaded silently.
template <class Fn>
bool rejects(Fn&& fn, const std::string& what) {
  try {
    fn();
  } catch (const Error&) {
    return true;
  }
  ADD_FAILURE() << what << " loaded without an error";
  return false;
}

}  // namespace

TEST(MalformedCorpus, NativeFilesEachGiveTheirSpecificError) {
  const auto cases = read_cases("native/");
  EXPECT_GE(cases.size(), 40u);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    const std::string path = kc::fixture_dir() + "/" + c.file;
    kt::expect_error([&] { io::load(path); }, c.fragments);
    kt::expect_error([&] { io::load(path); }, {c.file});  // the message names the file
  }
}

TEST(MalformedCorpus, SafetensorsFilesEachGiveTheirSpecificError) {
  const auto cases = read_cases("safetensors/");
  EXPECT_GE(cases.size(), 40u);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    const std::string path = kc::fixture_dir() + "/" + c.file;
    kt::expect_error([&] { io::load_safetensors(path); }, c.fragments);
    kt::expect_error([&] { io::load_safetensors(path); }, {c.file});
  }
}

TEST(MalformedCorpus, TheValidSeedsLoad) {
  // The corpus' malformed files are mutations of these: if these failed, the cases above would
  // prove nothing.
  EXPECT_NO_THROW(io::load(kc::fixture_dir() + "/valid/all.kiln"));
  EXPECT_NO_THROW(io::load_safetensors(kc::fixture_dir() + "/valid/all.safetensors"));
}

TEST(Truncation, EveryHeaderByteAndAThousandDataOffsetsAreRejected) {
  const auto full = kc::read_bytes(kc::fixture_dir() + "/valid/all.kiln");
  const uint64_t data_offset = io::format::load_le<uint64_t>(&full[32]);
  for (size_t n = 0; n <= data_offset; ++n) {
    const std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<int64_t>(n));
    if (!rejects([&] { load_native(cut); }, "native file cut at " + std::to_string(n))) break;
  }
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<size_t> in_data(data_offset + 1, full.size() - 1);
  for (int i = 0; i < 1000; ++i) {
    const size_t n = in_data(rng);
    const std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<int64_t>(n));
    if (!rejects([&] { load_native(cut); }, "native file cut at " + std::to_string(n))) break;
  }
}

TEST(Truncation, SafetensorsCutAnywhereIsRejected) {
  const auto full = kc::read_bytes(kc::fixture_dir() + "/valid/all.safetensors");
  for (size_t n = 0; n < full.size(); ++n) {
    const std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<int64_t>(n));
    if (!rejects([&] { load_safetensors(cut); }, "safetensors file cut at " + std::to_string(n))) break;
  }
}

TEST(BitFlips, TenThousandSingleBitFlipsNeverLoadSilently) {
  // Flips land anywhere: fixed header, JSON header, padding, tensor data. The header checksum,
  // the strict layout and the per-tensor checksums together leave no byte unchecked.
  State s = kc::sample_state(3);
  kc::ScratchDir dir;
  io::save(dir / "flip.kiln", s);
  const auto original = kc::read_bytes(dir / "flip.kiln");
  ASSERT_NO_THROW(load_native(original));
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<size_t> byte(0, original.size() - 1);
  std::vector<uint8_t> mutated = original;
  int in_data = 0;
  const uint64_t data_offset = io::format::load_le<uint64_t>(&original[32]);
  for (int i = 0; i < 10000; ++i) {
    const size_t at = byte(rng);
    const auto mask = static_cast<uint8_t>(1u << (rng() % 8));
    mutated[at] ^= mask;
    in_data += at >= data_offset;
    const bool ok = rejects([&] { load_native(mutated); }, "flip of bit " + std::to_string(mask) + " at byte " +
                                                              std::to_string(at));
    mutated[at] ^= mask;
    if (!ok) break;
  }
  EXPECT_GT(in_data, 1000);  // the flips did reach tensor data, not only the header
}
