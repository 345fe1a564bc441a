// SPDX-License-Identifier: MIT
#include "worker_process.hpp"

#include <dlfcn.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <coremap/error.hpp>
#include <coremap/process_tree.hpp>

#include "build_info.hpp"

extern char** environ;

namespace coremap::detail {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string signal_name(int signal_number) {
  if (const char* abbrev = ::sigabbrev_np(signal_number); abbrev != nullptr) return std::string("SIG") + abbrev;
  return "signal " + std::to_string(signal_number);
}

std::string seconds_text(std::chrono::milliseconds ms) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", static_cast<double>(ms.count()) / 1000.0);
  return text;
}

}  // namespace

fs::path worker_executable() {
  if (const char* env = std::getenv("COREMAP_WORKER"); env != nullptr && *env != '\0') return env;
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&worker_executable), &info) == 0 || info.dli_fname == nullptr) {
    throw PluginError("--isolate: cannot tell where libcoremap was loaded from to find coremap-worker; set COREMAP_WORKER");
  }
  std::error_code ec;
  fs::path lib = fs::canonical(info.dli_fname, ec);
  if (ec) lib = info.dli_fname;
  return (lib.parent_path() / COREMAP_WORKER_FROM_LIB).lexically_normal();
}

WorkerSettings worker_settings(const Plugin& plugin, const Json& resolved_config, const RunOptions& options) {
  if (!plugin.loaded_from_library()) {
    throw UsageError("isolate: plugin '" + std::string(plugin.name()) + "' (" + plugin.path() +
                     ") is not a shared library, so a worker process cannot load it");
  }
  WorkerSettings settings;
  settings.executable = worker_executable();
  std::error_code ec;
  if (!fs::is_regular_file(settings.executable, ec)) {
    throw PluginError("--isolate: the worker executable '" + settings.executable.string() +
                      "' does not exist (install coremap-worker beside libcoremap, or set COREMAP_WORKER)");
  }
  const fs::path path = fs::absolute(plugin.path(), ec);
  settings.plugin_path = ec ? plugin.path() : path.string();
  settings.plugin_name = plugin.name();
  settings.config = resolved_config.dump();
  settings.memory_limit_bytes = options.memory_limit_bytes;
  settings.timeout = options.timeout;
  settings.retries = options.retries;
  return settings;
}

WorkerProcess::WorkerProcess(const WorkerSettings& settings) : settings_(settings) { start(); }

WorkerProcess::~WorkerProcess() {
  if (pid_ < 0) return;
  close();
  // A worker at end of input destroys its instance and exits; one that does not is killed.
  const auto until = Clock::now() + std::chrono::seconds(2);
  int status = 0;
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (Clock::now() >= until) {
      process_tree::kill_tree(pid_);
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  pid_ = -1;
}

void WorkerProcess::close() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void WorkerProcess::start() {
  const std::string where = "--isolate: plugin '" + settings_.plugin_name + "' (" + settings_.plugin_path + ")";
  // One socket for both directions: the engine writes with MSG_NOSIGNAL, so a worker that has
  // died is EPIPE here, never a SIGPIPE that would kill the whole run, and no process-wide
  // signal disposition has to change. CLOEXEC keeps other workers, started concurrently from
  // other threads, from inheriting this worker's channel (which would hide its death).
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    throw PluginError(where + ": socketpair: " + std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_adddup2(&actions, fds[1], STDIN_FILENO);
  ::posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  ::posix_spawnattr_init(&attr);
  // The worker starts with no signal blocked and default dispositions, whatever the spawning
  // thread (a TBB worker) or the application had set.
  sigset_t none;
  sigset_t defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (const int s : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&defaults, s);
  ::posix_spawnattr_setsigmask(&attr, &none);
  ::posix_spawnattr_setsigdefault(&attr, &defaults);
  // A process group of its own (its id is the worker's pid): when the worker dies, what it
  // started and left in its group is killed with one kill(-pid) before it is reaped; and a
  // Ctrl-C at the terminal reaches the engine only, which decides what happens to the items.
  ::posix_spawnattr_setpgroup(&attr, 0);
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);

  const std::string executable = settings_.executable.string();
  const std::string limit = std::to_string(settings_.memory_limit_bytes);
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(executable.c_str()));
  if (settings_.memory_limit_bytes != 0) {
    argv.push_back(const_cast<char*>("--memory-limit"));
    argv.push_back(const_cast<char*>(limit.c_str()));
  }
  const std::string retries = std::to_string(settings_.retries);
  if (settings_.retries != 0) {
    argv.push_back(const_cast<char*>("--retries"));
    argv.push_back(const_cast<char*>(retries.c_str()));
  }
  argv.push_back(const_cast<char*>(settings_.plugin_path.c_str()));
  argv.push_back(nullptr);
  // posix_spawn, not fork: the engine is multithreaded, and glibc's posix_spawn (clone with
  // CLONE_VM | CLONE_VFORK, then exec) copies nothing and runs no atfork handlers.
  pid_t pid = -1;
  const int spawn_error = ::posix_spawn(&pid, executable.c_str(), &actions, &attr, argv.data(), environ);
  ::posix_spawn_file_actions_destroy(&actions);
  ::posix_spawnattr_destroy(&attr);
  ::close(fds[1]);
  if (spawn_error != 0) {
    ::close(fds[0]);
    throw PluginError(where + ": cannot start the worker '" + executable + "': " + std::strerror(spawn_error) +
                      " (set COREMAP_WORKER to its path)");
  }
  pid_ = pid;
  fd_ = fds[0];
  in_ = FrameReader();

  out_.clear();
  out_.begin(FrameKind::setup);
  out_.bytes(settings_.config);
  out_.end();
  // A worker that fails before reading the setup frame (a memory limit too small for its first
  // buffer) makes this send fail, but what it sent before dying is still there to read.
  send_all(out_.data());
  Frame frame{};
  bool saw_out_of_memory = false;
  for (;;) {
    if (receive(frame, Clock::time_point::max(), false) != Wait::frame) break;
    if (frame.kind == FrameKind::ready) return;
    if (frame.kind == FrameKind::out_of_memory) {
      saw_out_of_memory = true;
      continue;
    }
    const std::string message =
        frame.kind == FrameKind::setup_failed ? std::string(frame.payload) : "unexpected reply from the worker";
    kill_and_reap();
    throw PluginError(where + ": the worker could not start the plugin: " + message);
  }
  // A plugin that crashes while loading or constructing would crash every replacement too:
  // this is a setup error, never a respawn loop.
  throw PluginError(where + ": the worker died while starting the plugin: " + reap_and_describe(saw_out_of_memory));
}

bool WorkerProcess::send_all(std::string_view data) noexcept {
  while (!data.empty()) {
    const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

WorkerProcess::Wait WorkerProcess::receive(Frame& frame, Clock::time_point deadline, bool watch_stop) {
  // The stop flag is looked at whenever there is nothing to read, and at least every 50 ms.
  const bool watching = watch_stop && settings_.stop != nullptr;
  for (;;) {
    if (auto next = in_.next()) {
      frame = *next;
      return Wait::frame;
    }
    if (watching && settings_.stop->load(std::memory_order_relaxed)) return Wait::stopped;
    constexpr std::size_t chunk = 64 * 1024;
    const ssize_t n = ::recv(fd_, in_.prepare(chunk), chunk, MSG_DONTWAIT);
    if (n > 0) {
      in_.commit(static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) return Wait::closed;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return Wait::closed;
    long long wait_ms = -1;
    if (deadline != Clock::time_point::max()) {
      wait_ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (wait_ms <= 0) return Wait::timed_out;
      wait_ms = std::min<long long>(wait_ms, 1 << 30);
    }
    if (watching && (wait_ms < 0 || wait_ms > 50)) wait_ms = 50;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait_ms)) < 0 && errno != EINTR) return Wait::closed;
  }
}

std::string WorkerProcess::reap_and_describe(bool saw_out_of_memory) {
  close();
  // The channel closes as the process ends; allow a little time for the exit to complete (or
  // for a worker that closed its channel but lives on, none). Waited for without reaping: see
  // below.
  const auto until = Clock::now() + std::chrono::seconds(2);
  siginfo_t info{};
  bool exited = false;
  while (!(exited = ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                    info.si_pid == pid_) &&
         Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (!exited) process_tree::kill_tree(pid_);
  // The worker kills its descendants on every way out it sees (docs/reliability.md, "No
  // process left behind"); a SIGKILL it cannot see leaves them to this: its process group
  // now, while the unreaped worker keeps its pid (the group's id) from being reused, and the
  // CLI's subreaper for those that left the group.
  ::kill(-pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  if (!exited) {
    pid_ = -1;
    return "the worker closed its channel but did not exit (killed)";
  }
  pid_ = -1;
  std::string what;
  if (WIFSIGNALED(status)) {
    what = "crashed: " + signal_name(WTERMSIG(status));
  } else if (WIFEXITED(status)) {
    what = "worker exited with status " + std::to_string(WEXITSTATUS(status));
  } else {
    what = "worker ended with wait status " + std::to_string(status);
  }
  if (saw_out_of_memory) {
    what = "out of memory (--memory-limit " + format_size(settings_.memory_limit_bytes) + "): " + what;
  }
  return what;
}

void WorkerProcess::kill_and_reap() noexcept {
  close();
  if (pid_ < 0) return;
  // The worker and everything below it (the command an exec item runs, its children, a child
  // that called setsid): stopped top-down, then killed, so none of it survives the worker.
  process_tree::kill_tree(pid_);
  ::kill(-pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

void WorkerProcess::run(const ItemBatch& batch, const std::string& manifest_name, ManifestFormat format,
                        ResultSink& sink) {
  std::size_t next = 0;
  const std::size_t count = batch.items.size();
  // Calls batch.items[next] has had in workers that crashed or timed out running it.
  std::uint32_t crashed_attempts = 0;
  // The item a worker died on: retried in a new worker while --retries allows, else its error.
  auto died = [&](const std::string& what) {
    const RawItem& item = batch.items[next];
    if (++crashed_attempts <= settings_.retries) return;
    sink.on_result(item, ItemOutcome::error_message, manifest_name + ":" + std::to_string(item.line) + ": " + what,
                   crashed_attempts);
    crashed_attempts = 0;
    ++next;
  };
  // Once the run stops: the item in the worker has been cancelled and has until stop_deadline.
  bool stopping = false;
  Clock::time_point stop_deadline{};
  while (next < count) {
    if (pid_ < 0) start();
    out_.clear();
    encode_batch(out_, batch, next, manifest_name, format, crashed_attempts + 1);
    // A worker reads a whole batch before running any of it, so if it dies before taking it
    // all (the send fails), it died running nothing of ours: the receive below sees the end of
    // its channel and blames the first item all the same, so a worker that keeps dying cannot
    // loop forever.
    send_all(out_.data());
    bool alive = true;
    bool saw_out_of_memory = false;
    auto started = Clock::now();
    while (alive && next < count) {
      auto deadline = settings_.timeout.count() > 0 ? started + settings_.timeout : Clock::time_point::max();
      if (stopping) deadline = std::min(deadline, stop_deadline);
      Frame frame{};
      const Wait wait = receive(frame, deadline, !stopping);
      if (wait == Wait::stopped) {
        // Context::cancelled() turns true in the worker: the item may return early (exec
        // sends its command SIGTERM, then SIGKILL); its outcome is still handed on.
        ::kill(pid_, worker_stop_signal());
        stopping = true;
        stop_deadline = Clock::now() + stop_grace;
        continue;
      }
      if (stopping && wait != Wait::frame) break;  // out of grace, or died: no outcome
      if (wait == Wait::timed_out) {
        kill_and_reap();
        died("timed out after " + seconds_text(settings_.timeout) + " s (the worker was killed and replaced)");
        alive = false;
      } else if (wait == Wait::closed) {
        alive = false;
        if (pid_ >= 0) died(reap_and_describe(saw_out_of_memory));
      } else if (frame.kind == FrameKind::out_of_memory) {
        saw_out_of_memory = true;
      } else if (frame.kind == FrameKind::result && !frame.payload.empty()) {
        PayloadReader payload(frame.payload);
        const auto outcome = static_cast<ItemOutcome>(payload.u8());
        sink.on_result(batch.items[next++], outcome, payload.rest(), crashed_attempts + 1);
        crashed_attempts = 0;
        started = Clock::now();
      } else {
        kill_and_reap();
        const RawItem& item = batch.items[next++];
        crashed_attempts = 0;
        sink.on_result(item, ItemOutcome::error_message,
                       manifest_name + ":" + std::to_string(item.line) +
                           ": the worker sent an unexpected frame (it was killed and replaced)",
                       1);
      }
      if (stopping && frame.kind != FrameKind::out_of_memory) break;
    }
    if (stopping) {
      // The rest of the batch gets no outcome; the worker goes with everything it started.
      kill_and_reap();
      return;
    }
  }
}

WorkerPool::WorkerPool(WorkerSettings settings)
    : settings_(std::move(settings)),
      workers_([this] { return std::make_unique<WorkerProcess>(settings_); },
               PerThreadPool<WorkerProcess>::Making::in_parallel) {
  workers_.add();
}

WorkerPool::~WorkerPool() {
  // Every worker is told to finish first, so they exit in parallel; then each is reaped.
  workers_.for_each([](WorkerProcess& worker) { worker.close(); });
  workers_.clear();
}

}  // namespace coremap::detail
