// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Helpers for plugins whose items name files: get the item's path with a clear error, and
/// read a file of any size in fixed chunks (memory stays flat), with errors naming the path
/// and the OS reason. Header-only, so a plugin needs no link against libcoremap.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

#include <coremap/plugin.hpp>

namespace coremap {

/// The string field `field` of `item` (default "path"). Throws std::invalid_argument when the
/// item is not an object, lacks the field, the field is not a string, or holds a NUL byte.
inline const std::string& item_path(const Json& item, const char* field = "path") {
  if (!item.is_object()) {
    throw std::invalid_argument(std::string("item is not an object with a \"") + field +
                                "\" field (got " + item.type_name() + ")");
  }
  auto it = item.find(field);
  if (it == item.end()) throw std::invalid_argument(std::string("item has no \"") + field + "\" field");
  if (!it->is_string()) {
    throw std::invalid_argument(std::string("item field \"") + field + "\" is a " +
                                it->type_name() + ", not a string");
  }
  const std::string& path = it->get_ref<const std::string&>();
  if (path.find('\0') != std::string::npos) {
    throw std::invalid_argument(std::string("item field \"") + field + "\" contains a NUL byte");
  }
  return path;
}

/// The same, with the field named by a std::string (a field name taken from the config).
inline const std::string& item_path(const Json& item, const std::string& field) {
  return item_path(item, field.c_str());
}

/// Reads the file at `path` in chunks of at most `buffer.size()` bytes, calling
/// `consume(const char* data, std::size_t size)` for each; returns the total byte count.
/// Throws std::runtime_error("cannot open|read '<path>': <OS error>").
template <class Consume>
std::uint64_t read_file_chunks(const std::string& path, std::span<char> buffer, Consume&& consume) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw std::runtime_error("cannot open '" + path + "': " + std::strerror(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  std::uint64_t total = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n > 0) {
      consume(static_cast<const char*>(buffer.data()), static_cast<std::size_t>(n));
      total += static_cast<std::uint64_t>(n);
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      throw std::runtime_error("cannot read '" + path + "': " + std::strerror(errno));
    }
  }
  return total;
}

}  // namespace coremap
