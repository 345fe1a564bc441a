// SPDX-License-Identifier: MIT
// The isolated worker's wire format (framework/src/worker_protocol.hpp) and the engine's
// isolated path through the embedding API (records delivered as Record objects).
#include <coremap/engine.hpp>
#include <coremap/error.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include <unistd.h>

#include <gtest/gtest.h>

#include "test_util.hpp"
#include "worker_protocol.hpp"

namespace coremap::detail {
namespace {

// An isolated run's outcome as the embedding API delivers it: the stats and every record the
// callback got, in order.
struct Collected {
  RunStats stats;
  std::vector<Record> records;
};

Collected run_collecting(Engine& engine, const std::string& manifest_path) {
  ManifestReader manifest(manifest_path);
  Collected out;
  out.stats = engine.run(manifest, [&](const Record& r) { out.records.push_back(r); });
  return out;
}

TEST(WorkerProtocolTest, FramesRoundTripInAnyPieces) {
  FrameWriter out;
  out.begin(FrameKind::result);
  out.u8(static_cast<std::uint8_t>(ItemOutcome::ok_record));
  out.bytes("{\"index\":7}\n");
  out.end();
  out.begin(FrameKind::ready);
  out.end();
  out.begin(FrameKind::setup);
  out.bytes(std::string(100'000, 'x'));
  out.end();
  const std::string wire(out.data());

  for (const std::size_t piece : {std::size_t{1}, std::size_t{3}, std::size_t{4096}, wire.size()}) {
    FrameReader in;
    std::vector<std::pair<FrameKind, std::string>> frames;
    for (std::size_t at = 0; at < wire.size(); at += piece) {
      in.feed(std::string_view(wire).substr(at, piece));
      while (auto frame = in.next()) frames.emplace_back(frame->kind, std::string(frame->payload));
    }
    ASSERT_EQ(frames.size(), 3u) << "piece " << piece;
    EXPECT_EQ(frames[0].first, FrameKind::result);
    EXPECT_EQ(frames[0].second, std::string("\0{\"index\":7}\n", 13));
    EXPECT_EQ(frames[1].first, FrameKind::ready);
    EXPECT_EQ(frames[1].second, "");
    EXPECT_EQ(frames[2].second, std::string(100'000, 'x'));
    EXPECT_EQ(in.pending(), 0u);
  }
}

TEST(WorkerProtocolTest, LengthIsLittleEndian) {
  FrameWriter out;
  out.begin(FrameKind::setup);
  out.bytes(std::string(0x0102, 'a'));
  out.end();
  const std::string_view wire = out.data();
  EXPECT_EQ(wire.substr(0, 5), std::string_view("\x02\x01\x00\x00S", 5));
}

TEST(WorkerProtocolTest, RejectsOversizedLengthAndTruncatedPayload) {
  FrameReader in;
  in.feed(std::string_view("\xff\xff\xff\xff" "B", 5));
  EXPECT_THROW(in.next(), ProtocolError);

  PayloadReader payload(std::string_view("\x05\x00\x00\x00" "ab", 6));
  EXPECT_THROW(payload.text(), ProtocolError);
}

TEST(WorkerProtocolTest, BatchRoundTripsFromAnyItem) {
  ItemBatch batch;
  batch.bytes = "{\"a\":1}plain line{bad";
  batch.items = {{10, 3, 0, 7, false}, {11, 4, 7, 10, false}, {12, 6, 17, 4, true}};
  FrameWriter out;
  encode_batch(out, batch, 1, "m.jsonl", ManifestFormat::lines, 3);
  FrameReader in;
  in.feed(out.data());
  const auto frame = in.next();
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->kind, FrameKind::batch);
  PayloadReader payload(frame->payload);
  const BatchHeader header = decode_batch_header(payload);
  EXPECT_EQ(header.format, ManifestFormat::lines);
  EXPECT_EQ(header.manifest_name, "m.jsonl");
  ASSERT_EQ(header.count, 2u);
  const WireItem first = decode_batch_item(payload);
  EXPECT_EQ(first.index, 11u);
  EXPECT_EQ(first.line, 4u);
  EXPECT_FALSE(first.malformed);
  EXPECT_EQ(first.first_attempt, 3u);  // resent after two crashes
  EXPECT_EQ(first.text, "plain line");
  const WireItem second = decode_batch_item(payload);
  EXPECT_EQ(second.index, 12u);
  EXPECT_TRUE(second.malformed);
  EXPECT_EQ(second.first_attempt, 1u);
  EXPECT_EQ(second.text, "{bad");
  EXPECT_TRUE(payload.empty());
}

TEST(WorkerProtocolTest, FormatsSizesTheWayTheyAreGiven) {
  EXPECT_EQ(format_size(256u << 20), "256M");
  EXPECT_EQ(format_size(std::uint64_t{2} << 30), "2G");
  EXPECT_EQ(format_size(1536u << 10), "1536K");
  EXPECT_EQ(format_size(1000), "1000");
}

TEST(IsolateTest, CrashesBecomeRecordsThroughTheCallback) {
#if defined(__SANITIZE_ADDRESS__)
  // The worker must die of the signal, not of ASan's report of it (the CLI tests do the same);
  // workers inherit this environment.
  const char* asan = std::getenv("ASAN_OPTIONS");
  const std::string options = asan != nullptr && *asan != '\0' ? std::string(asan) + ":handle_segv=0" : "handle_segv=0";
  ::setenv("ASAN_OPTIONS", options.c_str(), 1);
#endif
  test::TempDir dir;
  const std::string manifest_path =
      dir.write("items.jsonl", "{\"n\":2}\n{\"crash\":\"segv\"}\n{\"n\":3}\n{\"crash\":\"exit\"}\n{\"n\":4}\n");
  Engine engine(Plugin::load(test::fixture("crashy")), Json::object(), {.threads = 2, .isolate = true});
  const auto [stats, records] = run_collecting(engine, manifest_path);
  EXPECT_EQ(stats.ok, 3u);
  EXPECT_EQ(stats.failed, 2u);
  ASSERT_EQ(records.size(), 5u);
  EXPECT_EQ(records[0].result, (Json{{"n", 2}, {"square", 4}}));
  EXPECT_EQ(records[1].error, manifest_path + ":2: crashed: SIGSEGV");
  EXPECT_EQ(records[2].result, (Json{{"n", 3}, {"square", 9}}));
  EXPECT_EQ(records[3].error, manifest_path + ":4: worker exited with status 7");
  EXPECT_EQ(records[4].result, (Json{{"n", 4}, {"square", 16}}));
}

// A worker gets a parent-death signal when the *thread* that started it ends
// (PR_SET_PDEATHSIG), not only when the engine's process does. Here the engine, and with it the
// first worker, is constructed on a thread that ends before the run: the worker must take that
// signal for what it is and keep serving.
TEST(IsolateTest, AWorkerOutlivesTheThreadThatStartedIt) {
  test::TempDir dir;
  const std::string manifest_path = dir.write("items.jsonl", "{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n");
  std::unique_ptr<Engine> engine;
  pid_t starter = 0;
  std::thread([&] {
    starter = ::gettid();
    engine = std::make_unique<Engine>(Plugin::load(test::fixture("crashy")), Json::object(),
                                      RunOptions{.serial = true, .isolate = true});
  }).join();
  // The signal is sent as the thread's exit completes, which join() may precede: the kernel
  // sends it before it unlists the thread, so once /proc/self/task/<tid> is gone it was sent.
  const std::string task = "/proc/self/task/" + std::to_string(starter);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::filesystem::exists(task) && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_FALSE(std::filesystem::exists(task)) << "the thread that started the worker is still listed after 30 s";
  const auto [stats, records] = run_collecting(*engine, manifest_path);
  EXPECT_EQ(stats.ok, 3u);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].error, "");
  EXPECT_EQ(records[2].result, (Json{{"n", 4}, {"square", 16}}));
}

// A plugin that writes junk into its descriptors (the channel among them) or closes them costs
// only the item it was running: a protocol error is the worker's, never the run's, and the
// worker is replaced. Context::timed_out() turns true inside a worker at the item's deadline,
// and the item is recorded as timed out the way it is in process.
TEST(IsolateTest, AWorkerThatBreaksItsChannelCostsOnlyItsItem) {
  test::TempDir dir;
  const std::string manifest_path = dir.write(
      "items.jsonl",
      "{\"n\":1}\n{\"fault\":\"junk_fds\"}\n{\"n\":2}\n{\"fault\":\"close_fds\"}\n{\"n\":3}\n{\"fault\":\"hang\"}\n");
  Engine engine(Plugin::load(test::bundled("fault")), Json::object(),
                {.threads = 2, .timeout = std::chrono::milliseconds(300), .isolate = true});
  const auto [stats, records] = run_collecting(engine, manifest_path);
  EXPECT_EQ(stats.ok, 3u);
  EXPECT_EQ(stats.failed, 3u);
  ASSERT_EQ(records.size(), 6u);
  for (const std::size_t i : {0, 2, 4}) EXPECT_EQ(records[i].result, (Json{{"n", i / 2 + 1}})) << i;
  EXPECT_TRUE(records[1].error.starts_with(manifest_path +
                                           ":2: worker protocol error: frame length 2147483647 exceeds the limit"))
      << records[1].error;
  EXPECT_TRUE(records[3].error.starts_with(manifest_path + ":4: worker protocol error: the worker lost its channel"))
      << records[3].error;
  EXPECT_TRUE(records[5].error.starts_with(manifest_path + ":6: timed out: ran ")) << records[5].error;
  EXPECT_NE(records[5].error.find("over --timeout 0.3 s (its result was discarded)"), std::string::npos)
      << records[5].error;
}

TEST(IsolateTest, RefusesWhatItCannotIsolate) {
  EXPECT_THROW(Engine([](const Json& item, Context&) { return item; }, {.isolate = true}), UsageError);
  EXPECT_THROW(Engine(Plugin::load(test::fixture("crashy")), Json::object(), {.memory_limit_bytes = 1 << 30}),
               UsageError);
  Engine engine(Plugin::load(test::fixture("crashy")), Json::object(), {.isolate = true});
  const std::vector<Json> items = {Json{{"n", 1}}};
  EXPECT_THROW(engine.map(items), UsageError);
}

}  // namespace
}  // namespace coremap::detail
