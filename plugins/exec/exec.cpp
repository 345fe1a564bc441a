// SPDX-License-Identifier: MIT
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <coremap/plugin.hpp>
#include <coremap/process_tree.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

// Between SIGTERM and SIGKILL when an item times out or the run is cancelled.
constexpr std::chrono::milliseconds kill_grace{500};
// How often a waiting item looks at Context::cancelled().
constexpr std::chrono::milliseconds cancel_poll{50};
// After the command exits, how long its output pipes may stay open (held by a process that
// left its process group) before the item stops reading them.
constexpr std::chrono::milliseconds drain_after_exit{200};

[[noreturn]] void throw_errno(const std::string& what, int error) {
  throw std::system_error(error, std::generic_category(), what);
}

std::string shown(const coremap::Json& value) {
  std::string text = value.dump(-1, ' ', false, coremap::Json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

/// One argv element, `cwd` or `env` value with `{field}` placeholders, parsed once from the
/// config. Literal text and field names alternate; `{}` names the whole item.
class Template {
 public:
  Template(std::string_view text, const std::string& where) : source_(text) {
    std::string literal;
    for (std::size_t i = 0; i < text.size(); ++i) {
      const char c = text[i];
      if (c == '{' && i + 1 < text.size() && text[i + 1] == '{') {
        literal += '{';
        ++i;
      } else if (c == '}' && i + 1 < text.size() && text[i + 1] == '}') {
        literal += '}';
        ++i;
      } else if (c == '{') {
        const std::size_t close = text.find_first_of("{}", i + 1);
        if (close == std::string_view::npos || text[close] != '}') {
          throw std::invalid_argument(where + " \"" + source_ + "\": '{' at offset " + std::to_string(i) +
                                      " has no closing '}' (write {{ for a literal brace)");
        }
        parts_.push_back({std::move(literal), false});
        literal.clear();
        parts_.push_back({std::string(text.substr(i + 1, close - i - 1)), true});
        i = close;
      } else if (c == '}') {
        throw std::invalid_argument(where + " \"" + source_ + "\": '}' at offset " + std::to_string(i) +
                                    " closes nothing (write }} for a literal brace)");
      } else {
        literal += c;
      }
    }
    parts_.push_back({std::move(literal), false});
  }

  /// The text with each placeholder replaced by `quote(value)`.
  template <class Quote>
  std::string expand(const coremap::Json& item, const std::string& where, Quote quote) const {
    std::string out;
    for (const Part& part : parts_) {
      if (!part.field) {
        out += part.text;
        continue;
      }
      out += quote(placeholder_value(item, part.text, where));
    }
    return out;
  }

  const std::string& source() const { return source_; }

 private:
  struct Part {
    std::string text;  // literal text, or the field name
    bool field;
  };

  std::string placeholder_value(const coremap::Json& item, const std::string& name,
                                const std::string& where) const {
    if (name.empty()) return item.is_string() ? item.get<std::string>() : item.dump();
    if (!item.is_object()) {
      throw std::invalid_argument(where + " \"" + source_ + "\" needs field \"" + name +
                                  "\", but the item is not an object: " + shown(item));
    }
    const auto it = item.find(name);
    if (it == item.end()) {
      throw std::invalid_argument(where + " \"" + source_ + "\": item has no field \"" + name +
                                  "\" (write {{ and }} for literal braces)");
    }
    return it->is_string() ? it->get<std::string>() : it->dump();
  }

  std::string source_;
  std::vector<Part> parts_;
};

std::string no_quote(std::string value) { return value; }

// POSIX sh single quotes: everything literal, a ' itself closes, escapes and reopens.
std::string shell_quote(const std::string& value) {
  std::string out = "'";
  for (const char c : value) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  out += '\'';
  return out;
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not one.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k) {
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  }
  return n;
}

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// Bytes at the end of `s` that start a multi-byte character cut off by a byte limit.
std::size_t cut_tail(std::string_view s) {
  for (std::size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const auto c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    const std::size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

// Human-readable text of a byte tail: continuation bytes left at the front by the cut are
// dropped, any other invalid byte becomes U+FFFD, so the result is valid UTF-8.
std::string readable_tail(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size() && i < 3 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) ++i;
  std::string out;
  out.reserve(s.size() - i);
  while (i < s.size()) {
    const std::size_t n = utf8_sequence(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string base64(std::string_view data) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const std::uint32_t v = static_cast<std::uint32_t>(static_cast<unsigned char>(data[i])) << 16 |
                            static_cast<std::uint32_t>(static_cast<unsigned char>(data[i + 1])) << 8 |
                            static_cast<unsigned char>(data[i + 2]);
    out += alphabet[v >> 18];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (i < data.size()) {
    std::uint32_t v = static_cast<std::uint32_t>(static_cast<unsigned char>(data[i])) << 16;
    if (i + 1 < data.size()) v |= static_cast<std::uint32_t>(static_cast<unsigned char>(data[i + 1])) << 8;
    out += alphabet[v >> 18];
    out += alphabet[(v >> 12) & 63];
    out += i + 1 < data.size() ? alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool open() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct Pipe {
  Fd read, write;
};

Pipe make_pipe() {
  int fds[2];
  // O_CLOEXEC from the start: another thread may be spawning at this very moment, and
  // its child must not inherit this item's pipe ends (it would hold them open).
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2", errno);
  return {Fd(fds[0]), Fd(fds[1])};
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) throw_errno("fcntl(O_NONBLOCK)", errno);
}

// The child and everything it started: killed and reaped on every way out of process(),
// exceptions included, so no item leaves a zombie or a stray process behind.
class Child {
 public:
  explicit Child(pid_t pid) : pid_(pid) {}
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0 && !reaped_) {
      kill_all();
      reap();
    }
  }

  // SIGKILL to the command's whole tree (what left its process group with setsid included,
  // as long as its parent lives: stopped top-down, then killed) and to its process group (what
  // stayed in it after its parent exited). What left both is re-parented to the nearest child
  // subreaper, the coremap CLI or coremap-worker, which kills it when it ends
  // (docs/reliability.md, "No process left behind").
  void kill_all() const {
    if (reaped_) return;
    coremap::process_tree::kill_tree(pid_);
    ::kill(-pid_, SIGKILL);
  }

  pid_t pid() const { return pid_; }

  // The group is signalled only while the leader is unreaped: a reaped leader's pid (the
  // group's id) could be reused by another item's child, which this would then kill.
  void signal_group(int signal_number) const {
    if (!reaped_) ::kill(-pid_, signal_number);
  }

  bool has_exited() const {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return true;
    return info.si_pid != 0;
  }

  int reap() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    return status;
  }

 private:
  pid_t pid_;
  bool reaped_ = false;
};

// Blocks SIGPIPE on this thread while an item writes the child's stdin: a child that exits
// without reading it must cost that write an EPIPE, not the whole coremap process a SIGPIPE.
// A SIGPIPE raised meanwhile is consumed before the old mask comes back.
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;
  ~SigpipeBlock() {
    if (!sigismember(&old_, SIGPIPE)) {
      const timespec zero{0, 0};
      while (::sigtimedwait(&pipe_, nullptr, &zero) == SIGPIPE) {
      }
    }
    ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t pipe_{};
  sigset_t old_{};
};

// Signals a command starts with at their default disposition, whatever coremap ignores.
constexpr int default_signals[] = {SIGPIPE, SIGINT,  SIGTERM, SIGQUIT, SIGHUP,  SIGCHLD, SIGALRM,
                                   SIGUSR1, SIGUSR2, SIGTSTP, SIGTTIN, SIGTTOU, SIGXFSZ};

// fd moved to 3 or above (close-on-exec), so that dup2 onto 0, 1 and 2 cannot overwrite a
// source that happens to sit there (coremap started with a standard stream closed).
int above_standard(int fd) { return fd > 2 ? fd : ::fcntl(fd, F_DUPFD_CLOEXEC, 3); }

[[noreturn]] void child_failed(int report_fd) {
  const int error = errno;
  [[maybe_unused]] const auto n = ::write(report_fd, &error, sizeof error);
  ::_exit(127);
}

// The child side of spawn_command, between vfork and exec. It shares coremap's memory (vfork),
// so it only makes system calls, writes nothing but its own locals and reports a failure's
// errno through `report_fd`; every signal is blocked until just before exec, so no handler of
// coremap's ever runs here.
[[noreturn]] void exec_child(const char* program, char* const argv[], char* const envp[], int stdin_fd,
                             int stdout_fd, int stderr_fd, const char* dir, int report_fd, pid_t parent) {
  const auto fail = [report_fd]() { child_failed(report_fd); };
  struct sigaction defaults {};
  defaults.sa_handler = SIG_DFL;
  sigemptyset(&defaults.sa_mask);
  for (const int s : default_signals) ::sigaction(s, &defaults, nullptr);
  // Own process group, so a timeout or cancellation reaches everything the command started.
  if (::setpgid(0, 0) != 0) fail();
  // Dies with the thread that started it. That thread waits in process() for as long as the
  // command lives, so this fires only when the whole process goes (coremap or coremap-worker
  // killed with SIGKILL), when no one is left to kill the command.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) fail();
  if (::getppid() != parent) ::_exit(127);  // gone already, before the prctl
  stdin_fd = above_standard(stdin_fd);
  stdout_fd = above_standard(stdout_fd);
  stderr_fd = above_standard(stderr_fd);
  if (stdin_fd < 0 || stdout_fd < 0 || stderr_fd < 0) fail();
  if (::dup2(stdin_fd, 0) < 0 || ::dup2(stdout_fd, 1) < 0 || ::dup2(stderr_fd, 2) < 0) fail();
  if (dir != nullptr && ::chdir(dir) != 0) fail();
  // Files the framework opened without O_CLOEXEC (manifest, output) stay out of the command;
  // the report pipe is close-on-exec already.
  if (::close_range(3, static_cast<unsigned>(report_fd) - 1, 0) != 0 ||
      ::close_range(static_cast<unsigned>(report_fd) + 1, ~0U, 0) != 0) {
    fail();
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execvpe(program, argv, envp);
  child_failed(report_fd);
}

// Starts the command with `stdin_fd` (or /dev/null when -1), `stdout_fd` and `stderr_fd` as its
// standard streams and nothing else open, in a process group of its own, with an empty signal
// mask and default dispositions, killed by the kernel if coremap (or the coremap-worker running
// it) dies. vfork rather than posix_spawn, which cannot set PR_SET_PDEATHSIG in the child;
// like posix_spawn it copies no memory and runs no atfork handlers in this multithreaded process.
pid_t spawn_command(const std::string& program, char* const argv[], char* const envp[], int stdin_fd,
                    int stdout_fd, int stderr_fd, const std::optional<std::string>& cwd) {
  Fd null_stdin;
  if (stdin_fd < 0) {
    // Never coremap's own stdin: with `--manifest -` that is the manifest.
    null_stdin = Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!null_stdin.open()) throw_errno("open /dev/null", errno);
    stdin_fd = null_stdin.get();
  }
  Pipe report = make_pipe();
  const char* dir = cwd ? cwd->c_str() : nullptr;
  const pid_t parent = ::getpid();
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t pid = ::vfork();
  if (pid == 0) exec_child(program.c_str(), argv, envp, stdin_fd, stdout_fd, stderr_fd, dir, report.write.get(), parent);
  const int vfork_error = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) throw_errno("vfork", vfork_error);
  report.write.reset();
  int error = 0;
  ssize_t got = 0;
  while ((got = ::read(report.read.get(), &error, sizeof error)) < 0 && errno == EINTR) {
  }
  if (got == static_cast<ssize_t>(sizeof error)) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    std::string message = "cannot run '" + program + "'";
    if (cwd) message += " in directory '" + *cwd + "'";
    throw std::runtime_error(message + ": " + std::strerror(error));
  }
  return pid;
}

std::string signal_name(int signal_number) {
  if (const char* abbrev = ::sigabbrev_np(signal_number)) return std::string("SIG") + abbrev;
  return "signal " + std::to_string(signal_number);
}

int pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

std::int64_t nonnegative_key(const coremap::Json& config, const char* key) {
  const auto value = config.at(key).get<std::int64_t>();
  if (value < 0) throw std::invalid_argument(std::string("config key \"") + key + "\" must be non-negative");
  return value;
}

}  // namespace

/// Runs an external command per item: an argv template with `{field}` placeholders filled from
/// the item, no shell unless `shell` is true; stdout, a stderr tail, exit status and time are
/// the result, a non-zero exit, a signal, a timeout or a command that cannot start is the item's
/// error. Stateless after construction, so one instance serves all threads (each call owns its
/// pipes and child).
class Exec {
 public:
  static constexpr bool reentrant = true;
  static constexpr coremap::ConfigKey config_keys[] = {
      {"argv", "array", nullptr, "command and arguments; {field} is an item field, {} the whole item"},
      {"shell", "boolean", "false", "run /bin/sh -c with argv's single string, placeholders shell-quoted"},
      {"timeout_ms", "integer", "0",
       "kill the command (SIGTERM, SIGKILL 500 ms later) after this many ms; 0: no limit"},
      {"max_stdout", "integer", "1048576",
       "bytes of stdout kept; the rest is read and dropped (stdout_truncated)"},
      {"stderr_tail", "integer", "4096", "bytes kept from the end of stderr"},
      {"stdin", "any", "null", "item field whose value is written to the command's stdin; null: /dev/null"},
      {"env", "object", "{}", "extra environment variables (values are templates)"},
      {"cwd", "any", "null", "working directory (a template); null: coremap's"}};

  explicit Exec(const coremap::Json& config)
      : shell_(config.at("shell").get<bool>()),
        timeout_ms_(nonnegative_key(config, "timeout_ms")),
        max_stdout_(static_cast<std::size_t>(nonnegative_key(config, "max_stdout"))),
        stderr_tail_(static_cast<std::size_t>(nonnegative_key(config, "stderr_tail"))) {
    const coremap::Json& argv = config.at("argv");
    if (argv.empty()) throw std::invalid_argument("config key \"argv\" must not be empty");
    for (std::size_t i = 0; i < argv.size(); ++i) {
      const std::string where = "argv[" + std::to_string(i) + "]";
      if (!argv[i].is_string()) {
        throw std::invalid_argument("config key \"argv\": " + where + " must be a string, got " +
                                    shown(argv[i]));
      }
      argv_.emplace_back(argv[i].get<std::string>(), where);
    }
    if (shell_ && argv_.size() != 1) {
      throw std::invalid_argument(
          "config key \"argv\": with \"shell\": true it must hold exactly one string, the "
          "script for /bin/sh -c; got " +
          std::to_string(argv_.size()));
    }

    if (const coremap::Json& field = config.at("stdin"); !field.is_null()) {
      if (!field.is_string())
        throw std::invalid_argument("config key \"stdin\" must be a field name or null, got " + shown(field));
      stdin_field_ = field.get<std::string>();
    }
    if (const coremap::Json& cwd = config.at("cwd"); !cwd.is_null()) {
      if (!cwd.is_string() || cwd.get<std::string>().empty()) {
        throw std::invalid_argument("config key \"cwd\" must be a non-empty string or null, got " +
                                    shown(cwd));
      }
      cwd_.emplace(cwd.get<std::string>(), "cwd");
    }
    for (const auto& [name, value] : config.at("env").items()) {
      if (name.empty() || name.find('=') != std::string::npos) {
        throw std::invalid_argument("config key \"env\": \"" + name + "\" is not a variable name");
      }
      if (!value.is_string()) {
        throw std::invalid_argument("config key \"env\": \"" + name + "\" must be a string, got " +
                                    shown(value));
      }
      env_.emplace_back(name, Template(value.get<std::string>(), "env." + name));
    }
    // The environment is copied once; a variable set in `env` replaces the inherited one.
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      const std::string_view entry(*e);
      const std::string_view name = entry.substr(0, entry.find('='));
      const bool overridden =
          std::any_of(env_.begin(), env_.end(), [&](const auto& kv) { return kv.first == name; });
      if (!overridden) base_env_.emplace_back(entry);
    }
  }

  coremap::Json process(const coremap::Json& item, coremap::Context& context) {
    std::vector<std::string> args = expand_argv(item);
    std::vector<std::string> env = base_env_;
    for (const auto& [name, value] : env_)
      env.push_back(name + "=" + checked(value.expand(item, "env." + name, no_quote), "env." + name));
    std::optional<std::string> cwd;
    if (cwd_) cwd = checked(cwd_->expand(item, "cwd", no_quote), "cwd");
    std::optional<std::string> input;
    if (stdin_field_) input = stdin_value(item);
    const std::string& program = args.front();
    if (program.empty())
      throw std::invalid_argument("argv[0] \"" + argv_.front().source() + "\" is empty for this item");

    std::vector<char*> argv_ptrs;
    for (std::string& a : args) argv_ptrs.push_back(a.data());
    argv_ptrs.push_back(nullptr);
    std::vector<char*> env_ptrs;
    for (std::string& e : env) env_ptrs.push_back(e.data());
    env_ptrs.push_back(nullptr);

    Pipe out = make_pipe();
    Pipe err = make_pipe();
    Pipe in;
    if (input) in = make_pipe();

    const auto started = Clock::now();
    const pid_t pid = spawn_command(program, argv_ptrs.data(), env_ptrs.data(), input ? in.read.get() : -1,
                                    out.write.get(), err.write.get(), cwd);
    Child child(pid);
    out.write.reset();
    err.write.reset();
    in.read.reset();
    Fd exit_fd(pidfd_open(pid));

    set_nonblocking(out.read.get());
    set_nonblocking(err.read.get());
    if (in.write.open()) set_nonblocking(in.write.get());
    SigpipeBlock sigpipe_block;

    std::string stdout_text, stderr_text;
    bool stdout_truncated = false;
    std::size_t input_written = 0;
    enum class Stop { none, timeout, cancelled } stop = Stop::none;
    bool exited = false, killed = false;
    Clock::time_point drain_deadline{}, kill_at{};
    const bool has_deadline = timeout_ms_ > 0;
    const Clock::time_point deadline = started + std::chrono::milliseconds(timeout_ms_);
    std::vector<char> buffer(64 * 1024);

    const auto read_some = [&](Fd& fd, bool is_stdout) {
      const ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
      if (n == 0) {
        fd.reset();
      } else if (n < 0) {
        if (errno != EAGAIN && errno != EINTR) fd.reset();
      } else if (is_stdout) {
        const std::size_t room = max_stdout_ - std::min(max_stdout_, stdout_text.size());
        const auto got = static_cast<std::size_t>(n);
        stdout_text.append(buffer.data(), std::min(room, got));
        if (got > room) stdout_truncated = true;
      } else {
        stderr_text.append(buffer.data(), static_cast<std::size_t>(n));
        // Trimmed in amortised steps, so a chatty stderr costs neither memory nor quadratic time.
        if (stderr_text.size() > 2 * stderr_tail_ + buffer.size())
          stderr_text.erase(0, stderr_text.size() - stderr_tail_);
      }
    };

    while (true) {
      std::vector<pollfd> fds;
      Fd* watched[3] = {nullptr, nullptr, nullptr};
      const auto watch = [&](Fd& fd, short events, std::size_t slot) {
        if (!fd.open()) return;
        watched[slot] = &fd;
        fds.push_back({fd.get(), events, 0});
      };
      watch(out.read, POLLIN, 0);
      watch(err.read, POLLIN, 1);
      watch(in.write, POLLOUT, 2);
      if (exit_fd.open() && !exited) fds.push_back({exit_fd.get(), POLLIN, 0});

      auto now = Clock::now();
      Clock::duration wait = cancel_poll;
      if (exited) {
        wait = drain_deadline - now;
      } else {
        if (stop == Stop::none && has_deadline) wait = std::min<Clock::duration>(wait, deadline - now);
        if (stop != Stop::none && !killed) wait = std::min<Clock::duration>(wait, kill_at - now);
        if (!exit_fd.open()) wait = std::min<Clock::duration>(wait, std::chrono::milliseconds(10));
      }
      const auto wait_ms = std::chrono::ceil<std::chrono::milliseconds>(
          std::max<Clock::duration>(wait, Clock::duration::zero()));
      const int ready = ::poll(fds.data(), fds.size(), static_cast<int>(wait_ms.count()));
      if (ready < 0 && errno != EINTR) throw_errno("poll", errno);

      if (ready > 0) {
        for (std::size_t k = 0, slot = 0; k < fds.size() && slot < 3; ++slot) {
          if (watched[slot] == nullptr) continue;
          const pollfd& p = fds[k++];
          if (p.revents == 0) continue;
          if (slot == 0) {
            read_some(out.read, true);
          } else if (slot == 1) {
            read_some(err.read, false);
          } else if (p.revents & (POLLERR | POLLHUP)) {
            in.write.reset();  // the command closed its stdin: the rest is not wanted
          } else {
            const std::string& data = *input;
            const ssize_t n = ::write(in.write.get(), data.data() + input_written,
                                      std::min<std::size_t>(data.size() - input_written, 64 * 1024));
            if (n > 0) input_written += static_cast<std::size_t>(n);
            if ((n < 0 && errno != EAGAIN && errno != EINTR) || input_written == data.size())
              in.write.reset();
          }
        }
      }
      if (in.write.open() && input_written == input->size()) in.write.reset();

      now = Clock::now();
      if (!exited && child.has_exited()) {
        exited = true;
        // Whatever the command left running in its group would hold the pipes open and outlive
        // the item; the leader is still unreaped, so the group id cannot have been reused.
        child.signal_group(SIGKILL);
        in.write.reset();
        drain_deadline = now + drain_after_exit;
      }
      if (exited) {
        if (!out.read.open() && !err.read.open()) break;
        if (now >= drain_deadline) break;
        continue;
      }
      if (stop == Stop::none) {
        if (context.cancelled()) {
          stop = Stop::cancelled;
        } else if (has_deadline && now >= deadline) {
          stop = Stop::timeout;
        }
        if (stop != Stop::none) {
          child.signal_group(SIGTERM);
          kill_at = now + kill_grace;
        }
      } else if (!killed && now >= kill_at) {
        child.kill_all();
        killed = true;
      }
    }
    const int status = child.reap();
    const double ms =
        std::round(std::chrono::duration<double, std::milli>(Clock::now() - started).count() * 1000) / 1000;

    if (stderr_text.size() > stderr_tail_) stderr_text.erase(0, stderr_text.size() - stderr_tail_);
    std::string tail = readable_tail(stderr_text);
    std::string with_stderr;
    if (std::string_view trimmed = tail; !trimmed.empty()) {
      while (!trimmed.empty() && (trimmed.back() == '\n' || trimmed.back() == '\r')) trimmed.remove_suffix(1);
      if (!trimmed.empty()) with_stderr = "; stderr: " + std::string(trimmed);
    }
    const std::string who = "'" + program + "'";
    if (stop == Stop::timeout)
      throw std::runtime_error(who + " timed out after " + std::to_string(timeout_ms_) + " ms" + with_stderr);
    if (stop == Stop::cancelled)
      throw std::runtime_error(who + " was killed: the run was stopped" + with_stderr);
    if (WIFSIGNALED(status)) {
      throw std::runtime_error(who + " killed by " + signal_name(WTERMSIG(status)) +
                               (WCOREDUMP(status) ? " (core dumped)" : "") + with_stderr);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      throw std::runtime_error(who + " exited with status " + std::to_string(WEXITSTATUS(status)) +
                               with_stderr);
    }

    coremap::Json result = {{"exit_code", 0},
                            {"stderr_tail", std::move(tail)},
                            {"ms", ms},
                            {"stdout_truncated", stdout_truncated}};
    if (stdout_truncated) stdout_text.resize(stdout_text.size() - cut_tail(stdout_text));
    if (valid_utf8(stdout_text)) {
      result["stdout"] = std::move(stdout_text);
    } else {
      result["stdout_base64"] = base64(stdout_text);
    }
    return result;
  }

 private:
  std::vector<std::string> expand_argv(const coremap::Json& item) const {
    std::vector<std::string> args;
    if (shell_) {
      args = {"/bin/sh", "-c", checked(argv_.front().expand(item, "argv[0]", shell_quote), "argv[0]")};
      return args;
    }
    for (std::size_t i = 0; i < argv_.size(); ++i) {
      const std::string where = "argv[" + std::to_string(i) + "]";
      args.push_back(checked(argv_[i].expand(item, where, no_quote), where));
    }
    return args;
  }

  std::string stdin_value(const coremap::Json& item) const {
    if (!item.is_object())
      throw std::invalid_argument("\"stdin\" names field \"" + *stdin_field_ +
                                  "\", but the item is not an object: " + shown(item));
    const auto it = item.find(*stdin_field_);
    if (it == item.end())
      throw std::invalid_argument("item has no field \"" + *stdin_field_ + "\" for stdin");
    return it->is_string() ? it->get<std::string>() : it->dump();
  }

  // A C string ends at the first NUL: a value holding one would be silently cut.
  static std::string checked(std::string value, const std::string& where) {
    if (value.find('\0') != std::string::npos)
      throw std::invalid_argument(where + " holds a NUL byte for this item");
    return value;
  }

  bool shell_;
  std::int64_t timeout_ms_;
  std::size_t max_stdout_;
  std::size_t stderr_tail_;
  std::vector<Template> argv_;
  std::optional<std::string> stdin_field_;
  std::optional<Template> cwd_;
  std::vector<std::pair<std::string, Template>> env_;
  std::vector<std::string> base_env_;
};

COREMAP_PLUGIN(Exec, "exec", "1.0.0",
               "runs a command per item (argv template with {field}); stdout, stderr tail and exit status")
