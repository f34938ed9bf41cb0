// TensorDataset and the index check shared by the data sets.
#include "io/data/dataset.h"

namespace kiln::data {

void check_index(const char* dataset, int64_t index, int64_t size) {
  KILN_CHECK(index >= 0 && index < size, dataset, ": index ", index, " is out of range for a data set of ", size,
             " samples");
}

TensorDataset::TensorDataset(std::vector<Tensor> tensors) : tensors_(std::move(tensors)) {
  KILN_CHECK(!tensors_.empty(), "TensorDataset: needs at least one tensor");
  for (size_t k = 0; k < tensors_.size(); ++k) {
    const Tensor& t = tensors_[k];
    KILN_CHECK(t.defined(), "TensorDataset: tensor ", k, " is undefined");
    KILN_CHECK(t.dim() >= 1, "TensorDataset: tensor ", k, " is 0-d; every tensor needs a first dim to index");
    KILN_CHECK(t.size(0) == tensors_[0].size(0), "TensorDataset: tensor ", k, " has ", t.size(0),
               " rows but tensor 0 has ", tensors_[0].size(0), " (shapes ", t.shape(), " and ", tensors_[0].shape(), ")");
  }
  size_ = tensors_[0].size(0);
}

Example TensorDataset::get(int64_t index) const {
  check_index("TensorDataset", index, size_);
  Example ex;
  ex.fields.reserve(tensors_.size());
  for (const Tensor& t : tensors_) ex.fields.push_back(t.select(0, index));
  return ex;
}

}  // namespace kiln::data
