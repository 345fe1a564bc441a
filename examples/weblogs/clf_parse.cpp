// SPDX-License-Identifier: MIT
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include <coremap/plugin.hpp>

#include "log_parser.hpp"

/// One access-log line (Common or Combined Log Format) into its fields, with the parser of
/// apps/logstats: {"path", "line", "text"} (what the `lines` plugin emits) -> {"host", "path",
/// "status", "bytes", "hour"}. `path` of the result is the request's path without its query
/// string, `bytes` is null when the log says "-", `hour` is "YYYY-MM-DD HH" as written (no time
/// zone conversion). A malformed line is its value's error: "log line N of FILE: bad status".
/// Stateless, so one instance serves every thread.
class ClfParse {
 public:
  static constexpr bool reentrant = true;
  static constexpr coremap::ConfigKey config_keys[] = {
      {"field", "string", "\"text\"", "item field holding the log line (without its newline)"}};

  explicit ClfParse(const coremap::Json& config) : field_(config.at("field").get<std::string>()) {}

  coremap::Json process(const coremap::Json& item) const {
    if (!item.is_object()) throw std::invalid_argument("item must be an object with a \"" + field_ + "\" field, got " + item.dump());
    const auto text = item.find(field_);
    if (text == item.end() || !text->is_string()) {
      throw std::invalid_argument("item has no string field \"" + field_ + "\": " + item.dump());
    }
    std::string_view line = text->get_ref<const std::string&>();
    // `lines` strips the CR of a CRLF line end already; other producers may not.
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    logstats::LogLine parsed;
    if (const logstats::LineError error = logstats::parse_line(line, parsed); error != logstats::LineError::none) {
      throw std::invalid_argument(where(item) + logstats::describe(error));
    }
    coremap::Json bytes = nullptr;
    if (parsed.has_size) bytes = parsed.size;
    return {{"host", std::string(parsed.host)},
            {"path", std::string(parsed.path)},
            {"status", parsed.status},
            {"bytes", std::move(bytes)},
            {"hour", logstats::format_hour(parsed.hour)}};
  }

 private:
  // "log line N of FILE: " when the item says which line of which file it is (`lines` does).
  static std::string where(const coremap::Json& item) {
    const auto line = item.find("line");
    const auto path = item.find("path");
    if (line == item.end() || path == item.end() || !path->is_string()) return "malformed log line: ";
    return "log line " + line->dump() + " of " + path->get<std::string>() + ": ";
  }

  std::string field_;
};

COREMAP_PLUGIN(ClfParse, "clf_parse", "1.0.0",
               "parses a Common/Combined Log Format line into {host, path, status, bytes, hour}")
