// Fashion-MNIST: finds the two IDX files of a split, checks that they agree with each other and
// with the data set's layout, and serves samples from memory.
#include "io/data/fashion_mnist.h"

#include <filesystem>

#include "io/data/idx.h"

namespace kiln::data {
namespace {

// The file for `stem` under root: the .gz when present, else the uncompressed one (as torchvision
// leaves them in raw/), else an error naming both.
std::string find_file(const std::string& root, const std::string& stem) {
  namespace fs = std::filesystem;
  const fs::path gz = fs::path(root) / (stem + ".gz"), plain = fs::path(root) / stem;
  if (fs::exists(gz)) return gz.string();
  if (fs::exists(plain)) return plain.string();
  detail::throw_error("FashionMNIST: neither '", gz.string(), "' nor '", plain.string(),
                      "' exists (on Debian: apt install dataset-fashion-mnist; or set options.root)");
}

}  // namespace

FashionMNIST::FashionMNIST(FashionMNISTOptions options) : options_(std::move(options)) {
  KILN_CHECK(options_.dtype == DType::f32 || options_.dtype == DType::u8,
             "FashionMNIST: dtype must be float32 or uint8, got ", options_.dtype);
  const std::string split = options_.train ? "train" : "t10k";
  const std::string images_path = find_file(options_.root, split + "-images-idx3-ubyte");
  const std::string labels_path = find_file(options_.root, split + "-labels-idx1-ubyte");

  Tensor images = read_idx(images_path);
  KILN_CHECK(images.dtype() == DType::u8 && images.dim() == 3, "FashionMNIST: '", images_path,
             "' should hold u8 images of shape (N, H, W), but holds ", images.dtype(), " of shape ", images.shape());
  Tensor labels = read_idx(labels_path);
  KILN_CHECK(labels.dtype() == DType::u8 && labels.dim() == 1, "FashionMNIST: '", labels_path,
             "' should hold u8 labels of shape (N), but holds ", labels.dtype(), " of shape ", labels.shape());
  KILN_CHECK(images.size(0) == labels.size(0), "FashionMNIST: '", images_path, "' has ", images.size(0),
             " images but '", labels_path, "' has ", labels.size(0), " labels");

  const int64_t n = labels.size(0);
  images_ = images.view({n, 1, images.size(1), images.size(2)});
  labels_ = make_tensor({n}, DType::i64, Device::cpu());
  const uint8_t* in = labels.data_ptr<uint8_t>();
  int64_t* out = labels_.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    KILN_CHECK(in[i] < kClasses.size(), "FashionMNIST: '", labels_path, "': label ", static_cast<int>(in[i]),
               " of sample ", i, " is not a class (0 to ", kClasses.size() - 1, ")");
    out[i] = in[i];
  }
}

Example FashionMNIST::get(int64_t index) const {
  check_index("FashionMNIST", index, size());
  const Tensor image = images_.select(0, index);
  const Tensor label = labels_.select(0, index);
  if (options_.dtype == DType::u8) return {image, label};
  // x / 255 in float32, exactly as torchvision's ToTensor divides (x * (1/255) can differ by an ulp).
  static const std::array<float, 256> kScaled = [] {
    std::array<float, 256> t{};
    for (int v = 0; v < 256; ++v) t[static_cast<size_t>(v)] = static_cast<float>(v) / 255.0f;
    return t;
  }();
  Tensor scaled = make_tensor(image.shape(), DType::f32, Device::cpu());
  const uint8_t* p = image.data_ptr<uint8_t>();
  float* o = scaled.data_ptr<float>();
  for (int64_t i = 0; i < image.numel(); ++i) o[i] = kScaled[p[i]];
  return {scaled, label};
}

}  // namespace kiln::data
