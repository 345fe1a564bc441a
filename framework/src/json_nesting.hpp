// SPDX-License-Identifier: MIT
#pragma once

// The JSON byte scanner: tracks, byte by byte, whether the text is inside a string (escapes
// included) and how deeply arrays and objects are nested, without parsing. One scanner for the
// manifest reader (where an element of a JSON array ends) and the item parser (items nested too
// deeply are refused before parsing).

#include <cstddef>

namespace coremap::detail {

/// What one byte was to the structure, outside strings.
enum class JsonByte {
  other,  // inside a string, or any byte that opens or closes nothing
  open,   // '{' or '[': depth() is one more
  close,  // '}' or ']' inside a container: depth() is one less
  end,    // ',' or a '}' or ']' at depth 0: the end of a value in a list (depth unchanged)
};

/// Feed the bytes of a JSON text in order. Not thread-safe (one text, one scanner).
class JsonNesting {
 public:
  JsonByte feed(char c) noexcept {
    if (in_string_) {
      if (escaped_) {
        escaped_ = false;
      } else if (c == '\\') {
        escaped_ = true;
      } else if (c == '"') {
        in_string_ = false;
      }
      return JsonByte::other;
    }
    switch (c) {
      case '"':
        in_string_ = true;
        return JsonByte::other;
      case '{':
      case '[':
        ++depth_;
        return JsonByte::open;
      case '}':
      case ']':
        if (depth_ == 0) return JsonByte::end;
        --depth_;
        return JsonByte::close;
      case ',':
        return depth_ == 0 ? JsonByte::end : JsonByte::other;
      default:
        return JsonByte::other;
    }
  }

  /// Arrays and objects open at this point.
  std::size_t depth() const noexcept { return depth_; }

 private:
  std::size_t depth_ = 0;
  bool in_string_ = false;
  bool escaped_ = false;
};

}  // namespace coremap::detail
