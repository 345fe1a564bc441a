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
#include <tuple>

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
// 2: entries in rowid order with an index on (identity, key) prefixes, builds in their own
// table, input files as a binary list (encode_files).
constexpr int format_version = 2;
// The writer's queue may hold this much before outcomes are dropped rather than waited for.
constexpr std::size_t max_queued_bytes = std::size_t{256} << 20;
// A hit refreshes its entry's last use (for gc) when that is older than this.
constexpr std::int64_t touch_after_seconds = 3600;
// The writer wakes when this many outcomes are queued (else every 250 ms, or when the run
// ends): a transaction's worth, so that its commit is a small part of its cost.
constexpr std::size_t write_batch_entries = 8192;
constexpr auto write_interval = std::chrono::milliseconds(250);

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
  thread_local std::vector<char> buffer(1 << 16);
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

// entries: one row per stored outcome, appended in rowid order (a transaction writes new
// pages at the end of the table rather than into pages all over it, as a table ordered by
// random keys would), found through one small index on 64 bits of the item's identity and 64
// of its key (`cache why` finds an item's entries by the identity's prefix); the full key is
// in the row and is compared. builds: the cached stages' plugin builds, configs and file
// policy, once for all their entries.
const char* schema_sql =
    "CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS builds(id INTEGER PRIMARY KEY, plugin BLOB NOT NULL, config BLOB NOT NULL,"
    " policy TEXT NOT NULL, UNIQUE(plugin, config, policy));"
    "CREATE TABLE IF NOT EXISTS entries(id INTEGER PRIMARY KEY, ident INTEGER NOT NULL, keyh INTEGER NOT NULL,"
    " key BLOB NOT NULL, build INTEGER NOT NULL, files BLOB, outcome BLOB NOT NULL, checksum INTEGER NOT NULL,"
    " created INTEGER NOT NULL, used INTEGER NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS entries_key ON entries(ident, keyh);"
    "CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY, ended INTEGER NOT NULL, hits INTEGER NOT NULL,"
    " misses INTEGER NOT NULL, stored INTEGER NOT NULL, note TEXT NOT NULL);";

// The first 8 bytes of a digest, as the index stores them.
std::int64_t prefix64(const Digest& digest) {
  std::int64_t value = 0;
  std::memcpy(&value, digest.data(), sizeof value);
  return value;
}

// What an entry's payload is, in bytes (cache stats, gc --max-size): keys, files, outcome,
// and 24 for the integers.
const char* payload_sql = "(length(key) + coalesce(length(files), 0) + length(outcome) + 48)";

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

// The facts of one input file under `policy`; state 1 with the error when it cannot be read.
void read_facts(FileFacts& facts, CacheFilePolicy policy) {
  facts.error.clear();
  struct stat st {};
  if (::stat(facts.path.c_str(), &st) != 0) {
    facts.state = 1;
    facts.error = std::strerror(errno);
    return;
  }
  facts.state = 2;
  facts.size = static_cast<std::uint64_t>(st.st_size);
  facts.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  facts.inode = static_cast<std::uint64_t>(st.st_ino);
  facts.content = Digest{};
  if (policy == CacheFilePolicy::content && S_ISREG(st.st_mode)) {
    try {
      facts.content = file_sha256(facts.path);
    } catch (const std::exception& e) {
      facts.state = 1;
      facts.error = e.what();
    }
  }
}

void compute_key(const Digest& prefix, const Digest& names, CacheFilePolicy policy,
                 const std::vector<std::string>& file_fields, const Json& item, ItemKey& key) {
  Hasher& hasher = thread_hasher();
  const std::string text = item.dump(-1, ' ', false, Json::error_handler_t::replace);
  key.item = hasher.add(text).finish();
  // The identity needs no hash of its own: the item's digest, made distinct per plugin names.
  for (std::size_t i = 0; i < key.identity.size(); ++i) key.identity[i] = key.item[i] ^ names[i];
  hasher.add(prefix).add(key.item);
  key.file_count = 0;
  if (item.is_object()) {
    for (const std::string& field : file_fields) {
      const auto it = item.find(field);
      if (it == item.end() || !it->is_string()) continue;
      if (key.files.size() <= key.file_count) key.files.emplace_back();
      FileFacts& facts = key.files[key.file_count++];
      facts.field = field;
      facts.path = it->get_ref<const std::string&>();
      read_facts(facts, policy);
      hasher.add(field).add_value(facts.state);
      if (facts.state == 1) hasher.add(facts.error);
      if (facts.state == 2) {
        hasher.add_value(facts.size);
        if (policy == CacheFilePolicy::stat) hasher.add_value(facts.mtime_ns).add_value(facts.inode);
        if (policy == CacheFilePolicy::content) hasher.add(facts.content);
      }
    }
  }
  hasher.add_value(key.file_count);
  key.key = hasher.finish();
}

Digest key_prefix(const StageParts& parts, CacheFilePolicy policy) {
  Hasher hasher;
  return hasher.add("coremap-cache-1").add(parts.plugin).add(parts.config).add(to_string(policy)).finish();
}

void put_u64(std::string& out, std::uint64_t value) { out.append(reinterpret_cast<const char*>(&value), sizeof value); }
void put_text(std::string& out, std::string_view text) {
  const auto size = static_cast<std::uint32_t>(text.size());
  out.append(reinterpret_cast<const char*>(&size), sizeof size);
  out.append(text);
}

struct BlobReader {
  std::string_view rest;
  bool ok = true;
  std::uint64_t u64() {
    std::uint64_t value = 0;
    if (rest.size() < sizeof value) {
      ok = false;
      return 0;
    }
    std::memcpy(&value, rest.data(), sizeof value);
    rest.remove_prefix(sizeof value);
    return value;
  }
  std::string text() {
    std::uint32_t size = 0;
    if (rest.size() < sizeof size) {
      ok = false;
      return {};
    }
    std::memcpy(&size, rest.data(), sizeof size);
    rest.remove_prefix(sizeof size);
    if (rest.size() < size) {
      ok = false;
      return {};
    }
    std::string out(rest.substr(0, size));
    rest.remove_prefix(size);
    return out;
  }
};

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
  StageParts parts;
  parts.file_fields.emplace_back("path");
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
    for (std::string& field : plugin.input_file_fields()) {
      if (std::find(parts.file_fields.begin(), parts.file_fields.end(), field) == parts.file_fields.end()) {
        parts.file_fields.push_back(std::move(field));
      }
    }
  }
  // The declared fields in one order whatever the stages' order, "path" first.
  std::sort(parts.file_fields.begin() + 1, parts.file_fields.end());
  parts.plugin = plugins.finish();
  parts.config = configs.finish();
  parts.names = names.finish();
  return parts;
}

// Per file: a state byte (1: error, 2: ok, 3: ok with a content digest), the field and the
// path, then the error, or size, mtime (ns) and inode and the digest.
std::string encode_files(const ItemKey& key) {
  std::string out;
  for (std::size_t i = 0; i < key.file_count; ++i) {
    const FileFacts& facts = key.files[i];
    const bool digest = facts.state == 2 && facts.content != Digest{};
    out += static_cast<char>(digest ? 3 : facts.state);
    put_text(out, facts.field);
    put_text(out, facts.path);
    if (facts.state == 1) {
      put_text(out, facts.error);
    } else {
      put_u64(out, facts.size);
      put_u64(out, static_cast<std::uint64_t>(facts.mtime_ns));
      put_u64(out, facts.inode);
      if (digest) out.append(reinterpret_cast<const char*>(facts.content.data()), facts.content.size());
    }
  }
  return out;
}

bool decode_files(std::string_view blob, std::vector<FileFacts>& files) {
  files.clear();
  BlobReader in{blob};
  while (in.ok && !in.rest.empty()) {
    FileFacts facts;
    const int state = static_cast<unsigned char>(in.rest.front());
    in.rest.remove_prefix(1);
    facts.state = state == 3 ? 2 : state;
    facts.field = in.text();
    facts.path = in.text();
    if (state == 1) {
      facts.error = in.text();
    } else if (state == 2 || state == 3) {
      facts.size = in.u64();
      facts.mtime_ns = static_cast<std::int64_t>(in.u64());
      facts.inode = in.u64();
      if (state == 3) {
        if (in.rest.size() < facts.content.size()) return false;
        std::memcpy(facts.content.data(), in.rest.data(), facts.content.size());
        in.rest.remove_prefix(facts.content.size());
      }
    } else {
      return false;
    }
    files.push_back(std::move(facts));
  }
  return in.ok;
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
  sqlite3_stmt* begin = nullptr;
  sqlite3_stmt* commit = nullptr;
  std::vector<std::int64_t> touched;  // entries (rowids) hit whose last use is to be refreshed
  ~Reader() {
    sqlite3_finalize(get);
    sqlite3_finalize(begin);
    sqlite3_finalize(commit);
    sqlite3_close_v2(db);
  }
};

ResultCache::ResultCache(const CacheOptions& options, const std::vector<const Stage*>& stages)
    : options_(options), db_path_(database_path(options.directory)), started_unix_(now_unix()) {
  StageParts parts = stage_parts(stages);
  plugin_part_ = parts.plugin;
  config_part_ = parts.config;
  names_part_ = parts.names;
  file_fields_ = std::move(parts.file_fields);
  prefix_ = key_prefix(parts, options_.files);
  writer_db_ = open_database(options_.directory, true);
  // This run's builds row (plugins, configs, policy), shared by the entries it stores.
  Statement add(writer_db_, "INSERT OR IGNORE INTO builds(plugin, config, policy) VALUES(?1, ?2, ?3)");
  Statement find(writer_db_, "SELECT id FROM builds WHERE plugin = ?1 AND config = ?2 AND policy = ?3");
  bool found = false;
  if (add && find) {
    for (sqlite3_stmt* stmt : {add.stmt, find.stmt}) {
      sqlite3_bind_blob(stmt, 1, plugin_part_.data(), 32, SQLITE_STATIC);
      sqlite3_bind_blob(stmt, 2, config_part_.data(), 32, SQLITE_STATIC);
      sqlite3_bind_text(stmt, 3, to_string(options_.files), -1, SQLITE_STATIC);
    }
    if (sqlite3_step(add.stmt) == SQLITE_DONE && sqlite3_step(find.stmt) == SQLITE_ROW) {
      build_id_ = sqlite3_column_int64(find.stmt, 0);
      found = true;
    }
  }
  if (!found) {
    const std::string why = sqlite3_errmsg(writer_db_);
    sqlite3_close_v2(writer_db_);
    writer_db_ = nullptr;
    unusable(db_path_, "cannot record this run's plugin builds (" + why + ")");
  }
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
  sqlite3_finalize(insert_);
  sqlite3_finalize(touch_);
  sqlite3_close_v2(writer_db_);
}

void ResultCache::key_of(const Json& item, ItemKey& key) const {
  compute_key(prefix_, names_part_, options_.files, file_fields_, item, key);
}

void ResultCache::note(const std::string& text) {
  std::lock_guard lock(mutex_);
  if (std::find(notes_.begin(), notes_.end(), text) == notes_.end()) notes_.push_back(text);
}

void ResultCache::corrupt_entry() {
  counters.corrupt.fetch_add(1, std::memory_order_relaxed);
  note("cache " + db_path_ + ": corrupt entries were found and run again (and stored afresh)");
}

void ResultCache::lookup(const std::vector<const ItemKey*>& keys, std::vector<std::uint8_t>& hit,
                         std::vector<std::string>& outcomes) {
  hit.assign(keys.size(), 0);
  if (outcomes.size() < keys.size()) outcomes.resize(keys.size());
  if (std::all_of(keys.begin(), keys.end(), [](const ItemKey* key) { return key == nullptr; })) return;
  std::unique_ptr<Reader>& reader = readers_.local();
  if (!reader) {
    reader = std::make_unique<Reader>();
    if (sqlite3_open_v2(db_path_.c_str(), &reader->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) !=
            SQLITE_OK ||
        (sqlite3_busy_timeout(reader->db, 30000),
         // Lookups read the database through a memory map shared by the threads' connections
         // (and the page cache), not each connection's own copy of the pages it read.
         sqlite3_exec(reader->db, "PRAGMA mmap_size=1073741824", nullptr, nullptr, nullptr),
         sqlite3_prepare_v2(reader->db, "SELECT outcome, checksum, used, key, id FROM entries WHERE ident = ?1 AND keyh = ?2",
                            -1, &reader->get, nullptr) != SQLITE_OK) ||
        sqlite3_prepare_v2(reader->db, "BEGIN", -1, &reader->begin, nullptr) != SQLITE_OK ||
        sqlite3_prepare_v2(reader->db, "COMMIT", -1, &reader->commit, nullptr) != SQLITE_OK) {
      note("cache " + db_path_ + ": cannot read it (" + std::string(sqlite3_errmsg(reader->db)) +
           "): its items were run");
      sqlite3_finalize(reader->get);
      reader->get = nullptr;
    }
  }
  if (reader->get == nullptr) return;
  sqlite3_stmt* get = reader->get;
  // One read transaction for the batch: the database file is locked and unlocked once.
  sqlite3_step(reader->begin);
  sqlite3_reset(reader->begin);
  const std::int64_t stale = now_unix() - touch_after_seconds;
  bool read_failed = false;
  for (std::size_t i = 0; i < keys.size() && !read_failed; ++i) {
    const ItemKey* key = keys[i];
    if (key == nullptr) continue;
    sqlite3_bind_int64(get, 1, prefix64(key->identity));
    sqlite3_bind_int64(get, 2, prefix64(key->key));
    const int step = sqlite3_step(get);
    if (step == SQLITE_ROW && column_digest(get, 3) != key->key) {
      // Another key with the same 128 bits of identity and key: not this item's entry.
    } else if (step == SQLITE_ROW) {
      const auto* data = static_cast<const char*>(sqlite3_column_blob(get, 0));
      const std::string_view outcome(data != nullptr ? data : "", static_cast<std::size_t>(sqlite3_column_bytes(get, 0)));
      const auto checksum = static_cast<std::uint64_t>(sqlite3_column_int64(get, 1));
      const std::string_view key_text(reinterpret_cast<const char*>(key->key.data()), key->key.size());
      if (fnv1a(key_text, outcome) == checksum && !outcome.empty()) {
        hit[i] = 1;
        outcomes[i].assign(outcome);
        if (sqlite3_column_int64(get, 2) < stale) reader->touched.push_back(sqlite3_column_int64(get, 4));
      } else {
        corrupt_entry();
      }
    } else if (step != SQLITE_DONE) {
      counters.corrupt.fetch_add(1, std::memory_order_relaxed);
      note("cache " + db_path_ + ": a read failed (" + std::string(sqlite3_errmsg(reader->db)) +
           "): those items were run");
      read_failed = true;
    }
    sqlite3_reset(get);
  }
  if (sqlite3_get_autocommit(reader->db) == 0) {
    sqlite3_step(reader->commit);
    sqlite3_reset(reader->commit);
  }
  if (!reader->touched.empty()) {
    {
      std::lock_guard lock(mutex_);
      for (const auto& touched : reader->touched) touch_queue_.push_back(touched);
    }
    reader->touched.clear();
  }
}

void ResultCache::store(std::vector<StoredOutcome>& entries) {
  std::uint64_t dropped = 0;
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    for (StoredOutcome& entry : entries) {
      if (write_failed_ || queued_bytes_ > max_queued_bytes) {
        ++dropped;
        continue;
      }
      queued_bytes_ += entry.outcome.size() + 256;
      queue_.push_back(std::move(entry));
    }
    wake = queue_.size() >= write_batch_entries;
  }
  entries.clear();
  if (dropped > 0) counters.not_stored.fetch_add(dropped, std::memory_order_relaxed);
  if (wake) wake_.notify_one();
}

void ResultCache::writer_loop() {
  std::vector<StoredOutcome> entries;
  std::vector<std::int64_t> touched;
  std::unique_lock lock(mutex_);
  auto ready = [&] {
    return stopping_ || flushing_ || queue_.size() >= write_batch_entries || touch_queue_.size() >= write_batch_entries;
  };
  for (;;) {
    // Outcomes gather until a transaction's worth is queued, the interval passed, or the run
    // ends: a commit per entry would cost more than the entry.
    if (!ready()) wake_.wait_for(lock, write_interval, ready);
    if (queue_.empty() && touch_queue_.empty()) {
      if (stopping_) break;
      if (flushing_) {
        idle_.notify_all();
        wake_.wait_for(lock, write_interval, [&] { return stopping_ || !queue_.empty() || !touch_queue_.empty(); });
      }
      continue;
    }
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
  }
}

void ResultCache::write_entries(std::vector<StoredOutcome>& entries, std::vector<std::int64_t>& touched) {
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
  if (insert_ == nullptr) {
    sqlite3_prepare_v2(db,
                       "INSERT OR REPLACE INTO entries(ident, keyh, key, build, files, outcome, checksum, created, used) "
                       "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                       -1, &insert_, nullptr);
  }
  if (touch_ == nullptr) {
    sqlite3_prepare_v2(db, "UPDATE entries SET used = ?2 WHERE id = ?1", -1, &touch_, nullptr);
  }
  if (insert_ == nullptr || touch_ == nullptr) {
    counters.not_stored.fetch_add(entries.size(), std::memory_order_relaxed);
    return failed("preparing a write");
  }
  // In the index's order: each of its pages is visited once per transaction.
  std::sort(entries.begin(), entries.end(), [](const StoredOutcome& a, const StoredOutcome& b) {
    return std::pair(prefix64(a.key.identity), prefix64(a.key.key)) < std::pair(prefix64(b.key.identity), prefix64(b.key.key));
  });
  const std::int64_t now = now_unix();
  std::uint64_t written = 0;
  std::string files;
  sqlite3_stmt* s = insert_;
  for (StoredOutcome& entry : entries) {
    const ItemKey& key = entry.key;
    files = encode_files(key);
    const std::string_view key_text(reinterpret_cast<const char*>(key.key.data()), key.key.size());
    sqlite3_bind_int64(s, 1, prefix64(key.identity));
    sqlite3_bind_int64(s, 2, prefix64(key.key));
    sqlite3_bind_blob(s, 3, key.key.data(), 32, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, build_id_);
    if (files.empty()) {
      sqlite3_bind_null(s, 5);
    } else {
      sqlite3_bind_blob(s, 5, files.data(), static_cast<int>(files.size()), SQLITE_STATIC);
    }
    sqlite3_bind_blob(s, 6, entry.outcome.data(), static_cast<int>(entry.outcome.size()), SQLITE_STATIC);
    sqlite3_bind_int64(s, 7, static_cast<std::int64_t>(fnv1a(key_text, entry.outcome)));
    sqlite3_bind_int64(s, 8, now);
    const int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
      counters.not_stored.fetch_add(entries.size() - written, std::memory_order_relaxed);
      return failed("storing an outcome");
    }
    ++written;
  }
  for (const std::int64_t id : touched) {
    sqlite3_bind_int64(touch_, 1, id);
    sqlite3_bind_int64(touch_, 2, now);
    sqlite3_step(touch_);
    sqlite3_reset(touch_);
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
  detail::Statement count(db, (std::string("SELECT count(*), coalesce(sum(") + detail::payload_sql + "), 0) FROM entries").c_str());
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
  auto entries = [&] {
    detail::Statement count(db, "SELECT count(*) FROM entries");
    if (!count || sqlite3_step(count.stmt) != SQLITE_ROW) query_failed(directory, db);
    return static_cast<std::uint64_t>(sqlite3_column_int64(count.stmt, 0));
  };
  const std::uint64_t before = entries();
  if (older_than_days > 0) {
    const auto cutoff = detail::now_unix() - static_cast<std::int64_t>(older_than_days * 86400);
    exec("DELETE FROM entries WHERE used < " + std::to_string(cutoff));
  }
  if (max_bytes > 0) {
    // The most recently used entries whose payload fits in max_bytes stay.
    exec(std::string("DELETE FROM entries WHERE id IN (SELECT id FROM (SELECT id, sum(") + detail::payload_sql +
         ") OVER (ORDER BY used DESC, id DESC) AS running FROM entries) WHERE running > " + std::to_string(max_bytes) + ")");
  }
  report.removed = before - entries();
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
  detail::compute_key(detail::key_prefix(parts, files), parts.names, files, parts.file_fields, item, key);
  detail::Statement exact(db, "SELECT created, used FROM entries WHERE ident = ?1 AND keyh = ?2 AND key = ?3");
  if (!exact) query_failed(directory, db);
  sqlite3_bind_int64(exact.stmt, 1, detail::prefix64(key.identity));
  sqlite3_bind_int64(exact.stmt, 2, detail::prefix64(key.key));
  sqlite3_bind_blob(exact.stmt, 3, key.key.data(), 32, SQLITE_STATIC);
  if (sqlite3_step(exact.stmt) == SQLITE_ROW) {
    lines.insert(lines.begin(), "hit: an entry with this item's key is stored (key " + detail::hex(key.key) + ")");
    return lines;
  }
  detail::Statement same(db,
                         "SELECT b.plugin, b.config, b.policy, e.files FROM entries e JOIN builds b ON b.id = e.build "
                         "WHERE e.ident = ?1 ORDER BY e.used DESC, e.id DESC LIMIT 1");
  if (!same) query_failed(directory, db);
  sqlite3_bind_int64(same.stmt, 1, detail::prefix64(key.identity));
  std::vector<std::string> reasons;
  const std::vector<detail::FileFacts> now(key.files.begin(), key.files.begin() + static_cast<std::ptrdiff_t>(key.file_count));
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
    std::vector<detail::FileFacts> stored;
    const auto* blob = static_cast<const char*>(sqlite3_column_blob(same.stmt, 3));
    const bool decoded = detail::decode_files(
        std::string_view(blob != nullptr ? blob : "", static_cast<std::size_t>(sqlite3_column_bytes(same.stmt, 3))), stored);
    if (decoded && policy == to_string(files)) {
      auto text = [](std::int64_t value) { return std::to_string(value); };
      for (const detail::FileFacts& current : now) {
        const auto was = std::find_if(stored.begin(), stored.end(),
                                      [&](const detail::FileFacts& f) { return f.field == current.field; });
        const std::string name = "input file " + current.path + " (item field \"" + current.field + "\")";
        if (was == stored.end()) {
          reasons.push_back(name + ": not among the cached entry's input files (a plugin now declares it)");
          continue;
        }
        if (was->state != current.state || was->error != current.error) {
          reasons.push_back("file access of " + name + ": was " + (was->state == 1 ? "'" + was->error + "'" : "readable") +
                            ", now " + (current.state == 1 ? "'" + current.error + "'" : "readable"));
          continue;
        }
        if (current.state != 2) continue;
        if (was->size != current.size) {
          reasons.push_back("file size of " + name + ": was " + std::to_string(was->size) + ", now " +
                            std::to_string(current.size));
        }
        if (files == CacheFilePolicy::stat && was->mtime_ns != current.mtime_ns) {
          reasons.push_back("file modification time (ns) of " + name + ": was " + text(was->mtime_ns) + ", now " +
                            text(current.mtime_ns));
        }
        if (files == CacheFilePolicy::stat && was->inode != current.inode) {
          reasons.push_back("file inode of " + name + ": was " + std::to_string(was->inode) + ", now " +
                            std::to_string(current.inode));
        }
        if (files == CacheFilePolicy::content && was->content != current.content) {
          reasons.push_back("file content (SHA-256) of " + name + ": was " + detail::hex(was->content) + ", now " +
                            detail::hex(current.content));
        }
      }
      for (const detail::FileFacts& old : stored) {
        if (std::none_of(now.begin(), now.end(), [&](const detail::FileFacts& f) { return f.field == old.field; })) {
          reasons.push_back("input file " + old.path + " (item field \"" + old.field +
                            "\"): in the cached entry's key, no longer declared by the plugins");
        }
      }
    }
    if (reasons.empty()) reasons.push_back("the closest entry's key parts all match: it was removed or replaced");
  } else {
    // Entries with the same `path` file: the item's other fields changed (a diagnostic scan).
    std::int64_t with_path = 0;
    const detail::FileFacts* path_file = key.path_file();
    detail::Statement scan(db, "SELECT files FROM entries");
    std::vector<detail::FileFacts> stored;
    while (path_file != nullptr && scan && sqlite3_step(scan.stmt) == SQLITE_ROW) {
      const auto* blob = static_cast<const char*>(sqlite3_column_blob(scan.stmt, 0));
      if (detail::decode_files(std::string_view(blob != nullptr ? blob : "",
                                                static_cast<std::size_t>(sqlite3_column_bytes(scan.stmt, 0))),
                               stored) &&
          !stored.empty() && stored[0].field == "path" && stored[0].path == path_file->path) {
        ++with_path;
      }
    }
    if (with_path > 0) {
      reasons.push_back("item: its JSON differs from every cached item with path " + path_file->path +
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
