// SPDX-License-Identifier: MIT
// The embedding API: callables as plugins, record callbacks, cancellation, progress.
#include <coremap/coremap.hpp>

#include <atomic>
#include <chrono>
#include <set>
#include <sstream>
#include <string>
#include <vector>
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


// The result cache through the embedding API (RunOptions::cache, coremap/cache.hpp). Not in an
// Embedding* suite: CI's ThreadSanitizer stage runs those, and SQLite (a system library, not
// instrumented) synchronizes its connections in ways TSan cannot see.
std::atomic<int> square_calls{0};

struct CountedSquare {
  explicit CountedSquare(const Json&) {}
  Json process(const Json& item) {
    square_calls.fetch_add(1, std::memory_order_relaxed);
    const std::int64_t n = item.at("n");
    return {{"square", n * n}};
  }
};

TEST(ResultCacheTest, AGrownReorderedManifestRunsOnlyItsNewItemsAndMatchesANoCacheRun) {
  test::TempDir dir;
  const auto plugin = Plugin::from_class<CountedSquare>("counted_square", "1.0.0", "n squared, counted");
  auto manifest = [&](const std::string& name, const std::vector<int>& ns) {
    std::string text;
    for (const int n : ns) text += "{\"n\": " + std::to_string(n) + "}\n";
    return dir.write(name, text);
  };
  // Runs the manifest; the records' text, and the run's stats in *stats.
  auto run = [&](const std::string& path, bool cached, RunStats* stats) {
    RunOptions options;
    options.threads = 2;
    if (cached) options.cache.directory = dir.path() / "cache";
    Engine engine(plugin, Json::object(), options);
    ManifestReader reader(path);
    std::string out;
    CallbackSink sink([&](std::string_view records) { out.append(records); });
    *stats = engine.run(reader, sink);
    return out;
  };
  // Each record's result is its item's n squared, n from the manifest at the record's index.
  auto check_results = [](const std::string& out, const std::vector<int>& ns) {
    std::istringstream lines(out);
    std::string line;
    std::size_t count = 0;
    while (std::getline(lines, line)) {
      const Json record = Json::parse(line);
      const auto index = record.at("index").get<std::size_t>();
      ASSERT_LT(index, ns.size());
      EXPECT_EQ(record.at("result").at("square").get<std::int64_t>(), std::int64_t{ns[index]} * ns[index]);
      ++count;
    }
    EXPECT_EQ(count, ns.size());
  };

  std::vector<int> first;
  for (int n = 0; n < 1000; ++n) first.push_back(n);
  // The same items in reverse order, with 200 new ones spread among them.
  std::vector<int> second;
  for (int n = 999, added = 1000; n >= 0; --n) {
    second.push_back(n);
    if (n % 5 == 0) second.push_back(added++);
  }
  ASSERT_EQ(second.size(), 1200u);
  const std::string first_path = manifest("first.jsonl", first);
  const std::string second_path = manifest("second.jsonl", second);

  RunStats stats;
  square_calls = 0;
  const std::string first_plain = run(first_path, false, &stats);
  const std::string second_plain = run(second_path, false, &stats);
  EXPECT_EQ(square_calls.load(), 2200);
  EXPECT_FALSE(stats.cache.enabled);

  square_calls = 0;
  const std::string first_cached = run(first_path, true, &stats);
  EXPECT_EQ(square_calls.load(), 1000);
  EXPECT_TRUE(stats.cache.enabled);
  EXPECT_EQ(stats.cache.cached_stages, 1u);
  EXPECT_EQ(stats.cache.hits, 0u);
  EXPECT_EQ(stats.cache.misses, 1000u);
  EXPECT_EQ(stats.cache.stored, 1000u);
  EXPECT_EQ(first_cached, first_plain);
  check_results(first_cached, first);

  square_calls = 0;
  const std::string second_cached = run(second_path, true, &stats);
  EXPECT_EQ(square_calls.load(), 200) << "only the new items run";
  EXPECT_EQ(stats.cache.hits, 1000u);
  EXPECT_EQ(stats.cache.misses, 200u);
  EXPECT_EQ(stats.cache.stored, 200u);
  EXPECT_EQ(second_cached, second_plain);
  check_results(second_cached, second);

  // Everything is stored now: a third run calls the plugin for nothing.
  square_calls = 0;
  EXPECT_EQ(run(second_path, true, &stats), second_plain);
  EXPECT_EQ(square_calls.load(), 0);
  EXPECT_EQ(stats.cache.hits, 1200u);
  EXPECT_EQ(cache_summary(dir.path() / "cache").entries, 1200u);
}

}  // namespace
}  // namespace coremap
