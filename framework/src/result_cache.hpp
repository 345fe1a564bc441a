// SPDX-License-Identifier: MIT
#pragma once

// The result cache (RunOptions::cache, docs/cache.md): items' keys, lookups on the per-item
// path and the writer thread that stores outcomes. Owns the SQLite database DIR/cache.sqlite
// of one engine: a connection per thread that looks up (prepared statement, read-only work),
// and one writer thread that stores what the stages queue, in transactions of many entries,
// so no item ever waits on the disk. Entries carry the parts of their key (plugin build,
// config, item, file facts) for `coremap cache why`.

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <oneapi/tbb/enumerable_thread_specific.h>

#include <coremap/cache.hpp>
#include <coremap/plugin.hpp>

struct sqlite3;
struct sqlite3_stmt;

namespace coremap::detail {

using Digest = std::array<unsigned char, 32>;

// One input file of an item (the file its `path` field names, or a field a cached stage's
// plugin declares as an input file): what of it went into the key.
struct FileFacts {
  std::string field;  // the item field naming it
  std::string path;
  int state = 0;      // 1: stat (or reading it, content policy) failed: `error` says why; 2: ok
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::uint64_t inode = 0;
  Digest content{};  // CacheFilePolicy::content only
  std::string error;
};

// What the key of one item is made of, as far as the item and its files go.
struct ItemKey {
  Digest key{};
  Digest item{};      // SHA-256 of the item's canonical JSON
  Digest identity{};  // `item` XOR the digest of the cached stages' plugin names: the entries of one item
  std::size_t file_count = 0;  // files[0, file_count): the item's input files, in field order
  std::vector<FileFacts> files;
  const FileFacts* path_file() const noexcept {
    return file_count > 0 && files[0].field == "path" ? &files[0] : nullptr;
  }
};

// Encodes / decodes the input files of a key as stored with its entry (for `cache why`).
std::string encode_files(const ItemKey& key);
bool decode_files(std::string_view blob, std::vector<FileFacts>& files);

// A stored outcome of the cached stages for one item: its values, in order (none: the item
// was filtered out). An error's text is what follows "manifest:line: " in its record.
struct CachedValue {
  bool fanned = false;
  bool failed = false;
  std::uint32_t attempts = 1;
  Json data;
  std::string error;
};

// Encodes / decodes an outcome (the text stored in the database). decode is false for text
// that is not such an encoding (a corrupt entry).
std::string encode_outcome(const std::vector<CachedValue>& values);
bool decode_outcome(std::string_view text, std::vector<CachedValue>& values);

// An outcome of the cached stages for the writer, and the key it is stored under.
struct StoredOutcome {
  ItemKey key;
  std::string outcome;  // encode_outcome's text
};

// The key of an item a batch runs, until the last cached stage has its outcome.
struct PendingEntry {
  std::uint64_t index = 0;  // the item, while the batch holds it
  ItemKey key;
};

// Counters of one run (RunStats::cache).
struct CacheCounters {
  std::atomic<std::uint64_t> hits{0};
  std::atomic<std::uint64_t> misses{0};
  std::atomic<std::uint64_t> stored{0};
  std::atomic<std::uint64_t> not_stored{0};
  std::atomic<std::uint64_t> corrupt{0};
};

class ResultCache {
 public:
  // Opens (creating) DIR/cache.sqlite for `stages`, the stages whose outputs are cached (the
  // pipeline's first ones, resolved configs). Throws UsageError when the directory or the
  // database cannot be used.
  ResultCache(const CacheOptions& options, const std::vector<const Stage*>& stages);
  ~ResultCache();
  ResultCache(const ResultCache&) = delete;
  ResultCache& operator=(const ResultCache&) = delete;

  const CacheOptions& options() const noexcept { return options_; }

  // The item's key (the file policy applied to its input files: its `path` field and the
  // fields the cached stages' plugins declare). Never throws for an item: a file that cannot
  // be read is part of the key as such.
  void key_of(const Json& item, ItemKey& key) const;

  // Looks up the keys of one batch in one read transaction of the calling thread's
  // connection (a transaction per lookup would lock and unlock the database file for each):
  // for each i with keys[i] set, hit[i] is 1 and outcomes[i] the stored outcome
  // (encode_outcome's text) on a hit, else hit[i] is 0. An entry whose checksum does not
  // match, or a read error, is a miss (noted once). Called from any thread.
  void lookup(const std::vector<const ItemKey*>& keys, std::vector<std::uint8_t>& hit,
              std::vector<std::string>& outcomes);

  // An outcome lookup() returned that does not decode: counted and noted as corrupt.
  void corrupt_entry();

  // Queues a batch's outcomes for the writer thread (moved from `entries`, which is left
  // empty); never waits on the disk (when the writer is far behind, they are not stored and
  // counted as such). Wakes the writer only when a transaction's worth is queued.
  void store(std::vector<StoredOutcome>& entries);

  // Waits until every queued entry is written, then records the run's counters in the
  // database, and returns them (and resets them for the next run).
  CacheRunStats finish_run();

  CacheCounters counters;

 private:
  struct Reader;
  void writer_loop();
  void write_entries(std::vector<StoredOutcome>& entries, std::vector<std::int64_t>& touched);
  void note(const std::string& text);
  sqlite3* open_connection(bool writer) const;

  CacheOptions options_;
  std::string db_path_;
  Digest plugin_part_{};  // the cached stages' plugins: name, version, library content
  Digest config_part_{};  // their resolved configs
  Digest names_part_{};   // their plugins' names: with the item, an entry's identity (cache why)
  Digest prefix_{};       // plugin_part_, config_part_ and the policy, hashed once
  std::vector<std::string> file_fields_;  // "path", then the declared input-file fields
  std::int64_t started_unix_ = 0;

  tbb::enumerable_thread_specific<std::unique_ptr<Reader>> readers_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::vector<StoredOutcome> queue_;
  std::vector<std::int64_t> touch_queue_;  // entries (rowids) hit whose last use is to be refreshed
  std::size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool flushing_ = false;  // finish_run waits: the writer takes what is queued at once
  bool stopping_ = false;
  bool write_failed_ = false;
  std::vector<std::string> notes_;
  sqlite3* writer_db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;  // the writer's statements, prepared once
  sqlite3_stmt* touch_ = nullptr;
  std::int64_t build_id_ = 0;       // this run's row in the builds table
  std::thread writer_;
};

// SHA-256 of `data` (OpenSSL), and its hex text.
Digest sha256(std::string_view data);
std::string hex(const Digest& digest);

// The parts of the key that do not depend on the item, for `stages`: plugin builds, configs,
// names. Throws PluginError when a plugin's library cannot be read.
struct StageParts {
  Digest plugin{};
  Digest config{};
  Digest names{};
  std::vector<std::string> file_fields;  // "path", then the fields the plugins declare as input files
};
StageParts stage_parts(const std::vector<const Stage*>& stages);

// Why a stage (and so the stages after it) cannot be cached: "" when it can. A reducing
// plugin, a plugin that declares itself not cacheable, a function (from_function).
std::string uncacheable_reason(const Stage& stage);

}  // namespace coremap::detail
