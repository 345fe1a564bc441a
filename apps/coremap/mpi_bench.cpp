// SPDX-License-Identifier: MIT
// `coremap bench` across the ranks of an MPI job (docs/distributed.md, docs/bench.md): rank 0
// runs the sweep of bench_command.cpp; its --serial row runs on rank 0 alone, every other row is
// a run across the ranks exactly as `coremap run` makes it (coremap/mpi.hpp), with the load balance of
// each. The processing ranks wait for rank 0's commands between runs, without keeping a core busy.
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <coremap/mpi.hpp>

#include "bench.hpp"
#include "commands.hpp"
#include "mpi_setup.hpp"

namespace coremap::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Rank 0 to the processing ranks, before each run and at the end.
struct Command {
  std::uint64_t run = 0;  // 0: stop
  std::uint64_t threads = 0;
  std::uint64_t measure = 0;
};

void share_command(const mpi::Session& session, Command& command) {
  std::array<std::uint64_t, 3> words{command.run, command.threads, command.measure};
  MPI_Request request;
  MPI_Ibcast(words.data(), static_cast<int>(words.size()), MPI_UINT64_T, 0, session.comm(), &request);
  mpi::wait_idle(request);
  command = Command{words[0], words[1], words[2]};
}

// Where a rank runs: its host and the cores it may use.
struct Place {
  std::string host;
  std::size_t cores = 0;
};

std::vector<Place> gather_places(const mpi::Session& session) {
  struct Wire {
    char host[256];
    std::uint64_t cores;
  } mine{};
  ::gethostname(mine.host, sizeof mine.host - 1);
  mine.cores = bench::available_cores();
  std::vector<Wire> all(static_cast<std::size_t>(session.size()));
  MPI_Gather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, 0, session.comm());
  std::vector<Place> places;
  for (const Wire& wire : all) places.push_back(Place{std::string(wire.host, ::strnlen(wire.host, sizeof wire.host)), wire.cores});
  return places;
}

// The runs of rank 0's sweep.
class MpiRunner final : public bench::Runner {
 public:
  MpiRunner(const mpi::Session& session, std::vector<Place> places, const Pipeline& pipeline, ManifestFormat format,
            std::string manifest, std::size_t chunk)
      : session_(session),
        places_(std::move(places)),
        local_(pipeline, format, manifest),
        format_(format),
        manifest_(std::move(manifest)),
        chunk_(chunk) {}

  std::size_t ranks() const override { return places_.size() - 1; }

  bench::Timed run(bool serial, std::size_t threads, bool isolate, bool measure, Sink& sink) override {
    if (isolate) throw UsageError("bench --isolate: not under MPI");
    if (serial) return local_.run(true, 1, false, measure, sink);
    Command command{1, threads, measure ? 1u : 0u};
    share_command(session_, command);
    bench::Timed timed;
    mpi::DistributedRun run;
    try {
      const auto start = Clock::now();
      ManifestReader manifest(manifest_, format_);
      run = mpi::coordinate(session_, manifest, sink, RunOptions{}, {.chunk_items = chunk_});
      timed.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    } catch (const std::exception& e) {
      mpi::abort_job(session_, e.what());  // the processing ranks are mid-run: only ending the job frees them
    }
    timed.stats = run.stats;
    for (std::size_t rank = 1; rank < run.ranks.size(); ++rank) {
      const mpi::RankReport& report = run.ranks[rank];
      timed.ranks.push_back(bench::RankShare{.rank = static_cast<int>(rank),
                                             .host = places_[rank].host,
                                             .items = report.stats.items,
                                             .chunks = report.chunks,
                                             .threads = report.stats.threads,
                                             .busy_seconds = static_cast<double>(report.busy_ns) / 1e9,
                                             .cpu_seconds = static_cast<double>(report.cpu_ns) / 1e9});
    }
    return timed;
  }

  // Tells the processing ranks that there are no more runs.
  void stop() {
    Command command{};
    share_command(session_, command);
  }

  Json describe() const override {
    Json processes = Json::array();
    for (std::size_t rank = 0; rank < places_.size(); ++rank) {
      processes.push_back({{"rank", rank}, {"host", places_[rank].host}, {"cores", places_[rank].cores}});
    }
    return {{"ranks", places_.size()},
            {"processing_ranks", places_.size() - 1},
            {"chunk_items", chunk_ == 0 ? Json("adaptive") : Json(chunk_)},
            {"processes", processes}};
  }

  std::vector<std::string> warnings(std::size_t threads) const override {
    std::map<std::string, std::pair<std::size_t, std::size_t>> hosts;  // host -> (threads, cores)
    for (std::size_t rank = 1; rank < places_.size(); ++rank) {
      auto& [used, cores] = hosts[places_[rank].host];
      used += threads;
      cores = places_[rank].cores;
    }
    std::vector<std::string> out;
    for (const auto& [host, load] : hosts) {
      if (load.first > load.second) {
        out.push_back("row " + std::to_string(ranks()) + "x" + std::to_string(threads) + ": host " + host + " runs " +
                      std::to_string(load.first) + " threads on " + std::to_string(load.second) +
                      " cores: that row measures oversubscription, not more parallelism");
      }
    }
    return out;
  }

 private:
  const mpi::Session& session_;
  std::vector<Place> places_;
  bench::LocalRunner local_;
  ManifestFormat format_;
  std::string manifest_;
  std::size_t chunk_;
};

// A processing rank: serves runs until rank 0 says stop; one Engine per (threads, measure).
void serve_runs(const mpi::Session& session, const Pipeline& pipeline) {
  std::optional<Engine> engine;
  Command current{};
  for (;;) {
    Command command;
    share_command(session, command);
    if (command.run == 0) return;
    if (!engine || command.threads != current.threads || command.measure != current.measure) {
      engine.reset();
      engine.emplace(pipeline, RunOptions{.threads = static_cast<std::size_t>(command.threads),
                                          .measure = command.measure != 0});
      current = command;
    }
    mpi::serve(session, *engine, true);
  }
}

}  // namespace

int mpi_bench_command(const BenchArgs& args) {
  mpi::Session session;
  if (session.size() == 1) {
    if (args.mpi_chunk != 0) throw UsageError("--mpi-chunk: this MPI job has one rank, which runs the ordinary way");
    return local_bench_command(args);
  }
  std::optional<Pipeline> pipeline;
  ManifestFormat format{};
  std::string error;
  try {
    if (session.rank() == 0) {
      bench::check_args(args);
      if (args.isolate || args.retries != 0 || args.unordered) {
        throw UsageError("bench --isolate, --retries and --unordered run in one process: not under MPI (run bench "
                         "without mpirun)");
      }
      const ManifestReader manifest(args.input.manifest, parse_manifest_format(args.input.format));
      format = manifest.format();
    }
    const PluginLoader loader = make_loader(args.input.search);
    pipeline.emplace(make_pipeline(args.input, loader, "bench"));
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!set_up_everywhere(session, error)) return exit_setup;
  std::vector<Place> places = gather_places(session);

  if (session.rank() != 0) {
    serve_runs(session, *pipeline);
    return exit_ok;
  }
  MpiRunner runner(session, std::move(places), *pipeline, format, args.input.manifest, args.mpi_chunk);
  int code = exit_ok;
  try {
    code = bench::sweep(args, *pipeline, runner);
  } catch (...) {
    runner.stop();  // the processing ranks exit; the error is reported as any setup error
    throw;
  }
  runner.stop();
  return code;
}

}  // namespace coremap::cli
