// SPDX-License-Identifier: MIT
#include <coremap/record.hpp>

#include <charconv>
#include <cstdio>

namespace coremap {
namespace {

void append_number(std::string& out, std::uint64_t value) {
  char digits[24];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof digits, value);
  (void)ec;
  out.append(digits, end);
}

void append_prefix(std::string& out, std::uint64_t index, bool ok, std::uint32_t attempts, std::int64_t sub) {
  out.append("{\"index\":");
  append_number(out, index);
  if (sub >= 0) {
    out.append(",\"sub\":");
    append_number(out, static_cast<std::uint64_t>(sub));
  }
  out.append(ok ? ",\"ok\":true," : ",\"ok\":false,");
  if (attempts > 1) {
    out.append("\"attempts\":");
    append_number(out, attempts);
    out.push_back(',');
  }
  out.append(ok ? "\"result\":" : "\"error\":");
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 (RFC 3629: no overlongs,
// no surrogates, nothing above U+10FFFF).
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return 0;
  }
  return n;
}

}  // namespace

std::string escape_invalid_utf8(std::string_view text, bool* replaced) {
  std::string out;
  out.reserve(text.size());
  bool any = false;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = utf8_sequence(text, i);
    if (n == 0) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02X", static_cast<unsigned char>(text[i]));
      out.append(hex);
      any = true;
      ++i;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  if (replaced != nullptr) *replaced = any;
  return out;
}

RecordWriter::RecordWriter(std::string& out)
    : out_(out),
      serializer_(nlohmann::detail::output_adapter<char, std::string>(out), ' ',
                  nlohmann::detail::error_handler_t::strict) {}

void RecordWriter::error(std::uint64_t index, std::string_view message, std::uint32_t attempts, std::int64_t sub) {
  append_prefix(out_, index, false, attempts, sub);
  bool replaced = false;
  std::string text = escape_invalid_utf8(message, &replaced);
  if (replaced) text += " (the text held bytes that are not valid UTF-8, shown as \\xNN)";
  serializer_.dump(Json(std::move(text)), false, false, 0);
  out_.append("}\n");
}

bool RecordWriter::ok(std::uint64_t index, const Json& result, std::uint32_t attempts, std::int64_t sub,
                      std::string_view file, std::uint64_t line) {
  const std::size_t start = out_.size();
  append_prefix(out_, index, true, attempts, sub);
  try {
    serializer_.dump(result, false, false, 0);
  } catch (const nlohmann::json::type_error& e) {
    out_.resize(start);
    std::string what = e.what();
    if (const auto pos = what.find("] "); pos != std::string::npos) what.erase(0, pos + 2);
    const std::string where = file.empty() ? std::string() : std::string(file) + ":" + std::to_string(line) + ": ";
    error(index, where +
                     (e.id == 316 ? "the plugin's result holds a string that is not valid UTF-8: "
                                  : "the plugin's result cannot be written as JSON: ") +
                     what,
          attempts, sub);
    return false;
  }
  out_.append("}\n");
  return true;
}

void append_error_record(std::string& out, std::uint64_t index, std::string_view error) {
  RecordWriter(out).error(index, error);
}

bool append_ok_record(std::string& out, std::uint64_t index, const Json& result) {
  return RecordWriter(out).ok(index, result);
}

bool append_record(std::string& out, const Record& record) {
  RecordWriter writer(out);
  if (!record.ok) {
    writer.error(record.index, record.error, record.attempts, record.sub);
    return false;
  }
  return writer.ok(record.index, record.result, record.attempts, record.sub);
}

}  // namespace coremap
