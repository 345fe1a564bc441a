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

namespace coremap {
namespace {

using Clock = std::chrono::steady_clock;

// A batch is sized to take about this long, so the pipeline's per-token cost stays a small
// fraction of the work while the last batches still balance across threads.
constexpr std::uint64_t batch_target_ns = 200'000;
constexpr std::size_t max_batch_items = 4096;
constexpr std::size_t max_batch_bytes = std::size_t{1} << 20;

// Items of a batch and their records. Batches travel between threads, so they hold no JSON
// values: memory allocated for an item is freed by the thread that allocated it (with glibc
// malloc, values left in a migrating batch made the no-op path scale 1.4x instead of 1.7x on
// two cores).
struct Batch {
  ItemBatch raw;
  std::string out;
  RecordWriter writer{out};
  std::uint64_t ok = 0;
  std::uint64_t failed = 0;
  std::uint64_t written = 0;
};

// Turns a parse_error's message into "<line>:<column>: <what>" relative to the manifest.
std::string describe_parse_error(const Json::parse_error& e, std::string_view text,
                                 std::uint64_t first_line) {
  std::string what = e.what();
  if (const auto pos = what.find("column "); pos != std::string::npos) {
    if (const auto colon = what.find(": ", pos); colon != std::string::npos) what.erase(0, colon + 2);
  }
  const std::size_t byte = std::min<std::size_t>(e.byte == 0 ? 0 : e.byte - 1, text.size());
  std::uint64_t line = first_line;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < byte; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return std::to_string(line) + ":" + std::to_string(byte - line_start + 1) + ": invalid JSON: " + what;
}

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

  Impl(std::shared_ptr<const Plugin> p, const Json& c, RunOptions o)
      : plugin(std::move(p)), config(plugin->resolve_config(c)), options(o) {
    const auto cores = static_cast<std::size_t>(tbb::info::default_concurrency());
    threads = options.serial ? 1 : (options.threads == 0 ? cores : options.threads);
    primary = std::make_unique<PluginInstance>(plugin, config);
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
        batch.writer.error(raw.index, manifest_name + ":" + std::to_string(raw.line) + ": " + std::string(text));
      } else if (!parse(text, raw.line, format, manifest_name, item, error)) {
        batch.writer.error(raw.index, error);
      } else if (!run_item(instance, raw.index, item, result, error)) {
        batch.writer.error(raw.index, manifest_name + ":" + std::to_string(raw.line) + ": " + error);
      } else {
        ok = batch.writer.ok(raw.index, result);
      }
      ++batch.written;
      if (ok) {
        ++batch.ok;
      } else {
        ++batch.failed;
        note_failure();
      }
    }
    if (batch.written > 0) {
      const auto ns = static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
      const std::uint64_t measured = std::max<std::uint64_t>(1, ns / batch.written);
      const std::uint64_t old = per_item_ns.load(std::memory_order_relaxed);
      per_item_ns.store(old == 0 ? measured : (3 * old + measured) / 4, std::memory_order_relaxed);
    }
  }

  bool parse(std::string_view text, std::uint64_t line, ManifestFormat format,
             const std::string& manifest_name, Json& item, std::string& error) {
    if (format == ManifestFormat::lines) {
      // Reuse the object and its "path" string: after a batch's first item, a plain list
      // allocates nothing per item here.
      if (!item.is_object() || item.size() != 1 || !item.contains("path")) {
        item = Json::object({{"path", std::string()}});
      }
      item["path"].get_ref<std::string&>().assign(text);
      return true;
    }
    try {
      item = Json::parse(text.begin(), text.end());
      return true;
    } catch (const Json::parse_error& e) {
      error = manifest_name + ":" + describe_parse_error(e, text, line);
      return false;
    }
  }

  std::size_t next_batch_size() const noexcept {
    const std::uint64_t ns = per_item_ns.load(std::memory_order_relaxed);
    if (ns == 0) return 1;
    return static_cast<std::size_t>(std::clamp<std::uint64_t>(batch_target_ns / ns, 1, max_batch_items));
  }

  void account(const Batch& batch, RunStats& stats) {
    stats.items += batch.written;
    stats.ok += batch.ok;
    stats.failed += batch.failed;
    progress.done.fetch_add(batch.written, std::memory_order_relaxed);
  }

  void reset_for_run() {
    stop.store(false);
    stop_reason.store(StopReason::none);
    progress.done = 0;
    progress.failed = 0;
    progress.bytes_read = 0;
    progress.total_bytes = 0;
    progress.total_items = 0;
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

RunStats Engine::run(ManifestReader& manifest, Sink& sink) {
  Impl& impl = *impl_;
  impl.reset_for_run();
  impl.progress.total_bytes = manifest.size().value_or(0);
  RunStats stats;
  stats.threads = impl.threads;
  const auto start = Clock::now();
  const std::string& name = manifest.name();
  const ManifestFormat format = manifest.format();

  if (impl.options.serial) {
    // No TBB on this path: a debugger sees plugin -> engine -> main, one thread, in order.
    Batch batch;
    while (!impl.stop.load(std::memory_order_relaxed) &&
           manifest.next_batch(batch.raw, impl.next_batch_size(), max_batch_bytes)) {
      impl.progress.bytes_read.store(manifest.bytes_read(), std::memory_order_relaxed);
      impl.process_batch(batch, *impl.primary, name, format);
      sink.write(batch.out);
      impl.account(batch, stats);
    }
  } else {
    const std::size_t tokens = impl.options.max_in_flight != 0 ? impl.options.max_in_flight : 4 * impl.threads;
    // Batches are recycled: at most `tokens` exist, so a steady run allocates none.
    std::vector<std::unique_ptr<Batch>> owned;
    tbb::concurrent_queue<Batch*> free_batches;
    impl.in_arena([&] {
      tbb::parallel_pipeline(
          tokens,
          tbb::make_filter<void, Batch*>(
              tbb::filter_mode::serial_in_order,
              [&](tbb::flow_control& control) -> Batch* {
                Batch* batch = nullptr;
                if (!free_batches.try_pop(batch)) {
                  owned.push_back(std::make_unique<Batch>());
                  batch = owned.back().get();
                }
                if (impl.stop.load(std::memory_order_relaxed) ||
                    !manifest.next_batch(batch->raw, impl.next_batch_size(), max_batch_bytes)) {
                  free_batches.push(batch);
                  control.stop();
                  return nullptr;
                }
                impl.progress.bytes_read.store(manifest.bytes_read(), std::memory_order_relaxed);
                return batch;
              }) &
              tbb::make_filter<Batch*, Batch*>(tbb::filter_mode::parallel,
                                               [&](Batch* batch) {
                                                 Impl::Lease lease(impl);
                                                 impl.process_batch(*batch, *lease, name, format);
                                                 return batch;
                                               }) &
              tbb::make_filter<Batch*, void>(
                  impl.options.ordered ? tbb::filter_mode::serial_in_order
                                       : tbb::filter_mode::serial_out_of_order,
                  [&](Batch* batch) {
                    sink.write(batch->out);
                    impl.account(*batch, stats);
                    free_batches.push(batch);
                  }));
    });
  }
  stats.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  stats.stopped = impl.stop_reason.load();
  return stats;
}

std::vector<Record> Engine::map(std::span<const Json> items, RunStats* stats_out) {
  Impl& impl = *impl_;
  impl.reset_for_run();
  impl.progress.total_items = items.size();
  std::vector<Record> records(items.size());
  const auto start = Clock::now();

  auto one = [&](PluginInstance& instance, const Json& item) {
    const auto index = static_cast<std::uint64_t>(&item - items.data());
    Record& record = records[index];
    record.index = index;
    if (impl.stop.load(std::memory_order_relaxed)) {
      record.error = "not processed: the run was stopped before this item started";
    } else {
      record.ok = impl.run_item(instance, index, item, record.result, record.error);
    }
    if (!record.ok) impl.note_failure();
    impl.progress.done.fetch_add(1, std::memory_order_relaxed);
  };

  if (impl.options.serial) {
    for (const Json& item : items) one(*impl.primary, item);
  } else {
    impl.in_arena([&] {
      tbb::parallel_for_each(items.begin(), items.end(), [&](const Json& item) {
        Impl::Lease lease(impl);
        one(*lease, item);
      });
    });
  }

  if (stats_out != nullptr) {
    RunStats& stats = *stats_out;
    stats = RunStats{};
    stats.threads = impl.threads;
    stats.items = records.size();
    stats.failed = static_cast<std::uint64_t>(
        std::count_if(records.begin(), records.end(), [](const Record& r) { return !r.ok; }));
    stats.ok = stats.items - stats.failed;
    stats.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    stats.stopped = impl.stop_reason.load();
  }
  return records;
}

}  // namespace coremap
