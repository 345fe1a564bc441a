// SPDX-License-Identifier: MIT
#pragma once

// Engine::Impl: one engine's stages and options and the state of its current run (the stop
// flag, progress, the measured time per item), with the one per-item path every way in ends in
// (run_item, below). Its members are defined by unit:
//   engine.cpp        setup, run bookkeeping, the streamed run (graph wiring and the serial loop)
//   stage_runner.cpp  a stage over a batch: parse, run_item, hand values on, write records
//   map.cpp           items already in memory (Engine::map)

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <coremap/engine.hpp>
#include <coremap/error.hpp>
#include <coremap/latency_histogram.hpp>
#include <coremap/map.hpp>
#include <coremap/record.hpp>

#include "batch.hpp"
#include "run_arena.hpp"
#include "result_cache.hpp"
#include "stage_runtime.hpp"
#include "tsan_handoff.hpp"
#include "worker_process.hpp"

namespace coremap {
namespace detail {

// Collects what one process() call emits (Context::emit, Context::drop).
struct CallEmitter final : Emitter {
  explicit CallEmitter(std::vector<Json>& out) : Emitter{&take}, values(out) {}
  void reset() noexcept {
    values.clear();
    used = false;
  }
  static void take(Emitter* self, Json* value) {
    auto& emitter = *static_cast<CallEmitter*>(self);
    emitter.used = true;
    if (value != nullptr) emitter.values.push_back(std::move(*value));
  }
  std::vector<Json>& values;
  bool used = false;
};

}  // namespace detail

struct Engine::Impl {
  using Clock = std::chrono::steady_clock;
  using Batch = detail::Batch;
  using Value = detail::Value;
  using StageRuntime = detail::StageRuntime;
  using CallEmitter = detail::CallEmitter;
  using BatchPool = detail::BatchPool;

  std::vector<std::unique_ptr<StageRuntime>> stages;
  RunOptions options;
  std::size_t threads;
  std::size_t pipeline_in_flight;
  // Read for every item: kept off the cache lines the per-batch counters below write.
  alignas(64) std::atomic<bool> stop{false};
  std::atomic<StopReason> stop_reason{StopReason::none};
  alignas(64) Progress progress;
  alignas(64) std::atomic<std::uint64_t> per_item_ns{0};
  // Whether a stage runs in worker processes (StageRuntime::workers): batches are then sized
  // for a worker's round trip.
  bool isolated_stages = false;
  // With options.cache: the store, how many first stages it covers (0: none, and no store),
  // and why the others are not cached.
  std::unique_ptr<detail::ResultCache> cache;
  std::size_t cached_stages = 0;
  std::string cache_note;

  // Checkpoints (RunOptions::on_checkpoint): the index after the last item cut from the
  // manifest, whether the input stopped cutting because one is due (the graph then drains and
  // run_stream takes it), when the next is due, and the items the last one covered.
  std::uint64_t items_cut = 0;
  bool checkpoint_pending = false;
  Clock::time_point checkpoint_due{};
  std::uint64_t checkpointed_items = 0;

  Impl(Pipeline pipeline, RunOptions o);

  // Folds each reducing stage's instances into its carried state and hands the checkpoint to
  // RunOptions::on_checkpoint (nothing is in flight). `last`: the run reached the manifest's
  // end.
  void take_checkpoint(bool last);

  // run_stage for an isolated stage s (StageRuntime::workers): the batch's items (s == 0) or
  // values go to the calling thread's worker process, and what comes back (records, values,
  // errors, a reduction's partial states) is handed on as run_stage and run_values do.
  void run_stage_isolated(Batch& batch, std::size_t s, const std::string& manifest_name, ManifestFormat format);

  // Whether the run's own stop (an interrupt, --max-errors, the application's cancellation)
  // may have cut short the call that just returned: it then saw Context::cancelled() turn
  // true, or its retries were given up, so its outcome is not the item's own and the item
  // gets no record (a resumed run processes it). A stop that came after the call ended is
  // counted too; the item is then merely run again. Asked before note_failure(), so the
  // failure that reaches --max-errors is still recorded. A per-item --timeout is not a stop:
  // that outcome is the item's own (recorded as timed out).
  bool cut_short() noexcept { return should_stop(); }

  void note_failure() noexcept {
    const std::uint64_t failed = progress.failed.fetch_add(1, std::memory_order_relaxed) + 1;
    if (options.max_errors != 0 && failed >= options.max_errors) stop_with(StopReason::max_errors);
  }

  void stop_with(StopReason reason) noexcept {
    StopReason expected = StopReason::none;
    stop_reason.compare_exchange_strong(expected, reason);
    stop.store(true, std::memory_order_relaxed);
  }

  static std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
  }

  // The one per-item code path: every mode ends up here. Retries a failure up to
  // options.retries times (not once the run is stopping); `attempts` says how many calls it
  // took. `emitter` (null in Engine::map) collects what the call emits. The caller asks
  // cut_short() right after: an outcome that came back once the run was stopping is no record.
  bool run_item(PluginInstance& instance, std::uint64_t index, const Json& item, Json& result,
                std::string& error, std::uint32_t& attempts, CallEmitter* emitter) noexcept {
    const std::int64_t timeout_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(options.timeout).count();
    for (attempts = 1;; ++attempts) {
      if (emitter != nullptr) emitter->reset();
      const std::int64_t start = timeout_ns != 0 ? now_ns() : 0;
      Context context(index, &stop, timeout_ns != 0 ? start + timeout_ns : 0, attempts, emitter);
      error.clear();
      bool ok = instance.process(item, context, result, error);
      if (timeout_ns != 0) {
        if (const std::int64_t took = now_ns() - start; took >= timeout_ns) {
          ok = false;
          error = timed_out_message(took);
        }
      }
      if (ok || attempts > options.retries || stop.load(std::memory_order_relaxed)) return ok;
    }
  }

  // run_item, timed into `latency` when RunOptions::measure set it (null otherwise: one branch).
  bool run_item_measured(LatencyHistogram* latency, PluginInstance& instance, std::uint64_t index, const Json& item,
                         Json& result, std::string& error, std::uint32_t& attempts, CallEmitter* emitter) noexcept {
    if (latency == nullptr) return run_item(instance, index, item, result, error, attempts, emitter);
    const auto start = Clock::now();
    const bool ok = run_item(instance, index, item, result, error, attempts, emitter);
    latency->record(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count()));
    return ok;
  }

  // RunOptions::measure: merges each stage's per-thread histograms into stats.stages.
  void collect_stage_stats(RunStats& stats);

  std::string timed_out_message(std::int64_t took_ns) const;

  // Whether a stage's outputs are checked as they leave it (writable_result), not only when
  // written: in a pipeline, so that a value that cannot be written fails in the stage that made
  // it, its error naming that stage, and reaches no later stage (a reduction would count it);
  // and for Record callbacks, whose results are never serialised here. A one-stage run into a
  // Sink leaves the check to its RecordWriter.
  bool checks_values(const Batch& batch) const noexcept { return stages.size() > 1 || batch.as_records; }

  // One output of a stage: a record when the stage is the last, else the next stage's input.
  void output_ok(Batch& batch, bool last, std::uint64_t index, std::uint64_t line, bool fanned,
                 std::uint32_t attempts, Json& data);

  void output_error(Batch& batch, bool last, std::uint64_t index, std::uint64_t line, bool fanned,
                    std::uint32_t attempts, std::string message);

  // Runs stage `s` over a batch: the raw items for the first stage (parsed here, in parallel),
  // the previous stage's outputs otherwise.
  void run_stage(Batch& batch, std::size_t s, PluginInstance& instance, const std::string& manifest_name,
                 ManifestFormat format);

  static std::uint64_t elapsed_ns(Clock::time_point start) noexcept {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
  }

  // Stage s > 0 over the previous stage's outputs [first, end): its own outputs are appended to
  // `out` as values (records are written by finish_stage). Chunks of one batch may run on
  // several threads at once, each with its own instance and its own `out`.
  void run_values(Batch& batch, std::size_t s, PluginInstance& instance, std::size_t first, std::size_t end,
                  std::vector<Value>& out, const std::string& manifest_name);

  // RunOptions::cache, after the last cached stage s > 0 ran over a batch: stores the
  // outcomes of the batch's items that were run (batch.cache_pending) from its outputs.
  void store_cached(Batch& batch, std::size_t s);

  // After stage s > 0 ran over the whole batch (its outputs in batch.next): hands them to the
  // next stage, or, after the last stage, writes them as records in order.
  void finish_stage(Batch& batch, std::size_t s);

  // Whether stage s may spread one batch's values over several calls at once: a later stage
  // (its input may be many values fanned out of one item) whose concurrency is unlimited or
  // latency-bound. A serial or N-wide CPU stage takes a batch whole, so its limit holds.
  bool splits(std::size_t s) const noexcept {
    return s > 0 && !options.serial && (stages[s]->latency_bound || stages[s]->spec.concurrency.is_unlimited());
  }

  // Stage s over a batch's values in chunks on the arena's threads (splits(s)), each chunk with
  // the calling thread's instance; outputs joined in order.
  void run_stage_split(Batch& batch, std::size_t s, const std::string& manifest_name);

  static void join_chunks(Batch& batch, std::vector<std::vector<Value>>& outs);

  std::size_t next_batch_size() const noexcept;

  // Cuts the next batch, leaving out items an earlier run recorded (RunOptions::skip). False
  // at the manifest's end or when the run is stopping. Runs in the serial input stage.
  bool read_batch(BatchSource& manifest, Batch& batch, std::uint64_t& skipped);

  // The writer's bookkeeping for a finished batch (serial: one batch at a time).
  void account(const Batch& batch, RunStats& stats);

  // Feeds a batch's time per item into the cut stage's batch sizing, as soon as its last stage
  // is done: waiting until it is written would keep every batch behind a slow one at one item
  // (nothing written, nothing learned), each paying a whole batch's memory and overhead.
  // Batches finish on several threads at once; a lost update only delays the average.
  void learn_speed(const Batch& batch) noexcept;

  // Polled once per batch: turns the application's token into `stop` (Engine::map's chunks
  // poll it per item through detail::MapControl, on the same flag).
  bool should_stop() noexcept {
    if (options.cancel.cancelled()) stop_with(StopReason::cancelled);
    return stop.load(std::memory_order_relaxed);
  }

  template <class Deliver>
  RunStats run_stream(BatchSource& manifest, bool as_records, Deliver&& deliver);
  // Engine::map (map.cpp): the records go into `records` (one per item) when it is set, else
  // to `on_record` chunk by chunk; `report` gets the map core's report.
  RunStats map_items(std::span<const Json> items, Record* records, const RecordCallback* on_record,
                     MapReport& report);

  // Counters and timings to zero before a run (the stop flag stays: see EndOfRun).
  void reset_for_run();

  // Ends a run's stop, however the run ends (an exception included): a request_stop() is for
  // the run in progress, or for the next one when none is (Engine::request_stop). A request
  // racing with the end may lose its reason here; reset_for_run() gives a stop without one
  // the reason `cancelled` (only request_stop() sets one between runs).
  struct EndOfRun {
    Impl& impl;
    ~EndOfRun() {
      impl.stop.store(false);
      impl.stop_reason.store(StopReason::none);
    }
  };

  void summarize(RunStats& stats);

  // Runs `body` in the run's task arena; returns the threads it could use at once (RunArena).
  template <class F>
  std::size_t in_arena(F&& body) {
    detail::RunArena arena(threads);
    // The arena may run `body` on one of its own threads.
    detail::handed_over(&detail::run_start_key);
    arena.execute([&] {
      detail::TbbBody tbb_body(&detail::run_start_key);
      body();
    });
    detail::taken_over(&detail::run_end_key);
    return arena.concurrency();
  }
};

}  // namespace coremap
