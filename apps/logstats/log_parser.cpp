// SPDX-License-Identifier: MIT
#include "log_parser.hpp"

#include <cstring>

namespace logstats {
namespace {

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// Two ASCII digits at p as a number, or -1.
inline int two_digits(const char* p) noexcept {
  if (!is_digit(p[0]) || !is_digit(p[1])) return -1;
  return (p[0] - '0') * 10 + (p[1] - '0');
}

// Month number 1..12 of a three-letter English abbreviation, or 0.
inline int month_number(const char* p) noexcept {
  static constexpr char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
  for (int m = 0; m < 12; ++m) {
    if (std::memcmp(p, names + 3 * m, 3) == 0) return m + 1;
  }
  return 0;
}

// Index just past the closing quote of the quoted string that opens at `i` (s[i] == '"'), with
// a backslash escaping the next character; npos when the string is not closed.
inline std::size_t skip_quoted(std::string_view s, std::size_t i) noexcept {
  const char* p = s.data() + i + 1;
  const char* const end = s.data() + s.size();
  while (p < end) {
    const char c = *p;
    if (c == '"') return static_cast<std::size_t>(p - s.data()) + 1;
    p += (c == '\\') ? 2 : 1;
  }
  return std::string_view::npos;
}

// The next space-terminated, non-empty token starting at `i`; advances `i` past the space.
inline bool take_token(std::string_view s, std::size_t& i, std::string_view& token) noexcept {
  const std::size_t space = s.find(' ', i);
  if (space == std::string_view::npos || space == i) return false;
  token = s.substr(i, space - i);
  i = space + 1;
  return true;
}

// [dd/Mon/yyyy:HH:MM:SS +zzzz] at p (28 bytes known to exist) as yyyymmddhh, or 0.
inline std::uint64_t parse_timestamp(const char* p) noexcept {
  if (p[0] != '[' || p[3] != '/' || p[7] != '/' || p[12] != ':' || p[15] != ':' || p[18] != ':' ||
      p[21] != ' ' || (p[22] != '+' && p[22] != '-') || p[27] != ']') {
    return 0;
  }
  const int day = two_digits(p + 1);
  const int month = month_number(p + 4);
  const int century = two_digits(p + 8);
  const int year_low = two_digits(p + 10);
  const int hour = two_digits(p + 13);
  const int minute = two_digits(p + 16);
  const int second = two_digits(p + 19);
  if (day < 1 || day > 31 || month == 0 || century < 0 || year_low < 0 || hour < 0 || hour > 23 ||
      minute < 0 || minute > 59 || second < 0 || second > 60 || two_digits(p + 23) < 0 ||
      two_digits(p + 25) < 0) {
    return 0;
  }
  const auto year = static_cast<std::uint64_t>(century * 100 + year_low);
  return ((year * 100 + static_cast<std::uint64_t>(month)) * 100 + static_cast<std::uint64_t>(day)) * 100 +
         static_cast<std::uint64_t>(hour);
}

// The request target without its query string (see LogLine::path).
inline std::string_view path_of(std::string_view request) noexcept {
  std::string_view target = request;
  if (const std::size_t space = request.find(' '); space != std::string_view::npos) {
    target = request.substr(space + 1);
    if (const std::size_t end = target.find(' '); end != std::string_view::npos) target = target.substr(0, end);
  }
  if (const std::size_t query = target.find('?'); query != std::string_view::npos) target = target.substr(0, query);
  return target;
}

constexpr std::size_t timestamp_length = 28;  // [10/Oct/2000:13:55:36 -0700]
constexpr std::size_t max_size_digits = 18;   // fits in 64 bits, and exactly in a double sum for any sane log

}  // namespace

const char* describe(LineError error) noexcept {
  switch (error) {
    case LineError::none: return "ok";
    case LineError::host: return "no host";
    case LineError::ident: return "no ident";
    case LineError::user: return "no authuser";
    case LineError::timestamp: return "bad timestamp";
    case LineError::request: return "bad request (no quoted request)";
    case LineError::status: return "bad status";
    case LineError::size: return "bad size";
    case LineError::trailer: return "bad referer/user-agent";
  }
  return "?";
}

LineError parse_line(std::string_view s, LogLine& out) noexcept {
  std::size_t i = 0;
  std::string_view ignored;
  if (!take_token(s, i, out.host)) return LineError::host;
  if (!take_token(s, i, ignored)) return LineError::ident;
  if (!take_token(s, i, ignored)) return LineError::user;

  if (s.size() - i < timestamp_length) return LineError::timestamp;
  out.hour = parse_timestamp(s.data() + i);
  if (out.hour == 0) return LineError::timestamp;
  i += timestamp_length;

  if (s.size() - i < 2 || s[i] != ' ' || s[i + 1] != '"') return LineError::request;
  const std::size_t request_end = skip_quoted(s, i + 1);
  if (request_end == std::string_view::npos) return LineError::request;
  out.path = path_of(s.substr(i + 2, request_end - i - 3));
  i = request_end;

  // " 200 " : status, then the space before the size.
  if (s.size() - i < 5 || s[i] != ' ' || s[i + 1] < '1' || s[i + 1] > '5' || !is_digit(s[i + 2]) ||
      !is_digit(s[i + 3]) || s[i + 4] != ' ') {
    return LineError::status;
  }
  out.status = static_cast<std::uint16_t>((s[i + 1] - '0') * 100 + (s[i + 2] - '0') * 10 + (s[i + 3] - '0'));
  i += 5;

  if (i < s.size() && s[i] == '-') {
    out.has_size = false;
    out.size = 0;
    ++i;
  } else {
    std::uint64_t size = 0;
    const std::size_t first = i;
    while (i < s.size() && is_digit(s[i])) size = size * 10 + static_cast<std::uint64_t>(s[i++] - '0');
    if (i == first || i - first > max_size_digits) return LineError::size;
    out.has_size = true;
    out.size = size;
  }
  if (i == s.size()) return LineError::none;  // Common Log Format
  if (s[i] != ' ') return LineError::size;

  // Combined Log Format: ` "referer" "user-agent"`, then end of line or more space-separated
  // fields (some servers append their own), which are ignored.
  if (s.size() - i < 2 || s[i + 1] != '"') return LineError::trailer;
  i = skip_quoted(s, i + 1);
  if (i == std::string_view::npos || s.size() - i < 2 || s[i] != ' ' || s[i + 1] != '"') return LineError::trailer;
  i = skip_quoted(s, i + 1);
  if (i == std::string_view::npos || (i != s.size() && s[i] != ' ')) return LineError::trailer;
  return LineError::none;
}

std::string format_hour(std::uint64_t hour) {
  // yyyymmddhh -> "YYYY-MM-DD HH"
  char text[16];
  const auto digit = [](std::uint64_t v) { return static_cast<char>('0' + v % 10); };
  const std::uint64_t year = hour / 1000000;
  text[0] = digit(year / 1000);
  text[1] = digit(year / 100);
  text[2] = digit(year / 10);
  text[3] = digit(year);
  text[4] = '-';
  text[5] = digit(hour / 100000);
  text[6] = digit(hour / 10000);
  text[7] = '-';
  text[8] = digit(hour / 1000);
  text[9] = digit(hour / 100);
  text[10] = ' ';
  text[11] = digit(hour / 10);
  text[12] = digit(hour);
  return std::string(text, 13);
}

}  // namespace logstats
