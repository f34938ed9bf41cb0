// The sample transforms: plain loops over one small image each (a Fashion-MNIST image is 784
// pixels), which is cheaper than dispatching tensor ops per sample.
#include "io/data/transforms.h"

#include <cstring>
#include <utility>

#include "tensor/generator.h"

namespace kiln::data {

uint32_t SampleRandom::bits() {
  if (used_ == 4) {
    words_ = philox(seed_, index_, (epoch_ << 32) | block_++);
    used_ = 0;
  }
  return words_[used_++];
}

double SampleRandom::uniform() {
  const uint32_t hi = bits();
  return uniform_double(hi, bits());
}

int64_t SampleRandom::integer(int64_t lo, int64_t hi) {
  KILN_CHECK(lo <= hi, "SampleRandom::integer: empty range [", lo, ", ", hi, "]");
  const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;  // 0 means all 2^64 values
  const uint64_t r = (static_cast<uint64_t>(bits()) << 32) | bits();
  if (span == 0) return static_cast<int64_t>(r);
  // Multiply-shift (Lemire) maps 64 random bits onto [0, span); the bias is below span / 2^64.
  return lo + static_cast<int64_t>(static_cast<uint64_t>((static_cast<unsigned __int128>(r) * span) >> 64));
}

namespace {

// An image as (channels, height, width), whatever its leading dims; checks it is at least 2-d.
struct ImageDims {
  int64_t channels, height, width;
};
ImageDims image_dims(const Tensor& x, const char* op) {
  KILN_CHECK(x.defined(), op, ": the input is undefined");
  KILN_CHECK(x.dim() >= 2, op, ": expected an image of shape (C, H, W) or (H, W), got shape ", x.shape());
  KILN_CHECK(x.device().is_cpu(), op, ": sample transforms run on the CPU, got a tensor on ", x.device());
  const int64_t h = x.size(-2), w = x.size(-1);
  return {h * w == 0 ? 0 : x.numel() / (h * w), h, w};
}

Tensor float32_contiguous(const Tensor& x) {
  Tensor f = x.dtype() == DType::f32 ? x : x.to(DType::f32);
  return f.contiguous();
}

}  // namespace

Transform to_float(double divisor) {
  KILN_CHECK(divisor != 0.0, "to_float: the divisor is 0");
  return [divisor](const Tensor& x, SampleRandom&) {
    KILN_CHECK(x.defined(), "to_float: the input is undefined");
    const Tensor src = x.contiguous();
    Tensor out = make_tensor(x.shape(), DType::f32, x.device());
    float* o = out.data_ptr<float>();
    const float d = static_cast<float>(divisor);
    if (src.dtype() == DType::u8) {  // the common case (images from IDX): 256 values, a table
      std::array<float, 256> scaled;
      for (int v = 0; v < 256; ++v) scaled[static_cast<size_t>(v)] = static_cast<float>(v) / d;
      const uint8_t* p = src.data_ptr<uint8_t>();
      for (int64_t i = 0; i < src.numel(); ++i) o[i] = scaled[p[i]];
      return out;
    }
    const Tensor f = float32_contiguous(src);
    const float* p = f.data_ptr<float>();
    for (int64_t i = 0; i < f.numel(); ++i) o[i] = p[i] / d;
    return out;
  };
}

Transform normalize(std::vector<double> mean, std::vector<double> std) {
  KILN_CHECK(!mean.empty() && mean.size() == std.size(), "normalize: mean and std need the same number (>= 1) of ",
             "values, got ", mean.size(), " and ", std.size());
  for (size_t c = 0; c < std.size(); ++c)
    KILN_CHECK(std[c] != 0.0, "normalize: std[", c, "] is 0; the result would be infinite");
  return [mean = std::move(mean), std = std::move(std)](const Tensor& x, SampleRandom&) {
    const ImageDims d = image_dims(x, "normalize");
    const int64_t given = static_cast<int64_t>(mean.size());
    KILN_CHECK(given == 1 || given == d.channels, "normalize: ", given, " mean/std values for an image of ",
               d.channels, " channels (shape ", x.shape(), "); give 1 or ", d.channels);
    const Tensor src = float32_contiguous(x);
    Tensor out = make_tensor(x.shape(), DType::f32, x.device());
    const float* p = src.data_ptr<float>();
    float* o = out.data_ptr<float>();
    const int64_t plane = d.height * d.width;
    for (int64_t c = 0; c < d.channels; ++c) {
      const size_t k = given == 1 ? 0 : static_cast<size_t>(c);
      // Divides, as torchvision does, so results match it bit for bit.
      const float m = static_cast<float>(mean[k]), s = static_cast<float>(std[k]);
      for (int64_t i = c * plane; i < (c + 1) * plane; ++i) o[i] = (p[i] - m) / s;
    }
    return out;
  };
}

Transform random_crop(int64_t height, int64_t width, int64_t padding, double fill) {
  KILN_CHECK(height > 0 && width > 0, "random_crop: size must be positive, got ", height, "x", width);
  KILN_CHECK(padding >= 0, "random_crop: padding must be >= 0, got ", padding);
  return [=](const Tensor& x, SampleRandom& rng) {
    const ImageDims d = image_dims(x, "random_crop");
    const int64_t padded_h = d.height + 2 * padding, padded_w = d.width + 2 * padding;
    KILN_CHECK(height <= padded_h && width <= padded_w, "random_crop: a ", height, "x", width,
               " crop does not fit an image of shape ", x.shape(), " padded by ", padding);
    // Offsets of the window's corner in the unpadded image (negative: inside the padding).
    const int64_t top = rng.integer(0, padded_h - height) - padding;
    const int64_t left = rng.integer(0, padded_w - width) - padding;
    Dims shape = x.shape();
    shape[shape.size() - 2] = height;
    shape[shape.size() - 1] = width;
    const Tensor src = x.contiguous();
    Tensor out = make_tensor(shape, x.dtype(), x.device());
    visit_dtype(x.dtype(), [&]<class T>() {
      const T* p = static_cast<const T*>(src.data_ptr());
      T* o = static_cast<T*>(out.data_ptr());
      const T pad_value = static_cast<T>(static_cast<compute_t<T>>(fill));
      for (int64_t c = 0; c < d.channels; ++c) {
        const T* plane = p + c * d.height * d.width;
        for (int64_t y = 0; y < height; ++y) {
          const int64_t sy = top + y;
          T* row = o + (c * height + y) * width;
          for (int64_t xo = 0; xo < width; ++xo) {
            const int64_t sx = left + xo;
            const bool inside = sy >= 0 && sy < d.height && sx >= 0 && sx < d.width;
            row[xo] = inside ? plane[sy * d.width + sx] : pad_value;
          }
        }
      }
    });
    return out;
  };
}

Transform random_horizontal_flip(double p) {
  KILN_CHECK(p >= 0.0 && p <= 1.0, "random_horizontal_flip: p must be in [0, 1], got ", p);
  return [p](const Tensor& x, SampleRandom& rng) {
    const ImageDims d = image_dims(x, "random_horizontal_flip");
    if (!rng.bernoulli(p)) return x;
    const Tensor src = x.contiguous();
    Tensor out = make_tensor(x.shape(), x.dtype(), x.device());
    const size_t elem = x.element_size();
    const char* s = static_cast<const char*>(src.data_ptr());
    char* o = static_cast<char*>(out.data_ptr());
    for (int64_t row = 0; row < d.channels * d.height; ++row)
      for (int64_t col = 0; col < d.width; ++col)
        std::memcpy(o + (row * d.width + col) * elem, s + (row * d.width + d.width - 1 - col) * elem, elem);
    return out;
  };
}

Transform compose(std::vector<Transform> transforms) {
  for (size_t i = 0; i < transforms.size(); ++i)
    KILN_CHECK(static_cast<bool>(transforms[i]), "compose: transform ", i, " is empty");
  return [transforms = std::move(transforms)](const Tensor& x, SampleRandom& rng) {
    Tensor y = x;
    for (const Transform& t : transforms) y = t(y, rng);
    return y;
  };
}

TransformedDataset::TransformedDataset(std::shared_ptr<const Dataset> base, Transform transform, uint64_t seed,
                                       size_t field)
    : base_(std::move(base)), transform_(std::move(transform)), seed_(seed), field_(field) {
  KILN_CHECK(base_ != nullptr, "TransformedDataset: the base data set is null");
  KILN_CHECK(static_cast<bool>(transform_), "TransformedDataset: the transform is empty");
}

Example TransformedDataset::fetch(int64_t index, int64_t epoch) const {
  Example ex = base_->fetch(index, epoch);
  KILN_CHECK(field_ < ex.size(), "TransformedDataset: field ", field_, " is out of range: sample ", index, " has ",
             ex.size(), " fields");
  SampleRandom rng(seed_, epoch, index);
  ex.fields[field_] = transform_(ex.fields[field_], rng);
  return ex;
}

}  // namespace kiln::data
