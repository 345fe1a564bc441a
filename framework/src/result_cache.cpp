// SPDX-License-Identifier: MIT
// The result cache: keys, the SQLite store (one connection per looking-up thread, one writer
// thread storing in batched transactions), and the `coremap cache` inspections (summary, gc,
// why). See result_cache.hpp and docs/cache.md.
#include "result_cache.hpp"

#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <system_error>

#include <openssl/evp.h>
#include <sqlite3.h>

#include <coremap/error.hpp>
#include <coremap/file.hpp>

namespace coremap {

const char* to_string(CacheFilePolicy policy) noexcept {
  switch (policy) {
    case CacheFilePolicy::stat: return "stat";
    case CacheFilePolicy::size: return "size";
    case CacheFilePolicy::content: return "content";
  }
  return "stat";
}

CacheFilePolicy parse_cache_file_policy(const std::string& text, const std::string& flag) {
  if (text == "stat") return CacheFilePolicy::stat;
  if (text == "size") return CacheFilePolicy::size;
  if (text == "content") return CacheFilePolicy::content;
  throw UsageError(flag + ": '" + text + "' is not a file policy (stat, size or content)");
}

namespace detail {
namespace {

constexpr const char* database_name = "cache.sqlite";
constexpr int format_version = 1;
// The writer's queue may hold this much before outcomes are dropped rather than waited for.
constexpr std::size_t max_queued_bytes = std::size_t{256} << 20;
// A hit refreshes its entry's last use (for gc) when that is older than this.
constexpr std::int64_t touch_after_seconds = 3600;

std::int64_t now_unix() { return static_cast<std::int64_t>(std::time(nullptr)); }

// One fetched SHA-256 implementation (fetching per call costs more than hashing a short text).
const EVP_MD* sha256_md() {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

class Hasher {
 public:
  Hasher() : ctx_(EVP_MD_CTX_new()) { reset(); }
  ~Hasher() { EVP_MD_CTX_free(ctx_); }
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void reset() { EVP_DigestInit_ex(ctx_, sha256_md(), nullptr); }
  Hasher& add(const void* data, std::size_t size) {
    EVP_DigestUpdate(ctx_, data, size);
    return *this;
  }
  Hasher& add(std::string_view text) {
    // Length first, so that no two sequences of texts hash alike.
    const std::uint64_t size = text.size();
    add(&size, sizeof size);
    return add(text.data(), text.size());
  }
  Hasher& add(const Digest& digest) { return add(digest.data(), digest.size()); }
  template <class T>
  Hasher& add_value(T value) {
    return add(&value, sizeof value);
  }
  Digest finish() {
    Digest out{};
    unsigned int size = 0;
    EVP_DigestFinal_ex(ctx_, out.data(), &size);
    reset();
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

Hasher& thread_hasher() {
  thread_local Hasher hasher;
  return hasher;
}

std::uint64_t fnv1a(std::string_view a, std::string_view b) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::string_view part : {a, b}) {
    for (const char c : part) {
      h ^= static_cast<unsigned char>(c);
      h *= 1099511628211ull;
    }
  }
  return h;
}

Digest file_sha256(const std::string& path) {
  Hasher hasher;
  std::vector<char> buffer(1 << 16);
  read_file_chunks(path, buffer, [&](const char* data, std::size_t size) { hasher.add(data, size); });
  return hasher.finish();
}

// The file the plugin's code is in: its library, or for a descriptor compiled into the
// application, the executable or library holding the descriptor.
std::string code_file(const Plugin& plugin) {
  if (plugin.loaded_from_library()) return plugin.path();
  Dl_info info{};
  if (::dladdr(static_cast<const void*>(&plugin.descriptor()), &info) != 0 && info.dli_fname != nullptr &&
      info.dli_fname[0] != '\0') {
    return info.dli_fname;
  }
  return "/proc/self/exe";
}

// SQLite handles, closed on scope exit.
struct Statement {
  sqlite3_stmt* stmt = nullptr;
  Statement() = default;
  Statement(sqlite3* db, const char* sql) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK) stmt = nullptr;
  }
  ~Statement() { sqlite3_finalize(stmt); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  explicit operator bool() const noexcept { return stmt != nullptr; }
};

struct Database {
  sqlite3* db = nullptr;
  ~Database() { sqlite3_close_v2(db); }
};

std::string column_text(sqlite3_stmt* stmt, int column) {
  const auto* text = sqlite3_column_text(stmt, column);
  return text != nullptr ? std::string(reinterpret_cast<const char*>(text),
                                       static_cast<std::size_t>(sqlite3_column_bytes(stmt, column)))
                         : std::string();
}

Digest column_digest(sqlite3_stmt* stmt, int column) {
  Digest out{};
  if (sqlite3_column_bytes(stmt, column) == static_cast<int>(out.size())) {
    std::memcpy(out.data(), sqlite3_column_blob(stmt, column), out.size());
  }
  return out;
}

std::string database_path(const std::filesystem::path& directory) { return (directory / database_name).string(); }

[[noreturn]] void unusable(const std::string& db_path, const std::string& why) {
  throw UsageError("cache " + db_path + ": " + why +
                   "; remove the directory's cache.sqlite* files (the cache is rebuilt by the next run) or choose "
                   "another cache directory");
}

const char* schema_sql =
    "CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS entries("
    " key BLOB NOT NULL UNIQUE, identity BLOB NOT NULL, plugin BLOB NOT NULL, config BLOB NOT NULL,"
    " item BLOB NOT NULL, policy TEXT NOT NULL, path TEXT, file TEXT, outcome BLOB NOT NULL,"
    " checksum INTEGER NOT NULL, created INTEGER NOT NULL, used INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS entries_identity ON entries(identity);"
    "CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY, ended INTEGER NOT NULL, hits INTEGER NOT NULL,"
    " misses INTEGER NOT NULL, stored INTEGER NOT NULL, note TEXT NOT NULL);";

// Opens DIR/cache.sqlite; `create` makes the directory, the file and its tables. Throws
// UsageError when it is missing (not create) or not a coremap cache.
sqlite3* open_database(const std::filesystem::path& directory, bool create) {
  const std::string db_path = database_path(directory);
  if (create) {
    std::error_code ec;
    std::filesystem::create_directories(directory, ec);
    if (ec) throw UsageError("cache directory " + directory.string() + ": cannot create it: " + ec.message());
  } else if (std::error_code ec; !std::filesystem::exists(db_path, ec)) {
    throw UsageError("cache " + directory.string() + ": no " + database_name + " in it (not a coremap cache, or never used)");
  }
  sqlite3* db = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
  if (sqlite3_open_v2(db_path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    const std::string why = db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close_v2(db);
    unusable(db_path, "cannot open it: " + why);
  }
  sqlite3_busy_timeout(db, 30000);
  sqlite3_extended_result_codes(db, 0);
  auto exec = [&](const char* sql) {
    char* message = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
      const std::string why = message != nullptr ? message : sqlite3_errmsg(db);
      sqlite3_free(message);
      sqlite3_close_v2(db);
      unusable(db_path, why);
    }
  };
  // On a new (empty) file only: freed pages can be given back (cache gc).
  exec("PRAGMA auto_vacuum=INCREMENTAL");
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=NORMAL");
  if (create) exec(schema_sql);
  Statement version(db, "SELECT value FROM meta WHERE name='format'");
  if (!version) {
    const std::string why = sqlite3_errmsg(db);
    sqlite3_close_v2(db);
    unusable(db_path, "not a coremap cache (" + why + ")");
  }
  std::string found;
  if (sqlite3_step(version.stmt) == SQLITE_ROW) found = column_text(version.stmt, 0);
  sqlite3_finalize(version.stmt);
  version.stmt = nullptr;
  if (found.empty() && create) {
    exec(("INSERT OR IGNORE INTO meta(name, value) VALUES('format', '" + std::to_string(format_version) + "')").c_str());
    found = std::to_string(format_version);
  }
  if (found != std::to_string(format_version)) {
    sqlite3_close_v2(db);
    unusable(db_path, "cache format '" + found + "', this coremap reads format " + std::to_string(format_version));
  }
  return db;
}

std::string file_facts(const ItemKey& key, CacheFilePolicy policy) {
  if (key.file_state == 0) return "";
  Json facts = {{"path", key.path}};
  if (key.file_state == 1) {
    facts["error"] = key.file_error;
  } else {
    facts["size"] = key.size;
    facts["mtime_ns"] = key.mtime_ns;
    facts["inode"] = key.inode;
    if (policy == CacheFilePolicy::content) facts["sha256"] = hex(key.content);
  }
  return facts.dump(-1, ' ', false, Json::error_handler_t::replace);
}

void compute_key(const Digest& prefix, CacheFilePolicy policy, const Json& item, ItemKey& key) {
  Hasher& hasher = thread_hasher();
  const std::string text = item.dump(-1, ' ', false, Json::error_handler_t::replace);
  key.item = hasher.add(text).finish();
  hasher.add(prefix).add(key.item);
  key.file_state = 0;
  key.file_error.clear();
  key.path.clear();
  if (item.is_object()) {
    const auto it = item.find("path");
    if (it != item.end() && it->is_string()) {
      key.path = it->get_ref<const std::string&>();
      struct stat st {};
      if (::stat(key.path.c_str(), &st) != 0) {
        key.file_state = 1;
        key.file_error = std::strerror(errno);
      } else {
        key.file_state = 2;
        key.size = static_cast<std::uint64_t>(st.st_size);
        key.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
        key.inode = static_cast<std::uint64_t>(st.st_ino);
        if (policy == CacheFilePolicy::content && S_ISREG(st.st_mode)) {
          try {
            key.content = file_sha256(key.path);
          } catch (const std::exception& e) {
            key.file_state = 1;
            key.file_error = e.what();
          }
        }
      }
    }
  }
  hasher.add_value(key.file_state);
  if (key.file_state == 1) hasher.add(key.file_error);
  if (key.file_state == 2) {
    hasher.add_value(key.size);
    if (policy == CacheFilePolicy::stat) hasher.add_value(key.mtime_ns).add_value(key.inode);
    if (policy == CacheFilePolicy::content) hasher.add(key.content);
  }
  key.key = hasher.finish();
}

Digest key_prefix(const StageParts& parts, CacheFilePolicy policy) {
  Hasher hasher;
  return hasher.add("coremap-cache-1").add(parts.plugin).add(parts.config).add(to_string(policy)).finish();
}

Digest identity_of(const Digest& names, const Digest& item) {
  Hasher hasher;
  return hasher.add(names).add(item).finish();
}

}  // namespace

Digest sha256(std::string_view data) {
  Hasher hasher;
  return hasher.add(data.data(), data.size()).finish();
}

std::string hex(const Digest& digest) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (const unsigned char byte : digest) {
    out += digits[byte >> 4];
    out += digits[byte & 15];
  }
  return out;
}

std::string uncacheable_reason(const Stage& stage) {
  const Plugin& plugin = *stage.plugin;
  if (plugin.reduces()) return "it reduces (merge and summary need every item's own call)";
  if (!plugin.cacheable()) return "its plugin declares itself not cacheable (Plugin::cacheable())";
  if (!plugin.loaded_from_library() && plugin.version().empty() && plugin.path().starts_with("function:")) {
    return "it runs a function, whose code the cache cannot identify";
  }
  return "";
}

StageParts stage_parts(const std::vector<const Stage*>& stages) {
  Hasher plugins;
  Hasher configs;
  Hasher names;
  std::map<std::string, Digest> files;
  for (const Stage* stage : stages) {
    const Plugin& plugin = *stage->plugin;
    const std::string file = code_file(plugin);
    auto found = files.find(file);
    if (found == files.end()) {
      try {
        found = files.emplace(file, file_sha256(file)).first;
      } catch (const std::exception& e) {
        throw PluginError("--cache: stage '" + stage->name + "': cannot read plugin " + std::string(plugin.name()) +
                          "'s code to key the cache: " + e.what());
      }
    }
    plugins.add(plugin.name()).add(plugin.version()).add(found->second);
    configs.add(stage->config.dump(-1, ' ', false, Json::error_handler_t::replace));
    names.add(plugin.name());
  }
  return StageParts{plugins.finish(), configs.finish(), names.finish()};
}

std::string encode_outcome(const std::vector<CachedValue>& values) {
  if (values.size() == 1 && !values[0].fanned && !values[0].failed && values[0].attempts == 1) {
    return "r" + values[0].data.dump(-1, ' ', false, Json::error_handler_t::strict);
  }
  Json list = Json::array();
  for (const CachedValue& value : values) {
    const int flags = (value.fanned ? 1 : 0) | (value.failed ? 2 : 0);
    list.push_back(Json::array({flags, value.attempts, value.failed ? Json(value.error) : value.data}));
  }
  return "v" + list.dump(-1, ' ', false, Json::error_handler_t::strict);
}

bool decode_outcome(std::string_view text, std::vector<CachedValue>& values) {
  values.clear();
  if (text.empty()) return false;
  Json parsed = Json::parse(text.substr(1), nullptr, false);
  if (parsed.is_discarded()) return false;
  if (text[0] == 'r') {
    values.push_back(CachedValue{false, false, 1, std::move(parsed), {}});
    return true;
  }
  if (text[0] != 'v' || !parsed.is_array()) return false;
  for (Json& entry : parsed) {
    if (!entry.is_array() || entry.size() != 3 || !entry[0].is_number_unsigned() || !entry[1].is_number_unsigned()) {
      return false;
    }
    CachedValue value;
    const auto flags = entry[0].get<unsigned>();
    value.fanned = (flags & 1) != 0;
    value.failed = (flags & 2) != 0;
    value.attempts = entry[1].get<std::uint32_t>();
    if (value.failed) {
      if (!entry[2].is_string()) return false;
      value.error = entry[2].get<std::string>();
    } else {
      value.data = std::move(entry[2]);
    }
    values.push_back(std::move(value));
  }
  return true;
}

struct ResultCache::Reader {
  sqlite3* db = nullptr;
  sqlite3_stmt* get = nullptr;
  ~Reader() {
    sqlite3_finalize(get);
    sqlite3_close_v2(db);
  }
};

ResultCache::ResultCache(const CacheOptions& options, const std::vector<const Stage*>& stages)
    : options_(options), db_path_(database_path(options.directory)), started_unix_(now_unix()) {
  const StageParts parts = stage_parts(stages);
  plugin_part_ = parts.plugin;
  config_part_ = parts.config;
  names_part_ = parts.names;
  prefix_ = key_prefix(parts, options_.files);
  writer_db_ = open_database(options_.directory, true);
  writer_ = std::thread([this] { writer_loop(); });
}

ResultCache::~ResultCache() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (writer_.joinable()) writer_.join();
  readers_.clear();
  sqlite3_close_v2(writer_db_);
}

void ResultCache::key_of(const Json& item, ItemKey& key) const { compute_key(prefix_, options_.files, item, key); }

void ResultCache::note(const std::string& text) {
  std::lock_guard lock(mutex_);
  if (std::find(notes_.begin(), notes_.end(), text) == notes_.end()) notes_.push_back(text);
}

void ResultCache::corrupt_entry() {
  counters.corrupt.fetch_add(1, std::memory_order_relaxed);
  note("cache " + db_path_ + ": corrupt entries were found and run again (and stored afresh)");
}

bool ResultCache::lookup(const ItemKey& key, std::string& outcome_text) {
  std::unique_ptr<Reader>& reader = readers_.local();
  if (!reader) {
    reader = std::make_unique<Reader>();
    if (sqlite3_open_v2(db_path_.c_str(), &reader->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) !=
            SQLITE_OK ||
        (sqlite3_busy_timeout(reader->db, 30000),
         sqlite3_prepare_v2(reader->db, "SELECT outcome, checksum, used FROM entries WHERE key = ?1", -1,
                            &reader->get, nullptr) != SQLITE_OK)) {
      note("cache " + db_path_ + ": cannot read it (" + std::string(sqlite3_errmsg(reader->db)) +
           "): its items were run");
      sqlite3_finalize(reader->get);
      reader->get = nullptr;
    }
  }
  if (reader->get == nullptr) return false;
  sqlite3_stmt* get = reader->get;
  sqlite3_bind_blob(get, 1, key.key.data(), static_cast<int>(key.key.size()), SQLITE_STATIC);
  bool hit = false;
  const int step = sqlite3_step(get);
  if (step == SQLITE_ROW) {
    const auto* data = static_cast<const char*>(sqlite3_column_blob(get, 0));
    const std::string_view outcome(data != nullptr ? data : "", static_cast<std::size_t>(sqlite3_column_bytes(get, 0)));
    const auto checksum = static_cast<std::uint64_t>(sqlite3_column_int64(get, 1));
    const std::string_view key_text(reinterpret_cast<const char*>(key.key.data()), key.key.size());
    if (fnv1a(key_text, outcome) == checksum && !outcome.empty()) {
      hit = true;
      outcome_text.assign(outcome);
      if (sqlite3_column_int64(get, 2) < now_unix() - touch_after_seconds) {
        std::lock_guard lock(mutex_);
        touch_queue_.push_back(key.key);
      }
    } else {
      corrupt_entry();
    }
  } else if (step != SQLITE_DONE) {
    counters.corrupt.fetch_add(1, std::memory_order_relaxed);
    note("cache " + db_path_ + ": a read failed (" + std::string(sqlite3_errmsg(reader->db)) +
         "): those items were run");
  }
  sqlite3_reset(get);
  sqlite3_clear_bindings(get);
  return hit;
}

void ResultCache::store(ItemKey&& key, std::string outcome) {
  bool dropped = false;
  {
    std::lock_guard lock(mutex_);
    if (write_failed_ || queued_bytes_ > max_queued_bytes) {
      dropped = true;
    } else {
      queued_bytes_ += outcome.size() + key.path.size() + 256;
      queue_.push_back(Queued{std::move(key), std::move(outcome)});
    }
  }
  if (dropped) {
    counters.not_stored.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  wake_.notify_one();
}

void ResultCache::writer_loop() {
  std::vector<Queued> entries;
  std::vector<Digest> touched;
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || !touch_queue_.empty(); });
    if (queue_.empty() && touch_queue_.empty()) break;  // stopping, nothing left
    entries.swap(queue_);
    touched.swap(touch_queue_);
    queued_bytes_ = 0;
    writing_ = true;
    lock.unlock();
    write_entries(entries, touched);
    entries.clear();
    touched.clear();
    lock.lock();
    writing_ = false;
    idle_.notify_all();
    if (!stopping_ && !flushing_ && queue_.size() < 512) {
      // Let a transaction's worth gather: one commit per entry would cost more than the entry.
      wake_.wait_for(lock, std::chrono::milliseconds(20), [&] { return stopping_ || flushing_; });
    }
  }
}

void ResultCache::write_entries(std::vector<Queued>& entries, std::vector<Digest>& touched) {
  sqlite3* db = writer_db_;
  auto failed = [&](const char* what) {
    note("cache " + db_path_ + ": " + what + " failed (" + std::string(sqlite3_errmsg(db)) +
         "): this run stores no more outcomes");
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    std::lock_guard lock(mutex_);
    write_failed_ = true;
  };
  if (write_failed_) {
    counters.not_stored.fetch_add(entries.size(), std::memory_order_relaxed);
    return;
  }
  if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
    counters.not_stored.fetch_add(entries.size(), std::memory_order_relaxed);
    return failed("beginning a write");
  }
  Statement insert(db,
                   "INSERT OR REPLACE INTO entries(key, identity, plugin, config, item, policy, path, file, outcome, "
                   "checksum, created, used) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)");
  Statement touch(db, "UPDATE entries SET used = ?2 WHERE key = ?1");
  if (!insert || !touch) {
    counters.not_stored.fetch_add(entries.size(), std::memory_order_relaxed);
    return failed("preparing a write");
  }
  const std::int64_t now = now_unix();
  const char* policy = to_string(options_.files);
  std::uint64_t written = 0;
  for (Queued& entry : entries) {
    const ItemKey& key = entry.key;
    const Digest identity = identity_of(names_part_, key.item);
    const std::string facts = file_facts(key, options_.files);
    const std::string_view key_text(reinterpret_cast<const char*>(key.key.data()), key.key.size());
    sqlite3_stmt* s = insert.stmt;
    sqlite3_bind_blob(s, 1, key.key.data(), 32, SQLITE_STATIC);
    sqlite3_bind_blob(s, 2, identity.data(), 32, SQLITE_STATIC);
    sqlite3_bind_blob(s, 3, plugin_part_.data(), 32, SQLITE_STATIC);
    sqlite3_bind_blob(s, 4, config_part_.data(), 32, SQLITE_STATIC);
    sqlite3_bind_blob(s, 5, key.item.data(), 32, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, policy, -1, SQLITE_STATIC);
    if (key.file_state == 0) {
      sqlite3_bind_null(s, 7);
      sqlite3_bind_null(s, 8);
    } else {
      sqlite3_bind_text(s, 7, key.path.data(), static_cast<int>(key.path.size()), SQLITE_STATIC);
      sqlite3_bind_text(s, 8, facts.data(), static_cast<int>(facts.size()), SQLITE_STATIC);
    }
    sqlite3_bind_blob(s, 9, entry.outcome.data(), static_cast<int>(entry.outcome.size()), SQLITE_STATIC);
    sqlite3_bind_int64(s, 10, static_cast<std::int64_t>(fnv1a(key_text, entry.outcome)));
    sqlite3_bind_int64(s, 11, now);
    const int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_DONE) {
      counters.not_stored.fetch_add(entries.size() - written, std::memory_order_relaxed);
      return failed("storing an outcome");
    }
    ++written;
  }
  for (const Digest& key : touched) {
    sqlite3_bind_blob(touch.stmt, 1, key.data(), 32, SQLITE_STATIC);
    sqlite3_bind_int64(touch.stmt, 2, now);
    sqlite3_step(touch.stmt);
    sqlite3_reset(touch.stmt);
  }
  if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    counters.not_stored.fetch_add(written, std::memory_order_relaxed);
    return failed("committing a write");
  }
  counters.stored.fetch_add(written, std::memory_order_relaxed);
}

CacheRunStats ResultCache::finish_run() {
  std::unique_lock lock(mutex_);
  flushing_ = true;
  wake_.notify_all();
  idle_.wait(lock, [&] { return queue_.empty() && touch_queue_.empty() && !writing_; });
  flushing_ = false;
  CacheRunStats stats;
  stats.enabled = true;
  stats.hits = counters.hits.exchange(0);
  stats.misses = counters.misses.exchange(0);
  stats.stored = counters.stored.exchange(0);
  stats.not_stored = counters.not_stored.exchange(0);
  stats.corrupt = counters.corrupt.exchange(0);
  for (const std::string& text : notes_) stats.note += (stats.note.empty() ? "" : "; ") + text;
  notes_.clear();
  write_failed_ = false;
  // The writer is idle and waits for the lock: its connection records the run.
  Statement run(writer_db_, "INSERT INTO runs(ended, hits, misses, stored, note) VALUES(?1, ?2, ?3, ?4, ?5)");
  if (run) {
    sqlite3_bind_int64(run.stmt, 1, now_unix());
    sqlite3_bind_int64(run.stmt, 2, static_cast<std::int64_t>(stats.hits));
    sqlite3_bind_int64(run.stmt, 3, static_cast<std::int64_t>(stats.misses));
    sqlite3_bind_int64(run.stmt, 4, static_cast<std::int64_t>(stats.stored));
    sqlite3_bind_text(run.stmt, 5, stats.note.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_step(run.stmt);
  }
  return stats;
}

}  // namespace detail

namespace {

std::uint64_t bytes_on_disk(const std::filesystem::path& directory) {
  std::uint64_t total = 0;
  for (const char* suffix : {"", "-wal"}) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(directory / (std::string("cache.sqlite") + suffix), ec);
    if (!ec) total += size;
  }
  return total;
}

[[noreturn]] void query_failed(const std::filesystem::path& directory, sqlite3* db) {
  detail::unusable(detail::database_path(directory), sqlite3_errmsg(db));
}

}  // namespace

CacheSummary cache_summary(const std::filesystem::path& directory) {
  detail::Database database{detail::open_database(directory, false)};
  sqlite3* db = database.db;
  CacheSummary summary;
  detail::Statement count(db,
                          "SELECT count(*), coalesce(sum(length(key) + length(identity) + length(plugin) + "
                          "length(config) + length(item) + length(policy) + coalesce(length(path), 0) + "
                          "coalesce(length(file), 0) + length(outcome) + 24), 0) FROM entries");
  if (!count || sqlite3_step(count.stmt) != SQLITE_ROW) query_failed(directory, db);
  summary.entries = static_cast<std::uint64_t>(sqlite3_column_int64(count.stmt, 0));
  summary.payload_bytes = static_cast<std::uint64_t>(sqlite3_column_int64(count.stmt, 1));
  detail::Statement runs(db, "SELECT ended, hits, misses, stored, note FROM runs ORDER BY id DESC LIMIT 10");
  if (!runs) query_failed(directory, db);
  int step = SQLITE_ROW;
  while ((step = sqlite3_step(runs.stmt)) == SQLITE_ROW) {
    summary.runs.push_back(CacheRunRecord{sqlite3_column_int64(runs.stmt, 0),
                                          static_cast<std::uint64_t>(sqlite3_column_int64(runs.stmt, 1)),
                                          static_cast<std::uint64_t>(sqlite3_column_int64(runs.stmt, 2)),
                                          static_cast<std::uint64_t>(sqlite3_column_int64(runs.stmt, 3)),
                                          detail::column_text(runs.stmt, 4)});
  }
  if (step != SQLITE_DONE) query_failed(directory, db);
  summary.bytes = bytes_on_disk(directory);
  return summary;
}

CacheGcReport cache_gc(const std::filesystem::path& directory, std::uint64_t max_bytes, double older_than_days) {
  detail::Database database{detail::open_database(directory, false)};
  sqlite3* db = database.db;
  CacheGcReport report;
  report.bytes_before = bytes_on_disk(directory);
  auto exec = [&](const std::string& sql) {
    if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) query_failed(directory, db);
  };
  const std::uint64_t before = static_cast<std::uint64_t>(sqlite3_total_changes64(db));
  if (older_than_days > 0) {
    const auto cutoff = detail::now_unix() - static_cast<std::int64_t>(older_than_days * 86400);
    exec("DELETE FROM entries WHERE used < " + std::to_string(cutoff));
  }
  if (max_bytes > 0) {
    // The most recently used entries whose payload fits in max_bytes stay.
    exec("DELETE FROM entries WHERE rowid IN (SELECT rowid FROM (SELECT rowid, sum(length(key) + length(identity) + "
         "length(plugin) + length(config) + length(item) + length(policy) + coalesce(length(path), 0) + "
         "coalesce(length(file), 0) + length(outcome) + 24) OVER (ORDER BY used DESC, rowid DESC) AS running FROM "
         "entries) WHERE running > " +
         std::to_string(max_bytes) + ")");
  }
  report.removed = static_cast<std::uint64_t>(sqlite3_total_changes64(db)) - before;
  exec("PRAGMA incremental_vacuum");
  exec("PRAGMA wal_checkpoint(TRUNCATE)");
  detail::Statement count(db, "SELECT count(*) FROM entries");
  if (!count || sqlite3_step(count.stmt) != SQLITE_ROW) query_failed(directory, db);
  report.entries_left = static_cast<std::uint64_t>(sqlite3_column_int64(count.stmt, 0));
  report.bytes_after = bytes_on_disk(directory);
  return report;
}

std::vector<std::string> cache_why(const std::filesystem::path& directory, const Pipeline& pipeline, const Json& item,
                                   CacheFilePolicy files) {
  std::vector<std::string> lines;
  std::vector<Stage> resolved;
  std::vector<const Stage*> cached;
  for (const Stage& stage : pipeline.stages) {
    Stage copy = stage;
    if (copy.name.empty()) copy.name = std::string(copy.plugin->name());
    copy.config = copy.plugin->resolve_config(copy.config);
    resolved.push_back(std::move(copy));
  }
  for (const Stage& stage : resolved) {
    if (const std::string why = detail::uncacheable_reason(stage); !why.empty()) {
      lines.push_back("note: stage '" + stage.name + "' is not cached: " + why);
      break;
    }
    cached.push_back(&stage);
  }
  if (cached.empty()) {
    lines.insert(lines.begin(), "miss: nothing of this pipeline is cached");
    return lines;
  }
  detail::Database database{detail::open_database(directory, false)};
  sqlite3* db = database.db;
  const detail::StageParts parts = detail::stage_parts(cached);
  detail::ItemKey key;
  detail::compute_key(detail::key_prefix(parts, files), files, item, key);
  detail::Statement exact(db, "SELECT created, used FROM entries WHERE key = ?1");
  if (!exact) query_failed(directory, db);
  sqlite3_bind_blob(exact.stmt, 1, key.key.data(), 32, SQLITE_STATIC);
  if (sqlite3_step(exact.stmt) == SQLITE_ROW) {
    lines.insert(lines.begin(), "hit: an entry with this item's key is stored (key " + detail::hex(key.key) + ")");
    return lines;
  }
  const detail::Digest identity = detail::identity_of(parts.names, key.item);
  detail::Statement same(db,
                         "SELECT plugin, config, policy, file FROM entries WHERE identity = ?1 ORDER BY used DESC, "
                         "rowid DESC LIMIT 1");
  if (!same) query_failed(directory, db);
  sqlite3_bind_blob(same.stmt, 1, identity.data(), 32, SQLITE_STATIC);
  std::vector<std::string> reasons;
  if (sqlite3_step(same.stmt) == SQLITE_ROW) {
    if (detail::column_digest(same.stmt, 0) != parts.plugin) {
      reasons.push_back("plugin build: a stage's plugin library (its content), name or version differs from the "
                        "cached entry's");
    }
    if (detail::column_digest(same.stmt, 1) != parts.config) {
      reasons.push_back("config: a stage's resolved config differs from the cached entry's");
    }
    const std::string policy = detail::column_text(same.stmt, 2);
    if (policy != to_string(files)) {
      reasons.push_back("file policy: the entry was stored with --cache-files " + policy + ", this run uses " +
                        to_string(files));
    }
    const Json stored = Json::parse(detail::column_text(same.stmt, 3), nullptr, false);
    const Json now = Json::parse(detail::file_facts(key, files), nullptr, false);
    if (stored.is_object() && now.is_object() && policy == to_string(files)) {
      auto differs = [&](const char* field, const std::string& what) {
        if (stored.value(field, Json()) != now.value(field, Json())) {
          reasons.push_back(what + " of " + key.path + ": was " + stored.value(field, Json()).dump() + ", now " +
                            now.value(field, Json()).dump());
        }
      };
      differs("error", "file access");
      differs("size", "file size");
      if (files == CacheFilePolicy::stat) {
        differs("mtime_ns", "file modification time (ns)");
        differs("inode", "file inode");
      }
      if (files == CacheFilePolicy::content) differs("sha256", "file content (SHA-256)");
    }
    if (reasons.empty()) reasons.push_back("the closest entry's key parts all match: it was removed or replaced");
  } else {
    detail::Statement by_path(db, "SELECT count(*) FROM entries WHERE path = ?1");
    std::int64_t with_path = 0;
    if (key.file_state != 0 && by_path) {
      sqlite3_bind_text(by_path.stmt, 1, key.path.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(by_path.stmt) == SQLITE_ROW) with_path = sqlite3_column_int64(by_path.stmt, 0);
    }
    if (with_path > 0) {
      reasons.push_back("item: its JSON differs from every cached item with path " + key.path +
                        " (a field other than the file changed)");
    } else {
      reasons.push_back("item: no entry for this item (never run with this cache, or removed by gc)");
    }
  }
  lines.insert(lines.begin(), "miss");
  for (const std::string& reason : reasons) lines.push_back("  " + reason);
  return lines;
}

}  // namespace coremap
