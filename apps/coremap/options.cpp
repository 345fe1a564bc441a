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

CLI::Validator thread_count_validator() {
  return CLI::Validator(
      [](std::string& text) -> std::string { return coremap::thread_count_error(text); },
      "1-" + std::to_string(coremap::max_threads));
}

void add_pipeline_options(CLI::App& command, PipelineArgs& args) {
  auto* plugin = command.add_option("-p,--plugin", args.plugin, "Plugin name (found on the search path) or path to a .so")
                     ->type_name("NAME|PATH");
  auto* pipeline = command.add_option("--pipeline", args.pipeline,
                                      "Run the stages of a pipeline spec instead of one plugin (docs/pipelines.md)")
                       ->type_name("FILE.json")
                       ->excludes(plugin);
  command.add_option("--concurrency", args.concurrency,
                     "With --plugin: calls in flight at once: serial, unlimited (default: one per thread) or N; "
                     "N above --threads runs the plugin on N threads of its own, for blocking work")
      ->type_name("N|serial|unlimited")
      ->excludes(pipeline);
  command.add_option("-m,--manifest", args.manifest, "Manifest file, or - for standard input")
      ->required()
      ->type_name("FILE|-");
  command.add_option("--format", args.format, "Manifest format: auto, jsonl, json (one array) or lines")
      ->check(CLI::IsMember({"auto", "jsonl", "ndjson", "json", "array", "lines", "list", "paths"}));
  command.add_option("-c,--config", args.config, "Plugin config: a JSON object, or @FILE holding one")
      ->type_name("JSON|@FILE")
      ->excludes(pipeline);
  add_search_options(command, args.search);
}

Pipeline make_pipeline(const PipelineArgs& args, const PluginLoader& loader, const std::string& command) {
  if (args.plugin.empty() == args.pipeline.empty()) throw UsageError(command + ": give --plugin or --pipeline (one of them)");
  if (!args.pipeline.empty()) return load_pipeline(args.pipeline, loader);
  Pipeline pipeline;
  auto plugin = loader.load(args.plugin);
  Json config = plugin->resolve_config(parse_config_argument(args.config));
  Concurrency concurrency = Concurrency::unlimited();
  if (!args.concurrency.empty()) concurrency = Concurrency::parse_text(args.concurrency, "--concurrency");
  pipeline.stages.push_back(Stage{std::string(plugin->name()), std::move(plugin), std::move(config), concurrency});
  return pipeline;
}

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
