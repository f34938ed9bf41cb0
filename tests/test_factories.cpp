// Factories and random streams: values, dtypes, the Philox known-answer vector, reproducibility
// across runs and thread counts, savable generator state, and sample statistics.
#include <cmath>
#include <cstring>

#include "testing.h"

using namespace kiln;
namespace kt = kiln::testing;
using kiln::testing::at;
using kiln::testing::expect_error;

TEST(Factories, FilledTensors) {
  kt::expect_close(zeros({2, 2}), {0, 0, 0, 0}, 0, 0, "zeros");
  kt::expect_close(ones({3}, {.dtype = DType::i32}), {1, 1, 1}, 0, 0, "ones");
  EXPECT_EQ(ones({3}, {.dtype = DType::i32}).dtype(), DType::i32);
  EXPECT_EQ(full({2}, 3).dtype(), DType::i64);     // dtype from the value, as torch.full
  EXPECT_EQ(full({2}, 3.5).dtype(), DType::f32);
  EXPECT_EQ(full({2}, true).dtype(), DType::boolean);
  kt::expect_close(full({2}, 3.5, {.dtype = DType::f64}), {3.5, 3.5}, 0, 0, "full");
  Tensor e = empty({5, 0});
  EXPECT_EQ(e.numel(), 0);
  expect_error([] { (void)zeros({2, -1}); }, {"negative size -1", "[2, -1]"});
}

TEST(Factories, ArangeLinspaceEye) {
  EXPECT_EQ(arange(5).dtype(), DType::i64);
  kt::expect_close(arange(5), {0, 1, 2, 3, 4}, 0, 0, "arange(5)");
  Tensor f = arange(0.0, 1.0, 0.25);
  EXPECT_EQ(f.dtype(), DType::f32);
  kt::expect_close(f, {0, 0.25, 0.5, 0.75}, 0, 0, "arange float");
  kt::expect_close(arange(10, 0, -3), {10, 7, 4, 1}, 0, 0, "arange negative step");
  EXPECT_EQ(arange(3, 3).numel(), 0);
  expect_error([] { (void)arange(0, 5, 0); }, {"arange", "step must be nonzero"});
  expect_error([] { (void)arange(5, 0, 1); }, {"arange", "inconsistent"});
  Tensor l = linspace(-1.0, 1.0, 5, {.dtype = DType::f64});
  kt::expect_close(l, {-1, -0.5, 0, 0.5, 1}, 0, 1e-15, "linspace");
  Tensor l7 = linspace(0.0, 1.0, 7);
  EXPECT_EQ(at(l7, 6), 1.0);  // the end point is exact
  EXPECT_EQ(linspace(2.0, 3.0, 1).item<float>(), 2.0f);
  Tensor i = eye(2, 3);
  kt::expect_close(i, {1, 0, 0, 0, 1, 0}, 0, 0, "eye");
  EXPECT_EQ(eye(0).numel(), 0);
}

TEST(Factories, FromBlobAndVector) {
  std::vector<float> buf = {1, 2, 3, 4, 5, 6};
  Tensor t = from_blob(buf.data(), {2, 3}, DType::f32);
  EXPECT_EQ(t.data_ptr<float>(), buf.data());  // zero copy
  buf[4] = 50;
  EXPECT_EQ(at(t, 4), 50);
  Tensor s = from_blob(buf.data(), {3, 2}, DType::f32, {}, Dims{1, 3});  // a transposed view of the buffer
  EXPECT_EQ(at(s, 1), 4);
  bool freed = false;
  {
    Tensor owned = from_blob(new int[3]{7, 8, 9}, {3}, DType::i32, [&](void* p) { delete[] static_cast<int*>(p); freed = true; });
    Tensor view = owned.slice(0, 1, 3);
    owned = Tensor();
    EXPECT_FALSE(freed);  // the view keeps the bytes alive
    EXPECT_EQ(at(view, 0), 8);
  }
  EXPECT_TRUE(freed);
  Tensor v = tensor(std::vector<int64_t>{1, 2, 3, 4}, Dims{2, 2});
  EXPECT_EQ(v.dtype(), DType::i64);
  EXPECT_EQ(at(v, 3), 4);
  Tensor b = tensor(std::vector<bool>{true, false});
  EXPECT_EQ(b.dtype(), DType::boolean);
  EXPECT_EQ(at(b, 0), 1);
  expect_error([] { (void)tensor(std::vector<float>{1, 2, 3}, Dims{2, 2}); }, {"tensor", "[2, 2]", "3 values"});
}

TEST(Factories, LikeVariants) {
  Tensor a = zeros({2, 3}, {.dtype = DType::f64});
  EXPECT_EQ(ones_like(a).dtype(), DType::f64);
  EXPECT_EQ(ones_like(a, {.dtype = DType::i32}).dtype(), DType::i32);
  EXPECT_EQ(full_like(a, 7).shape(), (Dims{2, 3}));
  EXPECT_EQ(at(full_like(a, 7), 5), 7);
  EXPECT_EQ(randn_like(a).dtype(), DType::f64);
  EXPECT_EQ(empty_like(a).shape(), a.shape());
}

TEST(Generator, PhiloxKnownAnswer) {
  // Random123's published known-answer vectors for philox4x32-10.
  auto z = philox(0, 0, 0);
  EXPECT_EQ(z[0], 0x6627e8d5u);
  EXPECT_EQ(z[1], 0xe169c58du);
  EXPECT_EQ(z[2], 0xbc57ac4cu);
  EXPECT_EQ(z[3], 0x9b00dbd8u);
  auto f = philox(0xffffffffffffffffull, 0xffffffffffffffffull, 0xffffffffffffffffull);
  EXPECT_EQ(f[0], 0x408f276du);
  EXPECT_EQ(f[1], 0x41c83b0eu);
  EXPECT_EQ(f[2], 0xa20bc7c6u);
  EXPECT_EQ(f[3], 0x6d5451fdu);
  auto pi = philox(0x299f31d0a4093822ull, 0x85a308d3243f6a88ull, 0x0370734413198a2eull);
  EXPECT_EQ(pi[0], 0xd16cfe09u);
  EXPECT_EQ(pi[1], 0x94fdccebu);
  EXPECT_EQ(pi[2], 0x5001e420u);
  EXPECT_EQ(pi[3], 0x24126ea1u);
}

TEST(Generator, ReproducibleAcrossSeedsAndThreadCounts) {
  const int threads = get_num_threads();
  manual_seed(42);
  Tensor a = randn({100003});
  Tensor ai = randint(0, 1000, {70001});
  set_num_threads(1);
  manual_seed(42);
  Tensor b = randn({100003});
  Tensor bi = randint(0, 1000, {70001});
  set_num_threads(threads);
  EXPECT_EQ(std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()), 0);
  EXPECT_EQ(std::memcmp(ai.data_ptr(), bi.data_ptr(), ai.nbytes()), 0);
  manual_seed(43);
  Tensor c = randn({100003});
  EXPECT_NE(std::memcmp(a.data_ptr(), c.data_ptr(), a.nbytes()), 0);
}

// Float normals come from float lanes (Note [Vectorized normals]) but draw the same uniforms as
// ever: for group g (elements 4g..4g+3), Philox blocks 2g and 2g + 1, words 0 and 1, as two
// Box-Muller pairs. The reference runs that recipe in double; the lanes stay within a few float
// ulp of it (absolute error scaled by the radius, since cos/sin cross zero), at every size's tail.
TEST(Generator, FloatNormalsFollowTheBoxMullerRecipe) {
  for (int64_t n : {1, 3, 4, 5, 31, 33, 1001, 70003}) {
    Generator g(1234);
    (void)randn({7}, {}, &g);  // a nonzero base: 2 groups' worth of counters
    const uint64_t base = g.state().offset;
    const Tensor z = randn({n}, {}, &g);
    EXPECT_EQ(g.state().offset, base + static_cast<uint64_t>((n + 3) / 4) * 2) << n;
    const float* pz = z.data_ptr<float>();
    double worst = 0;
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t group = static_cast<uint64_t>(i / 4), pair = static_cast<uint64_t>(i % 4 / 2);
      const auto w = philox(1234, base + 2 * group + pair);
      const double r = std::sqrt(-2.0 * std::log(1.0 - uniform_float(w[0])));
      const double theta = 2.0 * M_PI * uniform_float(w[1]);
      const double want = i % 2 == 0 ? r * std::cos(theta) : r * std::sin(theta);
      worst = std::max(worst, std::abs(pz[i] - want) / (std::max(r, 1.0) * 0x1p-24));
    }
    EXPECT_LE(worst, 8.0) << "n=" << n << ": error in units of 2^-24 r";
  }
}

TEST(Generator, StateSaveAndRestore) {
  Generator g(5);
  (void)rand({10}, {}, &g);
  const GeneratorState saved = g.state();
  Tensor x = rand({1000}, {}, &g);
  Tensor x64 = randn({999}, {.dtype = DType::f64}, &g);
  g.set_state(saved);
  Tensor y = rand({1000}, {}, &g);
  Tensor y64 = randn({999}, {.dtype = DType::f64}, &g);
  EXPECT_EQ(std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()), 0);
  EXPECT_EQ(std::memcmp(x64.data_ptr(), y64.data_ptr(), x64.nbytes()), 0);
}

TEST(Generator, DistributionsHaveTheRightMoments) {
  Generator g(11);
  const int64_t n = 200000;
  for (DType dt : {DType::f32, DType::f64}) {
    const auto u = kt::values(rand({n}, {.dtype = dt}, &g));
    const auto z = kt::values(randn({n}, {.dtype = dt}, &g));
    double su = 0, su2 = 0, sz = 0, sz2 = 0, umin = 1, umax = 0;
    for (int64_t i = 0; i < n; ++i) {
      su += u[i]; su2 += u[i] * u[i]; sz += z[i]; sz2 += z[i] * z[i];
      umin = std::min(umin, u[i]); umax = std::max(umax, u[i]);
    }
    // Means within ~5 standard errors.
    EXPECT_NEAR(su / n, 0.5, 5 * std::sqrt(1.0 / 12 / n));
    EXPECT_NEAR(su2 / n - 0.25, 1.0 / 12, 0.002);
    EXPECT_NEAR(sz / n, 0.0, 5 / std::sqrt(static_cast<double>(n)));
    EXPECT_NEAR(sz2 / n, 1.0, 0.015);
    EXPECT_GE(umin, 0.0);
    EXPECT_LT(umax, 1.0);
  }
  const auto r = kt::values(randint(-3, 4, {n}, {}, &g));
  std::vector<int> counts(7);
  for (double v : r) { ASSERT_GE(v, -3); ASSERT_LT(v, 4); ++counts[static_cast<size_t>(v + 3)]; }
  for (int c : counts) EXPECT_NEAR(c, n / 7.0, 5 * std::sqrt(n / 7.0));
  const auto bern = kt::values(bernoulli({n}, 0.3, {}, &g));
  double ones = 0;
  for (double v : bern) ones += v;
  EXPECT_NEAR(ones / n, 0.3, 5 * std::sqrt(0.21 / n));
  Tensor probs = tensor({0.0, 1.0, 0.0, 1.0});
  kt::expect_close(bernoulli(probs, &g), {0, 1, 0, 1}, 0, 0, "bernoulli(probs) at 0 and 1");
  expect_error([&] { (void)randint(5, 5, {2}); }, {"randint", "low < high"});
  expect_error([&] { (void)bernoulli({2}, 1.5); }, {"bernoulli", "1.5"});
  expect_error([&] { (void)rand({2}, {.dtype = DType::i32}); }, {"rand", "int32"});
}
