// SPDX-License-Identifier: MIT
#pragma once

// The engine's side of crash isolation (`RunOptions::isolate`): a worker process that runs
// the plugin, and the pool that gives each engine thread its own, the way the in-process path
// gives each thread its own PluginInstance.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <coremap/engine.hpp>
#include <coremap/manifest.hpp>
#include <coremap/pipeline.hpp>

#include "per_thread_pool.hpp"
#include "worker_note.hpp"
#include "worker_protocol.hpp"

namespace coremap::detail {

/// What every worker of one engine is started with.
struct WorkerSettings {
  std::filesystem::path executable;  ///< coremap-worker
  std::string plugin_path;           ///< absolute path of the plugin library
  std::string plugin_name;
  std::string config;                ///< the resolved config, as JSON text
  std::uint64_t memory_limit_bytes = 0;
  std::chrono::milliseconds timeout{0};
  std::uint32_t retries = 0;  ///< RunOptions::retries: exceptions retried in the worker, crashes here
  /// The plugin reduces: each outcome comes with the worker's partial state of that call
  /// (OutcomeHandler::on_state), which the engine merges into the stage's state.
  bool sends_state = false;
  /// The engine's stop flag (null: never stopped). Once it is set, a worker running an item is
  /// told (Context::cancelled()), given stop_grace to return, then killed with its descendants.
  const std::atomic<bool>* stop = nullptr;
  /// RunOptions::worker_launcher: starts the worker instead of posix_spawn (null: posix_spawn).
  WorkerLauncher launch{};
};

/// How long a worker's item may take to return after it saw Context::cancelled() (a stop, or
/// its --timeout deadline), and how long a worker that closed its channel or called exit()
/// may take to end: the exec plugin's SIGTERM-then-SIGKILL grace (500 ms) and some. Past it
/// the worker is killed with its descendants.
inline constexpr std::chrono::milliseconds stop_grace{2000};

/// The coremap-worker executable: $COREMAP_WORKER when set, else lib/coremap/coremap-worker
/// beside libcoremap (build tree and install tree alike).
std::filesystem::path worker_executable();

/// The settings for stage `stage` (config resolved) run in worker processes with `options`:
/// the stage's own memory limit, else RunOptions::memory_limit_bytes. Throws UsageError when the
/// plugin was not loaded from a library, or reduces without save() and load() (its partial
/// state could not come back from the workers); PluginError when coremap-worker is not found.
WorkerSettings worker_settings(const Stage& stage, const RunOptions& options);


/// Receives each item's outcome from WorkerProcess::run, in batch order (not a coremap::Sink:
/// the outcomes become records in the engine).
class OutcomeHandler {
 public:
  /// `attempts`: the calls an error_message outcome took (a crash retried with --retries).
  virtual void on_result(const RawItem& item, ItemOutcome outcome, std::string_view text, std::uint32_t attempts) = 0;
  /// Before on_result, for a plugin that reduces (WorkerSettings::sends_state) and ran the
  /// item: what its calls added to the reduction, saved (`saved`: `bytes` is the state as CBOR),
  /// or why save() failed (`bytes` is the message).
  virtual void on_state(bool saved, std::string_view bytes) = 0;

 protected:
  ~OutcomeHandler() = default;
};

/// One coremap-worker process running one plugin instance, replaced whenever it dies.
///
/// Thread safety: one thread at a time.
class WorkerProcess {
 public:
  /// Starts the worker and waits until it has constructed the plugin instance. Throws
  /// PluginError when the worker cannot be started, the plugin cannot be loaded or constructed
  /// in it, or the worker dies on the way.
  explicit WorkerProcess(const WorkerSettings& settings);
  /// Ends the worker: closes its channel (it exits at end of input), reaps it, and kills it if
  /// it has not exited within two seconds.
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  /// Runs the items of `batch` in the worker and hands every outcome to `handler`, in order. An
  /// item whose worker dies (a signal, exit(), the memory limit), breaks the protocol (junk on
  /// the channel, a closed channel) or outlives its timeout and the grace after it gets an
  /// error message saying so; the worker is killed with its descendants and replaced, and the
  /// rest of the batch resent. A worker's death is seen from the process itself (a pidfd, or
  /// waitid), so a child holding a copy of the channel cannot hide it.
  /// When the run stops (WorkerSettings::stop), the item in the worker is cancelled, its
  /// outcome (if it comes within stop_grace) handed on, and the worker is killed with its
  /// descendants; the rest of the batch gets no outcome.
  /// Throws PluginError when a replacement cannot be started.
  /// `mode` (BatchMode bits): values in, values out. With batch_values_out every outcome is
  /// ItemOutcome::values or call_error (a crash's message then bare too), or error_message for
  /// an item that could not be parsed.
  void run(const ItemBatch& batch, const std::string& manifest_name, ManifestFormat format, OutcomeHandler& handler,
           std::uint8_t mode = 0);

  /// Closes the channel without waiting; the destructor then only reaps.
  void close() noexcept;

 private:
  void start();
  // Why the worker ended, for the item it was running; kills what is left of its tree and
  // reaps it. Waits up to stop_grace for a worker that is still running to end.
  std::string reap_and_describe(bool saw_out_of_memory);
  void kill_and_reap() noexcept;
  // Whether the worker has ended (not reaped: its pid stays ours); waits up to `wait`.
  bool wait_exited(std::chrono::milliseconds wait) noexcept;
  bool send_all(std::string_view data) noexcept;
  enum class Wait { frame, closed, exited, corrupt, timed_out, stopped };
  // Reads until a frame is complete, the worker closes the channel, the worker process ends
  // (after the frames it wrote before are read), the stream breaks the protocol (its message
  // in protocol_error_), `deadline` passes (never, when it is time_point::max()), or the run
  // stops (once: the caller then waits for the item's outcome until its grace ends).
  Wait receive(Frame& frame, std::chrono::steady_clock::time_point deadline, bool watch_stop);
  void release_note() noexcept;
  // Kills and reaps what the worker left behind that was re-parented to this process (when it
  // is a child subreaper, as the CLI is): its children that carry the worker's tree_entry_.
  void kill_adopted() noexcept;

  const WorkerSettings& settings_;
  pid_t pid_ = -1;
  int fd_ = -1;
  int results_fd_ = -1;            // the read end of the worker's outcomes (a pipe, non-blocking)
  int pidfd_ = -1;                 // the worker's pidfd, -1 where the kernel has none
  WorkerNote* note_ = nullptr;     // the page shared with this worker (worker_note.hpp)
  std::string protocol_error_;
  std::string tree_entry_;         // "COREMAP_WORKER_TREE=..." in the worker's environment
  FrameWriter out_;
  FrameReader in_;
};

/// One worker per engine thread, started on the thread's first batch and kept for the engine's
/// lifetime. The first is started by the constructor, so a plugin that cannot be loaded or
/// constructed in a worker is a setup error before any item is read.
///
/// Thread safety: Lease may be taken from any thread.
class WorkerPool {
 public:
  explicit WorkerPool(WorkerSettings settings);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  /// The calling thread's worker, for one batch. The worker is not re-entered: the batch
  /// blocks in it, running no TBB work meanwhile.
  class Lease : public PerThreadPool<WorkerProcess>::Lease {
   public:
    explicit Lease(WorkerPool& pool) : PerThreadPool<WorkerProcess>::Lease(pool.workers_) {}
  };

 private:
  WorkerSettings settings_;
  // Started outside the pool's lock: threads starting their workers at once load the plugin in
  // parallel.
  PerThreadPool<WorkerProcess> workers_;
};

}  // namespace coremap::detail
