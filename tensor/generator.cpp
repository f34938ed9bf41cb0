// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) and the
// default generators.
#include "tensor/generator.h"

namespace kiln {

std::array<uint32_t, 4> philox(uint64_t seed, uint64_t counter_lo, uint64_t counter_hi) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kMul0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kMul1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return {c0, c1, c2, c3};
}

void Generator::manual_seed(uint64_t seed) {
  std::lock_guard<std::mutex> lock(mutex_);
  state_ = {seed, 0};
}

GeneratorState Generator::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_;
}

void Generator::set_state(const GeneratorState& s) {
  std::lock_guard<std::mutex> lock(mutex_);
  state_ = s;
}

uint64_t Generator::reserve(uint64_t blocks) {
  std::lock_guard<std::mutex> lock(mutex_);
  const uint64_t base = state_.offset;
  state_.offset += blocks;
  return base;
}

namespace {
thread_local Generator* t_current = nullptr;  // Note [Per-thread default generator]
}  // namespace

Generator& default_generator(Device d) {
  // One per (device type, index); CUDA generators are created on first use.
  static Generator cpu;
  static Generator cuda[128];
  if (d.is_cpu()) return t_current ? *t_current : cpu;
  return cuda[d.index];
}

void manual_seed(uint64_t seed) {
  default_generator(Device::cpu()).manual_seed(seed);
  if (t_current) return;  // a worker thread seeds its own generator only
  for (int i = 0; i < 128; ++i) default_generator(Device::cuda(i)).manual_seed(seed);
}

CurrentGeneratorGuard::CurrentGeneratorGuard(Generator& gen) : previous_(t_current) { t_current = &gen; }
CurrentGeneratorGuard::~CurrentGeneratorGuard() { t_current = previous_; }

uint64_t draw_seed(Generator& gen) {
  const GeneratorState s = gen.state();
  const uint64_t counter = gen.reserve(1);
  const std::array<uint32_t, 4> w = philox(s.seed, counter);
  return ((static_cast<uint64_t>(w[0]) << 32) | w[1]) >> 1;
}

}  // namespace kiln
