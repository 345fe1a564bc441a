// SPDX-License-Identifier: MIT
#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <coremap/file.hpp>
#include <coremap/plugin.hpp>

namespace {

// GNU wc (coreutils 9.1) in the C locale, determined against /usr/bin/wc for all 256 bytes:
// the six isspace() bytes (0x09-0x0D, 0x20) end a word, printable bytes (0x21-0x7E) are word
// bytes, and every other byte (0x00-0x08, 0x0E-0x1F, 0x7F-0xFF) neither starts nor ends a
// word: `printf 'a\200 b' | wc -w` is 2, `printf '\001' | wc -w` is 0, `printf 'a\001b' | wc -w`
// is 1. The two class bits let the loop below update its state without a branch, which keeps
// binary files (where the class changes unpredictably) as fast as text.
constexpr unsigned word_bit = 1;
constexpr unsigned space_bit = 2;

constexpr std::array<unsigned char, 256> byte_classes = [] {
  std::array<unsigned char, 256> classes{};
  for (int c = 0x21; c <= 0x7E; ++c) classes[static_cast<std::size_t>(c)] = word_bit;
  for (int c : {' ', '\t', '\n', '\v', '\f', '\r'}) classes[static_cast<std::size_t>(c)] = space_bit;
  return classes;
}();

}  // namespace

/// Lines, words and bytes of the file an item names: {"path"} -> {"lines", "words", "bytes"},
/// equal to `LC_ALL=C wc -l -w -c` for any file, text or binary. The file is read in fixed
/// chunks into a buffer the instance owns, so memory stays flat for any file size.
class WordCount {
 public:
  static constexpr coremap::ConfigKey config_keys[] = {
      {"buffer_kib", "integer", "1024", "read buffer size in KiB (1 to 65536)"}};

  explicit WordCount(const coremap::Json& config) {
    const auto kib = config.at("buffer_kib").get<std::int64_t>();
    if (kib < 1 || kib > 65536) throw std::invalid_argument("buffer_kib must be between 1 and 65536");
    buffer_.resize(static_cast<std::size_t>(kib) * 1024);
  }

  coremap::Json process(const coremap::Json& item) {
    const std::string& path = coremap::item_path(item);
    std::uint64_t lines = 0;
    std::uint64_t words = 0;
    // Carried across chunks, so a word split by a read counts once.
    unsigned in_word = 0;
    const std::uint64_t bytes =
        coremap::read_file_chunks(path, buffer_, [&](const char* data, std::size_t size) {
          const auto* bytes_in = reinterpret_cast<const unsigned char*>(data);
          // Locals rather than the captured references, so the counters stay in registers.
          std::uint64_t chunk_lines = 0;
          std::uint64_t chunk_words = 0;
          unsigned state = in_word;
          for (std::size_t i = 0; i < size; ++i) {
            const unsigned cls = byte_classes[bytes_in[i]];
            const unsigned is_space = cls >> 1;
            chunk_lines += bytes_in[i] == '\n';
            chunk_words += state & is_space;
            state = (state & (is_space ^ 1u)) | (cls & word_bit);
          }
          lines += chunk_lines;
          words += chunk_words;
          in_word = state;
        });
    words += in_word;
    ++totals_.files;
    totals_.lines += lines;
    totals_.words += words;
    totals_.bytes += bytes;
    return {{"lines", lines}, {"words", words}, {"bytes", bytes}};
  }

  // A reduction: the totals over every file counted (each thread's instance counts its own).
  void merge(WordCount& other) noexcept {
    totals_.files += other.totals_.files;
    totals_.lines += other.totals_.lines;
    totals_.words += other.totals_.words;
    totals_.bytes += other.totals_.bytes;
    other.totals_ = {};
  }

  coremap::Json summary() const {
    return {{"files", totals_.files}, {"lines", totals_.lines}, {"words", totals_.words}, {"bytes", totals_.bytes}};
  }

  // The partial totals, to cross processes (MPI ranks): the summary is the whole state.
  coremap::Json save() const { return summary(); }
  void load(const coremap::Json& state) {
    totals_ = {state.at("files").get<std::uint64_t>(), state.at("lines").get<std::uint64_t>(),
               state.at("words").get<std::uint64_t>(), state.at("bytes").get<std::uint64_t>()};
  }

 private:
  struct Totals {
    std::uint64_t files = 0, lines = 0, words = 0, bytes = 0;
  };
  std::vector<char> buffer_;
  Totals totals_;
};

COREMAP_PLUGIN(WordCount, "wordcount", "1.2.0",
               "lines, words and bytes of the file at the item's path, as LC_ALL=C wc; summary: the totals")
