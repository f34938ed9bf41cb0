// seed_everything.
#include "train/seed.h"

#include <cstdlib>

#include "tensor/generator.h"

namespace kiln {

uint64_t seed_everything(uint64_t seed) {
  manual_seed(seed);
  std::srand(static_cast<unsigned>(seed));
  return seed;
}

}  // namespace kiln
