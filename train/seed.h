// seed_everything: one seed for every random stream Kiln owns (Lightning's seed_everything).
#pragma once

#include <cstdint>

namespace kiln {

// Seeds the default generators of every device (dropout, initialisation, random ops) and C's
// rand(). Data loaders take their own seed option; pass the same value for a fully seeded run.
// Returns the seed.
uint64_t seed_everything(uint64_t seed);

}  // namespace kiln
