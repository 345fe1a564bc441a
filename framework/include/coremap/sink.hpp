// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Where records go. The engine hands a sink whole runs of records (JSON Lines text) from one
/// thread at a time, in index order unless the run is unordered.

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include <coremap/export.hpp>

namespace coremap {

/// Receives the JSON Lines text of finished records.
///
/// Thread safety: the engine never calls write() from two threads at once.
class COREMAP_EXPORT Sink {
 public:
  virtual ~Sink();
  /// Takes one or more complete records. Throws OutputError when they cannot be written.
  virtual void write(std::string_view records) = 0;
  /// Makes everything written durable and visible; called once after a run's last write.
  virtual void finish() {}
};

/// What an output path names once symbolic links are followed.
struct OutputTarget {
  enum class Kind {
    missing,    ///< nothing there yet: it is created
    regular,    ///< a regular file: written as FILE.part, renamed over it at the end
    stream,     ///< a character device or a FIFO: records are written straight into it
    directory,  ///< refused
    other,      ///< a block device or a socket: refused
  };
  /// The path records go to: `path` itself, or the end of its chain of symbolic links (so a
  /// link given as the output stays a link and the file it points at is written).
  std::string path;
  Kind kind = Kind::missing;
  /// "a regular file", "a character device", "a FIFO", ..., for messages.
  std::string description;
};

/// Follows `path`'s symbolic links (at most 40) and says what is there. Throws OutputError
/// when a link cannot be read or the chain loops.
COREMAP_EXPORT OutputTarget resolve_output(const std::string& path);

/// Throws OutputError ("'PATH' (WHAT) is a character device, not a regular file: ...") when
/// `path` exists and is not a regular file; a symbolic link counts as not regular. coremap
/// calls it before it creates, truncates, renames over or removes any file of its own
/// (FILE.part, FILE.journal, ...), so it never replaces a device, a FIFO, a link or a directory.
COREMAP_EXPORT void check_replaceable(const std::string& path, const std::string& what);

/// Writes records to a file or to standard output. A file is written as FILE.part and renamed
/// to FILE by finish() after an fsync, so FILE only ever holds a finished run; a sink destroyed
/// without finish() removes FILE.part. Every failed write(2), fsync, close or rename throws
/// OutputError: a run that could not write its results never looks like a success.
///
/// FILE is first resolved with resolve_output(): a symbolic link is written through (FILE.part
/// sits next to the file it points at, and the link stays); a character device or a FIFO is
/// written straight into, with no FILE.part and nothing renamed, unlinked or replaced; a
/// directory, block device or socket is refused with an OutputError.
class COREMAP_EXPORT FileSink final : public Sink {
 public:
  struct Options {
    /// Append to an existing FILE.part instead of starting it afresh, and keep FILE.part when
    /// destroyed without finish(): it is then the record of an unfinished run (ResumableOutput).
    bool resumable = false;
    /// fdatasync FILE.part when a write comes this long after the last sync; 0: only at the end.
    std::chrono::milliseconds sync_interval{0};
  };

  /// `path` "-" is standard output. Throws OutputError when FILE.part cannot be created (or
  /// exists and is not a regular file), or `path` cannot be written (see above).
  explicit FileSink(const std::string& path) : FileSink(path, Options{}) {}
  FileSink(const std::string& path, Options options);
  ~FileSink() override;
  FileSink(const FileSink&) = delete;
  FileSink& operator=(const FileSink&) = delete;

  void write(std::string_view records) override;
  void finish() override;

  /// Makes every record written so far durable (fdatasync of FILE.part) and returns how many
  /// bytes FILE.part holds; a checkpoint (ResumableOutput::checkpoint) names that prefix.
  /// Throws OutputError; UsageError when the sink streams (no FILE.part).
  std::uint64_t sync();

  /// For a run that stopped before its end (an interrupt): syncs and closes FILE.part and
  /// leaves it in place, so what was written is kept but FILE never looks complete. Returns
  /// the path kept ("-" for standard output, which is only flushed).
  std::string keep_partial();

  /// The file being written ("-" for standard output), for messages.
  const std::string& path() const noexcept { return path_; }

  /// True when records go straight into `path` (standard output, a device, a FIFO): there is
  /// no FILE.part, and nothing of an interrupted run is kept apart from what was written.
  bool streams() const noexcept { return part_path_.empty(); }

 private:
  std::string path_;
  std::string target_;     // path_ with its symbolic links followed
  std::string part_path_;  // empty when streaming
  Options options_;
  std::chrono::steady_clock::time_point last_sync_;
  int fd_ = -1;
  bool finished_ = false;
};

/// Hands each write to a callable; for applications and tests.
class COREMAP_EXPORT CallbackSink final : public Sink {
 public:
  explicit CallbackSink(std::function<void(std::string_view)> on_records)
      : on_records_(std::move(on_records)) {}
  void write(std::string_view records) override { on_records_(records); }

 private:
  std::function<void(std::string_view)> on_records_;
};

}  // namespace coremap
