// SPDX-License-Identifier: MIT
// Pipelines: Concurrency's parsing and the pipeline spec (a JSON file of stages) read into a
// Pipeline, every error naming the spec, the stage and the key.
#include <coremap/pipeline.hpp>

#include <cctype>
#include <charconv>
#include <fstream>
#include <limits>
#include <sstream>

#include <coremap/error.hpp>

namespace coremap {
Concurrency Concurrency::parse(const Json& value, const std::string& where) {
  if (value.is_string()) {
    if (value == "serial") return Concurrency::serial();
    if (value == "unlimited") return Concurrency::unlimited();
  } else if (value.is_number_integer() && value.get<std::int64_t>() >= 1 && value.get<std::int64_t>() <= 65536) {
    return Concurrency::of(value.get<std::size_t>());
  }
  throw ConfigError(where + ": key 'concurrency' must be \"serial\", \"unlimited\" or an integer from 1 to 65536, got " +
                    value.dump());
}

Concurrency Concurrency::parse_text(std::string_view text, const std::string& where) {
  const bool digits = !text.empty() && text.size() <= 9 &&
                      text.find_first_not_of("0123456789") == std::string_view::npos;
  return parse(digits ? Json(std::stoull(std::string(text))) : Json(std::string(text)), where);
}

std::string Concurrency::to_string() const {
  if (limit == 0) return "unlimited";
  if (limit == 1) return "serial";
  return std::to_string(limit);
}

namespace {

// A stage's "memory_limit": bytes, or a number with K, M, G or T ("512M", as --memory-limit).
std::uint64_t parse_memory_limit(const Json& value, const std::string& where) {
  const std::string bad = where + ": key 'memory_limit' must be a size (bytes, or a string such as \"512M\" or "
                                  "\"2G\"), got " + value.dump();
  if (value.is_number_unsigned() && value.get<std::uint64_t>() > 0) return value.get<std::uint64_t>();
  if (!value.is_string()) throw ConfigError(bad);
  const std::string& text = value.get_ref<const std::string&>();
  std::uint64_t number = 0;
  const auto [rest, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  std::string suffix(rest, text.data() + text.size());
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
  if (ec != std::errc() || rest == text.data() || shift < 0 || number == 0 ||
      number > (std::numeric_limits<std::uint64_t>::max() >> shift)) {
    throw ConfigError(bad);
  }
  return number << shift;
}

}  // namespace

Pipeline parse_pipeline(const Json& spec, const std::string& source, const PluginLoader& loader) {
  if (!spec.is_object()) throw ConfigError(source + ": a pipeline must be a JSON object with a \"stages\" array");
  Pipeline pipeline;
  for (const auto& [key, value] : spec.items()) {
    if (key == "stages") continue;
    if (key == "max_in_flight") {
      if (!value.is_number_integer() || value.get<std::int64_t>() <= 0) {
        throw ConfigError(source + ": key 'max_in_flight' must be a positive integer, got " + value.dump());
      }
      pipeline.max_in_flight = value.get<std::size_t>();
    } else {
      throw ConfigError(source + ": unknown key '" + key + "' (known keys: stages, max_in_flight)");
    }
  }
  const auto stages = spec.find("stages");
  if (stages == spec.end() || !stages->is_array() || stages->empty()) {
    throw ConfigError(source + ": key 'stages' must be a non-empty array of stages");
  }
  for (std::size_t i = 0; i < stages->size(); ++i) {
    const Json& s = (*stages)[i];
    std::string where = source + ": stage " + std::to_string(i + 1);
    if (!s.is_object()) throw ConfigError(where + ": must be an object, got " + s.dump());
    if (const auto name = s.find("name"); name != s.end()) {
      if (!name->is_string() || name->get_ref<const std::string&>().empty()) {
        throw ConfigError(where + ": key 'name' must be a non-empty string, got " + name->dump());
      }
      where += " (" + name->get<std::string>() + ")";
    }
    for (const auto& [key, value] : s.items()) {
      (void)value;
      if (key != "name" && key != "plugin" && key != "config" && key != "concurrency" && key != "isolate" &&
          key != "memory_limit") {
        throw ConfigError(where + ": unknown key '" + key +
                          "' (known keys: name, plugin, config, concurrency, isolate, memory_limit)");
      }
    }
    const auto plugin = s.find("plugin");
    if (plugin == s.end() || !plugin->is_string()) {
      throw ConfigError(where + ": key 'plugin' (a plugin name or path) is " +
                        (plugin == s.end() ? std::string("missing") : "not a string: " + plugin->dump()));
    }
    Stage stage;
    stage.concurrency = s.contains("concurrency") ? Concurrency::parse(s.at("concurrency"), where) : Concurrency::unlimited();
    if (const auto isolate = s.find("isolate"); isolate != s.end()) {
      if (!isolate->is_boolean()) throw ConfigError(where + ": key 'isolate' must be true or false, got " + isolate->dump());
      stage.isolate = isolate->get<bool>();
    }
    if (const auto limit = s.find("memory_limit"); limit != s.end()) {
      stage.memory_limit_bytes = parse_memory_limit(*limit, where);
      if (!stage.isolate) {
        throw ConfigError(where + ": key 'memory_limit' limits the stage's worker processes; it needs \"isolate\": true");
      }
    }
    if (const auto config = s.find("config"); config != s.end()) {
      if (!config->is_object()) throw ConfigError(where + ": key 'config' must be an object, got " + config->dump());
      stage.config = *config;
    }
    try {
      stage.plugin = loader.load(plugin->get<std::string>());
    } catch (const PluginError& e) {
      throw PluginError(where + ": " + e.what());
    }
    stage.name = s.contains("name") ? s.at("name").get<std::string>() : std::string(stage.plugin->name());
    try {
      stage.config = stage.plugin->resolve_config(stage.config);
    } catch (const ConfigError& e) {
      throw ConfigError(where + ": " + e.what());
    }
    for (const Stage& earlier : pipeline.stages) {
      if (earlier.name == stage.name) {
        throw ConfigError(where + ": another stage is named '" + stage.name + "' too; give one of them a \"name\"");
      }
    }
    pipeline.stages.push_back(std::move(stage));
  }
  return pipeline;
}

Pipeline load_pipeline(const std::filesystem::path& spec, const PluginLoader& loader) {
  std::ifstream in(spec, std::ios::binary);
  if (!in) throw ConfigError("--pipeline: cannot read '" + spec.string() + "'");
  std::ostringstream text;
  text << in.rdbuf();
  Json parsed;
  try {
    parsed = Json::parse(text.str());
  } catch (const Json::parse_error& e) {
    throw ConfigError(spec.string() + ": invalid JSON: " + e.what());
  }
  return parse_pipeline(parsed, spec.string(), loader);
}

}  // namespace coremap
