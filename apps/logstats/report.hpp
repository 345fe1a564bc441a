// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Merging chunk partials into totals, and turning the totals into the figures logstats prints.
/// Every figure is computed from exact merged counts, so it does not depend on the thread count
/// or on how files were cut into chunks.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include <coremap/plugin.hpp>

#include "chunk_scanner.hpp"

namespace logstats {

/// One malformed line.
struct Example {
  std::string file;
  std::uint64_t line = 0;                ///< 1-based line number in the file (decompressed for gzip)
  std::uint64_t offset = 0;              ///< byte offset of the line in the file (in the decompressed stream for gzip)
  std::string reason;
  std::string text;                      ///< the line, cut at max_example_bytes
};

/// Exact counts merged from chunk partials.
struct Totals {
  std::uint64_t lines = 0;  ///< all lines, blank ones included
  std::uint64_t requests = 0;
  std::uint64_t bytes = 0;
  std::uint64_t malformed = 0;
  std::array<std::uint64_t, 5> status_requests{};
  std::array<std::uint64_t, 5> status_bytes{};
  StringCounts paths;
  StringCounts clients;
  std::unordered_map<std::uint64_t, std::uint64_t> hours;
  std::unordered_map<std::uint64_t, std::uint64_t> sizes;
  std::vector<Example> examples;  ///< the first max_examples malformed lines, in file order

  /// Adds the partial result of a chunk of `file` (ChunkScanner::scan's) that begins after
  /// `line_base` lines of that file; its keys and texts are made printable with json_safe().
  /// `partial` is left valid but unspecified.
  void add_chunk(ChunkPartial&& partial, const std::string& file, std::uint64_t line_base);
  /// Adds everything `other` holds (a later file's totals); `other` is left valid but unspecified.
  void absorb(Totals&& other);
  bool empty() const noexcept { return lines == 0 && examples.empty(); }
};

/// A key and its count.
struct Ranked {
  std::string key;
  std::uint64_t count = 0;
};

/// A file that could not be read.
struct FileProblem {
  std::string file;
  std::string error;
};

/// The figures.
struct Report {
  std::uint64_t files = 0;        ///< files read (those in `errors` excluded)
  std::uint64_t chunks = 0;       ///< engine items those files were cut into
  std::uint64_t input_bytes = 0;  ///< their size on disk (compressed size for gzip)
  std::uint64_t requests = 0;
  std::uint64_t bytes = 0;
  std::array<std::uint64_t, 5> status_requests{};
  std::array<std::uint64_t, 5> status_bytes{};
  std::vector<Ranked> top_paths;
  std::uint64_t distinct_paths = 0;
  std::vector<Ranked> top_clients;
  std::uint64_t distinct_clients = 0;
  std::vector<Ranked> hours;  ///< "YYYY-MM-DD HH" and requests, in time order
  std::uint64_t sized_responses = 0;
  std::optional<std::uint64_t> p50, p90, p99, max;
  std::uint64_t malformed = 0;
  std::vector<Example> examples;
  std::vector<FileProblem> errors;
};

/// The figures of `totals`: top `top` paths and clients by count (descending, ties by key in
/// byte order), sizes at nearest-rank percentiles.
Report make_report(const Totals& totals, std::size_t top);

/// Nearest-rank percentile `p` (0 < p <= 100) of the sizes in `histogram` (size, count) sorted
/// by size, holding `n` responses in all: the smallest size v such that at least
/// ceil(p / 100 * n) responses are <= v. Empty when n is 0.
std::optional<std::uint64_t> nearest_rank(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& histogram,
                                          std::uint64_t n, unsigned p);

/// The report as one JSON object (see README.md for the layout).
nlohmann::ordered_json report_json(const Report& report);

/// The report as text tables.
std::string report_text(const Report& report, std::size_t top);

}  // namespace logstats
