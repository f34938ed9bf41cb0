// A byte-level text corpus for a character-level language model: the bytes of one or more plain
// text files are the tokens (vocabulary of 256), and sample i is the window starting at token
// i * stride: x = the next block_size tokens, y = the same shifted by one. By default the text is
// the `fortunes` package's data files. No tokenizer beyond bytes.
#pragma once

#include <string>
#include <vector>

#include "io/data/dataset.h"

namespace kiln::data {

inline constexpr const char* kFortunesDir = "/usr/share/games/fortunes";

struct TextCorpusOptions {
  // Read and concatenated in this order; empty: every fortune file under kFortunesDir (the plain
  // text ones, not the .dat indexes or .u8 copies), sorted by name.
  std::vector<std::string> files;
  int64_t block_size = 128;
  int64_t stride = 1;          // tokens between the starts of consecutive windows
  bool train = true;           // the first (1 - val_fraction) of the bytes, or the rest
  double val_fraction = 0.1;
  DType dtype = DType::i64;    // of the tokens: i64 (what embedding takes) or u8
};

class TextCorpus : public Dataset {
 public:
  static constexpr int64_t kVocabSize = 256;

  explicit TextCorpus(TextCorpusOptions options = {});

  int64_t size() const override { return windows_; }
  // {x (block_size), y (block_size)} in options.dtype, with y[t] = x[t + 1] and y's last token the
  // one after the window; collated: (B, block_size) each.
  Example get(int64_t index) const override;

  const Tensor& tokens() const { return tokens_; }  // this split's tokens, (L)
  const TextCorpusOptions& options() const { return options_; }

  // The fortune files used when options.files is empty.
  static std::vector<std::string> default_files();
  // Tokens back to text (any integer dtype, any shape, read in row-major order).
  static std::string decode(const Tensor& tokens);

 private:
  TextCorpusOptions options_;
  Tensor tokens_;
  int64_t windows_ = 0;
};

}  // namespace kiln::data
