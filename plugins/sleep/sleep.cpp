// SPDX-License-Identifier: MIT
#include <chrono>
#include <stdexcept>
#include <thread>

#include <coremap/plugin.hpp>

/// Blocks for {"ms": N} milliseconds (or the config's `ms`) without using the CPU: stands for
/// latency-bound work such as a network request.
class Sleep {
 public:
  static constexpr bool reentrant = true;
  static constexpr coremap::ConfigKey config_keys[] = {
      {"ms", "integer", "10", "milliseconds to sleep when the item has no \"ms\" field"}};

  explicit Sleep(const coremap::Json& config) : default_ms_(config.at("ms").get<std::int64_t>()) {
    if (default_ms_ < 0) throw std::invalid_argument("ms must be non-negative");
  }

  coremap::Json process(const coremap::Json& item) {
    const std::int64_t ms = coremap::nonnegative_field(item, "ms", default_ms_);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return {{"ms", ms}};
  }

 private:
  std::int64_t default_ms_;
};

COREMAP_PLUGIN(Sleep, "sleep", "1.0.0", "blocks for the item's \"ms\" milliseconds (latency-bound work)")
