// Helpers for the checkpoint tests: scratch folders, file bytes, the corpus' value formula, states
// with every dtype and layout, and an exact (bitwise) comparison of tensors' logical contents.
#pragma once

#include <gtest/gtest.h>

#include <dirent.h>
#include <ftw.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <kiln/kiln.h>

#include "io/checkpoint/checkpoint.h"
#include "io/safetensors/safetensors.h"
#include "testing.h"

namespace kiln::testing::ckpt {

inline std::string fixture_dir() { return std::string(KILN_TEST_FIXTURES) + "/ckpt"; }

// A fresh folder under $TMPDIR (or /tmp), removed with everything in it at scope exit.
class ScratchDir {
 public:
  ScratchDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/kiln-ckpt-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    EXPECT_NE(::mkdtemp(buf.data()), nullptr);
    path_ = buf.data();
  }
  ~ScratchDir() {
    ::nftw(path_.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
           FTW_DEPTH | FTW_PHYS);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(path_.c_str())) {
      while (const dirent* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) out.push_back(e->d_name);
      ::closedir(d);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::string path_;
};

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Element i of every corpus fixture tensor (make_corpus.py's value()).
inline double corpus_value(DType dtype, int64_t i) {
  if (is_floating(dtype)) return static_cast<double>(i - 3) * 0.5;
  if (dtype == DType::u8) return static_cast<double>((i * 7) % 256);
  if (dtype == DType::boolean) return i % 3 == 0 ? 1.0 : 0.0;
  return static_cast<double>(i * 7 - 5);
}

// The logical bytes of t, element by element through its strides (independent of io/).
inline std::vector<uint8_t> logical_bytes(const Tensor& t) {
  std::vector<uint8_t> out(t.nbytes());
  const size_t es = t.element_size();
  for (int64_t i = 0; i < t.numel(); ++i) {
    int64_t off = 0, flat = i;
    for (int d = t.dim() - 1; d >= 0; --d) {
      off += (flat % t.shape()[d]) * t.strides()[d];
      flat /= t.shape()[d];
    }
    std::memcpy(out.data() + static_cast<size_t>(i) * es, static_cast<const char*>(t.data_ptr()) + off * static_cast<int64_t>(es), es);
  }
  return out;
}

inline void expect_identical(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  EXPECT_EQ(got.dtype(), want.dtype()) << what;
  EXPECT_EQ(got.shape(), want.shape()) << what;
  EXPECT_TRUE(logical_bytes(got) == logical_bytes(want)) << what << ": bytes differ";
}

inline void expect_identical(const TensorDict& got, const TensorDict& want) {
  ASSERT_EQ(got.keys(), want.keys());
  for (const auto& [name, t] : want) expect_identical(got.at(name), t, name);
}

// Every dtype, contiguous and not, a scalar, an empty tensor, and a broadcast (stride-0) view.
inline State sample_state(uint64_t seed = 1) {
  State s;
  int k = 0;
  for (DType d : kAllDTypes) {
    const double lo = is_floating(d) ? -4 : 0, hi = is_floating(d) ? 4 : 100;
    s.tensors.insert(std::string("w.") + std::string(dtype_name(d)), random_tensor({3, 5}, d, lo, hi, seed + k++));
    s.tensors.insert(std::string("nc.") + std::string(dtype_name(d)),
                     noncontiguous(random_tensor({4, 3}, d, lo, hi, seed + k++)).transpose(0, 1));
  }
  s.tensors.insert("scalar", full({}, 2.5, {.dtype = DType::f64}));
  s.tensors.insert("empty", zeros({0, 7}));
  s.tensors.insert("broadcast", random_tensor({1, 6}, DType::f32, -1, 1, seed + 99).expand({4, 6}));
  s.meta = {{"step", 1234}, {"lr", 3e-4}, {"name", "run-\xc3\xa9"}, {"nested", {{"a", {1, 2, 3}}, {"b", nullptr}}}};
  return s;
}

}  // namespace kiln::testing::ckpt
