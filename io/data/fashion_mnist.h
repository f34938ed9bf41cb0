// Fashion-MNIST (Xiao et al. 2017): 28x28 grey images of clothes in 10 classes, 60,000 for training
// and 10,000 for testing, read from its four IDX files (by default Debian's dataset-fashion-mnist
// package). The files are decoded once, at construction, and held in memory as u8 (47 MB for the
// training split); copies of the data set share them. Also reads MNIST, which has the same layout.
#pragma once

#include <array>
#include <string>

#include "io/data/dataset.h"

namespace kiln::data {

inline constexpr const char* kFashionMNISTRoot = "/usr/share/datasets/fashion-mnist";

struct FashionMNISTOptions {
  // Folder with {train,t10k}-{images-idx3,labels-idx1}-ubyte, gzip-compressed (".gz") or not.
  std::string root = kFashionMNISTRoot;
  bool train = true;          // the 60,000 training images, or the 10,000 test images
  DType dtype = DType::f32;   // of the images: f32 scaled to [0, 1], or u8 as stored (0..255)
};

class FashionMNIST : public Dataset {
 public:
  explicit FashionMNIST(FashionMNISTOptions options = {});

  int64_t size() const override { return labels_.size(0); }
  // {image (1, 28, 28) in options.dtype, label (0-d int64)}; collated: (B, 1, 28, 28) and (B).
  Example get(int64_t index) const override;

  const Tensor& images() const { return images_; }  // (N, 1, 28, 28) u8, as in the file
  const Tensor& labels() const { return labels_; }  // (N) int64 in [0, 10)
  const FashionMNISTOptions& options() const { return options_; }

  static constexpr std::array<const char*, 10> kClasses = {
      "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

 private:
  FashionMNISTOptions options_;
  Tensor images_, labels_;
};

}  // namespace kiln::data
