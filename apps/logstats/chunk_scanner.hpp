// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The per-item plugin class logstats runs in the coremap engine: it reads one chunk of one log
/// file (a line-aligned byte range of a plain file, or a whole gzip file), parses its lines and
/// returns the chunk's partial aggregate as JSON.
///
/// Item:   {"path": "logs/a.log", "offset": 0, "length": 4194304, "gzip": false}
///         (`offset` and `length` are ignored for gzip files, which are read whole)
/// Result: {"lines": N, "requests": N, "bytes": N, "malformed": N,
///          "status_requests": [1xx, 2xx, 3xx, 4xx, 5xx], "status_bytes": [...],
///          "paths":   {"keys": ["/a", ...], "counts": [3, ...]},
///          "clients": {"keys": ["10.0.0.1", ...], "counts": [...]},
///          "hours":   {"keys": [2000101013, ...], "counts": [...]},
///          "sizes":   {"keys": [512, ...], "counts": [...]},
///          "examples": [{"line": 17, "offset": 2345, "reason": "bad status", "text": "..."}]}
/// `lines` counts every line of the chunk, blank ones included, so the application can turn a
/// chunk-relative line number into a file line number; `examples` holds the chunk's first
/// malformed lines (line relative to the chunk, 1-based; offset in the file, or in the
/// decompressed stream for gzip).
///
/// Thread safety: not re-entrant (the engine keeps one instance per worker thread); the
/// instance reuses its read buffer and hash tables from chunk to chunk.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <coremap/plugin.hpp>

#include "log_parser.hpp"

namespace logstats {

/// Malformed lines a chunk reports, and the most the whole run reports.
inline constexpr std::size_t max_examples = 5;
/// Bytes of a malformed line kept in its example.
inline constexpr std::size_t max_example_bytes = 240;

/// Hashes std::string and std::string_view alike, so a lookup by view allocates nothing.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

/// Counts per string key, looked up by std::string_view.
using StringCounts = std::unordered_map<std::string, std::uint64_t, StringHash, std::equal_to<>>;

/// `text` made safe for JSON: bytes that are not valid UTF-8 become the text \xNN (the way
/// Apache itself escapes them); ASCII text is returned unchanged.
std::string json_safe(std::string_view text);

/// The plugin class (see the file comment).
class ChunkScanner {
 public:
  explicit ChunkScanner(const coremap::Json& config);
  coremap::Json process(const coremap::Json& item);

 private:
  void reset();
  void scan_plain(const std::string& path, std::uint64_t offset, std::uint64_t length);
  void scan_gzip(const std::string& path);
  void add_line(std::string_view line, std::uint64_t offset);
  coremap::Json result() const;

  std::vector<char> buffer_;
  std::uint64_t lines_ = 0;
  std::uint64_t requests_ = 0;
  std::uint64_t bytes_ = 0;
  std::uint64_t malformed_ = 0;
  std::uint64_t status_requests_[5] = {};
  std::uint64_t status_bytes_[5] = {};
  StringCounts paths_;
  StringCounts clients_;
  std::unordered_map<std::uint64_t, std::uint64_t> hours_;
  std::unordered_map<std::uint64_t, std::uint64_t> sizes_;
  coremap::Json examples_;
  LogLine parsed_;
};

}  // namespace logstats
