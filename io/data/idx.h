// The IDX file format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/): a 4-byte
// magic (0, 0, element type, number of dims), the dims as big-endian uint32, then the elements,
// big-endian, row-major. Files may be gzip-compressed; zlib reads both, told apart by content.
// Reading only: Kiln has no reason to write IDX.
#pragma once

#include <string>

#include "tensor/tensor.h"

namespace kiln::data {

// Reads the whole file into a contiguous CPU tensor with the file's dims. Element types map to
// Kiln dtypes: u8 -> u8; i8, i16, i32 -> i32; f32 -> f32; f64 -> f64.
// Every header field and size is checked before anything is allocated: a bad magic, an unknown
// element type, a truncated header or data, trailing bytes, a size that overflows or that the file
// cannot hold, or corrupt gzip data each give a kiln::Error naming the file and the field.
Tensor read_idx(const std::string& path);

}  // namespace kiln::data
