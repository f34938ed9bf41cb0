// The logical bytes of a tensor, whatever its strides: the row-major order a checkpoint stores.
// Writers stream them in bounded chunks, so saving a non-contiguous tensor never makes a full copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace kiln::io::detail {

// Walks a CPU tensor's elements in row-major order, copying them out chunk by chunk.
class LogicalBytes {
 public:
  explicit LogicalBytes(const Tensor& t);
  // Copies the next bytes (at most `capacity`, rounded down to whole elements; at least one element
  // fits in any capacity >= element size) into out; returns how many, 0 at the end.
  size_t next(uint8_t* out, size_t capacity);
  uint64_t total() const { return total_; }

 private:
  const uint8_t* base_;
  size_t elem_;
  Dims shape_, strides_;       // never 0-d: a scalar walks as shape [1]
  std::vector<int64_t> index_;  // over all dims but the last
  int64_t in_row_ = 0;          // position in the last dim
  uint64_t total_ = 0, done_ = 0;
};

// The tensor on the CPU (itself if it is there already). `op` names the caller in errors.
Tensor on_host(const Tensor& t, const char* op, const std::string& name);

// Calls sink(pointer, nbytes) over t's logical bytes in order, in chunks of at most `chunk` bytes:
// straight from the tensor's memory when it is contiguous, else through one bounded buffer.
template <class Sink>
void for_each_chunk(const Tensor& t, size_t chunk, Sink&& sink) {
  if (t.numel() == 0) return;
  if (t.is_contiguous()) {
    const auto* p = static_cast<const uint8_t*>(t.data_ptr());
    for (uint64_t done = 0, total = t.nbytes(); done < total;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, total - done));
      sink(p + done, n);
      done += n;
    }
    return;
  }
  LogicalBytes walk(t);
  std::vector<uint8_t> buffer(static_cast<size_t>(std::min<uint64_t>(chunk, walk.total())));
  while (size_t n = walk.next(buffer.data(), buffer.size())) sink(buffer.data(), n);
}

// A contiguous CPU copy of t made without any kernel (AsyncSaver's snapshot).
Tensor contiguous_copy(const Tensor& t, const std::string& name);

}  // namespace kiln::io::detail
