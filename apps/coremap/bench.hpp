// SPDX-License-Identifier: MIT
#pragma once

// `coremap bench`'s sweep, apart from how each run is made: in this process (bench_command.cpp)
// or across the ranks of an MPI job (mpi_bench.cpp). Same table, JSON and SVG either way.

#include <signal.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "commands.hpp"

namespace coremap::cli::bench {

/// One processing rank's share of a run across MPI ranks.
struct RankShare {
  int rank = 0;
  std::string host;
  std::uint64_t items = 0;
  std::uint64_t chunks = 0;
  std::size_t threads = 0;
  double busy_seconds = 0;  ///< from the run's start until its last records reached rank 0
  double cpu_seconds = 0;
};

/// What one run did and took.
struct Timed {
  RunStats stats;
  double wall_seconds = 0;
  std::vector<RankShare> ranks;  ///< empty for a run in this process
};

/// Makes the runs of a sweep.
class Runner {
 public:
  virtual ~Runner() = default;
  /// Processes that run the items of a non-serial row: 1 here, the processing ranks under MPI.
  virtual std::size_t ranks() const = 0;
  /// One run over the manifest, timed from opening it to the last record written to `sink`:
  /// --serial (always in this process) or `threads` per rank; `isolate`: the plugin in worker
  /// processes (RunOptions::isolate; only in this process); with `measure`, each process()
  /// call is timed (RunOptions::measure) and stats.stages filled (not with `isolate`).
  virtual Timed run(bool serial, std::size_t threads, bool isolate, bool measure, Sink& sink) = 0;
  /// Asks the run in progress, if any, to stop (Engine::request_stop): async-signal-safe.
  virtual void request_stop() noexcept {}
  /// The "mpi" object of --json (null for a run in this process).
  virtual Json describe() const { return nullptr; }
  /// Warnings about where the ranks ran (oversubscribed nodes ...).
  virtual std::vector<std::string> warnings(std::size_t /*threads*/) const { return {}; }
};

/// Runs in this process: one Engine per row (and one more for the measured run).
class LocalRunner final : public Runner {
 public:
  /// `base`: what every run shares beside threads, serial, isolate and measure (retries,
  /// ordered).
  LocalRunner(const Pipeline& pipeline, ManifestFormat format, std::string manifest, RunOptions base = {})
      : pipeline_(pipeline), format_(format), manifest_(std::move(manifest)), base_(std::move(base)) {}
  std::size_t ranks() const override { return 1; }
  Timed run(bool serial, std::size_t threads, bool isolate, bool measure, Sink& sink) override;
  void request_stop() noexcept override;

 private:
  const Pipeline& pipeline_;
  ManifestFormat format_;
  std::string manifest_;
  RunOptions base_;
  CancellationToken stop_;  // cancelled by request_stop(): every run from then on stops
  std::optional<Engine> engine_;
  // The engine of the run in progress, for request_stop() from a signal handler.
  std::atomic<Engine*> running_{nullptr};
  bool serial_ = false, measure_ = false, isolate_ = false;
  std::size_t threads_ = 0;
};

/// Thrown by sweep() when a stop signal (SIGINT, SIGTERM, ...) arrived: the run in progress was
/// stopped, and the files bench was writing (--output, --json, --svg) are removed as the
/// exception unwinds (their FILE.part, never renamed into place).
struct Interrupted {
  int signal_number = 0;
};

/// Catches the stop signals (SIGINT, SIGTERM, SIGHUP, and the others `run` treats so) for its
/// lifetime: the first asks `runner` to stop its run in progress and makes sweep() throw
/// Interrupted; a second removes the FILE.part files sweep() is writing, kills every process
/// the run started and exits 128 + N at once. One at a time.
class SignalScope {
 public:
  explicit SignalScope(Runner& runner);
  ~SignalScope();
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

 private:
  struct sigaction old_[8] {};
  bool installed_[8] {};
};

/// The stop signal received since the SignalScope was made (0: none, or no scope).
int interrupted_by();

/// Cores this process may run on (what tbb::info::default_concurrency() also counts).
std::size_t available_cores();

/// Checks bench's arguments and the manifest; throws UsageError / ManifestError.
void check_args(const BenchArgs& args);

/// The sweep: --serial, then each thread count (per rank), --warmup untimed and --repeat timed
/// runs each, one more run measured; prints the table, writes --output/--json/--svg. Returns the
/// exit code.
int sweep(const BenchArgs& args, const Pipeline& pipeline, Runner& runner);

}  // namespace coremap::cli::bench
