// SPDX-License-Identifier: MIT
// ProgressReporter: a thread that samples a run's Progress and calls back at an interval, and
// the terminal progress line.
#include <coremap/progress.hpp>

#include <algorithm>
#include <cinttypes>

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

ProgressReporter::ProgressReporter(const Progress& progress, ProgressCallback callback,
                                   std::chrono::milliseconds interval)
    : progress_(progress), callback_(std::move(callback)), interval_(interval),
      start_(std::chrono::steady_clock::now()) {
  if (callback_) thread_ = std::thread([this] { loop(); });
}

ProgressReporter::~ProgressReporter() { stop(); }

void ProgressReporter::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

ProgressSnapshot ProgressReporter::snapshot() const {
  ProgressSnapshot snapshot;
  snapshot.done = progress_.done.load(std::memory_order_relaxed);
  snapshot.failed = progress_.failed.load(std::memory_order_relaxed);
  snapshot.total_items = progress_.total_items.load(std::memory_order_relaxed);
  snapshot.bytes_read = progress_.bytes_read.load(std::memory_order_relaxed);
  snapshot.total_bytes = progress_.total_bytes.load(std::memory_order_relaxed);
  snapshot.cache_hits = progress_.cache_hits.load(std::memory_order_relaxed);
  snapshot.cache_misses = progress_.cache_misses.load(std::memory_order_relaxed);
  snapshot.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return snapshot;
}

void ProgressReporter::loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    // Woken by stop(): one last call, with the counters the run ended with.
    const bool last = wake_.wait_for(lock, interval_, [this] { return stopping_; });
    try {
      callback_(snapshot());
    } catch (...) {
      error_ = std::current_exception();  // read by stop()'s caller once this thread is joined
      return;
    }
    if (last) return;
  }
}

std::string format_progress_line(const ProgressSnapshot& s) {
  char text[160];
  if (s.total_items > 0) {
    std::snprintf(text, sizeof text, "%" PRIu64 "/%" PRIu64 " items", s.done, s.total_items);
  } else {
    std::snprintf(text, sizeof text, "%" PRIu64 " items", s.done);
  }
  std::string line = text;
  const double fraction = s.fraction();
  if (fraction >= 0) {
    std::snprintf(text, sizeof text, " (%.1f%%)", 100.0 * std::min(fraction, 1.0));
    line += text;
  }
  if (s.failed > 0) line += ", " + std::to_string(s.failed) + " failed";
  if (s.cache_hits + s.cache_misses > 0) {
    line += ", cache " + std::to_string(s.cache_hits) + " hits " + std::to_string(s.cache_misses) + " misses";
  }
  std::snprintf(text, sizeof text, ", %.0f items/s", s.seconds > 0 ? static_cast<double>(s.done) / s.seconds : 0.0);
  line += text;
  if (fraction > 0 && fraction < 1) line += ", ETA " + format_duration(s.seconds * (1 - fraction) / fraction);
  return line;
}

ProgressCallback terminal_progress(std::FILE* stream) {
  return [stream](const ProgressSnapshot& snapshot) {
    std::fprintf(stream, "\r\033[K%s", format_progress_line(snapshot).c_str());
    std::fflush(stream);
  };
}

void erase_progress_line(std::FILE* stream) {
  std::fputs("\r\033[K", stream);
  std::fflush(stream);
}

}  // namespace coremap
