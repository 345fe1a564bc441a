// SPDX-License-Identifier: MIT
#pragma once

// A run across the ranks of an MPI job (docs/distributed.md), as `coremap run` and
// `coremap bench` share it: rank 0 hands out chunks of items and writes the records
// (coordinate), every other rank runs the ordinary Engine over the chunks it pulls (serve).
// Only in builds with MPI.

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "commands.hpp"

namespace coremap::cli::mpi {

/// MPI_Init_thread (MPI_THREAD_SERIALIZED: a worker's engine calls MPI from two TBB threads,
/// one at a time) and MPI_Finalize around a command.
class Session {
 public:
  Session();
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }

 private:
  int rank_ = 0;
  int size_ = 1;
};

/// Setup on every rank either succeeds everywhere or fails everywhere: every rank passes its
/// error ("" when it set up), and all get false when any failed. One message is printed (rank
/// 0's when it failed, else the failing ranks').
bool all_set_up(const Session& session, const std::string& error);

/// Rank 0's `text` to every rank (collective).
void broadcast(std::string& text);

/// The manifest's name and format, from rank 0 to every rank (collective).
void share_manifest(std::string& name, ManifestFormat& format);

/// Waits for `request` without keeping a core busy (MPI's blocking calls poll, which would take
/// a core from ranks that share it): tests, then sleeps a little longer each time up to 1 ms.
void wait_idle(MPI_Request& request);

/// Ends the whole job: prints `what` naming the rank, then MPI_Abort with exit code 2.
[[noreturn]] void abort_job(int rank, const char* what);

/// What one worker rank did in one run, as rank 0 learns it.
struct RankReport {
  RunStats stats;                  ///< its engine's; stages filled when the run was measured
  std::uint64_t chunks = 0;        ///< chunks it was handed
  std::uint64_t cpu_ns = 0;        ///< CPU time it used during the run
  std::uint64_t busy_ns = 0;       ///< from the run's start until its last records arrived
};

/// What a run across the ranks did.
struct DistributedRun {
  RunStats stats;                  ///< summed over the worker ranks (stages merged when measured)
  std::vector<RankReport> ranks;   ///< by rank; [0] is rank 0 and stays empty
  std::uint64_t chunks = 0;        ///< chunks handed out
  std::uint64_t handling_ns = 0;   ///< rank 0's time receiving, cutting, sending and writing
  bool stopped_for_errors = false; ///< --max-errors reached across the ranks
};

/// Rank 0's side of one run: hands out `source`'s items (less options.skip) in chunks, on
/// demand, sized to about 50 ms of the asking rank's work or `fixed_chunk` items; writes the
/// records to `sink` (in index order when options.ordered). Returns when every worker rank has
/// reported. Does not call sink.finish(). Throws what the source or the sink throws.
DistributedRun coordinate(const Session& session, BatchSource& source, Sink& sink, const RunOptions& options,
                          std::size_t fixed_chunk);

/// A worker rank's side of one run: `engine` over chunks from rank 0 until there are none, the
/// records sent back; then its report. `name` and `format` are the manifest's, as rank 0 has
/// them. Ends the job (abort_job) when the engine throws.
void serve(const Session& session, Engine& engine, const std::string& name, ManifestFormat format, bool ordered);

/// Each reducing stage's aggregate over the worker ranks' partial states (RankReport::stats
/// .states; the workers' engines ran with RunOptions::save_states), as summarize_states()
/// merges them, by stage name: what RunStats::summaries holds in a local run.
Json merge_summaries(const Pipeline& pipeline, const DistributedRun& run);

/// Merges the stage figures of several ranks: calls, busy time and the latency histograms add
/// up (so the percentiles are those of every call); concurrency adds up.
void merge_stages(std::vector<StageStats>& into, const std::vector<StageStats>& from);

}  // namespace coremap::cli::mpi
