// SPDX-License-Identifier: MIT
#include <coremap/progress.hpp>

#include <unistd.h>

#include <cinttypes>
#include <string>

namespace coremap {
namespace {

std::string format_duration(double seconds) {
  if (seconds < 0 || seconds > 360000) return "?";
  const auto s = static_cast<std::uint64_t>(seconds + 0.5);
  char text[32];
  if (s >= 3600) {
    std::snprintf(text, sizeof text, "%" PRIu64 ":%02" PRIu64 ":%02" PRIu64, s / 3600, s / 60 % 60, s % 60);
  } else {
    std::snprintf(text, sizeof text, "%" PRIu64 ":%02" PRIu64, s / 60, s % 60);
  }
  return text;
}

}  // namespace

ProgressMeter::ProgressMeter(const Progress& progress, std::FILE* stream, bool enabled,
                             std::chrono::milliseconds interval)
    : progress_(progress), stream_(stream), interval_(interval), start_(std::chrono::steady_clock::now()) {
  if (enabled && ::isatty(::fileno(stream_)) == 1) thread_ = std::thread([this] { loop(); });
}

ProgressMeter::~ProgressMeter() { stop(); }

void ProgressMeter::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
  std::fputs("\r\033[K", stream_);
  std::fflush(stream_);
}

std::string ProgressMeter::format_line(std::uint64_t done, std::uint64_t failed, std::uint64_t total_items,
                                       std::uint64_t bytes_read, std::uint64_t total_bytes,
                                       double seconds) {
  char text[160];
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
  // Fraction done: items when their count is known, else manifest bytes consumed.
  double fraction = -1;
  if (total_items > 0) {
    fraction = static_cast<double>(done) / static_cast<double>(total_items);
  } else if (total_bytes > 0) {
    fraction = static_cast<double>(bytes_read) / static_cast<double>(total_bytes);
  }
  std::string line;
  if (total_items > 0) {
    std::snprintf(text, sizeof text, "%" PRIu64 "/%" PRIu64 " items", done, total_items);
  } else {
    std::snprintf(text, sizeof text, "%" PRIu64 " items", done);
  }
  line += text;
  if (fraction >= 0) {
    std::snprintf(text, sizeof text, " (%.1f%%)", 100.0 * std::min(fraction, 1.0));
    line += text;
  }
  if (failed > 0) line += ", " + std::to_string(failed) + " failed";
  std::snprintf(text, sizeof text, ", %.0f items/s", rate);
  line += text;
  if (fraction > 0 && fraction < 1) line += ", ETA " + format_duration(seconds * (1 - fraction) / fraction);
  return line;
}

void ProgressMeter::loop() {
  std::unique_lock lock(mutex_);
  while (!wake_.wait_for(lock, interval_, [this] { return stopping_; })) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const std::string line = format_line(
        progress_.done.load(std::memory_order_relaxed), progress_.failed.load(std::memory_order_relaxed),
        progress_.total_items.load(std::memory_order_relaxed), progress_.bytes_read.load(std::memory_order_relaxed),
        progress_.total_bytes.load(std::memory_order_relaxed), seconds);
    std::fprintf(stream_, "\r\033[K%s", line.c_str());
    std::fflush(stream_);
  }
}

}  // namespace coremap
