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
#include <utility>
#include <vector>

#include <coremap/export.hpp>
#include <coremap/index_set.hpp>
#include <coremap/manifest.hpp>
#include <coremap/pipeline.hpp>
#include <coremap/plugin.hpp>
#include <coremap/loaded_plugin.hpp>
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
    /// Without resume: start afresh even though FILE.part holds the records of an earlier,
    /// unfinished run (they are discarded). Without it such a run is refused (UsageError), so a
    /// rerun without --resume never throws away an interrupted run's work.
    bool restart = false;
    /// The run has reducing stages whose states are checkpointed (checkpoint()). Resuming then
    /// continues from FILE.checkpoint: the records written after it are dropped and their
    /// items run again, done() holds every item below the checkpoint's (also items without a
    /// record), and resume_states() its states; with no checkpoint yet it starts from the
    /// first item. A finished FILE needs a complete checkpoint. With retry_failed: ResumeError.
    bool checkpointed = false;
    /// See FileSink::Options::sync_interval.
    std::chrono::milliseconds sync_interval{1000};
  };

  /// Takes the output's lock (below), then, for a resumed run, checks FILE.journal and scans
  /// what the earlier run recorded (cutting off a torn last record); writes nothing else.
  ///
  /// `path` is resolved with resolve_output(): a symbolic link is written through (the link
  /// stays; FILE.part, FILE.journal and FILE.lock sit next to the file it points at). A
  /// character device or FIFO is streamed into with no FILE.part, journal or lock (streams());
  /// --resume on one throws ResumeError. A directory, block device or socket throws
  /// OutputError, as does a companion file (FILE.part, FILE.journal, ...) that is not a regular
  /// file. UsageError when FILE or a companion is the fingerprint's manifest (same inode).
  ///
  /// The lock: FILE.lock, flock(2)'ed exclusively for the object's life and removed by the
  /// destructor; it holds "PID HOST" of the run. A second ResumableOutput on the same FILE (in
  /// any process; also -o FILE.part or FILE.journal of a running FILE) throws OutputError naming
  /// FILE and the holder. The kernel drops the lock when its process dies, so kill -9 leaves
  /// at most a stale FILE.lock file, never a stale lock. -o FILE.part (or .journal, .lock) while
  /// FILE.journal exists is refused too: it would overwrite that run's records.
  ///
  /// Resuming checks every record of FILE.part (or of FILE, for a finished run) before anything
  /// is changed: each line is whole JSON with a coremap record head, its index is below the
  /// manifest's item count (the manifest is read once more to count), and no item is recorded
  /// twice unless its earlier records failed (a --retry-failed run superseding them; a fanned-out
  /// item's records have rising "sub" numbers). Otherwise ResumeError names the file and line.
  ///
  /// Throws ResumeError when the runs differ or the records are damaged, OutputError when a
  /// file cannot be read.
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
  /// --retry-failed, so FILE holds each item once. A rewrite goes to FILE.compact, synced and
  /// renamed to FILE before FILE.part is removed: if it fails (a full disk), FILE.part is
  /// untouched and FILE absent, and --resume finishes the job. FILE.journal stays, for a later
  /// --resume --retry-failed. Throws OutputError.
  void finish(bool ordered);

  /// For an interrupted run: syncs and keeps FILE.part (and the journal). Returns its path.
  std::string keep_partial();

  /// Checkpoints a reducing run (Engine: RunOptions::on_checkpoint), after open(): fdatasyncs
  /// FILE.part, then writes FILE.checkpoint durably (FILE.checkpoint.tmp, fsync, rename, fsync
  /// of the directory) as one JSON line: {"coremap_checkpoint":1, "journal_sha256", "items":
  /// N (every item below N is done), "complete" (the run reached the manifest's end),
  /// "records": {"bytes": B (the prefix of FILE.part holding their records)}, "states":
  /// `states`}. A crash at any moment leaves the previous checkpoint or this one, each naming
  /// records that are on disk. Does nothing when streaming. Throws OutputError.
  void checkpoint(std::uint64_t items, const Json& states, bool complete);

  /// With Options::checkpointed, when resuming from a checkpoint: its states (for
  /// RunOptions::resume_states); null otherwise.
  const Json& resume_states() const noexcept { return resume_states_; }

  /// FILE.checkpoint (empty when streaming).
  const std::string& checkpoint_path() const noexcept { return checkpoint_path_; }

  /// FILE.journal (empty when streaming).
  const std::string& journal_path() const noexcept { return journal_path_; }

  /// True when the output is a character device or FIFO, written straight into: nothing is
  /// kept for --resume.
  bool streams() const noexcept { return streaming_; }

 private:
  struct Checkpoint {
    std::uint64_t items = 0;
    std::uint64_t bytes = 0;
    bool complete = false;
  };
  // Options::checkpointed: reads and checks FILE.checkpoint (nullopt when there is none) and
  // takes its states.
  std::optional<Checkpoint> read_checkpoint(const std::string& source);
  // Checks the records of `source` and fills done_; returns the length of the part to keep.
  std::uint64_t scan_earlier(const std::string& source, std::optional<std::uint64_t> items,
                             const std::optional<Checkpoint>& checkpoint);
  void refuse_manifest() const;

  std::string path_;
  std::string target_;  // path_ with its symbolic links followed
  std::string part_path_;
  std::string journal_path_;
  std::string lock_path_;
  std::string checkpoint_path_;
  std::string journal_sha256_;  // of FILE.journal, named by each checkpoint
  Json resume_states_;
  std::string note_checkpoint_;
  // Lock files held and their descriptors; released (unlinked, then closed) on destruction,
  // also when the constructor throws.
  struct Locks {
    Locks() = default;
    Locks(const Locks&) = delete;
    Locks& operator=(const Locks&) = delete;
    ~Locks();
    std::vector<std::pair<std::string, int>> held;
  };
  Locks locks_;
  bool streaming_ = false;
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

/// The same, reading `from` and writing `to` (via `to`.compact, fsync'ed, then renamed to
/// `to`). On any failure `from` is as it was and `to`.compact is removed. Refuses (OutputError)
/// when `to` or `to`.compact exists and is not a regular file.
COREMAP_EXPORT void compact_records(const std::string& from, const std::string& to, bool ordered);

}  // namespace coremap
