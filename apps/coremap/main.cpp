// SPDX-License-Identifier: MIT
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include <coremap/process_tree.hpp>

#include "commands.hpp"

namespace {

// No process a run started outlives coremap (docs/reliability.md, "No process left behind"):
// coremap is a child subreaper, so whatever its plugins, exec commands and workers leave
// behind, even after setsid and the death of its parent, is re-parented here rather than to
// PID 1, and killed and reaped on the way out by this guard, by the second-signal exit
// (run_command.cpp) or by a signal that ends coremap (below).
struct KillDescendantsOnExit {
  KillDescendantsOnExit() { coremap::process_tree::become_subreaper(); }
  ~KillDescendantsOnExit() { coremap::process_tree::kill_descendants(); }
};

struct sigaction previous_fatal[NSIG];

// A signal that ends coremap takes its descendants with it, then coremap dies of the same
// signal through whatever handler was there before (a sanitizer's report, the core dump): a
// plugin crashing coremap itself (no --isolate), a closed terminal or pipe, a signal outside a
// run (during a run, SIGINT and SIGTERM stop it instead: run_command.cpp).
extern "C" void on_fatal_signal(int signal_number) {
  // A crash in coremap's own process (a plugin run without --isolate, most likely): say what
  // it means for the output before dying of it. write(2) only: async-signal-safe.
  const char* name = signal_number == SIGSEGV ? "SIGSEGV"
                     : signal_number == SIGBUS ? "SIGBUS"
                     : signal_number == SIGILL ? "SIGILL"
                     : signal_number == SIGFPE ? "SIGFPE"
                     : signal_number == SIGABRT ? "SIGABRT"
                                                : nullptr;
  if (name != nullptr) {
    static constexpr char head[] = "coremap: crashed with ";
    static constexpr char tail[] =
        " (a plugin running in coremap's own process, most likely): with -o FILE the records written so far are "
        "kept in FILE.part and --resume finishes the run; --isolate runs plugins in worker processes, where a "
        "crash costs only its item\n";
    [[maybe_unused]] ssize_t ignored = ::write(STDERR_FILENO, head, sizeof head - 1);
    ignored = ::write(STDERR_FILENO, name, std::strlen(name));
    ignored = ::write(STDERR_FILENO, tail, sizeof tail - 1);
  }
  coremap::process_tree::kill_descendants();
  ::sigaction(signal_number, &previous_fatal[signal_number], nullptr);
  ::raise(signal_number);
}

void kill_descendants_on_fatal_signals() {
  struct sigaction action {};
  action.sa_handler = on_fatal_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_NODEFER | SA_RESETHAND;  // a fault inside the handler is not handled again
  for (const int s : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) ::sigaction(s, &action, &previous_fatal[s]);
  // Signals that end a process by default, unless coremap's parent had them ignored (nohup).
  for (const int s : {SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGPIPE, SIGALRM, SIGUSR1, SIGUSR2, SIGXCPU, SIGXFSZ}) {
    struct sigaction current {};
    if (::sigaction(s, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      ::sigaction(s, &action, &previous_fatal[s]);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace coremap::cli;
  const KillDescendantsOnExit kill_descendants_on_exit;
  kill_descendants_on_fatal_signals();
  CLI::App app{"coremap: map a C++ plugin over every item of a manifest, on every core, with oneTBB.\n"
               "Results stream out as JSON Lines. See README.md and docs/."};
  app.name("coremap");
  app.set_version_flag("--version", coremap::build_description());
  app.require_subcommand(1);
  // Usage errors read like every other error: `coremap: error: ...` (scripts grep for it).
  app.failure_message([](const CLI::App* failed, const CLI::Error& e) {
    std::string message = "coremap: error: " + std::string(e.what()) + "\n";
    if (failed && failed->get_help_ptr() != nullptr) {
      message += "Run with " + failed->get_help_ptr()->get_name() + " for more information.\n";
    }
    return message;
  });

  RunArgs run_args;
  BenchArgs bench_args;
  PluginsArgs plugins_args;
  InfoArgs info_args;
  NewPluginArgs new_plugin_args;
  CacheArgs cache_args;
  CLI::App* run = add_run_command(app, run_args);
  CLI::App* bench = add_bench_command(app, bench_args);
  CLI::App* plugins = add_plugins_command(app, plugins_args);
  CLI::App* info = add_info_command(app, info_args);
  CLI::App* new_plugin = add_new_plugin_command(app, new_plugin_args);
  CLI::App* cache = add_cache_command(app, cache_args);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help and --version exit 0; every usage error is a setup error.
    return app.exit(e) == 0 ? exit_ok : exit_setup;
  }
  try {
    if (run->parsed()) return run_command(run_args);
    if (bench->parsed()) return bench_command(bench_args);
    if (plugins->parsed()) return plugins_command(plugins_args);
    if (info->parsed()) return info_command(info_args);
    if (new_plugin->parsed()) return new_plugin_command(new_plugin_args);
    if (cache->parsed()) return cache_command(cache_args);
  } catch (const coremap::Error& e) {
    std::fprintf(stderr, "coremap: error: %s\n", e.what());
    return exit_setup;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coremap: error: %s\n", e.what());
    return exit_setup;
  }
  return exit_setup;
}
