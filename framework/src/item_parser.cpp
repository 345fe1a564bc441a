// SPDX-License-Identifier: MIT
// Turns one item's manifest text into its JSON value (item_parser.hpp): the depth limit, and
// parse errors rewritten to say the manifest line and column and quote the text near them.
#include "item_parser.hpp"

#include <algorithm>

#include "json_nesting.hpp"

namespace coremap::detail {
namespace {

// Items nested deeper than this are refused before parsing: nlohmann_json parses any depth
// iteratively, but serialising a result (and most plugins' own recursion) would overflow the
// stack on, say, 100,000 levels.
constexpr std::size_t max_item_depth = 1000;

// The 1-based line (relative to the item) where nesting first exceeds max_item_depth, or 0.
std::size_t line_too_deep(std::string_view text) noexcept {
  JsonNesting nesting;
  std::size_t line = 1;
  for (const char c : text) {
    if (nesting.feed(c) == JsonByte::open && nesting.depth() > max_item_depth) return line;
    if (c == '\n') ++line;
  }
  return 0;
}

// "<line>:<column>" of byte `byte` of an item whose first line is `first_line`.
std::string line_column(std::string_view text, std::size_t byte, std::uint64_t first_line) {
  byte = std::min(byte, text.size());
  std::uint64_t line = first_line;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < byte; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return std::to_string(line) + ":" + std::to_string(byte - line_start + 1);
}

// The parser quotes the token it stopped at ("last read: '...'", "number overflow parsing
// '...'"), however long: a 100 MB unterminated string made a 100 MB error record. Long quotes
// keep their start and end, cut on UTF-8 character boundaries.
std::string shorten_quote(std::string what) {
  constexpr std::size_t keep_head = 48;
  constexpr std::size_t keep_tail = 16;
  const auto open = what.find('\'');
  const auto close = what.rfind('\'');
  if (open == std::string::npos || close <= open || close - open - 1 <= keep_head + keep_tail + 32) {
    return what;
  }
  const auto continuation = [&](std::size_t i) { return (static_cast<unsigned char>(what[i]) & 0xC0) == 0x80; };
  std::size_t head_end = open + 1 + keep_head;
  while (head_end > open + 1 && continuation(head_end)) --head_end;
  std::size_t tail_start = close - keep_tail;
  while (tail_start < close && continuation(tail_start)) ++tail_start;
  const std::size_t cut = tail_start - head_end;
  return what.substr(0, head_end) + "...(" + std::to_string(cut) + " bytes)..." + what.substr(tail_start);
}

// Turns a parse_error's message into "<line>:<column>: <what>" relative to the manifest.
std::string describe_parse_error(const Json::parse_error& e, std::string_view text,
                                 std::uint64_t first_line) {
  std::string what = e.what();
  if (const auto pos = what.find("column "); pos != std::string::npos) {
    if (const auto colon = what.find(": ", pos); colon != std::string::npos) what.erase(0, colon + 2);
  }
  return line_column(text, e.byte == 0 ? 0 : e.byte - 1, first_line) + ": invalid JSON: " +
         shorten_quote(std::move(what));
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
  // nlohmann_json takes a NUL outside a string for the end of the input, so `{"a":1}<NUL>junk`
  // would quietly parse as {"a":1}; JSON text has no place for the byte anywhere.
  if (const auto nul = text.find('\0'); nul != std::string_view::npos) {
    error = manifest_name + ":" + line_column(text, nul, line) +
            ": invalid JSON: NUL byte (0x00), which JSON text cannot hold (in a string, write \\u0000)";
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
    error = manifest_name + ":" + std::to_string(line) + ": invalid JSON: " + shorten_quote(std::move(what));
    return false;
  }
}

}  // namespace coremap::detail
