// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Finding plugins: PluginLoader resolves a plugin name on the search path and loads it as a
/// Plugin (coremap/loaded_plugin.hpp); PluginListing is one plugin found there.

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <coremap/export.hpp>
#include <coremap/loaded_plugin.hpp>

namespace coremap {

/// A plugin found on the search path, for `coremap plugins`.
struct PluginListing {
  std::filesystem::path path;
  std::shared_ptr<const Plugin> plugin;  ///< null when loading failed
  std::string error;                     ///< why loading failed
  /// False for a file that is not a coremap plugin (not an ELF shared library, or it does not
  /// export the entry symbol): it was never loaded, and `coremap plugins` only counts it.
  bool is_plugin = true;
};

/// Resolves plugin names on the search path: the directories given (`--plugin-path`), then
/// those in COREMAP_PLUGIN_PATH (colon-separated), then the bundled plugins directory next to
/// libcoremap (lib/coremap/plugins, in the build tree and after install alike).
///
/// Thread safety: const members may be called from any thread.
class COREMAP_EXPORT PluginLoader {
 public:
  explicit PluginLoader(std::vector<std::filesystem::path> extra_dirs = {}, bool use_environment = true,
                        bool use_bundled = true);

  /// The directories searched, in order.
  const std::vector<std::filesystem::path>& directories() const noexcept { return dirs_; }

  /// A path when `name_or_path` contains a '/', else the first `<dir>/<name>.so` (or
  /// `<dir>/<name>` when it already ends in .so) on the search path that is a coremap plugin
  /// (exports the entry symbol, read from its ELF file without loading it); when none is, the
  /// first file of that name, so that load() says why. Throws PluginError listing the
  /// directories searched when there is no such file.
  std::filesystem::path find(std::string_view name_or_path) const;

  /// find() then Plugin::load().
  std::shared_ptr<const Plugin> load(std::string_view name_or_path) const;

  /// Every *.so in the search directories, each loaded or with its error; a name found twice
  /// is listed once, as find() resolves it. Files that are not coremap plugins are listed
  /// with is_plugin false (only when no plugin has their name) and are never loaded.
  std::vector<PluginListing> list() const;

  /// The bundled plugins directory, derived from where libcoremap itself was loaded from.
  static std::filesystem::path bundled_directory();

 private:
  std::vector<std::filesystem::path> dirs_;
};

}  // namespace coremap
