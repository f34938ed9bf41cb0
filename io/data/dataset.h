// Data sets: what a sample is (Example: a few tensors by position), what a batch is (the same,
// stacked along a new leading dim), and the two kinds of source a DataLoader reads: an indexable
// Dataset and a sequential IterableDataset. TensorDataset serves rows of in-memory tensors.
// Readers of files (IDX, text) and the loader itself live beside this file.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "tensor/error.h"
#include "tensor/tensor.h"

namespace kiln::data {

// One sample: its fields by position, e.g. {image, label} or {x, y}. Copying copies handles.
struct Example {
  std::vector<Tensor> fields;

  Example() = default;
  Example(std::initializer_list<Tensor> f) : fields(f) {}
  explicit Example(std::vector<Tensor> f) : fields(std::move(f)) {}

  size_t size() const { return fields.size(); }
  const Tensor& operator[](size_t i) const {
    KILN_CHECK(i < fields.size(), "Example: field ", i, " is out of range (it has ", fields.size(), " fields)");
    return fields[i];
  }
  Tensor& operator[](size_t i) {
    KILN_CHECK(i < fields.size(), "Example: field ", i, " is out of range (it has ", fields.size(), " fields)");
    return fields[i];
  }
  auto begin() const { return fields.begin(); }
  auto end() const { return fields.end(); }
};

// A batch has the shape of an Example whose fields carry a leading batch dim: b[0] is (B, ...).
using Batch = Example;

// An indexable data set (torch.utils.data.Dataset). Implementations must allow concurrent get()
// calls: the loader's workers call it from several threads. Copies should be cheap (share data).
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual Example get(int64_t index) const = 0;

  // What the loader calls: sample `index` as it looks in `epoch`. Only data sets whose samples
  // change per epoch (random augmentation, see transforms.h) override it, so that a sample is a
  // function of (seed, epoch, index) alone and never of the worker count or of a resume.
  virtual Example fetch(int64_t index, int64_t epoch) const { return get(index); }
};

// A stream of examples with no index (torch's IterableDataset): a generator, a socket, a huge file
// read front to back. The loader reads it from one thread and batches it in stream order; there is
// no sampler and no shuffle. Resuming mid-epoch re-reads and drops the examples already consumed.
class IterableDataset {
 public:
  virtual ~IterableDataset() = default;
  // Rewinds to the first example of `epoch`'s pass.
  virtual void start(int64_t epoch) = 0;
  // The next example of the pass, or nullopt at its end.
  virtual std::optional<Example> next() = 0;
};

// Rows of in-memory tensors that share their first dim (torch's TensorDataset): example i is
// {t[i] for each t}, as views (no copy).
class TensorDataset : public Dataset {
 public:
  explicit TensorDataset(std::vector<Tensor> tensors);
  TensorDataset(std::initializer_list<Tensor> tensors) : TensorDataset(std::vector<Tensor>(tensors)) {}

  int64_t size() const override { return size_; }
  Example get(int64_t index) const override;
  const std::vector<Tensor>& tensors() const { return tensors_; }

 private:
  std::vector<Tensor> tensors_;
  int64_t size_ = 0;
};

// Checks that index is in [0, size) with a message naming the data set; shared by the readers.
void check_index(const char* dataset, int64_t index, int64_t size);

}  // namespace kiln::data
