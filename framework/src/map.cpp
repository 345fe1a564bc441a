// SPDX-License-Identifier: MIT
// Engine::map: items already in memory, on the map core (coremap/map.hpp, map_core.cpp) that
// the typed map runs on: chunks of items on the run's threads (or a loop with --serial), each
// chunk with one leased plugin instance, each item through run_item (engine_impl.hpp); records
// returned in index order or handed to a callback chunk by chunk.
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include <coremap/engine.hpp>
#include <coremap/error.hpp>
#include <coremap/map.hpp>

#include "engine_impl.hpp"

namespace coremap {

// Engine::map over the map core (coremap/map.hpp): chunks of items, each with one leased
// plugin instance, every item through run_item like a manifest's. The records go into
// `records` (one per item) when it is set, else into a buffer per chunk that `on_record` gets.
RunStats Engine::Impl::map_items(std::span<const Json> items, Record* records, const RecordCallback* on_record,
                                 MapReport& report) {
  if (stages.size() != 1) throw UsageError("Engine::map runs one stage; run a pipeline with Engine::run");
  if (isolated_stages) throw UsageError("Engine::map: isolate applies to manifest runs (Engine::run) only");
  if (!options.cache.directory.empty()) throw UsageError("Engine::map: the result cache applies to Engine::run only");
  const EndOfRun end_of_run{*this};
  reset_for_run();
  struct User {
    Impl& impl;
    StageRuntime& stage;
    std::span<const Json> items;
    Record* records;
    const RecordCallback* on_record;
    std::vector<std::unique_ptr<Record[]>> buffers;
  } user{*this, *stages.front(), items, records, on_record, {}};
  detail::MapControl control(stop, stop_reason, progress, options.max_errors, &options.cancel);
  detail::MapJob job;
  job.count = items.size();
  job.threads = threads;
  job.serial = options.serial;
  job.ordered = options.ordered;
  job.grain = detail::map_grain(items.size(), threads, options.grain);
  job.on_progress = options.on_progress ? &options.on_progress : nullptr;
  job.progress_interval = options.progress_interval;
  job.user = &user;
  job.run_chunk = [](void* raw, detail::MapControl& run, detail::MapChunk& chunk) {
    User& u = *static_cast<User*>(raw);
    Record* out = u.records != nullptr
                      ? u.records + chunk.begin
                      : (u.buffers[chunk.number] = std::make_unique<Record[]>(chunk.end - chunk.begin)).get();
    // The serial path keeps TBB out of the call: its one instance, no thread-local lookup.
    std::optional<StageRuntime::Lease> lease;
    if (!u.impl.options.serial) lease.emplace(u.stage);
    PluginInstance& instance = lease ? **lease : *u.stage.primary;
    LatencyHistogram* const latency = u.impl.options.measure ? &u.stage.latency.local() : nullptr;
    detail::run_chunk_items(run, chunk, [&](std::size_t i, std::string& error, std::uint32_t& attempts) {
      Record& record = out[i - chunk.begin];
      record.index = i;
      record.ok = u.impl.run_item_measured(latency, instance, i, u.items[i], record.result, record.error,
                                           record.attempts, nullptr);
      // The caller gets the result as a Json value: one that could not be written is an error.
      if (record.ok && !writable_result(record.result, record.error)) {
        record.ok = false;
        record.result = Json();
      }
      attempts = record.attempts;
      if (!record.ok) error = record.error;
      return record.ok;
    });
  };
  if (on_record != nullptr) {
    user.buffers.resize((items.size() + job.grain - 1) / job.grain);
    job.deliver = [](void* raw, detail::MapChunk& chunk) {
      User& u = *static_cast<User*>(raw);
      const std::unique_ptr<Record[]> buffer = std::move(u.buffers[chunk.number]);
      for (std::size_t i = 0; i < chunk.done; ++i) (*u.on_record)(buffer[i]);
    };
  }
  report = detail::run_map(job, control);
  RunStats stats = std::move(report.stats);
  summarize(stats);
  if (options.measure) collect_stage_stats(stats);
  return stats;
}

std::vector<Record> Engine::map(std::span<const Json> items, RunStats* stats) {
  std::vector<Record> records(items.size());
  MapReport report;
  RunStats s = impl("map").map_items(items, records.data(), nullptr, report);
  if (!report.not_run.empty()) {
    // Only the items with an outcome keep their record, still in index order. Never a record
    // moved onto itself: a self-move empties a std::string (the error of a failed item before
    // the first gap was lost so).
    std::size_t kept = 0;
    std::size_t from = 0;
    const auto keep = [&](std::size_t i) {
      if (kept != i) records[kept] = std::move(records[i]);
      ++kept;
    };
    for (const IndexRange& gap : report.not_run) {
      for (std::size_t i = from; i < gap.begin; ++i) keep(i);
      from = gap.end;
    }
    for (std::size_t i = from; i < records.size(); ++i) keep(i);
    records.resize(kept);
  }
  if (stats != nullptr) *stats = std::move(s);
  return records;
}

RunStats Engine::map(std::span<const Json> items, const RecordCallback& on_record) {
  MapReport report;
  return impl("map").map_items(items, nullptr, &on_record, report);
}

}  // namespace coremap
