// SPDX-License-Identifier: MIT
#pragma once

// Helpers the bundled plugins share (fault, sleep, spin): reading a per-item override of a
// config value. Internal to this source tree: not installed and not part of coremap's API (a
// plugin of one's own includes only <coremap/plugin.hpp>).

#include <cstdint>
#include <stdexcept>
#include <string>

#include <coremap/plugin.hpp>

namespace coremap::bundled {

/// The integer field `key` of `item` when the item is an object holding it, else `fallback`
/// (typically the plugin's config value). Throws std::invalid_argument when the field is not
/// an integer or is negative.
inline std::int64_t nonnegative_field(const Json& item, const char* key, std::int64_t fallback) {
  if (!item.is_object()) return fallback;
  const auto it = item.find(key);
  if (it == item.end()) return fallback;
  if (!it->is_number_integer() || it->get<std::int64_t>() < 0) {
    throw std::invalid_argument(std::string("item field \"") + key + "\" must be a non-negative integer, got " +
                                it->dump());
  }
  return it->get<std::int64_t>();
}

}  // namespace coremap::bundled
