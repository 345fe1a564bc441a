// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Where records go. The engine hands a sink whole runs of records (JSON Lines text) from one
/// thread at a time, in index order unless the run is unordered.

#include <chrono>
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

/// Writes records to a file or to standard output. A file is written as FILE.part and renamed
/// to FILE by finish() after an fsync, so FILE only ever holds a finished run; a sink destroyed
/// without finish() removes FILE.part. Every failed write(2), fsync, close or rename throws
/// OutputError: a run that could not write its results never looks like a success.
class COREMAP_EXPORT FileSink final : public Sink {
 public:
  struct Options {
    /// Append to an existing FILE.part instead of starting it afresh, and keep FILE.part when
    /// destroyed without finish(): it is then the record of an unfinished run (ResumableOutput).
    bool resumable = false;
    /// fdatasync FILE.part when a write comes this long after the last sync; 0: only at the end.
    std::chrono::milliseconds sync_interval{0};
  };

  /// `path` "-" is standard output. Throws OutputError when FILE.part cannot be created.
  explicit FileSink(const std::string& path) : FileSink(path, Options{}) {}
  FileSink(const std::string& path, Options options);
  ~FileSink() override;
  FileSink(const FileSink&) = delete;
  FileSink& operator=(const FileSink&) = delete;

  void write(std::string_view records) override;
  void finish() override;

  /// For a run that stopped before its end (an interrupt): syncs and closes FILE.part and
  /// leaves it in place, so what was written is kept but FILE never looks complete. Returns
  /// the path kept ("-" for standard output, which is only flushed).
  std::string keep_partial();

  /// The file being written ("-" for standard output), for messages.
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
  std::string part_path_;
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
