// SPDX-License-Identifier: MIT
// Engine overhead per item: the bundled `echo` plugin (returns its item) over small JSON Lines
// items, so the figure is coremap's own cost: cutting, parsing, the plugin call through the
// shared library, serialising, ordering. Also the parts on their own: manifest cutting and
// parsing, one plugin call against a direct C++ call, and what ordered output costs.
// Run: build/bin/engine_bench (see docs/performance.md).
#include <coremap/coremap.hpp>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for_each.h>
#include <oneapi/tbb/task_arena.h>

namespace {

constexpr int item_count = 200'000;
const int all_threads = tbb::info::default_concurrency();

std::string scratch_path(const std::string& suffix) {
  return "/tmp/coremap-bench-" + std::to_string(::getpid()) + suffix;
}

// The items the engine benchmarks run: {"i":N,"name":"item-N"}, about 25 bytes a line.
const std::string& manifest_path() {
  static const std::string path = [] {
    std::string p = scratch_path(".jsonl");
    std::ofstream out(p);
    for (int i = 0; i < item_count; ++i) out << "{\"i\":" << i << ",\"name\":\"item-" << i << "\"}\n";
    return p;
  }();
  return path;
}

// The same file paths as a plain list and as JSON Lines {"path": ...}, so the two formats are
// compared on identical content.
std::string path_of(int i) { return "/srv/data/set-" + std::to_string(i % 97) + "/file-" + std::to_string(i) + ".txt"; }

const std::string& paths_manifest(coremap::ManifestFormat format) {
  static const std::string lines = [] {
    std::string p = scratch_path("-paths.txt");
    std::ofstream out(p);
    for (int i = 0; i < item_count; ++i) out << path_of(i) << '\n';
    return p;
  }();
  static const std::string jsonl = [] {
    std::string p = scratch_path("-paths.jsonl");
    std::ofstream out(p);
    for (int i = 0; i < item_count; ++i) out << "{\"path\":\"" << path_of(i) << "\"}\n";
    return p;
  }();
  return format == coremap::ManifestFormat::lines ? lines : jsonl;
}

const std::shared_ptr<const coremap::Plugin>& echo_plugin() {
  static const auto plugin = coremap::Plugin::load(std::string(COREMAP_BUNDLED_PLUGIN_DIR) + "/echo.so");
  return plugin;
}

void set_per_item_counters(benchmark::State& state, std::int64_t items_per_iteration) {
  state.SetItemsProcessed(state.iterations() * items_per_iteration);
  state.counters["ns_per_item"] = benchmark::Counter(static_cast<double>(state.iterations() * items_per_iteration),
                                                     benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void run_stream(benchmark::State& state, coremap::Engine& engine) {
  std::uint64_t bytes = 0;
  coremap::CallbackSink sink([&](std::string_view records) { bytes += records.size(); });
  for (auto _ : state) {
    coremap::ManifestReader manifest(manifest_path());
    const auto stats = engine.run(manifest, sink);
    if (stats.ok != item_count) state.SkipWithError("items failed");
  }
  set_per_item_counters(state, item_count);
  benchmark::DoNotOptimize(bytes);
}

void run_stream(benchmark::State& state, coremap::RunOptions options) {
  coremap::Engine engine(echo_plugin(), coremap::Json::object(), options);
  run_stream(state, engine);
}

std::size_t threads_arg(const benchmark::State& state) { return static_cast<std::size_t>(state.range(0)); }

// --- The three engine paths, one no-op plugin ---

void BM_StreamSerial(benchmark::State& state) { run_stream(state, {.serial = true}); }

// Engine::run: the streamed tbb::flow::graph run, one stage, records in index order.
void BM_StreamThreads(benchmark::State& state) { run_stream(state, {.threads = threads_arg(state)}); }

// The same with --unordered (RunOptions::ordered = false): the difference from
// BM_StreamThreads is what ordered output (the sequencer_node) costs.
void BM_StreamUnordered(benchmark::State& state) {
  run_stream(state, {.threads = threads_arg(state), .ordered = false});
}

// Engine(Pipeline): range(1) no-op stages chained, each a function_node of unlimited
// concurrency; against BM_StreamThreads (one stage), the cost of each extra stage per item.
void BM_StreamPipeline(benchmark::State& state) {
  coremap::Pipeline pipeline;
  for (std::int64_t s = 0; s < state.range(1); ++s) {
    pipeline.stages.push_back({.name = "echo" + std::to_string(s),
                               .plugin = echo_plugin(),
                               .config = coremap::Json::object(),
                               .concurrency = coremap::Concurrency::unlimited()});
  }
  coremap::Engine engine(std::move(pipeline), {.threads = threads_arg(state)});
  run_stream(state, engine);
}

// The same run with the plugin in coremap-worker processes (--isolate): the difference from
// BM_StreamThreads is the isolation overhead per item (docs/performance.md, docs/reliability.md).
void BM_StreamIsolated(benchmark::State& state) {
  run_stream(state, {.threads = threads_arg(state), .isolate = true});
}

// Engine::map: items already in memory, tbb::parallel_for_each, records returned in a vector.
void BM_MapInMemory(benchmark::State& state) {
  std::vector<coremap::Json> items;
  for (int i = 0; i < item_count; ++i) items.push_back({{"i", i}, {"name", "item-" + std::to_string(i)}});
  coremap::Engine engine(echo_plugin(), coremap::Json::object(), {.threads = threads_arg(state)});
  for (auto _ : state) benchmark::DoNotOptimize(engine.map(items));
  set_per_item_counters(state, item_count);
}

// --- Typed items in memory: coremap::map_into against tbb::parallel_for_each and a loop ---

// The same 1,000,000 items and the same work (about 160 ns of hashing arithmetic per item on
// the reference machine) in each row, so the rows differ only in how the items are run.
constexpr std::size_t typed_count = 1'000'000;

struct Reading {
  std::uint64_t sensor = 0;
  double value = 0;
  std::uint32_t flags = 0;
};

struct Digest {
  std::uint64_t sensor = 0;
  std::uint64_t hash = 0;
};

const std::vector<Reading>& readings() {
  static const std::vector<Reading> items = [] {
    std::vector<Reading> out(typed_count);
    for (std::size_t i = 0; i < typed_count; ++i) {
      out[i] = Reading{i, static_cast<double>(i) * 0.25, static_cast<std::uint32_t>(i % 7)};
    }
    return out;
  }();
  return items;
}

// splitmix64-style rounds: data-dependent integer arithmetic the compiler cannot fold away.
inline Digest digest(const Reading& reading) noexcept {
  std::uint64_t h = reading.sensor ^ static_cast<std::uint64_t>(reading.value) ^ reading.flags;
  for (int round = 0; round < 32; ++round) {
    h += 0x9E3779B97F4A7C15ull;
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
    h ^= h >> 31;
  }
  return Digest{reading.sensor, h};
}

void BM_TypedSerial(benchmark::State& state) {
  const auto& items = readings();
  std::vector<Digest> out(items.size());
  for (auto _ : state) {
    for (std::size_t i = 0; i < items.size(); ++i) out[i] = digest(items[i]);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_per_item_counters(state, static_cast<std::int64_t>(items.size()));
}

void BM_TbbParallelForEach(benchmark::State& state) {
  const auto& items = readings();
  std::vector<Digest> out(items.size());
  tbb::task_arena arena(all_threads);
  for (auto _ : state) {
    arena.execute([&] {
      tbb::parallel_for_each(items.begin(), items.end(),
                             [&](const Reading& reading) { out[&reading - items.data()] = digest(reading); });
    });
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_per_item_counters(state, static_cast<std::int64_t>(items.size()));
}

// coremap::map_into with its defaults: per-item error capture, stop checks, progress counters,
// chunked scheduling; results written in place.
void BM_TypedMap(benchmark::State& state) {
  const auto& items = readings();
  std::vector<Digest> out(items.size());
  for (auto _ : state) {
    const coremap::MapReport report = coremap::map_into(items, out, digest, {.threads = std::size_t(all_threads)});
    if (!report.ok()) state.SkipWithError("typed map failed");
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_per_item_counters(state, static_cast<std::int64_t>(items.size()));
}

// coremap::map with ordered hand-over to a callback (results wait per chunk, not per item).
void BM_TypedMapOrdered(benchmark::State& state) {
  const auto& items = readings();
  for (auto _ : state) {
    std::uint64_t sum = 0;
    const coremap::MapReport report = coremap::map(
        items, digest, [&](std::size_t, Digest&& d) { sum += d.hash; }, {.threads = std::size_t(all_threads)});
    if (!report.ok()) state.SkipWithError("typed map failed");
    benchmark::DoNotOptimize(sum);
  }
  set_per_item_counters(state, static_cast<std::int64_t>(items.size()));
}

// --- Manifest throughput, one thread ---

// ManifestReader::next_batch alone: cutting the file into items, no parsing (the engine's
// serial input stage). BM_ManifestCut/events is the engine benchmarks' manifest.
void BM_ManifestCut(benchmark::State& state, const std::string& path) {
  coremap::ItemBatch batch;
  std::uint64_t bytes = 0;
  for (auto _ : state) {
    coremap::ManifestReader manifest(path);
    while (manifest.next_batch(batch, 4096, 1 << 20)) benchmark::DoNotOptimize(batch.items.data());
    bytes = manifest.bytes_read();
  }
  set_per_item_counters(state, item_count);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
}

// Cutting and then parsing each item into its JSON value, as the engine's parallel stage does
// (coremap::detail::parse_item, which is not exported: JSON Lines through Json::parse, a plain
// list line assigned into a reused {"path": ...} object; the parser's depth and NUL-byte checks
// are left out).
void BM_ManifestParse(benchmark::State& state, coremap::ManifestFormat format) {
  coremap::ItemBatch batch;
  coremap::Json item;
  std::uint64_t bytes = 0;
  for (auto _ : state) {
    coremap::ManifestReader manifest(paths_manifest(format));
    while (manifest.next_batch(batch, 4096, 1 << 20)) {
      for (const auto& raw : batch.items) {
        const std::string_view text = batch.text(raw);
        if (format == coremap::ManifestFormat::lines) {
          if (!item.is_object()) item = coremap::Json::object({{"path", std::string()}});
          item["path"].get_ref<std::string&>().assign(text);
        } else {
          item = coremap::Json::parse(text.begin(), text.end());
        }
        benchmark::DoNotOptimize(item);
      }
    }
    bytes = manifest.bytes_read();
  }
  set_per_item_counters(state, item_count);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
}

// --- One plugin call ---

std::vector<coremap::Json> call_items(bool objects) {
  std::vector<coremap::Json> items;
  for (int i = 0; i < 1000; ++i) {
    items.push_back(objects ? coremap::Json{{"i", i}, {"name", "item-" + std::to_string(i)}} : coremap::Json(i));
  }
  return items;
}

// PluginInstance::process on echo.so: through the descriptor's C-linkage function pointer
// into the library, its try/catch, and the result moved into `result`.
void BM_PluginCall(benchmark::State& state, bool objects) {
  const auto items = call_items(objects);
  coremap::PluginInstance echo(echo_plugin(), echo_plugin()->resolve_config(coremap::Json::object()));
  coremap::Json result;
  std::string error;
  for (auto _ : state) {
    for (std::size_t i = 0; i < items.size(); ++i) {
      coremap::Context context(i, nullptr);
      if (!echo.process(items[i], context, result, error)) state.SkipWithError(error.c_str());
      benchmark::DoNotOptimize(result);
    }
  }
  set_per_item_counters(state, static_cast<std::int64_t>(items.size()));
}

// What echo's process() does, called directly (not inlined, as a call into another library
// cannot be): the difference from BM_PluginCall is the plugin boundary.
[[gnu::noinline]] coremap::Json echo_direct(const coremap::Json& item) { return item; }

void BM_DirectCall(benchmark::State& state, bool objects) {
  const auto items = call_items(objects);
  coremap::Json result;
  for (auto _ : state) {
    for (const auto& item : items) {
      result = echo_direct(item);
      benchmark::DoNotOptimize(result);
    }
  }
  set_per_item_counters(state, static_cast<std::int64_t>(items.size()));
}

// Engine runs use several threads, so they are timed on the wall clock (UseRealTime); the
// one-thread benchmarks below keep Google Benchmark's default, the calling thread's CPU time
// (reads included), which another process on the same cores disturbs less.
BENCHMARK(BM_StreamSerial)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_StreamThreads)->Arg(1)->Arg(all_threads)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_StreamUnordered)->Arg(1)->Arg(all_threads)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_StreamPipeline)
    ->ArgNames({"threads", "stages"})
    ->ArgsProduct({{1, all_threads}, {2, 3}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_StreamIsolated)->Arg(1)->Arg(all_threads)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MapInMemory)->Arg(1)->Arg(all_threads)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TypedSerial)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TbbParallelForEach)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TypedMap)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TypedMapOrdered)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_ManifestCut, events, manifest_path())->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ManifestCut, jsonl, paths_manifest(coremap::ManifestFormat::jsonl))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ManifestCut, lines, paths_manifest(coremap::ManifestFormat::lines))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ManifestParse, jsonl, coremap::ManifestFormat::jsonl)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ManifestParse, lines, coremap::ManifestFormat::lines)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PluginCall, object, true);
BENCHMARK_CAPTURE(BM_PluginCall, number, false);
BENCHMARK_CAPTURE(BM_DirectCall, object, true);
BENCHMARK_CAPTURE(BM_DirectCall, number, false);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::remove(manifest_path().c_str());
  std::remove(paths_manifest(coremap::ManifestFormat::lines).c_str());
  std::remove(paths_manifest(coremap::ManifestFormat::jsonl).c_str());
  return 0;
}
