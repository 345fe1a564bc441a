// SPDX-License-Identifier: MIT
// coremap/process_tree.hpp: kill_tree() reaches a descendant that ignores SIGTERM and left the
// process group (a group kill misses it); kill_descendants() in a subreaper reaches an
// orphan too, and without one does not (as documented). Oracle: the kernel, through pidfds
// opened on the exact processes, which become readable when the process exits.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include <gtest/gtest.h>

#include <coremap/process_tree.hpp>

namespace {

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

bool exits_within(int pidfd, int ms) {
  pollfd p{pidfd, POLLIN, 0};
  int ready = 0;
  while ((ready = ::poll(&p, 1, ms)) < 0 && errno == EINTR) {
  }
  return ready == 1;
}

void write_pid(int fd) {
  const pid_t self = ::getpid();
  [[maybe_unused]] const auto n = ::write(fd, &self, sizeof self);
}

pid_t read_pid(int fd) {
  pid_t pid = 0;
  ssize_t got = 0;
  while ((got = ::read(fd, &pid, sizeof pid)) < 0 && errno == EINTR) {
  }
  return got == static_cast<ssize_t>(sizeof pid) ? pid : -1;
}

// In a forked child (the test binary may be multithreaded): async-signal-safe calls only.
// A new session, SIGTERM ignored, its pid written to `fd`, then it waits to be killed.
[[noreturn]] void stray(int fd) {
  ::setsid();
  ::signal(SIGTERM, SIG_IGN);
  write_pid(fd);
  for (;;) ::pause();
}

struct Pipe {
  int fds[2] = {-1, -1};
  Pipe() { EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0); }
  ~Pipe() {
    for (const int fd : fds)
      if (fd >= 0) ::close(fd);
  }
};

}  // namespace

TEST(ProcessTreeTest, KillTreeReachesADescendantThatLeftTheGroupAndIgnoresSigterm) {
  Pipe pids;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::setpgid(0, 0);  // like an exec command: its own group, which the grandchild then leaves
    ::signal(SIGTERM, SIG_IGN);
    if (::fork() == 0) stray(pids.fds[1]);
    for (;;) ::pause();
  }
  const pid_t grandchild = read_pid(pids.fds[0]);
  ASSERT_GT(grandchild, 0);
  const int child_fd = pidfd_open(child);
  const int grandchild_fd = pidfd_open(grandchild);
  ASSERT_GE(child_fd, 0);
  ASSERT_GE(grandchild_fd, 0);
  coremap::process_tree::kill_tree(child);
  EXPECT_TRUE(exits_within(child_fd, 10000));
  EXPECT_TRUE(exits_within(grandchild_fd, 10000));
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  ::syscall(SYS_pidfd_send_signal, grandchild_fd, SIGKILL, nullptr, 0);  // only if the test failed
  ::close(child_fd);
  ::close(grandchild_fd);
}

// An "application" process (forked, so this test binary is not made a subreaper) starts a child
// that starts a stray and exits, orphaning it; on a byte from the test it calls
// kill_descendants() and exits with the number of children it reaped.
void orphan_then_sweep(bool subreaper, pid_t& app, pid_t& orphan, int& go_fd) {
  Pipe pids, go;
  app = ::fork();
  ASSERT_GE(app, 0);
  if (app == 0) {
    if (subreaper && !coremap::process_tree::become_subreaper()) ::_exit(100);
    const pid_t middle = ::fork();
    if (middle == 0) {
      if (::fork() == 0) stray(pids.fds[1]);
      ::_exit(0);
    }
    int status = 0;
    ::waitpid(middle, &status, 0);
    char byte;
    while (::read(go.fds[0], &byte, 1) < 0 && errno == EINTR) {
    }
    ::_exit(static_cast<int>(coremap::process_tree::kill_descendants()));
  }
  orphan = read_pid(pids.fds[0]);
  go_fd = ::dup(go.fds[1]);
}

TEST(ProcessTreeTest, KillDescendantsInASubreaperReachesOrphans) {
  pid_t app = -1, orphan = -1;
  int go = -1;
  orphan_then_sweep(true, app, orphan, go);
  ASSERT_GT(orphan, 0);
  const int orphan_fd = pidfd_open(orphan);
  ASSERT_GE(orphan_fd, 0);
  ASSERT_EQ(::write(go, "x", 1), 1);
  EXPECT_TRUE(exits_within(orphan_fd, 10000));
  int status = 0;
  ASSERT_EQ(::waitpid(app, &status, 0), app);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1) << "the orphan was the application's one child left";
  ::syscall(SYS_pidfd_send_signal, orphan_fd, SIGKILL, nullptr, 0);
  ::close(orphan_fd);
  ::close(go);
}

TEST(ProcessTreeTest, WithoutASubreaperAnOrphanIsOutOfReach) {
  pid_t app = -1, orphan = -1;
  int go = -1;
  orphan_then_sweep(false, app, orphan, go);
  ASSERT_GT(orphan, 0);
  const int orphan_fd = pidfd_open(orphan);
  ASSERT_GE(orphan_fd, 0);
  ASSERT_EQ(::write(go, "x", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(app, &status, 0), app);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_FALSE(exits_within(orphan_fd, 200)) << "an orphan of a non-subreaper is PID 1's";
  ::syscall(SYS_pidfd_send_signal, orphan_fd, SIGKILL, nullptr, 0);
  EXPECT_TRUE(exits_within(orphan_fd, 10000));
  ::close(orphan_fd);
  ::close(go);
}
