// SPDX-License-Identifier: MIT
// Per-thread leases on the test's own thread: a nested lease stands for another batch picked
// up on this thread while the first one waits.
#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "per_thread_pool.hpp"

namespace {

using coremap::detail::PerThreadPool;

struct Counter {
  int id;
};

struct Fixture {
  int made = 0;
  PerThreadPool<Counter> pool;
  explicit Fixture(bool shared = false)
      : pool([this] { return std::make_unique<Counter>(Counter{made++}); }, PerThreadPool<Counter>::Making::under_lock,
             shared) {}
};

TEST(PerThreadPoolTest, AThreadKeepsItsObjectFromLeaseToLease) {
  Fixture f;
  const Counter* first = nullptr;
  {
    PerThreadPool<Counter>::Lease lease(f.pool);
    first = &*lease;
  }
  PerThreadPool<Counter>::Lease again(f.pool);
  EXPECT_EQ(&*again, first);
  EXPECT_EQ(f.made, 1);
}

TEST(PerThreadPoolTest, TheFirstObjectMadeAheadIsTheFirstLeased) {
  Fixture f;
  Counter* added = f.pool.add();
  PerThreadPool<Counter>::Lease lease(f.pool);
  EXPECT_EQ(&*lease, added);
  EXPECT_EQ(f.pool.first(), added);
  EXPECT_EQ(f.made, 1);
}

TEST(PerThreadPoolTest, ANestedLeaseGetsAnObjectOfItsOwnAndGivesItBack) {
  Fixture f;
  PerThreadPool<Counter>::Lease outer(f.pool);
  const Counter* nested_object = nullptr;
  {
    PerThreadPool<Counter>::Lease nested(f.pool);
    nested_object = &*nested;
    EXPECT_NE(nested_object, &*outer);
  }
  {
    PerThreadPool<Counter>::Lease nested_again(f.pool);
    EXPECT_EQ(&*nested_again, nested_object);  // the spare, not a third object
  }
  EXPECT_EQ(f.made, 2);
  std::vector<int> ids;
  f.pool.for_each([&](Counter& c) { ids.push_back(c.id); });
  EXPECT_EQ(ids, (std::vector<int>{0, 1}));
}

TEST(PerThreadPoolTest, SharedHandsEveryLeaseTheFirstObject) {
  Fixture f(true);
  Counter* only = f.pool.add();
  PerThreadPool<Counter>::Lease outer(f.pool);
  PerThreadPool<Counter>::Lease nested(f.pool);
  EXPECT_EQ(&*outer, only);
  EXPECT_EQ(&*nested, only);
  EXPECT_EQ(f.made, 1);
}

TEST(PerThreadPoolTest, ClearForgetsTheThreadsObject) {
  Fixture f;
  { PerThreadPool<Counter>::Lease lease(f.pool); }
  f.pool.clear();
  EXPECT_EQ(f.pool.first(), nullptr);
  PerThreadPool<Counter>::Lease lease(f.pool);
  EXPECT_EQ((*lease).id, 1);
}

}  // namespace
