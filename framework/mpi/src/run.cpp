// SPDX-License-Identifier: MIT
// One whole run in one collective call: rank 0 coordinates, the other ranks build an Engine of
// the pipeline and serve.
#include <chrono>
#include <optional>
#include <string>

#include <coremap/error.hpp>

#include "messages.hpp"

namespace coremap::mpi {

DistributedRun run(const Session& session, const Pipeline& pipeline, BatchSource* source, Sink* sink,
                   const RunOptions& options, const Options& chunking) {
  if (session.size() < 2) {
    throw UsageError("coremap::mpi::run: a job of one rank has no rank to process the items (rank 0 coordinates); "
                     "run locally with Engine, or start 2 or more ranks");
  }
  std::optional<Engine> engine;
  std::string error;
  try {
    if (session.rank() == 0) {
      if (source == nullptr || sink == nullptr) throw UsageError("coremap::mpi::run: rank 0 needs a source and a sink");
    } else {
      RunOptions mine = options;
      mine.save_states = true;  // rank 0 merges the reducing stages' partial states
      engine.emplace(pipeline, std::move(mine));
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  int mine = error.empty() ? -1 : session.rank();
  int first = -1;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MAX, session.comm());
  if (!error.empty()) throw Error(error);
  if (first >= 0) throw Error("rank " + std::to_string(first) + " could not set up its part of the run");

  DistributedRun result;
  if (session.rank() != 0) {
    serve(session, *engine, options.ordered);
    return result;
  }
  const auto start = detail::Clock::now();
  try {
    result = coordinate(session, *source, *sink, options, chunking);
  } catch (const std::exception& e) {
    abort_job(session, e.what());  // the other ranks wait on this one: only ending the job frees them
  }
  result.stats.wall_seconds = std::chrono::duration<double>(detail::Clock::now() - start).count();
  result.stats.summaries = merge_summaries(pipeline, result);
  return result;
}

}  // namespace coremap::mpi
