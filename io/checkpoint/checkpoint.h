// The checkpoint API in one include: save/load of native files, the reader, async saves, sharded
// checkpoints and format detection. safetensors lives in io/safetensors/safetensors.h. The format is
// specified in docs/checkpoint-format.md.
#pragma once

#include "io/checkpoint/async_saver.h"
#include "io/checkpoint/checksum.h"
#include "io/checkpoint/reader.h"
#include "io/checkpoint/sharded.h"
#include "io/checkpoint/writer.h"
