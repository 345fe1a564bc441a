// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Killing a whole tree of processes, for "no process outlives coremap" (docs/reliability.md,
/// "No process left behind"). Linux only: it reads /proc/PID/task/TID/children.
///
/// A process that puts itself in a new session or process group (`setsid`) escapes a
/// process-group kill, and one whose parent exits is re-parented to PID 1, out of reach. The
/// kernel's answer is a *child subreaper* (prctl PR_SET_CHILD_SUBREAPER): orphans below it are
/// re-parented to it instead of PID 1, so it can still find and kill them. coremap uses it this
/// way:
///  - kill_tree(pid): stops (SIGSTOP) the process, then each of its children, recursively, and
///    only then kills them all with SIGKILL. A stopped process cannot fork, so nothing is born
///    behind the walk; killing bottom-up after the stop means no part of the tree runs free.
///  - The coremap CLI and every coremap-worker make themselves subreapers, and on each way out
///    call kill_descendants(): kill_tree() of every child, reap, again until no child is left
///    (grandchildren of a killed child are re-parented to the subreaper and turn up in the
///    next round).
///  - Library users (an embedded Engine) are not made subreapers behind their back: the engine
///    still kills its workers' and exec commands' trees with kill_tree(), which reaches every
///    descendant whose ancestors are still alive; calling become_subreaper() and
///    kill_descendants() is the embedder's choice.
///
/// Every function here is async-signal-safe (open/read/close/kill/waitpid/prctl and plain
/// stack buffers, no allocation), so a signal handler may call them, and header-only, so a
/// plugin (the exec plugin) can use them without linking libcoremap.
///
/// Pids are read from /proc, then signalled. A parent is stopped before its children are read,
/// so a listed child cannot be reaped and its pid reused meanwhile; for the caller's own
/// children (kill_descendants) another thread of the caller may reap one concurrently, but
/// Linux hands out pids cyclically, so a freed pid is not reused until the pid space wraps.
///
/// Thread safety: any thread, any time; kill_descendants() reaps the caller's children, so it
/// belongs where no other thread still waits for its own child (the end of a run, or just
/// before _exit).

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace coremap::process_tree {

/// Makes the calling process a child subreaper: orphaned descendants are re-parented to it
/// instead of PID 1. Process-wide and inherited by nothing (children start without it).
/// Returns false (errno set) when the kernel refuses.
inline bool become_subreaper() noexcept { return ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0; }

namespace detail {

// Deeper trees are killed from the top at that depth; what lies below is re-parented to the
// nearest subreaper and found in kill_descendants()' next round.
constexpr int max_depth = 64;

// "/proc/<pid>/task" (pid > 0) or "/proc/self/task", without snprintf (not async-signal-safe).
inline void task_dir(pid_t pid, char (&path)[40]) noexcept {
  const char* prefix = "/proc/";
  std::size_t n = 0;
  for (const char* p = prefix; *p != '\0'; ++p) path[n++] = *p;
  if (pid > 0) {
    char digits[16];
    std::size_t d = 0;
    for (auto v = static_cast<unsigned long>(pid); v != 0; v /= 10) digits[d++] = static_cast<char>('0' + v % 10);
    while (d > 0) path[n++] = digits[--d];
  } else {
    for (const char* p = "self"; *p != '\0'; ++p) path[n++] = *p;
  }
  for (const char* p = "/task"; *p != '\0'; ++p) path[n++] = *p;
  path[n] = '\0';
}

struct Dirent64 {
  std::uint64_t d_ino;
  std::int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[1];
};

/// Calls fn(child) for every child of `pid` (0: the caller) as /proc lists them, thread by
/// thread (a child belongs to the thread that started it). Returns the number listed.
template <class Fn>
std::size_t for_each_child(pid_t pid, Fn&& fn) noexcept {
  char path[40];
  task_dir(pid, path);
  const int dir = ::open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return 0;
  std::size_t listed = 0;
  alignas(8) char entries[1024];
  for (;;) {
    const long got = ::syscall(SYS_getdents64, dir, entries, sizeof entries);
    if (got <= 0) break;
    for (long offset = 0; offset < got;) {
      const auto* entry = reinterpret_cast<const Dirent64*>(entries + offset);
      offset += entry->d_reclen;
      if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
      char name[48];
      std::size_t n = 0;
      for (const char* p = entry->d_name; *p != '\0' && n < 24; ++p) name[n++] = *p;
      for (const char* p = "/children"; *p != '\0'; ++p) name[n++] = *p;
      name[n] = '\0';
      const int file = ::openat(dir, name, O_RDONLY | O_CLOEXEC);
      if (file < 0) continue;
      char text[256];
      long value = 0;
      bool in_number = false;
      for (;;) {
        const ssize_t r = ::read(file, text, sizeof text);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        for (ssize_t i = 0; i < r; ++i) {
          if (text[i] >= '0' && text[i] <= '9') {
            value = value * 10 + (text[i] - '0');
            in_number = true;
          } else if (in_number) {
            ++listed;
            fn(static_cast<pid_t>(value));
            value = 0;
            in_number = false;
          }
        }
      }
      if (in_number) {
        ++listed;
        fn(static_cast<pid_t>(value));
      }
      ::close(file);
    }
  }
  ::close(dir);
  return listed;
}

inline void stop_and_kill(pid_t pid, int depth) noexcept {
  if (pid <= 1) return;
  ::kill(pid, SIGSTOP);
  if (depth < max_depth) for_each_child(pid, [depth](pid_t child) { stop_and_kill(child, depth + 1); });
  ::kill(pid, SIGKILL);
}

}  // namespace detail

/// Kills `pid` and every descendant still below it (SIGSTOP top-down, then SIGKILL bottom-up).
/// `pid` must be the caller's unreaped child (or otherwise known not to be reused): it is not
/// reaped here. Descendants are left as zombies for their parents or their subreaper.
inline void kill_tree(pid_t pid) noexcept { detail::stop_and_kill(pid, 0); }

/// Kills every descendant of the calling process and reaps its children, round after round
/// until it has none (or `max_rounds` rounds passed: children that something keeps starting).
/// Complete only in a child subreaper; elsewhere a descendant whose parent already exited is
/// PID 1's and out of reach. Returns the number of children reaped.
inline std::size_t kill_descendants(int max_rounds = 1000) noexcept {
  std::size_t reaped = 0;
  for (int round = 0; round < max_rounds; ++round) {
    const std::size_t listed = detail::for_each_child(0, [](pid_t child) { kill_tree(child); });
    if (listed == 0) break;
    detail::for_each_child(0, [&reaped](pid_t child) {
      int status = 0;
      pid_t r = 0;
      while ((r = ::waitpid(child, &status, __WALL)) < 0 && errno == EINTR) {
      }
      if (r == child) ++reaped;
    });
  }
  return reaped;
}

}  // namespace coremap::process_tree
