// SPDX-License-Identifier: MIT
// Pipelines on the flow graph: fan-out and filtering, ordering across thread counts,
// reductions, latency-bound stages on threads of their own, and spec validation.
#include <coremap/coremap.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <chrono>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace coremap {
namespace {

// Item n fans out into n % 4 copies (none for n % 4 == 0), each {"n", "k"}.
Json fan_out(const Json& item, Context& context) {
  const int n = item.at("n");
  for (int k = 0; k < n % 4; ++k) context.emit({{"n", n}, {"k", k}});
  context.drop();
  return nullptr;
}

// Fails the copy k == 2 of items divisible by 5, doubles the rest.
Json double_it(const Json& value, Context&) {
  if (value.at("k") == 2 && value.at("n").get<int>() % 5 == 0) throw std::runtime_error("k2");
  return value.at("n").get<int>() * 2 + value.at("k").get<int>();
}

Pipeline two_stage(Concurrency second = Concurrency::unlimited()) {
  Pipeline p;
  p.stages.push_back(Stage{"fan", Plugin::from_function(fan_out, "fan"), Json::object(), Concurrency::unlimited()});
  p.stages.push_back(Stage{"double", Plugin::from_function(double_it, "double"), Json::object(), second});
  return p;
}

std::string run_to_text(Pipeline pipeline, const std::string& manifest, RunOptions options, RunStats* stats = nullptr) {
  Engine engine(std::move(pipeline), options);
  ManifestReader reader(manifest);
  std::string out;
  CallbackSink sink([&](std::string_view records) { out.append(records); });
  const RunStats s = engine.run(reader, sink);
  if (stats != nullptr) *stats = s;
  return out;
}

TEST(PipelineTest, FanOutIsOrderedAndIdenticalAtEveryThreadCount) {
  test::TempDir dir;
  std::string text;
  for (int n = 0; n < 3000; ++n) text += "{\"n\":" + std::to_string(n) + "}\n";
  const std::string manifest = dir.write("m.jsonl", text);
  // The oracle, computed here without the engine.
  std::string expected;
  for (int n = 0; n < 3000; ++n) {
    for (int k = 0; k < n % 4; ++k) {
      std::string head = "{\"index\":" + std::to_string(n) + ",\"sub\":" + std::to_string(k) + ",";
      if (k == 2 && n % 5 == 0) {
        expected += head + "\"ok\":false,\"error\":\"" + manifest + ":" + std::to_string(n + 1) + ": stage 'double': k2\"}\n";
      } else {
        expected += head + "\"ok\":true,\"result\":" + std::to_string(n * 2 + k) + "}\n";
      }
    }
  }
  RunStats stats;
  EXPECT_EQ(run_to_text(two_stage(), manifest, {.serial = true}, &stats), expected);
  EXPECT_EQ(stats.items, 3000u);
  EXPECT_EQ(stats.records, 4500u);  // 750 items each of 0, 1, 2, 3 copies
  EXPECT_EQ(stats.failed, 150u);    // n % 4 == 3 and n % 5 == 0: 150 items in 3000
  for (std::size_t threads : {1, 2, 8}) {
    EXPECT_EQ(run_to_text(two_stage(), manifest, {.threads = threads}), expected) << threads << " threads";
    EXPECT_EQ(run_to_text(two_stage(Concurrency::serial()), manifest, {.threads = threads}), expected);
  }
}

TEST(PipelineTest, EmitIsNotAvailableInMap) {
  Engine engine(fan_out, {.threads = 2});
  const std::vector<Json> items = {Json{{"n", 1}}};
  const auto records = engine.map(items);
  ASSERT_FALSE(records[0].ok);
  EXPECT_NE(records[0].error.find("Context::emit: not available in a map over items in memory"), std::string::npos) << records[0].error;
}

// Sums "n" over the items it sees; merge() adds another instance's partial sum.
class Sum {
 public:
  explicit Sum(const Json&) {}
  Json process(const Json& item) {
    sum_ += item.at("n").get<std::uint64_t>();
    ++count_;
    return nullptr;
  }
  void merge(Sum& other) {
    sum_ += other.sum_;
    count_ += other.count_;
  }
  Json summary() const { return {{"sum", sum_}, {"count", count_}}; }

 protected:
  std::uint64_t sum_ = 0;
  std::uint64_t count_ = 0;
};

TEST(PipelineTest, ReductionsDoNotDependOnTheThreadCount) {
  test::TempDir dir;
  std::string text;
  for (int n = 0; n < 20000; ++n) text += "{\"n\":" + std::to_string(n) + "}\n";
  const std::string manifest = dir.write("m.jsonl", text);
  const auto sum = Plugin::from_class<Sum>("sum", "1", "sums n");
  ASSERT_TRUE(sum->reduces());
  const StageSummaries expected = {{"sum", StageSummary::success({{"count", 20000}, {"sum", 20000ull * 19999 / 2}})}};
  for (RunOptions options : {RunOptions{.serial = true}, RunOptions{.threads = 1}, RunOptions{.threads = 2},
                             RunOptions{.threads = 8}}) {
    Engine engine(sum, Json::object(), options);
    ManifestReader reader(manifest);
    std::string ignored;
    CallbackSink sink([&](std::string_view records) { ignored.append(records); });
    const RunStats stats = engine.run(reader, sink);
    EXPECT_EQ(stats.summaries, expected) << options.threads;
    // A second run on the same engine summarises that run alone.
    ManifestReader again(manifest);
    EXPECT_EQ(engine.run(again, sink).summaries, expected);
  }
}

// Sum whose partial state crosses processes (save/load), as MPI ranks need.
class Totals : public Sum {
 public:
  using Sum::Sum;
  Json save() const { return {{"s", sum_}, {"c", count_}}; }
  void load(const Json& state) {
    sum_ = state.at("s").get<std::uint64_t>();
    count_ = state.at("c").get<std::uint64_t>();
  }
};

// Splits the manifest in parts, runs each on its own engine with save_states (as the ranks of
// an MPI job would), merges the saved states: the closed-form sum, as one run gives.
TEST(PipelineTest, SavedStatesOfSeveralRunsMergeIntoTheWholeRunsSummary) {
  test::TempDir dir;
  const auto sum = Plugin::from_class<Sum>("sum", "1", "sums n");
  EXPECT_FALSE(sum->saves_state());
  EXPECT_THROW(summarize_states(Stage{"sum", sum, Json::object(), {}}, {}), PluginError);

  const auto saved = Plugin::from_class<Totals>("totals", "1", "sums n");
  ASSERT_TRUE(saved->saves_state());
  const Stage stage{"totals", saved, Json::object(), {}};
  std::vector<Json> states;
  std::uint64_t first = 0;
  for (const std::uint64_t end : {7000u, 7001u, 20000u}) {
    std::string text;
    for (std::uint64_t n = first; n < end; ++n) text += "{\"n\":" + std::to_string(n) + "}\n";
    first = end;
    const std::string manifest = dir.write("part" + std::to_string(end) + ".jsonl", text);
    Engine engine(saved, Json::object(), RunOptions{.threads = 2, .save_states = true});
    ManifestReader reader(manifest);
    CallbackSink sink([](std::string_view) {});
    const RunStats stats = engine.run(reader, sink);
    ASSERT_TRUE(stats.states.contains("totals")) << stats.states.dump();
    states.push_back(stats.states["totals"]);
  }
  const Json expected = {{"count", 20000}, {"sum", 20000ull * 19999 / 2}};
  EXPECT_EQ(summarize_states(stage, states), StageSummary::success(expected));
  // Without save_states a run keeps no state.
  Engine plain(saved, Json::object(), RunOptions{.threads = 2});
  ManifestReader reader(dir.write("one.jsonl", "{\"n\":1}\n"));
  CallbackSink sink([](std::string_view) {});
  EXPECT_TRUE(plain.run(reader, sink).states.empty());
  // A part whose state is an error makes the merged summary that error.
  states.push_back(Json{{"error", "merge threw"}});
  EXPECT_EQ(summarize_states(stage, states), StageSummary::failure("merge threw"));
}

// Counts items by "status": its summary has an "error" key (how many items said "error"), a
// value like any other. With config {"fail": "merge"} its merge() throws, with "summary" its
// summary(). Saves its state, so runs with checkpoints (where merge() always runs) take it.
class Verdicts {
 public:
  explicit Verdicts(const Json& config) : fail_(config.value("fail", "")) {}
  Json process(const Json& item) {
    ++(item.at("status") == "error" ? errors_ : oks_);
    return nullptr;
  }
  void merge(Verdicts& other) {
    if (fail_ == "merge") throw std::runtime_error("merge refused");
    errors_ += other.errors_;
    oks_ += other.oks_;
  }
  Json summary() const {
    if (fail_ == "summary") throw std::runtime_error("summary refused");
    return {{"error", errors_}, {"ok", oks_}};
  }
  Json save() const { return {{"e", errors_}, {"o", oks_}}; }
  void load(const Json& state) {
    errors_ = state.at("e").get<std::uint64_t>();
    oks_ = state.at("o").get<std::uint64_t>();
  }

 private:
  std::string fail_;
  std::uint64_t errors_ = 0;
  std::uint64_t oks_ = 0;
};

// A summary with an "error" key is the plugin's value (ok); a merge() or summary() that throws
// is a failed StageSummary with the exception's message and no value. The items' records and
// counts are the same either way. Every run below calls merge(): a checkpoint folds the
// instances into the carried state, and summarize_states() merges each state into a fresh one.
TEST(PipelineTest, ReductionErrorsAreValuesNotAnErrorKeyInTheSummary) {
  test::TempDir dir;
  std::string text;
  std::uint64_t errors = 0;
  for (int n = 0; n < 500; ++n) {
    const bool error = n % 7 == 3;
    errors += error ? 1 : 0;
    text += std::string("{\"status\":\"") + (error ? "error" : "ok") + "\"}\n";
  }
  const std::string manifest = dir.write("m.jsonl", text);
  const auto verdicts = Plugin::from_class<Verdicts>("verdicts", "1", "counts statuses");
  auto run = [&](const Json& config, RunOptions options) {
    options.checkpoint_interval = std::chrono::milliseconds(0);
    options.on_checkpoint = [](const Checkpoint&) {};
    Engine engine(verdicts, config, options);
    ManifestReader reader(manifest);
    CallbackSink sink([](std::string_view) {});
    const RunStats stats = engine.run(reader, sink);
    EXPECT_EQ(stats.items, 500u);
    EXPECT_EQ(stats.ok, 500u);
    EXPECT_EQ(stats.failed, 0u);
    EXPECT_EQ(stats.summaries.size(), 1u);
    return stats.summaries.count("verdicts") ? stats.summaries.at("verdicts") : StageSummary::failure("no summary");
  };
  for (RunOptions options : {RunOptions{.serial = true}, RunOptions{.threads = 2}}) {
    const StageSummary fine = run(Json::object(), options);
    EXPECT_EQ(fine, StageSummary::success({{"error", errors}, {"ok", 500 - errors}})) << options.threads;
    EXPECT_TRUE(fine.error.empty());
    const StageSummary merge = run({{"fail", "merge"}}, options);
    EXPECT_FALSE(merge.ok);
    EXPECT_TRUE(merge.value.is_null());
    EXPECT_NE(merge.error.find("merge refused"), std::string::npos) << merge.error;
    const StageSummary summary = run({{"fail", "summary"}}, options);
    EXPECT_FALSE(summary.ok);
    EXPECT_NE(summary.error.find("summary refused"), std::string::npos) << summary.error;
  }
  // Over saved states (as MPI's rank 0 merges the ranks'): the same verdicts.
  const std::vector<Json> states = {Json{{"state", {{"e", 2}, {"o", 3}}}}, Json{{"state", {{"e", 1}, {"o", 0}}}}};
  EXPECT_EQ(summarize_states(Stage{"v", verdicts, Json::object(), {}}, states),
            StageSummary::success({{"error", 3}, {"ok", 3}}));
  const StageSummary merged = summarize_states(Stage{"v", verdicts, {{"fail", "merge"}}, {}}, states);
  EXPECT_FALSE(merged.ok);
  EXPECT_NE(merged.error.find("merge refused"), std::string::npos) << merged.error;
}

// Checkpoints (RunOptions::on_checkpoint): at each, the records handed to the sink are exactly
// those of items 0..N-1 and the state is the sum over them (computed here in closed form); a
// run resumed from any checkpoint (skip 0..N-1, resume_states) writes the remaining records and
// gives the uninterrupted run's summary, at every thread count.
TEST(PipelineTest, CheckpointsCoverTheRecordsBeforeThemAndRunsResumeFromThem) {
  test::TempDir dir;
  constexpr std::uint64_t total = 20000;
  std::string text;
  for (std::uint64_t n = 0; n < total; ++n) text += "{\"n\":" + std::to_string(n) + "}\n";
  const std::string manifest = dir.write("m.jsonl", text);
  const auto saved = Plugin::from_class<Totals>("totals", "1", "sums n");
  const StageSummaries expected = {{"totals", StageSummary::success({{"count", total}, {"sum", total * (total - 1) / 2}})}};
  auto lines_of = [](const std::string& records) {
    return static_cast<std::uint64_t>(std::count(records.begin(), records.end(), '\n'));
  };
  for (RunOptions base : {RunOptions{.serial = true}, RunOptions{.threads = 1}, RunOptions{.threads = 2},
                          RunOptions{.threads = 8}, RunOptions{.threads = 2, .ordered = false}}) {
    struct Taken {
      Checkpoint checkpoint;
      std::size_t bytes;
    };
    std::vector<Taken> taken;
    std::string records;
    RunOptions options = base;
    options.checkpoint_interval = std::chrono::milliseconds(0);
    options.on_checkpoint = [&](const Checkpoint& checkpoint) {
      // Every record before the checkpoint is written, and only those of items below it.
      EXPECT_EQ(lines_of(records), checkpoint.items) << base.threads;
      const std::uint64_t n = checkpoint.items;
      EXPECT_EQ(checkpoint.states, (Json{{"totals", {{"state", {{"s", n * (n - 1) / 2}, {"c", n}}}}}}));
      taken.push_back({checkpoint, records.size()});
    };
    Engine engine(saved, Json::object(), options);
    ManifestReader reader(manifest);
    CallbackSink sink([&](std::string_view written) { records.append(written); });
    const RunStats stats = engine.run(reader, sink);
    EXPECT_EQ(stats.summaries, expected);
    ASSERT_GE(taken.size(), 2u) << "at least one checkpoint before the last";
    EXPECT_TRUE(taken.back().checkpoint.last);
    EXPECT_EQ(taken.back().checkpoint.items, total);
    // Resumed from a checkpoint half-way: the remaining records and the whole run's summary.
    // Never one that covers every item (when checkpoints are slow, as under ThreadSanitizer,
    // the middle one may be the last): the resumed run must have items left to check.
    std::vector<const Taken*> partial;
    for (const Taken& t : taken) {
      if (t.checkpoint.items < total) partial.push_back(&t);
    }
    ASSERT_FALSE(partial.empty()) << "no checkpoint before the last item";
    const Taken& middle = *partial[partial.size() / 2];
    auto skip = std::make_shared<IndexSet>();
    for (std::uint64_t i = 0; i < middle.checkpoint.items; ++i) skip->insert(i);
    RunOptions resumed = base;
    resumed.skip = skip;
    resumed.resume_states = middle.checkpoint.states;
    // Its own checkpoints cover the earlier items too, with their records before them.
    std::string rest;
    resumed.checkpoint_interval = std::chrono::milliseconds(0);
    resumed.on_checkpoint = [&](const Checkpoint& checkpoint) {
      const std::uint64_t n = checkpoint.items;
      EXPECT_GT(n, middle.checkpoint.items);
      EXPECT_EQ(lines_of(rest), n - middle.checkpoint.items);
      EXPECT_EQ(checkpoint.states, (Json{{"totals", {{"state", {{"s", n * (n - 1) / 2}, {"c", n}}}}}}));
    };
    Engine again(saved, Json::object(), resumed);
    ManifestReader reread(manifest);
    CallbackSink rest_sink([&](std::string_view written) { rest.append(written); });
    const RunStats resumed_stats = again.run(reread, rest_sink);
    EXPECT_EQ(resumed_stats.summaries, expected) << "resumed from " << middle.checkpoint.items;
    EXPECT_EQ(lines_of(rest), total - middle.checkpoint.items);
    if (base.ordered) {
      EXPECT_EQ(records.substr(0, middle.bytes) + rest, records);
    }
  }
  // A reducing plugin that cannot save its state cannot be checkpointed or resumed.
  static const PluginDescriptor sum_descriptor = detail::descriptor_of<Sum>("sum", "1", "sums n");
  const auto plain = Plugin::from_descriptor(&sum_descriptor, "builtin:sum");
  EXPECT_THROW(Engine(plain, Json::object(), RunOptions{.on_checkpoint = [](const Checkpoint&) {}}), UsageError);
  EXPECT_THROW(Engine(plain, Json::object(), RunOptions{.resume_states = Json::object()}), UsageError);
  // Isolated reducing stages are checkpointed too: PipelineTest.IsolatedStagesMixWithInProcessOnesAsIfInProcess.
}

// Isolated stages (Stage::isolate) among in-process ones: fan-out (Context::emit), drops,
// failures and reductions whose partial states come back from the worker processes give the
// records of the same pipeline run wholly in process, byte for byte, at every thread count,
// and summaries equal to those computed here from the manifest alone; a run resumed from a
// checkpoint of isolated reducing stages gives the same records and summaries.
TEST(PipelineTest, IsolatedStagesMixWithInProcessOnesAsIfInProcess) {
  test::TempDir dir;
  constexpr std::uint64_t total = 800;
  std::string text;
  for (std::uint64_t n = 0; n < total; ++n) text += "{\"n\":" + std::to_string(n) + "}\n";
  const std::string manifest = dir.write("m.jsonl", text);
  const auto spread = Plugin::load(test::fixture("spread"));
  const auto totals = Plugin::from_class<Totals>("totals", "1", "sums n");
  auto pipeline = [&](bool first_isolated, bool second_isolated) {
    Pipeline p;
    p.stages.push_back(Stage{"fan", Plugin::from_function(fan_out, "fan"), Json::object(), Concurrency::unlimited()});
    p.stages.push_back(Stage{"spread", spread, Json::object(), Concurrency::unlimited(), first_isolated});
    p.stages.push_back(Stage{"again", spread, Json::object(), Concurrency::serial(), second_isolated});
    p.stages.push_back(Stage{"totals", totals, Json::object(), Concurrency::unlimited()});
    return p;
  };
  // The oracle: what each stage sees, from the fixture's documented rules (tests/fixtures/spread.cpp).
  std::uint64_t calls1 = 0, sum1 = 0, calls2 = 0, sum2 = 0, count3 = 0, sum3 = 0;
  for (std::uint64_t n = 0; n < total; ++n) {
    for (std::uint64_t k = 0; k < n % 4; ++k) {
      const std::uint64_t m = n + k;
      ++calls1;
      sum1 += m;
      if (m % 7 == 0 || m % 13 == 0) continue;
      const std::uint64_t copies = k == 1 ? 2 : 1;  // "spread"'s outputs, each run by "again"
      calls2 += copies;
      sum2 += copies * m;
      count3 += copies * copies;
      sum3 += copies * copies * n;
    }
  }
  const StageSummaries expected = {{"spread", StageSummary::success({{"calls", calls1}, {"sum", sum1}})},
                                   {"again", StageSummary::success({{"calls", calls2}, {"sum", sum2}})},
                                   {"totals", StageSummary::success({{"count", count3}, {"sum", sum3}})}};
  RunStats stats;
  const std::string in_process = run_to_text(pipeline(false, false), manifest, {.serial = true}, &stats);
  EXPECT_EQ(stats.summaries, expected);
  ASSERT_NE(in_process.find("\"sub\":1"), std::string::npos) << "fanned-out records";
  ASSERT_NE(in_process.find("stage 'spread': m = "), std::string::npos) << "failed records";
  for (const auto& [first, second] : {std::pair{true, false}, std::pair{false, true}, std::pair{true, true}}) {
    for (RunOptions options : {RunOptions{.serial = true}, RunOptions{.threads = 1}, RunOptions{.threads = 2},
                               RunOptions{.threads = 8}}) {
      const std::string isolated = run_to_text(pipeline(first, second), manifest, options, &stats);
      EXPECT_EQ(isolated, in_process) << first << second << " at " << options.threads << " threads, serial "
                                      << options.serial;
      EXPECT_EQ(stats.summaries, expected) << first << second << " at " << options.threads << " threads";
    }
  }
  // Checkpoints of the isolated reducing stages, and a run resumed from one half-way.
  std::vector<std::pair<Checkpoint, std::size_t>> taken;
  std::string records;
  RunOptions options{.threads = 2, .checkpoint_interval = std::chrono::milliseconds(0)};
  options.on_checkpoint = [&](const Checkpoint& checkpoint) { taken.emplace_back(checkpoint, records.size()); };
  {
    Engine engine(pipeline(true, true), options);
    ManifestReader reader(manifest);
    CallbackSink sink([&](std::string_view written) { records.append(written); });
    EXPECT_EQ(engine.run(reader, sink).summaries, expected);
  }
  EXPECT_EQ(records, in_process);
  std::vector<const std::pair<Checkpoint, std::size_t>*> partial;
  for (const auto& t : taken) {
    if (t.first.items < total) partial.push_back(&t);
  }
  ASSERT_FALSE(partial.empty()) << "no checkpoint before the last item";
  const auto& [middle, bytes] = *partial[partial.size() / 2];
  RunOptions resumed{.threads = 2};
  auto skip = std::make_shared<IndexSet>();
  for (std::uint64_t i = 0; i < middle.items; ++i) skip->insert(i);
  resumed.skip = skip;
  resumed.resume_states = middle.states;
  const std::string rest = run_to_text(pipeline(true, true), manifest, resumed, &stats);
  EXPECT_EQ(stats.summaries, expected) << "resumed from " << middle.items;
  EXPECT_EQ(records.substr(0, bytes) + rest, in_process);
}

// A reducing plugin whose partial state cannot leave its process (no save() and load()) cannot
// run isolated: refused when the engine is made, naming the stage, never a crash or a wrong
// summary.
TEST(PipelineTest, AnIsolatedReducingPluginWithoutSaveAndLoadIsRefused) {
  const auto count = Plugin::load(test::fixture("stateless_count"));
  ASSERT_TRUE(count->reduces());
  ASSERT_FALSE(count->saves_state());
  Pipeline pipeline;
  pipeline.stages.push_back(Stage{"echo", Plugin::from_function([](const Json& item, Context&) { return item; }, "echo"),
                                  Json::object(), Concurrency::unlimited()});
  pipeline.stages.push_back(Stage{"count", count, Json::object(), Concurrency::unlimited(), true});
  try {
    Engine engine(std::move(pipeline), RunOptions{.threads = 2});
    ADD_FAILURE() << "no error";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("stage 'count' reduces, but its plugin stateless_count cannot save its partial "
                                         "state (save() and load()"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(Engine(count, Json::object(), RunOptions{.isolate = true}), UsageError);
  // In process it runs.
  EXPECT_NO_THROW(Engine(count, Json::object(), RunOptions{.threads = 2}));
}

TEST(PipelineTest, LatencyStageKeepsItsConcurrencyInFlightBesideACpuStage) {
  std::atomic<int> in_flight{0};
  std::atomic<int> most{0};
  std::atomic<int> cpu_calls{0};
  auto blocking = [&](const Json& item, Context&) -> Json {
    const int now = ++in_flight;
    for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    --in_flight;
    return item;
  };
  auto cpu = [&](const Json& item, Context&) -> Json {
    ++cpu_calls;
    return item;
  };
  test::TempDir dir;
  std::string text;
  for (int n = 0; n < 640; ++n) text += "{\"n\":" + std::to_string(n) + "}\n";
  const std::string manifest = dir.write("m.jsonl", text);
  Pipeline p;
  p.stages.push_back(Stage{"wait", Plugin::from_function(blocking, "wait"), Json::object(), Concurrency::of(64)});
  p.stages.push_back(Stage{"cpu", Plugin::from_function(cpu, "cpu"), Json::object(), Concurrency::unlimited()});
  RunStats stats;
  const std::string out = run_to_text(std::move(p), manifest, {.threads = 2}, &stats);
  EXPECT_EQ(stats.ok, 640u);
  EXPECT_EQ(cpu_calls.load(), 640);
  EXPECT_EQ(most.load(), 64) << "calls of the concurrency-64 stage in flight at once";
  // Records in order, each item's own.
  std::size_t pos = 0;
  for (int n = 0; n < 640; ++n) {
    const std::string want = "{\"index\":" + std::to_string(n) + ",\"ok\":true,\"result\":{\"n\":" + std::to_string(n) + "}}\n";
    ASSERT_EQ(out.compare(pos, want.size(), want), 0) << n << ": " << out.substr(pos, 200);
    pos += want.size();
  }
}

TEST(PipelineTest, FannedOutValuesSpreadOverALatencyBoundStage) {
  // One item fans out into 64 values; the next stage (16 wide, on 2 threads) blocks 20 ms per
  // call: its 16 threads share the batch's values instead of one thread taking them all.
  std::atomic<int> in_flight{0};
  std::atomic<int> most{0};
  auto blocking = [&](const Json& value, Context&) -> Json {
    const int now = ++in_flight;
    for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    --in_flight;
    return value.at("k");
  };
  auto sixty_four = [](const Json&, Context& context) -> Json {
    for (int k = 0; k < 64; ++k) context.emit({{"k", k}});
    return nullptr;
  };
  test::TempDir dir;
  const std::string manifest = dir.write("m.jsonl", "{}\n");
  Pipeline p;
  p.stages.push_back(Stage{"fan", Plugin::from_function(sixty_four, "fan"), Json::object(), Concurrency::unlimited()});
  p.stages.push_back(Stage{"wait", Plugin::from_function(blocking, "wait"), Json::object(), Concurrency::of(16)});
  RunStats stats;
  const std::string out = run_to_text(std::move(p), manifest, {.threads = 2}, &stats);
  EXPECT_EQ(stats.ok, 64u);
  EXPECT_EQ(most.load(), 16);
  std::string expected;
  for (int k = 0; k < 64; ++k) expected += "{\"index\":0,\"sub\":" + std::to_string(k) + ",\"ok\":true,\"result\":" + std::to_string(k) + "}\n";
  EXPECT_EQ(out, expected);
}

TEST(PipelineTest, ConcurrencyLimitsAreRespected) {
  // Stage "one" is serial, "two" allows 2 calls at once, "all" is unlimited; 8 threads.
  struct Gauge {
    std::atomic<int> now{0};
    std::atomic<int> most{0};
    Json enter_and_leave(const Json& item) {
      const int n = ++now;
      for (int seen = most.load(); n > seen && !most.compare_exchange_weak(seen, n);) {
      }
      std::this_thread::sleep_for(std::chrono::microseconds(300));
      --now;
      return item;
    }
  };
  Gauge one, two, all;
  Pipeline p;
  p.stages.push_back(Stage{"one", Plugin::from_function([&](const Json& i, Context&) { return one.enter_and_leave(i); }, "one"),
                           Json::object(), Concurrency::serial()});
  p.stages.push_back(Stage{"two", Plugin::from_function([&](const Json& i, Context&) { return two.enter_and_leave(i); }, "two"),
                           Json::object(), Concurrency::of(2)});
  p.stages.push_back(Stage{"all", Plugin::from_function([&](const Json& i, Context&) { return all.enter_and_leave(i); }, "all"),
                           Json::object(), Concurrency::unlimited()});
  test::TempDir dir;
  std::string text;
  for (int n = 0; n < 2000; ++n) text += "{\"n\":" + std::to_string(n) + "}\n";
  const std::string manifest = dir.write("m.jsonl", text);
  RunStats stats;
  run_to_text(std::move(p), manifest, {.threads = 8}, &stats);
  EXPECT_EQ(stats.ok, 2000u);
  EXPECT_EQ(one.most.load(), 1) << "a serial stage was entered twice at once";
  EXPECT_LE(two.most.load(), 2);
  EXPECT_LE(all.most.load(), 8);
}

// Counts the values it sees and passes them on.
class Count {
 public:
  explicit Count(const Json&) {}
  Json process(const Json& value) {
    ++count_;
    return value;
  }
  void merge(Count& other) { count_ += other.count_; }
  Json summary() const { return {{"count", count_}}; }

 private:
  std::uint64_t count_ = 0;
};

// A first stage whose values fail after process() returned, as item n asks ("bad": a kind,
// else its value is {"n": n}); "fan" emits one good and one failing value.
Json unwritable(const std::string& kind) {
  if (kind == "utf8") return {{"text", std::string("caf\xE9")}};
  if (kind == "key") return {{std::string("k\xFF"), 1}};
  if (kind == "nan") return {{"x", {1.0, std::nan("")}}};
  if (kind == "inf") return {{"x", -std::numeric_limits<double>::infinity()}};
  if (kind == "discarded") return {{"d", Json::parse("not json", nullptr, false)}};
  Json deep = Json::array();
  for (int level = 0; level < 1000; ++level) deep = Json::array({std::move(deep)});  // 1001 levels
  return deep;
}

Json mangle(const Json& item, Context& context) {
  if (!item.contains("bad")) return {{"n", item.at("n")}};
  const std::string kind = item.at("bad");
  if (kind != "fan") return unwritable(kind);
  context.emit({{"n", item.at("n")}});
  context.emit(unwritable("utf8"));
  context.drop();
  return nullptr;
}

// A value that cannot be written fails in the stage that made it: its error names the stage
// (as every per-item stage error does: "<manifest>:<line>: stage '<name>': ") and what is wrong
// where, and no later stage sees it (the counting reduction counts only the good values). The
// same for records written, handed to a callback, at every thread count, for emitted values.
// Oracle: the manifest's construction says which items are bad.
TEST(PipelineTest, AValueThatCannotBeWrittenFailsInItsStageAndGoesNoFurther) {
  const std::vector<std::pair<std::string, std::string>> kinds = {
      {"utf8", "holds a string that is not valid UTF-8 (byte 0xE9 at offset 3) at /text"},
      {"key", "holds an object key that is not valid UTF-8 (byte 0xFF at offset 1) at /k\\xFF"},
      {"nan", "holds a number that is not finite (NaN) at /x/1; JSON has no NaN or infinity"},
      {"inf", "holds a number that is not finite (-infinity) at /x; JSON has no NaN or infinity"},
      {"deep", "nests arrays and objects deeper than 1000 levels"},
      {"discarded", "holds a discarded value (what Json::parse gives for text that is not JSON when it may not throw) at /d"},
      {"fan", "holds a string that is not valid UTF-8 (byte 0xE9 at offset 3) at /text"}};
  test::TempDir dir;
  std::string text;
  std::map<int, std::string> bad;  // item -> the end of its error
  std::set<int> fans;              // items that emit a good value before their bad one
  int good = 0;
  for (int n = 0; n < 3000; ++n) {
    if (n % 7 == 3) {
      const auto& [kind, why] = kinds[static_cast<std::size_t>(n / 7) % kinds.size()];
      text += "{\"n\":" + std::to_string(n) + ",\"bad\":\"" + kind + "\"}\n";
      bad[n] = why;
      if (kind == "fan") {
        fans.insert(n);
        ++good;
      }
    } else {
      text += "{\"n\":" + std::to_string(n) + "}\n";
      ++good;
    }
  }
  const std::string manifest = dir.write("m.jsonl", text);
  const auto count = Plugin::from_class<Count>("count", "1", "counts");
  auto pipeline = [&] {
    Pipeline p;
    p.stages.push_back(Stage{"mangle", Plugin::from_function(mangle, "mangle"), Json::object(), Concurrency::unlimited()});
    p.stages.push_back(Stage{"count", count, Json::object(), Concurrency::unlimited()});
    return p;
  };
  // The record of item n (its first record when it fanned out) and its second, if any.
  auto check = [&](const std::vector<Record>& records, const RunStats& stats, const std::string& mode) {
    SCOPED_TRACE(mode);
    EXPECT_EQ(stats.summaries, (StageSummaries{{"count", StageSummary::success({{"count", good}})}}));
    std::size_t r = 0;
    for (int n = 0; n < 3000; ++n) {
      ASSERT_LT(r, records.size());
      const auto it = bad.find(n);
      if (fans.contains(n)) {
        EXPECT_TRUE(records[r].ok) << n;
        EXPECT_EQ(records[r].result, Json({{"n", n}}));
        ++r;
      }
      const Record& record = records[r++];
      EXPECT_EQ(record.index, static_cast<std::uint64_t>(n));
      if (it == bad.end()) {
        EXPECT_TRUE(record.ok) << n << ": " << record.error;
        EXPECT_EQ(record.result, Json({{"n", n}}));
        continue;
      }
      EXPECT_FALSE(record.ok) << n;
      EXPECT_EQ(record.error.substr(0, record.error.find(": the plugin's result ")),
                manifest + ":" + std::to_string(n + 1) + ": stage 'mangle'");
      EXPECT_TRUE(record.error.ends_with(it->second)) << record.error;
    }
    EXPECT_EQ(r, records.size());
  };
  for (RunOptions options : {RunOptions{.serial = true}, RunOptions{.threads = 1}, RunOptions{.threads = 8}}) {
    const std::string mode = options.serial ? "serial" : std::to_string(options.threads) + " threads";
    RunStats stats;
    const std::string out = run_to_text(pipeline(), manifest, options, &stats);
    std::vector<Record> records;
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);) {
      const Json j = Json::parse(line);  // strict: every record is valid UTF-8 JSON
      Record record{j.at("index").get<std::uint64_t>(), j.at("ok").get<bool>(), j.value("result", Json()),
                    j.value("error", std::string()), 1, -1};
      records.push_back(std::move(record));
    }
    check(records, stats, mode + ", written");
    Engine engine(pipeline(), options);
    ManifestReader reader(manifest);
    records.clear();
    stats = engine.run(reader, [&](const Record& record) { records.push_back(record); });
    check(records, stats, mode + ", callback");
  }
}

// One stage: what the written records could not hold is an error there too, and Engine::map
// hands no such result to its caller either.
TEST(PipelineTest, AResultThatCannotBeWrittenIsAnErrorInEveryMode) {
  const auto plugin = Plugin::from_function(
      [](const Json& item, Context&) -> Json { return item.contains("bad") ? unwritable(item.at("bad")) : item; }, "u");
  Engine engine(plugin, Json::object(), {.threads = 2});
  const std::vector<Json> items = {{{"bad", "nan"}}, {{"n", 1}}, {{"bad", "deep"}}, {{"bad", "utf8"}}};
  const auto records = engine.map(items);
  EXPECT_FALSE(records[0].ok);
  EXPECT_EQ(records[0].error, "the plugin's result holds a number that is not finite (NaN) at /x/1; JSON has no NaN or infinity");
  EXPECT_TRUE(records[1].ok);
  EXPECT_FALSE(records[2].ok);
  EXPECT_FALSE(records[3].ok);
  test::TempDir dir;
  const std::string manifest = dir.write("m.jsonl", "{\"bad\":\"inf\"}\n{\"bad\":\"deep\"}\n{\"n\":2}\n");
  Pipeline one;
  one.stages.push_back(Stage{"u", plugin, Json::object(), Concurrency::unlimited()});
  const std::string out = run_to_text(std::move(one), manifest, {.threads = 2});
  EXPECT_EQ(out, "{\"index\":0,\"ok\":false,\"error\":\"" + manifest +
                     ":1: the plugin's result holds a number that is not finite (-infinity) at /x; JSON has no NaN or infinity\"}\n"
                     "{\"index\":1,\"ok\":false,\"error\":\"" + manifest +
                     ":2: the plugin's result nests arrays and objects deeper than 1000 levels\"}\n"
                     "{\"index\":2,\"ok\":true,\"result\":{\"n\":2}}\n");
}

TEST(PipelineTest, SpecErrorsNameTheStageAndTheKey) {
  const PluginLoader loader({COREMAP_BUNDLED_PLUGIN_DIR}, false, false);
  auto message = [&](const Json& spec) {
    try {
      parse_pipeline(spec, "p.json", loader);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message(Json::array()), "p.json: a pipeline must be a JSON object with a \"stages\" array");
  EXPECT_EQ(message({{"stages", Json::array()}}), "p.json: key 'stages' must be a non-empty array of stages");
  EXPECT_EQ(message({{"stage", 1}}), "p.json: unknown key 'stage' (known keys: stages, max_in_flight)");
  EXPECT_EQ(message({{"stages", {{{"plugin", "echo"}, {"concurrency", 0}}}}}),
            "p.json: stage 1: key 'concurrency' must be \"serial\", \"unlimited\" or an integer from 1 to 65536, got 0");
  EXPECT_EQ(message({{"stages", {{{"plugin", "echo"}}, {{"name", "b"}, {"plugins", "echo"}}}}}),
            "p.json: stage 2 (b): unknown key 'plugins' (known keys: name, plugin, config, concurrency, isolate, "
            "memory_limit)");
  EXPECT_EQ(message({{"stages", {{{"plugin", "echo"}, {"isolate", "yes"}}}}}),
            "p.json: stage 1: key 'isolate' must be true or false, got \"yes\"");
  EXPECT_EQ(message({{"stages", {{{"plugin", "echo"}, {"isolate", true}, {"memory_limit", "12Q"}}}}}),
            "p.json: stage 1: key 'memory_limit' must be a size (bytes, or a string such as \"512M\" or \"2G\"), got "
            "\"12Q\"");
  EXPECT_EQ(message({{"stages", {{{"plugin", "echo"}, {"memory_limit", "1G"}}}}}),
            "p.json: stage 1: key 'memory_limit' limits the stage's worker processes; it needs \"isolate\": true");
  EXPECT_EQ(message({{"stages", {{{"name", "x"}}}}}), "p.json: stage 1 (x): key 'plugin' (a plugin name or path) is missing");
  EXPECT_NE(message({{"stages", {{{"plugin", "echo"}, {"config", {{"nope", 1}}}}}}}).find("p.json: stage 1: config of plugin 'echo'"),
            std::string::npos);
  EXPECT_NE(message({{"stages", {{{"plugin", "no-such-plugin"}}}}}).find("p.json: stage 1: "), std::string::npos);
  EXPECT_EQ(message({{"stages", {{{"plugin", "echo"}}, {{"plugin", "echo"}}}}}),
            "p.json: stage 2: another stage is named 'echo' too; give one of them a \"name\"");
  const Pipeline ok = parse_pipeline({{"max_in_flight", 7}, {"stages", {{{"plugin", "echo"}, {"concurrency", "serial"}},
                                                                         {{"name", "e2"}, {"plugin", "echo"}, {"concurrency", 64},
                                                                          {"isolate", true}, {"memory_limit", "1536K"}}}}},
                                     "p.json", loader);
  ASSERT_EQ(ok.stages.size(), 2u);
  EXPECT_EQ(ok.max_in_flight, 7u);
  EXPECT_EQ(ok.stages[0].concurrency.limit, 1u);
  EXPECT_EQ(ok.stages[1].name, "e2");
  EXPECT_EQ(ok.stages[1].concurrency.limit, 64u);
  EXPECT_FALSE(ok.stages[0].isolate);
  EXPECT_EQ(ok.stages[0].memory_limit_bytes, 0u);
  EXPECT_TRUE(ok.stages[1].isolate);
  EXPECT_EQ(ok.stages[1].memory_limit_bytes, 1536u * 1024);
}

}  // namespace
}  // namespace coremap
