// SPDX-License-Identifier: MIT
#include "report.hpp"

#include <algorithm>
#include <cstdarg>
#include <cstdio>

#include <coremap/top_k.hpp>

namespace logstats {
namespace {

// Keys as the log had them: the ones that are not valid UTF-8 are made printable first.
void merge_strings(StringCounts& into, StringCounts& partial) {
  for (auto& [key, count] : partial) {
    const std::string safe = json_safe(key);
    if (const auto it = into.find(safe); it != into.end()) {
      it->second += count;
    } else {
      into.emplace(safe, count);
    }
  }
}

void merge_numbers(std::unordered_map<std::uint64_t, std::uint64_t>& into,
                   const std::unordered_map<std::uint64_t, std::uint64_t>& partial) {
  for (const auto& [key, count] : partial) into[key] += count;
}

template <class Map>
void absorb_map(Map& into, Map& from) {
  if (into.empty()) {
    into.swap(from);
    return;
  }
  for (auto& [key, count] : from) {
    if (const auto it = into.find(key); it != into.end()) {
      it->second += count;
    } else {
      into.emplace(key, count);
    }
  }
}

std::vector<Ranked> top_of(const StringCounts& counts, std::size_t top) {
  std::vector<Ranked> ranked;
  for (const auto* entry : coremap::top_k(counts, top)) ranked.push_back({entry->first, entry->second});
  return ranked;
}

[[gnu::format(printf, 2, 3)]] void append(std::string& out, const char* format, ...) {
  char stack[512];
  va_list args;
  va_start(args, format);
  va_list again;
  va_copy(again, args);
  const int n = std::vsnprintf(stack, sizeof stack, format, args);
  va_end(args);
  if (n >= 0 && static_cast<std::size_t>(n) < sizeof stack) {
    out.append(stack, static_cast<std::size_t>(n));
  } else if (n >= 0) {
    std::string big(static_cast<std::size_t>(n) + 1, '\0');
    std::vsnprintf(big.data(), big.size(), format, again);
    out.append(big.data(), static_cast<std::size_t>(n));
  }
  va_end(again);
}

int digits(std::uint64_t v) {
  int n = 1;
  while (v >= 10) {
    v /= 10;
    ++n;
  }
  return n;
}

unsigned long long ull(std::uint64_t v) { return static_cast<unsigned long long>(v); }

std::string human_bytes(std::uint64_t bytes) {
  static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  auto value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(units)) {
    value /= 1024;
    ++unit;
  }
  std::string out;
  if (unit == 0) {
    append(out, "%llu B", ull(bytes));
  } else {
    append(out, "%.1f %s", value, units[unit]);
  }
  return out;
}

void ranked_table(std::string& out, const char* title, const char* column, const std::vector<Ranked>& rows,
                  std::uint64_t distinct, std::size_t top) {
  append(out, "\ntop %zu %s (of %llu distinct)\n", top, title, ull(distinct));
  int width = 8;  // "requests"
  for (const Ranked& row : rows) width = std::max(width, digits(row.count));
  append(out, "  %*s  %s\n", width, "requests", column);
  for (const Ranked& row : rows) append(out, "  %*llu  %s\n", width, ull(row.count), row.key.c_str());
}

}  // namespace

void Totals::add_chunk(ChunkPartial&& partial, const std::string& file, std::uint64_t line_base) {
  lines += partial.lines;
  requests += partial.requests;
  bytes += partial.bytes;
  malformed += partial.malformed;
  for (std::size_t i = 0; i < 5; ++i) {
    status_requests[i] += partial.status_requests[i];
    status_bytes[i] += partial.status_bytes[i];
  }
  merge_strings(paths, partial.paths);
  merge_strings(clients, partial.clients);
  merge_numbers(hours, partial.hours);
  merge_numbers(sizes, partial.sizes);
  for (ChunkExample& example : partial.examples) {
    if (examples.size() >= max_examples) break;
    examples.push_back({file, line_base + example.line, example.offset, std::move(example.reason),
                        json_safe(example.text)});
  }
}

void Totals::absorb(Totals&& other) {
  lines += other.lines;
  requests += other.requests;
  bytes += other.bytes;
  malformed += other.malformed;
  for (std::size_t i = 0; i < 5; ++i) {
    status_requests[i] += other.status_requests[i];
    status_bytes[i] += other.status_bytes[i];
  }
  absorb_map(paths, other.paths);
  absorb_map(clients, other.clients);
  absorb_map(hours, other.hours);
  absorb_map(sizes, other.sizes);
  for (Example& example : other.examples) {
    if (examples.size() >= max_examples) break;
    examples.push_back(std::move(example));
  }
}

std::optional<std::uint64_t> nearest_rank(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& histogram,
                                          std::uint64_t n, unsigned p) {
  if (n == 0) return std::nullopt;
  // ceil(p * n / 100) in integers; at least rank 1.
  const std::uint64_t rank = std::max<std::uint64_t>(1, (std::uint64_t{p} * n + 99) / 100);
  std::uint64_t seen = 0;
  for (const auto& [size, count] : histogram) {
    seen += count;
    if (seen >= rank) return size;
  }
  return histogram.back().first;
}

Report make_report(const Totals& totals, std::size_t top) {
  Report report;
  report.requests = totals.requests;
  report.bytes = totals.bytes;
  report.status_requests = totals.status_requests;
  report.status_bytes = totals.status_bytes;
  report.top_paths = top_of(totals.paths, top);
  report.distinct_paths = totals.paths.size();
  report.top_clients = top_of(totals.clients, top);
  report.distinct_clients = totals.clients.size();

  std::vector<std::pair<std::uint64_t, std::uint64_t>> hours(totals.hours.begin(), totals.hours.end());
  std::sort(hours.begin(), hours.end());
  report.hours.reserve(hours.size());
  for (const auto& [hour, count] : hours) report.hours.push_back({format_hour(hour), count});

  std::vector<std::pair<std::uint64_t, std::uint64_t>> sizes(totals.sizes.begin(), totals.sizes.end());
  std::sort(sizes.begin(), sizes.end());
  for (const auto& entry : sizes) report.sized_responses += entry.second;
  report.p50 = nearest_rank(sizes, report.sized_responses, 50);
  report.p90 = nearest_rank(sizes, report.sized_responses, 90);
  report.p99 = nearest_rank(sizes, report.sized_responses, 99);
  if (!sizes.empty()) report.max = sizes.back().first;

  report.malformed = totals.malformed;
  report.examples = totals.examples;
  return report;
}

nlohmann::ordered_json report_json(const Report& report) {
  using OJson = nlohmann::ordered_json;
  const auto optional = [](const std::optional<std::uint64_t>& v) { return v ? OJson(*v) : OJson(nullptr); };
  const auto ranked = [](const std::vector<Ranked>& rows, const char* key) {
    OJson out = OJson::array();
    for (const Ranked& row : rows) out.push_back({{key, row.key}, {"requests", row.count}});
    return out;
  };
  OJson status = OJson::object();
  for (std::size_t i = 0; i < 5; ++i) {
    status[std::to_string(i + 1) + "xx"] = {{"requests", report.status_requests[i]}, {"bytes", report.status_bytes[i]}};
  }
  OJson hours = OJson::object();
  for (const Ranked& hour : report.hours) hours[hour.key] = hour.count;
  OJson examples = OJson::array();
  for (const Example& e : report.examples) {
    examples.push_back({{"file", e.file}, {"line", e.line}, {"offset", e.offset}, {"reason", e.reason}, {"text", e.text}});
  }
  OJson errors = OJson::array();
  for (const FileProblem& p : report.errors) errors.push_back({{"file", p.file}, {"error", p.error}});

  OJson out;
  out["files"] = report.files;
  out["chunks"] = report.chunks;
  out["input_bytes"] = report.input_bytes;
  out["requests"] = report.requests;
  out["bytes"] = report.bytes;
  out["status"] = std::move(status);
  out["top_paths"] = ranked(report.top_paths, "path");
  out["distinct_paths"] = report.distinct_paths;
  out["top_clients"] = ranked(report.top_clients, "client");
  out["distinct_clients"] = report.distinct_clients;
  out["requests_per_hour"] = std::move(hours);
  out["response_sizes"] = {{"responses", report.sized_responses},
                           {"p50", optional(report.p50)},
                           {"p90", optional(report.p90)},
                           {"p99", optional(report.p99)},
                           {"max", optional(report.max)}};
  out["malformed"] = {{"lines", report.malformed}, {"examples", std::move(examples)}};
  out["errors"] = std::move(errors);
  return out;
}

std::string report_text(const Report& report, std::size_t top) {
  std::string out;
  append(out, "logstats: %llu files (%s) in %llu chunks\n", ull(report.files), human_bytes(report.input_bytes).c_str(),
         ull(report.chunks));
  const int width = std::max({digits(report.requests), digits(report.bytes), digits(report.malformed)});
  append(out, "\n  requests         %*llu\n", width, ull(report.requests));
  append(out, "  bytes            %*llu  (%s)\n", width, ull(report.bytes), human_bytes(report.bytes).c_str());
  append(out, "  malformed lines  %*llu\n", width, ull(report.malformed));

  int requests_width = 8;
  int bytes_width = 5;
  for (std::size_t i = 0; i < 5; ++i) {
    requests_width = std::max(requests_width, digits(report.status_requests[i]));
    bytes_width = std::max(bytes_width, digits(report.status_bytes[i]));
  }
  append(out, "\n  status  %*s  %*s\n", requests_width, "requests", bytes_width, "bytes");
  for (std::size_t i = 0; i < 5; ++i) {
    append(out, "  %zuxx     %*llu  %*llu\n", i + 1, requests_width, ull(report.status_requests[i]), bytes_width,
           ull(report.status_bytes[i]));
  }

  append(out, "\nresponse sizes: %llu responses with a size (nearest rank)\n", ull(report.sized_responses));
  if (report.sized_responses > 0) {
    const int size_width = digits(*report.max);
    append(out, "  p50  %*llu\n  p90  %*llu\n  p99  %*llu\n  max  %*llu\n", size_width, ull(*report.p50), size_width,
           ull(*report.p90), size_width, ull(*report.p99), size_width, ull(*report.max));
  }

  ranked_table(out, "paths", "path", report.top_paths, report.distinct_paths, top);
  ranked_table(out, "clients", "client", report.top_clients, report.distinct_clients, top);

  append(out, "\nrequests per hour (in each line's own time zone)\n");
  int hour_width = 8;
  for (const Ranked& hour : report.hours) hour_width = std::max(hour_width, digits(hour.count));
  append(out, "  %-13s  %*s\n", "hour", hour_width, "requests");
  for (const Ranked& hour : report.hours) append(out, "  %s  %*llu\n", hour.key.c_str(), hour_width, ull(hour.count));

  if (report.malformed > 0) {
    append(out, "\nmalformed lines: %llu; the first %zu (file:line, byte offset):\n", ull(report.malformed),
           report.examples.size());
    for (const Example& e : report.examples) {
      append(out, "  %s:%llu (byte %llu): %s: %s\n", e.file.c_str(), ull(e.line), ull(e.offset), e.reason.c_str(),
             e.text.c_str());
    }
  }
  if (!report.errors.empty()) {
    append(out, "\nfiles not read (not counted above):\n");
    for (const FileProblem& p : report.errors) append(out, "  %s: %s\n", p.file.c_str(), p.error.c_str());
  }
  return out;
}

}  // namespace logstats
