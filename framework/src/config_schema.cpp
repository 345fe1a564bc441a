// SPDX-License-Identifier: MIT
// Plugin::resolve_config: a plugin's config checked against the keys its class declares
// (ConfigKey: name, type, default), defaults filled in; an unknown key or a wrong type is a
// ConfigError naming the key.
#include <coremap/error.hpp>
#include <coremap/loaded_plugin.hpp>

namespace coremap {
namespace {

bool has_type(const Json& value, std::string_view type) {
  if (type == "any") return true;
  if (type == "integer") return value.is_number_integer();
  if (type == "number") return value.is_number();
  if (type == "string") return value.is_string();
  if (type == "boolean") return value.is_boolean();
  if (type == "array") return value.is_array();
  if (type == "object") return value.is_object();
  return false;
}

}  // namespace

Json Plugin::resolve_config(const Json& config) const {
  const std::string where = "config of plugin '" + std::string(name()) + "' (" + path_ + ")";
  if (!config.is_null() && !config.is_object()) {
    throw ConfigError(where + ": must be a JSON object, got " + std::string(config.type_name()));
  }
  Json resolved = config.is_null() ? Json::object() : config;
  if ((descriptor_->flags & plugin_declares_config) == 0) return resolved;

  std::string known;
  for (std::size_t i = 0; i < descriptor_->config_key_count; ++i) {
    known += (i == 0 ? "" : ", ") + std::string(descriptor_->config_keys[i].name);
  }
  for (const auto& [key, value] : resolved.items()) {
    bool declared = false;
    for (std::size_t i = 0; i < descriptor_->config_key_count && !declared; ++i) {
      declared = key == descriptor_->config_keys[i].name;
    }
    if (!declared) {
      throw ConfigError(where + ": unknown key '" + key + "' (" +
                        (known.empty() ? "the plugin takes no config" : "known keys: " + known) + ")");
    }
  }
  for (std::size_t i = 0; i < descriptor_->config_key_count; ++i) {
    const ConfigKey& key = descriptor_->config_keys[i];
    auto it = resolved.find(key.name);
    if (it == resolved.end()) {
      if (key.default_json == nullptr) {
        throw ConfigError(where + ": required key '" + key.name + "' (" + key.type + ") is missing");
      }
      try {
        resolved[key.name] = Json::parse(key.default_json);
      } catch (const Json::parse_error& e) {
        throw ConfigError(where + ": the plugin declares a default for '" + key.name +
                          "' that is not JSON: " + e.what());
      }
    } else if (!has_type(*it, key.type) && !(it->is_null() && key.default_json != nullptr &&
                                              std::string_view(key.default_json) == "null")) {
      throw ConfigError(where + ": key '" + key.name + "' must be of type " + key.type + ", got " +
                        it->type_name() + " " + it->dump());
    }
  }
  return resolved;
}

}  // namespace coremap
