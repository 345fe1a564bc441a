// SPDX-License-Identifier: MIT
#pragma once

// The CLI's subcommands: each file registers one on the app and runs it.

#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <coremap/coremap.hpp>

namespace coremap::cli {

/// Exit codes, documented in the README.
enum ExitCode : int { exit_ok = 0, exit_items_failed = 1, exit_setup = 2 };

/// Options every subcommand that resolves plugins takes.
struct SearchOptions {
  std::vector<std::filesystem::path> plugin_paths;
};
void add_search_options(CLI::App& command, SearchOptions& options);
PluginLoader make_loader(const SearchOptions& options);

/// `--config JSON|@FILE`: parses the text (or the file's contents). Throws ConfigError.
Json parse_config_argument(const std::string& argument);

/// "512M", "2G", "64k", "1048576": bytes, with an optional binary suffix K, M, G or T (an
/// optional trailing "B" or "iB" is accepted). Throws UsageError naming `flag`.
std::uint64_t parse_size(const std::string& text, const std::string& flag);

/// What `run` and `bench` share: the plugin (or pipeline spec) and its config, the manifest
/// and its format, the plugin search path.
struct PipelineArgs {
  SearchOptions search;
  std::string plugin;
  std::string pipeline;
  std::string concurrency;
  std::string config;
  std::string manifest;
  std::string format = "auto";
};
/// Registers -p/--plugin, --pipeline, --concurrency, -c/--config, -m/--manifest, --format and
/// --plugin-path on `command`.
void add_pipeline_options(CLI::App& command, PipelineArgs& args);

/// Checks a --threads value with coremap::thread_count_error, the library's own check, so the
/// limits and the message are the library's.
CLI::Validator thread_count_validator();
/// The one-stage pipeline of --plugin (config resolved, --concurrency applied) or the spec of
/// --pipeline. Throws UsageError naming `command` unless exactly one is given; ConfigError or
/// PluginError from loading.
Pipeline make_pipeline(const PipelineArgs& args, const PluginLoader& loader, const std::string& command);

struct RunArgs {
  PipelineArgs input;
  std::string summary;
  std::string output = "-";
  std::size_t threads = 0;
  bool serial = false;
  bool unordered = false;
  std::uint64_t max_errors = 0;
  bool fail_fast = false;
  bool quiet = false;
  std::size_t max_in_flight = 0;
  std::uint32_t retries = 0;
  double timeout_seconds = 0;
  bool resume = false;
  bool retry_failed = false;
  bool restart = false;
  double sync_interval_seconds = 1;
  double checkpoint_interval_seconds = 10;  // --checkpoint-interval: reducing runs with -o
  bool isolate = false;
  std::string memory_limit;
  bool mpi = false;             // --mpi (or started by an MPI launcher): docs/distributed.md
  std::size_t mpi_chunk = 0;    // --mpi-chunk: items per chunk; 0 adapts to item cost
  std::string cache;            // --cache DIR: docs/cache.md
  std::string cache_files = "stat";
  bool cache_failures = false;
};
CLI::App* add_run_command(CLI::App& app, RunArgs& args);
int run_command(const RunArgs& args);

/// What a run does with the plugin, from the run's flags (threads, ordering, retries ...).
RunOptions make_run_options(const RunArgs& args);
/// Prints the summary line(s) of a finished run to standard error (not with --quiet).
void print_run_summary(const RunArgs& args, const RunOptions& options, const RunStats& stats,
                       const ResumableOutput* resumable);
/// Writes the reducing stages' aggregates to --summary FILE or standard error; true when one
/// failed.
bool report_summaries(const StageSummaries& summaries, const RunArgs& args);

/// UsageError unless --resume has a file (-o) to read the earlier records from.
/// Throws UsageError when `path` (given with `flag`) is a companion file (FILE.part, FILE.journal,
/// FILE.lock, ...) of an output a journal records, which writing it would destroy.
void refuse_recorded_run_file(const std::string& path, const std::string& flag);
void check_resume_target(const RunArgs& args);
/// UsageError for a reducing stage with --resume whose state is not checkpointed (its plugin
/// cannot save state, --isolate, or an MPI run: its summary would cover only the resumed part)
/// or with --retry-failed, or, `across_ranks`, whose plugin cannot save its partial state.
void check_reductions(const Pipeline& pipeline, const RunArgs& args, bool across_ranks);

/// True when an MPI launcher (mpirun, srun) started this process: its environment says so.
bool started_by_mpi_launcher();
/// `coremap run` across the ranks of an MPI job (docs/distributed.md); with one rank, the
/// ordinary run. Only in builds with MPI.
int mpi_run_command(const RunArgs& args);
/// The ordinary, single-process `coremap run`.
int local_run_command(const RunArgs& args);

struct BenchArgs {
  PipelineArgs input;
  std::vector<std::size_t> threads;  // empty: 1, powers of two, all cores
  std::size_t repeat = 5;
  std::size_t warmup = 1;
  std::string output;  // empty: records counted, not written
  std::string json;
  std::string svg;
  bool mpi = false;           // --mpi (or started by an MPI launcher): the rows run across the ranks
  std::size_t mpi_chunk = 0;  // --mpi-chunk, as for run
  bool isolate = false;       // --isolate: each thread count also in worker processes, overhead per item
  std::uint32_t retries = 0;  // --retries, as for run
  bool unordered = false;     // --unordered, as for run
};
CLI::App* add_bench_command(CLI::App& app, BenchArgs& args);
int bench_command(const BenchArgs& args);
/// The ordinary, single-process `coremap bench`.
int local_bench_command(const BenchArgs& args);
/// `coremap bench` across the ranks of an MPI job (docs/distributed.md); with one rank, the
/// ordinary bench. Refuses (UsageError) in builds without MPI.
int mpi_bench_command(const BenchArgs& args);

/// `coremap cache stats|gc|why` (docs/cache.md).
struct CacheArgs {
  std::string directory;
  std::string max_size;      // gc --max-size
  double older_than = 0;     // gc --older-than DAYS
  PipelineArgs input;        // why: the run's plugin or pipeline, config and manifest
  std::uint64_t index = 0;   // why --index
  std::string cache_files = "stat";
  CLI::App* stats = nullptr;
  CLI::App* gc = nullptr;
  CLI::App* why = nullptr;
};
CLI::App* add_cache_command(CLI::App& app, CacheArgs& args);
int cache_command(const CacheArgs& args);

struct PluginsArgs {
  SearchOptions search;
};
CLI::App* add_plugins_command(CLI::App& app, PluginsArgs& args);
int plugins_command(const PluginsArgs& args);

struct InfoArgs {
  SearchOptions search;
  std::string plugin;
  bool json = false;
};
CLI::App* add_info_command(CLI::App& app, InfoArgs& args);
int info_command(const InfoArgs& args);

struct NewPluginArgs {
  std::string name;
  std::string dir;
};
CLI::App* add_new_plugin_command(CLI::App& app, NewPluginArgs& args);
int new_plugin_command(const NewPluginArgs& args);

}  // namespace coremap::cli
