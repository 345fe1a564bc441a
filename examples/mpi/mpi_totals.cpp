// SPDX-License-Identifier: MIT
// mpi_totals: words, lines and bytes of the files a manifest names, counted across the ranks of
// an MPI job with the bundled wordcount plugin (docs/distributed.md, "In an application").
// Rank 0 reads the manifest, prints one line per file as its record arrives (in manifest
// order) and then the totals, which the wordcount reduction merged over every rank:
//
//   mpirun -n 3 build/bin/mpi_totals files.txt
//   words 39 lines 3 bytes 216 examples/data/pool.txt
//   ...
//   total words 117 lines 10 bytes 662 files 4
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <coremap/coremap.hpp>
#include <coremap/mpi.hpp>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: mpirun -n K mpi_totals MANIFEST (K >= 2)\n");
    return 2;
  }
  try {
    coremap::mpi::Session session;  // MPI_Init_thread here, MPI_Finalize when it goes

    // Set-up on every rank: the same pipeline everywhere; the manifest on rank 0 only.
    std::optional<coremap::Pipeline> pipeline;
    std::optional<coremap::ManifestReader> manifest;
    std::vector<std::string> paths;  // rank 0: the manifest's lines, to name each record's file
    std::string error;
    try {
      pipeline.emplace(coremap::Pipeline{.stages = {coremap::Stage{
                           .name = "wordcount", .plugin = coremap::PluginLoader().load("wordcount")}}});
      if (session.rank() == 0) {
        manifest.emplace(argv[1], coremap::ManifestFormat::lines);
        coremap::ManifestReader names(argv[1], coremap::ManifestFormat::lines);
        coremap::ItemBatch batch;
        while (names.next_batch(batch, 4096, std::size_t{1} << 20)) {
          for (const coremap::RawItem& item : batch.items) paths.emplace_back(batch.text(item));
        }
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    std::string report;
    if (!coremap::mpi::all_set_up(session, error, &report)) {
      if (!report.empty()) std::fprintf(stderr, "mpi_totals: %s\n", report.c_str());
      return 2;
    }

    // Records reach rank 0 as JSON Lines text, in manifest order (RunOptions::ordered).
    coremap::CallbackSink sink([&](std::string_view records) {
      while (!records.empty()) {
        const std::size_t end = records.find('\n');
        const coremap::Json record = coremap::Json::parse(records.substr(0, end));
        records.remove_prefix(end == std::string_view::npos ? records.size() : end + 1);
        const std::string& path = paths.at(record.at("index").get<std::size_t>());
        if (!record.at("ok").get<bool>()) {
          std::fprintf(stderr, "mpi_totals: %s: %s\n", path.c_str(), record.at("error").get<std::string>().c_str());
          continue;
        }
        const coremap::Json& r = record.at("result");
        std::printf("words %llu lines %llu bytes %llu %s\n", r.at("words").get<unsigned long long>(),
                    r.at("lines").get<unsigned long long>(), r.at("bytes").get<unsigned long long>(), path.c_str());
      }
    });
    const coremap::mpi::DistributedRun run = coremap::mpi::run(
        session, *pipeline, session.rank() == 0 ? &*manifest : nullptr, &sink, {.threads = 2});
    if (session.rank() != 0) return 0;

    const coremap::StageSummary& summary = run.stats.summaries.at("wordcount");
    if (!summary.ok) {
      std::fprintf(stderr, "mpi_totals: the totals could not be merged: %s\n", summary.error.c_str());
      return 1;
    }
    const coremap::Json& totals = summary.value;
    std::printf("total words %llu lines %llu bytes %llu files %llu\n", totals.at("words").get<unsigned long long>(),
                totals.at("lines").get<unsigned long long>(), totals.at("bytes").get<unsigned long long>(),
                totals.at("files").get<unsigned long long>());
    std::fprintf(stderr, "mpi_totals: %llu items (%llu failed) on %zu ranks in %.3f s\n",
                 static_cast<unsigned long long>(run.stats.items), static_cast<unsigned long long>(run.stats.failed),
                 run.ranks.size() - 1, run.stats.wall_seconds);
    return run.stats.failed == 0 ? 0 : 1;
  } catch (const coremap::Error& e) {
    std::fprintf(stderr, "mpi_totals: %s\n", e.what());
    return 2;
  }
}
