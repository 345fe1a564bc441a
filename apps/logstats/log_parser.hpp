// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Parsing one access-log line in Common Log Format or Combined Log Format, without regular
/// expressions or allocation: the fields come back as views into the line.
///
///     host ident authuser [dd/Mon/yyyy:HH:MM:SS +zzzz] "request" status size
///     host ident authuser [dd/Mon/yyyy:HH:MM:SS +zzzz] "request" status size "referer" "user-agent"

#include <cstdint>
#include <string>
#include <string_view>

namespace logstats {

/// Why a line is malformed; `none` when it parsed.
enum class LineError : std::uint8_t {
  none,
  host,       ///< no host field (line empty up to a space, or no space at all)
  ident,      ///< no ident field
  user,       ///< no authuser field
  timestamp,  ///< not [dd/Mon/yyyy:HH:MM:SS +zzzz] with valid day, hour, minute, second
  request,    ///< no quoted request, or its closing quote is missing
  status,     ///< status is not three digits from 100 to 599
  size,       ///< size is neither "-" nor 1 to 18 digits
  trailer,    ///< after the size: neither end of line nor ` "referer" "user-agent"`
};

/// A short English description of `error` ("bad status", ...).
const char* describe(LineError error) noexcept;

/// The fields of a well-formed line. Views point into the parsed line.
struct LogLine {
  std::string_view host;
  /// The request target (the request's second space-separated word, or the whole request when
  /// it has no space, e.g. "-") up to its first '?': the query string is dropped.
  std::string_view path;
  /// The hour of the timestamp as written, in the log's own time zone: yyyymmddhh as a number
  /// (2000101013 for [10/Oct/2000:13:55:36 -0700]); format_hour() spells it.
  std::uint64_t hour = 0;
  std::uint16_t status = 0;
  bool has_size = false;  ///< false when the size field is "-"
  std::uint64_t size = 0; ///< 0 when the size field is "-"
};

/// Parses `line` (without its newline; a trailing '\r' is not stripped here). Returns
/// LineError::none and fills `out`, or the first problem found.
LineError parse_line(std::string_view line, LogLine& out) noexcept;

/// "YYYY-MM-DD HH" for an hour key of LogLine::hour.
std::string format_hour(std::uint64_t hour);

}  // namespace logstats
