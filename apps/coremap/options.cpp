// SPDX-License-Identifier: MIT
#include <cctype>
#include <charconv>
#include <fstream>
#include <limits>
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

std::uint64_t parse_size(const std::string& text, const std::string& flag) {
  std::uint64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [rest, ec] = std::from_chars(text.data(), end, value);
  std::string suffix(rest, end);
  for (char& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (suffix.ends_with("IB")) {
    suffix.resize(suffix.size() - 2);
  } else if (suffix.size() > 1 && suffix.ends_with("B")) {
    suffix.pop_back();
  }
  int shift = -1;
  if (suffix.empty() || suffix == "B") shift = 0;
  if (suffix == "K") shift = 10;
  if (suffix == "M") shift = 20;
  if (suffix == "G") shift = 30;
  if (suffix == "T") shift = 40;
  if (ec != std::errc() || rest == text.data() || shift < 0 || value == 0) {
    throw UsageError(flag + ": '" + text + "' is not a size (bytes, or a number with K, M, G or T, e.g. 512M)");
  }
  if (value > (std::numeric_limits<std::uint64_t>::max() >> shift)) throw UsageError(flag + ": '" + text + "' is too large");
  return value << shift;
}

}  // namespace coremap::cli
