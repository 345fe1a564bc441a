// SPDX-License-Identifier: MIT
#include <fstream>
#include <sstream>

#include "commands.hpp"

namespace coremap::cli {

void add_search_options(CLI::App& command, SearchOptions& options) {
  command.add_option("--plugin-path", options.plugin_paths,
                     "Directory searched for plugins by name, before COREMAP_PLUGIN_PATH and the "
                     "bundled plugins (repeatable)")
      ->type_name("DIR");
}

PluginLoader make_loader(const SearchOptions& options) { return PluginLoader(options.plugin_paths); }

Json parse_config_argument(const std::string& argument) {
  if (argument.empty()) return Json::object();
  std::string text = argument;
  std::string source = "--config";
  if (argument.front() == '@') {
    const std::string path = argument.substr(1);
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ConfigError("--config: cannot read '" + path + "'");
    std::ostringstream contents;
    contents << in.rdbuf();
    text = contents.str();
    source = path;
  }
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    throw ConfigError(source + ": invalid JSON: " + e.what());
  }
}

}  // namespace coremap::cli
