// TextCorpus: reads the files, cuts the train/val split at a byte offset, serves windows as views.
#include "io/data/text.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace kiln::data {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in.good(), "TextCorpus: cannot open '", path, "': ", std::strerror(errno));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  KILN_CHECK(!in.bad(), "TextCorpus: reading '", path, "' failed: ", std::strerror(errno));
  return bytes;
}

}  // namespace

std::vector<std::string> TextCorpus::default_files() {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::directory_iterator it(kFortunesDir, ec);
  KILN_CHECK(!ec, "TextCorpus: cannot list '", kFortunesDir, "': ", ec.message(),
             " (on Debian: apt install fortunes; or name the text files in options.files)");
  std::vector<std::string> files;
  for (const fs::directory_entry& entry : it) {
    const std::string ext = entry.path().extension().string();
    if (entry.is_regular_file() && ext != ".dat" && ext != ".u8") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  KILN_CHECK(!files.empty(), "TextCorpus: no text files in '", kFortunesDir, "'");
  return files;
}

TextCorpus::TextCorpus(TextCorpusOptions options) : options_(std::move(options)) {
  const TextCorpusOptions& o = options_;
  KILN_CHECK(o.block_size >= 1, "TextCorpus: block_size must be >= 1, got ", o.block_size);
  KILN_CHECK(o.stride >= 1, "TextCorpus: stride must be >= 1, got ", o.stride);
  KILN_CHECK(o.val_fraction >= 0.0 && o.val_fraction <= 1.0, "TextCorpus: val_fraction must be in [0, 1], got ",
             o.val_fraction);
  KILN_CHECK(o.dtype == DType::i64 || o.dtype == DType::u8, "TextCorpus: dtype must be int64 or uint8, got ", o.dtype);

  const std::vector<std::string> files = o.files.empty() ? default_files() : o.files;
  std::string text;
  for (const std::string& f : files) text += read_file(f);

  const auto total = static_cast<int64_t>(text.size());
  const auto train_len = static_cast<int64_t>(std::llround(static_cast<double>(total) * (1.0 - o.val_fraction)));
  const int64_t begin = o.train ? 0 : train_len, end = o.train ? train_len : total;
  const int64_t length = end - begin;
  KILN_CHECK(length >= o.block_size + 1, "TextCorpus: the ", o.train ? "train" : "val", " split has ", length,
             " bytes (of ", total, " in ", files.size(), " files), too few for one window of block_size + 1 = ",
             o.block_size + 1);

  tokens_ = make_tensor({length}, o.dtype, Device::cpu());
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data()) + begin;
  if (o.dtype == DType::u8) {
    std::memcpy(tokens_.data_ptr(), bytes, static_cast<size_t>(length));
  } else {
    int64_t* t = tokens_.data_ptr<int64_t>();
    for (int64_t i = 0; i < length; ++i) t[i] = bytes[i];
  }
  windows_ = (length - o.block_size - 1) / o.stride + 1;
}

Example TextCorpus::get(int64_t index) const {
  check_index("TextCorpus", index, windows_);
  const int64_t start = index * options_.stride;
  return {tokens_.narrow(0, start, options_.block_size), tokens_.narrow(0, start + 1, options_.block_size)};
}

std::string TextCorpus::decode(const Tensor& tokens) {
  KILN_CHECK(is_integral(tokens.dtype(), false), "TextCorpus::decode: expected integer tokens, got ", tokens.dtype());
  const Tensor t = tokens.to(DType::i64).contiguous();
  const int64_t* p = t.data_ptr<int64_t>();
  std::string text(static_cast<size_t>(t.numel()), '\0');
  for (int64_t i = 0; i < t.numel(); ++i) {
    KILN_CHECK(p[i] >= 0 && p[i] < kVocabSize, "TextCorpus::decode: token ", p[i], " at ", i, " is not a byte");
    text[static_cast<size_t>(i)] = static_cast<char>(p[i]);
  }
  return text;
}

}  // namespace kiln::data
