// SPDX-License-Identifier: MIT
// The progress callback: its last call has the run's final counters, and an exception it throws
// neither ends the process nor cuts the run short (run() and map() rethrow it at the end).
#include <coremap/coremap.hpp>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace coremap {
namespace {

using test::numbers;

Json identity(const Json& item, Context&) { return item; }

TEST(ProgressTest, TheLastCallbackOfMapReportsCompletion) {
  std::mutex mutex;
  ProgressSnapshot last;
  int calls = 0;
  RunOptions options{.threads = 2};
  options.on_progress = [&](const ProgressSnapshot& s) {
    std::lock_guard lock(mutex);
    last = s;
    ++calls;
  };
  options.progress_interval = std::chrono::hours(1);  // no call but the last one
  Engine engine(identity, options);
  const auto records = engine.map(numbers(300));
  ASSERT_EQ(records.size(), 300u);
  std::lock_guard lock(mutex);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(last.done, 300u);
  EXPECT_EQ(last.total_items, 300u);
  EXPECT_EQ(last.fraction(), 1.0);
}

TEST(ProgressTest, TheLastCallbackOfRunReportsCompletion) {
  const test::TempDir dir;
  std::string text;
  for (int i = 0; i < 250; ++i) text += "{\"n\":" + std::to_string(i) + "}\n";
  const std::string path = dir.write("manifest.jsonl", text);
  std::mutex mutex;
  ProgressSnapshot last;
  RunOptions options{.threads = 2};
  options.on_progress = [&](const ProgressSnapshot& s) {
    std::lock_guard lock(mutex);
    last = s;
  };
  options.progress_interval = std::chrono::hours(1);
  Engine engine(identity, options);
  ManifestReader manifest(path);
  std::uint64_t delivered = 0;
  const RunStats stats = engine.run(manifest, [&](const Record&) { ++delivered; });
  EXPECT_EQ(delivered, 250u);
  EXPECT_EQ(stats.records, 250u);
  std::lock_guard lock(mutex);
  EXPECT_EQ(last.done, 250u);
  EXPECT_EQ(last.bytes_read, last.total_bytes);
  EXPECT_EQ(last.fraction(), 1.0);
}

TEST(ProgressTest, ACallbackThatThrowsIsRethrownAfterTheRunNotInTheMiddle) {
  std::atomic<int> calls{0};
  RunOptions options{.threads = 2};
  options.on_progress = [&](const ProgressSnapshot&) {
    ++calls;
    throw std::runtime_error("progress display broke");
  };
  options.progress_interval = std::chrono::milliseconds(1);
  Engine engine([](const Json& item, Context&) -> Json {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    return item;
  }, options);
  std::uint64_t delivered = 0;
  try {
    engine.map(numbers(200), [&](const Record&) { ++delivered; });
    ADD_FAILURE() << "map() returned: the callback's exception was lost";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "progress display broke");
  }
  EXPECT_EQ(delivered, 200u) << "the run was cut short by the progress callback";
  EXPECT_EQ(calls.load(), 1) << "the callback was called again after it threw";
}

}  // namespace
}  // namespace coremap
