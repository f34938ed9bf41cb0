// LogicalBytes and friends (see tensor_bytes.h).
#include "io/checkpoint/tensor_bytes.h"

#include <algorithm>
#include <cstring>

namespace kiln::io::detail {

LogicalBytes::LogicalBytes(const Tensor& t)
    : base_(static_cast<const uint8_t*>(t.data_ptr())), elem_(t.element_size()), shape_(t.shape()),
      strides_(t.strides()), total_(t.nbytes()) {
  if (shape_.empty()) {
    shape_ = Dims{1};
    strides_ = Dims{1};
  }
  index_.assign(static_cast<size_t>(shape_.size() - 1), 0);
}

size_t LogicalBytes::next(uint8_t* out, size_t capacity) {
  size_t written = 0;
  const int last = shape_.size() - 1;
  const int64_t row_len = shape_[last];
  while (done_ < total_ && capacity - written >= elem_) {
    int64_t row_offset = 0;  // in elements, of the current row's first element
    for (int d = 0; d < last; ++d) row_offset += index_[static_cast<size_t>(d)] * strides_[d];
    const int64_t take = std::min<int64_t>(row_len - in_row_, static_cast<int64_t>((capacity - written) / elem_));
    const int64_t stride = strides_[last];
    const uint8_t* src = base_ + (row_offset + in_row_ * stride) * static_cast<int64_t>(elem_);
    if (stride == 1) {
      std::memcpy(out + written, src, static_cast<size_t>(take) * elem_);
    } else {
      for (int64_t i = 0; i < take; ++i)
        std::memcpy(out + written + static_cast<size_t>(i) * elem_, src + i * stride * static_cast<int64_t>(elem_), elem_);
    }
    written += static_cast<size_t>(take) * elem_;
    done_ += static_cast<uint64_t>(take) * elem_;
    in_row_ += take;
    if (in_row_ == row_len) {  // next row: odometer increment over the outer dims
      in_row_ = 0;
      for (int d = last - 1; d >= 0; --d) {
        if (++index_[static_cast<size_t>(d)] < shape_[d]) break;
        index_[static_cast<size_t>(d)] = 0;
      }
    }
  }
  return written;
}

Tensor on_host(const Tensor& t, const char* op, const std::string& name) {
  KILN_CHECK(t.defined(), op, ": tensor '", name, "' is undefined");
  return t.device().is_cpu() ? t : t.to(Device::cpu());
}

Tensor contiguous_copy(const Tensor& t, const std::string& name) {
  const Tensor host = on_host(t, "AsyncSaver::save", name);
  Tensor copy = make_tensor(host.shape(), host.dtype(), Device::cpu());
  auto* dst = static_cast<uint8_t*>(copy.data_ptr());
  for_each_chunk(host, size_t{8} << 20, [&](const uint8_t* p, size_t n) {
    std::memcpy(dst, p, n);
    dst += n;
  });
  return copy;
}

}  // namespace kiln::io::detail
