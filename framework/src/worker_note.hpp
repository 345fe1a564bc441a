// SPDX-License-Identifier: MIT
#pragma once

// A page of memory the engine shares with one worker (a memfd both map, MAP_SHARED), beside
// the channel: the run's stop flag, which the worker's Context::cancelled() reads directly,
// and what the worker could no longer say on the channel. A plugin can close,
// overwrite or hang on the worker's descriptors, and the worker can die before it writes a
// frame; the page survives all of that, so when the engine reaps a worker it can tell the
// item's record what happened ("lost its channel", "called exit(3) and hung in it").
//
// The worker writes a note at most once (the first wins) and only then sets `length`; the
// engine reads it after the worker has stopped writing (it is dead, or killed and reaped).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace coremap::detail {

/// The shared page's layout. `note` is plain text, `length` bytes of it.
struct WorkerNote {
  /// Set by the engine when the run stops: the worker's Context::cancelled() reads it (the
  /// engine also sends worker_stop_signal(), for a worker without the page).
  std::atomic<bool> stop{false};
  std::atomic<std::uint32_t> length{0};
  /// 1 once the worker's item called exit(): the channel was shut down on purpose.
  std::atomic<std::uint32_t> exit_called{0};
  /// The status passed to exit(), valid when exit_called is 1.
  std::atomic<std::int32_t> exit_status{0};
  char note[4096 - 4 * sizeof(std::uint32_t)];
};
static_assert(sizeof(WorkerNote) == 4096);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free && std::atomic<bool>::is_always_lock_free);

/// The descriptor the worker finds the page's memfd on (dup2'd there by posix_spawn), named
/// in its argv (`--note-fd 3`); the worker maps it and closes the descriptor at once.
inline constexpr int worker_note_fd = 3;

/// Writes `text` as the note unless one is there. Async-signal-safe (no allocation).
inline void write_note(WorkerNote* page, std::string_view text) noexcept {
  if (page == nullptr) return;
  std::uint32_t expected = 0;
  // A length of UINT32_MAX reserves the page while the text is copied in.
  if (!page->length.compare_exchange_strong(expected, UINT32_MAX)) return;
  const std::size_t n = text.size() < sizeof page->note ? text.size() : sizeof page->note;
  std::memcpy(page->note, text.data(), n);
  page->length.store(static_cast<std::uint32_t>(n), std::memory_order_release);
}

/// The note, or empty.
inline std::string read_note(const WorkerNote* page) {
  if (page == nullptr) return {};
  const std::uint32_t n = page->length.load(std::memory_order_acquire);
  if (n == 0 || n > sizeof page->note) return {};
  return std::string(page->note, n);
}

}  // namespace coremap::detail
