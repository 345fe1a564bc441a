// SPDX-License-Identifier: MIT
#include <array>
#include <stdexcept>
#include <vector>

#include <coremap/file.hpp>
#include <coremap/plugin.hpp>

namespace {

// GNU wc (coreutils 9.1) in the C locale: the six isspace() bytes end a word, printable
// bytes (0x21-0x7E) are word characters, and every other byte (controls, NUL, 0x80-0xFF)
// neither starts nor ends a word. Checked against /usr/bin/wc: `printf 'a\200 b' | wc -w` is 2,
// `printf '\001' | wc -w` is 0, `printf 'a\001b' | wc -w` is 1.
enum ByteClass : unsigned char { neutral = 0, word = 1, space = 2 };

constexpr std::array<unsigned char, 256> byte_classes = [] {
  std::array<unsigned char, 256> classes{};
  for (int c = 0x21; c <= 0x7E; ++c) classes[static_cast<std::size_t>(c)] = word;
  for (int c : {' ', '\t', '\n', '\v', '\f', '\r'}) classes[static_cast<std::size_t>(c)] = space;
  return classes;
}();

}  // namespace

/// Lines, words and bytes of the file an item names, equal to `LC_ALL=C wc -l -w -c`.
class WordCount {
 public:
  static constexpr coremap::ConfigKey config_keys[] = {
      {"buffer_kib", "integer", "1024", "read buffer size in KiB (1 to 65536)"}};

  explicit WordCount(const coremap::Json& config) {
    const auto kib = config.at("buffer_kib").get<long long>();
    if (kib < 1 || kib > 65536) throw std::invalid_argument("buffer_kib must be between 1 and 65536");
    buffer_.resize(static_cast<std::size_t>(kib) * 1024);
  }

  coremap::Json process(const coremap::Json& item) {
    const std::string& path = coremap::item_path(item);
    std::uint64_t lines = 0;
    std::uint64_t words = 0;
    bool in_word = false;  // carried across chunks, so a word split by a read counts once
    const std::uint64_t bytes = coremap::read_file_chunks(path, buffer_, [&](const char* data, std::size_t n) {
      for (std::size_t i = 0; i < n; ++i) {
        const auto c = static_cast<unsigned char>(data[i]);
        lines += c == '\n';
        const unsigned char cls = byte_classes[c];
        if (cls == space) {
          words += in_word;
          in_word = false;
        } else if (cls == word) {
          in_word = true;
        }
      }
    });
    words += in_word;
    return {{"lines", lines}, {"words", words}, {"bytes", bytes}};
  }

 private:
  std::vector<char> buffer_;
};

COREMAP_PLUGIN(WordCount, "wordcount", "1.0.0", "lines, words and bytes of the file at the item's path, as LC_ALL=C wc")
