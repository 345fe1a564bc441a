// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// What logstats runs per item with coremap::map: it reads one chunk of one log file (a
/// line-aligned byte range of a plain file, or a whole gzip file), parses its lines and
/// returns the chunk's partial aggregate, a ChunkPartial (typed: no JSON between the threads
/// and the merge).
///
/// `lines` counts every line of the chunk, blank ones included, so the application can turn a
/// chunk-relative line number into a file line number; `examples` holds the chunk's first
/// malformed lines (line relative to the chunk, 1-based; offset in the file, or in the
/// decompressed stream for gzip). Keys and texts are the log's bytes as they are (json_safe()
/// makes them printable).
///
/// Thread safety: a ChunkScanner is not re-entrant (logstats keeps one per thread); it reuses
/// its read buffer from chunk to chunk.

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

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

/// One malformed line of a chunk.
struct ChunkExample {
  std::uint64_t line = 0;    ///< 1-based, relative to the chunk
  std::uint64_t offset = 0;  ///< in the file (in the decompressed stream for gzip)
  std::string reason;
  std::string text;  ///< the line, cut at max_example_bytes
};

/// The partial aggregate of one chunk.
struct ChunkPartial {
  std::uint64_t lines = 0;  ///< all lines, blank ones included
  std::uint64_t requests = 0;
  std::uint64_t bytes = 0;
  std::uint64_t malformed = 0;
  std::array<std::uint64_t, 5> status_requests{};  ///< 1xx .. 5xx
  std::array<std::uint64_t, 5> status_bytes{};
  StringCounts paths;
  StringCounts clients;
  std::unordered_map<std::uint64_t, std::uint64_t> hours;  ///< YYYYMMDDHH -> requests
  std::unordered_map<std::uint64_t, std::uint64_t> sizes;  ///< response size -> responses
  std::vector<ChunkExample> examples;                      ///< at most max_examples
};

/// Scans chunks (see the file comment).
class ChunkScanner {
 public:
  ChunkScanner();

  /// The partial aggregate of `length` bytes from `offset` of the plain file `path`, or of
  /// the whole file when `gzip` (offset and length ignored). Throws std::runtime_error when
  /// the file cannot be opened, read or decompressed, or has shrunk.
  ChunkPartial scan(const std::string& path, std::uint64_t offset, std::uint64_t length, bool gzip);

 private:
  void scan_plain(const std::string& path, std::uint64_t offset, std::uint64_t length);
  void scan_gzip(const std::string& path);
  void add_line(std::string_view line, std::uint64_t offset);

  std::vector<char> buffer_;
  ChunkPartial partial_;
  LogLine parsed_;
};

}  // namespace logstats
