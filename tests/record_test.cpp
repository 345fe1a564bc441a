// SPDX-License-Identifier: MIT
#include <coremap/record.hpp>

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
