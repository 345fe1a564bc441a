// SPDX-License-Identifier: MIT
#include "item_parser.hpp"

#include <algorithm>

namespace coremap::detail {
namespace {

// Items nested deeper than this are refused before parsing: nlohmann_json parses any depth
// iteratively, but serialising a result (and most plugins' own recursion) would overflow the
// stack on, say, 100,000 levels.
constexpr std::size_t max_item_depth = 1000;

// The 1-based line (relative to the item) where nesting first exceeds max_item_depth, or 0.
std::size_t line_too_deep(std::string_view text) noexcept {
  std::size_t depth = 0;
  std::size_t line = 1;
  bool in_string = false;
  bool escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_item_depth) return line;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
    if (c == '\n') ++line;
  }
  return 0;
}

// Turns a parse_error's message into "<line>:<column>: <what>" relative to the manifest.
std::string describe_parse_error(const Json::parse_error& e, std::string_view text,
                                 std::uint64_t first_line) {
  std::string what = e.what();
  if (const auto pos = what.find("column "); pos != std::string::npos) {
    if (const auto colon = what.find(": ", pos); colon != std::string::npos) what.erase(0, colon + 2);
  }
  const std::size_t byte = std::min<std::size_t>(e.byte == 0 ? 0 : e.byte - 1, text.size());
  std::uint64_t line = first_line;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < byte; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return std::to_string(line) + ":" + std::to_string(byte - line_start + 1) + ": invalid JSON: " + what;
}

}  // namespace

bool parse_item(std::string_view text, std::uint64_t line, ManifestFormat format,
                const std::string& manifest_name, Json& item, std::string& error) {
  if (format == ManifestFormat::lines) {
    // Reuse the object and its "path" string: after a batch's first item, a plain list
    // allocates nothing per item here.
    if (!item.is_object() || item.size() != 1 || !item.contains("path")) {
      item = Json::object({{"path", std::string()}});
    }
    item["path"].get_ref<std::string&>().assign(text);
    return true;
  }
  if (const std::size_t too_deep = line_too_deep(text); too_deep != 0) {
    error = manifest_name + ":" + std::to_string(line + too_deep - 1) + ": item nested deeper than " +
            std::to_string(max_item_depth) + " levels";
    return false;
  }
  try {
    item = Json::parse(text.begin(), text.end());
    return true;
  } catch (const Json::parse_error& e) {
    error = manifest_name + ":" + describe_parse_error(e, text, line);
    return false;
  } catch (const Json::exception& e) {
    // Not a syntax error but still the item's: e.g. out_of_range 406, a number like 1e999
    // that overflows a double.
    std::string what = e.what();
    if (const auto pos = what.find("] "); pos != std::string::npos) what.erase(0, pos + 2);
    error = manifest_name + ":" + std::to_string(line) + ": invalid JSON: " + what;
    return false;
  }
}

}  // namespace coremap::detail
