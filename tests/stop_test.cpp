// SPDX-License-Identifier: MIT
// Stopping a run: an item the run's own stop cut short (an interrupt, max_errors, the
// application's cancellation) has no record, in run() and map() alike, and a fanned-out item
// has all of its records or none; a manifest read from a pipe hands on what arrived and stops
// waiting when the run stops.
#include <coremap/coremap.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace coremap {
namespace {

using Clock = std::chrono::steady_clock;
using test::numbers;

// Waits until Context::cancelled() (bounded, so a bug cannot hang the test); true when it came.
bool wait_for_cancel(Context& context) {
  const auto give_up = Clock::now() + std::chrono::seconds(20);
  while (!context.cancelled() && Clock::now() < give_up) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return context.cancelled();
}

// Item `trigger` stops the run through `stop` and returns once it sees cancelled(): a result
// returned after the stop, which must not be recorded. Every other item returns its n, or
// "after stop" when it too sees the stop.
ItemFunction stopping_at(int trigger, std::function<void()> stop) {
  return [trigger, stop](const Json& item, Context& context) -> Json {
    const int n = item.at("n");
    if (n == trigger) {
      stop();
      wait_for_cancel(context);
      return "after stop";
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    if (context.cancelled()) return "after stop";
    return n;
  };
}

// Records of a run that stopped: each ok with its own n, in index order, once; `trigger` absent.
void expect_only_whole_items(const std::vector<Record>& records, int trigger, std::size_t total, const RunStats& stats) {
  std::uint64_t previous = 0;
  bool first = true;
  for (const Record& r : records) {
    EXPECT_TRUE(r.ok) << r.index << ": " << r.error;
    EXPECT_EQ(r.result, Json(static_cast<int>(r.index))) << "a result returned after the stop was recorded";
    EXPECT_NE(r.index, static_cast<std::uint64_t>(trigger));
    if (!first) {
      EXPECT_GT(r.index, previous);
    }
    previous = r.index;
    first = false;
  }
  EXPECT_EQ(stats.stopped, StopReason::cancelled);
  EXPECT_EQ(stats.items, records.size());
  EXPECT_EQ(stats.ok, records.size());
  EXPECT_GE(stats.not_run, 1u);  // the trigger at least
  EXPECT_LE(stats.items + stats.not_run, total);
}

// A stop asked for before a run starts is that run's (no item runs), and it is not the next
// run's: a token stays cancelled until reset(), a request_stop() is for one run. Oracle: the
// item count and the n of each item, known here.
TEST(StopTest, AStopBeforeTheRunStopsItAndOnlyIt) {
  const std::vector<Json> items = numbers(300);
  test::TempDir dir;
  std::string text;
  for (const Json& item : items) text += item.dump() + "\n";
  const std::string manifest = dir.write("m.jsonl", text);
  auto identity = [](const Json& item, Context&) -> Json { return item.at("n"); };
  auto expect_all = [&](const std::vector<Record>& records, const RunStats& stats) {
    ASSERT_EQ(records.size(), items.size());
    for (std::size_t i = 0; i < records.size(); ++i) EXPECT_EQ(records[i].result, Json(static_cast<int>(i)));
    EXPECT_EQ(stats.items, items.size());
    EXPECT_EQ(stats.not_run, 0u);
    EXPECT_EQ(stats.stopped, StopReason::none);
  };
  auto run_file = [&](Engine& engine, std::vector<Record>& records) {
    ManifestReader reader(manifest);
    records.clear();
    return engine.run(reader, [&](const Record& r) { records.push_back(r); });
  };
  for (bool serial : {true, false}) {
    // The application's token: cancelled before the run, reset after it.
    CancellationToken token;
    Engine engine(identity, {.threads = 2, .serial = serial, .cancel = token});
    token.cancel();
    RunStats stats;
    EXPECT_TRUE(engine.map(items, &stats).empty());
    EXPECT_EQ(stats.stopped, StopReason::cancelled);
    EXPECT_EQ(stats.items, 0u);
    EXPECT_EQ(stats.not_run, items.size());
    std::vector<Record> records;
    stats = run_file(engine, records);
    EXPECT_TRUE(records.empty());
    EXPECT_EQ(stats.items, 0u);
    EXPECT_EQ(stats.stopped, StopReason::cancelled) << "a token stays cancelled until reset()";
    token.reset();
    expect_all(engine.map(items, &stats), stats);
    stats = run_file(engine, records);
    expect_all(records, stats);

    // Engine::request_stop() between runs: the next run stops before its first item, the one
    // after runs whole.
    for (bool map : {true, false}) {
      engine.request_stop();
      if (map) {
        EXPECT_TRUE(engine.map(items, &stats).empty());
        EXPECT_EQ(stats.not_run, items.size());
      } else {
        stats = run_file(engine, records);
        EXPECT_TRUE(records.empty());
      }
      EXPECT_EQ(stats.items, 0u);
      EXPECT_EQ(stats.stopped, StopReason::cancelled) << "the request before the run was lost";
      if (map) {
        expect_all(engine.map(items, &stats), stats);
      } else {
        stats = run_file(engine, records);
        expect_all(records, stats);
      }
    }
  }
  // The typed map: a cancelled token stops it before any item; reset, it runs every one.
  CancellationToken token;
  token.cancel();
  std::vector<int> out(items.size(), -1);
  const std::vector<int> ns = [&] {
    std::vector<int> v;
    for (const Json& item : items) v.push_back(item.at("n"));
    return v;
  }();
  MapReport report = map_into(ns, out, [](int n) { return n; }, {.threads = 2, .cancel = token});
  EXPECT_EQ(report.stats.stopped, StopReason::cancelled);
  EXPECT_EQ(report.stats.items, 0u);
  ASSERT_EQ(report.not_run.size(), 1u);
  EXPECT_EQ(report.not_run[0].end - report.not_run[0].begin, items.size());
  token.reset();
  report = map_into(ns, out, [](int n) { return n; }, {.threads = 2, .cancel = token});
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(out, ns);
}

TEST(StopTest, MapRecordsNoResultReturnedAfterTheStop) {
  for (bool serial : {true, false}) {
    // The application's token, or Engine::request_stop().
    CancellationToken token;
    Engine* self = nullptr;
    Engine engine(stopping_at(50, [token, serial, &self] {
                    if (serial) {
                      self->request_stop();
                    } else {
                      token.cancel();  // seen by cancelled() once another item has started
                    }
                  }),
                  {.threads = 2, .serial = serial, .cancel = token});
    self = &engine;
    RunStats stats;
    const auto records = engine.map(numbers(400), &stats);
    expect_only_whole_items(records, 50, 400, stats);
    // Every item before the trigger finished before the stop when serial.
    if (serial) {
      EXPECT_EQ(records.size(), 50u);
      EXPECT_EQ(stats.not_run, 350u);
    }
  }
}

TEST(StopTest, MapCallbackSkipsItemsCutShortInOrderAndUnordered) {
  for (bool ordered : {true, false}) {
    Engine* self = nullptr;
    Engine engine(stopping_at(30, [&self] { self->request_stop(); }), {.threads = 2, .ordered = ordered});
    self = &engine;
    std::vector<Record> seen;
    const RunStats stats = engine.map(numbers(300), [&](const Record& r) { seen.push_back(r); });
    if (!ordered) {
      std::sort(seen.begin(), seen.end(), [](const Record& a, const Record& b) { return a.index < b.index; });
    }
    expect_only_whole_items(seen, 30, 300, stats);
    EXPECT_EQ(stats.items + stats.not_run, 300u) << "map() accounts for every item";
  }
}

TEST(StopTest, RunRecordsNoResultReturnedAfterTheStop) {
  test::TempDir dir;
  std::string text;
  for (int n = 0; n < 400; ++n) text += "{\"n\":" + std::to_string(n) + "}\n";
  const std::string manifest = dir.write("m.jsonl", text);
  for (bool serial : {true, false}) {
    for (bool ordered : {true, false}) {
      Engine* self = nullptr;
      Engine engine(stopping_at(70, [&self] { self->request_stop(); }),
                    {.threads = 2, .serial = serial, .ordered = ordered});
      self = &engine;
      ManifestReader reader(manifest);
      std::vector<Record> seen;
      const RunStats stats = engine.run(reader, [&](const Record& r) { seen.push_back(r); });
      std::sort(seen.begin(), seen.end(), [](const Record& a, const Record& b) { return a.index < b.index; });
      expect_only_whole_items(seen, 70, 400, stats);
      if (serial) {
        EXPECT_EQ(seen.size(), 70u);
      }
    }
  }
}

TEST(StopTest, TheFailureThatReachesMaxErrorsIsRecordedWhatItCutShortIsNot) {
  // Item 0 waits for the stop; every other item fails. The first failure to finish stops the
  // run (max_errors 1) and is recorded; item 0, cut short, is not.
  Engine engine([](const Json& item, Context& context) -> Json {
    if (item.at("n") == 0) {
      wait_for_cancel(context);
      return "after stop";
    }
    throw std::runtime_error("bad " + item.at("n").dump());
  }, {.threads = 2, .max_errors = 1});
  RunStats stats;
  const auto records = engine.map(numbers(2000), &stats);
  EXPECT_EQ(stats.stopped, StopReason::max_errors);
  ASSERT_GE(records.size(), 1u);
  for (const Record& r : records) {
    EXPECT_NE(r.index, 0u) << "item 0 returned after the stop and was recorded";
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.error, "bad " + std::to_string(r.index));
  }
  EXPECT_EQ(stats.failed, records.size());
  EXPECT_EQ(stats.items + stats.not_run, 2000u);
}

TEST(StopTest, TimeoutIsTheItemsOwnOutcomeAndStaysRecorded) {
  Engine engine([](const Json& item, Context& context) -> Json {
    if (item.at("n") == 3) wait_for_cancel(context);
    return item.at("n");
  }, {.threads = 2, .timeout = std::chrono::milliseconds(50)});
  RunStats stats;
  const auto records = engine.map(numbers(10), &stats);
  ASSERT_EQ(records.size(), 10u);
  EXPECT_FALSE(records[3].ok);
  EXPECT_NE(records[3].error.find("timed out"), std::string::npos) << records[3].error;
  EXPECT_EQ(stats.not_run, 0u);
  EXPECT_EQ(stats.stopped, StopReason::none);
}

TEST(StopTest, AFannedOutItemCutShortHasNoneOfItsRecords) {
  test::TempDir dir;
  std::string text;
  for (int n = 0; n < 200; ++n) text += "{\"n\":" + std::to_string(n) + "}\n";
  const std::string manifest = dir.write("m.jsonl", text);
  for (bool serial : {true, false}) {
    Engine* self = nullptr;
    // Every item fans out into 5 values; the second stage stops the run on item 40's fourth
    // value, after its first three went through.
    Pipeline pipeline;
    pipeline.stages.push_back(Stage{"fan", Plugin::from_function([](const Json& item, Context& context) -> Json {
                                      for (int k = 0; k < 5; ++k) context.emit({{"n", item.at("n")}, {"k", k}});
                                      context.drop();
                                      return nullptr;
                                    }, "fan"), Json::object(), Concurrency::unlimited()});
    pipeline.stages.push_back(Stage{"second", Plugin::from_function([&self](const Json& value, Context& context) -> Json {
                                      if (value.at("n") == 40 && value.at("k") == 3) {
                                        self->request_stop();
                                        wait_for_cancel(context);
                                      }
                                      return value;
                                    }, "second"), Json::object(), Concurrency::unlimited()});
    Engine engine(std::move(pipeline), {.threads = 2, .serial = serial});
    self = &engine;
    ManifestReader reader(manifest);
    std::map<std::uint64_t, std::set<std::int64_t>> subs;
    const RunStats stats = engine.run(reader, [&](const Record& r) {
      EXPECT_TRUE(r.ok);
      EXPECT_TRUE(subs[r.index].insert(r.sub).second) << "record repeated";
    });
    EXPECT_EQ(subs.count(40), 0u) << "item 40 was cut short: none of its records may be written";
    for (const auto& [index, got] : subs) EXPECT_EQ(got, (std::set<std::int64_t>{0, 1, 2, 3, 4})) << index;
    EXPECT_EQ(stats.items, subs.size());
    EXPECT_EQ(stats.records, 5 * subs.size());
    EXPECT_GE(stats.not_run, 1u);
    if (serial) {
      EXPECT_EQ(subs.size(), 40u);
    }
  }
}

// A FIFO in a scratch directory, with its write end held open by the test.
struct Fifo {
  test::TempDir dir;
  std::string path;
  int writer = -1;
  explicit Fifo(const std::string& name = "manifest.jsonl") : path((dir.path() / name).string()) {
    EXPECT_EQ(::mkfifo(path.c_str(), 0600), 0);
    writer = ::open(path.c_str(), O_RDWR | O_CLOEXEC);  // does not wait for a reader
    EXPECT_GE(writer, 0);
  }
  ~Fifo() {
    if (writer >= 0) ::close(writer);
  }
  void write(const std::string& text) const { ASSERT_EQ(::write(writer, text.data(), text.size()), static_cast<ssize_t>(text.size())); }
};

TEST(StopTest, AStreamedManifestHandsOnWhatArrivedAndStopsWaitingOnTheStopCheck) {
  for (const char* first : {"{\"n\":0}\n{\"n\":1}\n", "[{\"n\":0}, {\"n\":1},"}) {
    Fifo fifo(first[0] == '[' ? "manifest.json" : "manifest.jsonl");
    fifo.write(first);
    ManifestReader reader(fifo.path);
    ItemBatch batch;
    // Two items arrived and the writer is silent: they come at once, not when 100 have come.
    ASSERT_TRUE(reader.next_batch(batch, 100, 1 << 20));
    EXPECT_EQ(batch.items.size(), 2u);
    std::atomic<bool> stop{false};
    reader.set_stop_check([&stop] { return stop.load(); });
    std::thread stopper([&stop] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      stop = true;
    });
    const auto start = Clock::now();
    EXPECT_FALSE(reader.next_batch(batch, 100, 1 << 20)) << "no input, and the stop check turned true";
    EXPECT_LT(Clock::now() - start, std::chrono::seconds(10));
    stopper.join();
    // Input that comes later is still read: the reader was not ended, only left.
    stop = false;
    fifo.write(first[0] == '[' ? "{\"n\":2}]" : "{\"n\":2}\n");
    ASSERT_TRUE(reader.next_batch(batch, 100, 1 << 20));
    ASSERT_EQ(batch.items.size(), 1u);
    EXPECT_EQ(batch.text(batch.items[0]), "{\"n\":2}");
    EXPECT_EQ(batch.items[0].index, 2u);
  }
}

TEST(StopTest, RunOnASilentPipeProcessesWhatArrivedAndEndsOnStop) {
  for (std::size_t threads : {1, 2}) {
    Fifo fifo;
    fifo.write("{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
    Engine engine([](const Json& item, Context&) -> Json { return item.at("n"); }, {.threads = threads});
    ManifestReader reader(fifo.path);
    std::mutex mutex;
    std::vector<Record> seen;
    RunStats stats;
    std::thread run([&] {
      stats = engine.run(reader, [&](const Record& r) {
        std::lock_guard lock(mutex);
        seen.push_back(r);
      });
    });
    // The three records come while the writer is still open (streaming), then the stop ends the
    // wait for more.
    const auto give_up = Clock::now() + std::chrono::seconds(20);
    for (;;) {
      {
        std::lock_guard lock(mutex);
        if (seen.size() == 3 || Clock::now() > give_up) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    {
      std::lock_guard lock(mutex);
      EXPECT_EQ(seen.size(), 3u) << threads << " threads: items that arrived were held back";
    }
    engine.request_stop();
    run.join();
    EXPECT_EQ(stats.items, 3u);
    EXPECT_EQ(stats.stopped, StopReason::cancelled);
    for (std::size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i].result, Json(static_cast<int>(i)));
  }
}

// map() and run() count alike. The same 1000 items and the same plugin (items with n % 7 == 3
// always fail; n % 5 == 1 fail on their first attempt only, and retries = 1 saves them) go
// through Engine::map (both forms) and Engine::run; every RunStats field and every record is
// compared with what the test works out from the inputs alone: the whole run; max_errors = 10
// (serially: the run ends with the 10th failing item, in index order); a stop part-way (item
// 400 calls Engine::request_stop(), serially: items 0..399 recorded, 400..999 not run). In parallel
// a stop's reach depends on timing, so there each run's counts must add up among themselves
// and with its records, and its records must be the items' own outcomes. One difference is by
// design (RunStats::not_run): run() does not read its manifest past a stop, so its not_run
// counts the items it had read ahead, at least the one cut short, at most the rest.
TEST(StopTest, MapAndRunCountEveryItemAlike) {
  constexpr int total = 1000;
  constexpr int trigger = 400;
  const std::vector<Json> items = numbers(total);
  test::TempDir dir;
  std::string text;
  for (const Json& item : items) text += item.dump() + "\n";
  const std::string manifest = dir.write("m.jsonl", text);
  const auto always_fails = [](int n) { return n % 7 == 3; };
  const auto fails_once = [&](int n) { return !always_fails(n) && n % 5 == 1; };

  struct Expected {
    std::uint64_t items = 0, ok = 0, failed = 0, not_run = 0;
    StopReason stopped = StopReason::none;
  };
  // Items in index order until `end` (exclusive) or the max_errors-th failure (inclusive).
  auto expect_serially = [&](int end, std::uint64_t max_errors, StopReason reason) {
    Expected e;
    for (int n = 0; n < end; ++n) {
      ++e.items;
      always_fails(n) ? ++e.failed : ++e.ok;
      if (max_errors != 0 && e.failed == max_errors) {
        e.stopped = StopReason::max_errors;
        break;
      }
    }
    if (e.stopped == StopReason::none && end < total) e.stopped = reason;
    e.not_run = total - e.items;
    return e;
  };

  for (const bool serial : {true, false}) {
    for (const std::uint64_t max_errors : {std::uint64_t{0}, std::uint64_t{10}}) {
      for (const bool stop_part_way : {false, true}) {
        if (max_errors != 0 && stop_part_way) continue;
        SCOPED_TRACE(std::string(serial ? "serial" : "2 threads") + ", max_errors " + std::to_string(max_errors) +
                     (stop_part_way ? ", stopped at item 400" : ""));
        Engine* self = nullptr;
        const ItemFunction plugin = [&](const Json& item, Context& context) -> Json {
          const int n = item.at("n");
          if (stop_part_way && n == trigger) {
            self->request_stop();
            wait_for_cancel(context);
            return "after the stop";  // cut short by the stop: no record
          }
          if (always_fails(n)) throw std::runtime_error("always " + std::to_string(n));
          if (fails_once(n) && context.attempt() == 1) throw std::runtime_error("first attempt");
          return n;
        };
        const RunOptions options{.threads = 2, .serial = serial, .max_errors = max_errors, .retries = 1};
        Engine engine(plugin, options);
        self = &engine;
        const Expected whole = stop_part_way ? expect_serially(trigger, 0, StopReason::cancelled)
                                             : expect_serially(total, max_errors, StopReason::none);

        struct Outcome {
          std::string how;
          RunStats stats;
          std::vector<Record> records;
        };
        std::vector<Outcome> outcomes;
        {
          Outcome o{"Engine::map", {}, {}};
          o.records = engine.map(items, &o.stats);
          outcomes.push_back(std::move(o));
        }
        {
          Outcome o{"Engine::map with a callback", {}, {}};
          o.stats = engine.map(items, [&](const Record& r) { o.records.push_back(r); });
          outcomes.push_back(std::move(o));
        }
        {
          Outcome o{"Engine::run", {}, {}};
          ManifestReader reader(manifest);
          o.stats = engine.run(reader, [&](const Record& r) { o.records.push_back(r); });
          outcomes.push_back(std::move(o));
        }
        for (const Outcome& o : outcomes) {
          SCOPED_TRACE(o.how);
          const RunStats& s = o.stats;
          // Every field of RunStats.
          const bool streamed = o.how == "Engine::run";
          if (serial || (max_errors == 0 && !stop_part_way)) {
            EXPECT_EQ(s.items, whole.items);
            EXPECT_EQ(s.ok, whole.ok);
            EXPECT_EQ(s.failed, whole.failed);
            EXPECT_EQ(s.stopped, whole.stopped);
            if (!streamed || whole.not_run == 0) {
              EXPECT_EQ(s.not_run, whole.not_run);
            } else {
              EXPECT_GE(s.not_run, stop_part_way ? 1u : 0u);
              EXPECT_LE(s.not_run, whole.not_run);
            }
          } else {
            EXPECT_EQ(s.stopped, whole.stopped);
            if (max_errors != 0) {
              EXPECT_GE(s.failed, max_errors);
            }
            if (streamed) {
              EXPECT_LE(s.items + s.not_run, static_cast<std::uint64_t>(total));
            } else {
              EXPECT_EQ(s.items + s.not_run, static_cast<std::uint64_t>(total));
            }
            EXPECT_EQ(s.ok + s.failed, s.items);
            if (stop_part_way) {
              EXPECT_GE(s.not_run, 1u);  // the trigger
            }
          }
          EXPECT_EQ(s.records, s.items);  // one record per item: no fan-out here
          EXPECT_EQ(s.skipped, 0u);
          EXPECT_EQ(s.threads, serial ? 1u : 2u);
          EXPECT_GE(s.wall_seconds, 0.0);
          EXPECT_TRUE(s.summaries.empty());
          EXPECT_TRUE(s.states.empty());
          EXPECT_FALSE(s.cache.enabled);
          EXPECT_EQ(s.cache.hits + s.cache.misses + s.cache.stored, 0u);
          EXPECT_TRUE(s.stages.empty());
          // And every record: the item's own outcome, once, and as many as the counts say.
          ASSERT_EQ(o.records.size(), s.items);
          std::set<std::uint64_t> seen;
          std::uint64_t ok = 0;
          for (const Record& r : o.records) {
            const int n = static_cast<int>(r.index);
            EXPECT_TRUE(seen.insert(r.index).second) << "item " << n << " twice";
            EXPECT_FALSE(stop_part_way && n == trigger) << "the item cut short by the stop was recorded";
            EXPECT_EQ(r.ok, !always_fails(n)) << n;
            EXPECT_EQ(r.attempts, always_fails(n) || fails_once(n) ? 2u : 1u) << n;
            if (r.ok) {
              ++ok;
              EXPECT_EQ(r.result, Json(n));
            } else {
              EXPECT_TRUE(r.error.ends_with("always " + std::to_string(n))) << r.error;
            }
          }
          EXPECT_EQ(ok, s.ok);
          if (serial) {
            // In index order, from item 0, with no gap: what a serial run reaches.
            for (std::size_t i = 0; i < o.records.size(); ++i) EXPECT_EQ(o.records[i].index, i);
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace coremap
