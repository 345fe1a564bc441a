// SPDX-License-Identifier: MIT
#include <algorithm>
#include <cstdio>

#include "commands.hpp"

namespace coremap::cli {

CLI::App* add_info_command(CLI::App& app, InfoArgs& args) {
  CLI::App* info = app.add_subcommand("info", "Show a plugin's metadata and config keys");
  info->add_option("plugin", args.plugin, "Plugin name or path")->required()->type_name("PLUGIN");
  info->add_flag("--json", args.json, "Print the metadata as one JSON object");
  add_search_options(*info, args.search);
  return info;
}

int info_command(const InfoArgs& args) {
  const auto plugin = make_loader(args.search).load(args.plugin);
  const PluginDescriptor& d = plugin->descriptor();
  Json keys = Json::array();
  for (std::size_t i = 0; i < d.config_key_count; ++i) {
    const ConfigKey& key = d.config_keys[i];
    keys.push_back({{"name", key.name},
                    {"type", key.type},
                    {"default", key.default_json != nullptr ? Json(key.default_json) : Json()},
                    {"required", key.default_json == nullptr},
                    {"description", key.description}});
  }
  if (args.json) {
    const Json info = {{"name", plugin->name()},
                       {"version", plugin->version()},
                       {"description", plugin->description()},
                       {"path", plugin->path()},
                       {"abi", d.abi_version},
                       {"fingerprint", d.fingerprint},
                       {"reentrant", plugin->reentrant()},
                       {"reduces", plugin->reduces()},
                       {"declares_config", (d.flags & plugin_declares_config) != 0},
                       {"config", keys}};
    std::printf("%s\n", info.dump(2).c_str());
    return exit_ok;
  }
  std::printf("name:        %.*s\n", static_cast<int>(plugin->name().size()), plugin->name().data());
  std::printf("version:     %.*s\n", static_cast<int>(plugin->version().size()), plugin->version().data());
  std::printf("description: %.*s\n", static_cast<int>(plugin->description().size()),
              plugin->description().data());
  std::printf("path:        %s\n", plugin->path().c_str());
  std::printf("abi:         %u\n", d.abi_version);
  std::printf("fingerprint: %s\n", d.fingerprint);
  std::printf("reentrant:   %s\n", plugin->reentrant() ? "yes (one shared instance)" : "no (one instance per thread)");
  std::printf("reduces:     %s\n", plugin->reduces() ? "yes (merge() and summary(): see --summary)" : "no");
  if ((d.flags & plugin_declares_config) == 0) {
    std::printf("config:      not declared (any JSON object is passed through)\n");
    return exit_ok;
  }
  if (d.config_key_count == 0) {
    std::printf("config:      none (the plugin takes no keys)\n");
    return exit_ok;
  }
  std::size_t name_w = 3, type_w = 4, default_w = 7;
  for (std::size_t i = 0; i < d.config_key_count; ++i) {
    const ConfigKey& key = d.config_keys[i];
    name_w = std::max(name_w, std::string_view(key.name).size());
    type_w = std::max(type_w, std::string_view(key.type).size());
    default_w = std::max(default_w, std::string_view(key.default_json ? key.default_json : "(required)").size());
  }
  std::printf("config:\n  %-*s  %-*s  %-*s  %s\n", static_cast<int>(name_w), "KEY", static_cast<int>(type_w), "TYPE",
              static_cast<int>(default_w), "DEFAULT", "DESCRIPTION");
  for (std::size_t i = 0; i < d.config_key_count; ++i) {
    const ConfigKey& key = d.config_keys[i];
    std::printf("  %-*s  %-*s  %-*s  %s\n", static_cast<int>(name_w), key.name, static_cast<int>(type_w), key.type,
                static_cast<int>(default_w), key.default_json ? key.default_json : "(required)", key.description);
  }
  return exit_ok;
}

}  // namespace coremap::cli
