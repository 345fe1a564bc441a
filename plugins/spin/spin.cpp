// SPDX-License-Identifier: MIT
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <coremap/plugin.hpp>

#include "item_fields.hpp"

/// Burns the CPU for {"us": N} microseconds (or the config's `us`): a busy loop on the steady
/// clock, not a sleep, so it stands for CPU-bound work in scaling benchmarks. Stateless, so
/// one instance serves all threads.
class Spin {
 public:
  static constexpr bool reentrant = true;
  static constexpr coremap::ConfigKey config_keys[] = {
      {"us", "integer", "1000", "microseconds to spin when the item has no \"us\" field"}};

  explicit Spin(const coremap::Json& config) : default_us_(config.at("us").get<std::int64_t>()) {
    if (default_us_ < 0) throw std::invalid_argument("config key \"us\" must be non-negative");
  }

  coremap::Json process(const coremap::Json& item, coremap::Context& context) {
    // nonnegative_field() falls back to the default for a non-object; here that would hide a
    // manifest mistake, so it is the item's error instead.
    if (!item.is_object()) {
      std::string shown = item.dump();
      if (shown.size() > 60) shown = shown.substr(0, 57) + "...";
      throw std::invalid_argument("item must be an object such as {\"us\": 1000}, got " + shown);
    }
    const std::int64_t us = coremap::bundled::nonnegative_field(item, "us", default_us_);
    const auto until = deadline_after(us);
    // steady_clock::now() costs tens of nanoseconds; checking the atomic only every 1024
    // reads keeps the loop on the clock while still stopping within microseconds.
    unsigned polls = 0;
    while (std::chrono::steady_clock::now() < until) {
      if (++polls % 1024 == 0 && context.cancelled()) break;
    }
    return {{"us", us}};
  }

 private:
  // Saturates instead of overflowing the clock's nanosecond count for absurdly large `us`.
  static std::chrono::steady_clock::time_point deadline_after(std::int64_t us) {
    using Clock = std::chrono::steady_clock;
    const auto now = Clock::now();
    const auto headroom = std::chrono::duration_cast<std::chrono::microseconds>(Clock::time_point::max() - now);
    if (us >= headroom.count()) return Clock::time_point::max();
    return now + std::chrono::microseconds(us);
  }

  std::int64_t default_us_;
};

COREMAP_PLUGIN(Spin, "spin", "1.0.0", "burns the CPU for the item's \"us\" microseconds")
