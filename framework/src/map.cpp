// SPDX-License-Identifier: MIT
// Engine::map: items already in memory, through tbb::parallel_for_each (or a loop with
// --serial), each through run_item (engine_impl.hpp); records returned in index order or
// delivered through a callback.
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include <oneapi/tbb/parallel_for_each.h>

#include <coremap/engine.hpp>
#include <coremap/error.hpp>

#include "engine_impl.hpp"

namespace coremap {

template <class OnDone>
RunStats Engine::Impl::map_items(std::span<const Json> items, OnDone&& on_done) {
  if (stages.size() != 1) throw UsageError("Engine::map runs one stage; run a pipeline with Engine::run");
  if (workers) throw UsageError("Engine::map: isolate applies to manifest runs (Engine::run) only");
  StageRuntime& stage = *stages.front();
  reset_for_run();
  progress.total_items = items.size();
  const auto start = Clock::now();
  ProgressReporter reporter(progress, options.on_progress, options.progress_interval);

  // Items the stop left without a record: not started, or cut short (see cut_short()).
  std::atomic<std::uint64_t> not_run{0};
  auto one = [&](PluginInstance& instance, const Json& item) {
    Record record;
    record.index = static_cast<std::uint64_t>(&item - items.data());
    bool cut = should_stop();
    if (!cut) {
      LatencyHistogram* const latency = options.measure ? &stage.latency.local() : nullptr;
      record.ok = run_item_measured(latency, instance, record.index, item, record.result, record.error, record.attempts,
                                    nullptr);
      // The caller gets the result as a Json value: one that could not be written is an error.
      if (record.ok && !writable_result(record.result, record.error)) {
        record.ok = false;
        record.result = Json();
      }
      cut = cut_short();
    }
    if (cut) {
      not_run.fetch_add(1, std::memory_order_relaxed);
      on_done(std::move(record), false);
      return;
    }
    if (!record.ok) note_failure();
    on_done(std::move(record), true);
    progress.done.fetch_add(1, std::memory_order_relaxed);
  };

  if (options.serial) {
    for (const Json& item : items) one(*stage.primary, item);
  } else {
    in_arena([&] {
      auto body = [&](const Json& item) {
        detail::TbbBody tbb_body(&item);
        StageRuntime::Lease lease(stage);
        one(*lease, item);
      };
      // TBB's threads read `body` (taken by reference) where this thread built it.
      detail::handed_over(&detail::run_start_key);
      tbb::parallel_for_each(items.begin(), items.end(), body);
    });
  }
  reporter.stop();

  RunStats stats;
  stats.threads = threads;
  stats.not_run = not_run.load();
  stats.items = stats.records = items.size() - stats.not_run;
  stats.failed = progress.failed.load();
  stats.ok = stats.items - stats.failed;
  summarize(stats);
  stats.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  stats.stopped = stop_reason.load();
  if (options.measure) collect_stage_stats(stats);
  // The progress callback threw: the run went on to its end; the application hears of it now.
  if (const std::exception_ptr error = reporter.error()) std::rethrow_exception(error);
  return stats;
}

std::vector<Record> Engine::map(std::span<const Json> items, RunStats* stats) {
  std::vector<Record> records(items.size());
  // Written by one thread per slot; `recorded` says which slots hold a record.
  auto recorded = std::make_unique<bool[]>(items.size());
  const RunStats s = impl_->map_items(items, [&](Record&& record, bool kept) {
    recorded[record.index] = kept;
    if (kept) records[record.index] = std::move(record);
  });
  if (s.not_run != 0) {
    std::size_t kept = 0;
    for (std::size_t i = 0; i < records.size(); ++i) {
      if (recorded[i]) records[kept++] = std::move(records[i]);
    }
    records.resize(kept);
  }
  if (stats != nullptr) *stats = s;
  return records;
}
RunStats Engine::map(std::span<const Json> items, const RecordCallback& on_record) {
  if (!impl_->options.ordered) {
    std::mutex mutex;
    return impl_->map_items(items, [&](Record&& record, bool kept) {
      if (!kept) return;
      std::lock_guard lock(mutex);
      on_record(record);
    });
  }
  // In order, as soon as possible: a finished record waits only for those before it. Whoever
  // holds the mutex delivers the ready prefix; the re-check after unlocking catches a record
  // that became ready while the lock was held. An item the stop left unrun is ready with no
  // record to deliver.
  std::vector<Record> waiting(items.size());
  auto ready = std::make_unique<std::atomic<bool>[]>(items.size());
  auto kept = std::make_unique<bool[]>(items.size());
  std::atomic<std::size_t> next{0};
  std::mutex mutex;
  auto deliver_ready = [&] {
    for (;;) {
      std::unique_lock lock(mutex, std::try_to_lock);
      if (!lock.owns_lock()) return;
      std::size_t i = next.load(std::memory_order_relaxed);
      while (i < items.size() && ready[i].load(std::memory_order_acquire)) {
        if (kept[i]) on_record(waiting[i]);
        waiting[i] = Record{};
        ++i;
      }
      next.store(i, std::memory_order_relaxed);
      lock.unlock();
      if (i >= items.size() || !ready[i].load(std::memory_order_acquire)) return;
    }
  };
  const RunStats stats = impl_->map_items(items, [&](Record&& record, bool recorded) {
    const std::uint64_t index = record.index;
    kept[index] = recorded;
    waiting[index] = std::move(record);
    ready[index].store(true, std::memory_order_release);
    deliver_ready();
  });
  deliver_ready();
  return stats;
}

}  // namespace coremap
