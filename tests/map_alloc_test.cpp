// SPDX-License-Identifier: MIT
// coremap::map and map_into allocate nothing per item: this binary replaces operator new with
// one that counts, and runs the same map over N and 2N items in the same number of chunks.
// Its own executable, so the replacement touches no other test.
#include <coremap/map.hpp>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#include <gtest/gtest.h>

namespace {

std::atomic<bool> counting{false};
std::atomic<std::uint64_t> allocations{0};

}  // namespace

void* operator new(std::size_t size) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace coremap {
namespace {

struct Point {
  std::uint64_t id = 0;
  double x = 0;
};

struct Hashed {
  std::uint64_t id = 0;
  std::uint64_t hash = 0;
};

Hashed hash_point(const Point& p) {
  std::uint64_t h = p.id * 0x9E3779B97F4A7C15ull;
  for (int round = 0; round < 8; ++round) h = (h ^ (h >> 29)) * 0xBF58476D1CE4E5B9ull + static_cast<std::uint64_t>(p.x);
  return Hashed{p.id, h};
}

TEST(MapTest, AllocatesNothingPerItem) {
  // Twice the items, the same number of chunks: the count of allocations must not grow with
  // the items (it may with the chunks: one buffer each for map() with a callback).
  for (const bool with_callback : {false, true}) {
    std::uint64_t counts[2];
    for (int run = 0; run < 2; ++run) {
      std::vector<Point> items(run == 0 ? 100'000 : 200'000);
      for (std::size_t i = 0; i < items.size(); ++i) items[i] = Point{i, 0.5 * static_cast<double>(i)};
      std::vector<Hashed> out(items.size());
      std::uint64_t sum = 0;
      const RunOptions options{.threads = 2, .grain = items.size() / 100};
      allocations = 0;
      counting = true;
      if (with_callback) {
        map(items, hash_point, [&](std::size_t, Hashed&& h) { sum += h.hash; }, options);
      } else {
        map_into(items, out, hash_point, options);
      }
      counting = false;
      counts[run] = allocations.load();
      EXPECT_LT(counts[run], 1000u) << (with_callback ? "map" : "map_into");
    }
    EXPECT_LE(counts[1], counts[0] + 16) << "allocations grow with items: " << counts[0] << " then " << counts[1];
  }
}

}  // namespace
}  // namespace coremap
