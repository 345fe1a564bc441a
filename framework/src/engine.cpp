// SPDX-License-Identifier: MIT
#include <coremap/engine.hpp>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <optional>

#include <oneapi/tbb/concurrent_queue.h>
#include <oneapi/tbb/enumerable_thread_specific.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for_each.h>
#include <oneapi/tbb/parallel_pipeline.h>
#include <oneapi/tbb/task_arena.h>

#include <coremap/error.hpp>

#include "item_parser.hpp"
#include "worker_process.hpp"

namespace coremap {
namespace {

using Clock = std::chrono::steady_clock;

// A batch is sized to take about this long, so the pipeline's per-token cost stays a small
// fraction of the work while the last batches still balance across threads.
constexpr std::uint64_t batch_target_ns = 200'000;
// With isolate, each batch also pays a round trip to a worker process: two cross-process
// wake-ups, which on a virtual machine with idle cores cost up to ~100 us. Longer batches
// keep that a few percent of the work.
constexpr std::uint64_t isolated_batch_target_ns = 2'000'000;
constexpr std::size_t max_batch_items = 4096;
constexpr std::size_t max_batch_bytes = std::size_t{1} << 20;

// Items of a batch and their records. Batches travel between threads, so they hold no JSON
// values: memory allocated for an item is freed by the thread that allocated it (with glibc
// malloc, values left in a migrating batch made the no-op path scale 1.4x instead of 1.7x on
// two cores).
struct Batch {
  ItemBatch raw;
  std::string out;             // JSON Lines, for a Sink
  RecordWriter writer{out};
  std::vector<Record> records;  // or Record objects, for a RecordCallback
  bool as_records = false;
  std::uint64_t ok = 0;
  std::uint64_t failed = 0;
  std::uint64_t written = 0;

  bool emit_ok(std::uint64_t index, Json& result) {
    if (!as_records) return writer.ok(index, result);
    records.push_back(Record{index, true, std::move(result), {}});
    return true;
  }
  // A record an isolated worker wrote, as JSON Lines text.
  bool emit_record_line(std::uint64_t index, bool is_ok, std::string_view line) {
    if (!as_records) {
      out.append(line);
      return is_ok;
    }
    Json parsed = Json::parse(line);
    if (is_ok) {
      records.push_back(Record{index, true, std::move(parsed["result"]), {}});
    } else {
      records.push_back(Record{index, false, Json(), parsed["error"].get<std::string>()});
    }
    return is_ok;
  }
  void emit_error(std::uint64_t index, std::string message) {
    if (as_records) {
      records.push_back(Record{index, false, Json(), std::move(message)});
    } else {
      writer.error(index, message);
    }
  }
};

}  // namespace

struct Engine::Impl {
  std::shared_ptr<const Plugin> plugin;
  Json config;
  RunOptions options;
  std::size_t threads;
  // Read for every item: kept off the cache lines the per-batch counters below write.
  alignas(64) std::atomic<bool> stop{false};
  std::atomic<StopReason> stop_reason{StopReason::none};
  alignas(64) Progress progress;
  alignas(64) std::atomic<std::uint64_t> per_item_ns{0};

  // One instance per worker thread. `busy` catches the case where a plugin runs TBB work
  // itself and this thread, while waiting, picks up another of our items: that call gets an
  // instance of its own instead of re-entering the busy one.
  std::unique_ptr<PluginInstance> primary;
  struct Slot {
    PluginInstance* instance = nullptr;
    bool busy = false;
  };
  tbb::enumerable_thread_specific<Slot> slots;
  std::mutex instances_mutex;
  std::vector<std::unique_ptr<PluginInstance>> instances;
  std::vector<PluginInstance*> spare;
  // With options.isolate: the plugin runs in these worker processes instead (no instance here).
  std::unique_ptr<detail::WorkerPool> workers;

  Impl(std::shared_ptr<const Plugin> p, const Json& c, RunOptions o)
      : plugin(std::move(p)), config(plugin->resolve_config(c)), options(o) {
    const auto cores = static_cast<std::size_t>(tbb::info::default_concurrency());
    threads = options.serial ? 1 : (options.threads == 0 ? cores : options.threads);
    if (options.isolate) {
      workers = std::make_unique<detail::WorkerPool>(detail::worker_settings(*plugin, config, options));
    } else {
      detail::check_in_process_options(options);
      primary = std::make_unique<PluginInstance>(plugin, config);
    }
  }

  // Not on the per-item path: runs once per thread (or per nested call), under a mutex.
  PluginInstance* take_instance() {
    std::lock_guard lock(instances_mutex);
    if (plugin->reentrant()) return primary.get();
    if (!spare.empty()) {
      PluginInstance* instance = spare.back();
      spare.pop_back();
      return instance;
    }
    if (primary) {
      instances.push_back(std::move(primary));
      return instances.back().get();
    }
    instances.push_back(std::make_unique<PluginInstance>(plugin, config));
    return instances.back().get();
  }

  void give_back(PluginInstance* instance) {
    if (plugin->reentrant()) return;
    std::lock_guard lock(instances_mutex);
    spare.push_back(instance);
  }

  // A thread's instance for the duration of one batch or item.
  class Lease {
   public:
    explicit Lease(Impl& impl) : impl_(impl), slot_(&impl.slots.local()) {
      if (slot_->busy) {
        slot_ = nullptr;
        instance_ = impl_.take_instance();
        return;
      }
      if (slot_->instance == nullptr) slot_->instance = impl_.take_instance();
      slot_->busy = true;
      instance_ = slot_->instance;
    }
    ~Lease() {
      if (slot_ != nullptr) {
        slot_->busy = false;
      } else {
        impl_.give_back(instance_);
      }
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    PluginInstance& operator*() const noexcept { return *instance_; }

   private:
    Impl& impl_;
    Slot* slot_;
    PluginInstance* instance_ = nullptr;
  };

  void note_failure() noexcept {
    const std::uint64_t failed = progress.failed.fetch_add(1, std::memory_order_relaxed) + 1;
    if (options.max_errors != 0 && failed >= options.max_errors) stop_with(StopReason::max_errors);
  }

  void stop_with(StopReason reason) noexcept {
    StopReason expected = StopReason::none;
    stop_reason.compare_exchange_strong(expected, reason);
    stop.store(true, std::memory_order_relaxed);
  }

  // The one per-item code path: every mode ends up here.
  bool run_item(PluginInstance& instance, std::uint64_t index, const Json& item, Json& result,
                std::string& error) noexcept {
    Context context(index, &stop);
    error.clear();
    return instance.process(item, context, result, error);
  }

  // Parses and processes a batch cut from a manifest, appending its records to batch.out.
  void process_batch(Batch& batch, PluginInstance& instance, const std::string& manifest_name,
                     ManifestFormat format) {
    batch.out.clear();
    batch.records.clear();
    batch.ok = batch.failed = batch.written = 0;
    Json item;
    Json result;
    std::string error;
    const auto start = Clock::now();
    for (const RawItem& raw : batch.raw.items) {
      if (stop.load(std::memory_order_relaxed)) break;
      const std::string_view text = batch.raw.text(raw);
      bool ok = false;
      if (raw.malformed) {
        batch.emit_error(raw.index, manifest_name + ":" + std::to_string(raw.line) + ": " + std::string(text));
      } else if (!detail::parse_item(text, raw.line, format, manifest_name, item, error)) {
        batch.emit_error(raw.index, error);
      } else if (!run_item(instance, raw.index, item, result, error)) {
        batch.emit_error(raw.index, manifest_name + ":" + std::to_string(raw.line) + ": " + error);
      } else {
        ok = batch.emit_ok(raw.index, result);
      }
      ++batch.written;
      if (ok) {
        ++batch.ok;
      } else {
        ++batch.failed;
        note_failure();
      }
    }
    measure(start, batch.written);
  }

  void measure(Clock::time_point start, std::uint64_t items) noexcept {
    if (items == 0) return;
    const auto ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
    const std::uint64_t measured = std::max<std::uint64_t>(1, ns / items);
    const std::uint64_t old = per_item_ns.load(std::memory_order_relaxed);
    per_item_ns.store(old == 0 ? measured : (3 * old + measured) / 4, std::memory_order_relaxed);
  }

  // process_batch with the plugin in a worker process (options.isolate). The whole batch goes
  // to the worker, so a stop request takes effect at the next batch.
  void process_batch_isolated(Batch& batch, detail::WorkerProcess& worker, const std::string& manifest_name,
                              ManifestFormat format) {
    struct Collect final : detail::ResultSink {
      Impl& impl;
      Batch& batch;
      Collect(Impl& i, Batch& b) : impl(i), batch(b) {}
      void on_result(const RawItem& raw, detail::ItemOutcome outcome, std::string_view text) override {
        bool ok = false;
        if (outcome == detail::ItemOutcome::error_message) {
          batch.emit_error(raw.index, std::string(text));
        } else {
          ok = batch.emit_record_line(raw.index, outcome == detail::ItemOutcome::ok_record, text);
        }
        ++batch.written;
        if (ok) {
          ++batch.ok;
        } else {
          ++batch.failed;
          impl.note_failure();
        }
      }
    } collect(*this, batch);
    batch.out.clear();
    batch.records.clear();
    batch.ok = batch.failed = batch.written = 0;
    if (stop.load(std::memory_order_relaxed)) return;
    const auto start = Clock::now();
    worker.run(batch.raw, manifest_name, format, collect);
    measure(start, batch.written);
  }

  std::size_t next_batch_size() const noexcept {
    const std::uint64_t ns = per_item_ns.load(std::memory_order_relaxed);
    if (ns == 0) return 1;
    const std::uint64_t target = workers ? isolated_batch_target_ns : batch_target_ns;
    return static_cast<std::size_t>(std::clamp<std::uint64_t>(target / ns, 1, max_batch_items));
  }

  void account(const Batch& batch, RunStats& stats) {
    stats.items += batch.written;
    stats.ok += batch.ok;
    stats.failed += batch.failed;
    progress.done.fetch_add(batch.written, std::memory_order_relaxed);
  }

  // Polled once per batch (and per in-memory item): turns the application's token into `stop`.
  bool should_stop() noexcept {
    if (options.cancel.cancelled()) stop_with(StopReason::cancelled);
    return stop.load(std::memory_order_relaxed);
  }

  template <class Deliver>
  RunStats run_stream(ManifestReader& manifest, bool as_records, Deliver&& deliver);
  template <class OnDone>
  RunStats map_items(std::span<const Json> items, OnDone&& on_done);

  void reset_for_run() {
    stop.store(false);
    stop_reason.store(StopReason::none);
    progress.done = 0;
    progress.failed = 0;
    progress.bytes_read = 0;
    progress.total_bytes = 0;
    progress.total_items = 0;
    if (options.cancel.cancelled()) stop_with(StopReason::cancelled);
  }

  template <class F>
  void in_arena(F&& body) {
    // An arena wider than the machine needs the global worker limit raised too.
    std::optional<tbb::global_control> widen;
    if (threads > static_cast<std::size_t>(tbb::info::default_concurrency())) {
      widen.emplace(tbb::global_control::max_allowed_parallelism, threads);
    }
    tbb::task_arena arena(static_cast<int>(threads));
    arena.execute(std::forward<F>(body));
  }
};

Engine::Engine(std::shared_ptr<const Plugin> plugin, const Json& config, RunOptions options)
    : impl_(std::make_unique<Impl>(std::move(plugin), config, options)) {}

Engine::~Engine() = default;

void Engine::request_stop() noexcept { impl_->stop_with(StopReason::cancelled); }

const Progress& Engine::progress() const noexcept { return impl_->progress; }

std::size_t Engine::threads() const noexcept { return impl_->threads; }

template <class Deliver>
RunStats Engine::Impl::run_stream(ManifestReader& manifest, bool as_records, Deliver&& deliver) {
  reset_for_run();
  progress.total_bytes = manifest.size().value_or(0);
  RunStats stats;
  stats.threads = threads;
  const auto start = Clock::now();
  const std::string& name = manifest.name();
  const ManifestFormat format = manifest.format();
  ProgressReporter reporter(progress, options.on_progress, options.progress_interval);
  auto finish = [&](Batch& batch) {
    deliver(batch);
    account(batch, stats);
  };

  if (options.serial) {
    // No TBB on this path: a debugger sees plugin -> engine -> main, one thread, in order.
    Batch batch;
    batch.as_records = as_records;
    while (!should_stop() && manifest.next_batch(batch.raw, next_batch_size(), max_batch_bytes)) {
      progress.bytes_read.store(manifest.bytes_read(), std::memory_order_relaxed);
      if (workers) {
        process_batch_isolated(batch, *detail::WorkerPool::Lease(*workers), name, format);
      } else {
        process_batch(batch, *primary, name, format);
      }
      finish(batch);
    }
  } else {
    const std::size_t tokens = options.max_in_flight != 0 ? options.max_in_flight : 4 * threads;
    // Batches are recycled: at most `tokens` exist, so a steady run allocates none.
    std::vector<std::unique_ptr<Batch>> owned;
    tbb::concurrent_queue<Batch*> free_batches;
    in_arena([&] {
      tbb::parallel_pipeline(
          tokens,
          tbb::make_filter<void, Batch*>(
              tbb::filter_mode::serial_in_order,
              [&](tbb::flow_control& control) -> Batch* {
                Batch* batch = nullptr;
                if (!free_batches.try_pop(batch)) {
                  owned.push_back(std::make_unique<Batch>());
                  batch = owned.back().get();
                  batch->as_records = as_records;
                }
                if (should_stop() || !manifest.next_batch(batch->raw, next_batch_size(), max_batch_bytes)) {
                  free_batches.push(batch);
                  control.stop();
                  return nullptr;
                }
                progress.bytes_read.store(manifest.bytes_read(), std::memory_order_relaxed);
                return batch;
              }) &
              tbb::make_filter<Batch*, Batch*>(tbb::filter_mode::parallel,
                                               [&](Batch* batch) {
                                                 if (workers) {
                                                   detail::WorkerPool::Lease lease(*workers);
                                                   process_batch_isolated(*batch, *lease, name, format);
                                                   return batch;
                                                 }
                                                 Lease lease(*this);
                                                 process_batch(*batch, *lease, name, format);
                                                 return batch;
                                               }) &
              tbb::make_filter<Batch*, void>(
                  options.ordered ? tbb::filter_mode::serial_in_order : tbb::filter_mode::serial_out_of_order,
                  [&](Batch* batch) {
                    finish(*batch);
                    free_batches.push(batch);
                  }));
    });
  }
  reporter.stop();
  stats.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  stats.stopped = stop_reason.load();
  return stats;
}

Engine::Engine(ItemFunction function, RunOptions options)
    : Engine(Plugin::from_function(std::move(function)), Json::object(), std::move(options)) {}

RunStats Engine::run(ManifestReader& manifest, Sink& sink) {
  return impl_->run_stream(manifest, false, [&](Batch& batch) { sink.write(batch.out); });
}

RunStats Engine::run(ManifestReader& manifest, const RecordCallback& on_record) {
  return impl_->run_stream(manifest, true, [&](Batch& batch) {
    for (const Record& record : batch.records) on_record(record);
  });
}

template <class OnDone>
RunStats Engine::Impl::map_items(std::span<const Json> items, OnDone&& on_done) {
  if (workers) throw UsageError("Engine::map: isolate applies to manifest runs (Engine::run) only");
  reset_for_run();
  progress.total_items = items.size();
  const auto start = Clock::now();
  ProgressReporter reporter(progress, options.on_progress, options.progress_interval);

  auto one = [&](PluginInstance& instance, const Json& item) {
    Record record;
    record.index = static_cast<std::uint64_t>(&item - items.data());
    if (should_stop()) {
      record.error = "not processed: the run was stopped before this item started";
    } else {
      record.ok = run_item(instance, record.index, item, record.result, record.error);
    }
    if (!record.ok) note_failure();
    on_done(std::move(record));
    progress.done.fetch_add(1, std::memory_order_relaxed);
  };

  if (options.serial) {
    for (const Json& item : items) one(*primary, item);
  } else {
    in_arena([&] {
      tbb::parallel_for_each(items.begin(), items.end(), [&](const Json& item) {
        Lease lease(*this);
        one(*lease, item);
      });
    });
  }
  reporter.stop();

  RunStats stats;
  stats.threads = threads;
  stats.items = items.size();
  stats.failed = progress.failed.load();
  stats.ok = stats.items - stats.failed;
  stats.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  stats.stopped = stop_reason.load();
  return stats;
}

std::vector<Record> Engine::map(std::span<const Json> items, RunStats* stats) {
  std::vector<Record> records(items.size());
  const RunStats s = impl_->map_items(items, [&](Record&& record) { records[record.index] = std::move(record); });
  if (stats != nullptr) *stats = s;
  return records;
}

RunStats Engine::map(std::span<const Json> items, const RecordCallback& on_record) {
  if (!impl_->options.ordered) {
    std::mutex mutex;
    return impl_->map_items(items, [&](Record&& record) {
      std::lock_guard lock(mutex);
      on_record(record);
    });
  }
  // In order, as soon as possible: a finished record waits only for those before it. Whoever
  // holds the mutex delivers the ready prefix; the re-check after unlocking catches a record
  // that became ready while the lock was held.
  std::vector<Record> waiting(items.size());
  auto ready = std::make_unique<std::atomic<bool>[]>(items.size());
  std::atomic<std::size_t> next{0};
  std::mutex mutex;
  auto deliver_ready = [&] {
    for (;;) {
      std::unique_lock lock(mutex, std::try_to_lock);
      if (!lock.owns_lock()) return;
      std::size_t i = next.load(std::memory_order_relaxed);
      while (i < items.size() && ready[i].load(std::memory_order_acquire)) {
        on_record(waiting[i]);
        waiting[i] = Record{};
        ++i;
      }
      next.store(i, std::memory_order_relaxed);
      lock.unlock();
      if (i >= items.size() || !ready[i].load(std::memory_order_acquire)) return;
    }
  };
  const RunStats stats = impl_->map_items(items, [&](Record&& record) {
    const std::uint64_t index = record.index;
    waiting[index] = std::move(record);
    ready[index].store(true, std::memory_order_release);
    deliver_ready();
  });
  deliver_ready();
  return stats;
}

}  // namespace coremap
