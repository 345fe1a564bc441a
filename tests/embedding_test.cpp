// SPDX-License-Identifier: MIT
// The embedding API: callables as plugins, record callbacks, cancellation, progress.
#include <coremap/coremap.hpp>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace coremap {
namespace {

using test::numbers;

TEST(EmbeddingTest, CallableRunsAsAPluginAndErrorsBecomeRecords) {
  Engine engine([](const Json& item, Context&) -> Json {
    const int n = item.at("n");
    if (n % 7 == 3) throw std::runtime_error("seven-three");
    return n * n;
  }, {.threads = 4});
  RunStats stats;
  const auto records = engine.map(numbers(1000), &stats);
  ASSERT_EQ(records.size(), 1000u);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(records[i].index, static_cast<std::uint64_t>(i));
    if (i % 7 == 3) {
      EXPECT_FALSE(records[i].ok);
      EXPECT_EQ(records[i].error, "seven-three");
    } else {
      EXPECT_EQ(records[i].result, i * i);
    }
  }
  EXPECT_EQ(stats.failed, 143u);  // i % 7 == 3 for i in [0, 1000): 3, 10, ..., 997
  EXPECT_EQ(stats.ok, 857u);
}

TEST(EmbeddingTest, OrderedCallbackDeliversEachRecordOnceInOrder) {
  for (bool serial : {true, false}) {
    Engine engine([](const Json& item, Context&) -> Json {
      // Uneven cost, so items finish out of order.
      const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds((item["n"].get<int>() * 37) % 200);
      while (std::chrono::steady_clock::now() < spin_until) {
      }
      return item["n"];
    }, {.threads = 4, .serial = serial});
    std::vector<std::uint64_t> seen;
    const RunStats stats = engine.map(numbers(2000), [&](const Record& record) {
      seen.push_back(record.index);
      EXPECT_EQ(record.result, static_cast<int>(record.index));
    });
    ASSERT_EQ(seen.size(), 2000u);
    for (std::size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], i);
    EXPECT_EQ(stats.ok, 2000u);
  }
}

TEST(EmbeddingTest, UnorderedCallbackDeliversEveryRecordOnce) {
  Engine engine([](const Json& item, Context&) -> Json { return item["n"]; }, {.threads = 4, .ordered = false});
  std::multiset<std::uint64_t> seen;
  engine.map(numbers(5000), [&](const Record& record) { seen.insert(record.index); });
  ASSERT_EQ(seen.size(), 5000u);
  for (std::uint64_t i = 0; i < 5000; ++i) EXPECT_EQ(seen.count(i), 1u);
}

TEST(EmbeddingTest, RecordCallbackOnAManifestMatchesTheTextOutput) {
  test::TempDir dir;
  std::string text;
  for (int i = 0; i < 3000; ++i) text += (i % 11 == 4 ? std::string("{bad\n") : "{\"n\":" + std::to_string(i) + "}\n");
  const std::string path = dir.write("m.jsonl", text);
  Engine engine([](const Json& item, Context&) -> Json { return item["n"].get<int>() + 1; }, {.threads = 3});
  std::string expected;
  {
    ManifestReader manifest(path);
    CallbackSink sink([&](std::string_view records) { expected.append(records); });
    engine.run(manifest, sink);
  }
  std::string rebuilt;
  ManifestReader manifest(path);
  const RunStats stats = engine.run(manifest, [&](const Record& record) { append_record(rebuilt, record); });
  EXPECT_EQ(rebuilt, expected);
  EXPECT_EQ(stats.items, 3000u);
  EXPECT_EQ(stats.failed, 273u);  // i % 11 == 4 for i in [0, 3000)
}

TEST(EmbeddingTest, CancellationTokenStopsTheRun) {
  CancellationToken token;
  std::atomic<int> calls{0};
  Engine engine([&](const Json&, Context& context) -> Json {
    if (++calls == 100) token.cancel();
    std::this_thread::sleep_for(std::chrono::microseconds(50));
    return context.cancelled();
  }, {.threads = 2, .cancel = token});
  RunStats stats;
  const auto records = engine.map(numbers(100000), &stats);
  EXPECT_EQ(stats.stopped, StopReason::cancelled);
  EXPECT_LT(calls.load(), 100000);
  // Only the items that finished before the stop have a record: none returned `true`
  // (cancelled() seen), and every other item is counted as not run.
  for (const auto& record : records) {
    EXPECT_TRUE(record.ok);
    EXPECT_EQ(record.result, false) << record.index;
  }
  EXPECT_EQ(records.size() + stats.not_run, 100000u);
  EXPECT_LE(records.size(), static_cast<std::size_t>(calls.load()));
}

TEST(EmbeddingTest, ProgressCallbackSeesTheCounters) {
  std::atomic<int> reports{0};
  std::atomic<std::uint64_t> last_total{0};
  Engine engine([](const Json& item, Context&) -> Json {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return item;
  }, {.threads = 2, .on_progress = [&](const ProgressSnapshot& s) {
        ++reports;
        last_total = s.total_items;
        EXPECT_LE(s.done, s.total_items);
      },
      .progress_interval = std::chrono::milliseconds(10)});
  engine.map(numbers(200));
  EXPECT_GT(reports.load(), 0);
  EXPECT_EQ(last_total.load(), 200u);
}

TEST(EmbeddingTest, ProgressLineFormatsKnownAndUnknownTotals) {
  ProgressSnapshot s;
  s.done = 250;
  s.total_items = 1000;
  s.seconds = 2.0;
  EXPECT_EQ(format_progress_line(s), "250/1000 items (25.0%), 125 items/s, ETA 0:06");
  ProgressSnapshot bytes;
  bytes.done = 10;
  bytes.failed = 2;
  bytes.bytes_read = 50;
  bytes.total_bytes = 100;
  bytes.seconds = 1.0;
  EXPECT_EQ(format_progress_line(bytes), "10 items (50.0%), 2 failed, 10 items/s, ETA 0:01");
}

}  // namespace
}  // namespace coremap
