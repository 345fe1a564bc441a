// SPDX-License-Identifier: MIT
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <coremap/file.hpp>
#include <coremap/plugin.hpp>

/// Fan-out: the file an item names, one output per line: {"path"} -> {"path", "line", "text"}
/// for each line (1-based `line`, `text` without its newline; a last line without a newline
/// counts too). The first stage of a pipeline that works line by line (docs/pipelines.md).
/// The file is read in chunks into a buffer the instance owns; only the current line is held.
class Lines {
 public:
  static constexpr coremap::ConfigKey config_keys[] = {
      {"skip_empty", "boolean", "false", "emit nothing for empty lines (they still count in \"line\")"},
      {"strip_cr", "boolean", "true", "drop a carriage return before the newline (CRLF files)"}};

  explicit Lines(const coremap::Json& config)
      : skip_empty_(config.at("skip_empty").get<bool>()), strip_cr_(config.at("strip_cr").get<bool>()), buffer_(1 << 16) {}

  coremap::Json process(const coremap::Json& item, coremap::Context& context) {
    const std::string& path = coremap::item_path(item);
    std::uint64_t line = 0;
    std::string current;
    auto emit_line = [&] {
      ++line;
      if (strip_cr_ && !current.empty() && current.back() == '\r') current.pop_back();
      if (!(skip_empty_ && current.empty())) context.emit({{"path", path}, {"line", line}, {"text", current}});
      current.clear();
    };
    const std::uint64_t bytes = coremap::read_file_chunks(path, buffer_, [&](const char* data, std::size_t size) {
      for (std::size_t start = 0; start < size;) {
        const void* found = std::memchr(data + start, '\n', size - start);
        const std::size_t end = found != nullptr ? static_cast<std::size_t>(static_cast<const char*>(found) - data) : size;
        current.append(data + start, end - start);
        if (found == nullptr) break;
        emit_line();
        start = end + 1;
      }
    });
    if (!current.empty()) emit_line();
    (void)bytes;
    context.drop();  // the outputs are the lines emitted: none for an empty file
    return nullptr;
  }

 private:
  bool skip_empty_;
  bool strip_cr_;
  std::vector<char> buffer_;
};

COREMAP_PLUGIN(Lines, "lines", "1.0.0", "fans a file out into its lines: {path, line, text} per line")
