// SPDX-License-Identifier: MIT
// Records: the JSON Lines writers (RecordWriter, append_ok_record, append_error_record) and the
// checks that a result can be written (valid UTF-8, finite numbers, nesting depth).
#include <coremap/record.hpp>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <new>

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

// Offset of the first byte of `text` that is not part of valid UTF-8, or npos.
std::size_t invalid_utf8_at(std::string_view text) noexcept {
  for (std::size_t i = 0; i < text.size();) {
    // ASCII runs are most text: skip them without decoding.
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    const std::size_t n = utf8_sequence(text, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

// A JSON pointer token (RFC 6901), shown as text that is valid UTF-8 whatever the key.
void append_pointer_token(std::string& path, std::string_view token) {
  path.push_back('/');
  for (const char c : escape_invalid_utf8(token)) {
    if (c == '~') {
      path.append("~0");
    } else if (c == '/') {
      path.append("~1");
    } else {
      path.push_back(c);
    }
  }
}

// The check behind writable_result. `path` is the pointer to `value`, extended only on the
// way to a fault (nothing is formatted while the value is fine).
class ResultCheck {
 public:
  ResultCheck(std::string& why, bool check_strings) : why_(why), strings_(check_strings) {}

  bool check(const Json& value, std::size_t depth) {
    switch (value.type()) {
      case Json::value_t::string:
        return !strings_ || string_ok(value.get_ref<const std::string&>(), "a string");
      case Json::value_t::number_float: {
        const double number = value.get<double>();
        if (std::isfinite(number)) return true;
        fail(std::string("holds a number that is not finite (") +
                 (std::isnan(number) ? "NaN" : number > 0 ? "+infinity" : "-infinity") + ")",
             "; JSON has no NaN or infinity");
        return false;
      }
      case Json::value_t::discarded:
        // What Json::parse returns for bad text when told not to throw; written, it would be
        // the text <discarded>, which is not JSON.
        fail("holds a discarded value (what Json::parse gives for text that is not JSON when it may not throw)");
        return false;
      case Json::value_t::array:
      case Json::value_t::object:
        break;
      default:
        return true;
    }
    if (depth >= max_result_depth) {
      fail("nests arrays and objects deeper than " + std::to_string(max_result_depth) + " levels");
      whole_path_ = false;  // a thousand levels of pointer would say nothing more
      return false;
    }
    if (value.is_array()) {
      std::size_t i = 0;
      for (const Json& element : value.get_ref<const Json::array_t&>()) {
        if (!check(element, depth + 1)) return prepend(std::to_string(i));
        ++i;
      }
      return true;
    }
    for (const auto& [key, member] : value.get_ref<const Json::object_t&>()) {
      if (strings_ && !string_ok(key, "an object key")) return prepend(key);
      if (!check(member, depth + 1)) return prepend(key);
    }
    return true;
  }

  // After a failed check: the message with the pointer to where it failed.
  void finish() {
    why_ = "the plugin's result " + what_ + (path_.empty() ? std::string() : " at " + path_) + note_;
  }

 private:
  bool string_ok(const std::string& text, const char* kind) {
    const std::size_t at = invalid_utf8_at(text);
    if (at == std::string_view::npos) return true;
    char byte[8];
    std::snprintf(byte, sizeof byte, "0x%02X", static_cast<unsigned char>(text[at]));
    fail(std::string("holds ") + kind + " that is not valid UTF-8 (byte " + byte + " at offset " + std::to_string(at) + ")");
    return false;
  }
  void fail(std::string what, std::string note = {}) {
    what_ = std::move(what);
    note_ = std::move(note);
  }
  // Builds the pointer from the fault outwards: each level puts its token in front.
  bool prepend(std::string_view token) {
    if (!whole_path_) return false;
    std::string head;
    append_pointer_token(head, token);
    path_.insert(0, head);
    return false;
  }

  std::string& why_;
  const bool strings_;
  std::string what_;
  std::string note_;  // after the pointer
  std::string path_;
  bool whole_path_ = true;
};

}  // namespace

bool writable_result(const Json& value, std::string& why, bool check_strings) {
  ResultCheck check(why, check_strings);
  if (check.check(value, 0)) return true;
  check.finish();
  return false;
}

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

// nlohmann_json's serializer, writing into the RecordWriter's string.
struct RecordWriter::Serializer : nlohmann::detail::serializer<Json> {
  explicit Serializer(std::string& out)
      : nlohmann::detail::serializer<Json>(nlohmann::detail::output_adapter<char, std::string>(out), ' ',
                                           nlohmann::detail::error_handler_t::strict) {}
};

RecordWriter::RecordWriter(std::string& out) : out_(out) {
  static_assert(sizeof(Serializer) <= serializer_room,
                "nlohmann_json's serializer outgrew RecordWriter::serializer_room: raise it (an ABI change)");
  static_assert(alignof(Serializer) <= alignof(std::max_align_t));
  new (storage_) Serializer(out);
}

RecordWriter::~RecordWriter() { serializer().~Serializer(); }

RecordWriter::Serializer& RecordWriter::serializer() noexcept {
  return *std::launder(reinterpret_cast<Serializer*>(storage_));
}

void RecordWriter::error(std::uint64_t index, std::string_view message, std::uint32_t attempts, std::int64_t sub) {
  append_prefix(out_, index, false, attempts, sub);
  bool replaced = false;
  std::string text = escape_invalid_utf8(message, &replaced);
  if (replaced) text += " (the text held bytes that are not valid UTF-8, shown as \\xNN)";
  serializer().dump(Json(std::move(text)), false, false, 0);
  out_.append("}\n");
}

bool RecordWriter::ok(std::uint64_t index, const Json& result, std::uint32_t attempts, std::int64_t sub,
                      std::string_view file, std::uint64_t line) {
  // Strings are checked by the serializer as it writes them; numbers and nesting here.
  if (std::string why; !writable_result(result, why, false)) {
    error(index, (file.empty() ? std::string() : std::string(file) + ":" + std::to_string(line) + ": ") + why, attempts, sub);
    return false;
  }
  const std::size_t start = out_.size();
  append_prefix(out_, index, true, attempts, sub);
  try {
    serializer().dump(result, false, false, 0);
  } catch (const nlohmann::json::type_error& e) {
    out_.resize(start);
    std::string what = e.what();
    if (const auto pos = what.find("] "); pos != std::string::npos) what.erase(0, pos + 2);
    const std::string where = file.empty() ? std::string() : std::string(file) + ":" + std::to_string(line) + ": ";
    // A string that is not valid UTF-8 (316): the same words as everywhere a result is checked
    // (writable_result: Engine::map, Record callbacks, pipeline stages), with where it is.
    if (std::string why; e.id == 316 && !writable_result(result, why, true)) {
      error(index, where + why, attempts, sub);
      return false;
    }
    error(index, where + "the plugin's result cannot be written as JSON: " + what, attempts, sub);
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
