// Sample transforms (torchvision.transforms for images): to_float, normalize, random_crop,
// random_horizontal_flip, compose; and TransformedDataset, which applies one to a field of every
// sample. Randomness comes from SampleRandom, a pure function of (seed, epoch, index): a sample
// looks the same whichever worker makes it, however many workers there are, and after a resume.
// Images are (C, H, W) (or (H, W)); the transforms run on the CPU, one sample at a time.
#pragma once

#include <array>
#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "io/data/dataset.h"

namespace kiln::data {

// Random numbers for one sample. Draw k of sample `index` in `epoch` is Philox(seed; index, epoch, k):
// no state is shared between samples, so nothing depends on the order they are made in.
class SampleRandom {
 public:
  SampleRandom(uint64_t seed, int64_t epoch, int64_t index)
      : seed_(seed), epoch_(static_cast<uint64_t>(epoch)), index_(static_cast<uint64_t>(index)) {}

  uint32_t bits();
  double uniform();                         // [0, 1)
  int64_t integer(int64_t lo, int64_t hi);  // uniform on [lo, hi], both included; lo <= hi
  bool bernoulli(double p) { return uniform() < p; }

 private:
  uint64_t seed_, epoch_, index_;
  uint32_t block_ = 0;  // next Philox counter block
  std::array<uint32_t, 4> words_{};
  int used_ = 4;        // words of words_ already handed out
};

// A transform maps one field of a sample to a new tensor; it must not write to its input (it may be
// a view of the data set) and must be safe to call from several threads at once.
using Transform = std::function<Tensor(const Tensor& x, SampleRandom& rng)>;

// Any dtype -> float32, divided by `divisor`: to_float() maps u8 pixels to [0, 1] exactly as
// torchvision's ToTensor does (x / 255 in float32).
Transform to_float(double divisor = 255.0);

// (x - mean[c]) / std[c] per channel c of a (C, H, W) image, in float32. One value applies to all
// channels. Non-float inputs are converted first (without scaling: use to_float for that).
Transform normalize(std::vector<double> mean, std::vector<double> std);

// Pads the image by `padding` pixels of `fill` on every side, then cuts an (height, width) window
// at a uniformly random position (torchvision's RandomCrop(size, padding)). Keeps the dtype.
Transform random_crop(int64_t height, int64_t width, int64_t padding = 0, double fill = 0.0);

// Mirrors the image left to right with probability p. Keeps the dtype.
Transform random_horizontal_flip(double p = 0.5);

// Applies the transforms in order; they share the sample's random stream.
Transform compose(std::vector<Transform> transforms);

// A data set whose samples are another's with `transform` applied to field `field`. The random
// draws of sample i in epoch e are SampleRandom(seed, e, i); get(i) is epoch 0's version.
class TransformedDataset : public Dataset {
 public:
  TransformedDataset(std::shared_ptr<const Dataset> base, Transform transform, uint64_t seed = 0, size_t field = 0);
  template <class D>
    requires std::derived_from<D, Dataset>
  TransformedDataset(D base, Transform transform, uint64_t seed = 0, size_t field = 0)
      : TransformedDataset(std::make_shared<D>(std::move(base)), std::move(transform), seed, field) {}

  int64_t size() const override { return base_->size(); }
  Example get(int64_t index) const override { return fetch(index, 0); }
  Example fetch(int64_t index, int64_t epoch) const override;

 private:
  std::shared_ptr<const Dataset> base_;
  Transform transform_;
  uint64_t seed_;
  size_t field_;
};

}  // namespace kiln::data
