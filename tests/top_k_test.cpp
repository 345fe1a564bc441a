// SPDX-License-Identifier: MIT
#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <coremap/top_k.hpp>

namespace {

using Counts = std::unordered_map<std::string, std::uint64_t>;

std::vector<std::pair<std::string, std::uint64_t>> ranked(const Counts& counts, std::size_t k) {
  std::vector<std::pair<std::string, std::uint64_t>> out;
  for (const auto* entry : coremap::top_k(counts, k)) out.emplace_back(entry->first, entry->second);
  return out;
}

TEST(TopKTest, HighestCountsFirstAndTiesInKeyOrder) {
  const Counts counts = {{"/b", 5}, {"/c", 3}, {"/a", 3}, {"/d", 1}};
  EXPECT_EQ(ranked(counts, 3), (std::vector<std::pair<std::string, std::uint64_t>>{{"/b", 5}, {"/a", 3}, {"/c", 3}}));
}

TEST(TopKTest, KAboveTheNumberOfKeysGivesThemAllAndZeroGivesNone) {
  const Counts counts = {{"x", 1}, {"y", 2}};
  EXPECT_EQ(ranked(counts, 10).size(), 2u);
  EXPECT_TRUE(ranked(counts, 0).empty());
  EXPECT_TRUE(ranked(Counts{}, 3).empty());
}

TEST(TopKTest, AgreesWithAFullSortOfAnOrderedMap) {
  std::mt19937 random(7);
  Counts counts;
  std::map<std::string, std::uint64_t> same;
  for (int i = 0; i < 2000; ++i) {
    const std::string key = std::to_string(random() % 500);
    const std::uint64_t add = random() % 3;
    counts[key] += add;
    same[key] += add;
  }
  // The oracle: every entry, sorted by count descending; std::stable_sort keeps the ordered
  // map's ascending keys among equal counts.
  std::vector<std::pair<std::string, std::uint64_t>> all(same.begin(), same.end());
  std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  all.resize(25);
  EXPECT_EQ(ranked(counts, 25), all);
  std::vector<std::pair<std::string, std::uint64_t>> from_map;
  for (const auto* entry : coremap::top_k(same, 25)) from_map.emplace_back(entry->first, entry->second);
  EXPECT_EQ(from_map, all);
}

}  // namespace
