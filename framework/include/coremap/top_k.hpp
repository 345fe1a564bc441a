// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Top-k ranking of counts: the most frequent keys of a key -> count map, as reductions report
/// them (the topkeys plugin, the weblogs example, logstats).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace coremap {

/// The `k` entries of `counts` with the highest counts, highest first; equal counts in
/// ascending key order (byte order for std::string), so the ranking is the same whatever the
/// map's iteration order. `counts` is any map of key -> count (std::map, std::unordered_map);
/// the result points into it and is valid while it is unchanged. O(n log k) time, n pointers of
/// memory.
///
/// \code
/// std::unordered_map<std::string, std::uint64_t> hits = {{"/a", 3}, {"/b", 5}, {"/c", 3}};
/// for (const auto* entry : coremap::top_k(hits, 2)) std::printf("%s %llu\n", entry->first.c_str(), ...);
/// // /b 5, then /a 3
/// \endcode
///
/// Thread safety: reads `counts` only.
template <class Counts>
std::vector<const typename Counts::value_type*> top_k(const Counts& counts, std::size_t k) {
  using Entry = const typename Counts::value_type*;
  std::vector<Entry> entries;
  entries.reserve(counts.size());
  for (const auto& entry : counts) entries.push_back(&entry);
  const std::size_t n = std::min(k, entries.size());
  std::partial_sort(entries.begin(), entries.begin() + static_cast<std::ptrdiff_t>(n), entries.end(),
                    [](Entry a, Entry b) { return a->second != b->second ? a->second > b->second : a->first < b->first; });
  entries.resize(n);
  return entries;
}

}  // namespace coremap
