// SPDX-License-Identifier: MIT
#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "json_nesting.hpp"

namespace {

using coremap::detail::JsonByte;
using coremap::detail::JsonNesting;

// The offsets of the bytes that end a value at depth 0, and the deepest nesting seen.
struct Scan {
  std::vector<std::size_t> ends;
  std::size_t deepest = 0;
};
Scan scan(std::string_view text) {
  JsonNesting nesting;
  Scan out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (nesting.feed(text[i]) == JsonByte::end) out.ends.push_back(i);
    out.deepest = std::max(out.deepest, nesting.depth());
  }
  return out;
}

TEST(JsonNestingTest, EndsAValueAtACommaOrClosingBracketOutsideContainers) {
  EXPECT_EQ(scan(R"({"a":[1,2]},3])").ends, (std::vector<std::size_t>{11, 13}));
  EXPECT_EQ(scan(R"({"a":[1,2]},3])").deepest, 2u);
}

TEST(JsonNestingTest, IgnoresBracketsAndCommasInStrings) {
  EXPECT_EQ(scan(R"("[{,}]",1)").ends, (std::vector<std::size_t>{7}));
  EXPECT_EQ(scan(R"("[{,}]",1)").deepest, 0u);
}

TEST(JsonNestingTest, AnEscapedQuoteDoesNotEndTheString) {
  EXPECT_EQ(scan(R"("a\",[",2)").ends, (std::vector<std::size_t>{7}));
  EXPECT_EQ(scan(R"("a\\",2)").ends, (std::vector<std::size_t>{5}));
}

TEST(JsonNestingTest, CountsDepthUpAndDown) {
  JsonNesting nesting;
  std::vector<JsonByte> bytes;
  for (const char c : std::string_view("[{}]")) bytes.push_back(nesting.feed(c));
  EXPECT_EQ(bytes, (std::vector<JsonByte>{JsonByte::open, JsonByte::open, JsonByte::close, JsonByte::close}));
  EXPECT_EQ(nesting.depth(), 0u);
  EXPECT_EQ(scan(std::string(5000, '[')).deepest, 5000u);
}

}  // namespace
