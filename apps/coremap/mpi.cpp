// SPDX-License-Identifier: MIT
// A run across the ranks of an MPI job (docs/distributed.md). Rank 0 coordinates: it is the
// only rank that reads the manifest and the only one that writes the output. The other ranks
// run the ordinary Engine over chunks of items pulled from rank 0 (ChunkSource) and send the
// records back (ResultSink).
#include "mpi.hpp"

#include "batch_sizing.hpp"
#include "wire_encoding.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace coremap::cli::mpi {
namespace {

using Clock = std::chrono::steady_clock;

// Message tags. Every request gets exactly one chunk back, in order (MPI does not reorder
// messages between two ranks on one tag), and a chunk of no items means "no more".
constexpr int tag_request = 1;   // worker -> 0: progress figures, asks for one chunk
constexpr int tag_chunk = 2;     // 0 -> worker: sequence number and items
constexpr int tag_result = 3;    // worker -> 0: records of (part of) one chunk
constexpr int tag_finished = 4;  // worker -> 0: the worker's RunStats; it sends nothing after

// Chunks a worker keeps asked for beyond the one it works on, so that the next one is there
// before it runs dry.
constexpr int outstanding_chunks = 2;
// An adaptive chunk is sized to about this much of its worker's wall time.
constexpr std::uint64_t chunk_target_ns = 50'000'000;
constexpr std::size_t max_chunk_items = 1 << 16;
constexpr std::size_t max_chunk_bytes = std::size_t{4} << 20;
// Unordered results are sent when this much has collected, or this long after the last send.
constexpr std::size_t unordered_flush_bytes = std::size_t{256} << 10;
constexpr auto unordered_flush_interval = std::chrono::milliseconds(50);

std::uint64_t ns_since(Clock::time_point start) {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
}

std::uint64_t process_cpu_ns() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto ns = [](const timeval& t) { return std::uint64_t(t.tv_sec) * 1'000'000'000u + std::uint64_t(t.tv_usec) * 1000u; };
  return ns(usage.ru_utime) + ns(usage.ru_stime);
}

using detail::WireReader;
using detail::WireWriter;

// Receives the message `probe` found, whole, into `into`.
void receive(const MPI_Status& probe, std::string& into) {
  int count = 0;
  MPI_Get_count(&probe, MPI_BYTE, &count);
  into.resize(static_cast<std::size_t>(count));
  MPI_Recv(into.data(), count, MPI_BYTE, probe.MPI_SOURCE, probe.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}

void send(std::string_view bytes, int to, int tag) {
  MPI_Send(bytes.data(), static_cast<int>(bytes.size()), MPI_BYTE, to, tag, MPI_COMM_WORLD);
}


// --------------------------------------------------------------------------------------------
// Worker ranks.

// MPI calls of one worker rank: the engine's input stage and its writer run on different TBB
// threads, so every call goes through this mutex (MPI_THREAD_SERIALIZED).
struct Link {
  std::mutex mutex;
};

struct ChunkInfo {
  std::uint64_t seq;
  bool last;  // the last engine batch cut from this chunk
};

// The engine's input on a worker: chunks from rank 0, each cut into batches that never span
// two chunks, so that in an ordered run the sink can tell which chunk a batch belongs to.
class ChunkSource final : public BatchSource {
 public:
  ChunkSource(Link& link, std::string name, ManifestFormat format, std::size_t threads)
      : link_(link), name_(std::move(name)), format_(format), threads_(threads) {}

  void start() {
    std::lock_guard lock(link_.mutex);
    for (int i = 0; i < outstanding_chunks; ++i) request();
  }

  bool next_batch(ItemBatch& batch, std::size_t max_items, std::size_t max_bytes) override {
    batch.clear();
    if (at_ == chunk_items_.size()) {
      if (ended_ || !receive_chunk()) return false;
    }
    while (at_ < chunk_items_.size() && batch.items.size() < max_items &&
           (batch.items.empty() || batch.bytes.size() < max_bytes)) {
      const Item& item = chunk_items_[at_++];
      batch.items.push_back(RawItem{item.index, item.line, batch.bytes.size(), item.text.size(), item.malformed});
      batch.bytes.append(item.text);
    }
    std::lock_guard lock(fifo_mutex_);
    fifo_.push_back(ChunkInfo{seq_, at_ == chunk_items_.size()});
    return true;
  }
  const std::string& name() const noexcept override { return name_; }
  ManifestFormat format() const noexcept override { return format_; }

  // The chunk the oldest batch not yet written came from (ordered runs).
  ChunkInfo pop_written() {
    std::lock_guard lock(fifo_mutex_);
    const ChunkInfo info = fifo_.front();
    fifo_.pop_front();
    return info;
  }

  // After the run: takes the answers to requests still outstanding (chunks not processed when
  // the engine stopped early are left to rank 0 to account for).
  void drain() {
    draining_ = true;
    while (requested_ > 0) receive_chunk();
  }

  void set_progress(const Progress* progress) { progress_ = progress; }
  std::uint64_t chunks() const noexcept { return chunks_; }

 private:
  struct Item {
    std::uint64_t index, line;
    bool malformed;
    std::string text;
  };

  // Caller holds the link's mutex.
  void request() {
    WireWriter w;
    w.u64(progress_ != nullptr ? progress_->done.load(std::memory_order_relaxed) : 0);
    w.u64(first_chunk_ ? ns_since(*first_chunk_) : 0);
    w.u64(threads_);
    send(w.data(), 0, tag_request);
    ++requested_;
  }

  // Waits for the next chunk without holding the link while waiting, so the writer can send
  // results meanwhile. False when rank 0 says there are no more.
  bool receive_chunk() {
    std::string bytes;
    for (auto pause = std::chrono::microseconds(20);; pause = std::min(pause * 2, std::chrono::microseconds(1000))) {
      {
        std::lock_guard lock(link_.mutex);
        int ready = 0;
        MPI_Status status;
        MPI_Iprobe(0, tag_chunk, MPI_COMM_WORLD, &ready, &status);
        if (ready != 0) {
          receive(status, bytes);
          --requested_;
          break;
        }
      }
      std::this_thread::sleep_for(pause);
    }
    WireReader r(bytes);
    const std::uint64_t seq = r.u64();
    const std::uint64_t count = r.u64();
    chunk_items_.clear();
    at_ = 0;
    if (count == 0) {
      ended_ = true;
      return false;
    }
    if (!first_chunk_) first_chunk_ = Clock::now();
    seq_ = seq;
    ++chunks_;
    for (std::uint64_t i = 0; i < count; ++i) {
      const detail::WireItem wire = detail::decode_item(r);
      chunk_items_.push_back(Item{wire.index, wire.line, wire.malformed, std::string(wire.text)});
    }
    if (!ended_ && !draining_) {
      std::lock_guard lock(link_.mutex);
      request();
    }
    return true;
  }

  Link& link_;
  std::string name_;
  ManifestFormat format_;
  std::size_t threads_;
  const Progress* progress_ = nullptr;
  std::vector<Item> chunk_items_;
  std::size_t at_ = 0;
  std::uint64_t seq_ = 0;
  std::uint64_t chunks_ = 0;
  int requested_ = 0;
  bool ended_ = false;
  bool draining_ = false;
  std::optional<Clock::time_point> first_chunk_;
  std::mutex fifo_mutex_;
  std::deque<ChunkInfo> fifo_;
};

// The engine's output on a worker: collects record text and sends it to rank 0, once per
// chunk in an ordered run (tagged with the chunk's sequence number), in bounded pieces as it
// comes in an unordered one.
class ResultSink final : public Sink {
 public:
  ResultSink(Link& link, ChunkSource& source, bool ordered) : link_(link), source_(source), ordered_(ordered) {}

  void write(std::string_view records) override {
    pending_.append(records);
    // Unordered, batches are written in another order than they were cut: the entry is of no use.
    const ChunkInfo info = source_.pop_written();
    if (ordered_) {
      if (info.last) flush(info.seq, true);
      else seq_ = info.seq;
      return;
    }
    if (pending_.size() >= unordered_flush_bytes || Clock::now() - last_send_ >= unordered_flush_interval) flush(0, false);
  }

  // What is left (a chunk cut short by a stopped run): sent as not complete.
  void flush_rest() {
    if (!pending_.empty()) flush(seq_, false);
  }

  void set_progress(const Progress* progress) { progress_ = progress; }

 private:
  void flush(std::uint64_t seq, bool last) {
    WireWriter w;
    w.u64(seq);
    w.u64(last ? 1 : 0);
    w.u64(progress_ != nullptr ? progress_->failed.load(std::memory_order_relaxed) : 0);
    w.bytes(pending_);
    {
      std::lock_guard lock(link_.mutex);
      send(w.data(), 0, tag_result);
    }
    pending_.clear();
    last_send_ = Clock::now();
  }

  Link& link_;
  ChunkSource& source_;
  bool ordered_;
  const Progress* progress_ = nullptr;
  std::string pending_;
  std::uint64_t seq_ = 0;
  Clock::time_point last_send_ = Clock::now();
};

// --------------------------------------------------------------------------------------------
// Rank 0.

// A worker's report at the end of a run (tag_finished): its RunStats, CPU time, the partial
// states of its reducing stages (RunStats::states, as CBOR: exact bytes, no text round trip)
// and, when the run was measured, each stage's figures with the whole latency histogram, so
// that rank 0 can merge every rank's calls into exact percentiles.
void write_report(WireWriter& w, const RunStats& stats, std::uint64_t cpu) {
  for (std::uint64_t v : {stats.items, stats.records, stats.ok, stats.failed, static_cast<std::uint64_t>(stats.threads),
                          static_cast<std::uint64_t>(stats.stopped), cpu, static_cast<std::uint64_t>(stats.stages.size())}) {
    w.u64(v);
  }
  for (const StageStats& stage : stats.stages) {
    w.text(stage.name);
    w.u64(stage.concurrency);
    w.u64(stage.own_threads ? 1 : 0);
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
  s.threads = r.u64();
  s.stopped = static_cast<StopReason>(r.u64());
  report.cpu_ns = r.u64();
  const std::uint64_t stages = r.u64();
  s.stages.clear();
  for (std::uint64_t i = 0; i < stages; ++i) {
    StageStats stage;
    stage.name = std::string(r.text());
    stage.concurrency = r.u64();
    stage.own_threads = r.u64() != 0;
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

// What rank 0 knows of a worker rank during a run.
struct WorkerState {
  std::uint64_t threads = 1;
  std::uint64_t done = 0;        // items finished, as last reported
  std::uint64_t elapsed_ns = 0;  // since its first chunk, as last reported
  std::uint64_t failed = 0;      // as last reported
  std::uint64_t items_sent = 0;
  RankReport report;
};

// A chunk handed out and not yet written (ordered runs).
struct OpenChunk {
  int worker = 0;
  bool complete = false;
  std::string text;
};

class Coordinator {
 public:
  Coordinator(int ranks, BatchSource& manifest, const IndexSet* skip, Sink& sink, const RunOptions& options,
              std::size_t fixed_chunk)
      : workers_(static_cast<std::size_t>(ranks)),
        manifest_(manifest),
        skip_(skip),
        sink_(sink),
        ordered_(options.ordered),
        max_errors_(options.max_errors),
        fixed_chunk_(fixed_chunk) {}

  void run() {
    start_ = Clock::now();
    std::size_t running = workers_.size() - 1;
    std::string bytes;
    auto pause = std::chrono::microseconds(10);
    while (running > 0) {
      reap_sends();
      int ready = 0;
      MPI_Status status;
      MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &ready, &status);
      if (ready == 0) {
        // Sleeping rather than spinning leaves the core to the workers when ranks share one;
        // the cost is latency that the outstanding chunks hide.
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(500));
        continue;
      }
      pause = std::chrono::microseconds(10);
      const auto handling = Clock::now();
      receive(status, bytes);
      WorkerState& worker = workers_[static_cast<std::size_t>(status.MPI_SOURCE)];
      WireReader r(bytes);
      switch (status.MPI_TAG) {
        case tag_request: {
          worker.done = r.u64();
          worker.elapsed_ns = r.u64();
          worker.threads = std::max<std::uint64_t>(1, r.u64());
          send_chunk(status.MPI_SOURCE, worker);
          break;
        }
        case tag_result: {
          const std::uint64_t seq = r.u64();
          const bool last = r.u64() != 0;
          worker.failed = r.u64();
          on_result(seq, last, r.rest());
          check_errors();
          break;
        }
        case tag_finished: {
          read_report(r, worker.report);
          worker.report.busy_ns = ns_since(start_);
          --running;
          // Its chunks not complete now never will be: write what arrived of them.
          for (auto& [seq, chunk] : open_) {
            if (chunk.worker == status.MPI_SOURCE) chunk.complete = true;
          }
          write_ready();
          break;
        }
        default:
          throw Error("unexpected MPI message with tag " + std::to_string(status.MPI_TAG) + " from rank " +
                      std::to_string(status.MPI_SOURCE));
      }
      handling_ns_ += ns_since(handling);
    }
    for (auto& [seq, chunk] : open_) chunk.complete = true;
    write_ready();
    while (!sends_.empty()) reap_sends(true);
  }

  const std::vector<WorkerState>& workers() const noexcept { return workers_; }
  std::uint64_t skipped() const noexcept { return skipped_; }
  bool stopped_for_errors() const noexcept { return stopped_; }
  std::uint64_t chunks() const noexcept { return next_seq_; }
  /// Time this rank spent receiving, cutting, sending and writing (not waiting).
  std::uint64_t handling_ns() const noexcept { return handling_ns_; }

 private:
  struct PendingSend {
    std::string bytes;
    MPI_Request request;
  };

  std::size_t chunk_items(const WorkerState& worker) const {
    if (fixed_chunk_ != 0) return fixed_chunk_;
    // Until the worker has finished something, one item per thread.
    const std::size_t threads = std::max<std::size_t>(1, worker.threads);
    std::size_t want = detail::items_for_duration(chunk_target_ns, worker.done, worker.elapsed_ns, max_chunk_items, threads);
    // Guided self-scheduling near the end: the last items spread over every rank instead of
    // queueing at one while the others run dry. Items left are estimated from the bytes left of
    // a manifest of known size.
    if (const std::optional<std::uint64_t> size = manifest_.size()) {
      const double left = detail::estimate_items_left(*size, manifest_.bytes_read(), cut_);
      if (left > 0) want = std::min(want, detail::guided_share(left, workers_.size() - 1, threads));
    }
    return want;
  }

  void send_chunk(int to, WorkerState& worker) {
    WireWriter w;
    w.u64(next_seq_);
    const std::size_t count_at = w.size();
    w.u64(0);  // the item count, patched below
    std::uint64_t count = 0;
    const std::size_t want = chunk_items(worker);
    while (!stopped_ && !manifest_done_ && count < want && w.size() < max_chunk_bytes) {
      if (!manifest_.next_batch(batch_, want - count, max_chunk_bytes - w.size())) {
        manifest_done_ = true;
        break;
      }
      cut_ += batch_.items.size();
      for (const RawItem& item : batch_.items) {
        if (skip_ != nullptr && skip_->contains(item.index)) {
          ++skipped_;
          continue;
        }
        detail::encode_item(w, detail::WireItem{item.index, item.line, item.malformed, 1, batch_.text(item)});
        ++count;
      }
    }
    w.patch_u64(count_at, count);
    if (count > 0) {
      if (ordered_) open_.emplace(next_seq_, OpenChunk{to, false, {}});
      ++next_seq_;
      ++worker.report.chunks;
      worker.items_sent += count;
    }
    // Never a blocking send: a worker's writer may be sending results to us at this moment.
    sends_.push_back(PendingSend{std::move(w.buffer()), MPI_REQUEST_NULL});
    PendingSend& pending = sends_.back();
    MPI_Isend(pending.bytes.data(), static_cast<int>(pending.bytes.size()), MPI_BYTE, to, tag_chunk, MPI_COMM_WORLD,
              &pending.request);
  }

  void reap_sends(bool wait = false) {
    for (auto it = sends_.begin(); it != sends_.end();) {
      int done = 0;
      if (wait) {
        MPI_Wait(&it->request, MPI_STATUS_IGNORE);
        done = 1;
      } else {
        MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
      }
      it = done != 0 ? sends_.erase(it) : std::next(it);
    }
  }

  void on_result(std::uint64_t seq, bool last, std::string_view text) {
    if (!ordered_) {
      if (!text.empty()) sink_.write(text);
      return;
    }
    auto it = open_.find(seq);
    if (it == open_.end()) throw Error("results for unknown chunk " + std::to_string(seq) + " (internal error)");
    if (it == open_.begin() && it->second.text.empty()) {
      // The oldest chunk streams straight through.
      if (!text.empty()) sink_.write(text);
    } else {
      it->second.text.append(text);
    }
    if (last) it->second.complete = true;
    write_ready();
  }

  void write_ready() {
    while (!open_.empty()) {
      OpenChunk& head = open_.begin()->second;
      if (!head.text.empty()) {
        sink_.write(head.text);
        head.text.clear();
        head.text.shrink_to_fit();
      }
      if (!head.complete) return;
      open_.erase(open_.begin());
    }
  }

  void check_errors() {
    if (max_errors_ == 0 || stopped_) return;
    std::uint64_t failed = 0;
    for (const WorkerState& worker : workers_) failed += worker.failed;
    if (failed >= max_errors_) stopped_ = true;
  }

  std::vector<WorkerState> workers_;
  BatchSource& manifest_;
  const IndexSet* skip_;
  Sink& sink_;
  bool ordered_;
  std::uint64_t max_errors_;
  std::size_t fixed_chunk_;
  Clock::time_point start_;
  ItemBatch batch_;
  bool manifest_done_ = false;
  bool stopped_ = false;
  std::uint64_t next_seq_ = 0;
  std::uint64_t skipped_ = 0;
  std::uint64_t cut_ = 0;  // items cut from the manifest so far, skipped ones included
  std::uint64_t handling_ns_ = 0;
  std::map<std::uint64_t, OpenChunk> open_;
  std::list<PendingSend> sends_;
};

}  // namespace

// --------------------------------------------------------------------------------------------

Session::Session() {
  int argc = 0;
  char** argv = nullptr;
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  if (provided < MPI_THREAD_SERIALIZED) {
    abort_job(rank_, "the MPI library does not support MPI_THREAD_SERIALIZED, which a worker's TBB threads need");
  }
}

Session::~Session() { MPI_Finalize(); }

bool all_set_up(const Session& session, const std::string& error) {
  int mine = error.empty() ? 0 : 1;
  int any = 0;
  MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  int coordinator = mine;
  MPI_Bcast(&coordinator, 1, MPI_INT, 0, MPI_COMM_WORLD);
  // Every rank usually fails alike (a plugin not found): one message, from rank 0, is enough.
  if (mine != 0 && (session.rank() == 0 || coordinator == 0)) {
    if (session.rank() == 0) {
      std::fprintf(stderr, "coremap: error: %s\n", error.c_str());
    } else {
      std::fprintf(stderr, "coremap: error: rank %d: %s\n", session.rank(), error.c_str());
    }
  }
  return any == 0;
}

void broadcast(std::string& text) {
  std::uint64_t n = text.size();
  MPI_Bcast(&n, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  text.resize(n);
  MPI_Bcast(text.data(), static_cast<int>(n), MPI_BYTE, 0, MPI_COMM_WORLD);
}

void share_manifest(std::string& name, ManifestFormat& format) {
  broadcast(name);
  auto value = static_cast<std::uint64_t>(format);
  MPI_Bcast(&value, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  format = static_cast<ManifestFormat>(value);
}

void wait_idle(MPI_Request& request) {
  for (auto pause = std::chrono::microseconds(20);; pause = std::min(pause * 2, std::chrono::microseconds(1000))) {
    int done = 0;
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done != 0) return;
    std::this_thread::sleep_for(pause);
  }
}

void abort_job(int rank, const char* what) {
  std::fprintf(stderr, "coremap: error: rank %d: %s\n", rank, what);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, exit_setup);
  std::_Exit(exit_setup);
}

DistributedRun coordinate(const Session& session, BatchSource& source, Sink& sink, const RunOptions& options,
                          std::size_t fixed_chunk) {
  Coordinator coordinator(session.size(), source, options.skip.get(), sink, options, fixed_chunk);
  coordinator.run();
  DistributedRun run;
  RunStats& stats = run.stats;
  for (const WorkerState& worker : coordinator.workers()) {
    const RunStats& s = worker.report.stats;
    stats.items += s.items;
    stats.records += s.records;
    stats.ok += s.ok;
    stats.failed += s.failed;
    stats.threads += s.threads;
    if (s.stopped != StopReason::none) stats.stopped = s.stopped;
    merge_stages(stats.stages, s.stages);
    run.ranks.push_back(worker.report);
  }
  run.stopped_for_errors = coordinator.stopped_for_errors();
  if (run.stopped_for_errors) stats.stopped = StopReason::max_errors;
  stats.skipped = coordinator.skipped();
  run.chunks = coordinator.chunks();
  run.handling_ns = coordinator.handling_ns();
  return run;
}

void serve(const Session& session, Engine& engine, const std::string& name, ManifestFormat format, bool ordered) {
  Link link;
  ChunkSource source(link, name, format, engine.threads());
  ResultSink sink(link, source, ordered);
  source.set_progress(&engine.progress());
  sink.set_progress(&engine.progress());
  const std::uint64_t cpu_before = process_cpu_ns();
  RunStats stats;
  try {
    source.start();
    stats = engine.run(source, sink);
    sink.flush_rest();
    source.drain();
  } catch (const std::exception& e) {
    abort_job(session.rank(), e.what());
  }
  WireWriter w;
  write_report(w, stats, process_cpu_ns() - cpu_before);
  send(w.data(), 0, tag_finished);
}

Json merge_summaries(const Pipeline& pipeline, const DistributedRun& run) {
  Json summaries = Json::object();
  for (const Stage& stage : pipeline.stages) {
    if (!stage.plugin->reduces()) continue;
    std::vector<Json> states;
    for (std::size_t rank = 1; rank < run.ranks.size(); ++rank) {
      const Json& saved = run.ranks[rank].stats.states;
      const auto it = saved.find(stage.name);
      // A rank that never started (no chunk before the run stopped) reports no state: nothing to add.
      if (it != saved.end()) states.push_back(*it);
    }
    summaries[stage.name] = summarize_states(stage, states);
  }
  return summaries;
}

void merge_stages(std::vector<StageStats>& into, const std::vector<StageStats>& from) {
  if (into.empty()) {
    into = from;
    return;
  }
  for (std::size_t i = 0; i < into.size() && i < from.size(); ++i) {
    into[i].concurrency += from[i].concurrency;
    into[i].latency.merge(from[i].latency);
    into[i].take_figures_from_latency();
  }
}

}  // namespace coremap::cli::mpi
