// SmallVector (inline storage, then the heap) and the per-thread object pools that autograd nodes,
// tensor bodies and storages are recycled through.
#include <gtest/gtest.h>

#include <string>

#include "tensor/object_pool.h"
#include "tensor/small_vector.h"

using kiln::SmallVector;

namespace {

// Counts live objects, so every test can check that each construction met its destruction.
struct Counted {
  static inline int live = 0;
  std::string value;
  Counted() : value("default") { ++live; }
  explicit Counted(std::string v) : value(std::move(v)) { ++live; }
  Counted(const Counted& o) : value(o.value) { ++live; }
  Counted(Counted&& o) noexcept : value(std::move(o.value)) { ++live; }
  ~Counted() { --live; }
};

std::string joined(const SmallVector<Counted, 2>& v) {
  std::string s;
  for (const Counted& c : v) s += c.value + ",";
  return s;
}

TEST(SmallVector, StaysInlineUpToItsCapacityThenSpillsToTheHeap) {
  {
    SmallVector<Counted, 2> v;
    const void* inline_data = v.data();
    v.emplace_back("a");
    v.emplace_back("b");
    EXPECT_EQ(v.data(), inline_data);
    v.emplace_back("c");  // spills: the first two move to the heap block
    EXPECT_NE(v.data(), inline_data);
    v.push_back(Counted("d"));
    EXPECT_EQ(v.size(), 4u);
    EXPECT_EQ(joined(v), "a,b,c,d,");
    EXPECT_EQ(Counted::live, 4);
  }
  EXPECT_EQ(Counted::live, 0);
}

TEST(SmallVector, MovesInlineAndHeapContents) {
  {
    SmallVector<Counted, 2> small;
    small.emplace_back("x");
    SmallVector<Counted, 2> moved(std::move(small));
    EXPECT_EQ(joined(moved), "x,");
    EXPECT_TRUE(small.empty());  // NOLINT: moved-from is specified as empty

    SmallVector<Counted, 2> big;
    for (const char* v : {"1", "2", "3"}) big.emplace_back(v);
    const Counted* heap = big.data();
    moved = std::move(big);  // steals the heap block, destroys "x"
    EXPECT_EQ(moved.data(), heap);
    EXPECT_EQ(joined(moved), "1,2,3,");
    EXPECT_TRUE(big.empty());  // NOLINT
    big.emplace_back("again");  // a moved-from vector is usable
    EXPECT_EQ(joined(big), "again,");
    EXPECT_EQ(Counted::live, 4);
  }
  EXPECT_EQ(Counted::live, 0);
}

TEST(SmallVector, ResizeConstructsAndDestroys) {
  {
    SmallVector<Counted, 2> v(3);
    EXPECT_EQ(joined(v), "default,default,default,");
    v.resize(1);
    EXPECT_EQ(Counted::live, 1);
    v[0].value = "kept";
    v.resize(2);
    EXPECT_EQ(joined(v), "kept,default,");
    v.clear();
    EXPECT_EQ(Counted::live, 0);
  }
  EXPECT_EQ(Counted::live, 0);
}

struct PoolTag {};
using Pool = kiln::detail::SizeClassPool<PoolTag, 64, 4, /*kDepth=*/2>;

TEST(SizeClassPool, RecyclesBlocksPerSizeClass) {
  void* a = Pool::allocate(40);
  void* b = Pool::allocate(100);  // another class (65..128 bytes)
  Pool::release(a, 40);
  Pool::release(b, 100);
  EXPECT_EQ(Pool::allocate(64), a);    // the same class as 40 bytes: the freed block comes back
  EXPECT_EQ(Pool::allocate(128), b);
  void* big = Pool::allocate(1000);    // past the largest class: plain operator new
  Pool::release(big, 1000);
  Pool::release(a, 64);
  Pool::release(b, 128);
}

TEST(SizeClassPool, KeepsAtMostItsDepthPerClass) {
  void* blocks[3] = {Pool::allocate(10), Pool::allocate(10), Pool::allocate(10)};
  for (void* p : blocks) Pool::release(p, 10);  // the third goes back to operator delete
  void* again[3] = {Pool::allocate(10), Pool::allocate(10), Pool::allocate(10)};
  // Last in, first out: the two cached blocks, newest first; the third is fresh from the heap.
  EXPECT_EQ(again[0], blocks[1]);
  EXPECT_EQ(again[1], blocks[0]);
  for (void* p : again) Pool::release(p, 10);
}

}  // namespace
