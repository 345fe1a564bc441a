// SPDX-License-Identifier: MIT
#pragma once

// Adaptive batch sizing, the one implementation behind the engine's batches (items per batch
// cut from the manifest, engine.cpp) and the MPI coordinator's chunks (items per chunk handed to
// a rank, framework/mpi): a batch holds the items that take about a target time at the rate
// measured so far, within bounds, and a fixed first size before anything was measured. Near the
// end of a run, guided self-scheduling caps a chunk at a share of the items left so the last
// items spread over every taker. Pure functions, tested alone (tests/batch_sizing_test.cpp).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace coremap::detail {

/// The items that take about `target_ns` when `items` took `ns` (the rate measured so far,
/// ns in the same clock as target_ns), rounded down, within [1, max_items]; `unmeasured`
/// (within the same bounds) while nothing was measured (`items` or `ns` is 0).
inline std::size_t items_for_duration(std::uint64_t target_ns, std::uint64_t items, std::uint64_t ns,
                                      std::size_t max_items, std::size_t unmeasured = 1) noexcept {
  const std::size_t most = std::max<std::size_t>(1, max_items);
  if (items == 0 || ns == 0) return std::clamp<std::size_t>(unmeasured, 1, most);
  // 128 bits: target x items overflows 64 bits for long targets over many items.
  __extension__ using Wide = unsigned __int128;
  const Wide want = static_cast<Wide>(target_ns) * items / ns;
  return want >= most ? most : std::max<std::size_t>(1, static_cast<std::size_t>(want));
}

/// Guided self-scheduling: the most one request may take when about `items_left` items remain
/// for `takers` takers, ceil(items_left / (2 x takers)), and never below `at_least`. Two
/// requests per taker may be in flight, hence the 2.
inline std::size_t guided_share(double items_left, std::size_t takers, std::size_t at_least) noexcept {
  const double share = std::ceil(std::max(0.0, items_left) / (2.0 * static_cast<double>(std::max<std::size_t>(1, takers))));
  return std::max(at_least, static_cast<std::size_t>(share));
}

/// Items left in a source of `size_bytes` of which `read_bytes` gave `items_cut` items, at the
/// same bytes per item; 0 when nothing was read yet or nothing is left.
inline double estimate_items_left(std::uint64_t size_bytes, std::uint64_t read_bytes, std::uint64_t items_cut) noexcept {
  if (read_bytes == 0 || items_cut == 0 || size_bytes <= read_bytes) return 0;
  return static_cast<double>(size_bytes - read_bytes) * static_cast<double>(items_cut) / static_cast<double>(read_bytes);
}

}  // namespace coremap::detail
