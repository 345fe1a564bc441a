// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Typed map: a callable over any random-access range in memory, on all cores, with no JSON in
/// the way, keeping what the engine adds over a bare tbb::parallel_for_each: an exception from
/// one item becomes that item's error (with its index) and costs the others nothing, results
/// are handed to a callback in index order or as they finish, and the run reports progress,
/// can be cancelled, stops after `max_errors` failures and retries failed items.
///
/// \code
/// std::vector<Event> events = load();
/// std::vector<Summary> out(events.size());
/// coremap::MapReport report = coremap::map_into(events, out, [](const Event& e) { return summarise(e); });
/// for (const coremap::MapError& error : report.errors) std::cerr << error.index << ": " << error.message << '\n';
/// \endcode
///
/// The loop over items is a template instantiated in the caller's code (the callable is
/// inlined); the library runs the items in chunks (one indirect call per chunk, never per
/// item) and owns chunking, stopping, progress and delivery, the same core Engine::map runs
/// on. The framework allocates nothing per item: map_into() writes each result in place,
/// map() keeps one buffer per chunk until it is delivered. An error allocates its message.
///
/// Options: the engine's RunOptions. Of them a typed map uses threads, serial, ordered,
/// max_errors, retries, cancel, on_progress, progress_interval and grain; it throws UsageError
/// (naming them) when any other is set, since it would not honour it: max_in_flight,
/// reorder_budget_bytes, timeout, skip, isolate, memory_limit_bytes, worker_launcher, measure,
/// cache, save_states, on_checkpoint, resume_states.
///
/// Thread safety: the callable runs on several threads at once (on one only with `serial`),
/// each item once per attempt; results and errors are handed over from one thread at a time.
/// Items and output must not be changed by anyone else while the call runs. map() and
/// map_into() block the calling thread, which takes part in the work.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <coremap/engine.hpp>
#include <coremap/error.hpp>
#include <coremap/export.hpp>
#include <coremap/plugin.hpp>
#include <coremap/progress.hpp>

namespace coremap {

/// One item whose callable threw on its last attempt.
struct MapError {
  std::uint64_t index = 0;     ///< 0-based position of the item in the range
  std::string message;         ///< the exception's what(), or its type when not a std::exception
  std::uint32_t attempts = 1;  ///< calls made (1 + retries used)
};

/// A half-open range of item indices [begin, end).
struct IndexRange {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

/// What a map did.
///
/// Every item ends in exactly one of three states: a result (written or handed over), an
/// error in `errors`, or, when the run was stopped (cancellation, `max_errors`), not run: in
/// `not_run`, with no result and no error (an item the stop cut short while it ran is not run
/// too; its outcome is discarded). `stats.items` counts results and errors, `stats.failed`
/// the errors, `stats.not_run` the rest; `stats.stopped` says why a run stopped.
struct MapReport {
  RunStats stats;
  std::vector<MapError> errors;     ///< in index order
  std::vector<IndexRange> not_run;  ///< in index order, disjoint, not adjacent
  /// True when every item has a result.
  bool ok() const noexcept { return errors.empty() && not_run.empty(); }
};

namespace detail {

/// One chunk of a map: items [begin, end). Filled by the chunk's runner: `done` items from
/// `begin` have an outcome (a result or an error in `errors`), the rest were not run.
struct MapChunk {
  std::size_t number = 0;  ///< position among the chunks
  std::size_t begin = 0;
  std::size_t end = 0;
  std::size_t done = 0;
  std::vector<MapError> errors;  ///< in index order
};

/// The stop state and counters one map run shares between its threads.
///
/// Thread safety: every member may be called from any thread during the run.
class COREMAP_EXPORT MapControl {
 public:
  /// `stop`, `reason` and `progress` outlive the control; `cancel` may be null.
  MapControl(std::atomic<bool>& stop, std::atomic<StopReason>& reason, Progress& progress, std::uint64_t max_errors,
             const CancellationToken* cancel) noexcept
      : stop_(stop), reason_(reason), progress_(progress), max_errors_(max_errors), cancel_(cancel) {}

  /// Turns a cancelled token into a stop; true once the run is stopping.
  bool should_stop() noexcept {
    if (cancel_ != nullptr && cancel_->cancelled()) stop_with(StopReason::cancelled);
    return stop_.load(std::memory_order_relaxed);
  }
  /// True once the run is stopping (Context::cancelled() reads this flag).
  const std::atomic<bool>& stop_flag() const noexcept { return stop_; }
  void stop_with(StopReason reason) noexcept;
  /// Counts a failed item; stops the run when it reaches `max_errors`.
  void note_failure() noexcept;
  Progress& progress() noexcept { return progress_; }
  /// Why the run stopped (none while it goes on).
  StopReason reason() const noexcept { return reason_.load(); }

 private:
  std::atomic<bool>& stop_;
  std::atomic<StopReason>& reason_;
  Progress& progress_;
  std::uint64_t max_errors_;
  const CancellationToken* cancel_;
};

/// The items of one chunk, through `step(index, error, attempts)`, which runs one item and
/// returns whether it succeeded (else the message is in `error`). An item is not started once
/// the run is stopping, and one the stop overtook while it ran has no outcome (its result, if
/// written, is not counted), so a stop never leaves half-known items; a failure is recorded
/// before it is counted against `max_errors`, so the one that reaches the limit is kept.
template <class Step>
void run_chunk_items(MapControl& control, MapChunk& chunk, Step&& step) {
  std::string error;
  std::uint32_t attempts = 1;
  for (std::size_t i = chunk.begin; i < chunk.end; ++i) {
    if (control.should_stop()) return;
    const bool ok = step(i, error, attempts);
    if (control.should_stop()) return;
    if (!ok) {
      chunk.errors.push_back(MapError{i, std::move(error), attempts});
      error.clear();
      control.note_failure();
    }
    ++chunk.done;
  }
}

/// A map run as the library sees it: `count` items in chunks, each run by `run_chunk` and,
/// when `deliver` is set, handed to it (never from two threads at once; in chunk order when
/// `ordered`). Neither may let an exception out except to abort the run (it is rethrown by
/// run_map once the threads are done).
struct MapJob {
  std::size_t count = 0;
  std::size_t threads = 1;  ///< resolved: at least 1
  bool serial = false;
  bool ordered = true;
  std::size_t grain = 1;  ///< items per chunk (map_grain)
  const ProgressCallback* on_progress = nullptr;
  std::chrono::milliseconds progress_interval{200};
  void* user = nullptr;
  void (*run_chunk)(void* user, MapControl& control, MapChunk& chunk) = nullptr;
  void (*deliver)(void* user, MapChunk& chunk) = nullptr;
};

/// Runs `job`: the chunks on `job.threads` threads (in a task arena of that width), progress,
/// delivery; returns the report with stats.items, ok, failed, not_run, threads, wall_seconds,
/// stopped set (summaries and stages are the caller's). Sets progress.total_items and done.
COREMAP_EXPORT MapReport run_map(const MapJob& job, MapControl& control);

/// The thread count `threads` means: 1 when `serial`; for 0, the calling thread's arena's
/// (tbb::this_task_arena::max_concurrency()); capped by the active tbb::global_control. Throws
/// UsageError for more than max_threads.
COREMAP_EXPORT std::size_t map_threads(std::size_t threads, bool serial);

/// Throws UsageError naming the fields of `options` a typed map does not use when any is set
/// (see the file's comment).
COREMAP_EXPORT void check_typed_map_options(const RunOptions& options);

/// Items per chunk: `grain` when not 0, else about 64 chunks per thread, 1 to 2048 items each.
COREMAP_EXPORT std::size_t map_grain(std::size_t count, std::size_t threads, std::size_t grain) noexcept;

/// Calls `function` on one item, retrying a throw up to `retries` times unless the run is
/// stopping; the result goes to `sink(value)`. False with the message in `error` when the last
/// attempt threw.
template <class Function, class Item, class Sink>
bool call_item(Function& function, Item&& item, std::size_t index, MapControl& control, std::uint32_t retries,
               Sink&& sink, std::string& error, std::uint32_t& attempts) {
  for (attempts = 1;; ++attempts) {
    try {
      if constexpr (std::is_invocable_v<Function&, Item, Context&>) {
        Context context(index, &control.stop_flag(), 0, attempts);
        sink(std::invoke(function, std::forward<Item>(item), context));
      } else {
        sink(std::invoke(function, std::forward<Item>(item)));
      }
      return true;
    } catch (...) {
      describe_current_exception(error);
    }
    if (attempts > retries || control.stop_flag().load(std::memory_order_relaxed)) return false;
  }
}

/// What a typed map needs of its own: the stop flag, its reason and the counters.
struct MapState {
  std::atomic<bool> stop{false};
  std::atomic<StopReason> reason{StopReason::none};
  Progress progress;
};

template <class Items>
using map_item_t = std::ranges::range_reference_t<Items>;

template <class Function, class Item, bool = std::is_invocable_v<Function&, Item, Context&>>
struct MapResultOf {
  using type = std::remove_cvref_t<std::invoke_result_t<Function&, Item>>;
};
template <class Function, class Item>
struct MapResultOf<Function, Item, true> {
  using type = std::remove_cvref_t<std::invoke_result_t<Function&, Item, Context&>>;
};
template <class Function, class Items>
using map_result_t = typename MapResultOf<std::remove_reference_t<Function>, map_item_t<Items>>::type;

inline MapJob make_map_job(std::size_t count, const RunOptions& options) {
  check_typed_map_options(options);
  MapJob job;
  job.count = count;
  job.threads = map_threads(options.threads, options.serial);
  job.serial = options.serial;
  job.ordered = options.ordered;
  job.grain = map_grain(count, job.threads, options.grain);
  job.on_progress = options.on_progress ? &options.on_progress : nullptr;
  job.progress_interval = options.progress_interval;
  return job;
}

}  // namespace detail

/// Maps `function` over `items`, writing the result of item i to `out[i]` in place; returns
/// what happened to every item. `function` takes an item (`range_reference_t<Items>`) and
/// optionally a `coremap::Context&` (index(), attempt(), cancelled()); Context::emit and
/// drop throw (one result per item). An exception it throws is that item's error, retried
/// `options.retries` times. Only a call that returns writes `out[i]`: an item in
/// MapReport::errors leaves it untouched, and one in MapReport::not_run may or may not have
/// written it (a stop that overtakes a call discards its outcome, not the write).
/// `out` is a random-access range with at least `items.size()` elements; `options.ordered`
/// does not apply (nothing is handed over). Throws UsageError when `out` is too short.
template <std::ranges::random_access_range Items, std::ranges::random_access_range Out, class Function>
  requires std::ranges::sized_range<Items> && std::ranges::sized_range<Out>
MapReport map_into(Items&& items, Out&& out, Function&& function, const RunOptions& options = {}) {
  const std::size_t count = static_cast<std::size_t>(std::ranges::size(items));
  if (static_cast<std::size_t>(std::ranges::size(out)) < count) {
    throw UsageError("coremap::map_into: the output range holds " + std::to_string(std::ranges::size(out)) +
                     " elements, fewer than the " + std::to_string(count) + " items");
  }
  struct User {
    decltype(std::ranges::begin(items)) first;
    decltype(std::ranges::begin(out)) to;
    Function& function;
    std::uint32_t retries;
  } user{std::ranges::begin(items), std::ranges::begin(out), function, options.retries};
  detail::MapState state;
  detail::MapControl control(state.stop, state.reason, state.progress, options.max_errors, &options.cancel);
  detail::MapJob job = detail::make_map_job(count, options);
  job.user = &user;
  job.run_chunk = [](void* raw, detail::MapControl& run, detail::MapChunk& chunk) {
    User& u = *static_cast<User*>(raw);
    detail::run_chunk_items(run, chunk, [&](std::size_t i, std::string& error, std::uint32_t& attempts) {
      const auto diff = static_cast<std::iter_difference_t<decltype(u.first)>>(i);
      return detail::call_item(
          u.function, u.first[diff], i, run, u.retries,
          [&](auto&& value) { u.to[static_cast<std::iter_difference_t<decltype(u.to)>>(i)] = std::forward<decltype(value)>(value); },
          error, attempts);
    });
  };
  return detail::run_map(job, control);
}

/// Maps `function` over `items` and hands each outcome to `on_result`, never from two threads
/// at once: in index order when `options.ordered` (a chunk waits for the chunks before it),
/// else as chunks finish (in index order within a chunk). `on_result(index, R&& value)` gets
/// each result (R is what `function` returns, decayed); when `on_result` is also invocable
/// with `const MapError&` it gets each error there too, in the same order. Errors are in the
/// report either way. Items a stop left unrun are not handed over. An exception from
/// `on_result` stops the run and is rethrown once the threads are done. The results of a
/// chunk wait in one buffer of the chunk's size until it is handed over.
template <std::ranges::random_access_range Items, class Function, class OnResult>
  requires std::ranges::sized_range<Items>
MapReport map(Items&& items, Function&& function, OnResult&& on_result, const RunOptions& options = {}) {
  using Result = detail::map_result_t<Function, Items>;
  static_assert(!std::is_void_v<Result>, "coremap::map: the function must return a value for on_result");
  const std::size_t count = static_cast<std::size_t>(std::ranges::size(items));
  detail::MapJob job = detail::make_map_job(count, options);
  struct User {
    decltype(std::ranges::begin(items)) first;
    Function& function;
    OnResult& on_result;
    std::uint32_t retries;
    // One buffer per chunk, made when it runs and freed when it is handed over.
    std::vector<std::unique_ptr<std::optional<Result>[]>> buffers;
  } user{std::ranges::begin(items), function, on_result, options.retries, {}};
  detail::MapState state;
  detail::MapControl control(state.stop, state.reason, state.progress, options.max_errors, &options.cancel);
  job.user = &user;
  job.run_chunk = [](void* raw, detail::MapControl& run, detail::MapChunk& chunk) {
    User& u = *static_cast<User*>(raw);
    auto buffer = std::make_unique<std::optional<Result>[]>(chunk.end - chunk.begin);
    std::optional<Result>* const slots = buffer.get();
    detail::run_chunk_items(run, chunk, [&](std::size_t i, std::string& error, std::uint32_t& attempts) {
      const auto diff = static_cast<std::iter_difference_t<decltype(u.first)>>(i);
      return detail::call_item(
          u.function, u.first[diff], i, run, u.retries,
          [&](auto&& value) { slots[i - chunk.begin].emplace(std::forward<decltype(value)>(value)); }, error,
          attempts);
    });
    u.buffers[chunk.number] = std::move(buffer);
  };
  job.deliver = [](void* raw, detail::MapChunk& chunk) {
    User& u = *static_cast<User*>(raw);
    const std::unique_ptr<std::optional<Result>[]> buffer = std::move(u.buffers[chunk.number]);
    if (!buffer) return;  // not run
    auto error = chunk.errors.begin();
    for (std::size_t i = chunk.begin; i < chunk.begin + chunk.done; ++i) {
      std::optional<Result>& slot = buffer[i - chunk.begin];
      if (slot.has_value()) {
        u.on_result(i, std::move(*slot));
      } else {
        if constexpr (std::is_invocable_v<OnResult&, const MapError&>) u.on_result(std::as_const(*error));
        ++error;
      }
    }
  };
  user.buffers.resize((count + job.grain - 1) / job.grain);
  return detail::run_map(job, control);
}

}  // namespace coremap
