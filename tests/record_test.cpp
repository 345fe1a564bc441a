// SPDX-License-Identifier: MIT
#include <coremap/record.hpp>

#include <cmath>

#include <gtest/gtest.h>

namespace coremap {
namespace {

TEST(RecordTest, OkAndErrorRecordsAreOneJsonLineEach) {
  std::string out;
  EXPECT_TRUE(append_ok_record(out, 7, Json{{"a", "x\ny"}}));
  append_error_record(out, 8, "it \"broke\"");
  EXPECT_EQ(out,
            "{\"index\":7,\"ok\":true,\"result\":{\"a\":\"x\\ny\"}}\n"
            "{\"index\":8,\"ok\":false,\"error\":\"it \\\"broke\\\"\"}\n");
}

TEST(RecordTest, InvalidUtf8InAnErrorIsEscapedVisibly) {
  std::string out;
  append_error_record(out, 0, "cannot open 'caf\xE9.txt'");
  const Json record = Json::parse(out);
  const std::string error = record["error"];
  EXPECT_NE(error.find("caf\\xE9.txt"), std::string::npos) << error;
  EXPECT_NE(error.find("not valid UTF-8"), std::string::npos) << error;
}

TEST(RecordTest, ResultThatIsNotUtf8BecomesAnErrorRecord) {
  std::string out = "previous\n";
  EXPECT_FALSE(append_ok_record(out, 3, Json("caf\xE9")));
  ASSERT_EQ(out.substr(0, 9), "previous\n");
  const Json record = Json::parse(out.substr(9));
  EXPECT_EQ(record["index"], 3);
  EXPECT_FALSE(record["ok"]);
  EXPECT_NE(record["error"].get<std::string>().find("not valid UTF-8"), std::string::npos);
}

// What JSON text cannot hold: not written (NaN would have become null, a deep value would
// have overflowed the serializer's stack), an error record saying what and where instead. The
// pointer escapes '~' and '/' (RFC 6901) and shows bytes that are not UTF-8 as \xNN.
TEST(RecordTest, ValuesJsonCannotHoldBecomeErrorRecordsSayingWhere) {
  std::string out;
  EXPECT_FALSE(append_ok_record(out, 1, Json{{"a/b~", {1, 2, std::nan("")}}}));
  EXPECT_EQ(Json::parse(out)["error"],
            "the plugin's result holds a number that is not finite (NaN) at /a~1b~0/2; JSON has no NaN or infinity");
  std::string why;
  EXPECT_FALSE(writable_result(Json{{"x", {{std::string("k\xC3"), true}}}}, why));
  EXPECT_EQ(why, "the plugin's result holds an object key that is not valid UTF-8 (byte 0xC3 at offset 1) at /x/k\\xC3");
  EXPECT_TRUE(writable_result(Json{{"x", {{std::string("k\xC3"), true}}}}, why, false)) << "strings left to the caller";
  EXPECT_TRUE(writable_result(Json{{"h\xC3\xA9", {1.5, "\xF0\x9F\x98\x80", nullptr, -7}}}, why));
  out.clear();
  EXPECT_FALSE(append_ok_record(out, 0, Json{{"parsed", Json::parse("{oops", nullptr, false)}}));
  EXPECT_EQ(Json::parse(out)["error"],
            "the plugin's result holds a discarded value (what Json::parse gives for text that is not JSON when it may "
            "not throw) at /parsed");
  // 200,000 levels: refused at 1001 without recursing further.
  Json deep = Json::array();
  Json* innermost = &deep;
  for (int level = 1; level < 200'000; ++level) innermost = &innermost->emplace_back(Json::array());
  out.clear();
  EXPECT_FALSE(append_ok_record(out, 2, deep));
  EXPECT_EQ(Json::parse(out)["error"], "the plugin's result nests arrays and objects deeper than 1000 levels");
  // Exactly 1000 levels are fine.
  Json limit = Json::array();
  innermost = &limit;
  for (int level = 1; level < 1000; ++level) innermost = &innermost->emplace_back(Json::array());
  out.clear();
  EXPECT_TRUE(append_ok_record(out, 3, limit));
  EXPECT_EQ(out, "{\"index\":3,\"ok\":true,\"result\":" + std::string(1000, '[') + std::string(1000, ']') + "}\n");
}

TEST(RecordTest, EscapeKeepsValidUtf8) {
  bool replaced = true;
  EXPECT_EQ(escape_invalid_utf8("h\xC3\xA9llo \xF0\x9F\x98\x80", &replaced), "h\xC3\xA9llo \xF0\x9F\x98\x80");
  EXPECT_FALSE(replaced);
  EXPECT_EQ(escape_invalid_utf8("\xC0\xAF|\xED\xA0\x80|\xF4\x90\x80\x80", &replaced),
            "\\xC0\\xAF|\\xED\\xA0\\x80|\\xF4\\x90\\x80\\x80");
  EXPECT_TRUE(replaced);
}

}  // namespace
}  // namespace coremap
