// SPDX-License-Identifier: MIT
// Engine overhead per item: the bundled `echo` plugin (returns its item) over small JSON Lines
// items, so the figure is coremap's own cost: cutting, parsing, the plugin call through the
// shared library, serialising, ordering. Run: build/bin/engine_bench (see docs/performance.md).
#include <coremap/coremap.hpp>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include <benchmark/benchmark.h>
#include <oneapi/tbb/info.h>

namespace {

constexpr int item_count = 200'000;

const std::string& manifest_path() {
  static const std::string path = [] {
    std::string p = "/tmp/coremap-bench-" + std::to_string(::getpid()) + ".jsonl";
    std::ofstream out(p);
    for (int i = 0; i < item_count; ++i) out << "{\"i\":" << i << ",\"name\":\"item-" << i << "\"}\n";
    return p;
  }();
  return path;
}

const std::shared_ptr<const coremap::Plugin>& echo_plugin() {
  static const auto plugin = coremap::Plugin::load(std::string(COREMAP_BUNDLED_PLUGIN_DIR) + "/echo.so");
  return plugin;
}

void run_stream(benchmark::State& state, coremap::RunOptions options) {
  coremap::Engine engine(echo_plugin(), coremap::Json::object(), options);
  std::uint64_t bytes = 0;
  coremap::CallbackSink sink([&](std::string_view records) { bytes += records.size(); });
  for (auto _ : state) {
    coremap::ManifestReader manifest(manifest_path());
    const auto stats = engine.run(manifest, sink);
    if (stats.ok != item_count) state.SkipWithError("items failed");
  }
  state.SetItemsProcessed(state.iterations() * item_count);
  state.counters["ns_per_item"] = benchmark::Counter(
      static_cast<double>(state.iterations() * item_count), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  benchmark::DoNotOptimize(bytes);
}

void BM_StreamSerial(benchmark::State& state) { run_stream(state, {.serial = true}); }
void BM_StreamThreads(benchmark::State& state) {
  run_stream(state, {.threads = static_cast<std::size_t>(state.range(0))});
}

// The same run with the plugin in coremap-worker processes (--isolate): the difference from
// BM_StreamThreads is the isolation overhead per item (docs/performance.md, docs/reliability.md).
void BM_StreamIsolated(benchmark::State& state) {
  run_stream(state, {.threads = static_cast<std::size_t>(state.range(0)), .isolate = true});
}

void BM_MapInMemory(benchmark::State& state) {
  std::vector<coremap::Json> items;
  for (int i = 0; i < item_count; ++i) items.push_back({{"i", i}, {"name", "item-" + std::to_string(i)}});
  coremap::Engine engine(echo_plugin(), coremap::Json::object(),
                         {.threads = static_cast<std::size_t>(state.range(0))});
  for (auto _ : state) benchmark::DoNotOptimize(engine.map(items));
  state.SetItemsProcessed(state.iterations() * item_count);
}

void BM_ManifestCut(benchmark::State& state) {
  coremap::ItemBatch batch;
  std::uint64_t bytes = 0;
  for (auto _ : state) {
    coremap::ManifestReader manifest(manifest_path());
    while (manifest.next_batch(batch, 4096, 1 << 20)) benchmark::DoNotOptimize(batch.items.data());
    bytes = manifest.bytes_read();
  }
  state.SetItemsProcessed(state.iterations() * item_count);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
}

const int all_threads = tbb::info::default_concurrency();

BENCHMARK(BM_StreamSerial)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_StreamThreads)->Arg(1)->Arg(all_threads)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_StreamIsolated)->Arg(1)->Arg(all_threads)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MapInMemory)->Arg(1)->Arg(all_threads)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ManifestCut)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::remove(manifest_path().c_str());
  return 0;
}
