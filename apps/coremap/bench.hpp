// SPDX-License-Identifier: MIT
#pragma once

// `coremap bench`'s sweep, apart from how each run is made: in this process (bench_command.cpp)
// or across the ranks of an MPI job (mpi_bench.cpp). Same table, JSON and SVG either way.

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
  /// --serial (always in this process) or `threads` per rank; with `measure`, each process()
  /// call is timed (RunOptions::measure) and stats.stages filled.
  virtual Timed run(bool serial, std::size_t threads, bool measure, Sink& sink) = 0;
  /// The "mpi" object of --json (null for a run in this process).
  virtual Json describe() const { return nullptr; }
  /// Warnings about where the ranks ran (oversubscribed nodes ...).
  virtual std::vector<std::string> warnings(std::size_t /*threads*/) const { return {}; }
};

/// Runs in this process: one Engine per row (and one more for the measured run).
class LocalRunner final : public Runner {
 public:
  LocalRunner(const Pipeline& pipeline, ManifestFormat format, std::string manifest)
      : pipeline_(pipeline), format_(format), manifest_(std::move(manifest)) {}
  std::size_t ranks() const override { return 1; }
  Timed run(bool serial, std::size_t threads, bool measure, Sink& sink) override;

 private:
  const Pipeline& pipeline_;
  ManifestFormat format_;
  std::string manifest_;
  std::optional<Engine> engine_;
  bool serial_ = false, measure_ = false;
  std::size_t threads_ = 0;
};

/// Cores this process may run on (what tbb::info::default_concurrency() also counts).
std::size_t available_cores();

/// Checks bench's arguments and the manifest; throws UsageError / ManifestError.
void check_args(const BenchArgs& args);

/// The sweep: --serial, then each thread count (per rank), --warmup untimed and --repeat timed
/// runs each, one more run measured; prints the table, writes --output/--json/--svg. Returns the
/// exit code.
int sweep(const BenchArgs& args, const Pipeline& pipeline, Runner& runner);

}  // namespace coremap::cli::bench
