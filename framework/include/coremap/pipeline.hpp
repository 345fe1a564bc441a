// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// A pipeline: plugins chained in stages, each with its own concurrency. `coremap run
/// --plugin P` is the one-stage pipeline; `--pipeline FILE.json` reads one from a file:
///
/// \code{.json}
/// {
///   "max_in_flight": 64,
///   "stages": [
///     {"name": "fetch", "plugin": "exec", "config": {"argv": ["curl", "-s", "{url}"]}, "concurrency": 64},
///     {"name": "parse", "plugin": "./libparse.so", "concurrency": "unlimited", "isolate": true, "memory_limit": "512M"},
///     {"name": "total", "plugin": "wordcount", "concurrency": "serial"}
///   ]
/// }
/// \endcode
///
/// See docs/pipelines.md.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <coremap/export.hpp>
#include <coremap/plugin.hpp>
#include <coremap/plugin_loader.hpp>

namespace coremap {

/// How many calls of one stage may run at once.
struct COREMAP_EXPORT Concurrency {
  /// 0 means unlimited (as many as the engine has threads); 1 is serial.
  std::size_t limit = 0;

  static Concurrency serial() noexcept { return {1}; }
  static Concurrency unlimited() noexcept { return {0}; }
  static Concurrency of(std::size_t n) noexcept { return {n}; }
  bool is_unlimited() const noexcept { return limit == 0; }
  /// "serial", "unlimited" or the number.
  std::string to_string() const;
  /// Reads "serial", "unlimited" or an integer from 1 to 65536; throws ConfigError naming
  /// `where` otherwise.
  static Concurrency parse(const Json& value, const std::string& where);
  static Concurrency parse_text(std::string_view text, const std::string& where);
};

/// One stage: a plugin, its config and its concurrency, and whether it runs in worker processes.
struct Stage {
  std::string name;                      ///< for messages and reports; defaults to the plugin's name
  std::shared_ptr<const Plugin> plugin;
  Json config = Json::object();          ///< as given; the engine resolves it against the plugin
  Concurrency concurrency{};
  /// Runs the plugin in worker processes (coremap-worker, docs/reliability.md#crash-isolation),
  /// as RunOptions::isolate does for every stage; the other stages stay in process.
  bool isolate = false;
  /// With isolate (the stage's or RunOptions::isolate): each of the stage's workers' address-space
  /// limit (RLIMIT_AS) in bytes; 0 takes RunOptions::memory_limit_bytes.
  std::uint64_t memory_limit_bytes = 0;
};

/// Stages in order, and the bound on batches in flight (0: the engine's default).
struct Pipeline {
  std::vector<Stage> stages;
  std::size_t max_in_flight = 0;
};

/// Reads a pipeline spec (see the file comment) and loads its plugins with `loader`. Throws
/// ConfigError naming the file, the stage (by position and name) and the key for a spec that
/// is not valid: unknown key, wrong type, missing plugin, a concurrency that is not "serial",
/// "unlimited" or a positive integer, an "isolate" that is not true or false, a "memory_limit"
/// that is not a size ("512M", bytes) or is given without "isolate": true; PluginError when a
/// plugin cannot be loaded.
COREMAP_EXPORT Pipeline load_pipeline(const std::filesystem::path& spec, const PluginLoader& loader);

/// The same for a spec already parsed; `source` names it in messages.
COREMAP_EXPORT Pipeline parse_pipeline(const Json& spec, const std::string& source, const PluginLoader& loader);

}  // namespace coremap
