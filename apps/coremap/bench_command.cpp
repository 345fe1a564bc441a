// SPDX-License-Identifier: MIT
#include <sched.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"

namespace coremap::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Rows whose (max - min) / median exceeds this are flagged as untrustworthy.
constexpr double spread_limit = 0.10;

// Counts what the engine would write and writes nothing: bench measures processing, not disks.
class CountingSink final : public Sink {
 public:
  void write(std::string_view records) override { bytes_ += records.size(); }
  std::uint64_t bytes() const noexcept { return bytes_; }

 private:
  std::uint64_t bytes_ = 0;
};

// One line of the table: --serial or a thread count, its timed repeats and its measured run.
struct Row {
  bool serial = false;
  std::size_t threads = 1;
  std::vector<double> walls;
  double median = 0, min = 0, max = 0, spread = 0;
  std::uint64_t items = 0, failed = 0, output_bytes = 0;
  double speedup = 0, efficiency = 0;
  std::optional<double> karp_flatt;
  // From the extra run with RunOptions::measure.
  double profile_wall = 0;
  std::vector<StageStats> stages;
  double overhead = 0;
  std::size_t bottleneck = 0;
  double bottleneck_load = 0;

  std::string label() const { return serial ? "serial" : std::to_string(threads); }
};

double median_of(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// Cores this process may run on (what tbb::info::default_concurrency() also counts).
std::size_t available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) return static_cast<std::size_t>(std::max(1, CPU_COUNT(&set)));
  return 1;
}

// 1, then powers of two below the core count, then the core count.
std::vector<std::size_t> default_thread_counts(std::size_t cores) {
  std::vector<std::size_t> counts;
  for (std::size_t p = 1; p < cores; p *= 2) counts.push_back(p);
  counts.push_back(cores);
  return counts;
}

std::string proc_field(const char* file, const std::string& key) {
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key, 0) != 0) continue;
    const std::size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    return value;
  }
  return "";
}

Json machine_json(std::size_t cores) {
  Json machine;
  const std::string model = proc_field("/proc/cpuinfo", "model name");
  machine["cpu_model"] = model.empty() ? "unknown" : model;
  machine["cores"] = cores;
  const std::string mem_kib = proc_field("/proc/meminfo", "MemTotal");
  machine["memory_bytes"] = mem_kib.empty() ? Json(nullptr) : Json(std::stoull(mem_kib) * 1024);
  struct utsname name {};
  if (::uname(&name) == 0) machine["kernel"] = std::string(name.sysname) + " " + name.release;
  return machine;
}

std::string format_fixed(double value, int decimals) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A tick step of 1, 2 or 5 times a power of ten giving at most about `ticks` ticks over [0, span].
double tick_step(double span, int ticks) {
  const double raw = span / ticks;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * power >= raw) return std::max(1.0, m * power);
  }
  return std::max(1.0, 10 * power);
}

// Amdahl's serial fraction by least squares on 1/S: 1/S(p) - 1/p = f (1 - 1/p) is linear in f
// through the origin, so f = sum(x y) / sum(x x) with x = 1 - 1/p, y = 1/S - 1/p, over the rows
// with p > 1 (each row's Karp-Flatt value is y / x; this weights them by x^2).
std::optional<double> fit_serial_fraction(const std::vector<Row>& rows) {
  double xy = 0, xx = 0;
  for (const Row& row : rows) {
    if (row.serial || row.threads < 2 || row.speedup <= 0) continue;
    const double p = static_cast<double>(row.threads);
    const double x = 1 - 1 / p;
    const double y = 1 / row.speedup - 1 / p;
    xy += x * y;
    xx += x * x;
  }
  if (xx == 0) return std::nullopt;
  return xy / xx;
}

double amdahl(double f, double p) { return 1 / (f + (1 - f) / p); }

std::string speedup_svg(const std::vector<Row>& rows, std::optional<double> fit, std::size_t cores,
                        const std::string& title) {
  constexpr double width = 640, height = 440, left = 64, right = 24, top = 52, bottom = 64;
  std::size_t max_threads = 2;
  double max_speedup = 0;
  for (const Row& row : rows) {
    if (row.serial) continue;
    max_threads = std::max(max_threads, row.threads);
    max_speedup = std::max(max_speedup, row.speedup);
  }
  const double xmax = static_cast<double>(max_threads);
  const double ystep = tick_step(std::max(xmax, max_speedup * 1.05), 8);
  const double ymax = std::ceil(std::max(xmax, max_speedup * 1.05) / ystep) * ystep;
  const double xstep = tick_step(xmax, 8);
  auto px = [&](double p) { return left + p / xmax * (width - left - right); };
  auto py = [&](double s) { return height - bottom - s / ymax * (height - top - bottom); };
  auto point = [&](double p, double s) { return format_fixed(px(p), 1) + "," + format_fixed(py(s), 1); };

  std::ostringstream svg;
  svg << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << width << " " << height << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << width / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << xml_escape(title)
      << "</text>\n";
  // Grid, ticks and labels.
  svg << "<g stroke=\"#e4e4e4\">\n";
  for (double x = xstep; x <= xmax + 1e-9; x += xstep) {
    svg << "<line x1=\"" << format_fixed(px(x), 1) << "\" y1=\"" << py(0) << "\" x2=\"" << format_fixed(px(x), 1)
        << "\" y2=\"" << py(ymax) << "\"/>\n";
  }
  for (double y = ystep; y <= ymax + 1e-9; y += ystep) {
    svg << "<line x1=\"" << px(0) << "\" y1=\"" << format_fixed(py(y), 1) << "\" x2=\"" << px(xmax) << "\" y2=\""
        << format_fixed(py(y), 1) << "\"/>\n";
  }
  svg << "</g>\n<g fill=\"#333\">\n";
  for (double x = 0; x <= xmax + 1e-9; x += xstep) {
    svg << "<text x=\"" << format_fixed(px(x), 1) << "\" y=\"" << py(0) + 18 << "\" text-anchor=\"middle\">" << x
        << "</text>\n";
  }
  for (double y = 0; y <= ymax + 1e-9; y += ystep) {
    svg << "<text x=\"" << px(0) - 8 << "\" y=\"" << format_fixed(py(y) + 4, 1) << "\" text-anchor=\"end\">" << y
        << "</text>\n";
  }
  svg << "<text x=\"" << (px(0) + px(xmax)) / 2 << "\" y=\"" << height - 18
      << "\" text-anchor=\"middle\">threads</text>\n"
      << "<text transform=\"translate(18," << (py(0) + py(ymax)) / 2
      << ") rotate(-90)\" text-anchor=\"middle\">speedup over --serial (median wall time)</text>\n</g>\n";
  svg << "<g stroke=\"#333\" stroke-width=\"1\"><line id=\"x-axis\" x1=\"" << px(0) << "\" y1=\"" << py(0)
      << "\" x2=\"" << px(xmax) << "\" y2=\"" << py(0) << "\"/><line id=\"y-axis\" x1=\"" << px(0) << "\" y1=\""
      << py(0) << "\" x2=\"" << px(0) << "\" y2=\"" << py(ymax) << "\"/></g>\n";
  if (static_cast<double>(cores) < xmax) {
    svg << "<line id=\"cores\" x1=\"" << format_fixed(px(static_cast<double>(cores)), 1) << "\" y1=\"" << py(0)
        << "\" x2=\"" << format_fixed(px(static_cast<double>(cores)), 1) << "\" y2=\"" << py(ymax)
        << "\" stroke=\"#999\" stroke-dasharray=\"2,3\"/>\n"
        << "<text x=\"" << format_fixed(px(static_cast<double>(cores)) + 4, 1) << "\" y=\"" << py(ymax) + 12
        << "\" fill=\"#666\">" << cores << " cores</text>\n";
  }
  // The curves.
  svg << "<polyline id=\"ideal\" fill=\"none\" stroke=\"#888\" stroke-dasharray=\"6,4\" stroke-width=\"1.5\" points=\""
      << point(0, 0) << " " << point(xmax, xmax) << "\"/>\n";
  if (fit) {
    const double f = std::clamp(*fit, 0.0, 1.0);
    svg << "<polyline id=\"amdahl\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\" points=\"";
    constexpr int samples = 100;
    for (int i = 0; i <= samples; ++i) {
      const double p = 1 + (xmax - 1) * i / samples;
      svg << (i == 0 ? "" : " ") << point(p, amdahl(f, p));
    }
    svg << "\"/>\n";
  }
  svg << "<polyline id=\"measured\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"";
  bool first = true;
  for (const Row& row : rows) {
    if (row.serial) continue;
    svg << (first ? "" : " ") << point(static_cast<double>(row.threads), row.speedup);
    first = false;
  }
  svg << "\"/>\n<g fill=\"#1f77b4\">\n";
  for (const Row& row : rows) {
    if (row.serial) continue;
    svg << "<circle cx=\"" << format_fixed(px(static_cast<double>(row.threads)), 1) << "\" cy=\""
        << format_fixed(py(row.speedup), 1) << "\" r=\"3.5\"><title>" << row.threads << " threads: speedup "
        << format_fixed(row.speedup, 3) << "</title></circle>\n";
  }
  svg << "</g>\n";
  // Legend.
  const double lx = left + 12, ly = top + 8;
  svg << "<g id=\"legend\"><rect x=\"" << lx - 6 << "\" y=\"" << ly - 6 << "\" width=\"300\" height=\""
      << (fit ? 64 : 46) << "\" fill=\"white\" stroke=\"#ccc\"/>\n"
      << "<line x1=\"" << lx << "\" y1=\"" << ly + 6 << "\" x2=\"" << lx + 28 << "\" y2=\"" << ly + 6
      << "\" stroke=\"#1f77b4\" stroke-width=\"2\"/><text x=\"" << lx + 36 << "\" y=\"" << ly + 10
      << "\">measured</text>\n"
      << "<line x1=\"" << lx << "\" y1=\"" << ly + 24 << "\" x2=\"" << lx + 28 << "\" y2=\"" << ly + 24
      << "\" stroke=\"#888\" stroke-dasharray=\"6,4\" stroke-width=\"1.5\"/><text x=\"" << lx + 36 << "\" y=\""
      << ly + 28 << "\">ideal: S(p) = p</text>\n";
  if (fit) {
    svg << "<line x1=\"" << lx << "\" y1=\"" << ly + 42 << "\" x2=\"" << lx + 28 << "\" y2=\"" << ly + 42
        << "\" stroke=\"#d62728\" stroke-width=\"1.5\"/><text x=\"" << lx + 36 << "\" y=\"" << ly + 46
        << "\">Amdahl: S(p) = 1/(f + (1-f)/p), f = " << format_fixed(std::clamp(*fit, 0.0, 1.0), 4) << "</text>\n";
  }
  svg << "</g>\n</svg>\n";
  return svg.str();
}

std::string join_labels(const std::vector<std::string>& labels) {
  std::string out;
  for (const std::string& label : labels) out += (out.empty() ? "" : ", ") + label;
  return out;
}

}  // namespace

CLI::App* add_bench_command(CLI::App& app, BenchArgs& args) {
  CLI::App* bench = app.add_subcommand(
      "bench", "Time a plugin (or pipeline) over a manifest: --serial, then each thread count; speedup, efficiency, "
               "per-stage latency (docs/bench.md)");
  add_pipeline_options(*bench, args.input);
  bench->add_option("-j,--threads", args.threads,
                    "Thread counts to time, comma-separated (default: 1, powers of two below the core count, the "
                    "core count)")
      ->delimiter(',')
      ->type_name("N,N,...")
      ->check(CLI::Range(std::size_t{1}, std::size_t{4096}));
  bench->add_option("--repeat", args.repeat, "Timed runs per row; the table shows their median (default 5)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000}))
      ->type_name("K");
  bench->add_option("--warmup", args.warmup, "Untimed runs before each row's timed ones (default 1)")
      ->check(CLI::Range(std::size_t{0}, std::size_t{100000}))
      ->type_name("W");
  bench->add_option("-o,--output", args.output,
                    "Keep the records of the last run here (default: records are counted, not written)")
      ->type_name("FILE");
  bench->add_option("--json", args.json, "Write every measurement, the machine, versions, plugins and manifest here")
      ->type_name("FILE");
  bench->add_option("--svg", args.svg, "Draw speedup against threads, with the ideal and Amdahl's curve, here")
      ->type_name("FILE");
  return bench;
}

int bench_command(const BenchArgs& args) {
  // Each rank would run the whole sweep on its own and write the same files.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && std::string(value) != "1") {
      throw UsageError(std::string("bench: started by an MPI launcher (") + name + "=" + value +
                       "); bench does not run across MPI ranks: run it without mpirun (docs/distributed.md)");
    }
  }
  if (args.input.manifest == "-") {
    throw UsageError("bench: the manifest is read again for every run, so it must be a file, not - (standard input)");
  }
  if (args.output == "-") throw UsageError("bench: --output needs a file: standard output carries the table");
  const PluginLoader loader = make_loader(args.input.search);
  const ManifestFormat format = parse_manifest_format(args.input.format);
  { ManifestReader check(args.input.manifest, format); }  // a missing manifest fails before anything runs
  const Pipeline pipeline = make_pipeline(args.input, loader, "bench");
  const std::size_t cores = available_cores();
  std::vector<std::size_t> counts = args.threads.empty() ? default_thread_counts(cores) : args.threads;
  std::sort(counts.begin(), counts.end());
  counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
  // Created now, so an unwritable --output, --json or --svg fails before minutes of measuring.
  std::optional<FileSink> kept, json_file, svg_file;
  if (!args.output.empty()) kept.emplace(args.output);
  if (!args.json.empty()) json_file.emplace(args.json);
  if (!args.svg.empty()) svg_file.emplace(args.svg);

  std::string what;
  for (const Stage& stage : pipeline.stages) {
    what += (what.empty() ? "" : " -> ") + std::string(stage.plugin->name()) + " " + std::string(stage.plugin->version());
  }
  const auto manifest_bytes = std::filesystem::file_size(args.input.manifest);
  std::printf("coremap bench: %s over %s (%llu bytes); %zu timed run%s per row after %zu warm-up; %zu cores\n",
              what.c_str(), args.input.manifest.c_str(), static_cast<unsigned long long>(manifest_bytes), args.repeat,
              args.repeat == 1 ? "" : "s", args.warmup, cores);
  std::printf("%-8s %10s  %-21s %12s %8s %10s %10s\n", "threads", "median s", "(min - max)", "items/s", "speedup",
              "efficiency", "Karp-Flatt");
  std::fflush(stdout);

  std::vector<Row> rows;
  rows.emplace_back().serial = true;
  for (std::size_t p : counts) rows.emplace_back().threads = p;
  bool any_failed = false;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    Row& row = rows[r];
    const bool last_row = r + 1 == rows.size();
    auto run_once = [&](Engine& engine, Sink& sink, double& wall) {
      const auto start = Clock::now();
      ManifestReader manifest(args.input.manifest, format);
      RunStats stats = engine.run(manifest, sink);
      wall = std::chrono::duration<double>(Clock::now() - start).count();
      return stats;
    };
    {
      Engine engine(pipeline, RunOptions{.threads = row.threads, .serial = row.serial});
      for (std::size_t i = 0; i < args.warmup + args.repeat; ++i) {
        CountingSink sink;
        double wall = 0;
        const RunStats stats = run_once(engine, sink, wall);
        if (i < args.warmup) continue;
        row.walls.push_back(wall);
        row.items = stats.items;
        row.failed = stats.failed;
        row.output_bytes = sink.bytes();
      }
    }
    // One more run, timing each process() call: it is not among the timed repeats, so the
    // clock reads never weigh on the table's wall times.
    Engine profiled(pipeline, RunOptions{.threads = row.threads, .serial = row.serial, .measure = true});
    CountingSink counting;
    Sink& sink = last_row && kept ? static_cast<Sink&>(*kept) : counting;
    const RunStats profile = run_once(profiled, sink, row.profile_wall);
    row.stages = profile.stages;
    any_failed = any_failed || row.failed != 0;

    row.median = median_of(row.walls);
    row.min = *std::min_element(row.walls.begin(), row.walls.end());
    row.max = *std::max_element(row.walls.begin(), row.walls.end());
    row.spread = row.median > 0 ? (row.max - row.min) / row.median : 0;
    row.speedup = row.median > 0 ? rows.front().median / row.median : 0;
    row.efficiency = row.speedup / static_cast<double>(row.threads);
    if (!row.serial && row.threads > 1 && row.speedup > 0) {
      const double p = static_cast<double>(row.threads);
      row.karp_flatt = (1 / row.speedup - 1 / p) / (1 - 1 / p);
    }
    // Framework overhead: the share of the run's thread time not spent inside process().
    double busy = 0, capacity = static_cast<double>(row.threads);
    for (std::size_t s = 0; s < row.stages.size(); ++s) {
      const StageStats& stage = row.stages[s];
      busy += static_cast<double>(stage.busy_ns) / 1e9;
      if (stage.own_threads) capacity += static_cast<double>(stage.concurrency);
      const double load = static_cast<double>(stage.busy_ns) / 1e9 /
                          (static_cast<double>(std::max<std::size_t>(1, stage.concurrency)) * row.profile_wall);
      if (s == 0 || load > row.bottleneck_load) {
        row.bottleneck = s;
        row.bottleneck_load = load;
      }
    }
    row.overhead = row.profile_wall > 0 ? 1 - busy / (row.profile_wall * capacity) : 0;

    const double items_per_second = row.median > 0 ? static_cast<double>(row.items) / row.median : 0;
    std::printf("%-8s %10.4f  (%8.4f - %8.4f) %12.1f %8.3f %10.3f %10s\n", row.label().c_str(), row.median, row.min,
                row.max, items_per_second, row.speedup, row.efficiency,
                row.karp_flatt ? format_fixed(*row.karp_flatt, 4).c_str() : "-");
    std::fflush(stdout);
  }
  if (kept) kept->finish();

  std::printf("\nprocess() per call, from one more run per row with timing on (microseconds):\n");
  std::printf("%-8s %-16s %5s %9s %10s %10s %10s %10s %10s %9s\n", "threads", "stage", "conc", "calls", "busy s",
              "p50", "p95", "p99", "max", "overhead");
  for (const Row& row : rows) {
    for (std::size_t s = 0; s < row.stages.size(); ++s) {
      const StageStats& stage = row.stages[s];
      std::printf("%-8s %-16s %5zu %9llu %10.4f %10.1f %10.1f %10.1f %10.1f %9s\n", s == 0 ? row.label().c_str() : "",
                  stage.name.c_str(), stage.concurrency, static_cast<unsigned long long>(stage.calls),
                  static_cast<double>(stage.busy_ns) / 1e9, static_cast<double>(stage.p50_ns) / 1e3,
                  static_cast<double>(stage.p95_ns) / 1e3, static_cast<double>(stage.p99_ns) / 1e3,
                  static_cast<double>(stage.max_ns) / 1e3,
                  s == 0 ? (format_fixed(100 * row.overhead, 1) + "%").c_str() : "");
    }
  }
  if (pipeline.stages.size() > 1) {
    for (const Row& row : rows) {
      std::printf("bottleneck at %s: stage '%s', busy %.0f%% of its %zu call slot%s' time\n",
                  row.serial ? "--serial" : (row.label() + " threads").c_str(), row.stages[row.bottleneck].name.c_str(),
                  100 * row.bottleneck_load, row.stages[row.bottleneck].concurrency,
                  row.stages[row.bottleneck].concurrency == 1 ? "" : "s");
    }
  }
  const std::optional<double> fit = fit_serial_fraction(rows);
  if (fit) {
    std::printf("Amdahl fit (least squares on 1/speedup over rows with threads > 1): serial fraction f = %.4f\n", *fit);
  }

  std::vector<std::string> warnings;
  {
    std::vector<std::string> wide;
    for (const Row& row : rows) {
      if (row.spread > spread_limit) wide.push_back(row.label() + " (" + format_fixed(100 * row.spread, 1) + "%)");
    }
    if (!wide.empty()) {
      warnings.push_back("spread between repeats, (max - min) / median, above " + format_fixed(100 * spread_limit, 0) +
                         "% for " + join_labels(wide) +
                         ": do not trust these rows; rerun with more --repeat or on a quieter machine");
    }
    std::vector<std::string> over;
    for (std::size_t p : counts) {
      if (p > cores) over.push_back(std::to_string(p));
    }
    if (!over.empty()) {
      warnings.push_back("threads " + join_labels(over) + " exceed the " + std::to_string(cores) +
                         " cores: those rows measure oversubscription, not more parallelism");
    }
    if (args.repeat < 3) {
      warnings.push_back("only " + std::to_string(args.repeat) + " timed run" + (args.repeat == 1 ? "" : "s") +
                         " per row: the spread says little; use --repeat 5 or more");
    }
    if (any_failed) {
      warnings.push_back(std::to_string(rows.front().failed) +
                         " items failed in each run: the times include their error paths (exit status 1)");
    }
  }
  for (const std::string& warning : warnings) std::printf("warning: %s\n", warning.c_str());

  if (!args.json.empty()) {
    Json out;
    out["coremap"] = {{"version", version()},
                      {"git_revision", git_revision()},
                      {"tbb", tbb_version()},
                      {"compiler", compiler()}};
    out["machine"] = machine_json(cores);
    Json plugins = Json::array();
    for (const Stage& stage : pipeline.stages) {
      plugins.push_back({{"stage", stage.name},
                         {"name", std::string(stage.plugin->name())},
                         {"version", std::string(stage.plugin->version())},
                         {"path", stage.plugin->path()},
                         {"concurrency", stage.concurrency.to_string()},
                         {"config", stage.config}});
    }
    out["plugins"] = plugins;
    if (!args.input.pipeline.empty()) out["pipeline"] = args.input.pipeline;
    out["manifest"] = {{"path", args.input.manifest},
                       {"format", std::string(to_string(ManifestReader(args.input.manifest, format).format()))},
                       {"size_bytes", manifest_bytes},
                       {"items", rows.front().items},
                       {"sha256", file_sha256(args.input.manifest)}};
    out["settings"] = {{"repeat", args.repeat}, {"warmup", args.warmup}, {"threads", counts},
                       {"spread_limit", spread_limit}};
    Json runs = Json::array();
    for (const Row& row : rows) {
      Json stages = Json::array();
      for (const StageStats& stage : row.stages) {
        stages.push_back({{"name", stage.name},
                          {"concurrency", stage.concurrency},
                          {"own_threads", stage.own_threads},
                          {"calls", stage.calls},
                          {"busy_seconds", static_cast<double>(stage.busy_ns) / 1e9},
                          {"p50_ns", stage.p50_ns},
                          {"p95_ns", stage.p95_ns},
                          {"p99_ns", stage.p99_ns},
                          {"max_ns", stage.max_ns}});
      }
      runs.push_back({{"label", row.label()},
                      {"serial", row.serial},
                      {"threads", row.threads},
                      {"wall_seconds", row.walls},
                      {"median_seconds", row.median},
                      {"min_seconds", row.min},
                      {"max_seconds", row.max},
                      {"spread", row.spread},
                      {"items", row.items},
                      {"failed", row.failed},
                      {"output_bytes", row.output_bytes},
                      {"items_per_second", row.median > 0 ? static_cast<double>(row.items) / row.median : 0.0},
                      {"speedup", row.speedup},
                      {"efficiency", row.efficiency},
                      {"karp_flatt", row.karp_flatt ? Json(*row.karp_flatt) : Json(nullptr)},
                      {"profile",
                       {{"wall_seconds", row.profile_wall},
                        {"framework_overhead", row.overhead},
                        {"bottleneck", row.stages.empty() ? Json(nullptr) : Json(row.stages[row.bottleneck].name)},
                        {"bottleneck_load", row.bottleneck_load},
                        {"stages", stages}}}});
    }
    out["runs"] = runs;
    out["amdahl"] = {{"serial_fraction", fit ? Json(std::clamp(*fit, 0.0, 1.0)) : Json(nullptr)},
                     {"fitted", fit ? Json(*fit) : Json(nullptr)},
                     {"method", "least squares of 1/S - 1/p = f (1 - 1/p) over the rows with threads > 1"}};
    out["warnings"] = warnings;
    json_file->write(out.dump(2, ' ', false, Json::error_handler_t::replace) + "\n");
    json_file->finish();
  }
  if (!args.svg.empty()) {
    svg_file->write(speedup_svg(rows, fit, cores, "coremap bench: " + what + ", speedup over --serial"));
    svg_file->finish();
  }
  return any_failed ? exit_items_failed : exit_ok;
}

}  // namespace coremap::cli
