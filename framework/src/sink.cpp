// SPDX-License-Identifier: MIT
// Sinks: FileSink (FILE.part written with checked write(2)s, fsync'ed and renamed to FILE at
// the end; devices and FIFOs written into directly) and resolve_output.
#include <coremap/sink.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include <coremap/error.hpp>

namespace coremap {
namespace {

std::string describe_mode(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

// Standard output, a device or a FIFO may refuse fsync; only a real failure (a late ENOSPC or
// EIO from a file behind standard output) is an error.
bool sync_stream(int fd) { return ::fsync(fd) == 0 || errno == EINVAL || errno == EROFS || errno == ENOTSUP; }

}  // namespace

Sink::~Sink() = default;

OutputTarget resolve_output(const std::string& path) {
  OutputTarget target;
  target.path = path;
  for (int links = 0;; ++links) {
    struct stat st {};
    if (::lstat(target.path.c_str(), &st) != 0) {
      if (errno != ENOENT) throw OutputError("cannot examine output '" + target.path + "': " + std::strerror(errno));
      target.kind = OutputTarget::Kind::missing;
      target.description = "missing";
      return target;
    }
    if (!S_ISLNK(st.st_mode)) {
      target.description = describe_mode(st.st_mode);
      if (S_ISREG(st.st_mode)) {
        target.kind = OutputTarget::Kind::regular;
      } else if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) {
        target.kind = OutputTarget::Kind::stream;
      } else if (S_ISDIR(st.st_mode)) {
        target.kind = OutputTarget::Kind::directory;
      } else {
        target.kind = OutputTarget::Kind::other;
      }
      return target;
    }
    if (links == 40) throw OutputError("output '" + path + "': too many levels of symbolic links");
    char buffer[PATH_MAX];
    const ssize_t n = ::readlink(target.path.c_str(), buffer, sizeof buffer);
    if (n < 0 || static_cast<std::size_t>(n) == sizeof buffer) {
      throw OutputError("cannot read symbolic link '" + target.path +
                        "': " + std::strerror(n < 0 ? errno : ENAMETOOLONG));
    }
    const std::filesystem::path link(std::string(buffer, static_cast<std::size_t>(n)));
    const std::filesystem::path dir = std::filesystem::path(target.path).parent_path();
    target.path = link.is_absolute() ? link.string() : (dir / link).string();
  }
}

void check_replaceable(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    throw OutputError("cannot examine " + what + " '" + path + "': " + std::strerror(errno));
  }
  if (S_ISREG(st.st_mode)) return;
  throw OutputError(what + " '" + path + "' is " + describe_mode(st.st_mode) +
                    ", not a regular file: coremap never replaces, truncates or removes one; move it away or "
                    "choose another -o");
}

FileSink::FileSink(const std::string& path, Options options)
    : path_(path), options_(options), last_sync_(std::chrono::steady_clock::now()) {
  if (path == "-") {
    fd_ = STDOUT_FILENO;
    return;
  }
  const OutputTarget target = resolve_output(path);
  target_ = target.path;
  switch (target.kind) {
    case OutputTarget::Kind::stream:
      // Written into as is: renaming FILE.part over a device or FIFO would replace it.
      fd_ = ::open(target_.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY);
      if (fd_ < 0) throw OutputError("cannot open output '" + path + "': " + std::strerror(errno));
      return;
    case OutputTarget::Kind::directory:
    case OutputTarget::Kind::other:
      throw OutputError("cannot write output '" + path + "': it is " + target.description +
                        "; give a regular file, a character device or a FIFO");
    case OutputTarget::Kind::missing:
    case OutputTarget::Kind::regular:
      break;
  }
  part_path_ = target_ + ".part";
  check_replaceable(part_path_, "partial output");
  fd_ = ::open(part_path_.c_str(),
               O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (options.resumable ? O_APPEND : O_TRUNC), 0666);
  if (fd_ < 0) {
    throw OutputError("cannot create output '" + part_path_ + "': " + std::strerror(errno));
  }
}

FileSink::~FileSink() {
  if (fd_ == STDOUT_FILENO && path_ == "-") return;
  if (fd_ >= 0) ::close(fd_);
  if (!finished_ && !options_.resumable && !part_path_.empty()) ::unlink(part_path_.c_str());
}

void FileSink::write(std::string_view records) {
  while (!records.empty()) {
    const ssize_t n = ::write(fd_, records.data(), records.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw OutputError("cannot write to " +
                        (path_ == "-" ? std::string("standard output")
                                      : "'" + (part_path_.empty() ? path_ : part_path_) + "'") +
                        ": " + std::strerror(errno));
    }
    records.remove_prefix(static_cast<std::size_t>(n));
  }
  if (options_.sync_interval.count() > 0 && !part_path_.empty()) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_sync_ >= options_.sync_interval) {
      if (::fdatasync(fd_) != 0) throw OutputError("cannot sync '" + part_path_ + "': " + std::strerror(errno));
      last_sync_ = now;
    }
  }
}

std::uint64_t FileSink::sync() {
  if (streams() || fd_ < 0) throw UsageError("FileSink::sync: " + path_ + " has no FILE.part open");
  if (::fdatasync(fd_) != 0) throw OutputError("cannot sync '" + part_path_ + "': " + std::strerror(errno));
  last_sync_ = std::chrono::steady_clock::now();
  struct stat st {};
  if (::fstat(fd_, &st) != 0) throw OutputError("cannot examine '" + part_path_ + "': " + std::strerror(errno));
  return static_cast<std::uint64_t>(st.st_size);
}

std::string FileSink::keep_partial() {
  if (streams()) {
    finish();
    return path_;
  }
  if (finished_) return part_path_;
  if (::fsync(fd_) != 0) throw OutputError("cannot sync '" + part_path_ + "': " + std::strerror(errno));
  const int fd = fd_;
  fd_ = -1;
  finished_ = true;  // keeps the destructor from removing it
  if (::close(fd) != 0) throw OutputError("cannot close '" + part_path_ + "': " + std::strerror(errno));
  return part_path_;
}

void FileSink::finish() {
  if (finished_) return;
  if (streams()) {
    // Standard output may be a file on a full disk: fsync reports a late ENOSPC. Pipes and
    // terminals cannot be synced, which is not an error.
    const std::string where = path_ == "-" ? std::string("standard output") : "'" + path_ + "'";
    if (!sync_stream(fd_)) throw OutputError("cannot write to " + where + ": " + std::strerror(errno));
    finished_ = true;
    if (path_ != "-") {
      const int fd = std::exchange(fd_, -1);
      if (::close(fd) != 0) throw OutputError("cannot close " + where + ": " + std::strerror(errno));
    }
    return;
  }
  if (::fsync(fd_) != 0) throw OutputError("cannot sync '" + part_path_ + "': " + std::strerror(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw OutputError("cannot close '" + part_path_ + "': " + std::strerror(errno));
  // Whatever took FILE's place since the run started, a device or a link is not renamed over;
  // the records stay in FILE.part.
  try {
    check_replaceable(target_, "output");
  } catch (const OutputError& e) {
    finished_ = true;
    throw OutputError(std::string(e.what()) + " (the records are kept in '" + part_path_ + "')");
  }
  if (::rename(part_path_.c_str(), target_.c_str()) != 0) {
    throw OutputError("cannot rename '" + part_path_ + "' to '" + target_ + "': " + std::strerror(errno));
  }
  finished_ = true;
}

}  // namespace coremap
