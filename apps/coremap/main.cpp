// SPDX-License-Identifier: MIT
#include <cstdio>

#include "commands.hpp"

int main(int argc, char** argv) {
  using namespace coremap::cli;
  CLI::App app{"coremap: map a C++ plugin over every item of a manifest, on every core, with oneTBB.\n"
               "Results stream out as JSON Lines. See README.md and docs/."};
  app.name("coremap");
  app.set_version_flag("--version", coremap::build_description());
  app.require_subcommand(1);

  RunArgs run_args;
  BenchArgs bench_args;
  PluginsArgs plugins_args;
  InfoArgs info_args;
  NewPluginArgs new_plugin_args;
  CLI::App* run = add_run_command(app, run_args);
  CLI::App* bench = add_bench_command(app, bench_args);
  CLI::App* plugins = add_plugins_command(app, plugins_args);
  CLI::App* info = add_info_command(app, info_args);
  CLI::App* new_plugin = add_new_plugin_command(app, new_plugin_args);

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
  } catch (const coremap::Error& e) {
    std::fprintf(stderr, "coremap: error: %s\n", e.what());
    return exit_setup;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coremap: error: %s\n", e.what());
    return exit_setup;
  }
  return exit_setup;
}
