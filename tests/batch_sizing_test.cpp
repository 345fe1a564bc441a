// SPDX-License-Identifier: MIT
// Adaptive batch sizing (framework/src/batch_sizing.hpp), the engine's batches and the MPI
// coordinator's chunks: expected sizes worked out by hand from the rate and the target.
#include <cstdint>
#include <limits>

#include <gtest/gtest.h>

#include "batch_sizing.hpp"

namespace coremap::detail {
namespace {

TEST(BatchSizingTest, UnmeasuredGivesTheFirstSizeWithinBounds) {
  EXPECT_EQ(items_for_duration(200'000, 0, 0, 4096), 1u);
  EXPECT_EQ(items_for_duration(200'000, 0, 5'000, 4096, 8), 8u);  // no items measured
  EXPECT_EQ(items_for_duration(200'000, 3, 0, 4096, 8), 8u);      // no time measured
  EXPECT_EQ(items_for_duration(200'000, 0, 0, 4, 8), 4u);         // clamped to the maximum
  EXPECT_EQ(items_for_duration(200'000, 0, 0, 4096, 0), 1u);      // and to at least 1
}

TEST(BatchSizingTest, TargetOverTimePerItemRoundedDown) {
  // 1 item in 1,000 ns: 200,000 ns hold 200 items.
  EXPECT_EQ(items_for_duration(200'000, 1, 1'000, 4096), 200u);
  // 3 items in 1,000 ns: 200,000 x 3 / 1,000 = 600.
  EXPECT_EQ(items_for_duration(200'000, 3, 1'000, 4096), 600u);
  // 7 items in 3 s at a 50 ms target: 50e6 x 7 / 3e9 = 0.1166..., at least 1.
  EXPECT_EQ(items_for_duration(50'000'000, 7, 3'000'000'000, 65536), 1u);
  // 1,000 items in 1 s at 50 ms: 50.
  EXPECT_EQ(items_for_duration(50'000'000, 1'000, 1'000'000'000, 65536), 50u);
  // 2 ns per item: 100,000, capped at 4,096.
  EXPECT_EQ(items_for_duration(200'000, 1, 2, 4096), 4096u);
}

TEST(BatchSizingTest, NoOverflowForHugeCounts) {
  constexpr std::uint64_t big = std::numeric_limits<std::uint64_t>::max() / 2;
  EXPECT_EQ(items_for_duration(50'000'000, big, 1, 65536), 65536u);
  EXPECT_EQ(items_for_duration(std::numeric_limits<std::uint64_t>::max(), big, big, 65536), 65536u);
}

TEST(BatchSizingTest, GuidedShareIsHalfTheFairShareRoundedUp) {
  // 1,000 items left over 2 takers: ceil(1000 / 4) = 250.
  EXPECT_EQ(guided_share(1000.0, 2, 1), 250u);
  EXPECT_EQ(guided_share(1001.0, 2, 1), 251u);
  // Never below the floor (one item per thread of the asking rank).
  EXPECT_EQ(guided_share(3.0, 2, 4), 4u);
  EXPECT_EQ(guided_share(0.0, 3, 2), 2u);
  // No takers counts as one.
  EXPECT_EQ(guided_share(10.0, 0, 1), 5u);
}

TEST(BatchSizingTest, ItemsLeftAtTheBytesPerItemSoFar) {
  // 100 items from 1,000 of 5,000 bytes: 400 more.
  EXPECT_DOUBLE_EQ(estimate_items_left(5'000, 1'000, 100), 400.0);
  EXPECT_DOUBLE_EQ(estimate_items_left(5'000, 0, 0), 0.0);      // nothing read
  EXPECT_DOUBLE_EQ(estimate_items_left(5'000, 5'000, 100), 0.0);  // all read
  EXPECT_DOUBLE_EQ(estimate_items_left(5'000, 6'000, 100), 0.0);  // grew while read
}

}  // namespace
}  // namespace coremap::detail
