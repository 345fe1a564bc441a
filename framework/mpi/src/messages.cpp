// SPDX-License-Identifier: MIT
#include "messages.hpp"

#include <sys/resource.h>

#include <array>
#include <vector>

namespace coremap::mpi::detail {

void share_header(const Session& session, RunHeader& header) {
  WireWriter w;
  if (session.rank() == 0) {
    w.u8(static_cast<std::uint8_t>(header.format));
    w.u8(header.ordered ? 1 : 0);
    w.text(header.manifest_name);
  }
  std::string bytes(w.data());
  broadcast(session, bytes);
  WireReader r(bytes);
  const std::uint8_t format = r.u8();
  if (format > static_cast<std::uint8_t>(ManifestFormat::lines)) throw coremap::detail::ProtocolError("unknown manifest format");
  header.format = static_cast<ManifestFormat>(format);
  header.ordered = r.u8() != 0;
  header.manifest_name = std::string(r.text());
}

// A processing rank's report at the end of a run (tag_finished): its RunStats, CPU time, the partial
// states of its reducing stages (RunStats::states, as CBOR: exact bytes, no text round trip)
// and, when the run was measured, each stage's figures with the whole latency histogram, so
// that rank 0 can merge every rank's calls into exact percentiles.
void write_report(WireWriter& w, const RunStats& stats, std::uint64_t cpu) {
  for (std::uint64_t v : {stats.items, stats.records, stats.ok, stats.failed, stats.not_run, static_cast<std::uint64_t>(stats.threads),
                          static_cast<std::uint64_t>(stats.stopped), cpu, static_cast<std::uint64_t>(stats.stages.size())}) {
    w.u64(v);
  }
  for (const StageStats& stage : stats.stages) {
    w.text(stage.name);
    w.u64(stage.concurrency);
    w.u64(stage.latency_bound ? 1 : 0);
    w.u64(stage.latency.sum());
    w.u64(stage.latency.min());
    w.u64(stage.latency.max());
    for (const std::uint64_t count : stage.latency.buckets()) w.u64(count);
  }
  const std::vector<std::uint8_t> states = Json::to_cbor(stats.states);
  w.text(std::string_view(reinterpret_cast<const char*>(states.data()), states.size()));
}

void read_report(WireReader& r, RankReport& report) {
  RunStats& s = report.stats;
  s.items = r.u64();
  s.records = r.u64();
  s.ok = r.u64();
  s.failed = r.u64();
  s.not_run = r.u64();
  s.threads = r.u64();
  s.stopped = static_cast<StopReason>(r.u64());
  report.cpu_ns = r.u64();
  const std::uint64_t stages = r.u64();
  s.stages.clear();
  for (std::uint64_t i = 0; i < stages; ++i) {
    StageStats stage;
    stage.name = std::string(r.text());
    stage.concurrency = r.u64();
    stage.latency_bound = r.u64() != 0;
    const std::uint64_t sum = r.u64(), min = r.u64(), max = r.u64();
    std::array<std::uint64_t, LatencyHistogram::bucket_count> buckets;
    for (std::uint64_t& count : buckets) count = r.u64();
    stage.latency = LatencyHistogram::from_parts(buckets, sum, min, max);
    stage.take_figures_from_latency();
    s.stages.push_back(std::move(stage));
  }
  const std::string_view states = r.text();
  s.states = Json::from_cbor(states.begin(), states.end());
}

std::uint64_t ns_since(Clock::time_point start) {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
}

std::uint64_t process_cpu_ns() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto ns = [](const timeval& t) { return std::uint64_t(t.tv_sec) * 1'000'000'000u + std::uint64_t(t.tv_usec) * 1000u; };
  return ns(usage.ru_utime) + ns(usage.ru_stime);
}

void receive(const Session& session, const MPI_Status& probe, std::string& into) {
  int count = 0;
  MPI_Get_count(&probe, MPI_BYTE, &count);
  into.resize(static_cast<std::size_t>(count));
  MPI_Recv(into.data(), count, MPI_BYTE, probe.MPI_SOURCE, probe.MPI_TAG, session.comm(), MPI_STATUS_IGNORE);
}

void send(const Session& session, std::string_view bytes, int to, int tag) {
  MPI_Send(bytes.data(), static_cast<int>(bytes.size()), MPI_BYTE, to, tag, session.comm());
}

}  // namespace coremap::mpi::detail
