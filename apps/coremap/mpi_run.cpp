// SPDX-License-Identifier: MIT
// `coremap run` across the ranks of an MPI job (docs/distributed.md): rank 0 reads the manifest
// and writes the output through the same ResumableOutput as a local run (FILE.part, journal,
// --resume); the other ranks serve chunks. Glue over coremap::mpi (coremap/mpi.hpp).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <string>

#include <coremap/mpi.hpp>

#include "commands.hpp"
#include "mpi_setup.hpp"

namespace coremap::cli {
namespace {

using Clock = std::chrono::steady_clock;

int run_processing_rank(const mpi::Session& session, const RunArgs& args) {
  std::optional<Engine> engine;
  std::string error;
  try {
    const PluginLoader loader = make_loader(args.input.search);
    RunOptions options = make_run_options(args);
    options.save_states = true;  // rank 0 merges the reducing stages' partial states
    engine.emplace(make_pipeline(args.input, loader, "run"), std::move(options));
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!set_up_everywhere(session, error)) return exit_setup;
  mpi::serve(session, *engine, !args.unordered);
  return exit_ok;
}

int run_coordinator(const mpi::Session& session, const RunArgs& args) {
  std::optional<ManifestReader> manifest;
  std::optional<FileSink> stdout_sink;
  std::optional<ResumableOutput> resumable;
  std::optional<Pipeline> pipeline;
  RunOptions options;
  std::string error;
  try {
    check_resume_target(args);
    const PluginLoader loader = make_loader(args.input.search);
    manifest.emplace(args.input.manifest, parse_manifest_format(args.input.format));
    pipeline.emplace(make_pipeline(args.input, loader, "run"));
    check_reductions(*pipeline, args, true);
    options = make_run_options(args);
    if (args.output == "-") {
      stdout_sink.emplace("-");
    } else {
      resumable.emplace(args.output, run_fingerprint(args.input.manifest, manifest->format(), *pipeline),
                        ResumableOutput::Options{
                            .resume = args.resume,
                            .retry_failed = args.retry_failed,
                            .restart = args.restart,
                            .sync_interval =
                                std::chrono::milliseconds(std::llround(args.sync_interval_seconds * 1000))});
      options.skip = resumable->done();
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!set_up_everywhere(session, error)) return exit_setup;
  if (!args.quiet && resumable && !resumable->note().empty()) {
    std::fprintf(stderr, "coremap: %s\n", resumable->note().c_str());
  }

  const auto start = Clock::now();
  mpi::DistributedRun run;
  try {
    if (resumable) resumable->open();
    Sink& sink = resumable ? resumable->sink() : *stdout_sink;
    run = mpi::coordinate(session, *manifest, sink, options, {.chunk_items = args.mpi_chunk});
    if (run.stats.stopped != StopReason::none) {
      // Stopped before the manifest's end (--max-errors): FILE.part stays, FILE only ever
      // appears complete.
      const std::string kept = resumable ? resumable->keep_partial() : stdout_sink->keep_partial();
      if (resumable && !resumable->streams() && kept != "-") {
        std::fprintf(stderr, "coremap: partial output kept in %s (rerun with --resume to finish)\n", kept.c_str());
      }
    } else if (resumable) {
      resumable->finish(options.ordered);
    } else {
      stdout_sink->finish();
    }
  } catch (const std::exception& e) {
    // The processing ranks may be waiting on this rank: only ending the job frees them. FILE.part and the
    // journal stay for --resume.
    mpi::abort_job(session, e.what());
  }
  RunStats& stats = run.stats;
  stats.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  stats.summaries = mpi::merge_summaries(*pipeline, run);
  print_run_summary(args, options, stats, resumable ? &*resumable : nullptr);
  if (!args.quiet) {
    std::fprintf(stderr, "coremap: rank 0: %llu chunks, %.1f us of coordination per chunk\n",
                 static_cast<unsigned long long>(run.chunks),
                 static_cast<double>(run.handling_ns) / 1e3 / static_cast<double>(std::max<std::uint64_t>(1, run.chunks)));
    for (std::size_t rank = 1; rank < run.ranks.size(); ++rank) {
      const mpi::RankReport& report = run.ranks[rank];
      std::fprintf(stderr,
                   "coremap: rank %zu: %llu items in %llu chunks, busy %.3f s, %.3f s CPU, %zu thread%s\n", rank,
                   static_cast<unsigned long long>(report.stats.items), static_cast<unsigned long long>(report.chunks),
                   static_cast<double>(report.busy_ns) / 1e9, static_cast<double>(report.cpu_ns) / 1e9,
                   report.stats.threads, report.stats.threads == 1 ? "" : "s");
    }
  }
  const std::uint64_t earlier_failed = resumable ? resumable->earlier_failed() : 0;
  const bool summary_failed = report_summaries(stats.summaries, args);
  return stats.failed + earlier_failed == 0 && !summary_failed ? exit_ok : exit_items_failed;
}

}  // namespace

int mpi_run_command(const RunArgs& args) {
  mpi::Session session;
  if (session.size() == 1) {
    if (args.mpi_chunk != 0) throw UsageError("--mpi-chunk: this MPI job has one rank, which runs the ordinary way");
    return local_run_command(args);
  }
  return session.rank() == 0 ? run_coordinator(session, args) : run_processing_rank(session, args);
}

}  // namespace coremap::cli
