// SPDX-License-Identifier: MIT
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <iterator>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <coremap/process_tree.hpp>

#include "bench.hpp"

namespace coremap::cli {
namespace bench {
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

// One line of the table: --serial or a thread count (per rank), its timed repeats and its
// measured run.
struct Row {
  bool serial = false;
  bool isolated = false;  // --isolate: the plugin in worker processes
  // Isolated rows: (median - the in-process row's median at the same thread count) / items.
  std::optional<double> isolation_us_per_item;
  std::size_t threads = 1;
  std::size_t ranks = 1;  // processes running the items: processing ranks under MPI
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
  // Under MPI: each timed run's shares per processing rank, and the median over the runs of the
  // busiest rank's busy time over the least busy one's.
  std::vector<std::vector<RankShare>> shares;
  double balance = 0;

  // Threads running items at once, over every rank.
  std::size_t parallelism() const { return serial ? 1 : threads * ranks; }
  std::string label() const {
    if (serial) return "serial";
    if (isolated) return std::to_string(threads) + " iso";
    return ranks > 1 ? std::to_string(ranks) + "x" + std::to_string(threads) : std::to_string(threads);
  }
};

// The busiest rank's busy time over the least busy one's.
double busy_ratio(const std::vector<RankShare>& shares) {
  double most = 0, least = 0;
  for (const RankShare& share : shares) {
    most = std::max(most, share.busy_seconds);
    least = least == 0 ? share.busy_seconds : std::min(least, share.busy_seconds);
  }
  return least > 0 ? most / least : 0;
}

double median_of(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
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
// with p > 1 (each row's Karp-Flatt value is y / x; this weights them by x^2). Rows with more
// threads than `cores` (0: no bound) are left out: past the cores, threads share them, and the
// speedup stops rising for that reason, not for a serial fraction.
std::optional<double> fit_serial_fraction(const std::vector<Row>& rows, std::size_t cores) {
  double xy = 0, xx = 0;
  for (const Row& row : rows) {
    if (row.serial || row.isolated || row.parallelism() < 2 || row.speedup <= 0) continue;
    if (cores != 0 && row.parallelism() > cores) continue;
    const double p = static_cast<double>(row.parallelism());
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
                        const std::string& title, const std::string& x_label) {
  constexpr double width = 640, height = 440, left = 64, right = 24, top = 52, bottom = 64;
  std::size_t max_threads = 2;
  double max_speedup = 0;
  for (const Row& row : rows) {
    if (row.serial) continue;
    max_threads = std::max(max_threads, row.parallelism());
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
      << "\" text-anchor=\"middle\">" << xml_escape(x_label) << "</text>\n"
      << "<text transform=\"translate(18," << (py(0) + py(ymax)) / 2
      << ") rotate(-90)\" text-anchor=\"middle\">speedup over --serial (median wall time)</text>\n</g>\n";
  svg << "<g stroke=\"#333\" stroke-width=\"1\"><line id=\"x-axis\" x1=\"" << px(0) << "\" y1=\"" << py(0)
      << "\" x2=\"" << px(xmax) << "\" y2=\"" << py(0) << "\"/><line id=\"y-axis\" x1=\"" << px(0) << "\" y1=\""
      << py(0) << "\" x2=\"" << px(0) << "\" y2=\"" << py(ymax) << "\"/></g>\n";
  if (cores != 0 && static_cast<double>(cores) < xmax) {
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
  bool any_isolated = false;
  for (const Row& row : rows) any_isolated = any_isolated || row.isolated;
  if (any_isolated) {
    svg << "<polyline id=\"isolated\" fill=\"none\" stroke=\"#ff7f0e\" stroke-width=\"2\" points=\"";
    bool first_isolated = true;
    for (const Row& row : rows) {
      if (!row.isolated) continue;
      svg << (first_isolated ? "" : " ") << point(static_cast<double>(row.parallelism()), row.speedup);
      first_isolated = false;
    }
    svg << "\"/>\n";
  }
  svg << "<polyline id=\"measured\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"";
  bool first = true;
  for (const Row& row : rows) {
    if (row.serial || row.isolated) continue;
    svg << (first ? "" : " ") << point(static_cast<double>(row.parallelism()), row.speedup);
    first = false;
  }
  svg << "\"/>\n<g fill=\"#1f77b4\">\n";
  for (const Row& row : rows) {
    if (row.serial || row.isolated) continue;
    svg << "<circle cx=\"" << format_fixed(px(static_cast<double>(row.parallelism())), 1) << "\" cy=\""
        << format_fixed(py(row.speedup), 1) << "\" r=\"3.5\"><title>" << row.label() << " threads: speedup "
        << format_fixed(row.speedup, 3) << "</title></circle>\n";
  }
  svg << "</g>\n";
  // Legend.
  const double lx = left + 12, ly = top + 8;
  svg << "<g id=\"legend\"><rect x=\"" << lx - 6 << "\" y=\"" << ly - 6 << "\" width=\"300\" height=\""
      << (fit ? 64 : 46) + (any_isolated ? 18 : 0) << "\" fill=\"white\" stroke=\"#ccc\"/>\n"
      << "<line x1=\"" << lx << "\" y1=\"" << ly + 6 << "\" x2=\"" << lx + 28 << "\" y2=\"" << ly + 6
      << "\" stroke=\"#1f77b4\" stroke-width=\"2\"/><text x=\"" << lx + 36 << "\" y=\"" << ly + 10
      << "\">measured</text>\n"
      << "<line x1=\"" << lx << "\" y1=\"" << ly + 24 << "\" x2=\"" << lx + 28 << "\" y2=\"" << ly + 24
      << "\" stroke=\"#888\" stroke-dasharray=\"6,4\" stroke-width=\"1.5\"/><text x=\"" << lx + 36 << "\" y=\""
      << ly + 28 << "\">ideal: S(p) = p</text>\n";
  if (any_isolated) {
    const double iy = ly + (fit ? 60 : 42);
    svg << "<line x1=\"" << lx << "\" y1=\"" << iy << "\" x2=\"" << lx + 28 << "\" y2=\"" << iy
        << "\" stroke=\"#ff7f0e\" stroke-width=\"2\"/><text x=\"" << lx + 36 << "\" y=\"" << iy + 4
        << "\">measured, --isolate</text>\n";
  }
  if (fit) {
    svg << "<line x1=\"" << lx << "\" y1=\"" << ly + 42 << "\" x2=\"" << lx + 28 << "\" y2=\"" << ly + 42
        << "\" stroke=\"#d62728\" stroke-width=\"1.5\"/><text x=\"" << lx + 36 << "\" y=\"" << ly + 46
        << "\">Amdahl: S(p) = 1/(f + (1-f)/p), f = " << format_fixed(std::clamp(*fit, 0.0, 1.0), 4) << "</text>\n";
  }
  svg << "</g>\n</svg>\n";
  return svg.str();
}

// Each timed run's shares per processing rank (MPI).
Json shares_json(const std::vector<std::vector<RankShare>>& runs) {
  Json out = Json::array();
  for (const auto& run : runs) {
    Json shares = Json::array();
    for (const RankShare& share : run) {
      shares.push_back({{"rank", share.rank},
                        {"host", share.host},
                        {"items", share.items},
                        {"chunks", share.chunks},
                        {"threads", share.threads},
                        {"busy_seconds", share.busy_seconds},
                        {"cpu_seconds", share.cpu_seconds}});
    }
    out.push_back(std::move(shares));
  }
  return out;
}

std::string join_labels(const std::vector<std::string>& labels) {
  std::string out;
  for (const std::string& label : labels) out += (out.empty() ? "" : ", ") + label;
  return out;
}

// Stop signals during a sweep (local bench): the first stops the run in progress and makes
// sweep() throw Interrupted, whose unwinding removes the files being written; a second removes
// them here (unlink is async-signal-safe), kills what the run started and exits at once. A
// handler touches only these: lock-free atomics, fixed buffers filled before it is installed.
std::atomic<Runner*> signalled_runner{nullptr};
volatile std::sig_atomic_t bench_signal = 0;
constexpr std::size_t max_partials = 3;
char partial_paths[max_partials][PATH_MAX] = {};
std::atomic<std::size_t> partial_count{0};

extern "C" void on_bench_signal(int signal_number) {
  if (bench_signal != 0) {
    for (std::size_t i = 0; i < partial_count.load(); ++i) ::unlink(partial_paths[i]);
    coremap::process_tree::kill_descendants();
    _exit(128 + signal_number);
  }
  bench_signal = signal_number;
  if (Runner* runner = signalled_runner.load()) runner->request_stop();
}

constexpr int bench_stop_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGXCPU};

// The FILE.part that a FileSink on `path` writes, for the second signal's clean-up.
void note_partial(const std::string& path) {
  const std::string part = resolve_output(path).path + ".part";
  const std::size_t i = partial_count.load();
  if (i >= max_partials || part.size() >= PATH_MAX) return;
  std::memcpy(partial_paths[i], part.c_str(), part.size() + 1);
  partial_count.store(i + 1);
}

}  // namespace

SignalScope::SignalScope(Runner& runner) {
  bench_signal = 0;
  partial_count.store(0);
  signalled_runner.store(&runner);
  struct sigaction action {};
  action.sa_handler = on_bench_signal;
  sigemptyset(&action.sa_mask);
  for (std::size_t i = 0; i < std::size(bench_stop_signals); ++i) {
    // Signals ignored when coremap started (nohup, a background job) stay ignored, as for run.
    installed_[i] = ::sigaction(bench_stop_signals[i], nullptr, &old_[i]) == 0 &&
                    (i < 3 || old_[i].sa_handler != SIG_IGN) &&
                    ::sigaction(bench_stop_signals[i], &action, nullptr) == 0;
  }
}

SignalScope::~SignalScope() {
  for (std::size_t i = 0; i < std::size(bench_stop_signals); ++i) {
    if (installed_[i]) ::sigaction(bench_stop_signals[i], &old_[i], nullptr);
  }
  signalled_runner.store(nullptr);
}

int interrupted_by() { return bench_signal; }

Timed LocalRunner::run(bool serial, std::size_t threads, bool isolate, bool measure, Sink& sink) {
  if (!engine_ || serial != serial_ || threads != threads_ || measure != measure_ || isolate != isolate_) {
    engine_.reset();
    RunOptions options = base_;
    options.cancel = stop_;
    options.threads = threads;
    options.serial = serial;
    options.isolate = isolate;
    options.measure = measure;
    engine_.emplace(pipeline_, std::move(options));
    serial_ = serial;
    threads_ = threads;
    measure_ = measure;
    isolate_ = isolate;
  }
  Timed timed;
  const auto start = Clock::now();
  ManifestReader manifest(manifest_, format_);
  running_.store(&*engine_);
  struct Clear {
    std::atomic<Engine*>& running;
    ~Clear() { running.store(nullptr); }
  } clear{running_};
  timed.stats = engine_->run(manifest, sink);
  timed.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return timed;
}

void LocalRunner::request_stop() noexcept {
  // The token makes every later run stop at its start too; the engine's flag takes effect in
  // the run in progress at once.
  stop_.cancel();
  if (Engine* engine = running_.load()) engine->request_stop();
}

std::size_t available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) return static_cast<std::size_t>(std::max(1, CPU_COUNT(&set)));
  return 1;
}

}  // namespace bench

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
      ->check(thread_count_validator());
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
  auto* isolate = bench->add_flag("--isolate", args.isolate,
                                  "Also time each thread count with the plugin in worker processes (rows 'N iso', as "
                                  "run --isolate) and show the isolation overhead per item beside the in-process rows");
  (void)isolate;
  bench->add_option("--retries", args.retries, "Every run retries a failed item up to N more times, as run --retries")
      ->check(CLI::Range(0u, 1000u))
      ->type_name("N");
  bench->add_flag("--unordered", args.unordered, "Every run writes records as items finish, as run --unordered");
  bench->add_flag("--mpi", args.mpi,
                  "Run the rows across the ranks of an MPI job (implied when mpirun or srun started coremap): "
                  "--serial on rank 0, then each thread count on every other rank; adds load balance per rank");
  bench->add_option("--mpi-chunk", args.mpi_chunk,
                    "Under MPI: items per chunk handed to a rank (default: sized to about 50 ms of the rank's work)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
      ->type_name("N");
  return bench;
}

int bench_command(const BenchArgs& args) {
  if (args.mpi || started_by_mpi_launcher()) return mpi_bench_command(args);
  if (args.mpi_chunk != 0) throw UsageError("--mpi-chunk applies to MPI runs (mpirun ... or --mpi) only");
  return local_bench_command(args);
}

int local_bench_command(const BenchArgs& args) {
  bench::check_args(args);
  const PluginLoader loader = make_loader(args.input.search);
  const Pipeline pipeline = make_pipeline(args.input, loader, "bench");
  bench::LocalRunner runner(pipeline, parse_manifest_format(args.input.format), args.input.manifest,
                            RunOptions{.ordered = !args.unordered, .retries = args.retries});
  bench::SignalScope signals(runner);
  try {
    return bench::sweep(args, pipeline, runner);
  } catch (const bench::Interrupted& interrupted) {
    std::fflush(stdout);
    std::fprintf(stderr, "coremap: bench interrupted by signal %d: the run in progress was stopped and the files "
                         "being written (--output, --json, --svg) removed\n",
                 interrupted.signal_number);
    return 128 + interrupted.signal_number;
  }
}

#ifndef COREMAP_WITH_MPI
int mpi_bench_command(const BenchArgs& args) {
  // Each rank would run the whole sweep on its own and write the same files.
  if (args.mpi) throw UsageError("bench --mpi: this coremap was built without MPI (install libopenmpi-dev and rebuild)");
  throw UsageError("bench: started by an MPI launcher, but this coremap was built without MPI: every rank would run "
                   "the whole sweep; rebuild with MPI (libopenmpi-dev) or run it without mpirun");
}
#endif

namespace bench {

void check_args(const BenchArgs& args) {
  if (args.input.manifest == "-") {
    throw UsageError("bench: the manifest is read again for every run, so it must be a file, not - (standard input)");
  }
  if (args.output == "-") throw UsageError("bench: --output needs a file: standard output carries the table");
  // A missing manifest fails before anything runs.
  ManifestReader check(args.input.manifest, parse_manifest_format(args.input.format));
}

int sweep(const BenchArgs& args, const Pipeline& pipeline, Runner& runner) {
  const ManifestFormat format = parse_manifest_format(args.input.format);
  const std::size_t cores = available_cores();
  const std::size_t ranks = runner.ranks();
  std::vector<std::size_t> counts = args.threads.empty() ? default_thread_counts(cores) : args.threads;
  std::sort(counts.begin(), counts.end());
  counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
  // Created now, so an unwritable --output, --json or --svg fails before minutes of measuring.
  std::optional<FileSink> kept, json_file, svg_file;
  refuse_recorded_run_file(args.output, "--output");
  refuse_recorded_run_file(args.json, "--json");
  refuse_recorded_run_file(args.svg, "--svg");
  if (!args.output.empty()) {
    // The output of a run a journal records (finished or not): bench's records would replace
    // it and its FILE.part, and a later --resume would take them for that run's.
    if (std::error_code ec; std::filesystem::exists(args.output + ".journal", ec)) {
      throw UsageError("bench: --output '" + args.output + "' is the output of the coremap run recorded in " +
                       args.output + ".journal: choose another file (bench's records are not that run's)");
    }
    kept.emplace(args.output);
    if (!kept->streams()) note_partial(args.output);
  }
  if (!args.json.empty()) {
    json_file.emplace(args.json);
    if (!json_file->streams()) note_partial(args.json);
  }
  if (!args.svg.empty()) {
    svg_file.emplace(args.svg);
    if (!svg_file->streams()) note_partial(args.svg);
  }
  // After a stop signal: the run in progress was stopped; the files above are removed as this
  // unwinds (FileSink removes a FILE.part it did not finish).
  auto check_interrupted = [] {
    if (const int signal_number = interrupted_by(); signal_number != 0) throw Interrupted{signal_number};
  };

  std::string what;
  for (const Stage& stage : pipeline.stages) {
    what += (what.empty() ? "" : " -> ") + std::string(stage.plugin->name()) + " " + std::string(stage.plugin->version());
  }
  const auto manifest_bytes = std::filesystem::file_size(args.input.manifest);
  std::printf("coremap bench: %s over %s (%llu bytes); %zu timed run%s per row after %zu warm-up; %zu cores\n",
              what.c_str(), args.input.manifest.c_str(), static_cast<unsigned long long>(manifest_bytes), args.repeat,
              args.repeat == 1 ? "" : "s", args.warmup, cores);
  if (ranks > 1) {
    std::printf("MPI: --serial on rank 0; each other row is %zu processing ranks x N threads (rows RxN), rank 0 "
                "coordinating\n",
                ranks);
  }
  if (args.isolate) {
    std::printf("rows 'N iso': N threads with the plugin in worker processes (run --isolate); isolation/item = "
                "(its median - the in-process N row's) / items\n");
  }
  std::printf("%-8s %10s  %-21s %12s %8s %10s %10s%s\n", ranks > 1 ? "ranksxN" : "threads", "median s", "(min - max)",
              "items/s", "speedup", "efficiency", "Karp-Flatt", args.isolate ? " isolation/item" : "");
  std::fflush(stdout);

  std::vector<Row> rows;
  rows.emplace_back().serial = true;
  for (std::size_t p : counts) {
    Row& row = rows.emplace_back();
    row.threads = p;
    row.ranks = ranks;
    if (args.isolate) {
      Row& isolated = rows.emplace_back();
      isolated.threads = p;
      isolated.isolated = true;
    }
  }
  bool any_failed = false;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    Row& row = rows[r];
    const bool last_row = r + 1 == rows.size();
    for (std::size_t i = 0; i < args.warmup + args.repeat; ++i) {
      CountingSink sink;
      const Timed timed = runner.run(row.serial, row.threads, row.isolated, false, sink);
      check_interrupted();
      if (i < args.warmup) continue;
      row.walls.push_back(timed.wall_seconds);
      row.items = timed.stats.items;
      row.failed = timed.stats.failed;
      row.output_bytes = sink.bytes();
      if (!timed.ranks.empty()) row.shares.push_back(timed.ranks);
    }
    // One more run, timing each process() call: it is not among the timed repeats, so the
    // clock reads never weigh on the table's wall times.
    // Isolated runs time their calls in the workers (RunOptions::measure is in process only):
    // they get no measured run, and the last row's records come from one more plain run.
    CountingSink counting;
    Sink& sink = last_row && kept ? static_cast<Sink&>(*kept) : counting;
    if (!row.isolated) {
      const Timed profile = runner.run(row.serial, row.threads, false, true, sink);
      check_interrupted();
      row.profile_wall = profile.wall_seconds;
      row.stages = profile.stats.stages;
    } else if (last_row && kept) {
      runner.run(row.serial, row.threads, true, false, sink);
      check_interrupted();
    }
    if (!row.shares.empty()) {
      std::vector<double> ratios;
      for (const auto& shares : row.shares) ratios.push_back(busy_ratio(shares));
      row.balance = median_of(ratios);
    }
    any_failed = any_failed || row.failed != 0;

    row.median = median_of(row.walls);
    row.min = *std::min_element(row.walls.begin(), row.walls.end());
    row.max = *std::max_element(row.walls.begin(), row.walls.end());
    row.spread = row.median > 0 ? (row.max - row.min) / row.median : 0;
    row.speedup = row.median > 0 ? rows.front().median / row.median : 0;
    if (row.isolated && row.items > 0) {
      // The in-process row of the same thread count comes just before.
      row.isolation_us_per_item = (row.median - rows[r - 1].median) * 1e6 / static_cast<double>(row.items);
    }
    row.efficiency = row.speedup / static_cast<double>(row.parallelism());
    if (row.parallelism() > 1 && row.speedup > 0) {
      const double p = static_cast<double>(row.parallelism());
      row.karp_flatt = (1 / row.speedup - 1 / p) / (1 - 1 / p);
    }
    // Framework overhead: the share of the run's thread time not spent inside process().
    double busy = 0, capacity = static_cast<double>(row.parallelism());
    for (std::size_t s = 0; s < row.stages.size(); ++s) {
      const StageStats& stage = row.stages[s];
      busy += static_cast<double>(stage.busy_ns) / 1e9;
      if (stage.latency_bound) capacity += static_cast<double>(stage.concurrency);
      const double load = static_cast<double>(stage.busy_ns) / 1e9 /
                          (static_cast<double>(std::max<std::size_t>(1, stage.concurrency)) * row.profile_wall);
      if (s == 0 || load > row.bottleneck_load) {
        row.bottleneck = s;
        row.bottleneck_load = load;
      }
    }
    row.overhead = row.profile_wall > 0 ? 1 - busy / (row.profile_wall * capacity) : 0;

    const double items_per_second = row.median > 0 ? static_cast<double>(row.items) / row.median : 0;
    std::printf("%-8s %10.4f  (%8.4f - %8.4f) %12.1f %8.3f %10.3f %10s", row.label().c_str(), row.median, row.min,
                row.max, items_per_second, row.speedup, row.efficiency,
                row.karp_flatt ? format_fixed(*row.karp_flatt, 4).c_str() : "-");
    if (args.isolate) {
      std::printf(" %14s",
                  row.isolation_us_per_item ? (format_fixed(*row.isolation_us_per_item, 2) + " us").c_str() : "-");
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  check_interrupted();
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
      if (row.stages.empty()) continue;  // an isolated row: no measured run
      std::printf("bottleneck at %s: stage '%s', busy %.0f%% of its %zu call slot%s' time\n",
                  row.serial ? "--serial" : (row.label() + " threads").c_str(), row.stages[row.bottleneck].name.c_str(),
                  100 * row.bottleneck_load, row.stages[row.bottleneck].concurrency,
                  row.stages[row.bottleneck].concurrency == 1 ? "" : "s");
    }
  }
  if (ranks > 1) {
    std::printf("\nload balance over the processing ranks (last timed run; busy = from the run's start until the rank's "
                "last records reached rank 0):\n");
    std::printf("%-8s %5s %-24s %9s %7s %9s %9s %10s\n", "ranksxN", "rank", "host", "items", "chunks", "busy s",
                "CPU s", "max/min");
    for (const Row& row : rows) {
      if (row.shares.empty()) continue;
      const std::vector<RankShare>& last = row.shares.back();
      for (std::size_t i = 0; i < last.size(); ++i) {
        const RankShare& share = last[i];
        std::printf("%-8s %5d %-24s %9llu %7llu %9.4f %9.4f %10s\n", i == 0 ? row.label().c_str() : "", share.rank,
                    share.host.c_str(), static_cast<unsigned long long>(share.items),
                    static_cast<unsigned long long>(share.chunks), share.busy_seconds, share.cpu_seconds,
                    i == 0 ? format_fixed(row.balance, 3).c_str() : "");
      }
    }
    std::printf("max/min: the busiest rank's busy time over the least busy one's, median over the timed runs\n");
  }
  // Under MPI the rows' parallelism spans ranks on other machines: no one core count bounds it.
  const std::size_t fit_cores = ranks > 1 ? 0 : cores;
  const std::optional<double> fit = fit_serial_fraction(rows, fit_cores);
  if (fit && fit_cores != 0) {
    std::printf("Amdahl fit (least squares on 1/speedup over rows with 1 < threads <= %zu cores): serial fraction "
                "f = %.4f\n",
                fit_cores, *fit);
  } else if (fit) {
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
      if (ranks == 1 && p > cores) over.push_back(std::to_string(p));
      for (std::string& warning : runner.warnings(p)) warnings.push_back(std::move(warning));
    }
    if (!over.empty()) {
      warnings.push_back("threads " + join_labels(over) + " exceed the " + std::to_string(cores) +
                         " cores: those rows measure oversubscription, not more parallelism");
    }
    if (args.repeat < 3) {
      warnings.push_back("only " + std::to_string(args.repeat) + " timed run" + (args.repeat == 1 ? "" : "s") +
                         " per row: the spread says little; use --repeat 5 or more");
    }
    if (fit && *fit > 1) {
      warnings.push_back("the fitted serial fraction " + format_fixed(*fit, 4) +
                         " is above 1: the parallel rows ran slower than --serial, so Amdahl's law does not "
                         "describe them (too few or too short items, or a machine busy with other work); use a "
                         "larger manifest or --repeat 5 on an idle machine");
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
                       {"spread_limit", spread_limit}, {"isolate", args.isolate}, {"retries", args.retries},
                       {"ordered", !args.unordered}};
    Json runs = Json::array();
    for (const Row& row : rows) {
      Json stages = Json::array();
      for (const StageStats& stage : row.stages) {
        stages.push_back({{"name", stage.name},
                          {"concurrency", stage.concurrency},
                          {"latency_bound", stage.latency_bound},
                          {"calls", stage.calls},
                          {"busy_seconds", static_cast<double>(stage.busy_ns) / 1e9},
                          {"p50_ns", stage.p50_ns},
                          {"p95_ns", stage.p95_ns},
                          {"p99_ns", stage.p99_ns},
                          {"max_ns", stage.max_ns}});
      }
      runs.push_back({{"label", row.label()},
                      {"serial", row.serial},
                      {"isolated", row.isolated},
                      {"isolation_us_per_item",
                       row.isolation_us_per_item ? Json(*row.isolation_us_per_item) : Json(nullptr)},
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
                      {"ranks", row.serial ? 1 : row.ranks},
                      {"parallelism", row.parallelism()},
                      {"rank_shares", shares_json(row.shares)},
                      {"balance", row.shares.empty() ? Json(nullptr) : Json(row.balance)},
                      {"profile", row.isolated
                                      ? Json(nullptr)
                                      : Json{{"wall_seconds", row.profile_wall},
                                             {"framework_overhead", row.overhead},
                                             {"bottleneck", row.stages.empty() ? Json(nullptr)
                                                                               : Json(row.stages[row.bottleneck].name)},
                                             {"bottleneck_load", row.bottleneck_load},
                                             {"stages", stages}}}});
    }
    out["runs"] = runs;
    out["mpi"] = runner.describe();
    out["amdahl"] = {{"serial_fraction", fit ? Json(std::clamp(*fit, 0.0, 1.0)) : Json(nullptr)},
                     {"fitted", fit ? Json(*fit) : Json(nullptr)},
                     {"method", fit_cores != 0 ? "least squares of 1/S - 1/p = f (1 - 1/p) over the rows with 1 < threads <= cores"
                                                : "least squares of 1/S - 1/p = f (1 - 1/p) over the rows with threads > 1"}};
    out["warnings"] = warnings;
    json_file->write(out.dump(2, ' ', false, Json::error_handler_t::replace) + "\n");
    json_file->finish();
  }
  if (!args.svg.empty()) {
    svg_file->write(speedup_svg(rows, fit, ranks > 1 ? 0 : cores, "coremap bench: " + what + ", speedup over --serial",
                                ranks > 1 ? "threads over " + std::to_string(ranks) + " processing ranks" : "threads"));
    svg_file->finish();
  }
  return any_failed ? exit_items_failed : exit_ok;
}

}  // namespace bench
}  // namespace coremap::cli
