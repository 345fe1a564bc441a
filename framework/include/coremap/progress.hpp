// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Progress of a run: live counters the engine updates, snapshots of them handed to a callback
/// every interval from a background thread, and the terminal status line the CLI draws.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include <coremap/export.hpp>

namespace coremap {

/// Counters of the run in progress, readable from any thread.
struct Progress {
  std::atomic<std::uint64_t> done{0};         ///< records delivered
  std::atomic<std::uint64_t> failed{0};       ///< items failed so far
  std::atomic<std::uint64_t> bytes_read{0};   ///< manifest bytes consumed
  std::atomic<std::uint64_t> total_bytes{0};  ///< manifest size when known, else 0
  std::atomic<std::uint64_t> total_items{0};  ///< item count when known, else 0
  std::atomic<std::uint64_t> cache_hits{0};    ///< RunOptions::cache: items replayed from it
  std::atomic<std::uint64_t> cache_misses{0};  ///< RunOptions::cache: items run
};

/// One reading of the counters.
struct ProgressSnapshot {
  std::uint64_t done = 0;
  std::uint64_t failed = 0;
  std::uint64_t total_items = 0;  ///< 0 when unknown
  std::uint64_t bytes_read = 0;
  std::uint64_t total_bytes = 0;  ///< 0 when unknown
  double seconds = 0;             ///< since the run started
  std::uint64_t cache_hits = 0;    ///< RunOptions::cache: items replayed from it
  std::uint64_t cache_misses = 0;  ///< RunOptions::cache: items run

  /// Fraction done from items when their count is known, else from manifest bytes; -1 if neither.
  double fraction() const noexcept {
    if (total_items > 0) return static_cast<double>(done) / static_cast<double>(total_items);
    if (total_bytes > 0) return static_cast<double>(bytes_read) / static_cast<double>(total_bytes);
    return -1;
  }
};

/// Called with a snapshot every interval while a run goes on, from a background thread, and
/// once more when the run has ended (the last call's counters are the run's final ones).
using ProgressCallback = std::function<void(const ProgressSnapshot&)>;

/// Calls `callback` with a snapshot of `progress` every `interval` on its own thread, and a
/// last time, with the final counters, when stopped. The engine runs one for
/// RunOptions::on_progress and stops it after the run's last record was delivered.
///
/// An exception from `callback` is caught on the reporter's thread (it would otherwise end the
/// process): the callback is not called again, and stop() hands the exception on (error()) so
/// the engine rethrows it once the run is over; the run itself is not cut short by it.
///
/// Thread safety: construct, stop and error() from one thread; the callback runs on another.
class COREMAP_EXPORT ProgressReporter {
 public:
  ProgressReporter(const Progress& progress, ProgressCallback callback, std::chrono::milliseconds interval);
  ~ProgressReporter();
  ProgressReporter(const ProgressReporter&) = delete;
  ProgressReporter& operator=(const ProgressReporter&) = delete;

  /// Calls the callback a last time with the final counters (unless it threw before), then
  /// stops the thread; the callback is not called again.
  void stop();

  /// What the callback threw, or null; read after stop().
  std::exception_ptr error() const noexcept { return error_; }

 private:
  void loop();
  ProgressSnapshot snapshot() const;

  const Progress& progress_;
  ProgressCallback callback_;
  std::chrono::milliseconds interval_;
  std::chrono::steady_clock::time_point start_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

/// "1234/5000 items (24.7%), 3 failed, 812 items/s, ETA 0:04".
COREMAP_EXPORT std::string format_progress_line(const ProgressSnapshot& snapshot);

/// A callback redrawing format_progress_line() in place on `stream` (a terminal). Erase the
/// line afterwards with erase_progress_line().
COREMAP_EXPORT ProgressCallback terminal_progress(std::FILE* stream);
COREMAP_EXPORT void erase_progress_line(std::FILE* stream);

}  // namespace coremap
