// SPDX-License-Identifier: MIT
// coremap::map and map_into (coremap/map.hpp): results against a serial std::transform of the
// same function, errors with their indices against the set the test computes itself, stops,
// retries, hand-over order and completeness, the last progress snapshot. map_alloc_test.cpp
// counts allocations.
#include <coremap/map.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace coremap {
namespace {

struct Point {
  std::uint64_t id = 0;
  double x = 0;
  double y = 0;
};

struct Hashed {
  std::uint64_t id = 0;
  std::uint64_t hash = 0;
  bool operator==(const Hashed&) const = default;
};

std::vector<Point> points(std::size_t n) {
  std::vector<Point> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = Point{i, static_cast<double>(i) * 0.5, static_cast<double>(n - i)};
  return out;
}

Hashed hash_point(const Point& p) {
  std::uint64_t h = p.id * 0x9E3779B97F4A7C15ull;
  for (int round = 0; round < 8; ++round) h = (h ^ (h >> 29)) * 0xBF58476D1CE4E5B9ull + static_cast<std::uint64_t>(p.x);
  return Hashed{p.id, h};
}

std::vector<Hashed> serial_oracle(const std::vector<Point>& items) {
  std::vector<Hashed> expected(items.size());
  std::transform(items.begin(), items.end(), expected.begin(), hash_point);
  return expected;
}

TEST(MapTest, MatchesSerialTransformAtSeveralThreadCounts) {
  const auto items = points(50'000);
  const auto expected = serial_oracle(items);
  for (const std::size_t threads : {1u, 2u, 4u}) {
    std::vector<Hashed> out(items.size());
    const MapReport report = map_into(items, out, hash_point, {.threads = threads});
    EXPECT_TRUE(report.ok());
    EXPECT_EQ(out, expected) << threads << " threads";
    EXPECT_EQ(report.stats.items, items.size());
    EXPECT_EQ(report.stats.ok, items.size());
    EXPECT_EQ(report.stats.not_run, 0u);
    EXPECT_EQ(report.stats.threads, threads);
  }
  std::vector<Hashed> out(items.size());
  EXPECT_TRUE(map_into(items, out, hash_point, {.serial = true}).ok());
  EXPECT_EQ(out, expected) << "serial";
}

TEST(MapTest, EmptyRangeAndShortOutput) {
  const std::vector<Point> none;
  std::vector<Hashed> out;
  const MapReport report = map_into(none, out, hash_point);
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(report.stats.items, 0u);
  const auto items = points(10);
  std::vector<Hashed> short_out(9);
  EXPECT_THROW(map_into(items, short_out, hash_point), UsageError);
}

TEST(MapTest, ContextGivesIndexAndAttempt) {
  const auto items = points(3000);
  std::vector<std::uint64_t> out(items.size(), 0);
  const MapReport report = map_into(items, out, [](const Point& p, Context& context) {
    if (context.index() != p.id) throw std::logic_error("wrong index");
    return context.index() * 10 + context.attempt();
  }, {.threads = 2, .grain = 7});
  EXPECT_TRUE(report.ok());
  for (std::size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], i * 10 + 1);
}

TEST(MapTest, ErrorsComeBackWithTheirIndicesAndCostTheOthersNothing) {
  const auto items = points(20'000);
  const auto expected = serial_oracle(items);
  std::set<std::uint64_t> failing;
  for (std::uint64_t i = 3; i < items.size(); i += 7) failing.insert(i);
  for (const std::size_t threads : {1u, 2u, 4u}) {
    std::vector<Hashed> out(items.size(), Hashed{~0ull, 0});
    const MapReport report = map_into(items, out, [](const Point& p) {
      if (p.id % 7 == 3) throw std::runtime_error("bad point " + std::to_string(p.id));
      return hash_point(p);
    }, {.threads = threads});
    ASSERT_EQ(report.errors.size(), failing.size());
    auto want = failing.begin();
    for (const MapError& error : report.errors) {
      EXPECT_EQ(error.index, *want);
      EXPECT_EQ(error.message, "bad point " + std::to_string(*want));
      EXPECT_EQ(error.attempts, 1u);
      ++want;
    }
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (failing.count(i) != 0) {
        ASSERT_EQ(out[i].id, ~0ull) << "a failed item leaves its slot untouched";
      } else {
        ASSERT_EQ(out[i], expected[i]);
      }
    }
    EXPECT_EQ(report.stats.failed, failing.size());
    EXPECT_EQ(report.stats.ok, items.size() - failing.size());
    EXPECT_TRUE(report.not_run.empty());
    EXPECT_EQ(report.stats.stopped, StopReason::none);
  }
}

struct NotAnException {};

TEST(MapTest, AThrowOfAnyTypeIsNamed) {
  const auto items = points(5);
  std::vector<int> out(items.size());
  const MapReport report = map_into(items, out, [](const Point& p) -> int {
    if (p.id == 2) throw NotAnException{};
    return 1;
  });
  ASSERT_EQ(report.errors.size(), 1u);
  EXPECT_EQ(report.errors[0].index, 2u);
  EXPECT_NE(report.errors[0].message.find("NotAnException"), std::string::npos) << report.errors[0].message;
}

TEST(MapTest, RetriesRerunAFailureAndCountAttempts) {
  const auto items = points(4000);
  std::vector<std::atomic<std::uint32_t>> calls(items.size());
  std::vector<std::uint64_t> out(items.size());
  // Odd items fail on their first attempt only; multiples of 100 always fail.
  const MapReport report = map_into(items, out, [&](const Point& p, Context& context) -> std::uint64_t {
    calls[p.id].fetch_add(1);
    if (p.id % 100 == 0) throw std::runtime_error("always");
    if (p.id % 2 == 1 && context.attempt() == 1) throw std::runtime_error("first attempt");
    return context.attempt();
  }, {.threads = 2, .retries = 2});
  ASSERT_EQ(report.errors.size(), 40u);
  for (const MapError& error : report.errors) {
    EXPECT_EQ(error.index % 100, 0u);
    EXPECT_EQ(error.attempts, 3u);
    EXPECT_EQ(error.message, "always");
  }
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i % 100 == 0) {
      EXPECT_EQ(calls[i].load(), 3u);
    } else {
      EXPECT_EQ(out[i], i % 2 == 1 ? 2u : 1u) << i;
      EXPECT_EQ(calls[i].load(), i % 2 == 1 ? 2u : 1u) << i;
    }
  }
}

// Every item has a result, an error or is in not_run, exactly one of them, and the counts add
// up; the items with a result hold the serial oracle's value.
void expect_accounted(const MapReport& report, const std::vector<Hashed>& out, const std::vector<Hashed>& expected) {
  std::vector<int> state(expected.size(), 0);  // 0 result, 1 error, 2 not run
  for (const MapError& error : report.errors) state.at(error.index) = 1;
  std::uint64_t not_run = 0;
  std::uint64_t previous_end = 0;
  for (const IndexRange& range : report.not_run) {
    EXPECT_LT(range.begin, range.end);
    EXPECT_TRUE(range.begin == 0 || range.begin > previous_end) << "disjoint, not adjacent, in order";
    previous_end = range.end;
    for (std::uint64_t i = range.begin; i < range.end; ++i) {
      EXPECT_EQ(state.at(i), 0) << "an item with an error is not also unrun";
      state[i] = 2;
      ++not_run;
    }
  }
  std::uint64_t results = 0;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    if (state[i] != 0) continue;
    ++results;
    ASSERT_EQ(out[i], expected[i]) << i;
  }
  EXPECT_EQ(report.stats.not_run, not_run);
  EXPECT_EQ(report.stats.failed, report.errors.size());
  EXPECT_EQ(report.stats.ok, results);
  EXPECT_EQ(report.stats.items + report.stats.not_run, expected.size());
}

TEST(MapTest, MaxErrorsStopsTheRun) {
  const auto items = points(10'000);
  const auto expected = serial_oracle(items);
  auto fn = [](const Point& p) {
    if (p.id % 10 == 0) throw std::runtime_error("tenth");
    return hash_point(p);
  };
  {
    std::vector<Hashed> out(items.size());
    const MapReport report = map_into(items, out, fn, {.serial = true, .max_errors = 5});
    // Serial: items 0..40 ran, the fifth failure (item 40) is recorded and stops the run.
    ASSERT_EQ(report.errors.size(), 5u);
    EXPECT_EQ(report.errors.back().index, 40u);
    ASSERT_EQ(report.not_run.size(), 1u);
    EXPECT_EQ(report.not_run[0].begin, 41u);
    EXPECT_EQ(report.not_run[0].end, items.size());
    EXPECT_EQ(report.stats.stopped, StopReason::max_errors);
    expect_accounted(report, out, expected);
  }
  for (const std::size_t threads : {2u, 4u}) {
    std::vector<Hashed> out(items.size());
    const MapReport report = map_into(items, out, fn, {.threads = threads, .max_errors = 5, .grain = 16});
    EXPECT_GE(report.errors.size(), 5u);
    EXPECT_FALSE(report.not_run.empty());
    EXPECT_EQ(report.stats.stopped, StopReason::max_errors);
    expect_accounted(report, out, expected);
  }
}

TEST(MapTest, CancellationStopsTheRunAndCutShortItemsHaveNoOutcome) {
  const auto items = points(20'000);
  const auto expected = serial_oracle(items);
  {
    CancellationToken cancel;
    std::vector<Hashed> out(items.size());
    const MapReport report = map_into(items, out, [&](const Point& p) {
      if (p.id == 1000) cancel.cancel();
      return hash_point(p);
    }, {.serial = true, .cancel = cancel});
    // Item 1000 was overtaken by the stop it caused: no outcome, like every later one.
    ASSERT_EQ(report.not_run.size(), 1u);
    EXPECT_EQ(report.not_run[0].begin, 1000u);
    EXPECT_EQ(report.stats.items, 1000u);
    EXPECT_EQ(report.stats.stopped, StopReason::cancelled);
    expect_accounted(report, out, expected);
  }
  for (const std::size_t threads : {2u, 4u}) {
    CancellationToken cancel;
    std::vector<Hashed> out(items.size());
    const MapReport report = map_into(items, out, [&](const Point& p, Context& context) {
      if (p.id == 5000) cancel.cancel();
      if (p.id == 5001 && context.cancelled()) throw std::runtime_error("saw the stop");
      return hash_point(p);
    }, {.threads = threads, .cancel = cancel, .grain = 64});
    EXPECT_EQ(report.stats.stopped, StopReason::cancelled);
    EXPECT_FALSE(report.not_run.empty());
    EXPECT_TRUE(report.errors.empty()) << "an error caused by the stop is no outcome";
    expect_accounted(report, out, expected);
  }
}

TEST(MapTest, ACancelledTokenRunsNothing) {
  const auto items = points(1000);
  CancellationToken cancel;
  cancel.cancel();
  std::atomic<int> calls{0};
  std::vector<Hashed> out(items.size());
  const MapReport report = map_into(items, out, [&](const Point& p) {
    ++calls;
    return hash_point(p);
  }, {.threads = 2, .cancel = cancel});
  EXPECT_EQ(calls.load(), 0);
  EXPECT_EQ(report.stats.not_run, items.size());
  ASSERT_EQ(report.not_run.size(), 1u);
  EXPECT_EQ(report.not_run[0].end, items.size());
}

TEST(MapTest, OrderedDeliveryIsInIndexOrder) {
  const auto items = points(30'000);
  const auto expected = serial_oracle(items);
  for (const std::size_t threads : {1u, 2u, 4u}) {
    std::vector<std::uint64_t> order;
    std::vector<Hashed> got;
    std::uint64_t errors_seen = 0;
    struct Receiver {
      std::vector<std::uint64_t>& order;
      std::vector<Hashed>& got;
      std::uint64_t& errors_seen;
      void operator()(std::size_t index, Hashed&& value) {
        order.push_back(index);
        got.push_back(value);
      }
      void operator()(const MapError& error) {
        order.push_back(error.index);
        got.push_back(Hashed{});
        ++errors_seen;
      }
    };
    const MapReport report = map(items, [](const Point& p) {
      // Uneven work, so chunks finish out of order.
      Hashed h = hash_point(p);
      for (std::uint64_t k = 0; k < (p.id * 2654435761u) % 64; ++k) h = hash_point(Point{h.hash, 1, 1});
      if (p.id % 1000 == 999) throw std::runtime_error("edge");
      return Hashed{p.id, h.hash};
    }, Receiver{order, got, errors_seen}, {.threads = threads, .grain = 13});
    ASSERT_EQ(order.size(), items.size());
    for (std::size_t i = 0; i < order.size(); ++i) ASSERT_EQ(order[i], i) << threads << " threads";
    EXPECT_EQ(errors_seen, 30u);
    EXPECT_EQ(report.errors.size(), 30u);
    for (std::size_t i = 0; i < got.size(); ++i) {
      if (i % 1000 != 999) {
        ASSERT_EQ(got[i].id, i);
      }
    }
  }
}

TEST(MapTest, UnorderedDeliveryHandsOverEveryItemOnce) {
  const auto items = points(30'000);
  const auto expected = serial_oracle(items);
  for (const std::size_t threads : {2u, 4u}) {
    std::vector<int> seen(items.size(), 0);
    std::atomic<int> inside{0};
    bool overlapped = false;
    const MapReport report = map(items, hash_point, [&](std::size_t index, Hashed&& value) {
      if (inside.fetch_add(1) != 0) overlapped = true;
      ++seen.at(index);
      if (!(value == expected[index])) overlapped = true;
      inside.fetch_sub(1);
    }, {.threads = threads, .ordered = false, .grain = 100});
    EXPECT_FALSE(overlapped) << "one call at a time, with the oracle's value";
    EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
    EXPECT_TRUE(report.ok());
  }
}

TEST(MapTest, AThrowingReceiverStopsTheRunAndIsRethrown) {
  const auto items = points(10'000);
  std::uint64_t received = 0;
  EXPECT_THROW(map(items, hash_point, [&](std::size_t index, Hashed&&) {
    ++received;
    if (index == 500) throw std::runtime_error("receiver full");
  }, {.threads = 2, .grain = 50}), std::runtime_error);
  EXPECT_EQ(received, 501u) << "nothing is handed over after the throw";
}

TEST(MapTest, TheLastProgressSnapshotReportsTheEnd) {
  const auto items = points(20'000);
  std::vector<ProgressSnapshot> snapshots;
  std::vector<Hashed> out(items.size());
  const MapReport report = map_into(items, out, [](const Point& p) {
    if (p.id % 500 == 0) throw std::runtime_error("x");
    return hash_point(p);
  }, {.threads = 2, .on_progress = [&](const ProgressSnapshot& s) { snapshots.push_back(s); },
      .progress_interval = std::chrono::milliseconds(1)});
  ASSERT_FALSE(snapshots.empty());
  const ProgressSnapshot& last = snapshots.back();
  EXPECT_EQ(last.done, items.size());
  EXPECT_EQ(last.total_items, items.size());
  EXPECT_EQ(last.failed, 40u);
  EXPECT_DOUBLE_EQ(last.fraction(), 1.0);
  EXPECT_EQ(report.stats.failed, 40u);
}

// One options struct: a typed map takes the engine's RunOptions, uses the fields it can honour,
// and refuses the others by name (UsageError) before any item runs, rather than ignore them.
TEST(MapTest, RunOptionsATypedMapDoesNotHonourAreRefusedByName) {
  const std::vector<int> items(100, 1);
  const auto twice = [](int v) { return 2 * v; };
  RunOptions with_cache;
  with_cache.cache.directory = "unused-cache";
  const std::vector<std::pair<RunOptions, std::string>> refused = {
      {RunOptions{.max_in_flight = 4}, "max_in_flight"},
      {RunOptions{.reorder_budget_bytes = 1}, "reorder_budget_bytes"},
      {RunOptions{.timeout = std::chrono::milliseconds(5)}, "timeout"},
      {RunOptions{.skip = std::make_shared<IndexSet>()}, "skip"},
      {RunOptions{.isolate = true}, "isolate"},
      {RunOptions{.memory_limit_bytes = 1}, "memory_limit_bytes"},
      {RunOptions{.worker_launcher = [](const WorkerLaunch&) { return -1; }}, "worker_launcher"},
      {RunOptions{.measure = true}, "measure"},
      {with_cache, "cache"},
      {RunOptions{.save_states = true}, "save_states"},
      {RunOptions{.on_checkpoint = [](const Checkpoint&) {}}, "on_checkpoint"},
      {RunOptions{.resume_states = Json::object()}, "resume_states"},
      {RunOptions{.timeout = std::chrono::milliseconds(5), .measure = true}, "timeout, measure"},
  };
  for (const auto& [options, named] : refused) {
    SCOPED_TRACE(named);
    std::vector<int> out(items.size(), 0);
    std::atomic<int> calls{0};
    const auto counted = [&](int v) {
      ++calls;
      return 2 * v;
    };
    try {
      map_into(items, out, counted, options);
      ADD_FAILURE() << "map_into accepted " << named;
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("RunOptions " + named + " do not apply to a typed map"), std::string::npos)
          << e.what();
    }
    EXPECT_THROW(map(items, counted, [](std::size_t, int) {}, options), UsageError);
    EXPECT_EQ(calls.load(), 0) << "an item ran before the refusal";
    EXPECT_EQ(out, std::vector<int>(items.size(), 0));
  }
  // Every field it does use, together.
  std::vector<int> out(items.size(), 0);
  std::atomic<int> reports{0};
  CancellationToken cancel;
  const MapReport report =
      map_into(items, out, twice,
               {.threads = 2, .ordered = false, .max_errors = 3, .retries = 1, .cancel = cancel,
                .on_progress = [&](const ProgressSnapshot&) { ++reports; }, .progress_interval = std::chrono::milliseconds(1),
                .grain = 7});
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(out, std::vector<int>(items.size(), 2));
  EXPECT_GE(reports.load(), 1);
}

}  // namespace
}  // namespace coremap
