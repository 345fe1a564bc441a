// SPDX-License-Identifier: MIT
// Retries, per-item timeouts, and resuming from an earlier run's records (ResumableOutput).
#include <coremap/coremap.hpp>

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace coremap {
namespace {

using test::numbers;

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

TEST(RetryTest, FailingItemsAreRetriedAndTheRecordCountsAttempts) {
  for (bool serial : {true, false}) {
    // Item n fails on its first n % 4 attempts; with 2 retries, n % 4 == 3 still fails.
    Engine engine([](const Json& item, Context& context) -> Json {
      const int n = item.at("n");
      if (static_cast<int>(context.attempt()) <= n % 4) throw std::runtime_error("flaky " + std::to_string(context.attempt()));
      return n;
    }, {.threads = 2, .serial = serial, .retries = 2});
    RunStats stats;
    const auto records = engine.map(numbers(400), &stats);
    for (int n = 0; n < 400; ++n) {
      const Record& r = records[n];
      if (n % 4 == 3) {
        EXPECT_FALSE(r.ok);
        EXPECT_EQ(r.attempts, 3u);
        EXPECT_EQ(r.error, "flaky 3");
      } else {
        EXPECT_TRUE(r.ok) << n;
        EXPECT_EQ(r.attempts, static_cast<std::uint32_t>(n % 4 + 1));
      }
    }
    EXPECT_EQ(stats.failed, 100u);
  }
}

TEST(RetryTest, AttemptsAppearInTheRecordTextOnlyWhenAboveOne) {
  std::string text;
  append_record(text, Record{7, true, Json{{"a", 1}}, {}, 1});
  append_record(text, Record{8, true, Json(2), {}, 3});
  append_record(text, Record{9, false, Json(), "no", 2});
  EXPECT_EQ(text,
            "{\"index\":7,\"ok\":true,\"result\":{\"a\":1}}\n"
            "{\"index\":8,\"ok\":true,\"attempts\":3,\"result\":2}\n"
            "{\"index\":9,\"ok\":false,\"attempts\":2,\"error\":\"no\"}\n");
}

TEST(TimeoutTest, ItemPastItsDeadlineIsRecordedAsTimedOutAndSawCancelled) {
  std::atomic<int> saw_cancel{0};
  Engine engine([&](const Json& item, Context& context) -> Json {
    if (item.at("n").get<int>() % 10 == 0) {
      // A cooperative long item: polls until told to stop (bounded, so a bug cannot hang the test).
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (!context.cancelled() && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      if (context.timed_out()) ++saw_cancel;
      return "finished anyway";
    }
    return item.at("n");
  }, {.threads = 2, .timeout = std::chrono::milliseconds(50)});
  const auto start = std::chrono::steady_clock::now();
  RunStats stats;
  const auto records = engine.map(numbers(50), &stats);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  for (int n = 0; n < 50; ++n) {
    if (n % 10 == 0) {
      EXPECT_FALSE(records[n].ok);
      EXPECT_NE(records[n].error.find("timed out"), std::string::npos) << records[n].error;
      EXPECT_NE(records[n].error.find("--timeout 0.05 s"), std::string::npos) << records[n].error;
    } else {
      EXPECT_TRUE(records[n].ok);
      EXPECT_EQ(records[n].result, n);
    }
  }
  EXPECT_EQ(saw_cancel.load(), 5);
  EXPECT_EQ(stats.failed, 5u);
}

TEST(IndexSetTest, InsertEraseContainsAndPrefix) {
  IndexSet set;
  EXPECT_TRUE(set.is_prefix());
  for (std::uint64_t i = 0; i < 130; ++i) EXPECT_TRUE(set.insert(i));
  EXPECT_FALSE(set.insert(5));
  EXPECT_EQ(set.size(), 130u);
  EXPECT_TRUE(set.is_prefix());
  set.erase(64);
  EXPECT_FALSE(set.contains(64));
  EXPECT_TRUE(set.contains(65));
  EXPECT_FALSE(set.is_prefix());
  set.insert(64);
  set.insert(1000);
  EXPECT_FALSE(set.is_prefix());
  EXPECT_FALSE(set.contains(999));
  EXPECT_TRUE(set.contains(1000));
}

class ResumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("coremap-resume-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    manifest_ = (dir_ / "m.jsonl").string();
    std::string text;
    for (int i = 0; i < 500; ++i) text += "{\"n\":" + std::to_string(i) + "}\n";
    write_file(manifest_, text);
    plugin_ = Plugin::from_function([](const Json& item, Context&) -> Json {
      const int n = item.at("n");
      if (n % 50 == 7) throw std::runtime_error("bad " + std::to_string(n));
      return n * 3;
    });
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  Json fingerprint() const { return run_fingerprint(manifest_, ManifestFormat::jsonl, *plugin_, Json::object()); }

  // Runs the manifest into `out`, resuming when asked; returns the stats.
  RunStats run(const std::string& out, ResumableOutput::Options options, bool ordered = true, int threads = 2) {
    ResumableOutput output(out, fingerprint(), options);
    RunOptions run_options{.threads = static_cast<std::size_t>(threads), .ordered = ordered};
    run_options.skip = output.done();
    Engine engine(plugin_, Json::object(), run_options);
    output.open();
    ManifestReader manifest(manifest_, ManifestFormat::jsonl);
    const RunStats stats = engine.run(manifest, output.sink());
    output.finish(ordered);
    return stats;
  }

  // An uninterrupted ordered run into full.jsonl: its records, each line with its newline.
  std::vector<std::string> full_run() {
    run(full_path(), {});
    std::vector<std::string> lines;
    std::istringstream in(read_file(full_path()));
    for (std::string line; std::getline(in, line);) lines.push_back(line + "\n");
    return lines;
  }
  std::string full_path() const { return (dir_ / "full.jsonl").string(); }

  // An interrupted run of the same job: out.jsonl with the full run's journal and `part` as its
  // FILE.part. Returns the path of out.jsonl.
  std::string interrupted(const std::string& part) const {
    const std::string out = (dir_ / "out.jsonl").string();
    std::filesystem::copy_file(full_path() + ".journal", out + ".journal");
    write_file(out + ".part", part);
    return out;
  }

  // Every third record, in reverse order: what an unordered run may leave.
  static std::string every_third_reversed(const std::vector<std::string>& lines) {
    std::string partial;
    for (std::size_t i = lines.size(); i-- > 0;) {
      if (i % 3 == 0) partial += lines[i];
    }
    return partial;
  }

  static std::string joined(const std::vector<std::string>& lines, std::size_t count) {
    std::string text;
    for (std::size_t i = 0; i < count; ++i) text += lines[i];
    return text;
  }

  std::filesystem::path dir_;
  std::string manifest_;
  std::shared_ptr<const Plugin> plugin_;
};

TEST_F(ResumeTest, ResumingATruncatedOrderedRunIsByteIdenticalToAnUninterruptedOne) {
  const std::vector<std::string> lines = full_run();
  const std::string expected = joined(lines, lines.size());
  // An interrupted run: the first 123 records and half of the next one in FILE.part.
  const std::string out = interrupted(joined(lines, 123) + lines[123].substr(0, 10));
  const RunStats stats = run(out, {.resume = true});
  EXPECT_EQ(stats.skipped, 123u);
  EXPECT_EQ(stats.items, 500u - 123u);
  EXPECT_EQ(read_file(out), expected);
  EXPECT_FALSE(std::filesystem::exists(out + ".part"));
}

TEST_F(ResumeTest, UnorderedRecordsAreCompletedThenWrittenInIndexOrder) {
  const std::vector<std::string> lines = full_run();
  const std::string expected = joined(lines, lines.size());
  const std::string out = interrupted(every_third_reversed(lines));
  const RunStats stats = run(out, {.resume = true});
  EXPECT_EQ(stats.skipped, 167u);
  EXPECT_EQ(read_file(out), expected);
}

TEST_F(ResumeTest, RetryFailedRerunsOnlyTheFailedItemsAndKeepsEachItemOnce) {
  const std::string out = (dir_ / "out.jsonl").string();
  const RunStats first = run(out, {});
  EXPECT_EQ(first.failed, 10u);
  const std::string before = read_file(out);
  // The plugin is fixed (same name and version, as a rebuilt library would be).
  plugin_ = Plugin::from_function([](const Json& item, Context&) -> Json { return item.at("n").get<int>() * 3; });
  ResumableOutput::Options options{.resume = true, .retry_failed = true};
  const RunStats second = run(out, options, /*ordered=*/true);
  EXPECT_EQ(second.items, 10u);
  EXPECT_EQ(second.ok, 10u);
  // Independent oracle: every record is ok, each index once, in order, result 3n.
  std::istringstream in(read_file(out));
  int n = 0;
  for (std::string line; std::getline(in, line); ++n) {
    const Json r = Json::parse(line);
    EXPECT_EQ(r.at("index"), n);
    EXPECT_EQ(r.at("ok"), true) << line;
    EXPECT_EQ(r.at("result"), 3 * n);
  }
  EXPECT_EQ(n, 500);
  EXPECT_NE(read_file(out), before);
}

TEST_F(ResumeTest, RefusesAnotherManifestOrConfig) {
  const std::string out = (dir_ / "out.jsonl").string();
  run(out, {});
  write_file(manifest_, "{\"n\":1}\n");
  try {
    ResumableOutput output(out, fingerprint(), {.resume = true});
    FAIL() << "resumed with another manifest";
  } catch (const ResumeError& e) {
    EXPECT_NE(std::string(e.what()).find("the manifest's SHA-256 was"), std::string::npos) << e.what();
  }
  const Json other_config = run_fingerprint(manifest_, ManifestFormat::jsonl, *plugin_, Json{{"k", 1}});
  EXPECT_THROW(ResumableOutput(out, other_config, {.resume = true}), ResumeError);
}

TEST_F(ResumeTest, RefusesARecordsFileThatIsNotCoremaps) {
  const std::string out = (dir_ / "out.jsonl").string();
  run(out, {});
  write_file(out + ".part", "{\"index\":0,\"ok\":true,\"result\":1}\nnot a record\n");
  try {
    ResumableOutput output(out, fingerprint(), {.resume = true});
    FAIL() << "accepted a foreign line";
  } catch (const ResumeError& e) {
    EXPECT_NE(std::string(e.what()).find("out.jsonl.part:2: not a coremap record"), std::string::npos) << e.what();
  }
}

// Resumes `out` and expects a ResumeError whose message holds `where`, with FILE.part unchanged.
void expect_damaged(const std::string& out, const Json& fingerprint, const std::string& where) {
  const std::string before = read_file(out + ".part");
  try {
    ResumableOutput output(out, fingerprint, {.resume = true});
    FAIL() << "resumed from a damaged " << out << ".part";
  } catch (const ResumeError& e) {
    EXPECT_NE(std::string(e.what()).find(where), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_file(out + ".part"), before);
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST_F(ResumeTest, DamagedRecordsAreRefusedNamingFileAndLine) {
  const std::vector<std::string> lines = full_run();
  const std::string out = interrupted("");
  auto part = [&](std::initializer_list<std::string> tail) {
    std::string text = joined(lines, 10);
    for (const std::string& line : tail) text += line;
    write_file(out + ".part", text);
  };
  part({lines[3]});  // item 3 (ok) again
  expect_damaged(out, fingerprint(), "out.jsonl.part:11: item 3 is recorded again after an ok record");
  part({"{\"index\":500,\"ok\":true,\"result\":1}\n"});  // the manifest has 500 items
  expect_damaged(out, fingerprint(), "out.jsonl.part:11: item 500 is past the manifest's end (it has 500 items)");
  part({"{\"index\":10,\"ok\":true,\"result\":[1,\n"});
  expect_damaged(out, fingerprint(), "out.jsonl.part:11: the record is not valid JSON");
  // A fanned-out item: "sub" numbers rise within its records; a repeated one is a duplicate.
  part({"{\"index\":10,\"sub\":0,\"ok\":true,\"result\":1}\n", "{\"index\":10,\"sub\":1,\"ok\":true,\"result\":2}\n",
        "{\"index\":10,\"sub\":1,\"ok\":true,\"result\":2}\n", "{\"index\":11,\"ok\":true,\"result\":1}\n"});
  expect_damaged(out, fingerprint(), "out.jsonl.part:13: item 10 (sub 1) is recorded again");
  part({"{\"index\":10,\"sub\":0,\"ok\":true,\"result\":1}\n", "{\"index\":10,\"sub\":1,\"ok\":true,\"result\":2}\n",
        "{\"index\":11,\"ok\":true,\"result\":1}\n"});
  ResumableOutput output(out, fingerprint(), {.resume = true});
  EXPECT_EQ(output.done()->size(), 12u);  // rising subs: one item, accepted
}

TEST_F(ResumeTest, ARetryRightAfterItsFailedRecordSupersedesIt) {
  const std::vector<std::string> lines = full_run();
  ASSERT_NE(lines[7].find("\"ok\":false"), std::string::npos) << lines[7];  // item 7 fails
  // An interrupted --retry-failed run whose first retried item, 7, came out ok.
  const std::string out = interrupted(joined(lines, 8) + "{\"index\":7,\"ok\":true,\"result\":21}\n");
  plugin_ = Plugin::from_function([](const Json& item, Context&) -> Json { return item.at("n").get<int>() * 3; });
  run(out, {.resume = true, .retry_failed = true});
  std::istringstream result(read_file(out));
  int n = 0;
  for (std::string record; std::getline(result, record); ++n) {
    const Json r = Json::parse(record);
    EXPECT_EQ(r.at("index"), n);
    EXPECT_EQ(r.at("ok"), true) << record;
    EXPECT_EQ(r.at("result"), 3 * n);
  }
  EXPECT_EQ(n, 500);
}

TEST_F(ResumeTest, AFailedReorderingLeavesThePartAsTheRecordOfTheRun) {
  const std::vector<std::string> lines = full_run();
  const std::string expected = joined(lines, lines.size());
  const std::string out = interrupted(every_third_reversed(lines));
  {
    ResumableOutput output(out, fingerprint(), {.resume = true});
    RunOptions run_options{.threads = 2};
    run_options.skip = output.done();
    Engine engine(plugin_, Json::object(), run_options);
    output.open();
    ManifestReader manifest(manifest_, ManifestFormat::jsonl);
    engine.run(manifest, output.sink());
    const std::string part = read_file(out + ".part");
    // The disk fills while the records are put in order: a file-size limit makes the
    // reordered file's writes fail (EFBIG) half-way, deterministically.
    struct rlimit old_limit {};
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
    struct rlimit limit = old_limit;
    limit.rlim_cur = part.size() / 2;
    const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0);
    EXPECT_THROW(output.finish(/*ordered=*/true), OutputError);
    ::setrlimit(RLIMIT_FSIZE, &old_limit);
    std::signal(SIGXFSZ, old_handler);
    EXPECT_EQ(read_file(out + ".part"), part);
    EXPECT_FALSE(std::filesystem::exists(out));
    EXPECT_FALSE(std::filesystem::exists(out + ".compact"));
  }
  // --resume finds every record in FILE.part and finishes the job.
  const RunStats stats = run(out, {.resume = true});
  EXPECT_EQ(stats.skipped, 500u);
  EXPECT_EQ(read_file(out), expected);
  EXPECT_FALSE(std::filesystem::exists(out + ".part"));
}

TEST_F(ResumeTest, OneOutputHasOneWriter) {
  const std::string out = (dir_ / "out.jsonl").string();
  const std::string link = (dir_ / "link.jsonl").string();
  std::filesystem::create_symlink("out.jsonl", link);
  {
    ResumableOutput first(out, fingerprint(), {});
    first.open();
    EXPECT_NE(read_file(out + ".lock").find(std::to_string(::getpid()) + " "), std::string::npos);
    for (const std::string& path : {out, link, out + ".part"}) {
      try {
        ResumableOutput second(path, fingerprint(), {.resume = true});
        FAIL() << "a second writer on " << path;
      } catch (const OutputError& e) {
        EXPECT_NE(std::string(e.what()).find("pid " + std::to_string(::getpid()) + " on "), std::string::npos)
            << e.what();
      }
    }
  }
  EXPECT_FALSE(std::filesystem::exists(out + ".lock"));
  ResumableOutput again(out, fingerprint(), {.resume = true});  // free once the first is gone
  EXPECT_TRUE(again.resumed());
}

TEST_F(ResumeTest, TheManifestIsNeverTheOutput) {
  const std::string hard = (dir_ / "hard.jsonl").string();
  std::filesystem::create_hard_link(manifest_, hard);
  for (const std::string& path : {manifest_, hard}) {
    EXPECT_THROW(ResumableOutput(path, fingerprint(), {}), UsageError) << path;
  }
  EXPECT_FALSE(std::filesystem::exists(manifest_ + ".lock"));
}

TEST_F(ResumeTest, WithoutAJournalResumeStartsAfresh) {
  const std::string out = (dir_ / "out.jsonl").string();
  ResumableOutput output(out, fingerprint(), {.resume = true});
  EXPECT_FALSE(output.resumed());
  EXPECT_NE(output.note().find("starting from the first item"), std::string::npos);
}

}  // namespace
}  // namespace coremap
