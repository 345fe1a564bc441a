// SPDX-License-Identifier: MIT
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include <coremap/plugin.hpp>

#include "item_fields.hpp"

/// Fails the way an item asks it to, {"fault": "segv"|"abort"|"exit"|"hang"|"throw"|
/// "throw_int"|"oom"|"bad_utf8"|"fork_crash"|"junk_fds"|"close_fds"|"hang_in_exit"|"hang_at_exit"|
/// "hang_ignoring_stop"}, and echoes every other item back: a plugin for testing how coremap
/// (and whatever runs it) handles crashes, hangs, exceptions, bad results and a plugin that
/// tampers with its process. Stateless, so one instance serves all threads.
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
    if (fault == "fork_crash") fork_crash(item);
    if (fault == "junk_fds") return junk_fds(item);
    if (fault == "close_fds") return close_fds(item);
    if (fault == "hang_in_exit") hang_in_exit(item);
    if (fault == "hang_at_exit") {
      // The process hangs when it ends, whenever that is; the item itself is fine.
      std::atexit([] { sleep_deaf(-1); });
      return item;
    }
    if (fault == "hang_ignoring_stop") return hang_ignoring_stop(item);
    return item;
  }

 private:
  // Blocks every signal that can be blocked and sleeps: forever, or for `ms` milliseconds.
  // Only async-signal-safe calls, as it also runs in a forked child of a multithreaded process.
  static void sleep_deaf(std::int64_t ms) noexcept {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
    timespec left{ms < 0 ? 3600 * 24 : ms / 1000, ms < 0 ? 0 : (ms % 1000) * 1000000};
    for (;;) {
      while (::nanosleep(&left, &left) != 0 && errno == EINTR) {
      }
      if (ms >= 0) return;
      left = {3600 * 24, 0};
    }
  }

  // {"fault": "fork_crash", "pids": DIR, "setsid": BOOL, "raw": BOOL, "signal": "SEGV"|"KILL"}:
  // forks a child that blocks signals and sleeps for 300 s holding every descriptor the
  // process had (with "setsid": true in a session of its own; with "raw": true made by the
  // clone system call, so no pthread_atfork handler runs in it; its pid written to DIR/<pid>
  // when DIR is given), then dies: of SIGSEGV (a null store), or with "signal": "KILL" of
  // SIGKILL, which no handler sees (as when the kernel's OOM killer picks the process).
  [[noreturn]] static void fork_crash(const coremap::Json& item) {
    const std::string signal = item.value("signal", std::string("SEGV"));
    if (signal != "SEGV" && signal != "KILL") {
      throw std::invalid_argument("item field \"signal\" must be \"SEGV\" or \"KILL\", got \"" + signal + "\"");
    }
    const std::string dir = item.contains("pids") ? item.at("pids").get<std::string>() : std::string();
    const bool own_session = item.value("setsid", false);
    const bool raw = item.value("raw", false);
    const std::string path_prefix = dir.empty() ? dir : dir + "/";
    int done[2];
    if (::pipe2(done, O_CLOEXEC) != 0) throw std::runtime_error("fault: pipe2 failed");
    const pid_t child = raw ? static_cast<pid_t>(::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0)) : ::fork();
    if (child < 0) throw std::runtime_error("fault: fork failed");
    if (child == 0) {
      if (own_session) ::setsid();
      if (!dir.empty()) {
        char digits[24];
        char path[4096];
        std::size_t d = 0;
        std::size_t n = 0;
        for (auto v = static_cast<unsigned long>(::getpid()); v != 0; v /= 10) digits[d++] = static_cast<char>('0' + v % 10);
        for (char c : path_prefix) if (n < sizeof path - 32) path[n++] = c;
        const std::size_t start = n;
        while (d > 0) path[n++] = digits[--d];
        const std::size_t end = n;
        path[n] = '\0';
        const int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
          path[end] = '\n';
          [[maybe_unused]] const auto w = ::write(fd, path + start, end - start + 1);
          ::close(fd);
        }
      }
      [[maybe_unused]] const auto w = ::write(done[1], "x", 1);
      sleep_deaf(300000);
      ::_exit(0);
    }
    ::close(done[1]);
    char byte;
    while (::read(done[0], &byte, 1) < 0 && errno == EINTR) {
    }
    ::close(done[0]);
    if (signal == "KILL") ::raise(SIGKILL);
    segv();
  }

  // Writes a frame header claiming 2147483647 bytes and some junk into every open descriptor
  // but standard error, then echoes the item. In process that corrupts coremap's own output.
  static coremap::Json junk_fds(const coremap::Json& item) {
    static constexpr char junk[] = "\xff\xff\xff\x7fjunk from the fault plugin\n";
    const long limit = std::min<long>(::sysconf(_SC_OPEN_MAX), 65536);
    for (int fd = 0; fd < limit; ++fd) {
      if (fd == STDERR_FILENO || ::fcntl(fd, F_GETFD) < 0) continue;
      const int flags = ::fcntl(fd, F_GETFL);
      if (flags < 0 || (flags & O_ACCMODE) == O_RDONLY) continue;
      // Never block on a descriptor nobody reads (a full pipe).
      ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
      [[maybe_unused]] const auto w = ::write(fd, junk, sizeof junk - 1);
      ::fcntl(fd, F_SETFL, flags);
    }
    return item;
  }

  // Closes every descriptor but standard input, output and error, then echoes the item. In
  // process that closes coremap's own files.
  static coremap::Json close_fds(const coremap::Json& item) {
    if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
      const long limit = std::min<long>(::sysconf(_SC_OPEN_MAX), 65536);
      for (int fd = 3; fd < limit; ++fd) ::close(fd);
    }
    return item;
  }

  // Registers an exit handler that never returns (signals blocked), then calls
  // std::exit(code): the process hangs inside exit().
  [[noreturn]] void hang_in_exit(const coremap::Json& item) const {
    const auto code = static_cast<int>(exit_code(item));
    std::atexit([] { sleep_deaf(-1); });
    std::exit(code);
  }

  // Never returns on its own and never looks at Context::cancelled(); blocks every signal it
  // can. With "ms", returns {"fault": "hang_ignoring_stop", "ms": N} after that long.
  static coremap::Json hang_ignoring_stop(const coremap::Json& item) {
    const bool bounded = item.contains("ms");
    const std::int64_t ms = coremap::bundled::nonnegative_field(item, "ms", 0);
    sigset_t all;
    sigset_t previous;
    sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, &previous);
    sleep_deaf(bounded ? ms : -1);
    ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    return {{"fault", "hang_ignoring_stop"}, {"ms", ms}};
  }

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
    const std::int64_t code = coremap::bundled::nonnegative_field(item, "code", default_code_);
    if (code > 255) {
      throw std::invalid_argument("item field \"code\" must be an exit status from 0 to 255, got " +
                                  std::to_string(code));
    }
    return code;
  }

  // Never returns on its own: only a cancelled run, or the item's optional "ms" bound, ends it.
  // With "started": PATH, creates that (empty) file as the hang begins, so a test can wait for
  // the item to be running instead of sleeping.
  static coremap::Json hang(const coremap::Json& item, coremap::Context& context) {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    if (const auto started = item.find("started"); started != item.end()) {
      if (!started->is_string()) throw std::invalid_argument("item field \"started\" must be a path (a string)");
      const std::string& path = started->get_ref<const std::string&>();
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) throw std::runtime_error("fault: cannot create \"" + path + "\": " + std::strerror(errno));
      ::close(fd);
    }
    const bool bounded = item.contains("ms");
    const std::int64_t ms = coremap::bundled::nonnegative_field(item, "ms", 0);
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
    const std::int64_t mb = coremap::bundled::nonnegative_field(item, "mb", 0);
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

COREMAP_PLUGIN(Fault, "fault", "1.0.0", "fails as each item asks (segv, abort, exit, hang, throw, oom, fork_crash, junk_fds, ...): for testing failure handling")
