// SPDX-License-Identifier: MIT
#include <coremap/error.hpp>
#include <coremap/manifest.hpp>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace coremap {
namespace {

struct Cut {
  std::uint64_t index;
  std::uint64_t line;
  std::string text;
  bool malformed;
};

std::vector<Cut> cut_all(ManifestReader& reader, std::size_t max_items = 3, std::size_t max_bytes = 1 << 20) {
  std::vector<Cut> out;
  ItemBatch batch;
  while (reader.next_batch(batch, max_items, max_bytes)) {
    EXPECT_LE(batch.items.size(), max_items);
    for (const auto& item : batch.items) {
      out.push_back({item.index, item.line, std::string(batch.text(item)), item.malformed});
    }
  }
  return out;
}

std::vector<Cut> cut_text(std::string_view contents, const std::string& name,
                          ManifestFormat format = ManifestFormat::automatic) {
  test::TempDir dir;
  ManifestReader reader(dir.write(name, contents), format);
  return cut_all(reader);
}

TEST(ManifestReaderTest, JsonLinesSkipsBlankLinesAndKeepsLineNumbers) {
  test::TempDir dir;
  ManifestReader reader(dir.write("m.jsonl", "{\"a\":1}\n\n   \n{\"a\":2}\n\t\n3\n"));
  EXPECT_EQ(reader.format(), ManifestFormat::jsonl);
  const auto items = cut_all(reader);
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].text, "{\"a\":1}");
  EXPECT_EQ(items[0].line, 1u);
  EXPECT_EQ(items[1].text, "{\"a\":2}");
  EXPECT_EQ(items[1].index, 1u);
  EXPECT_EQ(items[1].line, 4u);
  EXPECT_EQ(items[2].text, "3");
  EXPECT_EQ(items[2].index, 2u);
  EXPECT_EQ(items[2].line, 6u);
}

TEST(ManifestReaderTest, ToleratesCrlfBomAndMissingFinalNewline) {
  const auto items = cut_text("\xEF\xBB\xBF{\"a\":1}\r\n\r\n{\"a\":2}", "m.jsonl");
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].text, "{\"a\":1}");
  EXPECT_EQ(items[1].text, "{\"a\":2}");
  EXPECT_EQ(items[1].line, 3u);
}

TEST(ManifestReaderTest, PlainListKeepsBytesExactly) {
  const std::string odd = "caf\xE9 name.txt";  // Latin-1, not UTF-8
  const auto items = cut_text("/a/b c.txt\r\n" + odd + "\n\n  leading space\n", "files.txt");
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].text, "/a/b c.txt");
  EXPECT_EQ(items[1].text, odd);
  EXPECT_EQ(items[2].text, "  leading space");
  EXPECT_EQ(items[2].line, 4u);
}

TEST(ManifestReaderTest, DetectsFormatFromNameThenContent) {
  test::TempDir dir;
  EXPECT_EQ(ManifestReader(dir.write("a.jsonl", "1\n")).format(), ManifestFormat::jsonl);
  EXPECT_EQ(ManifestReader(dir.write("a.ndjson", "[1]\n")).format(), ManifestFormat::jsonl);
  EXPECT_EQ(ManifestReader(dir.write("a.txt", "{x}\n")).format(), ManifestFormat::lines);
  EXPECT_EQ(ManifestReader(dir.write("a.json", "\n [1,2]")).format(), ManifestFormat::json_array);
  EXPECT_EQ(ManifestReader(dir.write("a.json", "{\"a\":1}\n")).format(), ManifestFormat::jsonl);
  EXPECT_EQ(ManifestReader(dir.write("noext", "[1]")).format(), ManifestFormat::json_array);
  EXPECT_EQ(ManifestReader(dir.write("noext2", "{\"a\":1}")).format(), ManifestFormat::jsonl);
  EXPECT_EQ(ManifestReader(dir.write("noext3", "/etc/passwd\n")).format(), ManifestFormat::lines);
  EXPECT_EQ(ManifestReader(dir.write("forced", "[1]\n"), ManifestFormat::jsonl).format(), ManifestFormat::jsonl);
}

TEST(ManifestReaderTest, JsonArraySplitsTopLevelElements) {
  const std::string text =
      "[\n"
      "  {\"a\": [1, 2, {\"b\": \"],}\"}]},\n"
      "  \"str with \\\" quote, and ]\",\n"
      "  42,\n"
      "  {\"multi\":\n"
      "     \"line\"}\n"
      "]\n";
  const auto items = cut_text(text, "m.json");
  ASSERT_EQ(items.size(), 4u);
  EXPECT_EQ(items[0].text, "{\"a\": [1, 2, {\"b\": \"],}\"}]}");
  EXPECT_EQ(items[0].line, 2u);
  EXPECT_EQ(items[1].text, "\"str with \\\" quote, and ]\"");
  EXPECT_EQ(items[2].text, "42");
  EXPECT_EQ(items[2].line, 4u);
  EXPECT_EQ(items[3].line, 5u);
  EXPECT_EQ(items[3].text.substr(0, 9), "{\"multi\":");
  for (const auto& item : items) EXPECT_FALSE(item.malformed);
}

TEST(ManifestReaderTest, JsonArrayEmptyAndStructuralErrors) {
  EXPECT_TRUE(cut_text("[]", "m.json").empty());
  EXPECT_TRUE(cut_text("  [ \n ] \n", "m.json").empty());

  auto trailing = cut_text("[1,2]\nx", "m.json");
  ASSERT_EQ(trailing.size(), 3u);
  EXPECT_TRUE(trailing[2].malformed);
  EXPECT_EQ(trailing[2].line, 2u);
  EXPECT_NE(trailing[2].text.find("after the closing ']'"), std::string::npos);

  auto unclosed = cut_text("[1,\n2,\n", "m.json");
  ASSERT_EQ(unclosed.size(), 3u);
  EXPECT_TRUE(unclosed[2].malformed);
  EXPECT_NE(unclosed[2].text.find("missing ']'"), std::string::npos);

  auto truncated = cut_text("[1, {\"a\": ", "m.json");
  ASSERT_EQ(truncated.size(), 2u);
  EXPECT_FALSE(truncated[1].malformed);  // handed to the parser, which reports what is missing
  EXPECT_EQ(truncated[1].text, "{\"a\": ");

  auto comma = cut_text("[1,]", "m.json");
  ASSERT_EQ(comma.size(), 2u);
  EXPECT_TRUE(comma[1].malformed);
}

TEST(ManifestReaderTest, ForcedArrayFormatRejectsOtherContent) {
  test::TempDir dir;
  try {
    ManifestReader reader(dir.write("m", "\n\n{\"a\":1}\n"), ManifestFormat::json_array);
    FAIL() << "expected ManifestError";
  } catch (const ManifestError& e) {
    EXPECT_NE(std::string(e.what()).find(":3: expected '['"), std::string::npos) << e.what();
  }
}

TEST(ManifestReaderTest, TenMegabyteLine) {
  const std::string big(10 << 20, 'x');
  const std::string text = "{\"a\":1}\n{\"big\":\"" + big + "\"}\n{\"a\":3}\n";
  const auto items = cut_text(text, "m.jsonl");
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[1].text.size(), big.size() + 10);
  EXPECT_EQ(items[2].text, "{\"a\":3}");
  EXPECT_EQ(items[2].line, 3u);
}

TEST(ManifestReaderTest, BatchesRespectItemAndByteBounds) {
  test::TempDir dir;
  std::string text;
  for (int i = 0; i < 1000; ++i) text += std::to_string(i) + "\n";
  ManifestReader reader(dir.write("m.jsonl", text));
  ItemBatch batch;
  std::uint64_t expected = 0;
  while (reader.next_batch(batch, 1000, 16)) {
    EXPECT_LE(batch.bytes.size(), 16u + 3u);  // stops once the bound is reached
    for (const auto& item : batch.items) {
      EXPECT_EQ(item.index, expected);
      EXPECT_EQ(std::string(batch.text(item)), std::to_string(expected));
      ++expected;
    }
  }
  EXPECT_EQ(expected, 1000u);
  EXPECT_EQ(reader.items_read(), 1000u);
  EXPECT_EQ(reader.bytes_read(), text.size());
}

TEST(ManifestReaderTest, EmptyManifestHasNoItems) {
  EXPECT_TRUE(cut_text("", "m.jsonl").empty());
  EXPECT_TRUE(cut_text("\n\n  \r\n", "m.txt").empty());
  EXPECT_TRUE(cut_text("", "m.json", ManifestFormat::json_array).empty());
}

TEST(ManifestReaderTest, MissingFileAndDirectoryAreSetupErrors) {
  test::TempDir dir;
  const std::string missing = (dir.path() / "nope.jsonl").string();
  try {
    ManifestReader reader(missing);
    FAIL();
  } catch (const ManifestError& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos);
  }
  try {
    ManifestReader reader(dir.path().string());
    FAIL();
  } catch (const ManifestError& e) {
    EXPECT_NE(std::string(e.what()).find("is a directory"), std::string::npos);
  }
}

TEST(ManifestReaderTest, FormatNames) {
  EXPECT_EQ(parse_manifest_format("jsonl"), ManifestFormat::jsonl);
  EXPECT_EQ(parse_manifest_format("json"), ManifestFormat::json_array);
  EXPECT_EQ(parse_manifest_format("lines"), ManifestFormat::lines);
  EXPECT_EQ(parse_manifest_format("auto"), ManifestFormat::automatic);
  EXPECT_THROW(parse_manifest_format("csv"), UsageError);
  EXPECT_EQ(to_string(ManifestFormat::json_array), "json");
}

}  // namespace
}  // namespace coremap
