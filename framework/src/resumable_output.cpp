// SPDX-License-Identifier: MIT
// ResumableOutput: FILE.part as the record of finished items, FILE.journal (the run's
// fingerprint), the FILE.lock flock, the checks --resume makes before it continues, and
// compact_records, which keeps each index's last record (in index order for an ordered run).
#include <coremap/resumable_output.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <vector>

#include <openssl/evp.h>

#include <coremap/error.hpp>

namespace coremap {
namespace {

constexpr int journal_version = 1;

std::string os_message(const std::string& what, const std::string& path) {
  return what + " '" + path + "': " + std::strerror(errno);
}

// A file descriptor closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd) noexcept : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// SHA-256 of a file's contents, as hex; `what` names the file in errors.
template <class Error>
std::string sha256_of_file(const std::string& path, const std::string& what) {
  const Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw Error(os_message("cannot read " + what, path));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw Error("OpenSSL: cannot start SHA-256");
  std::vector<unsigned char> buffer(std::size_t{1} << 20);
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(os_message("cannot read " + what, path));
    }
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buffer.data(), static_cast<std::size_t>(n));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &length);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out.push_back(hex[digest[i] >> 4]);
    out.push_back(hex[digest[i] & 15]);
  }
  return out;
}

// Makes a rename or unlink in `path`'s directory durable (best effort: some file systems refuse).
void sync_directory_of(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() >= 0) ::fsync(dir_fd.get());
}

// Writes `text` to `path` durably: a temporary file, fsync, rename, fsync of the directory.
// `what` names the file in messages ("journal", "checkpoint").
void write_durably(const std::string& path, const std::string& text, const std::string& what = "journal") {
  const std::string tmp = path + ".tmp";
  check_replaceable(path, what);
  check_replaceable(tmp, "temporary " + what);
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0666));
    if (fd.get() < 0) throw OutputError(os_message("cannot create output " + what, tmp));
    std::string_view rest = text;
    while (!rest.empty()) {
      const ssize_t n = ::write(fd.get(), rest.data(), rest.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        throw OutputError(os_message("cannot write", tmp));
      }
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
    if (::fsync(fd.get()) != 0) throw OutputError(os_message("cannot sync", tmp));
    if (::close(fd.release()) != 0) throw OutputError(os_message("cannot close", tmp));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw OutputError(os_message("cannot rename to", path));
  sync_directory_of(path);
}

// The index and status of one record line, which RecordWriter always starts with
// {"index":N,"ok":true or {"index":N,"ok":false (or {"index":N,"sub":S,"ok":... with fan-out).
struct RecordHead {
  std::uint64_t index = 0;
  std::uint64_t sub = 0;
  bool ok = false;
  bool fanned = false;
};

// Whether `head` starts a new run of records (another item, or the same item again: a retry
// appended right after the item's earlier, failed, records). An item's own records follow
// one another with rising "sub" numbers.
bool starts_run(const RecordHead& head, const std::optional<RecordHead>& previous) {
  return !previous || head.index != previous->index || !head.fanned || !previous->fanned || head.sub <= previous->sub;
}

std::optional<RecordHead> parse_head(std::string_view line) {
  constexpr std::string_view prefix = "{\"index\":";
  if (!line.starts_with(prefix)) return std::nullopt;
  RecordHead head;
  const char* first = line.data() + prefix.size();
  const char* const last = line.data() + line.size();
  auto [end, ec] = std::from_chars(first, last, head.index);
  if (ec != std::errc() || end == first) return std::nullopt;
  constexpr std::string_view sub = ",\"sub\":";
  if (std::string_view(end, static_cast<std::size_t>(last - end)).starts_with(sub)) {
    const char* digits = end + sub.size();
    const auto parsed = std::from_chars(digits, last, head.sub);
    if (parsed.ec != std::errc() || parsed.ptr == digits) return std::nullopt;
    end = parsed.ptr;
    head.fanned = true;
  }
  const std::string_view rest(end, static_cast<std::size_t>(last - end));
  if (rest.starts_with(",\"ok\":true,")) {
    head.ok = true;
  } else if (!rest.starts_with(",\"ok\":false,")) {
    return std::nullopt;
  }
  return head;
}

// Calls on_line(line, offset) for every complete line of the file open at `fd`; returns the
// offset just past the last newline (anything after it is a torn record).
template <class OnLine>
std::uint64_t for_each_record_line(int fd, const std::string& path, OnLine&& on_line) {
  std::vector<char> buffer(std::size_t{1} << 20);
  std::size_t have = 0;
  std::uint64_t base = 0;  // file offset of buffer[0]
  for (;;) {
    if (have == buffer.size()) buffer.resize(buffer.size() * 2);
    const ssize_t n = ::read(fd, buffer.data() + have, buffer.size() - have);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw OutputError(os_message("cannot read", path));
    }
    if (n == 0) break;
    const std::size_t scan_from = have;
    have += static_cast<std::size_t>(n);
    std::size_t start = 0;
    for (std::size_t i = scan_from; i < have; ++i) {
      if (buffer[i] != '\n') continue;
      on_line(std::string_view(buffer.data() + start, i - start), base + start);
      start = i + 1;
    }
    std::memmove(buffer.data(), buffer.data() + start, have - start);
    have -= start;
    base += start;
  }
  return base;
}

std::string describe_difference(const Json& earlier, const Json& now) {
  std::string out;
  const Json none;
  auto at = [&](const Json& j, std::initializer_list<const char*> keys) -> const Json& {
    const Json* p = &j;
    for (const char* key : keys) {
      if (!p->is_object() || !p->contains(key)) return none;
      p = &p->at(key);
    }
    return *p;
  };
  auto differs = [&](const std::string& what, const Json& a, const Json& b) {
    if (a == b) return;
    if (!out.empty()) out += "; ";
    out += what + " was " + a.dump() + ", now " + b.dump();
  };
  differs("the manifest's SHA-256", at(earlier, {"manifest", "sha256"}), at(now, {"manifest", "sha256"}));
  differs("the manifest's size", at(earlier, {"manifest", "size"}), at(now, {"manifest", "size"}));
  differs("the manifest format", at(earlier, {"manifest", "format"}), at(now, {"manifest", "format"}));
  // Relative paths in the items name other files from another directory. (Journals written
  // before coremap recorded it say nothing of it: not compared then.)
  if (!at(earlier, {"working_directory"}).is_null()) {
    differs("the working directory (relative paths in the items are opened from it)", at(earlier, {"working_directory"}),
            at(now, {"working_directory"}));
  }
  const Json& a = at(earlier, {"stages"});
  const Json& b = at(now, {"stages"});
  if (!a.is_array() || !b.is_array() || a.size() != b.size()) {
    differs("the number of stages", a.is_array() ? Json(a.size()) : Json(), b.is_array() ? Json(b.size()) : Json());
    return out;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    const std::string stage = a.size() == 1 ? "" : "stage " + std::to_string(i + 1) + ": ";
    differs(stage + "the plugin", at(a[i], {"plugin", "name"}), at(b[i], {"plugin", "name"}));
    differs(stage + "the plugin's version", at(a[i], {"plugin", "version"}), at(b[i], {"plugin", "version"}));
    differs(stage + "the plugin library's SHA-256", at(a[i], {"plugin", "sha256"}), at(b[i], {"plugin", "sha256"}));
    differs(stage + "the config", at(a[i], {"config"}), at(b[i], {"config"}));
  }
  return out;
}

}  // namespace

std::string file_sha256(const std::string& path) { return sha256_of_file<Error>(path, "file"); }

Json run_fingerprint(const std::string& manifest_path, ManifestFormat format, const Pipeline& pipeline) {
  Json manifest = {{"path", manifest_path}, {"format", std::string(to_string(format))}};
  std::error_code status_error;
  const auto type = manifest_path == "-" ? std::filesystem::file_type::unknown
                                         : std::filesystem::status(manifest_path, status_error).type();
  if (type == std::filesystem::file_type::fifo || type == std::filesystem::file_type::socket ||
      type == std::filesystem::file_type::character) {
    // A FIFO or a device is read once, as the run goes: like standard input, it cannot be
    // hashed beforehand (that would consume it), and a run from it cannot be resumed.
    manifest["stream"] = true;
  } else if (manifest_path != "-") {
    std::error_code ec;
    const auto size = std::filesystem::file_size(manifest_path, ec);
    if (ec) throw ManifestError("cannot read manifest '" + manifest_path + "': " + ec.message());
    manifest["size"] = size;
    manifest["sha256"] = sha256_of_file<ManifestError>(manifest_path, "manifest");
  }
  Json stages = Json::array();
  for (const Stage& stage : pipeline.stages) {
    const Plugin& plugin = *stage.plugin;
    Json plugin_json = {{"name", std::string(plugin.name())}, {"version", std::string(plugin.version())}};
    std::error_code ec;
    if (std::filesystem::is_regular_file(plugin.path(), ec)) {
      plugin_json["path"] = plugin.path();
      plugin_json["sha256"] = sha256_of_file<PluginError>(plugin.path(), "plugin");
    }
    stages.push_back({{"name", stage.name}, {"plugin", std::move(plugin_json)}, {"config", stage.config}});
  }
  std::error_code cwd_error;
  const std::filesystem::path cwd = std::filesystem::current_path(cwd_error);
  return {{"coremap_journal", journal_version},
          {"manifest", std::move(manifest)},
          {"stages", std::move(stages)},
          {"working_directory", cwd_error ? Json() : Json(cwd.string())}};
}

Json run_fingerprint(const std::string& manifest_path, ManifestFormat format, const Plugin& plugin,
                     const Json& resolved_config) {
  Pipeline pipeline;
  pipeline.stages.push_back(Stage{std::string(plugin.name()), std::shared_ptr<const Plugin>(&plugin, [](const Plugin*) {}),
                                  resolved_config, Concurrency::unlimited()});
  return run_fingerprint(manifest_path, format, pipeline);
}

namespace {

// The pid and host a lock file's holder wrote into it ("" when not yet written).
std::string lock_holder(int fd) {
  char buffer[512];
  const ssize_t n = ::pread(fd, buffer, sizeof buffer, 0);
  if (n <= 0) return "";
  std::string text(buffer, static_cast<std::size_t>(n));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  const auto space = text.find(' ');
  if (space == std::string::npos) return "pid " + text;
  return "pid " + text.substr(0, space) + " on " + text.substr(space + 1);
}

// Takes an exclusive flock(2) on `lock_path` (created if missing) for as long as the returned
// descriptor is open; the kernel drops it when the process dies, so kill -9 leaves no stale
// lock. Writes "PID HOST" into the file for the message a second run prints. `whose` names the
// output in that message.
int lock_output(const std::string& lock_path, const std::string& whose) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    check_replaceable(lock_path, "lock file");
    Fd fd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666));
    if (fd.get() < 0) throw OutputError(os_message("cannot create output lock", lock_path));
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK) throw OutputError(os_message("cannot lock", lock_path));
      const std::string holder = lock_holder(fd.get());
      throw OutputError(whose + " is being written by another coremap run (" +
                        (holder.empty() ? "pid not yet known" : holder) + ", holding the lock " + lock_path +
                        "): two runs must not write one output at once; wait for that run to end, or choose "
                        "another -o");
    }
    // The run that held the lock removes the file as it ends, perhaps between our open and
    // flock: then the lock taken is on a file no longer there, and another try is needed.
    struct stat held {};
    struct stat there {};
    if (::fstat(fd.get(), &held) != 0) throw OutputError(os_message("cannot examine", lock_path));
    if (::lstat(lock_path.c_str(), &there) != 0 || held.st_ino != there.st_ino || held.st_dev != there.st_dev) continue;
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    const std::string text = std::to_string(::getpid()) + " " + host + "\n";
    if (::ftruncate(fd.get(), 0) != 0 ||
        ::pwrite(fd.get(), text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
      throw OutputError(os_message("cannot write lock file", lock_path));
    }
    return fd.release();
  }
  throw OutputError("cannot lock '" + lock_path + "': it keeps being replaced");
}

bool same_file(const struct stat& a, const std::string& path) {
  struct stat b {};
  return ::stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// The files coremap keeps next to an output FILE, and what they are called in messages.
constexpr std::pair<std::string_view, std::string_view> companions[] = {
    {".part", "partial output"}, {".journal", "journal"}, {".lock", "lock file"},
    {".compact", "reordered output"}, {".journal.tmp", "temporary journal"},
    {".checkpoint", "checkpoint"},     {".checkpoint.tmp", "temporary checkpoint"}};

constexpr int checkpoint_version = 1;

// Items in the manifest named by a fingerprint, counted with the reader the run uses; nullopt
// when the fingerprint names none.
std::optional<std::uint64_t> count_manifest_items(const Json& fingerprint) {
  if (!fingerprint.is_object() || !fingerprint.contains("manifest")) return std::nullopt;
  const Json* manifest = &fingerprint.at("manifest");
  if (!manifest->contains("path") || !manifest->contains("format")) return std::nullopt;
  const std::string path = manifest->at("path").get<std::string>();
  if (path == "-") return std::nullopt;
  ManifestReader reader(path, parse_manifest_format(manifest->at("format").get<std::string>()));
  ItemBatch batch;
  std::uint64_t count = 0;
  while (reader.next_batch(batch, std::size_t{1} << 16, std::size_t{16} << 20)) count += batch.items.size();
  return count;
}

}  // namespace

ResumableOutput::ResumableOutput(const std::string& path, const Json& fingerprint, Options options)
    : path_(path), fingerprint_(fingerprint), options_(options), done_(std::make_shared<IndexSet>()) {
  if (path == "-") throw UsageError("a resumable output needs a file, not standard output");
  const OutputTarget target = resolve_output(path);
  switch (target.kind) {
    case OutputTarget::Kind::stream:
      if (options.resume) {
        throw ResumeError("--resume: output '" + path + "' is " + target.description +
                          ", not a regular file: records written into it are not kept, so there is no earlier run "
                          "to resume; rerun without --resume");
      }
      streaming_ = true;
      return;
    case OutputTarget::Kind::directory:
    case OutputTarget::Kind::other:
      throw OutputError("output '" + path + "' is " + target.description +
                        ": -o needs a file name (a regular file, or a character device or FIFO to stream into)");
    case OutputTarget::Kind::missing:
    case OutputTarget::Kind::regular:
      break;
  }
  target_ = target.path;
  part_path_ = target_ + ".part";
  journal_path_ = target_ + ".journal";
  lock_path_ = target_ + ".lock";
  checkpoint_path_ = target_ + ".checkpoint";
  refuse_manifest();
  // An output named X.lock is the file every run on X creates, truncates and removes as its
  // lock: it would be removed as this run ends (and truncated by any run on X).
  if (target_.ends_with(".lock") && target_.size() > 5) {
    throw UsageError("output '" + path + "' is named like the lock file of output '" +
                     target_.substr(0, target_.size() - 5) +
                     "', which coremap creates, truncates and removes while a run writes that output; choose "
                     "another -o");
  }
  // A companion of this output (X.part, X.journal, ...) that is itself the output of a recorded
  // run (X.part.journal exists) would be removed or replaced by this run: checked before the
  // lock, whose file is one of them.
  for (const auto& [suffix, role] : companions) {
    const std::string companion = target_ + std::string(suffix);
    if (std::error_code ec; std::filesystem::exists(companion + ".journal", ec)) {
      throw OutputError("output '" + path + "' would replace its " + std::string(role) + " " + companion +
                        ", which is the output of the coremap run recorded in " + companion +
                        ".journal: choose another -o (or move " + companion + " and its journal away)");
    }
  }
  // Exclusive from here on: nothing is read, renamed or truncated before the lock is held.
  // An output named like another output's companion (-o X.part) takes X's lock too, so it
  // cannot run beside the run writing X.
  locks_.held.emplace_back(lock_path_, lock_output(lock_path_, "output '" + path + "'"));
  for (const auto& [suffix, role] : companions) {
    if (!target_.ends_with(suffix) || target_.size() == suffix.size()) continue;
    const std::string base = target_.substr(0, target_.size() - suffix.size());
    const std::string whose = "output '" + path + "' is the " + std::string(role) + " of '" + base + "', which";
    locks_.held.emplace_back(base + ".lock", lock_output(base + ".lock", whose));
    if (std::error_code ec; std::filesystem::exists(base + ".journal", ec)) {
      throw OutputError("output '" + path + "' is the " + std::string(role) + " of the coremap run recorded in " +
                        base + ".journal; writing it would destroy that run's records: choose another -o (or "
                        "finish that run with --resume, or remove " + base + ".journal)");
    }
  }
  check_replaceable(journal_path_, "journal");
  check_replaceable(part_path_, "partial output");
  check_replaceable(target_ + ".compact", "reordered output");
  check_replaceable(checkpoint_path_, "checkpoint");
  if (options.checkpointed && options.resume && options.retry_failed) {
    throw ResumeError("--retry-failed: the run reduces, and a failed item may already be in the reduction's state "
                      "(it failed in or after a reducing stage), so running it again could count it twice; rerun "
                      "with --restart");
  }

  std::error_code ec;
  const bool have_journal = std::filesystem::exists(journal_path_, ec);
  if (!options.resume && !options.restart) {
    // An unfinished run's records: a rerun without --resume would start over and drop them.
    struct stat part {};
    if (::stat(part_path_.c_str(), &part) == 0 && part.st_size > 0) {
      throw UsageError(part_path_ + " holds " + std::to_string(part.st_size) +
                       " bytes of records of an unfinished run of this output" +
                       (have_journal ? " (recorded in " + journal_path_ + ")" : std::string()) +
                       ": finish it with --resume, or start afresh with --restart (which discards them)");
    }
  }
  if (options.resume && !have_journal) {
    // Records without the journal that says which run wrote them cannot be checked, and
    // starting afresh would drop them.
    struct stat part {};
    if (::stat(part_path_.c_str(), &part) == 0 && part.st_size > 0) {
      throw ResumeError("--resume: " + part_path_ + " holds " + std::to_string(part.st_size) +
                        " bytes of records, but there is no journal " + journal_path_ +
                        " saying which run wrote them: restore the journal to finish that run, or start afresh "
                        "with --restart (which discards them)");
    }
    note_ = "--resume: no journal " + journal_path_ + " (no earlier run of this output): starting from the first item";
  }
  if (options.resume && have_journal) {
    std::ifstream in(journal_path_, std::ios::binary);
    Json earlier;
    try {
      earlier = Json::parse(in);
    } catch (const Json::exception& e) {
      throw ResumeError(journal_path_ + ": not a coremap journal: " + e.what());
    }
    if (fingerprint.at("manifest").at("path") == "-") {
      throw ResumeError("--resume needs the manifest as a file: standard input cannot be checked against the journal");
    }
    if (fingerprint.at("manifest").contains("stream")) {
      throw ResumeError("--resume needs the manifest as a regular file: " +
                        fingerprint.at("manifest").at("path").get<std::string>() +
                        " is a FIFO, socket or device, read once, and cannot be checked against the journal");
    }
    if (const std::string difference = describe_difference(earlier, fingerprint); !difference.empty()) {
      throw ResumeError("--resume: this is not the run recorded in " + journal_path_ + ": " + difference +
                        ". Rerun without --resume to start afresh, or with the same manifest, plugin and config");
    }
    // FILE.part holds an unfinished run; a finished one is continued from FILE (for
    // --retry-failed, or to check it is complete). It is checked whole before anything changes.
    std::string source;
    if (std::filesystem::exists(part_path_, ec)) {
      source = part_path_;
    } else if (std::filesystem::exists(target_, ec)) {
      source = target_;
    }
    std::optional<Checkpoint> checkpoint;
    if (options.checkpointed) {
      checkpoint = read_checkpoint(source);
      if (checkpoint && source.empty() && checkpoint->items > 0) {
        throw ResumeError("--resume: " + checkpoint_path_ + " covers " + std::to_string(checkpoint->items) +
                          " items, but their records (" + part_path_ + " or " + target_ +
                          ") are missing; rerun with --restart");
      }
      if (!checkpoint && source == target_) {
        throw ResumeError("--resume: " + target_ + " is a finished run with reducing stages, but " + checkpoint_path_ +
                          ", the state its summary comes from, is missing; rerun with --restart");
      }
    }
    if (!source.empty()) {
      const std::uint64_t keep = scan_earlier(source, count_manifest_items(fingerprint), checkpoint);
      if (source == target_ && ::rename(target_.c_str(), part_path_.c_str()) != 0) {
        throw OutputError(os_message("cannot rename '" + target_ + "' to", part_path_));
      }
      struct stat st {};
      if (::stat(part_path_.c_str(), &st) != 0) throw OutputError(os_message("cannot examine", part_path_));
      if (static_cast<std::uint64_t>(st.st_size) > keep &&
          ::truncate(part_path_.c_str(), static_cast<off_t>(keep)) != 0) {
        throw OutputError(os_message("cannot truncate", part_path_));
      }
    }
    resumed_ = true;
  }
}

void ResumableOutput::refuse_manifest() const {
  if (!fingerprint_.is_object() || !fingerprint_.contains("manifest")) return;
  const Json* manifest = &fingerprint_.at("manifest");
  if (!manifest->contains("path") || !manifest->at("path").is_string()) return;
  const std::string manifest_path = manifest->at("path").get<std::string>();
  struct stat st {};
  if (manifest_path == "-" || ::stat(manifest_path.c_str(), &st) != 0) return;
  if (same_file(st, target_)) {
    throw UsageError("output '" + path_ + "' is the manifest '" + manifest_path +
                     "' itself: the run would replace its own input; choose another -o");
  }
  for (const auto& [suffix, role] : companions) {
    if (same_file(st, target_ + std::string(suffix))) {
      throw UsageError("the manifest '" + manifest_path + "' is " + target_ + std::string(suffix) + ", the " +
                       std::string(role) + " of output '" + path_ +
                       "', which the run would replace; choose another -o");
    }
  }
}

void ResumableOutput::open() {
  if (sink_) return;
  if (streaming_) {
    sink_.emplace(path_);
    return;
  }
  // A reordered file left by a run that died while writing it is incomplete: never used.
  const std::string compact = target_ + ".compact";
  if (::unlink(compact.c_str()) != 0 && errno != ENOENT) throw OutputError(os_message("cannot remove", compact));
  if (!resumed_) {
    check_replaceable(part_path_, "partial output");
    // An earlier run's checkpoint goes first (durably), so it never sits beside this run's
    // journal.
    if (::unlink(checkpoint_path_.c_str()) == 0) {
      sync_directory_of(checkpoint_path_);
    } else if (errno != ENOENT) {
      throw OutputError(os_message("cannot remove", checkpoint_path_));
    }
    if (::unlink(part_path_.c_str()) != 0 && errno != ENOENT) throw OutputError(os_message("cannot remove", part_path_));
    write_durably(journal_path_, fingerprint_.dump(2) + "\n");
  }
  sink_.emplace(target_, FileSink::Options{.resumable = true, .sync_interval = options_.sync_interval});
}

ResumableOutput::~ResumableOutput() { sink_.reset(); }  // FILE.part closed before the lock goes

ResumableOutput::Locks::~Locks() {
  // Removed while still held, so a run that opened the file just before finds, once it has
  // the lock, that the file is gone, and makes a new one (lock_output).
  for (const auto& [path, fd] : held) ::unlink(path.c_str());
  for (const auto& [path, fd] : held) ::close(fd);
}

Sink& ResumableOutput::sink() noexcept { return *sink_; }

std::optional<ResumableOutput::Checkpoint> ResumableOutput::read_checkpoint(const std::string& source) {
  std::error_code ec;
  if (!std::filesystem::exists(checkpoint_path_, ec)) {
    if (!source.empty()) {
      note_checkpoint_ = "; no checkpoint of the reduction yet (" + checkpoint_path_ +
                         "), so every record is dropped and the run starts from the first item";
    }
    return std::nullopt;
  }
  std::ifstream in(checkpoint_path_, std::ios::binary);
  Json saved;
  try {
    saved = Json::parse(in);
  } catch (const Json::exception& e) {
    throw ResumeError(checkpoint_path_ + ": not a coremap checkpoint: " + e.what() + "; rerun with --restart");
  }
  auto refuse = [&](const std::string& what) {
    return ResumeError("--resume: " + checkpoint_path_ + ": " + what + "; rerun with --restart");
  };
  if (!saved.is_object() || saved.value("coremap_checkpoint", 0) != checkpoint_version || !saved.contains("items") ||
      !saved["items"].is_number_unsigned() || !saved.contains("records") || !saved["records"].is_object() ||
      !saved["records"].contains("bytes") || !saved["records"]["bytes"].is_number_unsigned() ||
      !saved.contains("states") || !saved["states"].is_object()) {
    throw refuse("not a coremap checkpoint (version " + std::to_string(checkpoint_version) + ")");
  }
  if (saved.value("journal_sha256", std::string()) != sha256_of_file<OutputError>(journal_path_, "journal")) {
    throw refuse("it was written for another run than the one " + journal_path_ + " records");
  }
  Checkpoint checkpoint;
  checkpoint.items = saved["items"].get<std::uint64_t>();
  checkpoint.bytes = saved["records"]["bytes"].get<std::uint64_t>();
  checkpoint.complete = saved.value("complete", false);
  if (source == target_ && !checkpoint.complete) {
    throw refuse(target_ + " is a finished run, but the checkpoint covers only its first " +
                 std::to_string(checkpoint.items) + " items");
  }
  resume_states_ = std::move(saved["states"]);
  return checkpoint;
}

std::uint64_t ResumableOutput::scan_earlier(const std::string& source, std::optional<std::uint64_t> items,
                                            const std::optional<Checkpoint>& checkpoint) {
  Fd fd(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw OutputError(os_message("cannot open", source));
  // An item's records are one run of consecutive lines (a batch holds whole items). A later
  // run for the same index supersedes the earlier one only when that one failed (a retry with
  // --retry-failed); any other repeat, a line that is not a whole coremap record, or an index
  // past the manifest's end means the file was damaged, and nothing is trusted. `failed` holds
  // the items whose last run has an error record.
  IndexSet failed;
  std::uint64_t line = 0;
  std::optional<RecordHead> previous;
  std::uint64_t last_run_offset = 0;  // where the file's last run of records starts
  auto damaged = [&](const std::string& what) {
    return ResumeError(source + ":" + std::to_string(line) + ": " + what +
                       "; the file is damaged, so --resume cannot trust it: repair or remove that line, or rerun "
                       "without --resume");
  };
  // A reducing run resumes from its checkpoint: the records after it are dropped (the
  // reduction's state does not cover their items); without one, all of them.
  const bool checkpointed = options_.checkpointed;
  std::uint64_t limit = ~std::uint64_t{0};
  if (checkpointed && source != target_) limit = checkpoint ? checkpoint->bytes : 0;
  if (checkpointed && checkpoint) items = checkpoint->items;
  std::uint64_t with_records = 0;
  const std::uint64_t complete =
      for_each_record_line(fd.get(), source, [&](std::string_view text, std::uint64_t offset) {
        if (offset >= limit) return;
        ++line;
        const std::optional<RecordHead> head = parse_head(text);
        if (!head) {
          throw ResumeError(source + ":" + std::to_string(line) +
                            ": not a coremap record (it should start with {\"index\":N,\"ok\":...); cannot resume");
        }
        // The JSON parser stops at a NUL byte as at the end of its input, and JSON allows
        // whitespace after the object: neither is a line coremap wrote, and either would be
        // copied into the resumed output as it is.
        if (text.find('\0') != std::string_view::npos) throw damaged("the record holds a NUL byte");
        if (!Json::accept(text)) throw damaged("the record is not valid JSON");
        if (text.back() != '}') throw damaged("the record does not end where its JSON object ends");
        if (items && head->index >= *items) {
          throw damaged("item " + std::to_string(head->index) +
                        (checkpointed && checkpoint ? " is past the checkpoint's " + std::to_string(*items) + " items"
                                                    : " is past the manifest's end (it has " +
                                                          std::to_string(*items) + " items)"));
        }
        if (starts_run(*head, previous)) {
          if (previous && head->index < previous->index) sorted_prefix_ = false;
          if (!done_->insert(head->index)) {
            if (!failed.contains(head->index)) {
              throw damaged("item " + std::to_string(head->index) +
                            (head->fanned ? " (sub " + std::to_string(head->sub) + ")" : std::string()) +
                            " is recorded again after an ok record");
            }
            needs_rewrite_ = true;
            failed.erase(head->index);
          }
          last_run_offset = offset;
        }
        if (!head->ok) failed.insert(head->index);
        previous = head;
      });
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw OutputError(os_message("cannot stat", source));
  if (checkpointed) {
    if (limit != ~std::uint64_t{0} && complete < limit) {
      throw ResumeError("--resume: " + source + " holds " + std::to_string(complete) + " bytes of whole records, but " +
                        checkpoint_path_ + " says " + std::to_string(limit) +
                        " were written and synced before it; the file is damaged: rerun with --restart");
    }
    // Every item below the checkpoint's is done, also one with no record (a stage dropped it).
    with_records = done_->size();
    earlier_failed_ = failed.size();
    earlier_ok_ = with_records - earlier_failed_;
    if (checkpoint) {
      for (std::uint64_t i = 0; i < checkpoint->items; ++i) done_->insert(i);
    }
    const std::uint64_t keep = std::min(limit, complete);
    const std::uint64_t dropped = static_cast<std::uint64_t>(st.st_size) - keep;
    note_ = "--resume: " + std::to_string(done_->size()) + " items covered by the reduction's checkpoint" +
            (checkpoint ? " in " + checkpoint_path_ : std::string()) + " (" + std::to_string(earlier_ok_) + " ok, " +
            std::to_string(earlier_failed_) + " failed records in " + source + ")" +
            (dropped > 0 ? "; dropped " + std::to_string(dropped) +
                               " bytes of records written after it (their items run again)"
                         : std::string()) +
            note_checkpoint_;
    return keep;
  }
  std::uint64_t keep = complete;
  std::string torn;
  if (previous && previous->fanned) {
    // The last item fanned out: the interruption may have come between its records, so it
    // runs again whole.
    keep = last_run_offset;
    done_->erase(previous->index);
    failed.erase(previous->index);
    torn = "; the last item's records are dropped and it runs again (it fanned out, so they may be incomplete)";
  }
  if (static_cast<std::uint64_t>(st.st_size) > keep && keep == complete) {
    torn = "; cut off a record torn by the interruption (" +
           std::to_string(static_cast<std::uint64_t>(st.st_size) - complete) + " bytes)";
  }
  earlier_failed_ = failed.size();
  earlier_ok_ = done_->size() - earlier_failed_;
  if (sorted_prefix_ && !done_->is_prefix()) sorted_prefix_ = false;
  if (options_.retry_failed && earlier_failed_ > 0) {
    // Run the failed items again; their old records go when the output is rewritten.
    for (std::uint64_t i = 0, left = earlier_failed_; left > 0; ++i) {
      if (failed.contains(i)) {
        done_->erase(i);
        --left;
      }
    }
    needs_rewrite_ = true;
  }
  note_ = "--resume: " + std::to_string(earlier_ok_ + earlier_failed_) + " items already recorded in " + source +
          " (" + std::to_string(earlier_ok_) + " ok, " + std::to_string(earlier_failed_) + " failed" +
          (options_.retry_failed && earlier_failed_ > 0 ? ", to be run again" : "") + ")" + torn;
  if (options_.retry_failed) earlier_failed_ = 0;
  return keep;
}

void ResumableOutput::finish(bool ordered) {
  if (streaming_ || !(needs_rewrite_ || (ordered && !sorted_prefix_))) {
    sink_->finish();
    return;
  }
  // FILE.part stays the record of the run until the rewritten FILE is complete and synced: a
  // full disk or a crash while rewriting leaves FILE.part for --resume and no FILE.
  sink_->keep_partial();
  compact_records(part_path_, target_, ordered);
  if (::unlink(part_path_.c_str()) != 0) throw OutputError(os_message("cannot remove", part_path_));
  sync_directory_of(target_);
}

std::string ResumableOutput::keep_partial() { return sink_->keep_partial(); }

void ResumableOutput::checkpoint(std::uint64_t items, const Json& states, bool complete) {
  if (streaming_) return;
  // The records first: the checkpoint names a prefix of FILE.part that is already on disk.
  const std::uint64_t bytes = sink_->sync();
  if (journal_sha256_.empty()) journal_sha256_ = sha256_of_file<OutputError>(journal_path_, "journal");
  const Json saved = {{"coremap_checkpoint", checkpoint_version},
                      {"journal_sha256", journal_sha256_},
                      {"items", items},
                      {"complete", complete},
                      {"records", {{"bytes", bytes}}},
                      {"states", states}};
  std::string text;
  try {
    text = saved.dump() + "\n";
  } catch (const Json::exception& e) {
    throw OutputError("cannot write checkpoint " + checkpoint_path_ + ": a reducing stage's saved state is not JSON text (" +
                      e.what() + ")");
  }
  write_durably(checkpoint_path_, text, "checkpoint");
}

void compact_records(const std::string& path, bool ordered) { compact_records(path, path, ordered); }

void compact_records(const std::string& path, const std::string& to, bool ordered) {
  struct Entry {
    std::uint64_t index;
    std::uint64_t run;     // the run of consecutive lines (one item's records) it belongs to
    std::uint64_t offset;
    std::uint64_t length;  // newline included
  };
  std::vector<Entry> entries;
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw OutputError(os_message("cannot open", path));
  std::uint64_t line = 0;
  std::optional<RecordHead> previous;
  const std::uint64_t size = for_each_record_line(fd.get(), path, [&](std::string_view text, std::uint64_t offset) {
    ++line;
    const std::optional<RecordHead> head = parse_head(text);
    if (!head) throw OutputError(path + ":" + std::to_string(line) + ": not a coremap record");
    const std::uint64_t run = entries.empty() ? 0 : entries.back().run + (starts_run(*head, previous) ? 1 : 0);
    entries.push_back({head->index, run, offset, text.size() + 1});
    previous = head;
  });
  // The last run of records of each index wins; then index order, or file order.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.index < b.index; });
  std::vector<Entry> kept;
  kept.reserve(entries.size());
  for (std::size_t i = 0; i < entries.size();) {
    std::size_t end = i;
    while (end < entries.size() && entries[end].index == entries[i].index) ++end;
    const std::uint64_t last_run = entries[end - 1].run;
    for (std::size_t k = i; k < end; ++k) {
      if (entries[k].run == last_run) kept.push_back(entries[k]);
    }
    i = end;
  }
  entries = {};
  if (!ordered) std::sort(kept.begin(), kept.end(), [](const Entry& a, const Entry& b) { return a.offset < b.offset; });

  const char* data = nullptr;
  void* mapped = MAP_FAILED;
  if (size > 0) {
    mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (mapped == MAP_FAILED) throw OutputError(os_message("cannot map", path));
    data = static_cast<const char*>(mapped);
  }
  struct Unmap {
    void* p;
    std::size_t n;
    ~Unmap() {
      if (p != MAP_FAILED) ::munmap(p, n);
    }
  } unmap{mapped, size};

  // Written whole and synced before it takes `to`'s name; on any failure it is removed and
  // `path` is left as it was.
  const std::string tmp = to + ".compact";
  check_replaceable(tmp, "reordered output");
  check_replaceable(to, "output");
  Fd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0666));
  if (out.get() < 0) throw OutputError(os_message("cannot create", tmp));
  struct RemoveUnlessRenamed {
    const std::string& path;
    bool renamed = false;
    ~RemoveUnlessRenamed() {
      if (!renamed) ::unlink(path.c_str());
    }
  } cleanup{tmp};
  std::string buffer;
  auto flush = [&] {
    std::string_view rest = buffer;
    while (!rest.empty()) {
      const ssize_t n = ::write(out.get(), rest.data(), rest.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        throw OutputError(os_message("cannot write", tmp));
      }
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
    buffer.clear();
  };
  for (const Entry& e : kept) {
    buffer.append(data + e.offset, e.length);
    if (buffer.size() >= (std::size_t{1} << 20)) flush();
  }
  flush();
  if (::fsync(out.get()) != 0) throw OutputError(os_message("cannot sync", tmp));
  if (::close(out.release()) != 0) throw OutputError(os_message("cannot close", tmp));
  check_replaceable(to, "output");
  if (::rename(tmp.c_str(), to.c_str()) != 0) throw OutputError(os_message("cannot rename to", to));
  cleanup.renamed = true;
}

}  // namespace coremap
