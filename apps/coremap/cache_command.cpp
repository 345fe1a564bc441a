// SPDX-License-Identifier: MIT
// `coremap cache stats|gc|why DIR`: what a result cache holds, trimming it, and why an item of
// a manifest is a miss (docs/cache.md).
#include <cinttypes>
#include <cstdio>
#include <ctime>

#include "commands.hpp"

namespace coremap::cli {

CLI::App* add_cache_command(CLI::App& app, CacheArgs& args) {
  CLI::App* cache = app.add_subcommand("cache", "Inspect or trim a result cache (run --cache DIR; docs/cache.md)");
  cache->require_subcommand(1);
  args.stats = cache->add_subcommand("stats", "Entries, size on disk, and the hits and misses of the last runs");
  args.stats->add_option("DIR", args.directory, "Cache directory")->required();
  args.gc = cache->add_subcommand("gc", "Remove entries: unused for DAYS, and/or the least recently used over SIZE");
  args.gc->add_option("DIR", args.directory, "Cache directory")->required();
  auto* max_size = args.gc->add_option("--max-size", args.max_size,
                                       "Keep the most recently used entries whose payload fits in SIZE (e.g. 512M)")
                       ->type_name("SIZE");
  auto* older = args.gc->add_option("--older-than", args.older_than, "Remove entries not used for DAYS days")
                    ->check(CLI::Range(0.0, 1e6))
                    ->type_name("DAYS");
  (void)max_size;
  (void)older;
  args.why = cache->add_subcommand("why", "Say whether item N of a manifest is a hit, and if not, which key part differs");
  args.why->add_option("DIR", args.directory, "Cache directory")->required();
  add_pipeline_options(*args.why, args.input);
  args.why->add_option("--index", args.index, "0-based index of the item in the manifest")->required()->type_name("N");
  args.why->add_option("--cache-files", args.cache_files, "The file policy of the runs (as run --cache-files)")
      ->check(CLI::IsMember({"stat", "size", "content"}))
      ->type_name("stat|size|content");
  return cache;
}

namespace {

std::string human_bytes(std::uint64_t bytes) {
  char text[64];
  if (bytes < 1024) {
    std::snprintf(text, sizeof text, "%" PRIu64 " B", bytes);
  } else if (bytes < (std::uint64_t{1} << 20)) {
    std::snprintf(text, sizeof text, "%.1f KiB", static_cast<double>(bytes) / 1024);
  } else if (bytes < (std::uint64_t{1} << 30)) {
    std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  } else {
    std::snprintf(text, sizeof text, "%.2f GiB", static_cast<double>(bytes) / (1 << 30));
  }
  return text;
}

// Item `index` of the manifest, parsed as a run parses it.
Json manifest_item(const PipelineArgs& input, std::uint64_t index) {
  ManifestReader manifest(input.manifest, parse_manifest_format(input.format));
  ItemBatch batch;
  while (manifest.next_batch(batch, 4096, std::size_t{1} << 20)) {
    for (const RawItem& raw : batch.items) {
      if (raw.index != index) continue;
      const std::string where = manifest.name() + ":" + std::to_string(raw.line);
      if (raw.malformed) throw ManifestError(where + ": " + std::string(batch.text(raw)));
      if (manifest.format() == ManifestFormat::lines) return Json{{"path", std::string(batch.text(raw))}};
      Json item = Json::parse(batch.text(raw), nullptr, false);
      if (item.is_discarded()) throw ManifestError(where + ": item " + std::to_string(index) + " is not valid JSON (a parse error is never cached)");
      return item;
    }
  }
  throw UsageError("cache why --index " + std::to_string(index) + ": " + manifest.name() + " has only " +
                   std::to_string(manifest.items_read()) + " items");
}

}  // namespace

int cache_command(const CacheArgs& args) {
  if (args.stats->parsed()) {
    const CacheSummary summary = cache_summary(args.directory);
    std::printf("entries: %" PRIu64 "\n", summary.entries);
    std::printf("size on disk: %s (%" PRIu64 " bytes)\n", human_bytes(summary.bytes).c_str(), summary.bytes);
    std::printf("payload: %s (%" PRIu64 " bytes%s)\n", human_bytes(summary.payload_bytes).c_str(), summary.payload_bytes,
                summary.entries == 0 ? ""
                                     : (", " + std::to_string(summary.payload_bytes / summary.entries) + " per entry").c_str());
    std::printf("last runs (newest first):\n");
    if (summary.runs.empty()) std::printf("  none\n");
    for (const CacheRunRecord& run : summary.runs) {
      const std::time_t when = static_cast<std::time_t>(run.ended_unix);
      std::tm tm{};
      ::gmtime_r(&when, &tm);
      char stamp[32];
      std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S UTC", &tm);
      std::printf("  %s  %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64 " stored%s%s\n", stamp, run.hits, run.misses,
                  run.stored, run.note.empty() ? "" : "; ", run.note.c_str());
    }
    return exit_ok;
  }
  if (args.gc->parsed()) {
    const std::uint64_t max_bytes = args.max_size.empty() ? 0 : parse_size(args.max_size, "--max-size");
    if (max_bytes == 0 && args.older_than <= 0) throw UsageError("cache gc: give --max-size SIZE and/or --older-than DAYS");
    const CacheGcReport report = cache_gc(args.directory, max_bytes, args.older_than);
    std::printf("removed %" PRIu64 " entries, %" PRIu64 " left; on disk %s -> %s\n", report.removed, report.entries_left,
                human_bytes(report.bytes_before).c_str(), human_bytes(report.bytes_after).c_str());
    return exit_ok;
  }
  if (args.why->parsed()) {
    const PluginLoader loader = make_loader(args.input.search);
    const Pipeline pipeline = make_pipeline(args.input, loader, "cache why");
    const Json item = manifest_item(args.input, args.index);
    for (const std::string& line :
         cache_why(args.directory, pipeline, item, parse_cache_file_policy(args.cache_files, "--cache-files"))) {
      std::printf("%s\n", line.c_str());
    }
    return exit_ok;
  }
  return exit_setup;
}

}  // namespace coremap::cli
