// SPDX-License-Identifier: MIT
#include <coremap/journal.hpp>

#include <fcntl.h>
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

// Writes `text` to `path` durably: a temporary file, fsync, rename, fsync of the directory.
void write_durably(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666));
    if (fd.get() < 0) throw OutputError(os_message("cannot create output journal", tmp));
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
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() >= 0) ::fsync(dir_fd.get());  // best effort: some file systems refuse
}

// The index and status of one record line, which RecordWriter always starts with
// {"index":N,"ok":true or {"index":N,"ok":false (or {"index":N,"sub":S,"ok":... with fan-out).
struct RecordHead {
  std::uint64_t index = 0;
  bool ok = false;
  bool fanned = false;
};

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
    std::uint64_t ignored = 0;
    const char* digits = end + sub.size();
    const auto parsed = std::from_chars(digits, last, ignored);
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
  if (manifest_path != "-") {
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
  return {{"coremap_journal", journal_version}, {"manifest", std::move(manifest)}, {"stages", std::move(stages)}};
}

Json run_fingerprint(const std::string& manifest_path, ManifestFormat format, const Plugin& plugin,
                     const Json& resolved_config) {
  Pipeline pipeline;
  pipeline.stages.push_back(Stage{std::string(plugin.name()), std::shared_ptr<const Plugin>(&plugin, [](const Plugin*) {}),
                                  resolved_config, Concurrency::unlimited()});
  return run_fingerprint(manifest_path, format, pipeline);
}

ResumableOutput::ResumableOutput(const std::string& path, const Json& fingerprint, Options options)
    : path_(path),
      part_path_(path + ".part"),
      journal_path_(path + ".journal"),
      fingerprint_(fingerprint),
      options_(options),
      done_(std::make_shared<IndexSet>()) {
  if (path == "-") throw UsageError("a resumable output needs a file, not standard output");
  std::error_code ec;
  const bool have_journal = std::filesystem::exists(journal_path_, ec);
  if (options.resume && !have_journal) {
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
    if (const std::string difference = describe_difference(earlier, fingerprint); !difference.empty()) {
      throw ResumeError("--resume: this is not the run recorded in " + journal_path_ + ": " + difference +
                        ". Rerun without --resume to start afresh, or with the same manifest, plugin and config");
    }
    // A finished run is continued from its output (for --retry-failed, or to check it is complete).
    if (!std::filesystem::exists(part_path_, ec) && std::filesystem::exists(path_, ec)) {
      if (::rename(path_.c_str(), part_path_.c_str()) != 0) {
        throw OutputError(os_message("cannot rename '" + path_ + "' to", part_path_));
      }
    }
    if (std::filesystem::exists(part_path_, ec)) scan_earlier();
    resumed_ = true;
  }
}

void ResumableOutput::open() {
  if (sink_) return;
  if (!resumed_) {
    if (::unlink(part_path_.c_str()) != 0 && errno != ENOENT) throw OutputError(os_message("cannot remove", part_path_));
    write_durably(journal_path_, fingerprint_.dump(2) + "\n");
  }
  sink_.emplace(path_, FileSink::Options{.resumable = true, .sync_interval = options_.sync_interval});
}

ResumableOutput::~ResumableOutput() = default;

Sink& ResumableOutput::sink() noexcept { return *sink_; }

void ResumableOutput::scan_earlier() {
  Fd fd(::open(part_path_.c_str(), O_RDWR | O_CLOEXEC));
  if (fd.get() < 0) throw OutputError(os_message("cannot open", part_path_));
  // An item's records are one run of consecutive lines (a batch holds whole items). A later
  // run for the same index supersedes the earlier one. `failed` holds the items whose last run
  // has an error record.
  IndexSet failed;
  std::uint64_t line = 0;
  std::uint64_t previous = 0;
  bool any = false;
  bool last_fanned = false;
  std::uint64_t last_run_offset = 0;  // where the file's last run of records starts
  const std::uint64_t complete =
      for_each_record_line(fd.get(), part_path_, [&](std::string_view text, std::uint64_t offset) {
        ++line;
        const std::optional<RecordHead> head = parse_head(text);
        if (!head) {
          throw ResumeError(part_path_ + ":" + std::to_string(line) +
                            ": not a coremap record (it should start with {\"index\":N,\"ok\":...); cannot resume");
        }
        if (!any || head->index != previous) {  // a new run
          if (any && head->index < previous) sorted_prefix_ = false;
          if (!done_->insert(head->index)) needs_rewrite_ = true;
          failed.erase(head->index);
          last_run_offset = offset;
        }
        if (!head->ok) failed.insert(head->index);
        any = true;
        previous = head->index;
        last_fanned = head->fanned;
      });
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw OutputError(os_message("cannot stat", part_path_));
  std::uint64_t keep = complete;
  std::string torn;
  if (any && last_fanned) {
    // The last item fanned out: the interruption may have come between its records, so it
    // runs again whole.
    keep = last_run_offset;
    done_->erase(previous);
    failed.erase(previous);
    torn = "; the last item's records are dropped and it runs again (it fanned out, so they may be incomplete)";
  }
  if (static_cast<std::uint64_t>(st.st_size) > keep) {
    if (::ftruncate(fd.get(), static_cast<off_t>(keep)) != 0) throw OutputError(os_message("cannot truncate", part_path_));
    if (keep == complete) {
      torn = "; cut off a record torn by the interruption (" +
             std::to_string(static_cast<std::uint64_t>(st.st_size) - complete) + " bytes)";
    }
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
  note_ = "--resume: " + std::to_string(earlier_ok_ + earlier_failed_) + " items already recorded in " + part_path_ +
          " (" + std::to_string(earlier_ok_) + " ok, " + std::to_string(earlier_failed_) + " failed" +
          (options_.retry_failed && earlier_failed_ > 0 ? ", to be run again" : "") + ")" + torn;
  if (options_.retry_failed) earlier_failed_ = 0;
}

void ResumableOutput::finish(bool ordered) {
  sink_->finish();
  if (needs_rewrite_ || (ordered && !sorted_prefix_)) compact_records(path_, ordered);
}

std::string ResumableOutput::keep_partial() { return sink_->keep_partial(); }

void compact_records(const std::string& path, bool ordered) {
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
  const std::uint64_t size = for_each_record_line(fd.get(), path, [&](std::string_view text, std::uint64_t offset) {
    ++line;
    const std::optional<RecordHead> head = parse_head(text);
    if (!head) throw OutputError(path + ":" + std::to_string(line) + ": not a coremap record");
    const std::uint64_t run = entries.empty() ? 0 : entries.back().run + (entries.back().index != head->index ? 1 : 0);
    entries.push_back({head->index, run, offset, text.size() + 1});
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

  const std::string tmp = path + ".compact";
  Fd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666));
  if (out.get() < 0) throw OutputError(os_message("cannot create", tmp));
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
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw OutputError(os_message("cannot rename to", path));
}

}  // namespace coremap
