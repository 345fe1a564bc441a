// SPDX-License-Identifier: MIT
// Wire encoding (framework/src/wire_encoding.hpp), shared by the isolated worker's frames and
// the MPI ranks' messages: the bytes are compared with layouts written out by hand.
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "wire_encoding.hpp"

namespace coremap::detail {
namespace {

using namespace std::string_view_literals;

TEST(WireEncodingTest, IntegersAreLittleEndian) {
  WireWriter out;
  out.u8(0xAB);
  out.u32(0x01020304);
  out.u64(0x1122334455667788);
  EXPECT_EQ(out.data(), "\xAB\x04\x03\x02\x01\x88\x77\x66\x55\x44\x33\x22\x11"sv);
  WireReader in(out.data());
  EXPECT_EQ(in.u8(), 0xAB);
  EXPECT_EQ(in.u32(), 0x01020304u);
  EXPECT_EQ(in.u64(), 0x1122334455667788u);
  EXPECT_TRUE(in.empty());
}

TEST(WireEncodingTest, TextIsLengthThenBytes) {
  WireWriter out;
  out.text("abc");
  out.text("");
  EXPECT_EQ(out.data(), "\x03\x00\x00\x00" "abc" "\x00\x00\x00\x00"sv);
  WireReader in(out.data());
  EXPECT_EQ(in.text(), "abc");
  EXPECT_EQ(in.text(), "");
  EXPECT_TRUE(in.empty());
}

TEST(WireEncodingTest, PatchOverwritesACountWrittenEarlier) {
  WireWriter out;
  out.u64(0);
  out.bytes("xy");
  out.patch_u64(0, 2);
  EXPECT_EQ(out.data(), "\x02\x00\x00\x00\x00\x00\x00\x00xy"sv);
}

TEST(WireEncodingTest, ItemRoundTrips) {
  WireWriter out;
  encode_item(out, WireItem{7, 9, true, 3, "{\"a\":1}"});
  // u64 7, u64 9, u8 1, u32 3, u32 7 + 7 bytes.
  EXPECT_EQ(out.data(), "\x07\0\0\0\0\0\0\0" "\x09\0\0\0\0\0\0\0" "\x01" "\x03\0\0\0" "\x07\0\0\0" "{\"a\":1}"sv);
  WireReader in(out.data());
  const WireItem item = decode_item(in);
  EXPECT_EQ(item.index, 7u);
  EXPECT_EQ(item.line, 9u);
  EXPECT_TRUE(item.malformed);
  EXPECT_EQ(item.first_attempt, 3u);
  EXPECT_EQ(item.text, "{\"a\":1}");
  EXPECT_TRUE(in.empty());
}

TEST(WireEncodingTest, TruncatedInputThrows) {
  WireReader short_int("\x01\x02\x03"sv);
  EXPECT_THROW(short_int.u32(), ProtocolError);
  WireReader short_text("\x05\x00\x00\x00" "ab"sv);
  EXPECT_THROW(short_text.text(), ProtocolError);
  WireReader rest("xyz"sv);
  EXPECT_EQ(rest.rest(), "xyz");
  EXPECT_TRUE(rest.empty());
}

}  // namespace
}  // namespace coremap::detail
