// Saving a State as a native checkpoint file (format: docs/checkpoint-format.md). The write is
// atomic and streams each tensor from its own memory, so peak memory does not grow with the state.
#pragma once

#include <cstddef>
#include <string>

#include "tensor/state_dict.h"

namespace kiln::io {

struct SaveOptions {
  bool fsync = true;                  // fsync the file before, and its folder after, the rename
  size_t chunk_bytes = size_t{8} << 20;  // bytes handed to each write(2) (and staged, when gathering)
};

// Writes state to path atomically: path then names the complete new checkpoint, or, on error or
// crash, whatever it named before. Non-contiguous tensors are written as their logical contents;
// tensors on another device are copied to the CPU one at a time. Temporary files that crashed
// writers left for this path are removed after a successful save.
void save(const std::string& path, const State& state, const SaveOptions& options = {});

}  // namespace kiln::io
