// SPDX-License-Identifier: MIT
// logstats: access-log analytics on all cores. Lists the log files, cuts them into line-aligned
// chunks, maps a ChunkScanner over the chunks with coremap::map (typed chunks in, typed partial
// aggregates out, no JSON), and merges the partials in chunk order. See README.md.
#include <cmath>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <coremap/coremap.hpp>

#include "chunk_scanner.hpp"
#include "log_files.hpp"
#include "report.hpp"

namespace {

constexpr int exit_ok = 0;
constexpr int exit_file_errors = 1;
constexpr int exit_setup = 2;

struct Options {
  std::vector<std::string> paths;
  std::size_t threads = 0;
  bool serial = false;
  std::size_t top = 10;
  bool json = false;
  double chunk_mib = 4;
};

// Folds each chunk's partial into the totals as it arrives (in index order). The chunks
// of a file with several are gathered in `file_` first, so a file with one unreadable chunk is
// left out whole and the figures are those of the files that were read.
class Merger {
 public:
  Merger(const logstats::Plan& plan, std::vector<std::string>& file_errors)
      : plan_(plan), file_errors_(file_errors) {}

  // coremap::map's receiver: a chunk's partial, or its error.
  void operator()(std::size_t index, logstats::ChunkPartial&& partial) { add(index, &partial, nullptr); }
  void operator()(const coremap::MapError& error) { add(error.index, nullptr, &error.message); }

  const logstats::Totals& totals() const noexcept { return totals_; }

 private:
  void add(std::size_t index, logstats::ChunkPartial* partial, const std::string* error) {
    const logstats::Chunk& chunk = plan_.chunks[index];
    const logstats::LogFile& file = plan_.files[chunk.file];
    const bool first = index == 0 || plan_.chunks[index - 1].file != chunk.file;
    const bool last = index + 1 == plan_.chunks.size() || plan_.chunks[index + 1].file != chunk.file;
    if (first) {
      line_base_ = 0;
      failed_ = false;
    }
    if (error != nullptr) {
      if (!failed_) file_errors_[chunk.file] = *error;
      failed_ = true;
    } else if (!failed_) {
      logstats::Totals& into = first && last ? totals_ : file_;
      const std::uint64_t lines = partial->lines;
      into.add_chunk(std::move(*partial), file.path, line_base_);
      line_base_ += lines;
    }
    if (last && !(first && last)) {
      if (!failed_) totals_.absorb(std::move(file_));
      file_ = logstats::Totals{};
    }
  }

  const logstats::Plan& plan_;
  std::vector<std::string>& file_errors_;
  logstats::Totals totals_;
  logstats::Totals file_;  // the current file's chunks so far, when it has several
  std::uint64_t line_base_ = 0;
  bool failed_ = false;
};

int run(const Options& options) {
  const auto chunk_bytes = static_cast<std::uint64_t>(std::llround(options.chunk_mib * 1024.0 * 1024.0));
  logstats::Plan plan = logstats::plan_chunks(options.paths, chunk_bytes);

  std::vector<std::string> file_errors(plan.files.size());
  for (std::size_t i = 0; i < plan.files.size(); ++i) file_errors[i] = plan.files[i].error;
  Merger merger(plan, file_errors);
  // One scanner per thread: it keeps its read buffer from chunk to chunk.
  const auto scan = [&plan](const logstats::Chunk& chunk) {
    thread_local logstats::ChunkScanner scanner;
    const logstats::LogFile& file = plan.files[chunk.file];
    return scanner.scan(file.path, chunk.offset, chunk.length, file.gzip);
  };
  try {
    coremap::map(plan.chunks, scan, merger, coremap::RunOptions{.threads = options.threads, .serial = options.serial});
  } catch (const std::exception& e) {
    // What the merge threw (a scan's failure is that chunk's error, handed to the merger).
    throw std::runtime_error(std::string("merging partial results: ") + e.what());
  }

  logstats::Report report = logstats::make_report(merger.totals(), options.top);
  for (std::size_t i = 0; i < plan.files.size(); ++i) {
    if (!file_errors[i].empty()) {
      report.errors.push_back({plan.files[i].path, file_errors[i]});
      std::fprintf(stderr, "logstats: %s: %s\n", plan.files[i].path.c_str(), file_errors[i].c_str());
    } else {
      ++report.files;
      report.input_bytes += plan.files[i].size;
    }
  }
  for (const logstats::Chunk& chunk : plan.chunks) report.chunks += file_errors[chunk.file].empty() ? 1 : 0;

  const std::string out = options.json ? logstats::report_json(report).dump(2) + "\n"
                                       : logstats::report_text(report, options.top);
  if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size() || std::fflush(stdout) != 0) {
    std::fprintf(stderr, "logstats: error: cannot write the report to standard output\n");
    return exit_setup;
  }
  return report.errors.empty() ? exit_ok : exit_file_errors;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"logstats: request, byte, status, path, client, hourly and response-size figures of web server\n"
               "access logs (Common and Combined Log Format, plain or gzip), on all cores with coremap."};
  app.name("logstats");
  Options options;
  app.add_option("paths", options.paths, "Log files, or directories searched recursively")
      ->required()
      ->type_name("PATH");
  CLI::Option* threads = app.add_option("-j,--threads", options.threads, "Threads (default: all cores)")
                             ->check(CLI::Range(std::size_t{1}, std::size_t{4096}))
                             ->type_name("N");
  app.add_flag("--serial", options.serial, "Run on one thread, in order, without TBB (for debugging)")->excludes(threads);
  app.add_option("--top", options.top, "Paths and clients to list (default 10)")
      ->check(CLI::Range(std::size_t{0}, std::size_t{1000000}))
      ->type_name("N");
  app.add_flag("--json", options.json, "Print one JSON object instead of text tables");
  app.add_option("--chunk-mib", options.chunk_mib,
                 "Cut plain files into chunks of about this many MiB, at line ends (default 4; gzip files are "
                 "one chunk each)")
      ->check(CLI::Range(1.0 / 1024 / 1024, 1024.0 * 1024.0))
      ->type_name("M");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? exit_ok : exit_setup;
  }
  try {
    return run(options);
  } catch (const logstats::SetupError& e) {
    std::fprintf(stderr, "logstats: error: %s\n", e.what());
  } catch (const coremap::Error& e) {
    std::fprintf(stderr, "logstats: error: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "logstats: error: %s\n", e.what());
  }
  return exit_setup;
}
