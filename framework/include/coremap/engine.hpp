// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The engine: a pipeline of plugins (one stage for `--plugin`) over every item of a manifest,
/// streamed through a tbb::flow::graph with a bounded number of batches in flight, or serially
/// on the calling thread; or one plugin over a range already in memory (in chunks, on the core
/// that coremap/map.hpp's typed map runs on). One per-item code path serves them all.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <coremap/cache.hpp>
#include <coremap/export.hpp>
#include <coremap/latency_histogram.hpp>
#include <coremap/index_set.hpp>
#include <coremap/manifest.hpp>
#include <coremap/pipeline.hpp>
#include <coremap/plugin.hpp>
#include <coremap/plugin_loader.hpp>
#include <coremap/progress.hpp>
#include <coremap/record.hpp>
#include <coremap/sink.hpp>

namespace coremap {

/// A flag an application sets, from any thread, to stop a run: the engine stops taking new
/// items and delivers what is done; items in progress see Context::cancelled() turn true once
/// the engine has looked at the token (it does before each item and each batch, and every
/// 50 ms while it waits for manifest input), and get no record (see Engine). Copies share the
/// flag.
///
/// The flag stays set until reset(): a run that starts with a cancelled token (RunOptions::
/// cancel, a typed map's) stops before its first item, so a cancel() that comes just
/// before a run starts is not lost; and every later run with the token stops at once too,
/// until reset() (or give each run a token of its own).
///
/// Thread safety: every member may be called from any thread; cancel() also from a signal
/// handler (a lock-free atomic store).
class CancellationToken {
 public:
  CancellationToken() : flag_(std::make_shared<std::atomic<bool>>(false)) {}
  void cancel() const noexcept { flag_->store(true, std::memory_order_relaxed); }
  bool cancelled() const noexcept { return flag_->load(std::memory_order_relaxed); }
  /// Clears the flag (for every copy), so the token can be used for another run. Call it
  /// between runs: a reset while a run that uses the token goes on undoes a cancel() the run
  /// has not looked at yet (one it has seen stays a stop).
  void reset() const noexcept { flag_->store(false, std::memory_order_relaxed); }

 private:
  std::shared_ptr<std::atomic<bool>> flag_;
};

/// The most threads a run may ask for (RunOptions::threads, the CLI's
/// --threads).
inline constexpr std::size_t max_threads = 4096;

/// Empty when `count`, a thread count as written (decimal digits), is one a run may ask for:
/// 1 to max_threads. Else why not, the one sentence the library's UsageError ("threads: ...")
/// and the CLI's --threads error both give. The options' default, 0, means all cores and is
/// not checked here (the CLI has no 0: leaving --threads out means all cores).
COREMAP_EXPORT std::string thread_count_error(std::string_view count);

/// A point of a run at which its reducing stages' state is consistent with its records
/// (RunOptions::on_checkpoint): every manifest item with an index below `items` is done (its
/// records, if it has any, were handed to the sink or record callback before the call; the
/// sink is not synced), no item at or above it was started, and `states` is each reducing
/// stage's merged partial state over exactly those items (with the RunOptions::resume_states
/// the run started from).
struct Checkpoint {
  /// Items covered: every index below this one.
  std::uint64_t items = 0;
  /// Each reducing stage's partial state, by stage name: {"state": ...} as the plugin's save()
  /// wrote it; load it back through RunOptions::resume_states.
  Json states = Json::object();
  /// True for the checkpoint a run takes when it reached the manifest's end (not stopped).
  bool last = false;
};

/// Receives checkpoints, on the thread that called Engine::run(), between batches (nothing
/// is being processed meanwhile). An exception it throws ends the run: run() rethrows it.
using CheckpointCallback = std::function<void(const Checkpoint& checkpoint)>;

/// How one isolated worker is to be started (RunOptions::worker_launcher): coremap-worker's
/// command line and what its process gets before it runs.
struct WorkerLaunch {
  /// coremap-worker's arguments, argv[0] first (the executable, which a launcher need not exec).
  std::vector<std::string> arguments;
  /// "NAME=VALUE" added to the worker's environment: marks its process tree.
  std::string environment_entry;
  /// The engine's end of the channel is its own; this end becomes the worker's standard input
  /// (batches in). The launcher may close its copies once the worker has its own.
  int channel_fd = -1;
  /// The write end of the pipe the worker's outcomes come back through: its standard output.
  int results_fd = -1;
  /// The page the worker and the engine share (a memfd), or -1.
  int note_fd = -1;
};

/// Starts the worker process for `launch` and returns its pid. The process must be a child of
/// the calling process (the engine waits for it, reads its exit status and kills its process
/// group), and must run become_worker(launch) with the same descriptors (its own copies, at any
/// numbers). Called from the engine's threads, several at once. Returns -1 to decline: the
/// engine then starts coremap-worker as it does without a launcher. Throws to fail (the engine
/// then reports a PluginError with the message).
using WorkerLauncher = std::function<int(const WorkerLaunch& launch)>;

/// What a launched worker process runs (coremap-worker's main, after the set-up posix_spawn
/// gives it): moves the channel to standard input, the results pipe to standard output and the
/// note page to its
/// descriptor, closes every other descriptor above standard error, unblocks every signal and
/// resets every handled one to its default, starts a process group of its own, adds the
/// environment entry, then runs the worker protocol until the engine closes the channel, and
/// exits the process (_exit). Never returns.
[[noreturn]] COREMAP_EXPORT void become_worker(const WorkerLaunch& launch) noexcept;

/// How a run is carried out.
struct RunOptions {
  /// Threads; 0 (the default) means all the calling thread may use: the cores of the machine
  /// (tbb::info::default_concurrency()), or the width of the application's tbb::task_arena it
  /// is called in. Else 1 to max_threads (more throws UsageError), and may exceed the core
  /// count. An application's tbb::global_control (max_allowed_parallelism) caps it either
  /// way; RunStats::threads and Engine::threads() report the capped count, what the run gets.
  std::size_t threads = 0;
  /// Run on the calling thread, in order, with no TBB in the call path (for debuggers).
  bool serial = false;
  /// Write records in index order (the default: serial and parallel output are byte-identical);
  /// false writes them as they finish.
  bool ordered = true;
  /// Stop taking new items once this many items have failed; 0 means never.
  std::uint64_t max_errors = 0;
  /// Bound on batches of items being processed or waiting for the writer; 0 means four per
  /// thread. In an ordered run, batches finished behind one still being processed wait beside
  /// this bound (up to `reorder_budget_bytes` of them), so a slow item does not stall the
  /// threads.
  std::size_t max_in_flight = 0;
  /// Ordered runs: memory the batches waiting behind a slower one may hold beside
  /// `max_in_flight`; over it, they count against `max_in_flight` again. 0 means 64 MiB.
  /// Counted as the heap blocks a batch holds (the batch, its buffers' capacity, every JSON
  /// value of its records), so it bounds the process's memory whatever the items are.
  std::size_t reorder_budget_bytes = 0;
  /// Calls a failed item gets again before its failure is recorded (the record's `attempts`
  /// says how many it took). Not retried once the run is being stopped.
  std::uint32_t retries = 0;
  /// Per-item time limit; 0 means none. In-process no thread is killed: Context::cancelled()
  /// turns true at the deadline, and an item that ends past it is recorded as timed out with
  /// its result discarded. With `isolate` the same holds inside the worker, which is then
  /// replaced; an item that has not returned 2 s past its deadline has its worker killed (with
  /// its descendants) and replaced.
  std::chrono::milliseconds timeout{0};
  /// Items run() skips without a record (those an earlier run already recorded: see
  /// ResumableOutput). Null skips none.
  std::shared_ptr<const IndexSet> skip{};
  /// Cancels the run when set.
  CancellationToken cancel{};
  /// Run every stage's plugin in worker processes (coremap-worker, one per thread and stage)
  /// instead of in this process, as Stage::isolate does for one stage: an item that crashes
  /// its worker (a signal, exit(), the memory limit) becomes that item's error record, the
  /// worker is replaced and the run goes on. Records, fan-out, drops, retries, timeouts and
  /// summaries are those of the run in process; a reducing plugin's partial state comes back
  /// from the workers with each item's outcome (save()), and is merged here (load(), merge(),
  /// summary() run in this process). Needs plugins loaded from shared libraries, and reducing
  /// plugins that save state (Plugin::saves_state()); UsageError otherwise. Applies to run(),
  /// map() refuses it. See docs/reliability.md#crash-isolation.
  bool isolate = false;
  /// Each isolated stage's workers' address-space limit (RLIMIT_AS) in bytes, where the stage
  /// sets none (Stage::memory_limit_bytes); 0 means none. Needs an isolated stage.
  std::size_t memory_limit_bytes = 0;
  /// With `isolate`: starts each worker instead of posix_spawn'ing coremap-worker (the Python
  /// package forks its workers from a copy of the calling interpreter, docs/python.md). The
  /// worker speaks the same protocol and is watched, killed and replaced the same way. Null:
  /// coremap-worker.
  WorkerLauncher worker_launcher{};
  /// Called every `progress_interval` from a background thread while a run goes on, and once
  /// more after the run's last record, with the final counters (done == records delivered).
  /// An exception it throws does not cut the run short and does not end the process: the
  /// callback is not called again, and run() or map() rethrows the exception when the run is
  /// over (the records were all delivered; the sink is not finished).
  ProgressCallback on_progress{};
  std::chrono::milliseconds progress_interval{200};
  /// Time every process() call (with `retries`, the calls of one item together) and report
  /// per-stage latency in RunStats::stages. Costs two clock reads per item; when false, one
  /// branch. Not with `isolate` (the calls happen in the worker processes).
  bool measure = false;
  /// The result cache (docs/cache.md): with `cache.directory` set, run() looks each item up
  /// by its key (plugin builds, resolved configs, the item's canonical JSON, its `path`
  /// file as `cache.files` says) and replays a stored outcome instead of calling the plugins;
  /// misses run and are stored by a background thread. Records are the same as without the
  /// cache, in the same order. Caches the pipeline's stages up to the first that reduces or is
  /// not cacheable (Plugin::cacheable(); RunStats::cache says how many). Throws UsageError
  /// (from the constructor) with `isolate`, or when the database cannot be used. map() does
  /// not use a cache: it throws UsageError when one is set. Thread safety: several engines
  /// and processes may share one directory at once.
  CacheOptions cache{};
  /// Also keep each reducing stage's merged partial state (RunStats::states) where its plugin
  /// saves state (Plugin::saves_state()): what an MPI processing rank sends to rank 0.
  bool save_states = false;
  /// Engine::run() with reducing stages: take a checkpoint (Checkpoint) at least this long
  /// after the previous one, and not sooner than 20 times the time the previous one took (so
  /// checkpoints cost at most about 5 % of the run), and one more when the run reaches the
  /// manifest's end. Taking one lets the items in flight finish, with no new batch started
  /// meanwhile, then folds each reducing stage's per-thread instances into one carried
  /// instance and saves its state (the instances are made afresh). Needs every reducing
  /// stage's plugin to save state (Plugin::saves_state(): UsageError otherwise); isolated
  /// stages included (their workers' states are merged here as items finish). Null: no
  /// checkpoints.
  CheckpointCallback on_checkpoint{};
  std::chrono::milliseconds checkpoint_interval{10000};
  /// The states of a Checkpoint (its `states`) to continue from: each reducing stage starts
  /// from its entry, loaded with the plugin's load() (PluginError when that throws or an entry
  /// is missing; UsageError when the plugin does not save state). Pair it with `skip` holding
  /// the checkpoint's items. Null: start from nothing.
  Json resume_states{};
  /// Items in memory (Engine::map, coremap::map and map_into): items per chunk, the unit of
  /// scheduling, delivery and progress; 0 (the default) chooses one (about 64 chunks per
  /// thread, at most 2048 items each). Engine::run cuts its manifest into batches sized by
  /// time instead, and throws UsageError when this is not 0.
  std::size_t grain = 0;
};

/// Receives records one at a time, never from two threads at once: in index order, or as items
/// finish when the run is unordered.
using RecordCallback = std::function<void(const Record& record)>;

/// A per-item function the engine runs directly, with no plugin class or shared library. It is
/// called from several threads at once, so it must be safe to; a plugin class (one instance per
/// thread, see Plugin::from_class) is the way to keep per-thread state.
using ItemFunction = std::function<Json(const Json& item, Context& context)>;

/// Where one stage's time went, when RunOptions::measure is set. Durations in nanoseconds;
/// percentiles are nearest-rank, from a LatencyHistogram (at most 3.1 % above the true value).
struct StageStats {
  std::string name;
  /// Calls that could run at once: 1 for a serial stage or a serial run, the stage's limit,
  /// or the run's thread count for "unlimited".
  std::size_t concurrency = 0;
  /// The stage is latency-bound and ran on `concurrency` threads of its own (Engine(Pipeline)).
  bool latency_bound = false;
  std::uint64_t calls = 0;    ///< items (or values from the previous stage) processed
  std::uint64_t busy_ns = 0;  ///< sum of the calls' durations
  std::uint64_t p50_ns = 0;
  std::uint64_t p95_ns = 0;
  std::uint64_t p99_ns = 0;
  std::uint64_t max_ns = 0;
  /// Every call's duration, bucketed: the figures above come from it, and histograms of
  /// several runs or processes merge (LatencyHistogram::merge) into exact totals.
  LatencyHistogram latency;

  /// Sets calls, busy_ns, the percentiles and max_ns from `latency` (after it changed).
  void take_figures_from_latency() noexcept {
    calls = latency.count();
    busy_ns = latency.sum();
    p50_ns = latency.percentile(0.50);
    p95_ns = latency.percentile(0.95);
    p99_ns = latency.percentile(0.99);
    max_ns = latency.max();
  }
};

/// The aggregate of one reducing stage (a plugin with merge() and summary()): a value or an
/// error, never both. `ok` with `value` the plugin's summary() as it returned it (any JSON: an
/// object with an "error" key is the plugin's value like any other), `error` empty; or not `ok`
/// with `error` saying why there is no aggregate (merge(), summary(), save() or load() threw,
/// or a partial state to merge was itself an error or missing) and `value` null. A failed
/// reduction does not fail the run's items: RunStats counts them as usual.
struct StageSummary {
  bool ok = false;
  Json value;
  std::string error;

  static StageSummary success(Json value) { return {true, std::move(value), {}}; }
  static StageSummary failure(std::string error) { return {false, nullptr, std::move(error)}; }
  friend bool operator==(const StageSummary&, const StageSummary&) = default;
};

/// The reducing stages' aggregates by stage name (in name order, as `coremap run --summary`
/// writes them).
using StageSummaries = std::map<std::string, StageSummary>;

/// The aggregate of a reducing stage over partial states that several runs saved (RunStats::states
/// with RunOptions::save_states, e.g. of MPI ranks): each state loaded into a fresh instance of
/// the stage's plugin, merged in order and summarised, as a run merges its threads' instances.
/// `states` are entries of RunStats::states. A failed StageSummary when one of them is an error
/// or a plugin call (load, merge, summary) throws. Throws PluginError when the plugin does not
/// save state (Plugin::saves_state()) or its constructor throws.
COREMAP_EXPORT StageSummary summarize_states(const Stage& stage, std::span<const Json> states);

/// Why a run ended before the manifest's end.
enum class StopReason { none, max_errors, cancelled };

/// What a run did.
struct RunStats {
  std::uint64_t items = 0;    ///< manifest items processed (skipped ones not counted)
  std::uint64_t records = 0;  ///< records written: one per item, or what fan-out emitted
  std::uint64_t ok = 0;       ///< ok records
  std::uint64_t failed = 0;   ///< error records
  std::uint64_t skipped = 0;  ///< items passed over because RunOptions::skip held them
  /// Items taken from the manifest (or given to map()) that have no record because the run was
  /// stopped (an interrupt, `max_errors`, cancellation): started but cut short by the stop, or
  /// not started. Not in `items`. A resumed run (RunOptions::skip) processes them. map() knows
  /// every item, so there items + not_run is the number given; run() does not read the
  /// manifest past a stop (it may be a pipe), so there it counts the items it had read ahead,
  /// and items + not_run may be below the manifest's count. Otherwise the two count alike.
  std::uint64_t not_run = 0;
  double wall_seconds = 0;
  /// Threads the run could use at once: RunOptions::threads resolved (0: the calling thread's
  /// arena), capped by the application's tbb::global_control; 1 when serial.
  std::size_t threads = 0;
  StopReason stopped = StopReason::none;
  /// The aggregate of each stage whose plugin reduces, by stage name: the plugin's summary()
  /// (StageSummary::ok), or the error when merging or summarising threw. Empty when none reduces.
  StageSummaries summaries;
  /// With RunOptions::save_states: each reducing stage's merged partial state (Plugin
  /// saves_state()), by stage name, for summarize_states(): {"state": ...} as the plugin's
  /// save() wrote it, or {"error": "..."} when merging or saving threw.
  Json states = Json::object();
  /// With RunOptions::cache: hits, misses, what was stored, and what to tell the user.
  CacheRunStats cache;
  /// With RunOptions::measure: one entry per stage, in pipeline order; empty otherwise.
  std::vector<StageStats> stages;

  double items_per_second() const noexcept {
    return wall_seconds > 0 ? static_cast<double>(items) / wall_seconds : 0.0;
  }
};

/// Maps one plugin over items on all cores.
///
/// \code
/// auto plugin = coremap::PluginLoader().load("sha256");
/// coremap::Engine engine(plugin, coremap::Json::object(), {.threads = 8});
/// coremap::ManifestReader manifest("files.txt");
/// coremap::FileSink out("hashes.jsonl");
/// coremap::RunStats stats = engine.run(manifest, out);
/// out.finish();
/// \endcode
///
/// The engine keeps one plugin instance per thread (one shared instance when the plugin
/// is reentrant), so `process()` is never entered by two threads on one instance. An exception
/// from `process()` becomes that item's error record and the run goes on.
///
/// Thread safety: run() and map() are called from one thread at a time; request_stop() and
/// progress() from any thread, and request_stop() from a signal handler.
///
/// Moving: an Engine is movable (not copyable); the new one takes over the stages, their
/// instances and the options, and keeps working exactly as the old one would have. Move only
/// when no run is in progress and no other thread (or signal handler) may call request_stop()
/// or progress() on the old one meanwhile. A moved-from Engine may be destroyed or assigned to;
/// besides, threads() returns 0, request_stop() does nothing, progress() reads counters that
/// stay at 0, and run() and map() throw UsageError.
class COREMAP_EXPORT Engine {
 public:
  /// Validates `config` against the plugin's declared keys and constructs the first instance:
  /// throws ConfigError or PluginError (setup errors) before any item is read.
  Engine(std::shared_ptr<const Plugin> plugin, const Json& config, RunOptions options = {});
  /// Runs `function` per item (Plugin::from_function).
  explicit Engine(ItemFunction function, RunOptions options = {});
  /// Runs the stages of `pipeline` in order (run() only; map() runs one-stage pipelines). A
  /// stage whose concurrency is a number above the thread count is latency-bound: it gets
  /// that many threads of its own, so its blocking calls never hold the engine's threads.
  /// Validates every stage's config and constructs each stage's first instance.
  explicit Engine(Pipeline pipeline, RunOptions options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  /// Takes over `other`'s stages and options; `other` is left moved-from (see above).
  Engine(Engine&& other) noexcept;
  /// Ends this engine's stages (as the destructor does) and takes over `other`'s.
  Engine& operator=(Engine&& other) noexcept;

  /// Streams the items of `manifest` (a ManifestReader, or any other BatchSource) through the
  /// plugin into `sink`, with a bounded number of items in flight. Throws what the source or
  /// the sink throws (ManifestError, OutputError); item failures are records, not exceptions.
  /// Does not call sink.finish().
  RunStats run(BatchSource& manifest, Sink& sink);

  /// The same run, handing each record to `on_record` instead of writing JSON Lines.
  RunStats run(BatchSource& manifest, const RecordCallback& on_record);

  /// Maps the plugin over items already in memory (in chunks on the run's threads, each chunk
  /// with one plugin instance, as coremap::map_into runs typed items); returns one record
  /// per item, in index order (records[i].index == i) unless the run was stopped: then only
  /// the items done before the stop have a record, still in index order (Record::index says
  /// which item), and RunStats::not_run counts the others.
  std::vector<Record> map(std::span<const Json> items, RunStats* stats = nullptr);

  /// The same, handing each record to `on_record` as soon as its chunk (and, when ordered, every
  /// chunk before it) is done, so the application never holds them all. Items the stop left
  /// unrun are not handed over (RunStats::not_run counts them).
  RunStats map(std::span<const Json> items, const RecordCallback& on_record);

  /// Stops the run: no new item is started, items in progress see Context::cancelled() turn
  /// true, and a manifest being waited on (a pipe) is left within about 50 ms. An item the stop
  /// cut short gets no record: whatever process() returns once the run is stopping (an
  /// error, or a result computed after it saw cancelled()) is discarded, and for a fanned-out
  /// item none of its records are written, so a resumed run (RunOptions::skip) processes it
  /// whole. The same holds for a stop by `max_errors` (the failure that reaches it is
  /// recorded) and by RunOptions::cancel. A per-item `timeout` is not a stop: that item is
  /// recorded as timed out. Async-signal-safe.
  ///
  /// A request is for one run: the one in progress, or, when none is, the next one, which
  /// then stops before its first item (so a request just before run() or map() starts is not
  /// lost). Each run ends by clearing it, so the run after is not stopped by it.
  void request_stop() noexcept;

  /// Live counters of the current (or last) run.
  const Progress& progress() const noexcept;

  /// The thread count runs use, resolved when the engine was built (see RunOptions::threads);
  /// a run reports what it got in RunStats::threads (lower when the application's
  /// tbb::global_control changed since).
  std::size_t threads() const noexcept;

 private:
  struct Impl;
  // The Impl, or a UsageError naming `what` when this engine was moved from.
  Impl& impl(const char* what) const;
  std::unique_ptr<Impl> impl_;
};

}  // namespace coremap
