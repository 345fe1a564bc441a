// SPDX-License-Identifier: MIT
#include <algorithm>
#include <cstdio>

#include "commands.hpp"

namespace coremap::cli {

CLI::App* add_plugins_command(CLI::App& app, PluginsArgs& args) {
  CLI::App* plugins = app.add_subcommand("plugins", "List the plugins found on the search path");
  add_search_options(*plugins, args.search);
  return plugins;
}

int plugins_command(const PluginsArgs& args) {
  const PluginLoader loader = make_loader(args.search);
  const auto listings = loader.list();
  std::size_t name_width = 4, version_width = 7, description_width = 11;
  for (const auto& listing : listings) {
    if (!listing.plugin) continue;
    name_width = std::max(name_width, listing.plugin->name().size());
    version_width = std::max(version_width, listing.plugin->version().size());
    description_width = std::max(description_width, listing.plugin->description().size());
  }
  std::printf("%-*s  %-*s  %-*s  %s\n", static_cast<int>(name_width), "NAME", static_cast<int>(version_width),
              "VERSION", static_cast<int>(description_width), "DESCRIPTION", "PATH");
  std::size_t not_plugins = 0;
  for (const auto& listing : listings) {
    if (!listing.is_plugin) {
      ++not_plugins;  // another library (or file) on the path: never loaded, only counted
      continue;
    }
    if (!listing.plugin) {
      std::fprintf(stderr, "coremap: skipped %s\n", listing.error.c_str());
      continue;
    }
    const Plugin& p = *listing.plugin;
    std::printf("%-*.*s  %-*.*s  %-*.*s  %s\n", static_cast<int>(name_width), static_cast<int>(p.name().size()),
                p.name().data(), static_cast<int>(version_width), static_cast<int>(p.version().size()),
                p.version().data(), static_cast<int>(description_width),
                static_cast<int>(p.description().size()), p.description().data(), p.path().c_str());
  }
  if (not_plugins > 0) {
    std::fprintf(stderr, "coremap: ignored %zu .so %s (never loaded: no exported %s; `coremap info PATH` says why)\n",
                 not_plugins,
                 not_plugins == 1 ? "file that is not a coremap plugin" : "files that are not coremap plugins",
                 plugin_entry_symbol);
  }
  if (listings.size() == not_plugins) {
    std::fprintf(stderr, "coremap: no plugins found; searched:\n");
    for (const auto& dir : loader.directories()) std::fprintf(stderr, "  %s\n", dir.c_str());
  }
  return exit_ok;
}

}  // namespace coremap::cli
