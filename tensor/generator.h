// Generator: a seeded, counter-based random stream (Philox4x32-10). A kernel reserves a block of
// counters up front and element i always draws from counter base + i / 4, so results do not depend
// on how many threads share the work, and the whole state is two integers that can be saved.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>

#include "tensor/device.h"

namespace kiln {

struct GeneratorState {
  uint64_t seed = 0;
  uint64_t offset = 0;  // counters (128-bit blocks) already handed out
  friend bool operator==(const GeneratorState&, const GeneratorState&) = default;
};

class Generator {
 public:
  explicit Generator(uint64_t seed = 67280421310721ull) : state_{seed, 0} {}

  void manual_seed(uint64_t seed);
  GeneratorState state() const;
  void set_state(const GeneratorState& s);

  // Hands out `blocks` consecutive counters and returns the first. Thread-safe.
  uint64_t reserve(uint64_t blocks);
  uint64_t seed() const { return state().seed; }

 private:
  mutable std::mutex mutex_;
  GeneratorState state_;
};

// The generator ops use when none is given, one per device. On a thread where a
// CurrentGeneratorGuard is active, the CPU one is that guard's generator.
Generator& default_generator(Device d = Device::cpu());
// Seeds every device's default generator (torch.manual_seed); on a thread with a
// CurrentGeneratorGuard, only that thread's CPU generator.
void manual_seed(uint64_t seed);

// Note [Per-thread default generator]
// A DataLoader worker thread gets a generator of its own, as a torch worker process does, so that
// random code running there (a transform calling randn) neither interleaves with the main thread's
// draws (dropout) nor depends on thread timing. While a guard lives, default_generator(cpu) and
// manual_seed on its thread use `gen`; other threads are not affected. Guards nest.
class CurrentGeneratorGuard {
 public:
  explicit CurrentGeneratorGuard(Generator& gen);
  ~CurrentGeneratorGuard();
  CurrentGeneratorGuard(const CurrentGeneratorGuard&) = delete;
  CurrentGeneratorGuard& operator=(const CurrentGeneratorGuard&) = delete;

 private:
  Generator* previous_;
};

// A fresh 63-bit seed drawn from gen (one counter block), as torch draws a DataLoader's base_seed.
uint64_t draw_seed(Generator& gen);

// Philox4x32-10: 4 random 32-bit words from (key = seed, counter).
std::array<uint32_t, 4> philox(uint64_t seed, uint64_t counter_lo, uint64_t counter_hi = 0);

// Maps random bits to [0, 1) with full float / double mantissa.
inline float uniform_float(uint32_t bits) { return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f); }
inline double uniform_double(uint32_t hi, uint32_t lo) {
  return static_cast<double>(((static_cast<uint64_t>(hi) << 32) | lo) >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace kiln
