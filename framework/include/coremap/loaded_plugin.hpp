// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// A loaded plugin and its instances. A Plugin is a loaded library (or a plugin class linked
/// into the application, or a function); a PluginInstance is one constructed object of it.
/// PluginLoader (coremap/plugin_loader.hpp) finds a plugin by name on the search path.

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <coremap/export.hpp>
#include <coremap/plugin.hpp>

namespace coremap {

/// A loaded plugin: its library stays loaded while the Plugin, or any instance made from it,
/// is alive.
///
/// \code
/// auto plugin = coremap::Plugin::load("build/lib/coremap/plugins/sha256.so");
/// coremap::PluginInstance sha(plugin, plugin->resolve_config(coremap::Json::object()));
/// \endcode
///
/// Thread safety: all const members may be called from any thread.
class COREMAP_EXPORT Plugin {
 public:
  /// Reads the file's ELF dynamic symbol table and dynamic section first (libelf; no code of
  /// the file runs), then loads it (dlopen with RTLD_NOW | RTLD_LOCAL) and checks it. Throws
  /// PluginError naming the file and the reason: missing or not a regular file, not an ELF
  /// shared library, no exported entry symbol (then it is never dlopened, so the constructors
  /// of a library that is not a plugin never run), built with a sanitizer whose runtime this
  /// process lacks (refused before dlopen: the runtime would end the process), not loadable
  /// (with the dynamic loader's message, e.g. an unresolved symbol), another plugin ABI, or
  /// another build fingerprint (naming the settings that differ). Never calls into a library
  /// whose ABI or fingerprint differs.
  static std::shared_ptr<const Plugin> load(const std::filesystem::path& path);

  /// A plugin class compiled into the application, run by the engine with no shared library:
  /// the same class a plugin library registers with COREMAP_PLUGIN (a constructor taking its
  /// config, `process()`, and optionally `config_keys`, `reentrant`, `merge()`/`summary()`,
  /// `save()`/`load()`; see coremap/plugin.hpp). `name` names it in messages, as a stage's
  /// default name and in RunStats::summaries; path() is "builtin:<name>". Throws UsageError
  /// for an empty name.
  ///
  /// \code
  /// auto upper = coremap::Plugin::from_class<Upper>("upper", "1.0.0", "upper-cases a field");
  /// coremap::Engine engine(upper, {{"field", "name"}});
  /// \endcode
  template <class P>
  static std::shared_ptr<const Plugin> from_class(std::string name, std::string version = {},
                                                  std::string description = {}) {
    return from_class_descriptor(detail::descriptor_of<P>("", "", ""), std::move(name), std::move(version),
                                 std::move(description));
  }

  /// Wraps a descriptor made elsewhere (a plugin library's entry function called by the
  /// application itself); `origin` names it in messages. A class compiled into the
  /// application is simpler with from_class().
  static std::shared_ptr<const Plugin> from_descriptor(const PluginDescriptor* descriptor,
                                                       std::string origin);

  /// Wraps a callable as a re-entrant plugin named `name`: every instance calls the same
  /// function, from any thread. It takes no config.
  static std::shared_ptr<const Plugin> from_function(
      std::function<Json(const Json& item, Context& context)> function, std::string name = "function");

  ~Plugin();
  Plugin(const Plugin&) = delete;
  Plugin& operator=(const Plugin&) = delete;

  const PluginDescriptor& descriptor() const noexcept { return *descriptor_; }
  std::string_view name() const noexcept { return descriptor_->name; }
  std::string_view version() const noexcept { return descriptor_->version; }
  std::string_view description() const noexcept { return descriptor_->description; }
  /// The library's path, or the origin given to from_descriptor().
  const std::string& path() const noexcept { return path_; }
  /// True when the plugin came from a shared library (load()), which another process can load
  /// too; false for from_descriptor() and from_function().
  bool loaded_from_library() const noexcept { return handle_ != nullptr; }
  /// True when one instance may run `process()` on many threads at once.
  bool reentrant() const noexcept { return (descriptor_->flags & plugin_reentrant) != 0; }
  /// True when the plugin aggregates (merge() and summary(); see docs/pipelines.md).
  bool reduces() const noexcept {
    return (descriptor_->flags & plugin_reduces) != 0 && descriptor_->merge != nullptr && descriptor_->summary != nullptr;
  }
  /// True when the plugin reduces and its partial state can cross processes (save() and
  /// load(); an MPI run needs them to merge the ranks' aggregates).
  bool saves_state() const noexcept {
    return reduces() && (descriptor_->flags & plugin_saves_state) != 0 && descriptor_->save_state != nullptr &&
           descriptor_->load_state != nullptr;
  }
  /// False when the plugin declares `cacheable = false` (plugin_not_cacheable): the result
  /// cache stores nothing of it (docs/cache.md).
  bool cacheable() const noexcept { return (descriptor_->flags & plugin_not_cacheable) == 0; }
  /// The item fields, besides `path`, that the plugin declares as naming its input files
  /// (`input_files` in its class; docs/cache.md): empty when it declares none.
  std::vector<std::string> input_file_fields() const;

  /// Checks `config` against the declared keys (null counts as {}) and returns it with the
  /// defaults filled in. Throws ConfigError naming the plugin and the key: not an object,
  /// unknown key, wrong type, required key missing. A plugin that declares no keys gets its
  /// config as given.
  Json resolve_config(const Json& config) const;

 private:
  struct Private {};

 public:
  Plugin(Private, void* handle, const PluginDescriptor* descriptor, std::string path) noexcept;

 private:
  friend class PluginInstance;
  void* handle_;
  const PluginDescriptor* descriptor_;
  std::string path_;
  // from_class(): a copy of the class's descriptor with its own name, version and
  // description, which `descriptor_` points into.
  static std::shared_ptr<const Plugin> from_class_descriptor(const PluginDescriptor& of_class, std::string name,
                                                             std::string version, std::string description);
  // Set by from_function: the callable; by from_function and from_class: the descriptor (with
  // its name) it runs under.
  std::shared_ptr<std::function<Json(const Json&, Context&)>> function_;
  std::shared_ptr<PluginDescriptor> function_descriptor_;
};

/// One constructed plugin object.
///
/// Thread safety: `process()` may be entered by one thread at a time unless the plugin is
/// reentrant.
class COREMAP_EXPORT PluginInstance {
 public:
  /// Runs the plugin's constructor with `resolved_config` (see Plugin::resolve_config). Throws
  /// PluginError with the constructor's message when it throws.
  PluginInstance(std::shared_ptr<const Plugin> plugin, const Json& resolved_config);
  ~PluginInstance();
  PluginInstance(const PluginInstance&) = delete;
  PluginInstance& operator=(const PluginInstance&) = delete;

  /// Calls the plugin's `process()`. Returns true with the result in `result`, or false with
  /// the exception's description in `error`. Never throws.
  bool process(const Json& item, Context& context, Json& result, std::string& error) noexcept {
    return descriptor_->process(self_, &item, &context, &result, &error);
  }

  const Plugin& plugin() const noexcept { return *plugin_; }

  /// Reductions (when the plugin reduces: Plugin::reduces()): folds `other`'s partial state
  /// into this instance, and gives this instance's aggregate. False with the message in
  /// `error` when the plugin throws.
  bool merge(PluginInstance& other, std::string& error) noexcept {
    return descriptor_->merge(self_, other.self_, &error);
  }
  bool summary(Json& out, std::string& error) noexcept { return descriptor_->summary(self_, &out, &error); }
  /// Partial states across processes (when Plugin::saves_state()): writes this instance's
  /// state; loads a state another instance saved into this (fresh) one.
  bool save_state(Json& out, std::string& error) noexcept { return descriptor_->save_state(self_, &out, &error); }
  bool load_state(const Json& state, std::string& error) noexcept {
    return descriptor_->load_state(self_, &state, &error);
  }

 private:
  std::shared_ptr<const Plugin> plugin_;
  const PluginDescriptor* descriptor_;
  void* self_;
};

}  // namespace coremap
