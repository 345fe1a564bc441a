// SPDX-License-Identifier: MIT
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>

#include <coremap/plugin.hpp>

#include "item_fields.hpp"

/// Blocks for {"ms": N} milliseconds (or the config's `ms`) without using the CPU: stands for
/// latency-bound work such as a network request. Stateless, so one instance serves all threads.
class Sleep {
 public:
  static constexpr bool reentrant = true;
  static constexpr coremap::ConfigKey config_keys[] = {
      {"ms", "integer", "10", "milliseconds to sleep when the item has no \"ms\" field"}};

  explicit Sleep(const coremap::Json& config) : default_ms_(config.at("ms").get<std::int64_t>()) {
    if (default_ms_ < 0) throw std::invalid_argument("config key \"ms\" must be non-negative");
  }

  coremap::Json process(const coremap::Json& item, coremap::Context& context) {
    // nonnegative_field() falls back to the default for a non-object; here that would hide a
    // manifest mistake, so it is the item's error instead.
    if (!item.is_object()) {
      std::string shown = item.dump();
      if (shown.size() > 60) shown = shown.substr(0, 57) + "...";
      throw std::invalid_argument("item must be an object such as {\"ms\": 10}, got " + shown);
    }
    const std::int64_t ms = coremap::bundled::nonnegative_field(item, "ms", default_ms_);
    // Sleeping in slices toward a fixed deadline lets a stopped run end without waiting out
    // long sleeps, while the total still overshoots only by the last slice's wake-up latency.
    // Sleeps no longer than one slice stay a single sleep_for.
    constexpr std::chrono::milliseconds slice{100};
    const std::chrono::milliseconds total{ms};
    if (total <= slice) {
      std::this_thread::sleep_for(total);
    } else {
      const auto until = deadline_after(total);
      while (!context.cancelled()) {
        const auto left = until - std::chrono::steady_clock::now();
        if (left <= left.zero()) break;
        std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(left, slice));
      }
    }
    return {{"ms", ms}};
  }

 private:
  // Saturates instead of overflowing the clock's nanosecond count for absurdly large `ms`.
  static std::chrono::steady_clock::time_point deadline_after(std::chrono::milliseconds total) {
    using Clock = std::chrono::steady_clock;
    const auto now = Clock::now();
    const auto headroom = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::time_point::max() - now);
    if (total >= headroom) return Clock::time_point::max();
    return now + total;
  }

  std::int64_t default_ms_;
};

COREMAP_PLUGIN(Sleep, "sleep", "1.0.0", "blocks for the item's \"ms\" milliseconds (latency-bound work)")
