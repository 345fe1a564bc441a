// SPDX-License-Identifier: MIT
#include <optional>
#include <stdexcept>
#include <string>

#include <coremap/plugin.hpp>

/// Returns the item itself, or one field of it: the no-op plugin for overhead benchmarks, and a
/// way to see what a manifest turns into. Stateless, so one instance serves all threads.
class Echo {
 public:
  static constexpr bool reentrant = true;
  // Type "any" because the default, null, is not a string; the constructor checks the rest.
  static constexpr coremap::ConfigKey config_keys[] = {
      {"field", "any", "null", "return only this field of each item (a string); null returns the whole item"}};

  explicit Echo(const coremap::Json& config) {
    const coremap::Json& field = config.at("field");
    if (field.is_string()) {
      field_ = field.get<std::string>();
    } else if (!field.is_null()) {
      throw std::invalid_argument(std::string("config key \"field\" must be a string or null, got ") +
                                  field.type_name());
    }
  }

  coremap::Json process(const coremap::Json& item) {
    if (!field_) return item;
    if (!item.is_object()) {
      throw std::invalid_argument("item is not an object with a \"" + *field_ + "\" field (got " +
                                  item.type_name() + ")");
    }
    const auto it = item.find(*field_);
    if (it == item.end()) throw std::invalid_argument("item has no \"" + *field_ + "\" field");
    return *it;
  }

 private:
  // Empty optional, not empty string, means "whole item": "" is a valid JSON key.
  std::optional<std::string> field_;
};

COREMAP_PLUGIN(Echo, "echo", "1.0.0", "returns each item unchanged (or one field of it)")
