// SPDX-License-Identifier: MIT
#include <coremap/plugin_loader.hpp>

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>
#include <system_error>

#include <coremap/error.hpp>

#include "build_info.hpp"

namespace coremap {
namespace fs = std::filesystem;

namespace {

[[noreturn]] void refuse(const fs::path& path, const std::string& reason) {
  throw PluginError("cannot load plugin '" + path.string() + "': " + reason);
}

std::string dl_error() {
  const char* message = ::dlerror();
  return message != nullptr ? message : "unknown dynamic loader error";
}

}  // namespace

Plugin::Plugin(Private, void* handle, const PluginDescriptor* descriptor, std::string path) noexcept
    : handle_(handle), descriptor_(descriptor), path_(std::move(path)) {}

Plugin::~Plugin() {
  if (handle_ != nullptr) ::dlclose(handle_);
}

std::shared_ptr<const Plugin> Plugin::load(const fs::path& path) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) refuse(path, "no such file");
  if (fs::is_directory(status)) refuse(path, "is a directory");

  // RTLD_NOW: an unresolved symbol fails here, with the loader's message, not at the first
  // call in the middle of a run. RTLD_LOCAL: two plugins' symbols never interpose.
  ::dlerror();
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) refuse(path, dl_error());

  struct Closer {
    void* handle;
    ~Closer() {
      if (handle != nullptr) ::dlclose(handle);
    }
  } closer{handle};

  void* symbol = ::dlsym(handle, plugin_entry_symbol);
  if (symbol == nullptr) {
    refuse(path, std::string("not a coremap plugin: it does not export '") + plugin_entry_symbol +
                     "' (register the plugin class with COREMAP_PLUGIN)");
  }
  const auto entry = reinterpret_cast<PluginEntry>(symbol);
  const PluginDescriptor* descriptor = entry();
  if (descriptor == nullptr) refuse(path, std::string(plugin_entry_symbol) + " returned no descriptor");
  // The ABI version is the only field read before it is known to match.
  if (descriptor->abi_version != plugin_abi_version) {
    refuse(path, "built for plugin ABI " + std::to_string(descriptor->abi_version) +
                     ", this coremap uses ABI " + std::to_string(plugin_abi_version) +
                     "; rebuild the plugin against this coremap");
  }
  if (descriptor->fingerprint == nullptr ||
      std::strcmp(descriptor->fingerprint, detail::build_fingerprint) != 0) {
    refuse(path, std::string("built with '") +
                     (descriptor->fingerprint != nullptr ? descriptor->fingerprint : "(none)") +
                     "', this coremap with '" + detail::build_fingerprint +
                     "'; rebuild the plugin with the same compiler, standard library and nlohmann_json");
  }
  if (descriptor->name == nullptr || descriptor->version == nullptr ||
      descriptor->description == nullptr || descriptor->create == nullptr ||
      descriptor->destroy == nullptr || descriptor->process == nullptr ||
      (descriptor->config_key_count > 0 && descriptor->config_keys == nullptr)) {
    refuse(path, "its descriptor is incomplete");
  }
  closer.handle = nullptr;
  return std::make_shared<const Plugin>(Private{}, handle, descriptor, path.string());
}

std::shared_ptr<const Plugin> Plugin::from_descriptor(const PluginDescriptor* descriptor,
                                                      std::string origin) {
  if (descriptor == nullptr || descriptor->abi_version != plugin_abi_version) {
    throw PluginError("plugin '" + origin + "': descriptor missing or of another ABI");
  }
  return std::make_shared<const Plugin>(Private{}, nullptr, descriptor, std::move(origin));
}

namespace {

using Function = std::function<Json(const Json&, Context&)>;

bool call_function(void* self, const Json* item, Context* context, Json* result, std::string* error) noexcept {
  try {
    *result = (*static_cast<Function*>(self))(*item, *context);
    return true;
  } catch (...) {
    detail::describe_current_exception(*error);
    return false;
  }
}

void* no_create(const Json*, std::string*) noexcept { return nullptr; }
void no_destroy(void*) noexcept {}

}  // namespace

std::shared_ptr<const Plugin> Plugin::from_function(Function function, std::string name) {
  if (!function) throw PluginError("plugin '" + name + "': empty function");
  auto fn = std::make_shared<Function>(std::move(function));
  auto owned_name = std::make_shared<std::string>(std::move(name));
  // The descriptor's strings must outlive it: keep the name alive through the deleter.
  auto descriptor = std::shared_ptr<PluginDescriptor>(
      new PluginDescriptor{plugin_abi_version, plugin_reentrant | plugin_declares_config, owned_name->c_str(),
                           "", "a function run directly by the engine", detail::build_fingerprint, nullptr, 0,
                           &no_create, &no_destroy, &call_function, nullptr, nullptr, nullptr, nullptr},
      [owned_name](PluginDescriptor* d) { delete d; });
  auto plugin = std::make_shared<Plugin>(Private{}, nullptr, descriptor.get(), "function:" + *owned_name);
  plugin->function_ = std::move(fn);
  plugin->function_descriptor_ = std::move(descriptor);
  return plugin;
}

PluginInstance::PluginInstance(std::shared_ptr<const Plugin> plugin, const Json& resolved_config)
    : plugin_(std::move(plugin)), descriptor_(&plugin_->descriptor()), self_(nullptr) {
  if (plugin_->function_) {
    self_ = plugin_->function_.get();
    return;
  }
  std::string error;
  self_ = descriptor_->create(&resolved_config, &error);
  if (self_ == nullptr) {
    throw PluginError("plugin '" + std::string(plugin_->name()) + "' (" + plugin_->path() +
                      "): constructor failed: " + (error.empty() ? "no message" : error));
  }
}

PluginInstance::~PluginInstance() {
  if (self_ != nullptr) descriptor_->destroy(self_);
}

PluginLoader::PluginLoader(std::vector<fs::path> extra_dirs, bool use_environment, bool use_bundled)
    : dirs_(std::move(extra_dirs)) {
  if (use_environment) {
    if (const char* env = std::getenv("COREMAP_PLUGIN_PATH"); env != nullptr) {
      std::string_view rest(env);
      while (!rest.empty()) {
        const auto colon = rest.find(':');
        const auto dir = rest.substr(0, colon);
        if (!dir.empty()) dirs_.emplace_back(dir);
        if (colon == std::string_view::npos) break;
        rest.remove_prefix(colon + 1);
      }
    }
  }
  if (use_bundled) {
    if (auto bundled = bundled_directory(); !bundled.empty()) dirs_.push_back(std::move(bundled));
  }
}

fs::path PluginLoader::bundled_directory() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&PluginLoader::bundled_directory), &info) == 0 ||
      info.dli_fname == nullptr) {
    return {};
  }
  std::error_code ec;
  fs::path lib = fs::canonical(info.dli_fname, ec);
  if (ec) lib = info.dli_fname;
  return (lib.parent_path() / COREMAP_PLUGIN_DIR_FROM_LIB).lexically_normal();
}

fs::path PluginLoader::find(std::string_view name_or_path) const {
  if (name_or_path.empty()) throw PluginError("empty plugin name");
  if (name_or_path.find('/') != std::string_view::npos) return fs::path(name_or_path);
  std::string file(name_or_path);
  if (!file.ends_with(".so")) file += ".so";
  std::string searched;
  for (const auto& dir : dirs_) {
    fs::path candidate = dir / file;
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec)) return candidate;
    searched += "\n  " + dir.string();
  }
  throw PluginError("plugin '" + std::string(name_or_path) + "' not found (looked for " + file +
                    " in:" + (searched.empty() ? std::string(" no directories") : searched) +
                    ")\nuse --plugin-path DIR, set COREMAP_PLUGIN_PATH, or give the path to the .so");
}

std::shared_ptr<const Plugin> PluginLoader::load(std::string_view name_or_path) const {
  return Plugin::load(find(name_or_path));
}

std::vector<PluginListing> PluginLoader::list() const {
  std::vector<PluginListing> listings;
  std::set<std::string> seen;
  for (const auto& dir : dirs_) {
    std::error_code ec;
    std::vector<fs::path> files;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->path().extension() == ".so" && it->is_regular_file(ec)) files.push_back(it->path());
    }
    std::sort(files.begin(), files.end());
    for (auto& file : files) {
      if (!seen.insert(file.filename().string()).second) continue;
      PluginListing listing{file, nullptr, {}};
      try {
        listing.plugin = Plugin::load(file);
      } catch (const Error& e) {
        listing.error = e.what();
      }
      listings.push_back(std::move(listing));
    }
  }
  return listings;
}

}  // namespace coremap
