// SPDX-License-Identifier: MIT
#include <coremap/error.hpp>
#include <coremap/sink.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace coremap {
namespace {

TEST(FileSinkTest, WritesPartFileAndRenamesOnFinish) {
  test::TempDir dir;
  const std::string path = (dir.path() / "out.jsonl").string();
  {
    FileSink sink(path);
    sink.write("a\n");
    EXPECT_TRUE(std::filesystem::exists(path + ".part"));
    EXPECT_FALSE(std::filesystem::exists(path));
    sink.write("b\n");
    sink.finish();
  }
  EXPECT_FALSE(std::filesystem::exists(path + ".part"));
  EXPECT_EQ(test::read_file(path), "a\nb\n");
}

TEST(FileSinkTest, AbandonedRunLeavesNoFile) {
  test::TempDir dir;
  const std::string path = (dir.path() / "out.jsonl").string();
  { FileSink(path).write("a\n"); }
  EXPECT_FALSE(std::filesystem::exists(path + ".part"));
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(FileSinkTest, FullDiskIsAnError) {
  // Standard output redirected to /dev/full, as with `coremap run ... > /dev/full`.
  FileSink sink("-");
  const int saved = ::dup(STDOUT_FILENO);
  const int full = ::open("/dev/full", O_WRONLY);
  ASSERT_GE(full, 0);
  ::dup2(full, STDOUT_FILENO);
  EXPECT_THROW(sink.write(std::string(1 << 16, 'x')), OutputError);
  ::dup2(saved, STDOUT_FILENO);
  ::close(full);
  ::close(saved);
}

TEST(FileSinkTest, UncreatableOutputIsAnError) {
  try {
    FileSink sink("/nonexistent-dir/out.jsonl");
    FAIL();
  } catch (const OutputError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/out.jsonl.part"), std::string::npos);
  }
}

}  // namespace
}  // namespace coremap
