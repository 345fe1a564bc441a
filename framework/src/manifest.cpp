// SPDX-License-Identifier: MIT
// ManifestReader: cuts a manifest (JSON Lines, a JSON array or a list of paths; a file, FIFO
// or standard input) into items without parsing them, each with its index and line, and the
// format detection and errors that name the manifest's line.
#include <coremap/manifest.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <coremap/error.hpp>

#include "json_nesting.hpp"

namespace coremap {
namespace {

// One read(2) asks for this much; the buffer only grows past it for a longer item.
constexpr std::size_t read_chunk = std::size_t{1} << 20;
// A manifest that is a pipe, FIFO, socket or terminal is waited on in slices this long, looking
// at the stop check (set_stop_check) between them.
constexpr int wait_slice_ms = 50;

constexpr bool is_blank(char c) noexcept { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool all_blank(std::string_view text) noexcept {
  return std::all_of(text.begin(), text.end(), [](char c) { return is_blank(c); });
}

std::string lower_extension(const std::string& path) {
  const auto slash = path.find_last_of('/');
  const auto dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return {};
  std::string ext = path.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

std::string describe_byte(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f) return std::string("'") + c + "'";
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02X", u);
  return std::string("byte ") + hex;
}

}  // namespace

std::string_view to_string(ManifestFormat format) noexcept {
  switch (format) {
    case ManifestFormat::automatic: return "auto";
    case ManifestFormat::jsonl: return "jsonl";
    case ManifestFormat::json_array: return "json";
    case ManifestFormat::lines: return "lines";
  }
  return "?";
}

ManifestFormat parse_manifest_format(std::string_view name) {
  if (name == "auto") return ManifestFormat::automatic;
  if (name == "jsonl" || name == "ndjson") return ManifestFormat::jsonl;
  if (name == "json" || name == "array") return ManifestFormat::json_array;
  if (name == "lines" || name == "list" || name == "paths") return ManifestFormat::lines;
  throw UsageError("unknown manifest format '" + std::string(name) +
                   "' (expected auto, jsonl, json or lines)");
}

ManifestReader::ManifestReader(const std::string& path, ManifestFormat format) {
  if (path == "-") {
    name_ = "<stdin>";
    fd_ = STDIN_FILENO;
  } else {
    name_ = path;
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw ManifestError("cannot open manifest '" + path + "': " + std::strerror(errno));
    owns_fd_ = true;
  }
  struct stat st {};
  if (::fstat(fd_, &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      if (owns_fd_) ::close(fd_);
      throw ManifestError("manifest '" + name_ + "' is a directory, not a file");
    }
    if (S_ISREG(st.st_mode)) size_ = static_cast<std::uint64_t>(st.st_size);
    // Reading a regular file (or a block device) never waits for a writer.
    stream_ = !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode);
  }
  buffer_.resize(read_chunk);
  try {
    while (end_ - begin_ < 3 && fill() == Fill::data) {
    }
    if (end_ - begin_ >= 3 && std::memcmp(buffer_.data() + begin_, "\xEF\xBB\xBF", 3) == 0) {
      begin_ += 3;
      consumed_ += 3;
    }
    detect_format(path, format);
  } catch (...) {
    if (owns_fd_) ::close(fd_);
    throw;
  }
}

BatchSource::~BatchSource() = default;

ManifestReader::~ManifestReader() {
  if (owns_fd_) ::close(fd_);
}

void ManifestReader::set_stop_check(std::function<bool()> stopped) { stopped_ = std::move(stopped); }

// Waits until the stream has input (true) or, in slices, until it has none right now
// (`patient` false) or the stop check says so (false).
bool ManifestReader::wait_readable(bool patient) {
  for (;;) {
    pollfd p{fd_, POLLIN, 0};
    const int timeout = !patient ? 0 : (stopped_ ? wait_slice_ms : -1);
    const int ready = ::poll(&p, 1, timeout);
    if (ready > 0) return true;  // data, end of file or an error: read() tells which
    if (ready < 0 && errno != EINTR) {
      throw ManifestError("cannot read manifest '" + name_ + "': poll: " + std::strerror(errno));
    }
    if (ready == 0 && !patient) return false;
    if (stopped_ && stopped_()) return false;
  }
}

ManifestReader::Fill ManifestReader::fill() {
  if (eof_) return Fill::eof;
  if (stream_ && !wait_readable(!hurry_)) return Fill::later;
  // Offsets the cutters hold are relative to begin_, so compacting keeps them valid.
  if (begin_ > 0) {
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (end_ == buffer_.size()) buffer_.resize(buffer_.size() * 2);
  for (;;) {
    const ssize_t n = ::read(fd_, buffer_.data() + end_, buffer_.size() - end_);
    if (n > 0) {
      end_ += static_cast<std::size_t>(n);
      return Fill::data;
    }
    if (n == 0) {
      eof_ = true;
      return Fill::eof;
    }
    // A descriptor another process made non-blocking (a shared standard input).
    if (errno == EAGAIN && stream_) {
      if (!wait_readable(!hurry_)) return Fill::later;
      continue;
    }
    if (errno != EINTR) {
      throw ManifestError("cannot read manifest '" + name_ + "': " + std::strerror(errno));
    }
  }
}

void ManifestReader::detect_format(const std::string& path, ManifestFormat requested) {
  // Peek at the first non-blank byte without consuming anything.
  std::size_t pos = 0;
  char first = '\0';
  std::uint64_t first_line = line_;
  for (;;) {
    if (begin_ + pos == end_ && fill() != Fill::data) break;
    const char c = buffer_[begin_ + pos];
    if (!is_blank(c)) {
      first = c;
      break;
    }
    if (c == '\n') ++first_line;
    ++pos;
  }

  format_ = requested;
  if (format_ == ManifestFormat::automatic) {
    const std::string ext = path == "-" ? std::string() : lower_extension(path);
    if (ext == "jsonl" || ext == "ndjson") {
      format_ = ManifestFormat::jsonl;
    } else if (ext == "txt" || ext == "list" || ext == "lst" || ext == "paths") {
      format_ = ManifestFormat::lines;
      if (first == '{' || first == '[') {
        format_hint_ = name_ + " is read as a list of paths (one per line) because its name ends in ." + ext +
                       ", but line " + std::to_string(first_line) + " starts with '" + first +
                       "': if its lines are JSON items, add --format jsonl (or --format json for one array)";
      }
    } else if (first == '[') {
      format_ = ManifestFormat::json_array;
    } else if (first == '{' || ext == "json") {
      format_ = ManifestFormat::jsonl;
    } else {
      format_ = ManifestFormat::lines;
    }
  }
  if (format_ == ManifestFormat::json_array) {
    if (first == '\0') {
      array_state_ = ArrayState::closed;  // an empty file holds no items in every format
    } else if (first != '[') {
      throw ManifestError(name_ + ":" + std::to_string(first_line) +
                          ": expected '[' to start a JSON array, found " + describe_byte(first) +
                          " (use --format jsonl or --format lines for other manifests)");
    }
  }
}

void ManifestReader::add_item(ItemBatch& batch, std::string_view text, std::uint64_t line,
                              bool malformed) {
  batch.items.push_back(RawItem{next_index_++, line, batch.bytes.size(), text.size(), malformed});
  batch.bytes.append(text);
}

bool ManifestReader::next_batch(ItemBatch& batch, std::size_t max_items, std::size_t max_bytes) {
  batch.clear();
  while (batch.items.size() < std::max<std::size_t>(max_items, 1) &&
         (batch.items.empty() || batch.bytes.size() < max_bytes)) {
    // Holding items, a stream is not waited on: what arrived is handed on now (`tail -f` feeds
    // records as lines come). With none, it is waited on until input comes or the stop check
    // says to give up.
    hurry_ = !batch.items.empty();
    const bool got = format_ == ManifestFormat::json_array ? cut_array_element(batch) : cut_line(batch);
    if (!got) break;
  }
  hurry_ = false;
  return !batch.items.empty();
}

bool ManifestReader::cut_line(ItemBatch& batch) {
  for (;;) {
    std::size_t scanned = 0;
    std::size_t length = 0;
    bool newline = false;
    for (;;) {
      const char* start = buffer_.data() + begin_;
      const void* hit = std::memchr(start + scanned, '\n', end_ - begin_ - scanned);
      if (hit != nullptr) {
        length = static_cast<std::size_t>(static_cast<const char*>(hit) - start);
        newline = true;
        break;
      }
      scanned = end_ - begin_;
      const Fill got = fill();
      if (got == Fill::later) return false;  // the line stays unconsumed until the rest comes
      if (got == Fill::eof) {
        if (end_ == begin_) return false;
        length = end_ - begin_;
        break;
      }
    }
    std::string_view text(buffer_.data() + begin_, length);
    const std::uint64_t line = line_++;
    const std::size_t used = length + (newline ? 1 : 0);
    begin_ += used;
    consumed_ += used;
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (all_blank(text)) continue;
    add_item(batch, text, line, false);
    return true;
  }
}

ManifestReader::Fill ManifestReader::skip_blank() {
  for (;;) {
    if (begin_ == end_) {
      if (const Fill got = fill(); got != Fill::data) return got;
    }
    const char c = buffer_[begin_];
    if (!is_blank(c)) return Fill::data;
    if (c == '\n') ++line_;
    ++begin_;
    ++consumed_;
  }
}

bool ManifestReader::cut_array_element(ItemBatch& batch) {
  bool after_comma = false;
  for (;;) {
    switch (array_state_) {
      case ArrayState::failed:
        return false;
      case ArrayState::closed:
        if (skip_blank() != Fill::data) return false;
        add_item(batch,
                 "unexpected " + describe_byte(buffer_[begin_]) +
                     " after the closing ']' of the JSON array",
                 line_, true);
        array_state_ = ArrayState::failed;
        return true;
      case ArrayState::before_open:
        if (skip_blank() == Fill::later) return false;  // detect_format guaranteed a '[' follows
        ++begin_;
        ++consumed_;
        array_state_ = ArrayState::expect_element;
        continue;
      case ArrayState::after_element: {
        if (const Fill got = skip_blank(); got != Fill::data) {
          if (got == Fill::later) return false;
          break;
        }
        const char c = buffer_[begin_];
        if (c == ',' || c == ']') {
          ++begin_;
          ++consumed_;
          array_state_ = c == ',' ? ArrayState::expect_element : ArrayState::closed;
          after_comma = c == ',';
          continue;
        }
        add_item(batch, "expected ',' or ']' after an array element, found " + describe_byte(c),
                 line_, true);
        array_state_ = ArrayState::failed;
        return true;
      }
      case ArrayState::expect_element: {
        if (const Fill got = skip_blank(); got != Fill::data) {
          if (got == Fill::later) return false;
          break;
        }
        if (buffer_[begin_] == ']') {
          ++begin_;
          ++consumed_;
          array_state_ = ArrayState::closed;
          if (after_comma) {
            add_item(batch, "expected an element after ',', found ']'", line_, true);
            return true;
          }
          continue;
        }
        // Find where the element ends: a ',' or ']' outside strings at nesting depth 0.
        const std::uint64_t start_line = line_;
        std::size_t pos = 0;
        detail::JsonNesting nesting;
        bool complete = false;
        while (!complete) {
          if (begin_ + pos == end_) {
            const Fill got = fill();
            if (got == Fill::later) {
              line_ = start_line;  // the element is cut again from its start when the rest comes
              return false;
            }
            if (got == Fill::eof) break;
          }
          const char c = buffer_[begin_ + pos];
          if (nesting.feed(c) == detail::JsonByte::end) {
            complete = true;
            continue;
          }
          if (c == '\n') ++line_;
          ++pos;
        }
        add_item(batch, std::string_view(buffer_.data() + begin_, pos), start_line, false);
        begin_ += pos;
        consumed_ += pos;
        // A truncated element is handed on as it is: parsing it reports what is missing.
        array_state_ = complete ? ArrayState::after_element : ArrayState::failed;
        return true;
      }
    }
    // End of input inside the array.
    add_item(batch, "unexpected end of file: missing ']' to close the JSON array", line_, true);
    array_state_ = ArrayState::failed;
    return true;
  }
}

}  // namespace coremap
