// SPDX-License-Identifier: MIT
#include <coremap/engine.hpp>
#include <coremap/error.hpp>
#include <coremap/map.hpp>

#include <fcntl.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/task_arena.h>

#include "test_util.hpp"

namespace coremap {
namespace {

struct Output {
  std::string text;
  RunStats stats;
};

Output run_stream(const std::shared_ptr<const Plugin>& plugin, const std::string& manifest_path,
                  RunOptions options, const Json& config = Json::object()) {
  Engine engine(plugin, config, options);
  ManifestReader manifest(manifest_path);
  Output out;
  CallbackSink sink([&](std::string_view records) { out.text.append(records); });
  out.stats = engine.run(manifest, sink);
  return out;
}

std::vector<Json> lines_of(const std::string& text) {
  std::vector<Json> records;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) records.push_back(Json::parse(line));
  return records;
}

// A manifest mixing good items, items that throw (std and not), and malformed lines.
std::string mixed_manifest(int n) {
  std::string text;
  for (int i = 0; i < n; ++i) {
    if (i % 97 == 13) {
      text += "{\"throw\": \"std\", \"i\": " + std::to_string(i) + "}\n";
    } else if (i % 101 == 7) {
      text += "{\"throw\": \"int\"}\n";
    } else if (i % 89 == 5) {
      text += "{\"broken\": \n";
    } else {
      text += "{\"i\": " + std::to_string(i) + ", \"s\": \"x\"}\n";
    }
    if (i % 50 == 0) text += "\n";
  }
  return text;
}

TEST(EngineTest, OrderedOutputEqualsSerialAtSeveralThreadCounts) {
  test::TempDir dir;
  const std::string manifest = dir.write("m.jsonl", mixed_manifest(3000));
  const auto plugin = Plugin::load(test::fixture("throwing"));
  const Output serial = run_stream(plugin, manifest, {.serial = true});
  ASSERT_EQ(serial.stats.items, 3000u);
  EXPECT_GT(serial.stats.failed, 0u);
  for (std::size_t threads : {1u, 2u, 8u}) {
    const Output parallel = run_stream(plugin, manifest, {.threads = threads});
    EXPECT_EQ(parallel.text, serial.text) << threads << " threads";
    EXPECT_EQ(parallel.stats.threads, threads);
    EXPECT_EQ(parallel.stats.failed, serial.stats.failed);
  }
}

// Items {"i": 0} ... {"i": items - 1}, where item 0 waits until every other item has been
// processed, or until `patience` runs out; `processed_meanwhile` then says how many were.
struct SlowFirstItem {
  SlowFirstItem(int n, std::chrono::milliseconds wait) : items(n), patience(wait) {}
  std::string manifest(test::TempDir& dir) const {
    std::string text;
    for (int i = 0; i < items; ++i) text += "{\"i\":" + std::to_string(i) + "}\n";
    return dir.write("m.jsonl", text);
  }
  std::shared_ptr<const Plugin> plugin() {
    return Plugin::from_function([this](const Json& item, Context&) -> Json {
      if (item.at("i") != 0) {
        ++done;
        return item;
      }
      const auto give_up = std::chrono::steady_clock::now() + patience;
      while (done.load() < items - 1 && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      processed_meanwhile = done.load();
      return item;
    });
  }
  void expect_in_order(const std::string& text) const {
    const std::vector<Json> records = lines_of(text);
    ASSERT_EQ(records.size(), static_cast<std::size_t>(items));
    for (int i = 0; i < items; ++i) ASSERT_EQ(records[static_cast<std::size_t>(i)]["index"], i);
  }

  const int items;
  const std::chrono::milliseconds patience;
  std::atomic<int> done{0};
  std::atomic<int> processed_meanwhile{-1};
};

// Ordered output waits for a slow item; the processing of the items after it does not. Item 0
// waits for every other item (far more than the window of batches in flight, 4 per thread), or
// gives up after 20 s: a sequencer in front of the writer, which keeps each finished batch's
// token until it is written, cannot get past the window and would time out. The records still
// come out in index order, identical to a serial run.
TEST(EngineTest, ASlowItemHoldsUpTheWritingNotTheProcessingOfLaterItems) {
  test::TempDir dir;
  SlowFirstItem slow(400, std::chrono::seconds(20));
  const std::string manifest = slow.manifest(dir);
  const Output parallel = run_stream(slow.plugin(), manifest, {.threads = 2});
  EXPECT_EQ(slow.processed_meanwhile.load(), slow.items - 1)
      << "the items after the slow one were not processed while it ran";
  EXPECT_EQ(parallel.stats.items, static_cast<std::uint64_t>(slow.items));
  slow.expect_in_order(parallel.text);
  const auto plain = Plugin::from_function([](const Json& item, Context&) -> Json { return item; });
  EXPECT_EQ(parallel.text, run_stream(plain, manifest, {.serial = true}).text);
}

// The other side of the reorder buffer: over its budget, batches finished behind a slow one
// keep their tokens, so at most max_in_flight batches (of at most 4096 items each) get past the
// slow item before it finishes. Item 0 waits up to 1 s for all the others; with a 1-byte
// budget and 2 batches in flight, at most 2 x 4096 of the 20,000 can be processed meanwhile
// (with the default budget, all 19,999 are).
TEST(EngineTest, OverTheReorderBudgetTheWindowHoldsAgain) {
  test::TempDir dir;
  SlowFirstItem slow(20000, std::chrono::seconds(1));
  const Output out =
      run_stream(slow.plugin(), slow.manifest(dir), {.threads = 2, .max_in_flight = 2, .reorder_budget_bytes = 1});
  EXPECT_GE(slow.processed_meanwhile.load(), 0);
  EXPECT_LE(slow.processed_meanwhile.load(), 2 * 4096);
  slow.expect_in_order(out.text);
}

// Bytes the process's heap has handed out and not got back (every malloc arena, and the blocks
// large enough to be mapped on their own).
std::size_t heap_in_use() {
  const struct mallinfo2 info = ::mallinfo2();
  return info.uordblks + info.hblkhd;
}

// What the reorder budget bounds is the memory of the batches parked behind a slow one, measured
// by malloc itself: item 0 waits while the later items finish and park, until no more get
// through (the budget is full and the batches keep their tokens) or all are done, sampling the
// heap meanwhile. Two shapes the budget once undercounted: tiny items, where each batch's
// own allocations are most of its memory, and callback records whose results are JSON values
// of many small strings (before, 4 MiB of budget let the heap grow by 6.7 and 29 MiB). The heap
// may exceed its level before the run by the budget plus the batches in flight (4 tokens of
// about 200 us of items each, well under 1.5 MiB here), and must have used a fair part of it
// (an overcounting engine would stall far below the budget).
TEST(EngineTest, TheReorderBudgetBoundsTheHeapWhateverTheItems) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the sanitizers' allocators do not report through mallinfo2";
#endif
  constexpr std::size_t budget = std::size_t{4} << 20;
  constexpr std::size_t in_flight_allowance = std::size_t{3} << 19;
  for (const bool as_records : {false, true}) {
    SCOPED_TRACE(as_records ? "records of many strings" : "tiny items");
    const int items = as_records ? 20'000 : 200'000;
    test::TempDir dir;
    std::string text;
    for (int i = 0; i < items; ++i) text += "{\"i\":" + std::to_string(i) + "}\n";
    const std::string manifest = dir.write("m.jsonl", text);
    std::atomic<int> done{0};
    std::atomic<std::size_t> peak{0};
    std::atomic<int> done_meanwhile{-1};
    std::size_t baseline = 0;
    const auto plugin = Plugin::from_function([&](const Json& item, Context&) -> Json {
      if (item.at("i") != 0) {
        Json result = item;
        if (as_records) {
          Json words = Json::array();
          for (int k = 0; k < 48; ++k) words.push_back("a string of some length, " + std::to_string(k));
          result["words"] = std::move(words);
        }
        ++done;
        return result;
      }
      auto last_change = std::chrono::steady_clock::now();
      const auto give_up = last_change + std::chrono::seconds(20);
      int seen = -1;
      for (;;) {
        peak = std::max(peak.load(), heap_in_use());
        const auto now = std::chrono::steady_clock::now();
        if (done.load() != seen) {
          seen = done.load();
          last_change = now;
        }
        // Held when nothing got through for a while: 500 ms once the heap grew by a fair part
        // of the budget, else 5 s (on a loaded machine the other thread may just not have
        // run for 500 ms; an overcounting engine still shows, after 5 s).
        const bool grown = peak.load() > baseline && peak.load() - baseline >= budget / 4;
        const auto quiet = grown ? std::chrono::milliseconds(500) : std::chrono::milliseconds(5000);
        if (seen == items - 1 || now - last_change > quiet || now > give_up) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      done_meanwhile = seen;
      return item;
    });
    Engine engine(plugin, Json::object(), {.threads = 2, .max_in_flight = 4, .reorder_budget_bytes = budget});
    ManifestReader reader(manifest);
    std::uint64_t records = 0;
    baseline = heap_in_use();
    RunStats stats;
    if (as_records) {
      stats = engine.run(reader, [&](const Record& record) { records += record.ok ? 1 : 0; });
    } else {
      CallbackSink sink([&](std::string_view out) {
        records += static_cast<std::uint64_t>(std::count(out.begin(), out.end(), '\n'));
      });
      stats = engine.run(reader, sink);
    }
    EXPECT_EQ(records, static_cast<std::uint64_t>(items));
    EXPECT_EQ(stats.ok, static_cast<std::uint64_t>(items));
    EXPECT_LT(done_meanwhile.load(), items - 1) << "the budget never held the window";
    const std::size_t grew = peak.load() > baseline ? peak.load() - baseline : 0;
    EXPECT_LE(grew, budget + in_flight_allowance) << "the heap grew by " << (grew >> 10) << " KiB behind the slow item, "
                                                  << done_meanwhile.load() << " items parked";
    EXPECT_GE(grew, budget / 4) << "the heap grew by only " << (grew >> 10) << " KiB behind the slow item";
  }
}

TEST(EngineTest, SerialRunMatchesAnIndependentOracle) {
  // Oracle: the records a plain loop over the manifest's lines must give, built here without
  // the engine (echo of each parsed line).
  test::TempDir dir;
  std::string text;
  std::string expected;
  for (int i = 0; i < 500; ++i) {
    const std::string item = "{\"k\":" + std::to_string(i * 7) + "}";
    text += item + "\n";
    expected += "{\"index\":" + std::to_string(i) + ",\"ok\":true,\"result\":" + item + "}\n";
  }
  const auto plugin = Plugin::load(test::fixture("throwing"));
  EXPECT_EQ(run_stream(plugin, dir.write("m.jsonl", text), {.serial = true}).text, expected);
  EXPECT_EQ(run_stream(plugin, dir.write("m.jsonl", text), {.threads = 2}).text, expected);
}

// Hands out a manifest's items in small batches of at most three, under another name: the
// shape of any other BatchSource (the chunks an MPI processing rank receives).
class SmallBatches final : public BatchSource {
 public:
  SmallBatches(const std::string& path, std::string name) : reader_(path), name_(std::move(name)) {}
  bool next_batch(ItemBatch& batch, std::size_t max_items, std::size_t max_bytes) override {
    return reader_.next_batch(batch, std::min<std::size_t>(max_items, 1 + calls_++ % 3), max_bytes);
  }
  const std::string& name() const noexcept override { return name_; }
  ManifestFormat format() const noexcept override { return reader_.format(); }

 private:
  ManifestReader reader_;
  std::string name_;
  std::size_t calls_ = 0;
};

TEST(EngineTest, AnyBatchSourceGivesTheManifestReadersRecords) {
  test::TempDir dir;
  const std::string manifest = dir.write("m.jsonl", mixed_manifest(1000));
  const auto plugin = Plugin::load(test::fixture("throwing"));
  const Output direct = run_stream(plugin, manifest, {.serial = true});
  for (std::size_t threads : {1u, 2u, 8u}) {
    Engine engine(plugin, Json::object(), {.threads = threads});
    SmallBatches source(manifest, manifest);
    std::string text;
    CallbackSink sink([&](std::string_view records) { text.append(records); });
    const RunStats stats = engine.run(source, sink);
    EXPECT_EQ(text, direct.text) << threads << " threads";
    EXPECT_EQ(stats.items, 1000u);
    EXPECT_EQ(stats.failed, direct.stats.failed);
  }
  // Errors name the source by its name().
  Engine engine(plugin, Json::object(), {.threads = 2});
  SmallBatches source(manifest, "elsewhere.jsonl");
  std::string text;
  CallbackSink sink([&](std::string_view records) { text.append(records); });
  engine.run(source, sink);
  const auto records = lines_of(text);
  ASSERT_EQ(records.size(), 1000u);
  EXPECT_EQ(records[13]["error"].get<std::string>().rfind("elsewhere.jsonl:", 0), 0u) << records[13];
}

TEST(EngineTest, ErrorsStayWithTheirItems) {
  test::TempDir dir;
  const std::string manifest = dir.write(
      "m.jsonl", "{\"a\":1}\n{\"throw\":\"std\"}\n{\"throw\":\"int\"}\n{oops\n{\"throw\":\"string\"}\n"
                 "{\"bad_utf8\":true}\n{\"a\":2}\n{\"n\":1e999}\n");
  const Output out = run_stream(Plugin::load(test::fixture("throwing")), manifest, {.threads = 2});
  const auto records = lines_of(out.text);
  ASSERT_EQ(records.size(), 8u);
  for (std::size_t i = 0; i < records.size(); ++i) EXPECT_EQ(records[i]["index"], i);
  EXPECT_TRUE(records[0]["ok"]);
  EXPECT_EQ(records[0]["result"], Json({{"a", 1}}));
  EXPECT_FALSE(records[1]["ok"]);
  EXPECT_NE(records[1]["error"].get<std::string>().find("asked to throw"), std::string::npos);
  EXPECT_NE(records[1]["error"].get<std::string>().find("m.jsonl:2: "), std::string::npos);
  EXPECT_NE(records[2]["error"].get<std::string>().find("exception of type 'int'"), std::string::npos);
  EXPECT_NE(records[3]["error"].get<std::string>().find("m.jsonl:4:2: invalid JSON"), std::string::npos)
      << records[3]["error"];
  EXPECT_NE(records[4]["error"].get<std::string>().find("std::__cxx11::basic_string"), std::string::npos)
      << records[4]["error"];
  EXPECT_NE(records[5]["error"].get<std::string>().find("not valid UTF-8"), std::string::npos)
      << records[5]["error"];
  EXPECT_TRUE(records[6]["ok"]);
  EXPECT_NE(records[7]["error"].get<std::string>().find("m.jsonl:8: invalid JSON: number overflow parsing '1e999'"),
            std::string::npos)
      << records[7]["error"];
  EXPECT_EQ(out.stats.ok, 2u);
  EXPECT_EQ(out.stats.failed, 6u);
}

TEST(EngineTest, DeeplyNestedItemIsThatItemsError) {
  test::TempDir dir;
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const std::string ok_depth = std::string(1000, '[') + std::string(1000, ']');
  const std::string manifest = dir.write("m.jsonl", "{\"a\":1}\n" + deep + "\n" + ok_depth + "\n{\"s\":\"[[[[\"}\n");
  for (bool serial : {true, false}) {
    const Output out = run_stream(Plugin::load(test::fixture("throwing")), manifest, {.threads = 2, .serial = serial});
    const auto records = lines_of(out.text);
    ASSERT_EQ(records.size(), 4u);
    EXPECT_TRUE(records[0]["ok"]);
    EXPECT_FALSE(records[1]["ok"]);
    EXPECT_EQ(records[1]["error"], manifest + ":2: item nested deeper than 1000 levels");
    EXPECT_TRUE(records[2]["ok"]) << "1000 levels are allowed";
    EXPECT_TRUE(records[3]["ok"]) << "brackets inside strings do not count";
  }
}

TEST(EngineTest, NulByteIsAnErrorNotTheEndOfTheItem) {
  test::TempDir dir;
  // nlohmann_json alone reads a NUL outside a string as the end of input: line 2 would parse as
  // {"a":2} and the rest of the line would vanish without a word.
  const std::string manifest =
      dir.write("m.jsonl", std::string("{\"a\":1}\n{\"a\":2}\0{\"b\":3}\n{\"s\":\"x\0y\"}\n{\"a\":4}\n", 44));
  const Output out = run_stream(Plugin::load(test::fixture("throwing")), manifest, {.threads = 2});
  const auto records = lines_of(out.text);
  ASSERT_EQ(records.size(), 4u);
  EXPECT_EQ(records[0]["result"], Json({{"a", 1}}));
  EXPECT_EQ(records[1]["error"], manifest + ":2:8: invalid JSON: NUL byte (0x00), which JSON text cannot hold "
                                            "(in a string, write \\u0000)");
  EXPECT_EQ(records[2]["error"].get<std::string>().rfind(manifest + ":3:8: invalid JSON: NUL byte", 0), 0u)
      << records[2]["error"];
  EXPECT_EQ(records[3]["result"], Json({{"a", 4}}));
}

TEST(EngineTest, ParseErrorQuotesAtMostAShortPieceOfAHugeToken) {
  test::TempDir dir;
  const std::string huge(8u << 20, 'x');
  const std::string manifest =
      dir.write("m.jsonl", "{\"s\":\"" + huge + "\n{\"n\":" + std::string(100000, '9') + "}\n{\"a\":1}\n");
  const Output out = run_stream(Plugin::load(test::fixture("throwing")), manifest, {.threads = 2});
  const auto records = lines_of(out.text);
  ASSERT_EQ(records.size(), 3u);
  const std::string string_error = records[0]["error"];
  EXPECT_LT(string_error.size(), 300u) << string_error.substr(0, 300);
  EXPECT_EQ(string_error.rfind(manifest + ":1:", 0), 0u) << string_error;
  EXPECT_NE(string_error.find("missing closing quote; last read: '\"xxxx"), std::string::npos) << string_error;
  EXPECT_NE(string_error.find("...(" + std::to_string(huge.size() + 1 - 48 - 16) + " bytes)..." + std::string(16, 'x') + "'"), std::string::npos)
      << string_error;
  const std::string number_error = records[1]["error"];
  EXPECT_LT(number_error.size(), 300u) << number_error.substr(0, 300);
  EXPECT_EQ(number_error.rfind(manifest + ":2: invalid JSON: number overflow parsing '9999", 0), 0u) << number_error;
  EXPECT_EQ(records[2]["result"], Json({{"a", 1}}));
}

TEST(EngineTest, UnwritableResultNamesItsLine) {
  test::TempDir dir;
  const std::string manifest = dir.write("m.jsonl", "{\"a\":1}\n\n{\"bad_utf8\":true}\n{\"a\":2}\n");
  for (bool serial : {true, false}) {
    const Output out = run_stream(Plugin::load(test::fixture("throwing")), manifest, {.threads = 2, .serial = serial});
    const auto records = lines_of(out.text);
    ASSERT_EQ(records.size(), 3u);
    EXPECT_EQ(records[0]["result"], Json({{"a", 1}}));
    EXPECT_EQ(records[1]["error"].get<std::string>().rfind(
                  manifest + ":3: the plugin's result holds a string that is not valid UTF-8 (byte 0x", 0),
              0u)
        << records[1]["error"];
    // In memory the same item is the same error, word for word, without the manifest's line.
    Engine engine(Plugin::load(test::fixture("throwing")), Json::object(), {.threads = 2, .serial = serial});
    const std::vector<Record> in_memory = engine.map(std::vector<Json>{Json{{"bad_utf8", true}}});
    ASSERT_EQ(in_memory.size(), 1u);
    EXPECT_FALSE(in_memory[0].ok);
    EXPECT_EQ(manifest + ":3: " + in_memory[0].error, records[1]["error"].get<std::string>());
    EXPECT_EQ(records[2]["result"], Json({{"a", 2}}));
    EXPECT_EQ(out.stats.failed, 1u);
  }
}

TEST(EngineTest, MaxErrorsStopsEarly) {
  test::TempDir dir;
  std::string text;
  for (int i = 0; i < 200000; ++i) text += "{\"throw\":\"std\"}\n";
  const std::string manifest = dir.write("m.jsonl", text);
  const auto plugin = Plugin::load(test::fixture("throwing"));
  for (bool serial : {true, false}) {
    const Output out = run_stream(plugin, manifest, {.threads = 2, .serial = serial, .max_errors = 5});
    EXPECT_EQ(out.stats.stopped, StopReason::max_errors);
    EXPECT_GE(out.stats.failed, 5u);
    EXPECT_LT(out.stats.items, 200000u);
    EXPECT_EQ(lines_of(out.text).size(), out.stats.items);
  }
}

TEST(EngineTest, InstanceNeverEnteredByTwoThreads) {
  test::TempDir dir;
  std::string text;
  for (int i = 0; i < 4000; ++i) text += std::to_string(i) + "\n";
  const std::string manifest = dir.write("m.jsonl", text);
  const auto plugin = Plugin::load(test::fixture("guarded"));
  for (std::size_t threads : {2u, 8u}) {
    const Output out = run_stream(plugin, manifest, {.threads = threads}, Json{{"work_us", 20}});
    std::set<std::uint64_t> instances;
    std::set<std::string> thread_ids;
    for (const auto& record : lines_of(out.text)) {
      ASSERT_TRUE(record["ok"]) << record;
      EXPECT_FALSE(record["result"]["overlapped"]) << record;
      EXPECT_EQ(record["result"]["index"], record["index"]);
      instances.insert(record["result"]["instance"].get<std::uint64_t>());
      thread_ids.insert(record["result"]["thread"].get<std::string>());
    }
    EXPECT_LE(instances.size(), threads);
    EXPECT_LE(thread_ids.size(), threads);
  }
}

TEST(EngineTest, UnorderedHasTheSameRecords) {
  test::TempDir dir;
  const std::string manifest = dir.write("m.jsonl", mixed_manifest(2000));
  const auto plugin = Plugin::load(test::fixture("throwing"));
  auto ordered = lines_of(run_stream(plugin, manifest, {.threads = 4}).text);
  auto unordered = lines_of(run_stream(plugin, manifest, {.threads = 4, .ordered = false}).text);
  auto by_index = [](const Json& a, const Json& b) { return a["index"] < b["index"]; };
  std::sort(unordered.begin(), unordered.end(), by_index);
  EXPECT_EQ(ordered, unordered);
}

TEST(EngineTest, InMemoryMapMatchesStreamedRun) {
  test::TempDir dir;
  std::string text;
  std::vector<Json> items;
  for (int i = 0; i < 1000; ++i) {
    Json item = i % 10 == 3 ? Json{{"throw", "std"}} : Json{{"i", i}};
    text += item.dump() + "\n";
    items.push_back(item);
  }
  const auto plugin = Plugin::load(test::fixture("throwing"));
  const auto streamed = lines_of(run_stream(plugin, dir.write("m.jsonl", text), {.threads = 3}).text);
  for (bool serial : {true, false}) {
    Engine engine(plugin, Json::object(), {.threads = 3, .serial = serial});
    RunStats stats;
    const auto records = engine.map(items, &stats);
    ASSERT_EQ(records.size(), streamed.size());
    EXPECT_EQ(stats.failed, 100u);
    for (std::size_t i = 0; i < records.size(); ++i) {
      EXPECT_EQ(records[i].index, i);
      EXPECT_EQ(records[i].ok, streamed[i]["ok"].get<bool>());
      if (records[i].ok) {
        EXPECT_EQ(records[i].result, streamed[i]["result"]);
      }
    }
  }
}

TEST(EngineTest, PlainListItemsCarryThePathBytes) {
  test::TempDir dir;
  const std::string odd = "caf\xE9.txt";
  const std::string manifest = dir.write("files.txt", "a b.txt\n" + odd + "\n");
  const Output out = run_stream(Plugin::load(test::fixture("throwing")), manifest, {.threads = 2});
  const auto records = lines_of(out.text);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0]["result"], Json({{"path", "a b.txt"}}));
  // The echoed path is not UTF-8: the record says so instead of writing invalid JSON.
  EXPECT_FALSE(records[1]["ok"]);
  EXPECT_NE(records[1]["error"].get<std::string>().find("UTF-8"), std::string::npos);
}

TEST(EngineTest, ConstructorAndConfigErrorsAreSetupErrors) {
  EXPECT_THROW(Engine(Plugin::load(test::fixture("ctor_throws")), Json::object()), PluginError);
  EXPECT_THROW(Engine(Plugin::load(test::fixture("guarded")), Json{{"nope", 1}}), ConfigError);
}

TEST(EngineTest, MeasureReportsEachStagesCallDurations) {
  test::TempDir dir;
  std::string text;
  for (int i = 0; i < 40; ++i) text += "{\"us\": 300}\n";
  const std::string manifest = dir.write("spin.jsonl", text);
  const auto spin = Plugin::load(test::bundled("spin"));
  const auto echo = Plugin::load(test::bundled("echo"));
  EXPECT_TRUE(run_stream(spin, manifest, {.threads = 2}).stats.stages.empty());
  for (bool serial : {true, false}) {
    Pipeline pipeline{{Stage{"burn", spin, Json::object(), Concurrency::unlimited()},
                       Stage{"copy", echo, Json::object(), Concurrency::serial()}}};
    Engine engine(pipeline, {.threads = 2, .serial = serial, .measure = true});
    ManifestReader reader(manifest);
    CallbackSink sink([](std::string_view) {});
    const RunStats stats = engine.run(reader, sink);
    ASSERT_EQ(stats.stages.size(), 2u);
    const StageStats& burn = stats.stages[0];
    EXPECT_EQ(burn.name, "burn");
    EXPECT_EQ(burn.calls, 40u);
    EXPECT_EQ(burn.concurrency, serial ? 1u : 2u);
    EXPECT_GE(burn.p50_ns, 300'000u);
    EXPECT_LE(burn.p50_ns, burn.p95_ns);
    EXPECT_LE(burn.p95_ns, burn.p99_ns);
    EXPECT_LE(burn.p99_ns, burn.max_ns);
    EXPECT_GE(burn.busy_ns, 40u * 300'000u);
    EXPECT_LE(burn.busy_ns, 40u * burn.max_ns);
    EXPECT_EQ(stats.stages[1].name, "copy");
    EXPECT_EQ(stats.stages[1].calls, 40u);
    EXPECT_EQ(stats.stages[1].concurrency, 1u);
    // A second run reports that run only.
    ManifestReader again(manifest);
    EXPECT_EQ(engine.run(again, sink).stages[0].calls, 40u);
  }
}

TEST(EngineTest, ThreadCountDefaultsToAllCores) {
  Engine engine(Plugin::load(test::fixture("throwing")), Json::object());
  EXPECT_EQ(engine.threads(), std::thread::hardware_concurrency());
}

// A moved-to engine runs the moved-from one's plugin with its options; the moved-from one
// only refuses to run. Oracle: the squares computed here.
TEST(EngineTest, AMovedEngineRunsItsPluginAndTheMovedFromOneRefuses) {
  const auto square = [](const Json& item, Context&) -> Json { return item.at("n").get<int>() * item.at("n").get<int>(); };
  const auto negate = [](const Json& item, Context&) -> Json { return -item.at("n").get<int>(); };
  const std::vector<Json> items = test::numbers(500);
  auto check_squares = [&](Engine& engine) {
    const std::vector<Record> records = engine.map(items);
    ASSERT_EQ(records.size(), items.size());
    for (std::size_t i = 0; i < records.size(); ++i) {
      ASSERT_TRUE(records[i].ok) << records[i].error;
      EXPECT_EQ(records[i].result.get<long>(), static_cast<long>(i * i));
    }
  };
  Engine first(square, {.threads = 3});
  Engine moved(std::move(first));
  EXPECT_EQ(moved.threads(), 3u);
  check_squares(moved);
  // The moved-from engine: documented, not undefined.
  EXPECT_EQ(first.threads(), 0u);  // NOLINT(bugprone-use-after-move): what is tested
  first.request_stop();
  EXPECT_EQ(first.progress().done.load(), 0u);
  EXPECT_THROW(first.map(items), UsageError);
  test::TempDir dir;
  ManifestReader manifest(dir.write("m.jsonl", "{\"n\": 1}\n"));
  CallbackSink sink([](std::string_view) {});
  EXPECT_THROW(first.run(manifest, sink), UsageError);
  // Assignment: the target's own plugin is gone, the source's runs; the moved-from one can be
  // assigned to again and then runs.
  Engine other(negate, {.threads = 2});
  other = std::move(moved);
  EXPECT_EQ(other.threads(), 3u);
  check_squares(other);
  first = std::move(other);
  check_squares(first);
  // A vector of engines (reallocation moves them).
  std::vector<Engine> engines;
  for (int i = 0; i < 4; ++i) engines.emplace_back(square, RunOptions{.threads = 2});
  for (Engine& engine : engines) check_squares(engine);
}

// Calls that overlapped at most: an upper bound the reported thread count must not be below.
struct Overlap {
  std::atomic<int> running{0};
  std::atomic<int> most{0};
  void enter() {
    const int now = ++running;
    for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {
    }
    std::this_thread::sleep_for(std::chrono::microseconds(300));
    --running;
  }
};

// A run inside the application's own tbb::global_control or task_arena reports the
// parallelism it gets, not the cores. Oracles: TBB's own figures for the limits the test sets
// (active_value, this_task_arena::max_concurrency), and the overlap of calls measured here.
TEST(EngineTest, TheThreadsReportedAreWhatTheApplicationsTbbSettingsAllow) {
  const std::vector<Json> items = test::numbers(200);
  std::vector<int> ns(200);
  for (int i = 0; i < 200; ++i) ns[static_cast<std::size_t>(i)] = i;
  {
    tbb::global_control one(tbb::global_control::max_allowed_parallelism, 1);
    ASSERT_EQ(tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism), 1u);
    for (std::size_t asked : {std::size_t{0}, std::size_t{4}}) {
      Overlap overlap;
      Engine engine([&](const Json& item, Context&) -> Json {
        overlap.enter();
        return item.at("n");
      }, {.threads = asked});
      EXPECT_EQ(engine.threads(), 1u) << asked;
      RunStats stats;
      EXPECT_EQ(engine.map(items, &stats).size(), items.size());
      EXPECT_EQ(stats.threads, 1u) << asked;
      test::TempDir dir;
      std::string text;
      for (const Json& item : items) text += item.dump() + "\n";
      ManifestReader manifest(dir.write("m.jsonl", text));
      CallbackSink sink([](std::string_view) {});
      EXPECT_EQ(engine.run(manifest, sink).threads, 1u) << asked;
      Overlap typed;
      std::vector<int> out(ns.size());
      const MapReport report = map_into(ns, out, [&](int n) { typed.enter(); return n; }, {.threads = asked});
      EXPECT_EQ(report.stats.threads, 1u) << asked;
      EXPECT_LE(overlap.most.load(), 1);
      EXPECT_LE(typed.most.load(), 1);
    }
  }
  // Inside the application's arena of one thread, 0 means that arena's width.
  tbb::task_arena arena(1);
  arena.execute([&] {
    const auto width = static_cast<std::size_t>(tbb::this_task_arena::max_concurrency());
    EXPECT_EQ(width, 1u);
    Engine engine([](const Json& item, Context&) -> Json { return item.at("n"); });
    EXPECT_EQ(engine.threads(), width);
    RunStats stats;
    engine.map(items, &stats);
    EXPECT_EQ(stats.threads, width);
    std::vector<int> out(ns.size());
    EXPECT_EQ(map_into(ns, out, [](int n) { return n; }).stats.threads, width);
    // Asked for explicitly, a count is the run's own, whatever the arena it is called from.
    EXPECT_EQ(map_into(ns, out, [](int n) { return n; }, {.threads = 3}).stats.threads, 3u);
  });
  // With no limit set: the machine's cores, or the count asked for, above them too.
  std::vector<int> out(ns.size());
  EXPECT_EQ(map_into(ns, out, [](int n) { return n; }).stats.threads,
            static_cast<std::size_t>(tbb::info::default_concurrency()));
  EXPECT_EQ(map_into(ns, out, [](int n) { return n; }, {.threads = 8}).stats.threads, 8u);
}

// One check of the thread count for the library and the CLI (tests/cli/exit_codes.sh checks
// the CLI's message is this one).
TEST(EngineTest, AThreadCountOutOfRangeIsAUsageErrorSayingTheLimits) {
  EXPECT_EQ(thread_count_error("1"), "");
  EXPECT_EQ(thread_count_error("4096"), "");
  for (const char* bad : {"0", "4097", "-3", "2x", "", "99999999999999999999999"}) {
    EXPECT_EQ(thread_count_error(bad), std::string("the thread count must be 1 to 4096, not ") + bad);
  }
  auto identity = [](const Json& item, Context&) -> Json { return item; };
  try {
    Engine engine(identity, {.threads = 5000});
    ADD_FAILURE() << "5000 threads accepted";
  } catch (const UsageError& e) {
    EXPECT_EQ(std::string(e.what()), "threads: the thread count must be 1 to 4096, not 5000");
  }
  std::vector<int> ns(3), out(3);
  EXPECT_THROW(map_into(ns, out, [](int n) { return n; }, {.threads = max_threads + 1}), UsageError);
  // 0 is the options' "all cores", not an error.
  EXPECT_GE(Engine(identity, {.threads = 0}).threads(), 1u);
}

// Peak RSS of a child process that streams `items` trivial items through the engine from a
// pipe (so the manifest never sits in a file or in memory).
long child_peak_rss_kib(std::uint64_t items) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[1]);
    try {
      Engine engine(Plugin::load(test::fixture("throwing")), Json::object(), {.threads = 2});
      ManifestReader manifest("/dev/fd/" + std::to_string(fds[0]), ManifestFormat::jsonl);
      std::uint64_t count = 0;
      CallbackSink sink([&](std::string_view records) { count += static_cast<std::uint64_t>(
                                                            std::count(records.begin(), records.end(), '\n')); });
      engine.run(manifest, sink);
      struct rusage usage {};
      ::getrusage(RUSAGE_SELF, &usage);
      ::_exit(count == items ? static_cast<int>(std::min<long>(usage.ru_maxrss / 1024, 250)) : 255);
    } catch (...) {
      ::_exit(254);
    }
  }
  ::close(fds[0]);
  std::string chunk;
  for (std::uint64_t i = 0; i < items; ++i) {
    chunk += "{\"i\":" + std::to_string(i) + ",\"pad\":\"abcdefghijklmnopqrstuvwxyz\"}\n";
    if (chunk.size() > 65536 || i + 1 == items) {
      for (std::size_t off = 0; off < chunk.size();) {
        const ssize_t n = ::write(fds[1], chunk.data() + off, chunk.size() - off);
        if (n <= 0) break;
        off += static_cast<std::size_t>(n);
      }
      chunk.clear();
    }
  }
  ::close(fds[1]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(EngineTest, MemoryDoesNotGrowWithManifestLength) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's quarantine grows with the number of frees";
#endif
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "ThreadSanitizer's shadow memory and allocator make peak RSS meaningless";
#endif
  // Peak RSS in MiB: 2 million items (~100 MB of manifest) must need no more than 200 thousand
  // items do, give or take allocator noise.
  const long small = child_peak_rss_kib(200'000);
  const long large = child_peak_rss_kib(2'000'000);
  ASSERT_GT(small, 0);
  ASSERT_GT(large, 0) << "child failed";
  ASSERT_LT(small, 250);
  EXPECT_LE(large, small + 16) << "peak RSS grew from " << small << " MiB to " << large << " MiB";
}

// RunOptions::grain is for items in memory: Engine::map takes it (the same records at any
// grain), Engine::run refuses it by name before reading an item (its batches are sized by time).
TEST(EngineTest, GrainIsForItemsInMemoryAndRunRefusesIt) {
  std::vector<Json> items;
  for (int i = 0; i < 500; ++i) items.push_back(i);
  const ItemFunction negate = [](const Json& item, Context&) -> Json { return -item.get<int>(); };
  for (const std::size_t grain : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{1000}}) {
    Engine engine(negate, {.threads = 2, .grain = grain});
    RunStats stats;
    const std::vector<Record> records = engine.map(items, &stats);
    ASSERT_EQ(records.size(), items.size()) << grain;
    for (std::size_t i = 0; i < records.size(); ++i) EXPECT_EQ(records[i].result, -static_cast<int>(i)) << grain;
    EXPECT_EQ(stats.ok, items.size());
  }
  test::TempDir dir;
  Engine engine(negate, {.threads = 2, .grain = 7});
  ManifestReader reader(dir.write("m.jsonl", "1\n2\n"));
  std::uint64_t records = 0;
  try {
    engine.run(reader, [&](const Record&) { ++records; });
    ADD_FAILURE() << "Engine::run accepted grain";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("RunOptions::grain applies to items in memory"), std::string::npos) << e.what();
  }
  EXPECT_EQ(records, 0u);
}

}  // namespace
}  // namespace coremap
