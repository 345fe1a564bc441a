// SPDX-License-Identifier: MIT
// Reverses the "text" field of each item; built out of tree with coremap_add_plugin.
#include <algorithm>
#include <string>

#include <coremap/plugin.hpp>

class Reverse {
 public:
  static constexpr coremap::ConfigKey config_keys[] = {
      {"field", "string", "\"text\"", "item field to reverse"}};
  explicit Reverse(const coremap::Json& config) : field_(config.at("field")) {}
  coremap::Json process(const coremap::Json& item) {
    std::string text = item.at(field_);
    std::reverse(text.begin(), text.end());
    return text;
  }

 private:
  std::string field_;
};

COREMAP_PLUGIN(Reverse, "reverse", "1.0.0", "reverses one string field of each item")
