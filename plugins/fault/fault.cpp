// SPDX-License-Identifier: MIT
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <coremap/plugin.hpp>

/// Fails the way an item asks it to, {"fault": "segv"|"abort"|"exit"|"hang"|"throw"|
/// "throw_int"|"oom"|"bad_utf8"}, and echoes every other item back: a plugin for testing how
/// coremap (and whatever runs it) handles crashes, hangs, exceptions and bad results.
/// Stateless, so one instance serves all threads.
class Fault {
 public:
  static constexpr bool reentrant = true;
  static constexpr coremap::ConfigKey config_keys[] = {
      {"code", "integer", "3", "exit status of a \"fault\": \"exit\" item without its own \"code\" (0-255)"}};

  explicit Fault(const coremap::Json& config) : default_code_(config.at("code").get<std::int64_t>()) {
    if (default_code_ < 0 || default_code_ > 255) {
      throw std::invalid_argument("config key \"code\" must be an exit status from 0 to 255, got " +
                                  std::to_string(default_code_));
    }
  }

  coremap::Json process(const coremap::Json& item, coremap::Context& context) {
    if (!item.is_object()) return item;
    const auto it = item.find("fault");
    if (it == item.end() || !it->is_string()) return item;
    const std::string& fault = it->get_ref<const std::string&>();
    // {"fault": ..., "until_attempt": N}: fail only on attempts before N (--retries), then echo.
    if (const auto until = item.find("until_attempt"); until != item.end() && until->is_number_unsigned() &&
        context.attempt() >= until->get<std::uint64_t>()) {
      return item;
    }
    if (fault == "segv") segv();
    if (fault == "abort") std::abort();
    if (fault == "exit") std::_Exit(static_cast<int>(exit_code(item)));
    if (fault == "hang") return hang(item, context);
    if (fault == "throw") throw std::runtime_error("fault: asked to throw");
    if (fault == "throw_int") throw 42;
    if (fault == "oom") return oom(item);
    if (fault == "bad_utf8") return {{"fault", "bad_utf8"}, {"text", std::string("caf\xE9 \xFF\xFE")}};
    return item;
  }

 private:
  // UBSan would report the null store and exit 1 instead: exempt, so a sanitizer build still
  // gets the signal (AddressSanitizer reports it unless ASAN_OPTIONS has handle_segv=0).
  [[noreturn]] __attribute__((no_sanitize("undefined"))) static void segv() {
    // A real invalid write first, so the signal comes from the hardware as a bug's would; the
    // volatile pointer keeps the compiler from proving it null and emitting a trap instead.
    // raise() is the fallback should the write ever pass.
    volatile int* volatile nowhere = nullptr;
    *nowhere = 1;
    std::raise(SIGSEGV);
    std::abort();
  }

  std::int64_t exit_code(const coremap::Json& item) const {
    const std::int64_t code = coremap::nonnegative_field(item, "code", default_code_);
    if (code > 255) {
      throw std::invalid_argument("item field \"code\" must be an exit status from 0 to 255, got " +
                                  std::to_string(code));
    }
    return code;
  }

  // Never returns on its own: only a cancelled run, or the item's optional "ms" bound, ends it.
  static coremap::Json hang(const coremap::Json& item, coremap::Context& context) {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    const bool bounded = item.contains("ms");
    const std::int64_t ms = coremap::nonnegative_field(item, "ms", 0);
    for (;;) {
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
      if (context.cancelled()) {
        throw std::runtime_error("fault: hang ended after " + std::to_string(waited.count()) +
                                 " ms because the run was cancelled");
      }
      if (bounded && waited.count() >= ms) return {{"fault", "hang"}, {"ms", ms}};
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  // Unbounded, allocates until operator new throws std::bad_alloc, which propagates (the blocks
  // are freed on the way out). Every page is written so the memory is really committed.
  static coremap::Json oom(const coremap::Json& item) {
    constexpr std::size_t mib = std::size_t{1} << 20;
    const bool bounded = item.contains("mb");
    const std::int64_t mb = coremap::nonnegative_field(item, "mb", 0);
    const std::size_t block = bounded ? mib : 16 * mib;
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<std::unique_ptr<char[]>> blocks;
    std::uint64_t pages = 0;
    while (!bounded || blocks.size() < static_cast<std::size_t>(mb)) {
      blocks.push_back(std::make_unique_for_overwrite<char[]>(block));
      volatile char* bytes = blocks.back().get();
      for (std::size_t i = 0; i < block; i += page) bytes[i] = static_cast<char>(i / page);
      pages += (block + page - 1) / page;
    }
    return {{"fault", "oom"}, {"mb", mb}, {"pages_touched", pages}};
  }

  std::int64_t default_code_;
};

COREMAP_PLUGIN(Fault, "fault", "1.0.0", "fails as each item asks (segv, abort, exit, hang, throw, oom, ...): for testing failure handling")
