// SPDX-License-Identifier: MIT
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <optional>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <string>

#include <coremap/process_tree.hpp>

#include "commands.hpp"

namespace coremap::cli {
namespace {

// The run being interrupted, and the first signal received. A handler may only touch
// lock-free atomics: Engine::request_stop() is one relaxed store.
std::atomic<Engine*> interrupted_engine{nullptr};
volatile std::sig_atomic_t first_signal = 0;

extern "C" void on_interrupt(int signal_number) {
  if (first_signal != 0) {
    // A second Ctrl-C leaves at once, and takes everything the run started with it: the
    // commands still in their TERM-then-KILL grace, workers, whatever they left behind
    // (coremap is a subreaper, main.cpp).
    coremap::process_tree::kill_descendants();
    _exit(128 + signal_number);
  }
  first_signal = signal_number;
  if (Engine* engine = interrupted_engine.load()) engine->request_stop();
}

// The signals that stop a run: SIGINT, SIGTERM, SIGHUP (a closed terminal or a service
// manager's reload), and the other signals that end a process by default without a core dump
// of a crash (SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGXCPU): all stop it the same way, flushed
// and resumable, exit 128 + the signal. Before, those others killed the run's processes while
// its threads still ran, and the items cut short were recorded as failed. One of those others
// ignored when coremap started (nohup, a shell's background job) stays ignored; the first three
// (stop_signals[0..2]) are always caught, as before.
constexpr int stop_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGXCPU};
constexpr std::size_t always_caught = 3;

// Installs the handlers for the lifetime of a run and puts the old ones back afterwards.
class InterruptScope {
 public:
  explicit InterruptScope(Engine& engine) {
    interrupted_engine.store(&engine);
    struct sigaction action {};
    action.sa_handler = on_interrupt;
    sigemptyset(&action.sa_mask);
    for (std::size_t i = 0; i < std::size(stop_signals); ++i) {
      installed_[i] = ::sigaction(stop_signals[i], nullptr, &old_[i]) == 0 &&
                      (i < always_caught || old_[i].sa_handler != SIG_IGN) &&
                      ::sigaction(stop_signals[i], &action, nullptr) == 0;
    }
  }
  ~InterruptScope() {
    for (std::size_t i = 0; i < std::size(stop_signals); ++i) {
      if (installed_[i]) ::sigaction(stop_signals[i], &old_[i], nullptr);
    }
    interrupted_engine.store(nullptr);
  }
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;

 private:
  struct sigaction old_[std::size(stop_signals)] {};
  bool installed_[std::size(stop_signals)] {};
};

const char* signal_name(int signal_number) {
  switch (signal_number) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    case SIGQUIT: return "SIGQUIT";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    case SIGALRM: return "SIGALRM";
    case SIGXCPU: return "SIGXCPU";
    default: return "a signal";
  }
}

}  // namespace

// Writes the reducing stages' aggregates to --summary FILE, or to standard error: one JSON
// object, each stage's summary() by stage name. A stage whose reduction failed has no entry
// there (a summary is any JSON, so no value could stand for "failed"): its error goes to
// standard error and the function returns true (the run then exits 1).
bool report_summaries(const StageSummaries& summaries, const RunArgs& args) {
  if (summaries.empty()) return false;
  bool failed = false;
  Json values = Json::object();
  for (const auto& [stage, summary] : summaries) {
    if (summary.ok) {
      values[stage] = summary.value;
    } else {
      std::fprintf(stderr, "coremap: stage '%s': reduction failed: %s\n", stage.c_str(), summary.error.c_str());
      failed = true;
    }
  }
  const std::string text = values.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
  if (args.summary.empty()) {
    if (!args.quiet) std::fprintf(stderr, "coremap: summary:\n%s", text.c_str());
    return failed;
  }
  FileSink out(args.summary);
  out.write(text);
  out.finish();
  return failed;
}

CLI::App* add_run_command(CLI::App& app, RunArgs& args) {
  CLI::App* run = app.add_subcommand("run", "Map a plugin (or a pipeline of plugins) over every item of a manifest");
  add_pipeline_options(*run, args.input);
  run->add_option("--summary", args.summary,
                  "Write the aggregates of reducing stages here as JSON (default: standard error)")
      ->type_name("FILE");
  run->add_option("-o,--output", args.output,
                  "Write records here (via FILE.part, renamed when done); default standard output")
      ->type_name("FILE");
  auto* threads = run->add_option("-j,--threads", args.threads, "Threads (default: all cores)")
                      ->check(thread_count_validator());
  run->add_flag("--serial", args.serial,
                "Run on one thread, in order, with no TBB in the call path (for debugging)")
      ->excludes(threads);
  run->add_flag("--unordered", args.unordered, "Write records as items finish instead of in manifest order");
  auto* max_errors = run->add_option("--max-errors", args.max_errors,
                                     "Stop taking new items after N failed items (0: never)")
                         ->type_name("N");
  run->add_flag("--fail-fast", args.fail_fast, "Stop at the first failed item (--max-errors 1)")
      ->excludes(max_errors);
  run->add_option("--max-in-flight", args.max_in_flight,
                  "Bound on batches of items in flight (default: 4 per thread)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
      ->type_name("N");
  run->add_option("--retries", args.retries, "Run a failed item up to N more times (the record says how many attempts)")
      ->check(CLI::Range(0u, 1000u))
      ->type_name("N");
  run->add_option("--timeout", args.timeout_seconds,
                  "Per-item time limit: past it Context::cancelled() turns true and the item is recorded as "
                  "timed out when it returns (no thread is killed)")
      ->check(CLI::Range(0.001, 1e9))
      ->type_name("SECONDS");
  auto* resume = run->add_flag("--resume", args.resume,
                               "Continue the run recorded in FILE.journal and FILE.part (or FILE): process only "
                               "the items not yet recorded; refuses if the manifest, plugin or config changed");
  run->add_flag("--retry-failed", args.retry_failed, "With --resume: run the failed items again too")->needs(resume);
  run->add_flag("--restart", args.restart,
                "With -o FILE: start from the first item even though FILE.part holds an unfinished run's records "
                "(they are discarded); without it such a run is refused")
      ->excludes(resume);
  run->add_option("--checkpoint-interval", args.checkpoint_interval_seconds,
                  "With -o and reducing stages: checkpoint the reductions' state with the records at most this "
                  "often (default 10; never more often than 20 times a checkpoint's cost), so --resume continues "
                  "from the last checkpoint")
      ->check(CLI::Range(0.0, 1e6))
      ->type_name("SECONDS");
  run->add_option("--sync-interval", args.sync_interval_seconds,
                  "With -o: fdatasync the output at most this often while records arrive (default 1; 0: only "
                  "at the end)")
      ->check(CLI::Range(0.0, 1e6))
      ->type_name("SECONDS");
  auto* isolate = run->add_flag("--isolate", args.isolate,
                                "Run the plugin in worker processes: a crash (signal, exit, memory limit) "
                                "fails only its item; the worker is replaced; with --timeout the worker of an "
                                "item over time is killed and replaced");
  run->add_option("--memory-limit", args.memory_limit,
                  "With --isolate: address-space limit of each worker (RLIMIT_AS), e.g. 512M, 2G")
      ->type_name("SIZE")
      ->needs(isolate);
  auto* cache = run->add_option("--cache", args.cache,
                                 "Result cache directory: items whose key (plugin build, config, item, file) is "
                                 "stored are replayed, the others run and are stored (docs/cache.md)")
                     ->type_name("DIR");
  run->add_option("--cache-files", args.cache_files,
                  "With --cache: what of the item's `path` file is in its key: stat (path, size, mtime, inode; "
                  "default), size, or content (SHA-256 of the file)")
      ->check(CLI::IsMember({"stat", "size", "content"}))
      ->type_name("stat|size|content")
      ->needs(cache);
  run->add_flag("--cache-failures", args.cache_failures,
                "With --cache: store failed items too (never timeouts or crashes)")
      ->needs(cache);
  run->add_flag("-q,--quiet", args.quiet, "No progress line and no summary on standard error");
  run->add_flag("--mpi", args.mpi,
                "Run across the ranks of an MPI job (implied when mpirun or srun started coremap): rank 0 "
                "reads the manifest and writes the output, the other ranks process items (docs/distributed.md)");
  run->add_option("--mpi-chunk", args.mpi_chunk,
                  "In an MPI run: items per chunk handed to a rank (default: sized to about 50 ms of the rank's "
                  "work, from measured item cost)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
      ->type_name("N");
  return run;
}

bool started_by_mpi_launcher() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

int run_command(const RunArgs& args) {
  if (args.mpi || started_by_mpi_launcher()) return mpi_run_command(args);
  if (args.mpi_chunk != 0) throw UsageError("--mpi-chunk applies to MPI runs (mpirun ... or --mpi) only");
  return local_run_command(args);
}

#ifndef COREMAP_WITH_MPI
int mpi_run_command(const RunArgs& args) {
  // Without MPI each rank would process the whole manifest into the same file: refuse, unless
  // this is the only rank.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && std::string(value) != "1") {
      throw UsageError(std::string("started by an MPI launcher (") + name + "=" + value +
                       ") but this coremap was built without MPI: every rank would process the whole manifest; "
                       "rebuild with MPI (libopenmpi-dev) or run coremap without mpirun");
    }
  }
  if (const char* rank = std::getenv("PMIX_RANK"); rank != nullptr && std::string(rank) != "0") {
    throw UsageError(std::string("started by an MPI launcher as rank ") + rank +
                     " but this coremap was built without MPI; rebuild with MPI (libopenmpi-dev)");
  }
  if (args.mpi) throw UsageError("--mpi: this coremap was built without MPI (install libopenmpi-dev and rebuild)");
  if (args.mpi_chunk != 0) throw UsageError("--mpi-chunk: this coremap was built without MPI");
  return local_run_command(args);
}
#endif

RunOptions make_run_options(const RunArgs& args) {
  RunOptions options;
  options.retries = args.retries;
  options.threads = args.threads;
  options.serial = args.serial;
  options.ordered = !args.unordered;
  options.max_errors = args.fail_fast ? 1 : args.max_errors;
  options.max_in_flight = args.max_in_flight;
  options.isolate = args.isolate;
  if (!args.cache.empty()) {
    options.cache.directory = args.cache;
    options.cache.files = parse_cache_file_policy(args.cache_files, "--cache-files");
    options.cache.failures = args.cache_failures;
  }
  if (!args.memory_limit.empty()) options.memory_limit_bytes = parse_size(args.memory_limit, "--memory-limit");
  if (args.timeout_seconds > 0) {
    // Rounded up, so that a tiny positive timeout is never 0 (no limit).
    options.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(args.timeout_seconds * 1000)));
  }
  return options;
}

void print_run_summary(const RunArgs& args, const RunOptions& options, const RunStats& stats,
                       const ResumableOutput* resumable) {
  if (args.quiet) return;
  const std::uint64_t earlier_ok = resumable ? resumable->earlier_ok() : 0;
  const std::uint64_t earlier_failed = resumable ? resumable->earlier_failed() : 0;
  // Fan-out and filtering make records differ from items; say both then.
  const std::string records = stats.records == stats.items ? "" : ", " + std::to_string(stats.records) + " records";
  std::fprintf(stderr, "coremap: %llu items%s: %llu ok, %llu failed in %.3f s (%.0f items/s, %zu thread%s%s)\n",
               static_cast<unsigned long long>(stats.items), records.c_str(), static_cast<unsigned long long>(stats.ok),
               static_cast<unsigned long long>(stats.failed), stats.wall_seconds, stats.items_per_second(),
               stats.threads, stats.threads == 1 ? "" : "s", args.serial ? ", serial" : "");
  if (stats.cache.enabled) {
    std::fprintf(stderr, "coremap: cache: %llu hits, %llu misses, %llu stored",
                 static_cast<unsigned long long>(stats.cache.hits), static_cast<unsigned long long>(stats.cache.misses),
                 static_cast<unsigned long long>(stats.cache.stored));
    if (stats.cache.not_stored != 0) {
      std::fprintf(stderr, ", %llu not stored", static_cast<unsigned long long>(stats.cache.not_stored));
    }
    if (stats.cache.corrupt != 0) {
      std::fprintf(stderr, ", %llu corrupt entries run again", static_cast<unsigned long long>(stats.cache.corrupt));
    }
    std::fprintf(stderr, "\n");
  }
  if (resumable && resumable->resumed()) {
    std::fprintf(stderr, "coremap: with the earlier run's records, %s holds %llu items: %llu ok, %llu failed\n",
                 args.output.c_str(), static_cast<unsigned long long>(stats.items + earlier_ok + earlier_failed),
                 static_cast<unsigned long long>(stats.ok + earlier_ok),
                 static_cast<unsigned long long>(stats.failed + earlier_failed));
  }
  if (stats.stopped == StopReason::max_errors) {
    std::fprintf(stderr,
                 "coremap: stopped early: %llu failed items reached --max-errors %llu; %llu items cut short or not "
                 "started have no record (--resume runs them)\n",
                 static_cast<unsigned long long>(stats.failed), static_cast<unsigned long long>(options.max_errors),
                 static_cast<unsigned long long>(stats.not_run));
  }
}

namespace {

// Whether two paths name one file: the same inode when both exist, else the same path once
// symbolic links and "." / ".." are resolved.
bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {};
  struct stat sb {};
  if (::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0) {
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  }
  std::error_code ea;
  std::error_code eb;
  const auto ca = std::filesystem::weakly_canonical(a, ea);
  const auto cb = std::filesystem::weakly_canonical(b, eb);
  return !ea && !eb && ca == cb;
}

}  // namespace

static bool manifest_is_stream(const std::string& manifest) {
  struct stat st{};
  return ::stat(manifest.c_str(), &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || S_ISCHR(st.st_mode));
}

void refuse_recorded_run_file(const std::string& path, const std::string& flag) {
  if (path.empty() || path == "-") return;
  // The companion files of an output a journal records: that run may be running, or unfinished
  // and waiting for --resume.
  for (const std::string suffix :
       {".part", ".journal", ".lock", ".compact", ".journal.tmp", ".checkpoint", ".checkpoint.tmp"}) {
    if (path.size() <= suffix.size() || !path.ends_with(suffix)) continue;
    const std::string base = path.substr(0, path.size() - suffix.size());
    if (std::error_code ec; std::filesystem::exists(base + ".journal", ec)) {
      throw UsageError(flag + " '" + path + "' is a companion file of the coremap run recorded in " + base +
                       ".journal: writing it would replace that run's records; choose another " + flag);
    }
  }
}

void check_resume_target(const RunArgs& args) {
  if (args.resume && args.output == "-") {
    throw UsageError("--resume needs -o FILE: the records of the earlier run are read back from FILE.part");
  }
  if (args.resume && args.input.manifest != "-") {
    // Refused before the manifest is opened: opening a FIFO waits for a writer.
    if (manifest_is_stream(args.input.manifest)) {
      throw UsageError("--resume needs the manifest as a regular file: " + args.input.manifest +
                       " is a FIFO, socket or device, read once, and cannot be checked against the journal");
    }
  }
  // -o against the manifest is checked by ResumableOutput; --summary is written at the end,
  // over whatever it names, so it must not be the records, their companions or the input.
  if (args.summary.empty() || args.summary == "-") return;
  if (args.input.manifest != "-" && same_file(args.summary, args.input.manifest)) {
    throw UsageError("--summary '" + args.summary + "' is the manifest '" + args.input.manifest +
                     "': the run would replace its own input; choose another --summary");
  }
  // Nor another run's records.
  refuse_recorded_run_file(args.summary, "--summary");
  if (args.output == "-" || resolve_output(args.output).kind == OutputTarget::Kind::stream) return;
  for (const char* suffix :
       {"", ".part", ".journal", ".lock", ".compact", ".journal.tmp", ".checkpoint", ".checkpoint.tmp"}) {
    if (same_file(args.summary, args.output + suffix)) {
      throw UsageError("--summary '" + args.summary + "' is " +
                       (*suffix == 0 ? "the output" : "the output's companion file " + args.output + suffix) +
                       " (-o " + args.output + "): the summary would replace the records; choose another --summary");
    }
  }
}

namespace {

// Why a run's reducing stage cannot be checkpointed (so a stopped run cannot be resumed), or ""
// when every reducing stage can.
std::string why_not_checkpointed(const Pipeline& pipeline, bool across_ranks) {
  for (const Stage& stage : pipeline.stages) {
    if (!stage.plugin->reduces()) continue;
    const std::string which = "stage '" + stage.name + "' reduces";
    if (!stage.plugin->saves_state()) {
      return which + ", and its plugin " + std::string(stage.plugin->name()) +
             " cannot save its partial state (save() and load(), docs/plugins.md), so no checkpoint of its summary "
             "is kept";
    }
    if (across_ranks) return which + ", and an MPI run keeps no checkpoint of its summary";
  }
  return "";
}

bool reduces(const Pipeline& pipeline) {
  return std::any_of(pipeline.stages.begin(), pipeline.stages.end(),
                     [](const Stage& stage) { return stage.plugin->reduces(); });
}

}  // namespace

void check_reductions(const Pipeline& pipeline, const RunArgs& args, bool across_ranks) {
  for (const Stage& stage : pipeline.stages) {
    if (!stage.plugin->reduces()) continue;
    if (across_ranks && !stage.plugin->saves_state()) {
      throw UsageError("stage '" + stage.name + "' reduces, but its plugin " + std::string(stage.plugin->name()) +
                       " cannot save its partial state (save() and load(), docs/plugins.md), so the ranks' "
                       "aggregates cannot be merged; run it without mpirun");
    }
  }
  if (!args.resume || !reduces(pipeline)) return;
  if (const std::string why = why_not_checkpointed(pipeline, across_ranks); !why.empty()) {
    throw UsageError("--resume: " + why + ", and a summary over only the items the resumed run processes would be "
                     "wrong; rerun with --restart");
  }
}

int local_run_command(const RunArgs& args) {
  check_resume_target(args);
  if (args.input.plugin.empty() == args.input.pipeline.empty()) {
    throw UsageError("run: give --plugin or --pipeline (one of them)");
  }
  const PluginLoader loader = make_loader(args.input.search);
  ManifestReader manifest(args.input.manifest, parse_manifest_format(args.input.format));
  if (!args.quiet && !manifest.format_hint().empty()) {
    std::fprintf(stderr, "coremap: note: %s\n", manifest.format_hint().c_str());
  }
  Pipeline pipeline = make_pipeline(args.input, loader, "run");
  check_reductions(pipeline, args, false);
  // What to tell the user when the run stops part-way: how to finish it, or why --resume cannot.
  // A reducing run checkpoints its stages' states with the records (docs/reliability.md).
  const bool reducing = reduces(pipeline);
  const std::string not_checkpointed = why_not_checkpointed(pipeline, false);
  std::string resume_hint = "rerun with --resume to finish";
  if (reducing && !not_checkpointed.empty()) {
    resume_hint = "--resume cannot finish it: " + not_checkpointed + "; rerun with --restart";
  } else if (reducing) {
    resume_hint = "rerun with --resume to finish; the reductions continue from their last checkpoint, and the "
                  "items recorded after it run again";
  }
  if (args.input.manifest == "-" || manifest_is_stream(args.input.manifest)) {
    resume_hint = "--resume cannot finish it: the manifest was read as a stream and cannot be checked; keep these "
                  "records and give the remaining items in a new manifest, or rerun with --restart";
  }
  RunOptions options = make_run_options(args);
  // The live line goes to a terminal only: logs and pipes get the summary alone.
  const bool draw_progress = !args.quiet && ::isatty(STDERR_FILENO) == 1;
  if (draw_progress) options.on_progress = terminal_progress(stderr);

  // Standard output is written as is; a file goes through FILE.part and its journal, so an
  // interrupted run can be resumed.
  std::optional<FileSink> stdout_sink;
  std::optional<ResumableOutput> resumable;
  if (args.output == "-") {
    stdout_sink.emplace("-");
  } else {
    resumable.emplace(args.output, run_fingerprint(args.input.manifest, manifest.format(), pipeline),
                      ResumableOutput::Options{
                          .resume = args.resume,
                          .retry_failed = args.retry_failed,
                          .restart = args.restart,
                          .checkpointed = reducing && not_checkpointed.empty(),
                          .sync_interval = std::chrono::milliseconds(std::llround(args.sync_interval_seconds * 1000))});
    options.skip = resumable->done();
    if (reducing && not_checkpointed.empty() && !resumable->streams()) {
      options.resume_states = resumable->resume_states();
      options.checkpoint_interval = std::chrono::milliseconds(std::llround(args.checkpoint_interval_seconds * 1000));
      ResumableOutput* output = &*resumable;
      options.on_checkpoint = [output](const Checkpoint& checkpoint) {
        output->checkpoint(checkpoint.items, checkpoint.states, checkpoint.last);
      };
    }
    if (!args.quiet && !resumable->note().empty()) std::fprintf(stderr, "coremap: %s\n", resumable->note().c_str());
  }
  Engine engine(std::move(pipeline), options);
  if (resumable) resumable->open();
  Sink& sink = resumable ? resumable->sink() : *stdout_sink;

  RunStats stats;
  {
    InterruptScope interrupts(engine);
    stats = engine.run(manifest, sink);
  }
  if (draw_progress) erase_progress_line(stderr);
  const int signal_number = first_signal;
  std::string kept;
  // A run that stopped before the manifest's end (a signal, --max-errors) leaves FILE.part, never
  // an incomplete FILE: FILE only ever appears complete.
  const bool stopped_early = signal_number != 0 || stats.stopped != StopReason::none;
  if (stopped_early) {
    kept = resumable ? resumable->keep_partial() : stdout_sink->keep_partial();
    if (resumable && resumable->streams()) kept = "-";  // written into a device or FIFO: nothing kept
  } else if (resumable) {
    resumable->finish(options.ordered);
  } else {
    stdout_sink->finish();
  }
  print_run_summary(args, options, stats, resumable ? &*resumable : nullptr);
  // Said even with --quiet: stages left uncached, corrupt entries, a database that refused.
  if (!stats.cache.note.empty()) std::fprintf(stderr, "coremap: cache: %s\n", stats.cache.note.c_str());
  const std::uint64_t earlier_failed = resumable ? resumable->earlier_failed() : 0;
  const bool summary_failed = report_summaries(stats.summaries, args);
  if (signal_number != 0) {
    const char* name = signal_name(signal_number);
    std::fprintf(stderr,
                 "coremap: interrupted by %s: %llu items recorded, %llu cut short or not started (no record)%s%s%s\n",
                 name, static_cast<unsigned long long>(stats.items), static_cast<unsigned long long>(stats.not_run),
                 kept == "-" ? "" : "; partial output kept in ", kept == "-" ? "" : kept.c_str(),
                 kept == "-" ? "" : (" (" + resume_hint + ")").c_str());
    return 128 + signal_number;
  }
  if (stopped_early && kept != "-") {
    std::fprintf(stderr, "coremap: partial output kept in %s (%s)\n", kept.c_str(), resume_hint.c_str());
  }
  return stats.failed + earlier_failed == 0 && !summary_failed ? exit_ok : exit_items_failed;
}

}  // namespace coremap::cli
