// SPDX-License-Identifier: MIT
// WorkerProcess, the engine's side of --isolate: starts coremap-worker, sends it batches, reads
// each item's outcome, and turns a dead or timed-out worker into that item's error record
// before starting a replacement (worker_process.hpp).
#include "worker_process.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
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

// A pidfd for the caller's unreaped child `pid` (readable once it has ended), or -1 where the
// kernel has none (before Linux 5.3): the caller then polls waitid.
int open_pidfd(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  return -1;
#endif
}

// The environment entry that marks one worker's tree: every process below it inherits it,
// unless it replaced its environment. "COREMAP_WORKER_TREE=<engine pid>.<worker number>".
constexpr std::string_view tree_variable = "COREMAP_WORKER_TREE=";
std::atomic<std::uint64_t> workers_started{0};

// Whether /proc/<pid>/environ holds `entry` exactly.
bool environment_holds(pid_t pid, std::string_view entry) {
  char path[48];
  std::snprintf(path, sizeof path, "/proc/%d/environ", static_cast<int>(pid));
  std::FILE* file = std::fopen(path, "rbe");
  if (file == nullptr) return false;
  std::string text;
  char buffer[8192];
  std::size_t n = 0;
  while (text.size() < (std::size_t{1} << 20) && (n = std::fread(buffer, 1, sizeof buffer, file)) > 0) text.append(buffer, n);
  std::fclose(file);
  for (std::size_t start = 0; start < text.size();) {
    const std::size_t end = std::min(text.find('\0', start), text.size());
    if (std::string_view(text).substr(start, end - start) == entry) return true;
    start = end + 1;
  }
  return false;
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

WorkerSettings worker_settings(const Stage& stage, const RunOptions& options) {
  const Plugin& plugin = *stage.plugin;
  if (!plugin.loaded_from_library()) {
    throw UsageError("isolate: stage '" + stage.name + "': plugin '" + std::string(plugin.name()) + "' (" +
                     plugin.path() + ") is not a shared library, so a worker process cannot load it");
  }
  if (plugin.reduces() && !plugin.saves_state()) {
    throw UsageError("isolate: stage '" + stage.name + "' reduces, but its plugin " + std::string(plugin.name()) +
                     " cannot save its partial state (save() and load(), docs/plugins.md), so its partial "
                     "states cannot come back from the worker processes; run the stage in process");
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
  settings.config = stage.config.dump();
  settings.memory_limit_bytes = stage.memory_limit_bytes != 0 ? stage.memory_limit_bytes : options.memory_limit_bytes;
  settings.sends_state = plugin.reduces();
  settings.timeout = options.timeout;
  settings.retries = options.retries;
  settings.launch = options.worker_launcher;
  return settings;
}

WorkerProcess::WorkerProcess(const WorkerSettings& settings) : settings_(settings) { start(); }

WorkerProcess::~WorkerProcess() {
  if (pid_ < 0) return;
  close();
  // A worker at end of input destroys its instance and exits; one that does not (a destructor
  // that hangs) is killed with its descendants, and its process group goes too.
  if (!wait_exited(stop_grace)) process_tree::kill_tree(pid_);
  ::kill(-pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  release_note();
}

void WorkerProcess::close() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void WorkerProcess::release_note() noexcept {
  pid_ = -1;
  if (pidfd_ >= 0) ::close(pidfd_);
  pidfd_ = -1;
  if (results_fd_ >= 0) ::close(results_fd_);
  results_fd_ = -1;
  if (note_ != nullptr) ::munmap(note_, sizeof(WorkerNote));
  note_ = nullptr;
}

bool WorkerProcess::wait_exited(std::chrono::milliseconds wait) noexcept {
  const auto until = Clock::now() + wait;
  for (;;) {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid_) {
      return true;
    }
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now()).count();
    if (left <= 0) return false;
    if (pidfd_ >= 0) {
      pollfd p{pidfd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1 << 30)));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
}

void WorkerProcess::start() {
  const std::string where = "--isolate: plugin '" + settings_.plugin_name + "' (" + settings_.plugin_path + ")";
  // A socket for batches: the engine writes with MSG_NOSIGNAL, so a worker that has died is
  // EPIPE here, never a SIGPIPE that would kill the whole run, and no process-wide signal
  // disposition has to change; outcomes come back through a pipe (below), which the engine only
  // reads. CLOEXEC keeps other workers, started concurrently from other threads, from
  // inheriting this worker's channel (which would hide its death).
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    throw PluginError(where + ": socketpair: " + std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_adddup2(&actions, fds[1], STDIN_FILENO);
  // Outcomes come back through a pipe, the worker's standard output (worker_main.cpp).
  int results[2];
  if (::pipe2(results, O_CLOEXEC) != 0) {
    const int error = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    throw PluginError(where + ": pipe: " + std::strerror(error));
  }
  ::posix_spawn_file_actions_adddup2(&actions, results[1], STDOUT_FILENO);
  // The note page (worker_note.hpp): a memfd the worker maps on worker_note_fd and closes. A
  // worker runs without it if the kernel gives none.
  int note_fd = ::memfd_create("coremap-worker-note", MFD_CLOEXEC);
  if (note_fd >= 0 && ::ftruncate(note_fd, sizeof(WorkerNote)) == 0) {
    void* page = ::mmap(nullptr, sizeof(WorkerNote), PROT_READ | PROT_WRITE, MAP_SHARED, note_fd, 0);
    if (page != MAP_FAILED) {
      note_ = new (page) WorkerNote();
      ::posix_spawn_file_actions_adddup2(&actions, note_fd, worker_note_fd);
    }
  }
  ::posix_spawnattr_init(&attr);
  // The worker starts with no signal blocked and default dispositions, whatever the spawning
  // thread (a TBB thread) or the application had set.
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
  const std::string timeout_ms = std::to_string(settings_.timeout.count());
  if (settings_.timeout.count() > 0) {
    argv.push_back(const_cast<char*>("--timeout-ms"));
    argv.push_back(const_cast<char*>(timeout_ms.c_str()));
  }
  const std::string note_fd_text = std::to_string(worker_note_fd);
  if (note_ != nullptr) {
    argv.push_back(const_cast<char*>("--note-fd"));
    argv.push_back(const_cast<char*>(note_fd_text.c_str()));
  }
  argv.push_back(const_cast<char*>(settings_.plugin_path.c_str()));
  argv.push_back(nullptr);
  // The worker's environment: the engine's, and the entry that marks its tree.
  tree_entry_ = std::string(tree_variable) + std::to_string(::getpid()) + "." + std::to_string(++workers_started);
  std::vector<char*> envp;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (!std::string_view(*e).starts_with(tree_variable)) envp.push_back(*e);
  }
  envp.push_back(tree_entry_.data());
  envp.push_back(nullptr);
  // posix_spawn, not fork: the engine is multithreaded, and glibc's posix_spawn (clone with
  // CLONE_VM | CLONE_VFORK, then exec) copies nothing and runs no atfork handlers.
  pid_t pid = -1;
  int spawn_error = 0;
  std::string launch_error;
  if (settings_.launch) {
    // RunOptions::worker_launcher: a child of this process that runs become_worker().
    WorkerLaunch launch;
    launch.arguments.assign(argv.begin(), argv.end() - 1);
    launch.environment_entry = tree_entry_;
    launch.channel_fd = fds[1];
    launch.results_fd = results[1];
    launch.note_fd = note_ != nullptr ? note_fd : -1;
    try {
      pid = settings_.launch(launch);
    } catch (const std::exception& e) {
      launch_error = e.what();
      spawn_error = -1;
    }
  }
  if (!settings_.launch || (spawn_error == 0 && pid < 0)) {  // -1: the launcher declined
    spawn_error = ::posix_spawn(&pid, executable.c_str(), &actions, &attr, argv.data(), envp.data());
  }
  ::posix_spawn_file_actions_destroy(&actions);
  ::posix_spawnattr_destroy(&attr);
  ::close(fds[1]);
  ::close(results[1]);
  if (note_fd >= 0) ::close(note_fd);
  if (spawn_error != 0) {
    ::close(fds[0]);
    ::close(results[0]);
    if (note_ != nullptr) ::munmap(note_, sizeof(WorkerNote));
    note_ = nullptr;
    if (spawn_error < 0) throw PluginError(where + ": cannot start the worker: " + launch_error);
    throw PluginError(where + ": cannot start the worker '" + executable + "': " + std::strerror(spawn_error) +
                      " (set COREMAP_WORKER to its path)");
  }
  pid_ = pid;
  fd_ = fds[0];
  results_fd_ = results[0];
  ::fcntl(results_fd_, F_SETFL, O_NONBLOCK);
  pidfd_ = open_pidfd(pid);
  in_ = FrameReader();

  out_.clear();
  out_.begin(FrameKind::setup);
  out_.u8(settings_.sends_state ? setup_sends_state : 0);
  out_.bytes(settings_.config);
  out_.end();
  // A worker that fails before reading the setup frame (a memory limit too small for its first
  // buffer) makes this send fail, but what it sent before dying is still there to read.
  send_all(out_.data());
  Frame frame{};
  bool saw_out_of_memory = false;
  for (;;) {
    const Wait wait = receive(frame, Clock::time_point::max(), false);
    if (wait == Wait::corrupt) {
      kill_and_reap();
      throw PluginError(where + ": the worker broke the protocol while starting the plugin: " + protocol_error_);
    }
    if (wait != Wait::frame) break;
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
  // Once the worker has ended, what it wrote before is still read (it is all in the socket by
  // then), up to a bound: a process that inherited the channel may go on writing.
  bool exited = false;
  std::size_t after_exit = 0;
  constexpr std::size_t after_exit_limit = std::size_t{16} << 20;
  for (;;) {
    try {
      if (auto next = in_.next()) {
        frame = *next;
        return Wait::frame;
      }
    } catch (const ProtocolError& e) {
      protocol_error_ = e.what();
      return Wait::corrupt;
    }
    if (watching && settings_.stop->load(std::memory_order_relaxed)) return Wait::stopped;
    constexpr std::size_t chunk = 64 * 1024;
    const ssize_t n = exited && after_exit >= after_exit_limit ? -2 : ::read(results_fd_, in_.prepare(chunk), chunk);
    if (n > 0) {
      in_.commit(static_cast<std::size_t>(n));
      if (exited) after_exit += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) return Wait::closed;
    if (n == -1 && errno == EINTR) continue;
    if (n == -1 && errno != EAGAIN && errno != EWOULDBLOCK) return Wait::closed;
    if (exited) return Wait::exited;
    long long wait_ms = -1;
    if (deadline != Clock::time_point::max()) {
      wait_ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (wait_ms <= 0) return Wait::timed_out;
      wait_ms = std::min<long long>(wait_ms, 1 << 30);
    }
    // Without a pidfd the worker's end is looked for every 50 ms, as the stop is.
    if ((watching || pidfd_ < 0) && (wait_ms < 0 || wait_ms > 50)) wait_ms = 50;
    pollfd p[2] = {{results_fd_, POLLIN, 0}, {pidfd_, POLLIN, 0}};
    if (::poll(p, pidfd_ >= 0 ? 2 : 1, static_cast<int>(wait_ms)) < 0 && errno != EINTR) return Wait::closed;
    if (pidfd_ >= 0) {
      exited = p[1].revents != 0;
    } else {
      siginfo_t info{};
      exited = ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid_;
    }
  }
}

std::string WorkerProcess::reap_and_describe(bool saw_out_of_memory) {
  close();
  // The channel closes as the process ends, or the worker ended with a child holding a copy
  // of it; or the worker closed its channel (a plugin closed its descriptors) or called exit()
  // and is still on its way out: allow it stop_grace to end. Waited for without reaping: see
  // below.
  const bool exited = wait_exited(stop_grace);
  if (!exited) process_tree::kill_tree(pid_);
  // The worker kills its descendants on every way out it sees (docs/reliability.md, "No
  // process left behind"), and the children its plugin forks die with it (parent-death
  // signal); a SIGKILL it cannot see leaves the rest to this: its process group now, while the
  // unreaped worker keeps its pid (the group's id) from being reused, and the CLI's subreaper
  // for those that left the group.
  ::kill(-pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  kill_adopted();
  const bool exit_called = note_ != nullptr && note_->exit_called.load(std::memory_order_relaxed) != 0;
  const int exit_status = exit_called ? note_->exit_status.load(std::memory_order_relaxed) : 0;
  const std::string note = read_note(note_);
  release_note();
  if (!exited) {
    if (exit_called) {
      return "the plugin called exit(" + std::to_string(exit_status) + ") and the worker did not end within " +
             seconds_text(stop_grace) + " s (killed)";
    }
    return "worker protocol error: " + (note.empty() ? std::string("the worker closed its channel") : note) +
           " but did not exit within " + seconds_text(stop_grace) + " s (killed)";
  }
  std::string what;
  if (WIFSIGNALED(status)) {
    what = "crashed: " + signal_name(WTERMSIG(status));
  } else if (WIFEXITED(status)) {
    what = "worker exited with status " + std::to_string(WEXITSTATUS(status));
  } else {
    what = "worker ended with wait status " + std::to_string(status);
  }
  if (!note.empty() && !exit_called) what = "worker protocol error: " + note + "; " + what;
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
  kill_adopted();
  release_note();
}

void WorkerProcess::kill_adopted() noexcept {
  // Only a subreaper (the CLI) adopts orphans; elsewhere they went to PID 1, out of reach.
  int subreaper = 0;
  if (::prctl(PR_GET_CHILD_SUBREAPER, &subreaper, 0, 0, 0) != 0 || subreaper == 0) return;
  std::vector<pid_t> adopted;
  process_tree::detail::for_each_child(0, [&](pid_t child) noexcept {
    try {
      if (environment_holds(child, tree_entry_)) adopted.push_back(child);
    } catch (...) {
      // Out of memory: the sweep at the end of the run still finds it.
    }
  });
  for (const pid_t child : adopted) {
    // Our child, unreaped, so its pid is not reused under us; no one else waits for it.
    process_tree::kill_tree(child);
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

void WorkerProcess::run(const ItemBatch& batch, const std::string& manifest_name, ManifestFormat format,
                        OutcomeHandler& handler, std::uint8_t mode) {
  const bool values_out = (mode & batch_values_out) != 0;
  std::size_t next = 0;
  const std::size_t count = batch.items.size();
  // Calls batch.items[next] has had in workers that crashed or timed out running it.
  std::uint32_t crashed_attempts = 0;
  // The attempt batch.items[next] is on in the worker when the worker retried it there (an
  // attempt frame), else 0.
  std::uint32_t worker_attempt = 0;
  // The item a worker died on: retried in a new worker while --retries allows, else its error.
  auto died = [&](const std::string& what) {
    const RawItem& item = batch.items[next];
    crashed_attempts = std::max(crashed_attempts + 1, worker_attempt);
    worker_attempt = 0;
    if (crashed_attempts <= settings_.retries) return;
    if (values_out) {
      handler.on_result(item, ItemOutcome::call_error, what, crashed_attempts);
    } else {
      handler.on_result(item, ItemOutcome::error_message,
                        manifest_name + ":" + std::to_string(item.line) + ": " + what, crashed_attempts);
    }
    crashed_attempts = 0;
    ++next;
  };
  // A frame no worker of ours sends: the stream is not to be trusted any more (a plugin wrote
  // into the channel), so the worker is killed and the item it was running pays for it.
  auto broke_protocol = [&](const std::string& what) {
    kill_and_reap();
    died("worker protocol error: " + what + " (the worker was killed and replaced)");
  };
  // Once the run stops: the item in the worker has been cancelled and has until stop_deadline.
  bool stopping = false;
  Clock::time_point stop_deadline{};
  const bool timed = settings_.timeout.count() > 0;
  while (next < count) {
    if (pid_ < 0) start();
    out_.clear();
    encode_batch(out_, batch, next, manifest_name, format, crashed_attempts + 1, mode);
    // A worker reads a whole batch before running any of it, so if it dies before taking it
    // all (the send fails), it died running nothing of ours: the receive below sees its end
    // and blames the first item all the same, so a worker that keeps dying cannot loop
    // forever.
    send_all(out_.data());
    worker_attempt = 0;
    bool alive = true;
    bool saw_out_of_memory = false;
    auto started = Clock::now();
    // Past the item's --timeout: the worker's Context::timed_out() is true (it keeps the same
    // deadline by its own clock), and the item has stop_grace to return before it is killed.
    bool overtime = false;
    while (alive && next < count) {
      auto deadline = timed ? started + settings_.timeout + (overtime ? stop_grace : Clock::duration::zero())
                            : Clock::time_point::max();
      if (stopping) deadline = std::min(deadline, stop_deadline);
      Frame frame{};
      const Wait wait = receive(frame, deadline, !stopping);
      if (wait == Wait::stopped) {
        // Context::cancelled() turns true in the worker: the item may return early (exec
        // sends its command SIGTERM, then SIGKILL); its outcome is still handed on.
        if (note_ != nullptr) note_->stop.store(true, std::memory_order_relaxed);
        ::kill(pid_, worker_stop_signal());
        stopping = true;
        stop_deadline = Clock::now() + stop_grace;
        continue;
      }
      if (stopping && wait != Wait::frame) break;  // out of grace, or died: no outcome
      if (wait == Wait::timed_out && !overtime) {
        overtime = true;
        continue;
      }
      if (wait == Wait::timed_out) {
        kill_and_reap();
        died("timed out after " + seconds_text(settings_.timeout) + " s (the worker was killed and replaced)");
        alive = false;
      } else if (wait == Wait::closed || wait == Wait::exited) {
        alive = false;
        died(reap_and_describe(saw_out_of_memory));
      } else if (wait == Wait::corrupt) {
        alive = false;
        broke_protocol(protocol_error_);
      } else if (frame.kind == FrameKind::out_of_memory) {
        saw_out_of_memory = true;
      } else if (frame.kind == FrameKind::attempt && frame.payload.size() == 4) {
        // The worker calls the item again (--retries): a new deadline for the new call.
        PayloadReader payload(frame.payload);
        worker_attempt = payload.u32();
        started = Clock::now();
        overtime = false;
        if (stopping) continue;
      } else if (frame.kind == FrameKind::result && !frame.payload.empty() &&
                 static_cast<std::uint8_t>(frame.payload[0]) <= static_cast<std::uint8_t>(ItemOutcome::call_error)) {
        PayloadReader payload(frame.payload);
        const auto outcome = static_cast<ItemOutcome>(payload.u8());
        // The reduction's part of the call (setup_sends_state): 0 none, 1 CBOR, 2 save()'s error.
        std::uint8_t state_kind = 0;
        std::string_view state;
        // Values come back for a call that emitted even without batch_values_out; records never with it.
        bool well_formed = values_out ? outcome != ItemOutcome::ok_record && outcome != ItemOutcome::error_record
                                      : outcome != ItemOutcome::call_error;
        try {
          if (settings_.sends_state) {
            state_kind = payload.u8();
            if (state_kind > 2) well_formed = false;
            if (state_kind != 0) state = payload.text();
          }
        } catch (const ProtocolError&) {
          well_formed = false;
        }
        const std::string_view text = payload.rest();
        const RawItem& item = batch.items[next];
        if (!well_formed) {
          alive = false;
          broke_protocol("a malformed result frame");
          if (stopping) break;
          continue;
        }
        // A record must be this item's: a stream that was written into can carry frames that
        // look right but belong to nobody.
        if (outcome == ItemOutcome::ok_record || outcome == ItemOutcome::error_record) {
          char prefix[48];
          const int length = std::snprintf(prefix, sizeof prefix, "{\"index\":%llu,",
                                           static_cast<unsigned long long>(item.index));
          if (!text.starts_with(std::string_view(prefix, static_cast<std::size_t>(length)))) {
            alive = false;
            broke_protocol("a result that is not item " + std::to_string(item.index) + "'s record");
            if (stopping) break;
            continue;
          }
        }
        if (state_kind != 0) handler.on_state(state_kind == 1, state);
        handler.on_result(item, outcome, text, std::max(crashed_attempts + 1, worker_attempt));
        ++next;
        crashed_attempts = 0;
        worker_attempt = 0;
        const auto now = Clock::now();
        if (timed && now >= started + settings_.timeout && !stopping) {
          // The item returned past its deadline (the worker recorded it as timed out, as in
          // process): what it started may still run below the worker, which is replaced as a
          // killed one would be, its whole tree with it.
          kill_and_reap();
          alive = false;
        }
        started = now;
        overtime = false;
      } else {
        alive = false;
        char kind[8];
        std::snprintf(kind, sizeof kind, "0x%02x", static_cast<unsigned>(frame.kind));
        broke_protocol(frame.kind == FrameKind::result ? std::string("a malformed result frame")
                                                       : "an unexpected frame (kind " + std::string(kind) + ")");
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
