// SPDX-License-Identifier: MIT
#include <coremap/error.hpp>
#include <coremap/sink.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
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

// Makes a private character device like /dev/null (minor 3) or /dev/full (minor 7) in `dir`;
// false when mknod is not permitted here. Tests never open the machine's own /dev entries.
bool make_memory_device(const std::string& path, unsigned minor) {
  return ::mknod(path.c_str(), S_IFCHR | 0666, makedev(1, minor)) == 0;
}

bool is_character_device(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISCHR(st.st_mode);
}

TEST(FileSinkTest, FullDiskIsAnError) {
  // Standard output redirected to a full device, as with `coremap run ... > FULL`.
  test::TempDir dir;
  const std::string full_path = (dir.path() / "full").string();
  if (!make_memory_device(full_path, 7)) GTEST_SKIP() << "mknod not permitted: " << std::strerror(errno);
  FileSink sink("-");
  const int saved = ::dup(STDOUT_FILENO);
  const int full = ::open(full_path.c_str(), O_WRONLY);
  ASSERT_GE(full, 0);
  ::dup2(full, STDOUT_FILENO);
  EXPECT_THROW(sink.write(std::string(1 << 16, 'x')), OutputError);
  ::dup2(saved, STDOUT_FILENO);
  ::close(full);
  ::close(saved);
}

TEST(FileSinkTest, DeviceIsWrittenIntoNeverReplaced) {
  test::TempDir dir;
  const std::string null_path = (dir.path() / "null").string();
  if (!make_memory_device(null_path, 3)) GTEST_SKIP() << "mknod not permitted: " << std::strerror(errno);
  {
    FileSink sink(null_path);
    EXPECT_TRUE(sink.streams());
    sink.write("a\n");
    sink.finish();
  }
  EXPECT_TRUE(is_character_device(null_path));
  EXPECT_FALSE(std::filesystem::exists(null_path + ".part"));
  { FileSink(null_path).write("abandoned\n"); }  // destroyed without finish(): nothing removed
  EXPECT_TRUE(is_character_device(null_path));
}

TEST(FileSinkTest, FullDeviceOutputIsAnErrorNamingIt) {
  test::TempDir dir;
  const std::string full_path = (dir.path() / "full").string();
  if (!make_memory_device(full_path, 7)) GTEST_SKIP() << "mknod not permitted: " << std::strerror(errno);
  FileSink sink(full_path);
  try {
    sink.write("a\n");
    FAIL() << "a write to a full device succeeded";
  } catch (const OutputError& e) {
    EXPECT_NE(std::string(e.what()).find(full_path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::strerror(ENOSPC)), std::string::npos) << e.what();
  }
  EXPECT_TRUE(is_character_device(full_path));
}

TEST(FileSinkTest, FifoReaderGetsEveryRecord) {
  test::TempDir dir;
  const std::string fifo = (dir.path() / "fifo").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0666), 0) << std::strerror(errno);
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);  // so the writer's open returns
  ASSERT_GE(reader, 0);
  {
    FileSink sink(fifo);
    sink.write("a\n");
    sink.write("b\n");
    sink.finish();
  }
  char buffer[16] = {};
  EXPECT_EQ(::read(reader, buffer, sizeof buffer), 4);
  EXPECT_EQ(std::string(buffer), "a\nb\n");
  ::close(reader);
  struct stat st {};
  ASSERT_EQ(::lstat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
}

TEST(FileSinkTest, SymlinkIsWrittenThroughAndStays) {
  test::TempDir dir;
  const std::string link = (dir.path() / "link.jsonl").string();
  const std::string target = (dir.path() / "target.jsonl").string();
  std::filesystem::create_symlink("target.jsonl", link);  // dangling until finish()
  {
    FileSink sink(link);
    sink.write("a\n");
    EXPECT_TRUE(std::filesystem::exists(target + ".part"));
    sink.finish();
  }
  EXPECT_TRUE(std::filesystem::is_symlink(link));
  EXPECT_EQ(test::read_file(target), "a\n");
  EXPECT_EQ(resolve_output(link).path, target);
  EXPECT_EQ(resolve_output(link).kind, OutputTarget::Kind::regular);
}

TEST(FileSinkTest, DirectoryAndNonRegularPartAreRefused) {
  test::TempDir dir;
  EXPECT_THROW(FileSink(dir.path().string()), OutputError);
  const std::string out = (dir.path() / "out.jsonl").string();
  ASSERT_EQ(::mkfifo((out + ".part").c_str(), 0666), 0);
  try {
    FileSink sink(out);
    FAIL() << "a FIFO at FILE.part was opened";
  } catch (const OutputError& e) {
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
  struct stat st {};
  ASSERT_EQ(::lstat((out + ".part").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
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
