// SPDX-License-Identifier: MIT
#include "log_parser.hpp"

#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace logstats {
namespace {

// Views in `out` point into `line`: callers pass string literals, which outlive them.
LineError parse(std::string_view line, LogLine& out) { return parse_line(line, out); }

LineError error_of(const std::string& line) {
  LogLine out;
  return parse_line(line, out);
}

TEST(LogParserTest, ParsesCommonLogFormat) {
  LogLine line;
  ASSERT_EQ(parse(R"(127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326)", line),
            LineError::none);
  EXPECT_EQ(line.host, "127.0.0.1");
  EXPECT_EQ(line.path, "/apache_pb.gif");
  EXPECT_EQ(line.hour, 2000101013u);
  EXPECT_EQ(format_hour(line.hour), "2000-10-10 13");
  EXPECT_EQ(line.status, 200);
  EXPECT_TRUE(line.has_size);
  EXPECT_EQ(line.size, 2326u);
}

TEST(LogParserTest, ParsesCombinedLogFormat) {
  LogLine line;
  ASSERT_EQ(parse(R"(::1 - - [01/Jan/2024:00:00:00 +0530] "POST /api?x=1&y=2 HTTP/1.1" 304 - )"
                  R"("http://ref/" "Mozilla/5.0 \"quoted\"")",
                  line),
            LineError::none);
  EXPECT_EQ(line.host, "::1");
  EXPECT_EQ(line.path, "/api");
  EXPECT_EQ(format_hour(line.hour), "2024-01-01 00");
  EXPECT_EQ(line.status, 304);
  EXPECT_FALSE(line.has_size);
  EXPECT_EQ(line.size, 0u);
}

TEST(LogParserTest, KeepsTheTimeZoneAsWritten) {
  LogLine line;
  ASSERT_EQ(parse(R"(h - - [31/Dec/1999:23:59:60 -1100] "GET / HTTP/1.1" 200 1)", line), LineError::none);
  EXPECT_EQ(format_hour(line.hour), "1999-12-31 23");
}

TEST(LogParserTest, PathOfOddRequests) {
  LogLine line;
  ASSERT_EQ(parse(R"(h - - [10/Oct/2000:13:55:36 -0700] "-" 408 -)", line), LineError::none);
  EXPECT_EQ(line.path, "-");
  ASSERT_EQ(parse(R"(h - - [10/Oct/2000:13:55:36 -0700] "GET /old" 200 5)", line), LineError::none);
  EXPECT_EQ(line.path, "/old");
  ASSERT_EQ(parse(R"(h - - [10/Oct/2000:13:55:36 -0700] "GET /a\"b?q HTTP/1.1" 200 5)", line), LineError::none);
  EXPECT_EQ(line.path, R"(/a\"b)");
}

TEST(LogParserTest, AcceptsExtraFieldsAfterTheUserAgent) {
  EXPECT_EQ(error_of(R"(h - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "ua" "10.0.0.1" 0.003)"),
            LineError::none);
  EXPECT_EQ(error_of(R"(h - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "ua"x)"), LineError::trailer);
  EXPECT_EQ(error_of(R"(h - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-")"), LineError::trailer);
  EXPECT_EQ(error_of(R"(h - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "ua)"), LineError::trailer);
  EXPECT_EQ(error_of(R"(h - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 x)"), LineError::trailer);
}

TEST(LogParserTest, RejectsMalformedLines) {
  const std::string ok = R"(h - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5)";
  ASSERT_EQ(error_of(ok), LineError::none);
  EXPECT_EQ(error_of(""), LineError::host);
  EXPECT_EQ(error_of(" h - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1\" 200 5"), LineError::host);
  EXPECT_EQ(error_of("garbage"), LineError::host);
  EXPECT_EQ(error_of("h  - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1\" 200 5"), LineError::ident);
  EXPECT_EQ(error_of("h - - 10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1\" 200 5"), LineError::timestamp);
  EXPECT_EQ(error_of("h - - [32/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1\" 200 5"), LineError::timestamp);
  EXPECT_EQ(error_of("h - - [00/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1\" 200 5"), LineError::timestamp);
  EXPECT_EQ(error_of("h - - [10/Foo/2000:13:55:36 -0700] \"GET / HTTP/1.1\" 200 5"), LineError::timestamp);
  EXPECT_EQ(error_of("h - - [10/Oct/2000:24:55:36 -0700] \"GET / HTTP/1.1\" 200 5"), LineError::timestamp);
  EXPECT_EQ(error_of("h - - [10/Oct/2000:13:60:36 -0700] \"GET / HTTP/1.1\" 200 5"), LineError::timestamp);
  EXPECT_EQ(error_of("h - - [10/Oct/2000:13:55:61 -0700] \"GET / HTTP/1.1\" 200 5"), LineError::timestamp);
  EXPECT_EQ(error_of("h - - [10/Oct/2000:13:55:36 0700] \"GET / HTTP/1.1\" 200 5"), LineError::timestamp);
  EXPECT_EQ(error_of("h - - [10/Oct/2000:13:55:36] \"GET / HTTP/1.1\" 200 5"), LineError::timestamp);
  EXPECT_EQ(error_of("h - - [10/Oct/2000:13:55:36 -0700] GET / HTTP/1.1 200 5"), LineError::request);
  EXPECT_EQ(error_of("h - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1 200 5"), LineError::request);
  EXPECT_EQ(error_of("h - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1\\\" 200 5"), LineError::request);
  for (const char* status : {"099", "600", "2000", "20", "abc", "000", "2x0"}) {
    EXPECT_EQ(error_of(std::string("h - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1\" ") + status + " 5"),
              LineError::status)
        << status;
  }
  for (const char* size : {"", "12a", "1.5", "--", "x", "1234567890123456789", "-5"}) {
    EXPECT_EQ(error_of(std::string("h - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1\" 200 ") + size),
              LineError::size)
        << size;
  }
  // Every proper prefix of this line (its size has one digit) is malformed.
  for (std::size_t n = 0; n < ok.size(); ++n) {
    EXPECT_NE(error_of(ok.substr(0, n)), LineError::none) << n;
  }
}

TEST(LogParserTest, EighteenDigitSizesAreExact) {
  LogLine line;
  ASSERT_EQ(parse(R"(h - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 599 999999999999999999)", line),
            LineError::none);
  EXPECT_EQ(line.size, 999999999999999999u);
  EXPECT_EQ(line.status, 599);
}

}  // namespace
}  // namespace logstats
