// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Runs across the ranks of an MPI job (docs/distributed.md), the library behind `mpirun ...
/// coremap run` for applications: rank 0 reads the manifest, hands out chunks of items on
/// demand and writes every record; each other rank runs an ordinary Engine over the chunks it
/// pulls and sends the records back; the reducing stages' partial states are merged on rank 0.
/// Link `coremap::mpi` (`find_package(coremap CONFIG COMPONENTS mpi)`); it exists only where
/// coremap was built with an MPI library (CMake's COREMAP_WITH_MPI and find_package(MPI)).
/// libcoremap itself never links MPI.
///
/// Every rank makes the same calls in the same order, and each call below is collective
/// (every rank of the session must make it) unless it says otherwise:
///
/// \code
/// coremap::mpi::Session session;  // MPI_Init_thread, unless the application initialised MPI
/// std::string error;              // this rank's setup error, "" when it set up
/// std::optional<coremap::Pipeline> pipeline;
/// std::optional<coremap::ManifestReader> manifest;   // rank 0 only
/// try {
///   pipeline.emplace(...);                          // every rank loads the same pipeline
///   if (session.rank() == 0) manifest.emplace(path, coremap::ManifestFormat::lines);
/// } catch (const std::exception& e) { error = e.what(); }
/// std::string report;
/// if (!coremap::mpi::all_set_up(session, error, &report)) { print report; return 2; }
/// coremap::CallbackSink sink([](std::string_view records) { ... });  // used on rank 0 only
/// const coremap::mpi::DistributedRun run = coremap::mpi::run(
///     session, *pipeline, session.rank() == 0 ? &*manifest : nullptr, &sink);
/// \endcode
///
/// Errors: setup errors throw coremap::Error (or a subclass) on the rank that has them,
/// before any item is handed out; all_set_up() lets every rank learn that one failed. Once a
/// run has started, the other ranks wait on messages from the failing one, so a failure then
/// (the engine on a rank, the source or the sink on rank 0, a malformed message) ends the whole
/// job: the rank prints "coremap: error: rank N: <what>" on standard error and calls
/// MPI_Abort with exit code 2 (abort_job()). Item failures are records with "ok": false, as in a
/// local run.
///
/// Thread safety: a Session and the functions below are used from one thread of each rank at a
/// time. coremap initialises MPI with MPI_THREAD_SERIALIZED (a rank's engine calls MPI from two
/// TBB threads, one at a time, under one mutex) and requires at least that level when the
/// application initialised MPI. coremap's messages travel on its own duplicate of the
/// session's communicator, so they never match the application's; an application that makes
/// MPI calls from another thread while a run is in progress needs MPI_THREAD_MULTIPLE.

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <coremap/engine.hpp>
#include <coremap/manifest.hpp>
#include <coremap/mpi_export.hpp>
#include <coremap/pipeline.hpp>
#include <coremap/sink.hpp>

namespace coremap::mpi {

/// The exit code abort_job() ends the job with: that of a setup error.
inline constexpr int abort_exit_code = 2;

/// coremap's view of an MPI job: MPI initialised, a duplicate of a communicator, this rank and
/// the number of ranks. Rank 0 of the communicator coordinates. Constructing and destroying it
/// are collective over `comm`.
///
/// Thread safety: one thread at a time.
class COREMAP_MPI_EXPORT Session {
 public:
  /// Initialises MPI (MPI_Init_thread with MPI_THREAD_SERIALIZED) when nobody has, and then
  /// finalises it in the destructor; when the application initialised MPI, it checks that the
  /// thread level is at least MPI_THREAD_SERIALIZED and leaves MPI_Finalize to the
  /// application (after this Session is destroyed). Duplicates `comm` (MPI_Comm_dup) for
  /// coremap's messages. Throws coremap::Error when the MPI library provides a lower thread
  /// level.
  explicit Session(MPI_Comm comm = MPI_COMM_WORLD);
  /// Frees the duplicate communicator; MPI_Finalize when the constructor initialised MPI.
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// This rank in the communicator, 0 to size() - 1; 0 coordinates.
  int rank() const noexcept { return rank_; }
  /// The number of ranks; a run needs at least 2 (one coordinates, the others process).
  int size() const noexcept { return size_; }
  /// coremap's duplicate of the communicator.
  MPI_Comm comm() const noexcept { return comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  bool finalize_ = false;
};

/// Collective: whether every rank set up. Each rank passes what went wrong in its setup, ""
/// when nothing did. Returns true on every rank when every rank passed ""; false on every rank
/// otherwise, and then `report` (when not null) gets what this rank should print: on rank 0
/// its own error, on another rank "rank N: <its error>" when rank 0 had none, else "" (the
/// ranks usually fail alike, and one message is enough).
COREMAP_MPI_EXPORT bool all_set_up(const Session& session, const std::string& error, std::string* report = nullptr);

/// Collective: rank 0's `text` to every rank. Waits without keeping a core busy (wait_idle).
COREMAP_MPI_EXPORT void broadcast(const Session& session, std::string& text);

/// Not collective: waits for `request` without keeping a core busy (MPI's blocking calls poll,
/// which takes a core from ranks that share it): tests, then sleeps a little longer each time,
/// up to 1 ms.
COREMAP_MPI_EXPORT void wait_idle(MPI_Request& request);

/// Not collective: ends the whole job. Prints "coremap: error: rank N: <what>" on standard
/// error, then MPI_Abort with abort_exit_code.
[[noreturn]] COREMAP_MPI_EXPORT void abort_job(const Session& session, const char* what);

/// How a run across the ranks cuts its chunks.
struct Options {
  /// Items per chunk; 0 (the default) sizes each chunk to about 50 ms of the asking rank's work,
  /// smaller near the end (docs/distributed.md, "Chunk size").
  std::size_t chunk_items = 0;
};

/// What one processing rank did in one run, as rank 0 learns it.
struct RankReport {
  RunStats stats;             ///< its engine's; stages filled when its engine measured (RunOptions::measure)
  std::uint64_t chunks = 0;   ///< chunks it was handed
  std::uint64_t cpu_ns = 0;   ///< CPU time its process used during the run, nanoseconds
  std::uint64_t busy_ns = 0;  ///< from the run's start until its last records reached rank 0, nanoseconds
};

/// What a run across the ranks did; complete on rank 0 only.
struct DistributedRun {
  /// Summed over the processing ranks (items, records, ok, failed, not_run, threads; stages
  /// merged); `skipped` counts RunOptions::skip; `summaries` holds the reducing stages'
  /// results merged over every rank when run() made it (coordinate() leaves it empty: see
  /// merge_summaries()); `wall_seconds` is set by run().
  RunStats stats;
  std::vector<RankReport> ranks;     ///< by rank; [0] is rank 0 and stays empty
  std::uint64_t chunks = 0;          ///< chunks handed out
  std::uint64_t handling_ns = 0;     ///< rank 0's time receiving, cutting, sending and writing
  bool stopped_for_errors = false;   ///< RunOptions::max_errors reached, counted across the ranks
};

/// Rank 0's side of one run (collective with serve() on every other rank): hands out `source`'s
/// items, less options.skip, in chunks on demand; writes the records to `sink`, in index order
/// when options.ordered (the same bytes as a local run), else as they arrive; stops handing out
/// chunks once the failures the ranks reported reach options.max_errors. Returns when every
/// other rank has reported. Does not call sink.finish(). Of `options`, only ordered, skip and
/// max_errors are read here: the other ranks' engines have their own. Throws what the source
/// or the sink throws, with the other ranks still waiting: the caller then calls abort_job().
COREMAP_MPI_EXPORT DistributedRun coordinate(const Session& session, BatchSource& source, Sink& sink,
                                             const RunOptions& options, const Options& chunking = {});

/// Every other rank's side of one run (collective with coordinate() on rank 0): runs `engine`
/// over chunks pulled from rank 0 until there are none and sends the records back, then its
/// report. `ordered` is the engine's RunOptions::ordered; an engine that does not order its
/// records cannot take part in an ordered run (abort_job()). For reductions across the ranks
/// the engine needs RunOptions::save_states. Ends the job (abort_job()) when the engine throws.
COREMAP_MPI_EXPORT void serve(const Session& session, Engine& engine, bool ordered);

/// Not collective, on rank 0 after coordinate(): each reducing stage's aggregate over the
/// processing ranks' partial states (RankReport::stats.states), as summarize_states() merges
/// them, by stage name: what RunStats::summaries holds after a local run (a stage whose states
/// cannot be merged is a failed StageSummary).
COREMAP_MPI_EXPORT StageSummaries merge_summaries(const Pipeline& pipeline, const DistributedRun& run);

/// Not collective: merges the stage figures of several ranks into `into`: calls, busy time and
/// the latency histograms add up (so the percentiles are those of every call), as does
/// concurrency.
COREMAP_MPI_EXPORT void merge_stages(std::vector<StageStats>& into, const std::vector<StageStats>& from);

/// One whole run, collective: the same call on every rank with the same `pipeline` and
/// `options`. Rank 0 coordinates (coordinate()) over `source` into `sink`, which must not be
/// null there; every other rank ignores them (pass nullptr) and runs an Engine of `pipeline`
/// with `options` and RunOptions::save_states. Returns, on rank 0, the run with
/// stats.summaries merged (merge_summaries()) and stats.wall_seconds; on the other ranks a
/// DistributedRun with nothing in it. Does not call sink->finish(). Setup errors (a rank's
/// engine cannot be built, a null source or sink on rank 0) throw coremap::Error on every
/// rank, before any item is handed out: on the rank that failed with its message, on the
/// others "rank N could not set up". A job of one rank has nobody to process the items: every
/// rank throws UsageError (run locally with Engine instead). Failures later end the job
/// (abort_job()).
COREMAP_MPI_EXPORT DistributedRun run(const Session& session, const Pipeline& pipeline, BatchSource* source, Sink* sink,
                                      const RunOptions& options = {}, const Options& chunking = {});

}  // namespace coremap::mpi
