// SPDX-License-Identifier: MIT
#include <chrono>
#include <stdexcept>

#include <coremap/plugin.hpp>

/// Burns the CPU for {"us": N} microseconds (or the config's `us`): a busy loop on the steady
/// clock, not a sleep, so it stands for CPU-bound work in scaling benchmarks.
class Spin {
 public:
  static constexpr bool reentrant = true;
  static constexpr coremap::ConfigKey config_keys[] = {
      {"us", "integer", "1000", "microseconds to spin when the item has no \"us\" field"}};

  explicit Spin(const coremap::Json& config) : default_us_(config.at("us").get<std::int64_t>()) {
    if (default_us_ < 0) throw std::invalid_argument("us must be non-negative");
  }

  coremap::Json process(const coremap::Json& item, coremap::Context& context) {
    const std::int64_t us = coremap::nonnegative_field(item, "us", default_us_);
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
    unsigned polls = 0;
    while (std::chrono::steady_clock::now() < until) {
      if (++polls % 1024 == 0 && context.cancelled()) break;
    }
    return {{"us", us}};
  }

 private:
  std::int64_t default_us_;
};

COREMAP_PLUGIN(Spin, "spin", "1.0.0", "burns the CPU for the item's \"us\" microseconds")
