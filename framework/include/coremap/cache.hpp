// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The result cache (docs/cache.md): each item's outcome stored under a key made of what
/// determines it, so that a later run over a grown, reordered or edited manifest runs only the
/// items whose key changed. RunOptions::cache turns it on for Engine::run(); the functions below
/// inspect and trim a cache directory (`coremap cache stats|gc|why`).
///
/// The key of an item is the SHA-256 of: each cached stage's plugin (name, version and the
/// SHA-256 of its library file), each cached stage's resolved config, the item's canonical JSON
/// (object keys sorted, as nlohmann::json dumps them), and the files the item names, as
/// CacheFilePolicy says: its `path` field's, and those of the fields a cached stage's plugin
/// declares as input files (`input_files` in its class, Plugin::input_file_fields()). The store is one SQLite database, DIR/cache.sqlite, in WAL
/// mode: several processes may use one directory at once.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <coremap/export.hpp>
#include <coremap/pipeline.hpp>
#include <coremap/plugin.hpp>

namespace coremap {

/// What of each input file of an item (its `path` field's, and the declared ones) goes into
/// its key.
enum class CacheFilePolicy {
  stat,     ///< path, size, modification time (ns) and inode: cheap; a touch is a miss
  size,     ///< path and size only: an edit that keeps the size is NOT seen
  content,  ///< path and the SHA-256 of the file's bytes: reads every file on every run
};

/// "stat", "size" or "content".
COREMAP_EXPORT const char* to_string(CacheFilePolicy policy) noexcept;
/// Parses "stat", "size" or "content"; throws UsageError naming `flag` otherwise.
COREMAP_EXPORT CacheFilePolicy parse_cache_file_policy(const std::string& text, const std::string& flag);

/// RunOptions::cache. An empty `directory` means no cache.
struct CacheOptions {
  /// Where the cache lives (created if missing): DIR/cache.sqlite and its -wal and -shm files.
  std::filesystem::path directory;
  CacheFilePolicy files = CacheFilePolicy::stat;
  /// Also store failed items (their error is replayed on a hit). A timed-out item, an item
  /// the run's stop cut short and an item whose worker crashed are never stored.
  bool failures = false;
};

/// What a run did with its cache (RunStats::cache). All zero when the run had none.
struct CacheRunStats {
  bool enabled = false;
  /// How many of the pipeline's first stages are cached: all of them, or those before the
  /// first reducing or not cacheable stage (then `note` says which). 0: nothing is cached.
  std::size_t cached_stages = 0;
  std::uint64_t hits = 0;        ///< items whose outcome came from the cache
  std::uint64_t misses = 0;      ///< items run (and stored, unless below)
  std::uint64_t stored = 0;      ///< outcomes written to the cache by this run
  /// Misses not stored: failed items (without `failures`), timed out items, or the writer
  /// fell far behind or the database refused the write (`note` says so).
  std::uint64_t not_stored = 0;
  std::uint64_t corrupt = 0;  ///< entries that could not be read back: run as misses
  /// What the run should tell the user, or empty: the stages left uncached and why, corrupt
  /// entries or a database error met (each reported once).
  std::string note;
};

/// One run's use of a cache, as `coremap cache stats` lists it.
struct CacheRunRecord {
  std::int64_t ended_unix = 0;  ///< seconds since the epoch
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t stored = 0;
  std::string note;  ///< e.g. corrupt entries met, entries not stored
};

/// What a cache directory holds.
struct CacheSummary {
  std::uint64_t entries = 0;
  std::uint64_t bytes = 0;          ///< database file plus its write-ahead log, on disk
  std::uint64_t payload_bytes = 0;  ///< the entries' keys, key parts and outcomes
  std::vector<CacheRunRecord> runs;  ///< the most recent runs, newest first (at most 10)
};

/// Reads a cache directory. Throws UsageError when DIR/cache.sqlite is missing or is not a
/// usable SQLite database (saying which).
COREMAP_EXPORT CacheSummary cache_summary(const std::filesystem::path& directory);

/// What cache_gc did.
struct CacheGcReport {
  std::uint64_t removed = 0;
  std::uint64_t entries_left = 0;
  std::uint64_t bytes_before = 0;  ///< on disk, as CacheSummary::bytes
  std::uint64_t bytes_after = 0;
};

/// Removes entries: those not used for `older_than_days` days (when > 0), then, when
/// `max_bytes` > 0, the least recently used until the entries' payload fits in `max_bytes`;
/// then gives the freed pages back to the file system. Safe while other runs use the cache
/// (they may miss the removed entries). Throws UsageError as cache_summary does.
COREMAP_EXPORT CacheGcReport cache_gc(const std::filesystem::path& directory, std::uint64_t max_bytes,
                                      double older_than_days);

/// Why `item` is, or is not, a hit for `pipeline` in the cache at `directory` with file policy
/// `files`: one line per finding, first "hit" or "miss", then the key part that differs from
/// the closest stored entry for the same item (plugin build, config, item JSON, an input
/// file's size, modification time, inode or content, naming the file and its item field), or
/// that no entry for the item exists. Throws
/// UsageError as cache_summary does.
COREMAP_EXPORT std::vector<std::string> cache_why(const std::filesystem::path& directory, const Pipeline& pipeline,
                                                  const Json& item, CacheFilePolicy files);

}  // namespace coremap
