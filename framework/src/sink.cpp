// SPDX-License-Identifier: MIT
#include <coremap/sink.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <coremap/error.hpp>

namespace coremap {

Sink::~Sink() = default;

FileSink::FileSink(const std::string& path, Options options)
    : path_(path), options_(options), last_sync_(std::chrono::steady_clock::now()) {
  if (path == "-") {
    fd_ = STDOUT_FILENO;
    return;
  }
  part_path_ = path + ".part";
  fd_ = ::open(part_path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (options.resumable ? O_APPEND : O_TRUNC), 0666);
  if (fd_ < 0) {
    throw OutputError("cannot create output '" + part_path_ + "': " + std::strerror(errno));
  }
}

FileSink::~FileSink() {
  if (part_path_.empty()) return;
  if (fd_ >= 0) ::close(fd_);
  if (!finished_ && !options_.resumable) ::unlink(part_path_.c_str());
}

void FileSink::write(std::string_view records) {
  while (!records.empty()) {
    const ssize_t n = ::write(fd_, records.data(), records.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw OutputError("cannot write to " +
                        (part_path_.empty() ? std::string("standard output") : "'" + part_path_ + "'") +
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

std::string FileSink::keep_partial() {
  if (part_path_.empty()) {
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
  if (part_path_.empty()) {
    // Standard output may be a file on a full disk: fsync reports a late ENOSPC. Pipes and
    // terminals cannot be synced, which is not an error.
    if (::fsync(fd_) != 0 && errno != EINVAL && errno != EROFS && errno != ENOTSUP) {
      throw OutputError(std::string("cannot write to standard output: ") + std::strerror(errno));
    }
    finished_ = true;
    return;
  }
  if (::fsync(fd_) != 0) throw OutputError("cannot sync '" + part_path_ + "': " + std::strerror(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw OutputError("cannot close '" + part_path_ + "': " + std::strerror(errno));
  if (::rename(part_path_.c_str(), path_.c_str()) != 0) {
    throw OutputError("cannot rename '" + part_path_ + "' to '" + path_ + "': " + std::strerror(errno));
  }
  finished_ = true;
}

}  // namespace coremap
