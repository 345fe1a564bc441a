// SPDX-License-Identifier: MIT
#include "log_files.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace logstats {
namespace {

namespace fs = std::filesystem;

std::string os_message(int error) { return std::strerror(error); }

class FileDescriptor {
 public:
  explicit FileDescriptor(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const noexcept { return fd_; }

 private:
  int fd_;
};

// Reads up to `size` bytes at `offset`; -1 with errno on failure.
ssize_t read_at(int fd, char* dst, std::size_t size, std::uint64_t offset) {
  for (;;) {
    const ssize_t n = ::pread(fd, dst, size, static_cast<off_t>(offset));
    if (n >= 0 || errno != EINTR) return n;
  }
}

// Position just past the first newline at or after `from`, or `size` when there is none.
// Throws std::system_error when reading fails.
std::uint64_t line_end_after(int fd, std::uint64_t from, std::uint64_t size) {
  char window[64 * 1024];
  std::uint64_t position = from;
  while (position < size) {
    const ssize_t n = read_at(fd, window, static_cast<std::size_t>(std::min<std::uint64_t>(sizeof window, size - position)), position);
    if (n < 0) throw std::system_error(errno, std::generic_category());
    if (n == 0) return position;  // shorter than fstat said: the chunk ends where the file does
    if (const void* newline = std::memchr(window, '\n', static_cast<std::size_t>(n))) {
      return position + static_cast<std::uint64_t>(static_cast<const char*>(newline) - window) + 1;
    }
    position += static_cast<std::uint64_t>(n);
  }
  return size;
}

// Opens `file.path`, fills size and gzip, and appends its chunks; or sets file.error.
void cut_file(LogFile& file, std::size_t index, std::uint64_t chunk_bytes, std::vector<Chunk>& chunks) {
  const FileDescriptor fd(file.path);
  if (fd.get() < 0) {
    file.error = "cannot open: " + os_message(errno);
    return;
  }
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) {
    file.error = "cannot stat: " + os_message(errno);
    return;
  }
  file.size = static_cast<std::uint64_t>(info.st_size);
  unsigned char magic[2] = {0, 0};
  const ssize_t n = read_at(fd.get(), reinterpret_cast<char*>(magic), 2, 0);
  if (n < 0) {
    file.error = "cannot read: " + os_message(errno);
    return;
  }
  file.gzip = n == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
  if (file.size == 0) return;
  if (file.gzip) {
    chunks.push_back({index, 0, file.size});
    return;
  }
  std::vector<Chunk> cut;
  try {
    for (std::uint64_t start = 0; start < file.size;) {
      const std::uint64_t end =
          chunk_bytes >= file.size - start ? file.size : line_end_after(fd.get(), start + chunk_bytes - 1, file.size);
      cut.push_back({index, start, end - start});
      start = end;
    }
  } catch (const std::system_error& e) {
    file.error = "cannot read: " + os_message(e.code().value());
    return;
  }
  chunks.insert(chunks.end(), cut.begin(), cut.end());
}

// Appends the regular files under `dir` to `out` and unreadable subdirectories as entries with
// an error. `top` is the directory named on the command line: failing to read it is a setup error.
void walk(const fs::path& dir, bool top, std::vector<LogFile>& out) {
  std::error_code error;
  fs::directory_iterator it(dir, error);
  const fs::directory_iterator end;
  for (; !error && it != end; it.increment(error)) {
    std::error_code ignored;
    const fs::file_status link = it->symlink_status(ignored);
    if (fs::is_directory(link)) {
      walk(it->path(), false, out);
    } else if (fs::is_regular_file(it->status(ignored))) {  // a symbolic link to a file counts
      out.push_back({it->path().string(), 0, false, {}});
    }
  }
  if (error) {
    if (top) throw SetupError(dir.string() + ": cannot read directory: " + error.message());
    out.push_back({dir.string(), 0, false, "cannot read directory: " + error.message()});
  }
}

}  // namespace

Plan plan_chunks(const std::vector<std::string>& paths, std::uint64_t chunk_bytes) {
  chunk_bytes = std::max<std::uint64_t>(chunk_bytes, 1);
  Plan plan;
  for (const std::string& path : paths) {
    std::error_code error;
    const fs::file_status status = fs::status(path, error);
    if (error || !fs::exists(status)) {
      throw SetupError(path + ": " + (error ? error.message() : "No such file or directory"));
    }
    if (fs::is_directory(status)) {
      std::vector<LogFile> found;
      walk(path, true, found);
      std::sort(found.begin(), found.end(), [](const LogFile& a, const LogFile& b) { return a.path < b.path; });
      plan.files.insert(plan.files.end(), std::make_move_iterator(found.begin()), std::make_move_iterator(found.end()));
    } else if (fs::is_regular_file(status)) {
      plan.files.push_back({path, 0, false, {}});
    } else {
      throw SetupError(path + ": not a regular file or a directory");
    }
  }
  for (std::size_t i = 0; i < plan.files.size(); ++i) {
    if (plan.files[i].error.empty()) cut_file(plan.files[i], i, chunk_bytes, plan.chunks);
  }
  return plan;
}

}  // namespace logstats
