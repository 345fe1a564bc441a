// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Resuming a run: an output file whose unfinished FILE.part is itself the record of finished
/// items, plus FILE.journal, the fingerprint of the run that wrote it.
///
/// \code
/// coremap::ResumableOutput out("out.jsonl", coremap::run_fingerprint(manifest, *plugin, config),
///                              {.resume = true});
/// options.skip = out.done();          // items an earlier run already recorded
/// coremap::Engine engine(plugin, config, options);
/// engine.run(manifest, out.sink());
/// out.finish(options.ordered);        // FILE holds every item exactly once
/// \endcode
///
/// Durability: records are appended to FILE.part with write(2) as each batch is done, so a
/// killed process (kill -9, a crash) loses nothing it wrote; FILE.part is fdatasync'ed at most
/// every `sync_interval` while records arrive and at the end, so a power cut loses at most the
/// records of the last interval, which a resumed run processes again. A record torn by the
/// crash (a last line without its newline) is cut off when resuming.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <coremap/export.hpp>
#include <coremap/index_set.hpp>
#include <coremap/manifest.hpp>
#include <coremap/pipeline.hpp>
#include <coremap/plugin.hpp>
#include <coremap/plugin_loader.hpp>
#include <coremap/sink.hpp>

namespace coremap {

/// What a resumed run must share with the run it resumes: the manifest's format, size and
/// SHA-256 ("-" for standard input, which cannot be resumed), and for each stage the plugin's
/// name, version and the SHA-256 of its library and the resolved config (concurrency does not
/// change results and is left out). Reads the whole manifest once to hash it. Throws
/// ManifestError when the manifest cannot be read.
COREMAP_EXPORT Json run_fingerprint(const std::string& manifest_path, ManifestFormat format, const Pipeline& pipeline);

/// The SHA-256 of the file at `path`, as 64 hex digits, read in 1 MiB chunks. Throws Error
/// ("cannot read file 'PATH': <OS reason>").
COREMAP_EXPORT std::string file_sha256(const std::string& path);

/// The same for one plugin.
COREMAP_EXPORT Json run_fingerprint(const std::string& manifest_path, ManifestFormat format,
                                    const Plugin& plugin, const Json& resolved_config);

/// An output file that a later run can resume (see the file comment).
///
/// Thread safety: one thread at a time (the engine writes to sink() from one thread at a time).
class COREMAP_EXPORT ResumableOutput {
 public:
  struct Options {
    /// Continue the run recorded in FILE.journal and FILE.part (or a finished FILE): refuse
    /// with a ResumeError when its fingerprint differs; start afresh when there is no journal.
    bool resume = false;
    /// With resume: items whose record is an error are run again (their old records dropped).
    bool retry_failed = false;
    /// See FileSink::Options::sync_interval.
    std::chrono::milliseconds sync_interval{1000};
  };

  /// For a resumed run, checks FILE.journal and scans what the earlier run recorded (cutting
  /// off a torn last record); writes nothing else. Throws ResumeError when the runs differ,
  /// OutputError when a file cannot be read.
  ResumableOutput(const std::string& path, const Json& fingerprint, Options options);
  ~ResumableOutput();
  ResumableOutput(const ResumableOutput&) = delete;
  ResumableOutput& operator=(const ResumableOutput&) = delete;

  /// Starts writing: for a fresh run writes FILE.journal and starts FILE.part afresh; for a
  /// resumed one opens FILE.part to append. Call it once setup has succeeded, so a run that
  /// fails to start leaves no files. Throws OutputError.
  void open();

  /// Where the engine writes the new records (after open()).
  Sink& sink() noexcept;

  /// Items already recorded, for RunOptions::skip (empty for a fresh run).
  std::shared_ptr<const IndexSet> done() const noexcept { return done_; }

  /// True when an earlier run's records were found and kept.
  bool resumed() const noexcept { return resumed_; }
  /// Records kept from earlier runs: ok, and failed (failed ones are dropped with retry_failed).
  std::uint64_t earlier_ok() const noexcept { return earlier_ok_; }
  std::uint64_t earlier_failed() const noexcept { return earlier_failed_; }
  /// A line for the user about what resuming found (empty for a fresh run).
  const std::string& note() const noexcept { return note_; }

  /// Syncs FILE.part and renames it to FILE; rewrites FILE in index order when `ordered` and
  /// the records are not already (an unordered earlier run), and drops records superseded by
  /// --retry-failed, so FILE holds each item once. FILE.journal stays, for a later
  /// --resume --retry-failed.
  void finish(bool ordered);

  /// For an interrupted run: syncs and keeps FILE.part (and the journal). Returns its path.
  std::string keep_partial();

  const std::string& journal_path() const noexcept { return journal_path_; }

 private:
  void scan_earlier();

  std::string path_;
  std::string part_path_;
  std::string journal_path_;
  Json fingerprint_;
  Options options_;
  std::shared_ptr<IndexSet> done_;
  std::optional<FileSink> sink_;
  bool resumed_ = false;
  bool needs_rewrite_ = false;  // duplicates, dropped failures, or out of index order
  bool sorted_prefix_ = true;   // earlier records are exactly items 0..k-1, in order
  std::uint64_t earlier_ok_ = 0;
  std::uint64_t earlier_failed_ = 0;
  std::string note_;
};

/// Rewrites the records file at `path` in place (via a temporary file and rename) keeping, for
/// each index, only its last record; in index order when `ordered`, else in file order.
/// Throws OutputError.
COREMAP_EXPORT void compact_records(const std::string& path, bool ordered);

}  // namespace coremap
