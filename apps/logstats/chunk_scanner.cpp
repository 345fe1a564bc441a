// SPDX-License-Identifier: MIT
#include "chunk_scanner.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <stdexcept>

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <coremap/record.hpp>

namespace logstats {
namespace {

// Reads are this size; a longer line grows the buffer.
constexpr std::size_t read_size = std::size_t{1} << 20;

std::runtime_error os_error(const char* what, int error) {
  return std::runtime_error(std::string(what) + ": " + std::strerror(error));
}

class FileDescriptor {
 public:
  explicit FileDescriptor(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_ < 0) throw os_error("cannot open", errno);
  }
  ~FileDescriptor() { ::close(fd_); }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const noexcept { return fd_; }

 private:
  int fd_;
};

class GzipFile {
 public:
  explicit GzipFile(const std::string& path) {
    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) throw os_error("cannot open", errno != 0 ? errno : ENOMEM);
    gzbuffer(file_, 256 * 1024);
  }
  ~GzipFile() { gzclose_r(file_); }
  GzipFile(const GzipFile&) = delete;
  GzipFile& operator=(const GzipFile&) = delete;
  gzFile get() const noexcept { return file_; }

  [[noreturn]] void fail() const {
    int code = Z_OK;
    const char* message = gzerror(file_, &code);
    if (code == Z_ERRNO) throw os_error("cannot read", errno);
    throw std::runtime_error(std::string("cannot decompress: ") + (message != nullptr ? message : "zlib error"));
  }

 private:
  gzFile file_ = nullptr;
};

// Calls on_line(line, offset) for every line `read` delivers (read(dst, capacity) returns the
// bytes it put in dst, 0 at the end), newline excluded; `offset` is the line's position counted
// from `base`. A last line without a newline is delivered too.
template <class Read, class OnLine>
void for_each_line(std::vector<char>& buffer, std::uint64_t base, Read&& read, OnLine&& on_line) {
  std::size_t have = 0;  // bytes in buffer, all of them one unfinished line
  for (;;) {
    if (buffer.size() - have < read_size / 2) buffer.resize(std::max(buffer.size() * 2, have + read_size));
    const std::size_t got = read(buffer.data() + have, buffer.size() - have);
    if (got == 0) break;
    const char* const data = buffer.data();
    std::size_t start = 0;
    std::size_t scan = have;  // the unfinished line holds no newline: search the new bytes only
    have += got;
    while (const void* found = std::memchr(data + scan, '\n', have - scan)) {
      const auto end = static_cast<std::size_t>(static_cast<const char*>(found) - data);
      on_line(std::string_view(data + start, end - start), base + start);
      start = end + 1;
      scan = start;
    }
    std::memmove(buffer.data(), data + start, have - start);
    have -= start;
    base += start;
  }
  if (have > 0) on_line(std::string_view(buffer.data(), have), base);
}

inline void count(StringCounts& counts, std::string_view key) {
  if (const auto it = counts.find(key); it != counts.end()) {
    ++it->second;
  } else {
    counts.emplace(std::string(key), 1);
  }
}

}  // namespace

std::string json_safe(std::string_view text) {
  const bool ascii = std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  return ascii ? std::string(text) : coremap::escape_invalid_utf8(text);
}

ChunkScanner::ChunkScanner() : buffer_(read_size) {}

ChunkPartial ChunkScanner::scan(const std::string& path, std::uint64_t offset, std::uint64_t length, bool gzip) {
  partial_ = ChunkPartial{};
  if (gzip) {
    scan_gzip(path);
  } else {
    scan_plain(path, offset, length);
  }
  return std::move(partial_);
}

void ChunkScanner::scan_plain(const std::string& path, std::uint64_t offset, std::uint64_t length) {
  const FileDescriptor file(path);
  std::uint64_t position = offset;
  const std::uint64_t end = offset + length;
  const auto read = [&](char* dst, std::size_t capacity) -> std::size_t {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(std::min(capacity, read_size), end - position));
    std::size_t got = 0;
    while (got < want) {
      const ssize_t n = ::pread(file.get(), dst + got, want - got, static_cast<off_t>(position + got));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw os_error("cannot read", errno);
      }
      if (n == 0) throw std::runtime_error("file shrank while being read (it is shorter than when it was listed)");
      got += static_cast<std::size_t>(n);
    }
    position += got;
    return got;
  };
  for_each_line(buffer_, offset, read, [this](std::string_view line, std::uint64_t at) { add_line(line, at); });
}

void ChunkScanner::scan_gzip(const std::string& path) {
  const GzipFile file(path);
  const auto read = [&](char* dst, std::size_t capacity) -> std::size_t {
    const int n = gzread(file.get(), dst, static_cast<unsigned>(std::min<std::size_t>(capacity, INT_MAX)));
    if (n < 0) file.fail();
    return static_cast<std::size_t>(n);
  };
  for_each_line(buffer_, 0, read, [this](std::string_view line, std::uint64_t at) { add_line(line, at); });
  // gzread reports a gzip stream cut short only here: Z_BUF_ERROR after the last bytes.
  int code = Z_OK;
  gzerror(file.get(), &code);
  if (code == Z_BUF_ERROR) throw std::runtime_error("cannot decompress: unexpected end of file (truncated gzip)");
  if (code != Z_OK) file.fail();
}

void ChunkScanner::add_line(std::string_view line, std::uint64_t offset) {
  ChunkPartial& p = partial_;
  ++p.lines;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) return;
  const LineError error = parse_line(line, parsed_);
  if (error != LineError::none) {
    ++p.malformed;
    if (p.examples.size() < max_examples) {
      p.examples.push_back({p.lines, offset, describe(error), std::string(line.substr(0, max_example_bytes))});
    }
    return;
  }
  ++p.requests;
  p.bytes += parsed_.size;
  const std::size_t status_class = parsed_.status / 100u - 1u;
  ++p.status_requests[status_class];
  p.status_bytes[status_class] += parsed_.size;
  count(p.paths, parsed_.path);
  count(p.clients, parsed_.host);
  ++p.hours[parsed_.hour];
  if (parsed_.has_size) ++p.sizes[parsed_.size];
}

}  // namespace logstats
