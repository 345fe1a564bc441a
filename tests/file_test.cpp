// SPDX-License-Identifier: MIT
// coremap/file.hpp: item_path's errors name the field, with the field given as a C string or a
// std::string (a config value); read_file_chunks against the file's own size and content.
#include <coremap/file.hpp>

#include <array>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace coremap {
namespace {

TEST(FileTest, ItemPathTakesTheFieldAsACStringOrAStdString) {
  const Json item = {{"path", "a.txt"}, {"input", "b.txt"}, {"n", 3}};
  EXPECT_EQ(item_path(item), "a.txt");
  const std::string field = "input";
  EXPECT_EQ(item_path(item, field), "b.txt");
  try {
    item_path(item, std::string("n"));
    ADD_FAILURE() << "a number was taken as a path";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "item field \"n\" is a number, not a string");
  }
  EXPECT_THROW(item_path(item, std::string("missing")), std::invalid_argument);
}

TEST(FileTest, ReadFileChunksHandsOnEveryByteInBufferSizedReads) {
  const test::TempDir dir;
  std::string text;
  for (int i = 0; i < 10000; ++i) text += std::to_string(i) + "\n";
  const std::string path = dir.write("numbers.txt", text);
  std::array<char, 1000> buffer{};
  std::string seen;
  std::size_t largest = 0;
  const std::uint64_t total = read_file_chunks(path, buffer, [&](const char* data, std::size_t n) {
    seen.append(data, n);
    largest = std::max(largest, n);
  });
  EXPECT_EQ(total, text.size());
  EXPECT_EQ(seen, text);
  EXPECT_LE(largest, buffer.size());
  EXPECT_THROW(read_file_chunks(dir.path().string() + "/missing", buffer, [](const char*, std::size_t) {}),
               std::runtime_error);
}

}  // namespace
}  // namespace coremap
