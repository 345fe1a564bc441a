// SPDX-License-Identifier: MIT
// become_worker(): what a process started by a RunOptions::worker_launcher runs, the set-up
// posix_spawn gives coremap-worker (worker_process.cpp) followed by coremap-worker's main.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <coremap/engine.hpp>

#include "worker_main.hpp"
#include "worker_note.hpp"

namespace coremap {
namespace {

[[noreturn]] void give_up(const char* what) noexcept {
  std::fprintf(stderr, "coremap worker: %s\n", what);
  std::fflush(stderr);
  ::_exit(2);
}

}  // namespace

void become_worker(const WorkerLaunch& launch) noexcept {
  // Its own process group, as posix_spawn's POSIX_SPAWN_SETPGROUP gives coremap-worker.
  ::setpgid(0, 0);
  // Out of the way of the numbers they go to, then into place.
  const int channel = ::fcntl(launch.channel_fd, F_DUPFD_CLOEXEC, 64);
  const int results = ::fcntl(launch.results_fd, F_DUPFD_CLOEXEC, 64);
  const int note = launch.note_fd >= 0 ? ::fcntl(launch.note_fd, F_DUPFD_CLOEXEC, 64) : -1;
  if (channel < 0 || results < 0 || (launch.note_fd >= 0 && note < 0)) give_up("cannot take the channel");
  if (::dup2(channel, STDIN_FILENO) < 0 || ::dup2(results, STDOUT_FILENO) < 0) give_up("cannot take the channel");
  int first_free = STDERR_FILENO + 1;
  if (note >= 0) {
    if (::dup2(note, detail::worker_note_fd) < 0) give_up("cannot take the note page");
    first_free = detail::worker_note_fd + 1;
  }
  // Nothing else of the launching process stays open: a pipe's write end held here would keep
  // its reader from ever seeing its end (exec'ed coremap-worker has only CLOEXEC'ed copies).
  if (::close_range(static_cast<unsigned>(first_free), ~0U, 0) != 0) {
    for (long fd = first_free, end = ::sysconf(_SC_OPEN_MAX); fd < end; ++fd) ::close(static_cast<int>(fd));
  }
  // No signal blocked, every handled one back to its default, as after exec.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int s = 1; s < NSIG; ++s) {
    struct sigaction current {};
    if (::sigaction(s, nullptr, &current) != 0) continue;
    const bool spawn_default = s == SIGPIPE || s == SIGINT || s == SIGTERM || s == SIGHUP || s == SIGCHLD;
    const bool reset = current.sa_handler != SIG_DFL && (current.sa_handler != SIG_IGN || spawn_default);
    if (reset) ::signal(s, SIG_DFL);
  }
  const std::size_t equals = launch.environment_entry.find('=');
  if (equals != std::string::npos) {
    ::setenv(launch.environment_entry.substr(0, equals).c_str(), launch.environment_entry.substr(equals + 1).c_str(), 1);
  }
  std::vector<std::string> arguments = launch.arguments;
  std::vector<char*> argv;
  for (std::string& a : arguments) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int code = detail::worker_main(static_cast<int>(arguments.size()), argv.data());
  std::fflush(nullptr);
  ::_exit(code);
}

}  // namespace coremap
