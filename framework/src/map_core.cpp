// SPDX-License-Identifier: MIT
// The non-template core of every map over items in memory (coremap::map, map_into and
// Engine::map): cuts the items into chunks, runs them on a task arena's threads with one
// indirect call per chunk, counts progress, stops, and hands finished chunks over, in order
// or as they finish. The per-item loops are templates in coremap/map.hpp.
#include <coremap/map.hpp>

#include <coremap/error.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>

#include "ordered_delivery.hpp"
#include "run_arena.hpp"
#include "tsan_handoff.hpp"

namespace coremap::detail {
namespace {

using Clock = std::chrono::steady_clock;

// Enough chunks per thread that the last ones balance the threads, few enough that the cost
// of one (a task, a progress update, a hand-over) stays well under 1 % of its work for items
// of a microsecond or more.
constexpr std::size_t chunks_per_thread = 64;
constexpr std::size_t max_grain = 2048;

}  // namespace

void MapControl::stop_with(StopReason reason) noexcept {
  StopReason expected = StopReason::none;
  reason_.compare_exchange_strong(expected, reason);
  stop_.store(true, std::memory_order_relaxed);
}

void MapControl::note_failure() noexcept {
  const std::uint64_t failed = progress_.failed.fetch_add(1, std::memory_order_relaxed) + 1;
  if (max_errors_ != 0 && failed >= max_errors_) stop_with(StopReason::max_errors);
}

}  // namespace coremap::detail

namespace coremap {

std::string thread_count_error(std::string_view count) {
  std::size_t threads = 0;
  const auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), threads);
  if (ec == std::errc() && end == count.data() + count.size() && threads >= 1 && threads <= max_threads) return {};
  return "the thread count must be 1 to " + std::to_string(max_threads) + ", not " + std::string(count);
}

}  // namespace coremap

namespace coremap::detail {

std::size_t map_threads(std::size_t threads, bool serial) {
  if (serial) return 1;
  if (threads != 0) {
    if (std::string error = thread_count_error(std::to_string(threads)); !error.empty()) {
      throw UsageError("threads: " + error);
    }
  }
  // 0: what the calling thread's arena allows (the whole machine unless the application runs
  // us inside a task_arena of its own), capped like the run's own arena will be.
  return RunArena::parallelism(threads != 0 ? threads
                                            : static_cast<std::size_t>(tbb::this_task_arena::max_concurrency()));
}

void check_typed_map_options(const RunOptions& options) {
  std::string unused;
  const auto note = [&unused](bool set, const char* name) {
    if (set) unused += unused.empty() ? name : std::string(", ") + name;
  };
  note(options.max_in_flight != 0, "max_in_flight");
  note(options.reorder_budget_bytes != 0, "reorder_budget_bytes");
  note(options.timeout.count() != 0, "timeout");
  note(options.skip != nullptr, "skip");
  note(options.isolate, "isolate");
  note(options.memory_limit_bytes != 0, "memory_limit_bytes");
  note(static_cast<bool>(options.worker_launcher), "worker_launcher");
  note(options.measure, "measure");
  note(!options.cache.directory.empty(), "cache");
  note(options.save_states, "save_states");
  note(static_cast<bool>(options.on_checkpoint), "on_checkpoint");
  note(!options.resume_states.is_null(), "resume_states");
  if (!unused.empty()) {
    throw UsageError("coremap::map: RunOptions " + unused +
                     " do not apply to a typed map (it uses threads, serial, ordered, max_errors, retries, cancel, "
                     "on_progress, progress_interval and grain); leave them at their defaults");
  }
}

std::size_t map_grain(std::size_t count, std::size_t threads, std::size_t grain) noexcept {
  if (grain != 0) return grain;
  return std::clamp<std::size_t>(count / (std::max<std::size_t>(threads, 1) * chunks_per_thread), 1, max_grain);
}

MapReport run_map(const MapJob& job, MapControl& control) {
  const auto start = Clock::now();
  Progress& progress = control.progress();
  progress.total_items.store(job.count, std::memory_order_relaxed);
  const std::size_t grain = std::max<std::size_t>(job.grain, 1);
  const std::size_t count = (job.count + grain - 1) / grain;
  std::vector<MapChunk> chunks(count);
  for (std::size_t c = 0; c < count; ++c) {
    chunks[c].number = c;
    chunks[c].begin = c * grain;
    chunks[c].end = std::min(job.count, (c + 1) * grain);
  }
  ProgressReporter reporter(progress, job.on_progress != nullptr ? *job.on_progress : ProgressCallback{},
                            job.progress_interval);

  // Ordered hand-over: chunk numbers in, delivered in number order as each and every one
  // before it are finished.
  OrderedDelivery<std::size_t> sequencer(0, std::max<std::size_t>(64, 4 * job.threads));
  std::mutex deliver_mutex;  // unordered hand-over, one chunk at a time
  std::atomic<bool> broken{false};  // a hand-over threw: nothing more is handed over
  auto deliver = [&](std::size_t c) {
    if (broken.load(std::memory_order_relaxed)) return;
    try {
      job.deliver(job.user, chunks[c]);
    } catch (...) {
      broken.store(true, std::memory_order_relaxed);
      control.stop_with(StopReason::cancelled);
      throw;
    }
  };
  auto one = [&](MapChunk& chunk) {
    if (!control.should_stop()) job.run_chunk(job.user, control, chunk);
    progress.done.fetch_add(chunk.done, std::memory_order_relaxed);
    if (job.deliver == nullptr) return;
    if (job.ordered) {
      sequencer.put_and_drain(chunk.number, chunk.number, [&](std::size_t c) { deliver(c); });
    } else {
      std::lock_guard lock(deliver_mutex);
      deliver(chunk.number);
    }
  };

  std::size_t threads = 1;  // what the run could use at once
  if (job.serial) {
    for (MapChunk& chunk : chunks) one(chunk);
  } else {
    RunArena arena(job.threads);
    threads = arena.concurrency();
    // The arena's threads read the closures below where this thread built them.
    handed_over(&run_start_key);
    // What the bodies did happens before what this thread does next, also when a body threw
    // (a throwing receiver): the exception leaves arena.execute() through this guard.
    struct RunEnd {
      ~RunEnd() { taken_over(&run_end_key); }
    } run_end;
    arena.execute([&] {
      TbbBody setup(&run_start_key);
      // One task per chunk, in chunk order as far as the threads allow (simple_partitioner
      // with grain 1 splits down to single chunks): ordered hand-over then rarely waits.
      tbb::parallel_for(
          tbb::blocked_range<std::size_t>(0, count, 1),
          [&](const tbb::blocked_range<std::size_t>& range) {
            // The setup first: `chunks` (read to name each body's input) was built by the
            // calling thread.
            taken_over(&run_start_key);
            for (std::size_t c = range.begin(); c != range.end(); ++c) {
              TbbBody body(&chunks[c]);
              one(chunks[c]);
            }
          },
          tbb::simple_partitioner());
    });
  }

  MapReport report;
  std::uint64_t done = 0;
  for (MapChunk& chunk : chunks) {
    done += chunk.done;
    for (MapError& error : chunk.errors) report.errors.push_back(std::move(error));
    if (chunk.begin + chunk.done == chunk.end) continue;
    const std::uint64_t from = chunk.begin + chunk.done;
    if (!report.not_run.empty() && report.not_run.back().end == from) {
      report.not_run.back().end = chunk.end;
    } else {
      report.not_run.push_back(IndexRange{from, chunk.end});
    }
  }
  reporter.stop();  // its last call has the final counters
  RunStats& stats = report.stats;
  stats.threads = threads;
  stats.items = stats.records = done;
  stats.failed = report.errors.size();
  stats.ok = done - stats.failed;
  stats.not_run = job.count - done;
  stats.stopped = control.reason();
  stats.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  // The progress callback threw: the run went on to its end; the application hears of it now.
  if (const std::exception_ptr error = reporter.error()) std::rethrow_exception(error);
  return report;
}

}  // namespace coremap::detail
