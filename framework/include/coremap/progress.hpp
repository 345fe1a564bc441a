// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// A live progress line on a terminal: done/total when known, items/s, ETA.

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include <coremap/engine.hpp>
#include <coremap/export.hpp>

namespace coremap {

/// Redraws one status line on `stream` every `interval` from a background thread, reading the
/// engine's Progress counters; erases it when stopped (or destroyed). Does nothing unless
/// `stream` is a terminal and `enabled` is true.
///
/// Thread safety: construct and stop from the thread that runs the engine.
class COREMAP_EXPORT ProgressMeter {
 public:
  ProgressMeter(const Progress& progress, std::FILE* stream, bool enabled,
                std::chrono::milliseconds interval = std::chrono::milliseconds(200));
  ~ProgressMeter();
  ProgressMeter(const ProgressMeter&) = delete;
  ProgressMeter& operator=(const ProgressMeter&) = delete;

  /// Stops the thread and erases the line.
  void stop();
  /// True when a line is being drawn.
  bool active() const noexcept { return thread_.joinable(); }

  /// The line drawn for these figures (exposed for tests).
  static std::string format_line(std::uint64_t done, std::uint64_t failed, std::uint64_t total_items,
                                 std::uint64_t bytes_read, std::uint64_t total_bytes, double seconds);

 private:
  void loop();

  const Progress& progress_;
  std::FILE* stream_;
  std::chrono::milliseconds interval_;
  std::chrono::steady_clock::time_point start_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace coremap
