// SPDX-License-Identifier: MIT
#pragma once

// JSON text straight to and from Python objects, for the `_coremap` extension module's items and
// records (json_convert.hpp goes through nlohmann::json values; these skip them, a cost per item
// on the calling process's thread that holds the GIL). The GIL is held for all of them.
//
// append_json writes what nlohmann's dump() writes for the same value (objects with their keys
// in byte order, no spaces, control characters as \u00xx, doubles by nlohmann): a manifest
// spilled from items is the same file either way. It declines (false, `out` as it was) whatever
// it does not write itself: the caller then takes json_convert.hpp's way, which gives the error.
// parse_record reads one JSON Lines record as RecordWriter writes them.

#include <Python.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <coremap/plugin.hpp>

#include "json_convert.hpp"

namespace coremap::python {

inline void append_json_string(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  std::size_t plain = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(text.data() + plain, i - plain);
    plain = i + 1;
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\b': out.append("\\b"); break;
      case '\f': out.append("\\f"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      default:
        out.append("\\u00");
        out.push_back(hex[c >> 4]);
        out.push_back(hex[c & 0xF]);
    }
  }
  out.append(text.data() + plain, text.size() - plain);
  out.push_back('"');
}

// `object` as JSON text appended to `out`; false (out restored) for what it leaves to
// json_convert.hpp: ints beyond int64, floats that are not finite, strs with lone surrogates,
// dict keys that are not str, other types, nesting past max_depth.
inline bool append_json(PyObject* object, std::string& out, int depth = 0) {
  if (depth > max_depth) return false;
  const std::size_t mark = out.size();
  if (object == Py_None) {
    out.append("null");
    return true;
  }
  if (object == Py_True) {
    out.append("true");
    return true;
  }
  if (object == Py_False) {
    out.append("false");
    return true;
  }
  if (PyLong_CheckExact(object) || (PyLong_Check(object) && !PyBool_Check(object))) {
    int overflow = 0;
    const long long value = PyLong_AsLongLongAndOverflow(object, &overflow);
    if (overflow != 0 || (value == -1 && PyErr_Occurred())) {
      PyErr_Clear();
      return false;
    }
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
    out.append(digits, end);
    return true;
  }
  if (PyUnicode_Check(object)) {
    Py_ssize_t size = 0;
    const char* text = PyUnicode_AsUTF8AndSize(object, &size);
    if (text == nullptr) {
      PyErr_Clear();
      return false;
    }
    append_json_string(out, std::string_view(text, static_cast<std::size_t>(size)));
    return true;
  }
  if (PyFloat_Check(object)) {
    const double value = PyFloat_AS_DOUBLE(object);
    if (!std::isfinite(value)) return false;
    out += Json(value).dump();
    return true;
  }
  if (PyList_Check(object) || PyTuple_Check(object)) {
    const bool list = PyList_Check(object);
    out.push_back('[');
    for (Py_ssize_t i = 0; i < (list ? PyList_GET_SIZE(object) : PyTuple_GET_SIZE(object)); ++i) {
      if (i > 0) out.push_back(',');
      PyObject* element = list ? PyList_GET_ITEM(object, i) : PyTuple_GET_ITEM(object, i);
      Py_INCREF(element);  // a list may change under a callback (__index__ of an int subclass)
      const bool ok = append_json(element, out, depth + 1);
      Py_DECREF(element);
      if (!ok) {
        out.resize(mark);
        return false;
      }
    }
    out.push_back(']');
    return true;
  }
  if (PyDict_Check(object)) {
    // Keys in byte order, as nlohmann's objects (std::map) write them.
    std::vector<std::pair<std::string_view, PyObject*>> entries;
    entries.reserve(static_cast<std::size_t>(PyDict_GET_SIZE(object)));
    PyObject* key = nullptr;
    PyObject* value = nullptr;
    Py_ssize_t position = 0;
    while (PyDict_Next(object, &position, &key, &value)) {
      if (!PyUnicode_Check(key)) return false;
      Py_ssize_t size = 0;
      const char* text = PyUnicode_AsUTF8AndSize(key, &size);  // cached in the key
      if (text == nullptr) {
        PyErr_Clear();
        return false;
      }
      entries.emplace_back(std::string_view(text, static_cast<std::size_t>(size)), value);
    }
    std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    // The keys' text and the values stay alive while the dict does: hold it.
    Py_INCREF(object);
    out.push_back('{');
    bool ok = true;
    for (std::size_t i = 0; ok && i < entries.size(); ++i) {
      if (i > 0) out.push_back(',');
      append_json_string(out, entries[i].first);
      out.push_back(':');
      Py_INCREF(entries[i].second);
      ok = append_json(entries[i].second, out, depth + 1);
      Py_DECREF(entries[i].second);
    }
    Py_DECREF(object);
    if (!ok) {
      out.resize(mark);
      return false;
    }
    out.push_back('}');
    return true;
  }
  return false;
}

// Reads JSON text into Python objects. Every function returns a new reference, or nullptr with
// a Python error set (ValueError naming the offset for text that is not JSON).
class JsonReader {
 public:
  JsonReader(const char* begin, const char* end) : begin_(begin), p_(begin), end_(end) {}

  PyObject* value(int depth = 0) {
    if (depth > max_depth) return fail("nested too deep");
    skip_space();
    if (p_ == end_) return fail("unexpected end");
    switch (*p_) {
      case '{': return object(depth);
      case '[': return array(depth);
      case '"': return string("strict");
      case 't': return literal("true", Py_True);
      case 'f': return literal("false", Py_False);
      case 'n': return literal("null", Py_None);
      default: return number();
    }
  }

  // The string at the reader, decoded with `errors` (Python's codec error handler).
  PyObject* string(const char* errors) {
    if (p_ == end_ || *p_ != '"') return fail("expected a string");
    ++p_;
    const char* start = p_;
    while (p_ != end_ && *p_ != '"' && *p_ != '\\') ++p_;
    if (p_ != end_ && *p_ == '"') {
      PyObject* s = PyUnicode_DecodeUTF8(start, p_ - start, errors);
      ++p_;
      return s;
    }
    std::string text(start, static_cast<std::size_t>(p_ - start));
    while (p_ != end_ && *p_ != '"') {
      if (*p_ != '\\') {
        text.push_back(*p_++);
        continue;
      }
      if (++p_ == end_) break;
      const char c = *p_++;
      switch (c) {
        case '"': text.push_back('"'); break;
        case '\\': text.push_back('\\'); break;
        case '/': text.push_back('/'); break;
        case 'b': text.push_back('\b'); break;
        case 'f': text.push_back('\f'); break;
        case 'n': text.push_back('\n'); break;
        case 'r': text.push_back('\r'); break;
        case 't': text.push_back('\t'); break;
        case 'u': {
          std::uint32_t code = 0;
          if (!hex4(code)) return fail("bad \\u escape");
          if (code >= 0xD800 && code < 0xDC00 && end_ - p_ >= 6 && p_[0] == '\\' && p_[1] == 'u') {
            p_ += 2;
            std::uint32_t low = 0;
            if (!hex4(low) || low < 0xDC00 || low > 0xDFFF) return fail("bad surrogate pair");
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(text, code);
          break;
        }
        default: return fail("bad escape");
      }
    }
    if (p_ == end_) return fail("unterminated string");
    ++p_;
    return PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), errors);
  }

  bool consume(char c) {
    skip_space();
    if (p_ != end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }

  // A non-negative integer that fits in 64 bits, for the record's own fields.
  bool unsigned_number(std::uint64_t& out) {
    skip_space();
    const auto [next, error] = std::from_chars(p_, end_, out);
    if (error != std::errc() || next == p_) return false;
    p_ = next;
    return true;
  }

  PyObject* fail(const char* what) {
    PyErr_Format(PyExc_ValueError, "coremap: record text is not JSON at offset %zd: %s",
                 static_cast<Py_ssize_t>(p_ - begin_), what);
    return nullptr;
  }

  void skip_space() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  bool at_end() {
    skip_space();
    return p_ == end_;
  }

 private:
  bool hex4(std::uint32_t& code) {
    if (end_ - p_ < 4) return false;
    for (int i = 0; i < 4; ++i) {
      const char c = *p_++;
      code <<= 4;
      if (c >= '0' && c <= '9') code |= static_cast<std::uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') code |= static_cast<std::uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') code |= static_cast<std::uint32_t>(c - 'A' + 10);
      else return false;
    }
    return true;
  }

  static void append_utf8(std::string& out, std::uint32_t code) {
    if (code < 0x80) {
      out.push_back(static_cast<char>(code));
    } else if (code < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (code >> 6)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else if (code < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (code >> 12)));
      out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (code >> 18)));
      out.push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    }
  }

  PyObject* literal(std::string_view word, PyObject* value) {
    if (static_cast<std::size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) {
      return fail("unknown literal");
    }
    p_ += word.size();
    return Py_NewRef(value);
  }

  PyObject* number() {
    const char* start = p_;
    bool integer = true;
    while (p_ != end_) {
      const char c = *p_;
      if (c == '.' || c == 'e' || c == 'E') {
        integer = false;
      } else if (!((c >= '0' && c <= '9') || c == '-' || c == '+')) {
        break;
      }
      ++p_;
    }
    if (p_ == start) return fail("unexpected character");
    if (integer) {
      long long value = 0;
      const auto [next, error] = std::from_chars(start, p_, value);
      if (error == std::errc() && next == p_) return PyLong_FromLongLong(value);
      const std::string digits(start, p_);  // beyond int64 (a uint64)
      return PyLong_FromString(digits.c_str(), nullptr, 10);
    }
    const std::string digits(start, p_);
    char* used = nullptr;
    const double value = PyOS_string_to_double(digits.c_str(), &used, nullptr);
    if (value == -1.0 && PyErr_Occurred()) return nullptr;
    if (used != digits.c_str() + digits.size()) return fail("bad number");
    return PyFloat_FromDouble(value);
  }

  PyObject* array(int depth) {
    ++p_;
    PyObject* list = PyList_New(0);
    if (list == nullptr) return nullptr;
    if (consume(']')) return list;
    do {
      PyObject* element = value(depth + 1);
      if (element == nullptr || PyList_Append(list, element) != 0) {
        Py_XDECREF(element);
        Py_DECREF(list);
        return nullptr;
      }
      Py_DECREF(element);
    } while (consume(','));
    if (!consume(']')) {
      Py_DECREF(list);
      return fail("expected ',' or ']'");
    }
    return list;
  }

  PyObject* object(int depth) {
    ++p_;
    PyObject* dict = PyDict_New();
    if (dict == nullptr) return nullptr;
    if (consume('}')) return dict;
    do {
      skip_space();
      PyObject* key = string("strict");
      PyObject* element = key != nullptr && consume(':') ? value(depth + 1) : nullptr;
      if (key != nullptr && element == nullptr && !PyErr_Occurred()) fail("expected ':'");
      if (element == nullptr || PyDict_SetItem(dict, key, element) != 0) {
        Py_XDECREF(key);
        Py_XDECREF(element);
        Py_DECREF(dict);
        return nullptr;
      }
      Py_DECREF(key);
      Py_DECREF(element);
    } while (consume(','));
    if (!consume('}')) {
      Py_DECREF(dict);
      return fail("expected ',' or '}'");
    }
    return dict;
  }

  const char* begin_;
  const char* p_;
  const char* end_;
};

// One JSON Lines record (RecordWriter's: index, sub, ok, attempts, then result or error) as the
// tuple (index, ok, result or error, attempts, sub or None); nullptr with a Python error set.
// An error's text is decoded with "backslashreplace".
inline PyObject* parse_record(std::string_view line) {
  JsonReader in(line.data(), line.data() + line.size());
  std::uint64_t index = 0;
  std::uint64_t attempts = 1;
  std::int64_t sub = -1;
  bool ok = false;
  PyObject* value = nullptr;
  auto fail = [&](const char* what) -> PyObject* {
    Py_XDECREF(value);
    if (!PyErr_Occurred()) in.fail(what);
    return nullptr;
  };
  if (!in.consume('{')) return fail("a record is an object");
  if (!in.consume('}')) {
    do {
      in.skip_space();
      PyObject* key = in.string("strict");
      if (key == nullptr || !in.consume(':')) {
        Py_XDECREF(key);
        return fail("expected a key and ':'");
      }
      const char* name = PyUnicode_AsUTF8(key);
      const std::string_view k = name != nullptr ? name : "";
      bool good = true;
      if (k == "index") {
        good = in.unsigned_number(index);
      } else if (k == "attempts") {
        good = in.unsigned_number(attempts);
      } else if (k == "sub") {
        std::uint64_t s = 0;
        good = in.unsigned_number(s);
        sub = static_cast<std::int64_t>(s);
      } else if (k == "ok") {
        PyObject* flag = in.value();
        good = flag != nullptr;
        ok = flag == Py_True;
        Py_XDECREF(flag);
      } else if (k == "result" || k == "error") {
        Py_XDECREF(value);
        in.skip_space();
        value = k == "error" ? in.string("backslashreplace") : in.value();
        good = value != nullptr;
      } else {
        PyObject* other = in.value();  // a field this reader has no use for
        good = other != nullptr;
        Py_XDECREF(other);
      }
      Py_DECREF(key);
      if (!good) return fail("bad field");
    } while (in.consume(','));
    if (!in.consume('}')) return fail("expected ',' or '}'");
  }
  if (value == nullptr) value = Py_NewRef(Py_None);
  PyObject* tuple = PyTuple_New(5);
  if (tuple == nullptr) return fail("");
  PyTuple_SET_ITEM(tuple, 0, PyLong_FromUnsignedLongLong(index));
  PyTuple_SET_ITEM(tuple, 1, Py_NewRef(ok ? Py_True : Py_False));
  PyTuple_SET_ITEM(tuple, 2, value);
  PyTuple_SET_ITEM(tuple, 3, PyLong_FromUnsignedLongLong(attempts));
  PyTuple_SET_ITEM(tuple, 4, sub < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(sub));
  return tuple;
}

}  // namespace coremap::python
