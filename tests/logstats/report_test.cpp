// SPDX-License-Identifier: MIT
// Chunking, the chunk scanner and the merge: figures must not depend on how files are cut.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "chunk_scanner.hpp"
#include "log_files.hpp"
#include "report.hpp"

namespace logstats {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "logstats-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

// A log of `lines` lines, every 7th malformed, paths and clients with tied counts.
std::string sample_log(int lines) {
  std::string text;
  for (int i = 0; i < lines; ++i) {
    if (i % 7 == 3) {
      text += "not a log line " + std::to_string(i) + "\n";
      continue;
    }
    text += "10.0.0." + std::to_string(i % 5) + " - - [0" + std::to_string(1 + i % 3) + "/Mar/2024:1" +
            std::to_string(i % 4) + ":00:00 +0100] \"GET /p" + std::to_string(i % 6) + "?i=" + std::to_string(i) +
            " HTTP/1.1\" " + std::to_string(100 * (1 + i % 5) + i % 3) + " " +
            (i % 9 == 0 ? std::string("-") : std::to_string(i * 37 % 1000)) + "\n";
  }
  return text;
}

// Runs the scanner over every chunk of `plan`, in order, merging like logstats does.
Totals scan(const Plan& plan) {
  ChunkScanner scanner;
  Totals totals;
  std::uint64_t line_base = 0;
  for (std::size_t i = 0; i < plan.chunks.size(); ++i) {
    const Chunk& chunk = plan.chunks[i];
    const LogFile& file = plan.files[chunk.file];
    if (i == 0 || plan.chunks[i - 1].file != chunk.file) line_base = 0;
    ChunkPartial partial = scanner.scan(file.path, chunk.offset, chunk.length, file.gzip);
    const std::uint64_t lines = partial.lines;
    totals.add_chunk(std::move(partial), file.path, line_base);
    line_base += lines;
  }
  return totals;
}

TEST(LogFilesTest, ChunksEndAtLineEndsAndCoverTheFile) {
  TempDir dir;
  const std::string text = sample_log(500);
  write_file(dir.path() / "a.log", text);
  for (std::uint64_t chunk_bytes : {1ull, 10ull, 100ull, 777ull, 4096ull, 1ull << 30}) {
    const Plan plan = plan_chunks({dir.path().string()}, chunk_bytes);
    ASSERT_EQ(plan.files.size(), 1u);
    std::uint64_t expected_offset = 0;
    for (const Chunk& chunk : plan.chunks) {
      EXPECT_EQ(chunk.offset, expected_offset);
      EXPECT_GT(chunk.length, 0u);
      EXPECT_EQ(text[chunk.offset + chunk.length - 1], '\n') << chunk_bytes;
      if (&chunk != &plan.chunks.back()) {
        EXPECT_GE(chunk.length, chunk_bytes);
      }
      expected_offset += chunk.length;
    }
    EXPECT_EQ(expected_offset, text.size());
  }
}

TEST(LogFilesTest, ListsDirectoriesRecursivelyInPathOrder) {
  TempDir dir;
  write_file(dir.path() / "b.log", "x\n");
  write_file(dir.path() / "a" / "z.log", "x\n");
  write_file(dir.path() / "a.log", "");
  const Plan plan = plan_chunks({dir.path().string()}, 1024);
  ASSERT_EQ(plan.files.size(), 3u);
  // Byte order of the whole path: ".../a.log" < ".../a/z.log" because '.' < '/'.
  EXPECT_EQ(fs::path(plan.files[0].path).filename(), "a.log");
  EXPECT_EQ(fs::path(plan.files[1].path).filename(), "z.log");
  EXPECT_EQ(fs::path(plan.files[2].path).filename(), "b.log");
  EXPECT_EQ(plan.chunks.size(), 2u);  // the empty file has none
}

TEST(LogFilesTest, MissingPathIsASetupError) {
  EXPECT_THROW(plan_chunks({"/nonexistent/logstats"}, 1024), SetupError);
}

TEST(ChunkScannerTest, FiguresDoNotDependOnChunking) {
  TempDir dir;
  const std::string text = sample_log(2000);
  write_file(dir.path() / "a.log", text);
  write_file(dir.path() / "b.log", text.substr(0, text.size() - 1));  // no final newline
  const Report whole = make_report(scan(plan_chunks({dir.path().string()}, 1ull << 30)), 3);
  EXPECT_EQ(whole.requests + whole.malformed, 4000u);
  for (std::uint64_t chunk_bytes : {1ull, 333ull, 4096ull}) {
    const Plan plan = plan_chunks({dir.path().string()}, chunk_bytes);
    const Report cut = make_report(scan(plan), 3);
    EXPECT_EQ(report_json(cut).dump(), report_json(whole).dump()) << chunk_bytes;
  }
  // Lines 4, 11, 18, ... are malformed (every 7th from i = 3); their numbers survive chunking.
  ASSERT_EQ(whole.examples.size(), max_examples);
  EXPECT_EQ(whole.examples[0].line, 4u);
  EXPECT_EQ(whole.examples[4].line, 32u);
  EXPECT_EQ(text.substr(whole.examples[4].offset, 18), "not a log line 31\n");
}

TEST(ReportTest, TopIsCountDescendingThenKeyAscending) {
  Totals totals;
  totals.paths = {{"/b", 5}, {"/a", 5}, {"/c", 9}, {"/d", 1}, {"/", 5}};
  const Report report = make_report(totals, 4);
  ASSERT_EQ(report.top_paths.size(), 4u);
  EXPECT_EQ(report.top_paths[0].key, "/c");
  EXPECT_EQ(report.top_paths[1].key, "/");
  EXPECT_EQ(report.top_paths[2].key, "/a");
  EXPECT_EQ(report.top_paths[3].key, "/b");
  EXPECT_EQ(report.distinct_paths, 5u);
}

TEST(ReportTest, NearestRankPercentiles) {
  // 1..100 once each: pXX is XX.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> hundred;
  for (std::uint64_t v = 1; v <= 100; ++v) hundred.push_back({v, 1});
  EXPECT_EQ(nearest_rank(hundred, 100, 50), 50u);
  EXPECT_EQ(nearest_rank(hundred, 100, 90), 90u);
  EXPECT_EQ(nearest_rank(hundred, 100, 99), 99u);
  // n = 3: ranks ceil(1.5) = 2, ceil(2.7) = 3, ceil(2.97) = 3.
  const std::vector<std::pair<std::uint64_t, std::uint64_t>> three = {{10, 1}, {20, 1}, {30, 1}};
  EXPECT_EQ(nearest_rank(three, 3, 50), 20u);
  EXPECT_EQ(nearest_rank(three, 3, 90), 30u);
  // One value: every percentile is it.
  EXPECT_EQ(nearest_rank({{7, 1}}, 1, 50), 7u);
  EXPECT_EQ(nearest_rank({}, 0, 50), std::nullopt);
  // A histogram: 0 x 98, 5 x 1, 1000 x 1 -> p99 is the 99th smallest = 5.
  EXPECT_EQ(nearest_rank({{0, 98}, {5, 1}, {1000, 1}}, 100, 99), 5u);
  EXPECT_EQ(nearest_rank({{0, 98}, {5, 1}, {1000, 1}}, 100, 50), 0u);
}

}  // namespace
}  // namespace logstats
