// SPDX-License-Identifier: MIT
#include <stdexcept>
#include <string>

#include <coremap/plugin.hpp>

/// Returns the item itself, or one field of it: the no-op plugin for overhead benchmarks, and a
/// way to see what a manifest turns into.
class Echo {
 public:
  static constexpr bool reentrant = true;
  static constexpr coremap::ConfigKey config_keys[] = {
      {"field", "any", "null", "return only this field of each item (a string); null returns the whole item"}};

  explicit Echo(const coremap::Json& config) {
    const coremap::Json& field = config.at("field");
    if (!field.is_null() && !field.is_string()) throw std::invalid_argument("field must be a string or null");
    if (field.is_string()) field_ = field.get<std::string>();
  }

  coremap::Json process(const coremap::Json& item) {
    if (field_.empty()) return item;
    return item.at(field_);
  }

 private:
  std::string field_;
};

COREMAP_PLUGIN(Echo, "echo", "1.0.0", "returns each item unchanged (or one field of it)")
