// SPDX-License-Identifier: MIT
#include <coremap/engine.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <functional>

#include <oneapi/tbb/concurrent_queue.h>
#include <oneapi/tbb/enumerable_thread_specific.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for_each.h>
#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/task_arena.h>

#include <coremap/error.hpp>
#include <coremap/latency_histogram.hpp>
#include <coremap/record.hpp>

#include "item_parser.hpp"
#include "reorder_buffer.hpp"
#include "tsan_handoff.hpp"
#include "worker_process.hpp"

namespace coremap {
namespace {

using Clock = std::chrono::steady_clock;

// A batch is sized to take about this long, so the pipeline's per-token cost stays a small
// fraction of the work while the last batches still balance across threads.
constexpr std::uint64_t batch_target_ns = 200'000;
// Isolated batches pay a round trip to a worker process each: they are made longer.
constexpr std::uint64_t isolated_batch_target_ns = 2'000'000;
constexpr std::size_t max_batch_items = 4096;
constexpr std::size_t max_batch_bytes = std::size_t{1} << 20;
// Ordered runs: finished batches waiting for an earlier one give their token back while they
// hold less than this (detail::ReorderBuffer).
constexpr std::size_t default_reorder_budget_bytes = std::size_t{64} << 20;

// A value on its way from one stage to the next. A failed value passes the later stages
// untouched and becomes an error record at the end.
struct Value {
  std::uint64_t index = 0;  // the manifest item it came from
  std::uint64_t line = 0;   // that item's manifest line, for messages
  bool fanned = false;      // a stage emitted it: its record carries "sub"
  bool failed = false;
  std::uint32_t attempts = 1;
  Json data;                // when not failed
  std::string error;        // when failed
  // The run's stop cut its item short in a later stage: the item gets no record at all (none
  // of its values), so a resumed run processes it whole.
  bool stopped = false;
};

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

// What one call of a stage's plugin needs, reused from call to call within a batch.
struct CallScratch {
  explicit CallScratch(LatencyHistogram* timing) : emitter(emitted), latency(timing) {}
  CallScratch(const CallScratch&) = delete;
  CallScratch& operator=(const CallScratch&) = delete;
  Json result;
  std::string error;
  std::uint32_t attempts = 1;
  std::vector<Json> emitted;
  CallEmitter emitter;
  LatencyHistogram* latency;  // RunOptions::measure, else null
};

// Items of a batch, the values between its stages, and its records. Batches travel between
// threads; in a one-stage run they hold no JSON values (memory allocated for an item is freed
// by the thread that allocated it: with glibc malloc, values left in a migrating batch made
// the no-op path scale 1.4x instead of 1.7x on two cores).
struct Batch {
  std::uint64_t seq = 0;  // position in the run, for the sequencer
  std::size_t slot = 0;   // in BatchPool's list of batches
  ItemBatch raw;
  std::vector<Value> values;  // the previous stage's outputs
  std::vector<Value> next;    // the running stage's outputs
  std::string out;            // JSON Lines, for a Sink
  RecordWriter writer{out};
  std::vector<Record> records;  // or Record objects, for a RecordCallback
  bool as_records = false;
  std::string_view source;  // the manifest's name, for messages
  std::uint64_t items = 0;  // items the first stage processed
  std::uint64_t ok = 0;
  std::uint64_t failed = 0;
  std::uint64_t not_run = 0;  // items of the batch the run's stop left without a record
  std::uint64_t work_ns = 0;  // time spent in stages, for batch sizing
  // Numbering the records of one item: the item and how many records it has so far.
  std::uint64_t sub_item = ~std::uint64_t{0};
  std::int64_t sub_count = 0;

  void start() {
    out.clear();
    records.clear();
    values.clear();
    next.clear();
    items = ok = failed = not_run = work_ns = 0;
    sub_item = ~std::uint64_t{0};
  }
  std::uint64_t written() const noexcept { return ok + failed; }

  std::int64_t sub_of(std::uint64_t index, bool fanned) noexcept {
    if (index != sub_item) {
      sub_item = index;
      sub_count = 0;
    }
    const std::int64_t sub = sub_count++;
    return fanned ? sub : -1;
  }

  // A record; false when it became an error record (a result that cannot be written, then
  // named by `source`:`line`, where the item came from).
  bool record_ok(std::uint64_t index, Json& result, std::uint32_t attempts, bool fanned, std::uint64_t line) {
    const std::int64_t sub = sub_of(index, fanned);
    if (!as_records) return writer.ok(index, result, attempts, sub, source, line);
    records.push_back(Record{index, true, std::move(result), {}, attempts, sub});
    return true;
  }
  // A record a worker process wrote, as JSON Lines text (RunOptions::isolate).
  bool record_line(std::uint64_t index, bool is_ok, std::string_view line) {
    if (!as_records) {
      out.append(line);
      return is_ok;
    }
    Json parsed = Json::parse(line);
    const auto attempts = parsed.value("attempts", std::uint32_t{1});
    if (is_ok) {
      records.push_back(Record{index, true, std::move(parsed["result"]), {}, attempts});
    } else {
      records.push_back(Record{index, false, Json(), parsed["error"].get<std::string>(), attempts});
    }
    return is_ok;
  }

  void record_error(std::uint64_t index, std::string message, std::uint32_t attempts, bool fanned) {
    const std::int64_t sub = sub_of(index, fanned);
    if (as_records) {
      records.push_back(Record{index, false, Json(), std::move(message), attempts, sub});
    } else {
      writer.error(index, message, attempts, sub);
    }
  }
};

// What the heap spends on one block of `n` bytes (glibc malloc: an 8-byte header, 16-byte
// granules, 32 bytes at least). Counting blocks, not just the bytes asked for, keeps the
// reorder budget honest for batches of one tiny item, where headers are much of the memory.
constexpr std::size_t heap_block(std::size_t n) noexcept {
  return n == 0 ? 0 : std::max<std::size_t>(32, (n + 8 + 15) & ~std::size_t{15});
}

std::size_t heap_of(const std::string& text) noexcept {
  // A short string lives inside the object (libstdc++'s local buffer) and owns no block.
  const auto data = reinterpret_cast<std::uintptr_t>(text.data());
  const auto self = reinterpret_cast<std::uintptr_t>(&text);
  if (data >= self && data < self + sizeof text) return 0;
  return heap_block(text.capacity() + 1);
}

template <class T>
std::size_t heap_of(const std::vector<T>& vector) noexcept {
  return heap_block(vector.capacity() * sizeof(T));
}

// The heap a JSON value owns (nlohmann_json's defaults: a std::map node per member, a
// std::vector for arrays, each container and string allocated on its own). Iterative: a value
// may be nested deeper than the stack allows to recurse.
std::size_t heap_of(const Json& value, std::vector<const Json*>& stack) {
  // A std::map node: the red-black tree's colour and three links, then the member.
  constexpr std::size_t member_node = 4 * sizeof(void*) + sizeof(std::pair<const std::string, Json>);
  std::size_t bytes = 0;
  stack.assign(1, &value);
  while (!stack.empty()) {
    const Json& j = *stack.back();
    stack.pop_back();
    switch (j.type()) {
      case Json::value_t::object: {
        const auto& members = j.get_ref<const Json::object_t&>();
        bytes += heap_block(sizeof members);
        for (const auto& [key, member] : members) {
          bytes += heap_block(member_node) + heap_of(key);
          if (member.is_structured() || member.is_string() || member.is_binary()) stack.push_back(&member);
        }
        break;
      }
      case Json::value_t::array: {
        const auto& elements = j.get_ref<const Json::array_t&>();
        bytes += heap_block(sizeof elements) + heap_of(elements);
        for (const Json& element : elements) {
          if (element.is_structured() || element.is_string() || element.is_binary()) stack.push_back(&element);
        }
        break;
      }
      case Json::value_t::string: {
        const auto& text = j.get_ref<const Json::string_t&>();
        bytes += heap_block(sizeof text) + heap_of(text);
        break;
      }
      case Json::value_t::binary: {
        const auto& binary = j.get_binary();
        bytes += heap_block(sizeof binary) + heap_of(static_cast<const std::vector<std::uint8_t>&>(binary));
        break;
      }
      default:
        break;
    }
  }
  return bytes;
}

// nlohmann_json's serializer (one per batch, in its RecordWriter) allocates a 512-character
// indentation string when it is built.
constexpr std::size_t serializer_heap_bytes = heap_block(512 + 1);

// Memory a batch holds on to: the object, its buffers' capacity and every JSON value in it, in
// heap blocks (EngineTest.TheReorderBudgetBoundsTheHeapWhateverTheItems compares it with what
// malloc reports).
std::size_t footprint(const Batch& batch) {
  std::size_t bytes = heap_block(sizeof(Batch)) + serializer_heap_bytes + heap_of(batch.raw.bytes) +
                      heap_of(batch.raw.items) + heap_of(batch.out) + heap_of(batch.records) +
                      heap_of(batch.values) + heap_of(batch.next);
  if (batch.records.empty() && batch.values.empty() && batch.next.empty()) return bytes;
  std::vector<const Json*> stack;
  for (const Record& record : batch.records) bytes += heap_of(record.error) + heap_of(record.result, stack);
  for (const auto* values : {&batch.values, &batch.next}) {
    for (const Value& value : *values) bytes += heap_of(value.error) + heap_of(value.data, stack);
  }
  return bytes;
}

// The batches of a streamed run, recycled: a steady run keeps `keep` of them (the tokens in
// flight, plus the one the cut stage fills) and allocates none. More exist only while finished
// ones are parked behind a slow batch (ReorderBuffer); those are freed once written, so the
// memory of a stall is not kept for the rest of the run. A kept batch gives back any buffer
// grown far past an ordinary batch (one very long item, a large fan-out).
class BatchPool {
 public:
  BatchPool(std::size_t keep, bool as_records, std::string_view source)
      : keep_(keep), as_records_(as_records), source_(source) {}

  // From the cut stage.
  Batch* take() {
    std::lock_guard lock(mutex_);
    if (!free_.empty()) {
      Batch* batch = free_.back();
      free_.pop_back();
      return batch;
    }
    owned_.push_back(std::make_unique<Batch>());
    Batch* batch = owned_.back().get();
    batch->slot = owned_.size() - 1;
    batch->as_records = as_records_;
    batch->source = source_;
    return batch;
  }

  // From the writer, or from the cut stage for a batch it did not fill.
  void give_back(Batch* batch) {
    // Before the batch is on the free list: from there the cut stage may take it at once.
    trim(*batch);
    std::unique_ptr<Batch> gone;
    {
      std::lock_guard lock(mutex_);
      if (owned_.size() <= keep_) {
        free_.push_back(batch);
      } else {
        const std::size_t slot = batch->slot;
        gone = std::move(owned_[slot]);
        if (slot + 1 != owned_.size()) {
          owned_[slot] = std::move(owned_.back());
          owned_[slot]->slot = slot;
        }
        owned_.pop_back();
      }
    }
  }

 private:
  static void trim(Batch& batch) {
    constexpr std::size_t most = 4 * max_batch_bytes;
    release_if_over(batch.raw.bytes, most);
    release_if_over(batch.raw.items, most);
    release_if_over(batch.out, most);
    release_if_over(batch.records, most);
    release_if_over(batch.values, most);
    release_if_over(batch.next, most);
  }
  template <class Buffer>
  static void release_if_over(Buffer& buffer, std::size_t bytes) {
    if (buffer.capacity() * sizeof(buffer[0]) > bytes) Buffer().swap(buffer);
  }

  const std::size_t keep_;
  const bool as_records_;
  const std::string_view source_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<Batch>> owned_;  // every batch; owned_[b->slot] is b
  std::vector<Batch*> free_;
};

// One stage at run time: its plugin, config and concurrency, and its plugin instances. One
// instance per worker thread (one shared instance when the plugin is reentrant), so process()
// is never entered by two threads on one instance.
struct StageRuntime {
  Stage spec;            // config resolved
  bool pooled = false;   // latency-bound: runs on `spec.concurrency.limit` threads of its own
  bool reduces = false;
  std::unique_ptr<PluginInstance> primary;
  // `busy` catches the case where a plugin runs TBB work itself and this thread, while
  // waiting, picks up another batch: that call gets an instance of its own instead of
  // re-entering the busy one.
  struct Slot {
    PluginInstance* instance = nullptr;
    bool busy = false;
  };
  tbb::enumerable_thread_specific<Slot> slots;
  std::mutex mutex;
  std::vector<std::unique_ptr<PluginInstance>> instances;
  std::vector<PluginInstance*> spare;
  // RunOptions::measure: each thread's process() durations, merged after the run.
  tbb::enumerable_thread_specific<LatencyHistogram> latency;

  // `in_process` is false when the plugin runs in worker processes (RunOptions::isolate).
  StageRuntime(Stage stage, bool in_process) : spec(std::move(stage)) {
    spec.config = spec.plugin->resolve_config(spec.config);
    reduces = spec.plugin->reduces();
    if (in_process) primary = std::make_unique<PluginInstance>(spec.plugin, spec.config);
  }

  // Not on the per-item path: runs once per thread (or per nested call), under a mutex.
  PluginInstance* take_instance() {
    std::lock_guard lock(mutex);
    if (spec.plugin->reentrant()) return primary ? primary.get() : instances.front().get();
    if (!spare.empty()) {
      PluginInstance* instance = spare.back();
      spare.pop_back();
      return instance;
    }
    if (primary) {
      instances.push_back(std::move(primary));
      return instances.back().get();
    }
    instances.push_back(std::make_unique<PluginInstance>(spec.plugin, spec.config));
    return instances.back().get();
  }

  void give_back(PluginInstance* instance) {
    if (spec.plugin->reentrant()) return;
    std::lock_guard lock(mutex);
    spare.push_back(instance);
  }

  // The instance the calling thread uses for the duration of one batch.
  class Lease {
   public:
    explicit Lease(StageRuntime& stage) : stage_(stage), slot_(&stage.slots.local()) {
      if (slot_->busy) {
        slot_ = nullptr;
        instance_ = stage_.take_instance();
        return;
      }
      if (slot_->instance == nullptr) slot_->instance = stage_.take_instance();
      slot_->busy = true;
      instance_ = slot_->instance;
    }
    ~Lease() {
      if (slot_ != nullptr) {
        slot_->busy = false;
      } else {
        stage_.give_back(instance_);
      }
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    PluginInstance& operator*() const noexcept { return *instance_; }

   private:
    StageRuntime& stage_;
    Slot* slot_;
    PluginInstance* instance_ = nullptr;
  };

  // Folds every instance's partial state into one and summarises it; then starts afresh, so
  // the next run's summary covers that run only.
  Json summarize(Json* state = nullptr) {
    std::lock_guard lock(mutex);
    std::vector<PluginInstance*> all;
    if (primary) all.push_back(primary.get());
    for (const auto& instance : instances) all.push_back(instance.get());
    Json summary;
    std::string error;
    bool ok = true;
    for (std::size_t i = 1; i < all.size() && ok; ++i) ok = all[0]->merge(*all[i], error);
    if (state != nullptr) {
      Json saved;
      std::string save_error;
      if (!ok) {
        *state = Json{{"error", error}};
      } else if (all[0]->save_state(saved, save_error)) {
        *state = Json{{"state", std::move(saved)}};
      } else {
        *state = Json{{"error", save_error}};
      }
    }
    if (ok) ok = all[0]->summary(summary, error);
    instances.clear();
    spare.clear();
    slots.clear();
    primary = std::make_unique<PluginInstance>(spec.plugin, spec.config);
    return ok ? summary : Json{{"error", error}};
  }
};

}  // namespace

struct Engine::Impl {
  std::vector<std::unique_ptr<StageRuntime>> stages;
  RunOptions options;
  std::size_t threads;
  std::size_t pipeline_in_flight;
  // Read for every item: kept off the cache lines the per-batch counters below write.
  alignas(64) std::atomic<bool> stop{false};
  std::atomic<StopReason> stop_reason{StopReason::none};
  alignas(64) Progress progress;
  alignas(64) std::atomic<std::uint64_t> per_item_ns{0};
  // With options.isolate: the plugin runs in these worker processes instead (no instance here).
  std::unique_ptr<detail::WorkerPool> workers;

  Impl(Pipeline pipeline, RunOptions o) : options(std::move(o)), pipeline_in_flight(pipeline.max_in_flight) {
    if (pipeline.stages.empty()) throw UsageError("a pipeline needs at least one stage");
    if (options.isolate && pipeline.stages.size() != 1) {
      throw UsageError("isolate (--isolate) runs one plugin, not a pipeline of " + std::to_string(pipeline.stages.size()) +
                       " stages");
    }
    if (!options.isolate && options.memory_limit_bytes != 0) throw UsageError("a memory limit needs isolate (--isolate)");
    if (options.isolate && options.measure) throw UsageError("measure: isolated runs time their calls in the workers; not supported");
    const auto cores = static_cast<std::size_t>(tbb::info::default_concurrency());
    threads = options.serial ? 1 : (options.threads == 0 ? cores : options.threads);
    for (Stage& stage : pipeline.stages) {
      if (!stage.plugin) throw UsageError("stage '" + stage.name + "' has no plugin");
      if (stage.name.empty()) stage.name = std::string(stage.plugin->name());
      stages.push_back(std::make_unique<StageRuntime>(std::move(stage), !options.isolate));
      StageRuntime& added = *stages.back();
      added.pooled = !options.serial && !options.isolate && added.spec.concurrency.limit > threads;
    }
    if (options.isolate) {
      const StageRuntime& stage = *stages.front();
      detail::WorkerSettings settings = detail::worker_settings(*stage.spec.plugin, stage.spec.config, options);
      settings.stop = &stop;
      workers = std::make_unique<detail::WorkerPool>(std::move(settings));
    }
  }

  // run_stage with the plugin in a worker process (options.isolate). The whole batch goes to
  // the worker, which writes the records; a stop request takes effect at the next batch.
  void run_stage_isolated(Batch& batch, detail::WorkerProcess& worker, const std::string& manifest_name,
                          ManifestFormat format) {
    struct Collect final : detail::ResultSink {
      Impl& impl;
      Batch& batch;
      Collect(Impl& i, Batch& b) : impl(i), batch(b) {}
      void on_result(const RawItem& raw, detail::ItemOutcome outcome, std::string_view text,
                     std::uint32_t attempts) override {
        // An outcome that came back once the run was stopping is no record (cut_short()).
        if (impl.cut_short()) return;
        bool ok = false;
        ++batch.items;
        if (outcome == detail::ItemOutcome::error_message) {
          batch.record_error(raw.index, std::string(text), attempts, false);
        } else {
          ok = batch.record_line(raw.index, outcome == detail::ItemOutcome::ok_record, text);
        }
        if (ok) {
          ++batch.ok;
        } else {
          ++batch.failed;
          impl.note_failure();
        }
      }
    } collect(*this, batch);
    if (!stop.load(std::memory_order_relaxed)) {
      const auto start = Clock::now();
      worker.run(batch.raw, manifest_name, format, collect);
      batch.work_ns += elapsed_ns(start);
    }
    batch.not_run = batch.raw.items.size() - batch.items;
  }

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
  void collect_stage_stats(RunStats& stats) {
    for (const auto& stage : stages) {
      LatencyHistogram merged;
      for (const LatencyHistogram& part : stage->latency) merged.merge(part);
      const std::size_t limit = stage->spec.concurrency.limit;
      StageStats out;
      out.name = stage->spec.name;
      out.own_threads = stage->pooled;
      out.concurrency = options.serial ? 1 : (stage->pooled ? limit : (limit == 0 ? threads : std::min(limit, threads)));
      out.latency = std::move(merged);
      out.take_figures_from_latency();
      stats.stages.push_back(std::move(out));
    }
  }

  std::string timed_out_message(std::int64_t took_ns) const {
    char text[128];
    std::snprintf(text, sizeof text, "timed out: ran %.3f s, over --timeout %g s (its result was discarded)",
                  static_cast<double>(took_ns) / 1e9, static_cast<double>(options.timeout.count()) / 1e3);
    return text;
  }

  // Whether a stage's outputs are checked as they leave it (writable_result), not only when
  // written: in a pipeline, so that a value that cannot be written fails in the stage that made
  // it, its error naming that stage, and reaches no later stage (a reduction would count it);
  // and for Record callbacks, whose results are never serialised here. A one-stage run into a
  // Sink leaves the check to its RecordWriter.
  bool checks_values(const Batch& batch) const noexcept { return stages.size() > 1 || batch.as_records; }

  // One output of a stage: a record when the stage is the last, else the next stage's input.
  void output_ok(Batch& batch, bool last, std::uint64_t index, std::uint64_t line, bool fanned,
                 std::uint32_t attempts, Json& data) {
    if (!last) {
      batch.next.push_back(Value{index, line, fanned, false, attempts, std::move(data), {}});
    } else if (batch.record_ok(index, data, attempts, fanned, line)) {
      ++batch.ok;
    } else {
      ++batch.failed;
      note_failure();
    }
  }

  void output_error(Batch& batch, bool last, std::uint64_t index, std::uint64_t line, bool fanned,
                    std::uint32_t attempts, std::string message) {
    if (!last) {
      batch.next.push_back(Value{index, line, fanned, true, attempts, Json(), std::move(message)});
      return;
    }
    batch.record_error(index, std::move(message), attempts, fanned);
    ++batch.failed;
    note_failure();
  }

  // Runs stage `s` over a batch: the raw items for the first stage (parsed here, in parallel),
  // the previous stage's outputs otherwise.
  void run_stage(Batch& batch, std::size_t s, PluginInstance& instance, const std::string& manifest_name,
                 ManifestFormat format) {
    const auto start = Clock::now();
    const bool last = s + 1 == stages.size();
    if (s > 0) {
      run_values(batch, s, instance, 0, batch.values.size(), batch.next, manifest_name);
      finish_stage(batch, s);
      batch.work_ns += elapsed_ns(start);
      return;
    }
    const std::string& stage_name = stages[s]->spec.name;
    const bool name_stage = stages.size() > 1;
    Json item;
    CallScratch call(options.measure ? &stages[s]->latency.local() : nullptr);
    // References, not a structured binding: lambdas below capture them (clang 14 cannot
    // capture a binding).
    Json& result = call.result;
    std::string& error = call.error;
    std::uint32_t& attempts = call.attempts;
    std::vector<Json>& emitted = call.emitted;
    CallEmitter& emitter = call.emitter;
    LatencyHistogram* const latency = call.latency;
    auto where = [&](std::uint64_t line) {
      return manifest_name + ":" + std::to_string(line) + ": " + (name_stage ? "stage '" + stage_name + "': " : "");
    };
    const bool check = checks_values(batch);
    std::string why;
    auto hand_on = [&](std::uint64_t index, std::uint64_t line, bool fanned, Json& value) {
      if (check && !writable_result(value, why)) {
        output_error(batch, last, index, line, fanned, attempts, where(line) + why);
      } else {
        output_ok(batch, last, index, line, fanned, attempts, value);
      }
    };
    // Processes one input and hands on its outputs: the emitted values, or the result; none
    // when the run's stop cut it short (false then).
    auto apply = [&](std::uint64_t index, std::uint64_t line, bool fanned, const Json& input) {
      const bool ok = run_item_measured(latency, instance, index, input, result, error, attempts, &emitter);
      if (cut_short()) return false;
      if (!ok) {
        output_error(batch, last, index, line, fanned, attempts, where(line) + error);
      } else if (!emitter.used) {
        hand_on(index, line, fanned, result);
      } else {
        for (Json& value : emitted) hand_on(index, line, true, value);
      }
      return true;
    };
    const std::size_t count = batch.raw.items.size();
    for (std::size_t i = 0; i < count; ++i) {
      const RawItem& raw = batch.raw.items[i];
      if (stop.load(std::memory_order_relaxed)) {
        batch.not_run += count - i;
        break;
      }
      const std::string_view text = batch.raw.text(raw);
      if (raw.malformed) {
        output_error(batch, last, raw.index, raw.line, false, 1,
                     manifest_name + ":" + std::to_string(raw.line) + ": " + std::string(text));
      } else if (!detail::parse_item(text, raw.line, format, manifest_name, item, error)) {
        output_error(batch, last, raw.index, raw.line, false, 1, error);
      } else if (!apply(raw.index, raw.line, false, item)) {
        batch.not_run += count - i;
        break;
      }
      ++batch.items;
    }
    batch.values.clear();
    if (!last) std::swap(batch.values, batch.next);
    batch.work_ns += elapsed_ns(start);
  }

  static std::uint64_t elapsed_ns(Clock::time_point start) noexcept {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
  }

  // Stage s > 0 over the previous stage's outputs [first, end): its own outputs are appended to
  // `out` as values (records are written by finish_stage). Chunks of one batch may run on
  // several threads at once, each with its own instance and its own `out`.
  void run_values(Batch& batch, std::size_t s, PluginInstance& instance, std::size_t first, std::size_t end,
                  std::vector<Value>& out, const std::string& manifest_name) {
    const std::string& stage_name = stages[s]->spec.name;
    CallScratch call(options.measure ? &stages[s]->latency.local() : nullptr);
    auto where = [&](std::uint64_t line) {
      return manifest_name + ":" + std::to_string(line) + ": stage '" + stage_name + "': ";
    };
    std::string why;
    // A value that cannot be written fails here, naming this stage, and reaches no later one.
    auto hand_on = [&](const Value& from, bool fanned, Json& data) {
      if (!writable_result(data, why)) {
        out.push_back(Value{from.index, from.line, fanned, true, call.attempts, Json(), where(from.line) + why});
      } else {
        out.push_back(Value{from.index, from.line, fanned, false, call.attempts, std::move(data), {}});
      }
    };
    for (std::size_t i = first; i < end; ++i) {
      Value& value = batch.values[i];
      if (value.failed || value.stopped) {
        out.push_back(std::move(value));
        continue;
      }
      // Once the run is stopping nothing more is started: the value's item gets no record.
      const bool ok = !should_stop() && run_item_measured(call.latency, instance, value.index, value.data, call.result,
                                                          call.error, call.attempts, &call.emitter);
      if (cut_short()) {
        out.push_back(Value{value.index, value.line, value.fanned, false, 1, Json(), {}, true});
      } else if (!ok) {
        out.push_back(Value{value.index, value.line, value.fanned, true, call.attempts, Json(), where(value.line) + call.error});
      } else if (!call.emitter.used) {
        hand_on(value, value.fanned, call.result);
      } else {
        for (Json& emitted_value : call.emitted) hand_on(value, true, emitted_value);
      }
    }
  }

  // After stage s > 0 ran over the whole batch (its outputs in batch.next): hands them to the
  // next stage, or, after the last stage, writes them as records in order.
  void finish_stage(Batch& batch, std::size_t s) {
    batch.values.clear();
    if (s + 1 < stages.size()) {
      std::swap(batch.values, batch.next);
      return;
    }
    // An item's values are adjacent: all of them are written, or, when the stop cut any of them
    // short, none (a resumed run then processes the item whole, never half of its fan-out).
    for (std::size_t i = 0, n = batch.next.size(); i < n;) {
      std::size_t end = i;
      bool cut = false;
      for (; end < n && batch.next[end].index == batch.next[i].index; ++end) cut = cut || batch.next[end].stopped;
      if (cut) {
        --batch.items;
        ++batch.not_run;
        i = end;
        continue;
      }
      for (; i < end; ++i) {
        Value& value = batch.next[i];
        if (value.failed) {
          output_error(batch, true, value.index, value.line, value.fanned, value.attempts, std::move(value.error));
        } else {
          output_ok(batch, true, value.index, value.line, value.fanned, value.attempts, value.data);
        }
      }
    }
    batch.next.clear();
  }

  // Whether stage s may spread one batch's values over several calls at once: a later stage
  // (its input may be many values fanned out of one item) whose concurrency is unlimited or
  // latency-bound. A serial or N-wide CPU stage takes a batch whole, so its limit holds.
  bool splits(std::size_t s) const noexcept {
    return s > 0 && !options.serial && (stages[s]->pooled || stages[s]->spec.concurrency.is_unlimited());
  }

  // Stage s over a batch's values in chunks on the arena's threads (splits(s)), each chunk with
  // the calling thread's instance; outputs joined in order.
  void run_stage_split(Batch& batch, std::size_t s, const std::string& manifest_name) {
    const auto start = Clock::now();
    const std::size_t n = batch.values.size();
    const std::size_t chunks = std::min(n, 4 * threads);
    std::vector<std::vector<Value>> outs(chunks);
    auto body = [&](std::vector<Value>& out) {
      detail::taken_over(&detail::run_start_key);  // before anything reads the closure
      detail::TbbBody tbb_body(&batch);
      const auto c = static_cast<std::size_t>(&out - outs.data());
      StageRuntime::Lease lease(*stages[s]);
      run_values(batch, s, *lease, n * c / chunks, n * (c + 1) / chunks, out, manifest_name);
    };
    // TBB's threads read `body` (taken by reference) where this thread built it.
    detail::handed_over(&detail::run_start_key);
    tbb::parallel_for_each(outs.begin(), outs.end(), body);
    detail::taken_over(&batch);  // the chunks' outputs, written on other threads
    join_chunks(batch, outs);
    finish_stage(batch, s);
    batch.work_ns += elapsed_ns(start);
  }

  static void join_chunks(Batch& batch, std::vector<std::vector<Value>>& outs) {
    batch.next.clear();
    for (auto& chunk : outs) {
      for (Value& value : chunk) batch.next.push_back(std::move(value));
    }
  }

  std::size_t next_batch_size() const noexcept {
    const std::uint64_t ns = per_item_ns.load(std::memory_order_relaxed);
    if (ns == 0) return 1;
    const std::uint64_t target = workers ? isolated_batch_target_ns : batch_target_ns;
    return static_cast<std::size_t>(std::clamp<std::uint64_t>(target / ns, 1, max_batch_items));
  }

  // Cuts the next batch, leaving out items an earlier run recorded (RunOptions::skip). False
  // at the manifest's end or when the run is stopping. Runs in the serial input stage.
  bool read_batch(BatchSource& manifest, Batch& batch, std::uint64_t& skipped) {
    const IndexSet* const skip = options.skip.get();
    for (;;) {
      if (should_stop() || !manifest.next_batch(batch.raw, next_batch_size(), max_batch_bytes)) return false;
      progress.bytes_read.store(manifest.bytes_read(), std::memory_order_relaxed);
      if (skip == nullptr) return true;
      const std::size_t before = batch.raw.items.size();
      std::erase_if(batch.raw.items, [skip](const RawItem& raw) { return skip->contains(raw.index); });
      skipped += before - batch.raw.items.size();
      if (!batch.raw.items.empty()) return true;
    }
  }

  // The writer's bookkeeping for a finished batch (serial: one batch at a time).
  void account(const Batch& batch, RunStats& stats) {
    stats.items += batch.items;
    stats.records += batch.written();
    stats.ok += batch.ok;
    stats.failed += batch.failed;
    stats.not_run += batch.not_run;
    progress.done.fetch_add(batch.items, std::memory_order_relaxed);
  }

  // Feeds a batch's time per item into the cut stage's batch sizing, as soon as its last stage
  // is done: waiting until it is written would keep every batch behind a slow one at one item
  // (nothing written, nothing learned), each paying a whole batch's memory and overhead.
  // Batches finish on several threads at once; a lost update only delays the average.
  void learn_speed(const Batch& batch) noexcept {
    if (batch.items == 0) return;
    const std::uint64_t measured = std::max<std::uint64_t>(1, batch.work_ns / batch.items);
    const std::uint64_t old = per_item_ns.load(std::memory_order_relaxed);
    per_item_ns.store(old == 0 ? measured : (3 * old + measured) / 4, std::memory_order_relaxed);
  }

  // Polled once per batch (and per in-memory item): turns the application's token into `stop`.
  bool should_stop() noexcept {
    if (options.cancel.cancelled()) stop_with(StopReason::cancelled);
    return stop.load(std::memory_order_relaxed);
  }

  template <class Deliver>
  RunStats run_stream(BatchSource& manifest, bool as_records, Deliver&& deliver);
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
    for (const auto& stage : stages) stage->latency.clear();
  }

  void summarize(RunStats& stats) {
    for (const auto& stage : stages) {
      if (!stage->reduces) continue;
      if (options.save_states && stage->spec.plugin->saves_state()) {
        Json state;
        stats.summaries[stage->spec.name] = stage->summarize(&state);
        stats.states[stage->spec.name] = std::move(state);
      } else {
        stats.summaries[stage->spec.name] = stage->summarize();
      }
    }
  }

  template <class F>
  void in_arena(F&& body) {
    // An arena wider than the machine needs the global worker limit raised too.
    std::optional<tbb::global_control> widen;
    if (threads > static_cast<std::size_t>(tbb::info::default_concurrency())) {
      widen.emplace(tbb::global_control::max_allowed_parallelism, threads);
    }
    tbb::task_arena arena(static_cast<int>(threads));
    // The arena may run `body` on one of its own threads.
    detail::handed_over(&detail::run_start_key);
    arena.execute([&] {
      detail::TbbBody tbb_body(&detail::run_start_key);
      body();
    });
    detail::taken_over(&detail::run_end_key);
  }
};

namespace {

// The threads of a latency-bound stage: each owns one plugin instance and takes batches from a
// queue that the stage's async_node fills, so a blocking call holds one of these threads and
// never a TBB worker.
class StagePool {
 public:
  using Node = tbb::flow::async_node<Batch*, Batch*>;
  using Gateway = Node::gateway_type;
  struct Work {
    std::function<void(Batch&, PluginInstance&)> whole;  // the stage over a whole batch
    // When set, a batch of several values is spread over the stage's threads in chunks: each
    // runs `chunk` over values [first, end) into its own vector, the last to finish runs `done`.
    std::function<void(Batch&, PluginInstance&, std::size_t, std::size_t, std::vector<Value>&)> chunk;
    std::function<void(Batch&, std::vector<std::vector<Value>>&, std::uint64_t)> done;
  };

  StagePool(StageRuntime& stage, Work work) : stage_(stage), work_(std::move(work)) {
    const std::size_t n = stage.spec.concurrency.limit;
    threads_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) threads_.emplace_back([this] { serve(); });
  }
  ~StagePool() {
    for (std::size_t i = 0; i < threads_.size(); ++i) queue_.push(Job{});
    for (std::thread& thread : threads_) thread.join();
  }
  StagePool(const StagePool&) = delete;
  StagePool& operator=(const StagePool&) = delete;

  // The async_node's body: hand the batch over and return at once.
  void submit(Batch* batch, Gateway& gateway) {
    gateway.reserve_wait();
    detail::handed_over(batch);
    const std::size_t n = batch->values.size();
    if (!work_.chunk || n < 2) {
      queue_.push(Job{batch, &gateway, nullptr, 0, 0, 0});
      return;
    }
    const std::size_t chunks = std::min(n, threads_.size());
    auto group = std::make_shared<Group>(chunks);
    for (std::size_t c = 0; c < chunks; ++c) queue_.push(Job{batch, &gateway, group, c, n * c / chunks, n * (c + 1) / chunks});
  }

 private:
  // The chunks of one batch in flight.
  struct Group {
    explicit Group(std::size_t chunks) : outs(chunks), remaining(chunks) {}
    std::vector<std::vector<Value>> outs;
    std::atomic<std::size_t> remaining;
    std::atomic<std::uint64_t> work_ns{0};
  };
  struct Job {
    Batch* batch = nullptr;
    Gateway* gateway = nullptr;
    std::shared_ptr<Group> group;
    std::size_t chunk = 0, first = 0, end = 0;
  };

  void serve() {
    PluginInstance* instance = nullptr;
    for (;;) {
      Job job;
      queue_.pop(job);
      if (job.batch == nullptr) break;
      if (instance == nullptr) instance = stage_.take_instance();
      if (!job.group) {
        work_.whole(*job.batch, *instance);
      } else {
        const auto start = std::chrono::steady_clock::now();
        work_.chunk(*job.batch, *instance, job.first, job.end, job.group->outs[job.chunk]);
        job.group->work_ns += static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
        if (job.group->remaining.fetch_sub(1) != 1) continue;  // another chunk hands the batch on
        work_.done(*job.batch, job.group->outs, job.group->work_ns.load());
      }
      job.gateway->try_put(job.batch);
      // try_put walked the node's successor list, which the graph frees after wait_for_all().
      detail::handed_over(&detail::run_end_key);
      job.gateway->release_wait();
    }
    if (instance != nullptr) stage_.give_back(instance);
  }

  StageRuntime& stage_;
  Work work_;
  tbb::concurrent_bounded_queue<Job> queue_;
  std::vector<std::thread> threads_;
};

}  // namespace

Engine::Engine(std::shared_ptr<const Plugin> plugin, const Json& config, RunOptions options)
    : Engine(Pipeline{{Stage{std::string(plugin ? plugin->name() : ""), plugin, config, Concurrency::unlimited()}}, 0},
             std::move(options)) {}

Engine::Engine(Pipeline pipeline, RunOptions options)
    : impl_(std::make_unique<Impl>(std::move(pipeline), std::move(options))) {}

Engine::~Engine() = default;

void Engine::request_stop() noexcept { impl_->stop_with(StopReason::cancelled); }

const Progress& Engine::progress() const noexcept { return impl_->progress; }

std::size_t Engine::threads() const noexcept { return impl_->threads; }

template <class Deliver>
RunStats Engine::Impl::run_stream(BatchSource& manifest, bool as_records, Deliver&& deliver) {
  reset_for_run();
  progress.total_bytes = manifest.size().value_or(0);
  RunStats stats;
  stats.threads = threads;
  const auto start = Clock::now();
  const std::string& name = manifest.name();
  const ManifestFormat format = manifest.format();
  ProgressReporter reporter(progress, options.on_progress, options.progress_interval);
  // A manifest read from a pipe waits for input in slices, giving up once the run is stopping.
  struct StopCheck {
    BatchSource& source;
    ~StopCheck() { source.set_stop_check({}); }
  } stop_check{manifest};
  manifest.set_stop_check([this] { return should_stop(); });
  auto finish = [&](Batch& batch) {
    deliver(batch);
    account(batch, stats);
  };

  if (options.serial) {
    // No TBB on this path: a debugger sees plugin -> engine -> main, one thread, in order.
    Batch batch;
    batch.as_records = as_records;
    batch.source = name;
    for (;;) {
      batch.start();
      if (!read_batch(manifest, batch, stats.skipped)) break;
      if (workers) {
        run_stage_isolated(batch, *detail::WorkerPool::Lease(*workers), name, format);
      } else {
        for (std::size_t s = 0; s < stages.size(); ++s) run_stage(batch, s, *stages[s]->primary, name, format);
      }
      learn_speed(batch);
      finish(batch);
    }
  } else {
    std::size_t tokens = options.max_in_flight != 0 ? options.max_in_flight : pipeline_in_flight;
    if (tokens == 0) {
      tokens = 4 * threads;
      for (const auto& stage : stages) tokens += stage->pooled ? stage->spec.concurrency.limit : 0;
    }
    BatchPool batches(tokens + 1, as_records, name);
    in_arena([&] {
      namespace flow = tbb::flow;
      flow::graph graph;
      std::uint64_t next_seq = 0;
      flow::input_node<Batch*> source(graph, [&](tbb::flow_control& control) -> Batch* {
        // A serial node: its state (next_seq, the manifest) passes from call to call.
        detail::TbbBody tbb_body;
        detail::SerialBody serial(&next_seq);
        Batch* batch = batches.take();
        detail::taken_over(batch);
        batch->start();
        if (!read_batch(manifest, *batch, stats.skipped)) {
          detail::handed_over(batch);
          batches.give_back(batch);
          control.stop();
          return nullptr;
        }
        batch->seq = next_seq++;
        detail::handed_over(batch);
        return batch;
      });
      flow::limiter_node<Batch*> limiter(graph, tokens);
      flow::make_edge(source, limiter);

      // One node per stage, chained; latency-bound stages hand batches to their own threads.
      std::vector<std::unique_ptr<flow::function_node<Batch*, Batch*>>> cpu_nodes;
      // Declared before the pools, so destroyed after them: a pool's threads are joined before
      // the async_node whose gateway they called last (release_wait ends after the graph's wait
      // may already have returned).
      std::vector<std::unique_ptr<StagePool::Node>> async_nodes;
      std::vector<std::unique_ptr<StagePool>> pools;
      flow::sender<Batch*>* previous = &limiter;
      for (std::size_t s = 0; s < stages.size(); ++s) {
        StageRuntime& stage = *stages[s];
        flow::receiver<Batch*>* node = nullptr;
        flow::sender<Batch*>* out = nullptr;
        if (stage.pooled) {
          StagePool::Work work;
          work.whole = [this, s, &name, format](Batch& batch, PluginInstance& instance) {
            detail::TbbBody tbb_body(&batch);
            run_stage(batch, s, instance, name, format);
          };
          if (splits(s)) {
            work.chunk = [this, s, &name](Batch& batch, PluginInstance& instance, std::size_t first, std::size_t end,
                                          std::vector<Value>& outputs) {
              detail::TbbBody tbb_body(&batch);
              run_values(batch, s, instance, first, end, outputs, name);
            };
            work.done = [this, s](Batch& batch, std::vector<std::vector<Value>>& outs, std::uint64_t work_ns) {
              detail::TbbBody tbb_body(&batch);
              join_chunks(batch, outs);
              finish_stage(batch, s);
              batch.work_ns += work_ns;
            };
          }
          pools.push_back(std::make_unique<StagePool>(stage, std::move(work)));
          StagePool* pool = pools.back().get();
          async_nodes.push_back(std::make_unique<StagePool::Node>(
              graph, flow::unlimited,
              [pool](Batch* batch, StagePool::Gateway& gateway) { pool->submit(batch, gateway); }));
          node = async_nodes.back().get();
          // An async_node sends through its output port, not through its sender base.
          out = &flow::output_port<0>(*async_nodes.back());
        } else {
          const std::size_t concurrency = stage.spec.concurrency.is_unlimited() ? std::size_t{flow::unlimited}
                                                                                : stage.spec.concurrency.limit;
          cpu_nodes.push_back(std::make_unique<flow::function_node<Batch*, Batch*>>(
              graph, concurrency, [this, s, &stage, &name, format](Batch* batch) {
                detail::TbbBody tbb_body(batch);
                if (workers) {
                  detail::WorkerPool::Lease worker(*workers);
                  run_stage_isolated(*batch, *worker, name, format);
                  return batch;
                }
                if (splits(s) && batch->values.size() > 1) {
                  run_stage_split(*batch, s, name);
                  return batch;
                }
                StageRuntime::Lease lease(stage);
                run_stage(*batch, s, *lease, name, format);
                return batch;
              }));
          node = cpu_nodes.back().get();
          out = cpu_nodes.back().get();
        }
        flow::make_edge(*previous, *node);
        previous = out;
      }

      flow::function_node<Batch*, flow::continue_msg> writer(graph, flow::serial, [&](Batch* batch) {
        // A serial node: `stats` and the sink pass from call to call.
        detail::TbbBody tbb_body(batch);
        detail::SerialBody serial(&stats);
        learn_speed(*batch);
        finish(*batch);
        detail::handed_over(batch);
        batches.give_back(batch);
        return flow::continue_msg();
      });
      // Ordered: batches are written from the reorder buffer, in sequence, by the thread that
      // completes the next one; unordered: by a serial writer node, as they come.
      auto write_in_order = [&](Batch* batch) {
        // One writer at a time (ReorderBuffer): `stats` and the sink pass between them.
        finish(*batch);
        detail::handed_over(batch);
        batches.give_back(batch);
      };
      auto release_token = [&limiter] { limiter.decrementer().try_put(flow::continue_msg()); };
      detail::ReorderBuffer<Batch*, decltype(write_in_order), decltype(release_token)> reorder_buffer(
          options.reorder_budget_bytes != 0 ? options.reorder_budget_bytes : default_reorder_budget_bytes,
          write_in_order, release_token);
      flow::function_node<Batch*, flow::continue_msg> reorder(graph, flow::unlimited, [&](Batch* batch) {
        detail::TbbBody tbb_body(batch);
        learn_speed(*batch);
        // A parked batch also takes a slot in the pool's list of batches.
        reorder_buffer.put(batch->seq, batch, footprint(*batch) + sizeof(std::unique_ptr<Batch>));
        return flow::continue_msg();
      });
      if (options.ordered) {
        flow::make_edge(*previous, reorder);
      } else {
        flow::make_edge(*previous, writer);
        flow::make_edge(writer, limiter.decrementer());
      }
      // The nodes and their bodies were built on this thread; TBB's threads run them.
      detail::handed_over(&detail::run_start_key);
      source.activate();
      graph.wait_for_all();
      // The nodes and their bodies are destroyed here, after the last body ran on another thread.
      detail::taken_over(&detail::run_end_key);
    });
  }
  reporter.stop();
  summarize(stats);
  stats.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  stats.stopped = stop_reason.load();
  if (options.measure) collect_stage_stats(stats);
  return stats;
}

Json summarize_states(const Stage& stage, std::span<const Json> states) {
  if (!stage.plugin->saves_state()) {
    throw PluginError("plugin " + std::string(stage.plugin->name()) + " (stage '" + stage.name +
                      "') does not save its partial state (save() and load()), so states of several runs cannot "
                      "be merged");
  }
  const Json config = stage.plugin->resolve_config(stage.config);
  PluginInstance total(stage.plugin, config);
  std::string error;
  for (const Json& entry : states) {
    const auto state = entry.find("state");
    if (state == entry.end()) {
      return {{"error", entry.contains("error") ? entry["error"] : Json("a partial state is missing")}};
    }
    PluginInstance part(stage.plugin, config);
    if (!part.load_state(*state, error) || !total.merge(part, error)) return {{"error", error}};
  }
  Json summary;
  if (!total.summary(summary, error)) return {{"error", error}};
  return summary;
}

Engine::Engine(ItemFunction function, RunOptions options)
    : Engine(Plugin::from_function(std::move(function)), Json::object(), std::move(options)) {}

RunStats Engine::run(BatchSource& manifest, Sink& sink) {
  return impl_->run_stream(manifest, false, [&](Batch& batch) { sink.write(batch.out); });
}

RunStats Engine::run(BatchSource& manifest, const RecordCallback& on_record) {
  return impl_->run_stream(manifest, true, [&](Batch& batch) {
    for (const Record& record : batch.records) on_record(record);
  });
}

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
