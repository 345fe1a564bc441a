// SPDX-License-Identifier: MIT
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <string>

#include "commands.hpp"

namespace coremap::cli {
namespace {

// The run being interrupted, and the first signal received. A handler may only touch
// lock-free atomics: Engine::request_stop() is one relaxed store.
std::atomic<Engine*> interrupted_engine{nullptr};
volatile std::sig_atomic_t first_signal = 0;

extern "C" void on_interrupt(int signal_number) {
  if (first_signal != 0) _exit(128 + signal_number);  // a second Ctrl-C leaves at once
  first_signal = signal_number;
  if (Engine* engine = interrupted_engine.load()) engine->request_stop();
}

// Installs the handlers for the lifetime of a run and puts the old ones back afterwards.
class InterruptScope {
 public:
  explicit InterruptScope(Engine& engine) {
    interrupted_engine.store(&engine);
    struct sigaction action {};
    action.sa_handler = on_interrupt;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, &old_int_);
    ::sigaction(SIGTERM, &action, &old_term_);
  }
  ~InterruptScope() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
    interrupted_engine.store(nullptr);
  }
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

}  // namespace

CLI::App* add_run_command(CLI::App& app, RunArgs& args) {
  CLI::App* run = app.add_subcommand("run", "Map a plugin over every item of a manifest");
  run->add_option("-p,--plugin", args.plugin, "Plugin name (found on the search path) or path to a .so")
      ->required()
      ->type_name("NAME|PATH");
  run->add_option("-m,--manifest", args.manifest, "Manifest file, or - for standard input")
      ->required()
      ->type_name("FILE|-");
  run->add_option("-o,--output", args.output,
                  "Write records here (via FILE.part, renamed when done); default standard output")
      ->type_name("FILE");
  run->add_option("--format", args.format, "Manifest format: auto, jsonl, json (one array) or lines")
      ->check(CLI::IsMember({"auto", "jsonl", "ndjson", "json", "array", "lines", "list", "paths"}));
  auto* threads = run->add_option("-j,--threads", args.threads, "Worker threads (default: all cores)")
                      ->check(CLI::Range(std::size_t{1}, std::size_t{4096}));
  run->add_flag("--serial", args.serial,
                "Run on one thread, in order, with no TBB in the call path (for debugging)")
      ->excludes(threads);
  run->add_flag("--unordered", args.unordered, "Write records as items finish instead of in manifest order");
  run->add_option("-c,--config", args.config, "Plugin config: a JSON object, or @FILE holding one")
      ->type_name("JSON|@FILE");
  auto* max_errors = run->add_option("--max-errors", args.max_errors,
                                     "Stop taking new items after N failed items (0: never)")
                         ->type_name("N");
  run->add_flag("--fail-fast", args.fail_fast, "Stop at the first failed item (--max-errors 1)")
      ->excludes(max_errors);
  run->add_option("--max-in-flight", args.max_in_flight,
                  "Bound on batches of items in flight (default: 4 per thread)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
      ->type_name("N");
  auto* isolate = run->add_flag("--isolate", args.isolate,
                                "Run the plugin in worker processes: a crash (signal, exit, memory limit) "
                                "fails only its item; the worker is replaced");
  run->add_option("--memory-limit", args.memory_limit,
                  "With --isolate: address-space limit of each worker (RLIMIT_AS), e.g. 512M, 2G")
      ->type_name("SIZE")
      ->needs(isolate);
  // Enforced by killing the item's worker, so (on this branch) only with --isolate.
  run->add_option("--timeout", args.timeout_seconds,
                  "With --isolate: an item running longer than this many seconds fails and its worker "
                  "is replaced (0: no limit)")
      ->type_name("SECONDS")
      ->check(CLI::Range(0.0, 1e6))
      ->needs(isolate);
  run->add_flag("-q,--quiet", args.quiet, "No progress line and no summary on standard error");
  add_search_options(*run, args.search);
  return run;
}

int run_command(const RunArgs& args) {
  const PluginLoader loader = make_loader(args.search);
  ManifestReader manifest(args.manifest, parse_manifest_format(args.format));
  auto plugin = loader.load(args.plugin);
  RunOptions options;
  options.threads = args.threads;
  options.serial = args.serial;
  options.ordered = !args.unordered;
  options.max_errors = args.fail_fast ? 1 : args.max_errors;
  options.max_in_flight = args.max_in_flight;
  options.isolate = args.isolate;
  if (!args.memory_limit.empty()) options.memory_limit_bytes = parse_size(args.memory_limit, "--memory-limit");
  if (args.timeout_seconds > 0) {
    // Rounded up, so that a tiny positive timeout is never 0 (no limit).
    options.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(args.timeout_seconds * 1000)));
  }
  // The live line goes to a terminal only: logs and pipes get the summary alone.
  const bool draw_progress = !args.quiet && ::isatty(STDERR_FILENO) == 1;
  if (draw_progress) options.on_progress = terminal_progress(stderr);
  Engine engine(plugin, parse_config_argument(args.config), options);

  FileSink sink(args.output);
  RunStats stats;
  {
    InterruptScope interrupts(engine);
    stats = engine.run(manifest, sink);
  }
  if (draw_progress) erase_progress_line(stderr);
  const int signal_number = first_signal;
  std::string kept;
  if (signal_number != 0) {
    kept = sink.keep_partial();
  } else {
    sink.finish();
  }

  if (!args.quiet) {
    std::fprintf(stderr,
                 "coremap: %llu items: %llu ok, %llu failed in %.3f s (%.0f items/s, %zu thread%s%s)\n",
                 static_cast<unsigned long long>(stats.items), static_cast<unsigned long long>(stats.ok),
                 static_cast<unsigned long long>(stats.failed), stats.wall_seconds, stats.items_per_second(),
                 stats.threads, stats.threads == 1 ? "" : "s", args.serial ? ", serial" : "");
    if (stats.stopped == StopReason::max_errors) {
      std::fprintf(stderr, "coremap: stopped early: %llu failed items reached --max-errors %llu\n",
                   static_cast<unsigned long long>(stats.failed),
                   static_cast<unsigned long long>(options.max_errors));
    }
  }
  if (signal_number != 0) {
    std::fprintf(stderr, "coremap: interrupted by %s: items in progress finished, %llu records written%s%s\n",
                 signal_number == SIGINT ? "SIGINT" : "SIGTERM", static_cast<unsigned long long>(stats.items),
                 kept == "-" ? "" : "; partial output kept in ", kept == "-" ? "" : kept.c_str());
    return 128 + signal_number;
  }
  return stats.failed == 0 ? exit_ok : exit_items_failed;
}

}  // namespace coremap::cli
