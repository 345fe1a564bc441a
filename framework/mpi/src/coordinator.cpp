// SPDX-License-Identifier: MIT
// Rank 0's side of a run: the only rank that reads the manifest and the only one that writes
// the output. It cuts chunks on demand (sized by batch_sizing.hpp), sends them without ever
// blocking, and writes the records that come back, in index order when the run is ordered
// (chunks in order through ordered_delivery.hpp, the oldest one streaming).
#include <algorithm>
#include <chrono>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <coremap/error.hpp>

#include "batch_sizing.hpp"
#include "ordered_delivery.hpp"
#include "messages.hpp"

namespace coremap::mpi {
namespace {

using namespace detail;

// What rank 0 knows of a processing rank during a run.
struct RankState {
  std::uint64_t threads = 1;
  std::uint64_t done = 0;        // items finished, as last reported
  std::uint64_t elapsed_ns = 0;  // since its first chunk, as last reported
  std::uint64_t failed = 0;      // as last reported
  std::uint64_t items_sent = 0;
  RankReport report;
};

// A chunk handed out and not yet complete (ordered runs): its records so far, unless it is the
// next chunk to write, whose records stream straight to the sink.
struct OpenChunk {
  int rank = 0;
  std::string text;
};

class Coordinator {
 public:
  Coordinator(const Session& session, BatchSource& manifest, const IndexSet* skip, Sink& sink, const RunOptions& options,
              std::size_t fixed_chunk)
      : session_(session),
        ranks_(static_cast<std::size_t>(session.size())),
        manifest_(manifest),
        skip_(skip),
        sink_(sink),
        ordered_(options.ordered),
        max_errors_(options.max_errors),
        fixed_chunk_(fixed_chunk) {}

  void run() {
    start_ = Clock::now();
    std::size_t running = ranks_.size() - 1;
    std::string bytes;
    auto pause = std::chrono::microseconds(10);
    while (running > 0) {
      reap_sends();
      int ready = 0;
      MPI_Status status;
      MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, session_.comm(), &ready, &status);
      if (ready == 0) {
        // Sleeping rather than spinning leaves the core to the processing ranks when ranks share one;
        // the cost is latency that the outstanding chunks hide.
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(500));
        continue;
      }
      pause = std::chrono::microseconds(10);
      const auto handling = Clock::now();
      receive(session_, status, bytes);
      RankState& state = ranks_[static_cast<std::size_t>(status.MPI_SOURCE)];
      WireReader r(bytes);
      switch (status.MPI_TAG) {
        case tag_request: {
          state.done = r.u64();
          state.elapsed_ns = r.u64();
          state.threads = std::max<std::uint64_t>(1, r.u64());
          send_chunk(status.MPI_SOURCE, state);
          break;
        }
        case tag_result: {
          const std::uint64_t seq = r.u64();
          const bool last = r.u64() != 0;
          state.failed = r.u64();
          on_result(seq, last, r.rest());
          check_errors();
          break;
        }
        case tag_finished: {
          read_report(r, state.report);
          state.report.busy_ns = ns_since(start_);
          --running;
          // Its chunks not complete now never will be: write what arrived of them.
          std::vector<std::uint64_t> cut_short;
          for (const auto& [seq, chunk] : open_) {
            if (chunk.rank == status.MPI_SOURCE) cut_short.push_back(seq);
          }
          for (const std::uint64_t seq : cut_short) complete(seq);
          break;
        }
        default:
          throw Error("unexpected MPI message with tag " + std::to_string(status.MPI_TAG) + " from rank " +
                      std::to_string(status.MPI_SOURCE));
      }
      handling_ns_ += ns_since(handling);
    }
    while (!open_.empty()) complete(open_.begin()->first);
    while (!sends_.empty()) reap_sends(true);
  }

  const std::vector<RankState>& ranks() const noexcept { return ranks_; }
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

  std::size_t chunk_items(const RankState& state) const {
    if (fixed_chunk_ != 0) return fixed_chunk_;
    // Until the rank has finished something, one item per thread.
    const std::size_t threads = std::max<std::size_t>(1, state.threads);
    std::size_t want = coremap::detail::items_for_duration(chunk_target_ns, state.done, state.elapsed_ns, max_chunk_items, threads);
    // Guided self-scheduling near the end: the last items spread over every rank instead of
    // queueing at one while the others run dry. Items left are estimated from the bytes left of
    // a manifest of known size.
    if (const std::optional<std::uint64_t> size = manifest_.size()) {
      const double left = coremap::detail::estimate_items_left(*size, manifest_.bytes_read(), cut_);
      if (left > 0) want = std::min(want, coremap::detail::guided_share(left, ranks_.size() - 1, threads));
    }
    return want;
  }

  void send_chunk(int to, RankState& state) {
    WireWriter w;
    w.u64(next_seq_);
    const std::size_t count_at = w.size();
    w.u64(0);  // the item count, patched below
    std::uint64_t count = 0;
    const std::size_t want = chunk_items(state);
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
        coremap::detail::encode_item(w, coremap::detail::WireItem{item.index, item.line, item.malformed, 1, batch_.text(item)});
        ++count;
      }
    }
    w.patch_u64(count_at, count);
    if (count > 0) {
      if (ordered_) open_.emplace(next_seq_, OpenChunk{to, {}});
      ++next_seq_;
      ++state.report.chunks;
      state.items_sent += count;
    }
    // Never a blocking send: a processing rank's writer may be sending results to us at this moment.
    sends_.push_back(PendingSend{std::move(w.buffer()), MPI_REQUEST_NULL});
    PendingSend& pending = sends_.back();
    MPI_Isend(pending.bytes.data(), static_cast<int>(pending.bytes.size()), MPI_BYTE, to, tag_chunk, session_.comm(),
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
    if (seq == in_order_.next()) {
      // Every chunk before it is written: its records stream straight through.
      if (!text.empty()) sink_.write(text);
    } else {
      it->second.text.append(text);
    }
    if (last) complete(seq);
  }

  // A chunk's records are all here (or its rank finished without them): it is handed to the
  // in-order delivery, which writes it once every chunk before it is written. The chunk next
  // in line then streams: what it collected so far is written now.
  void complete(std::uint64_t seq) {
    auto it = open_.find(seq);
    std::string text = std::move(it->second.text);
    open_.erase(it);
    in_order_.put_and_drain(seq, std::move(text), [this](std::string& records) {
      if (!records.empty()) sink_.write(records);
    });
    const auto head = open_.find(in_order_.next());
    if (head != open_.end() && !head->second.text.empty()) {
      sink_.write(head->second.text);
      head->second.text.clear();
      head->second.text.shrink_to_fit();
    }
  }

  void check_errors() {
    if (max_errors_ == 0 || stopped_) return;
    std::uint64_t failed = 0;
    for (const RankState& state : ranks_) failed += state.failed;
    if (failed >= max_errors_) stopped_ = true;
  }

  const Session& session_;
  std::vector<RankState> ranks_;
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
  // Chunks' records in chunk order (one thread here: the primitive's lock is never contended).
  coremap::detail::OrderedDelivery<std::string> in_order_;
  std::list<PendingSend> sends_;
};


}  // namespace

DistributedRun coordinate(const Session& session, BatchSource& source, Sink& sink, const RunOptions& options,
                          const Options& chunking) {
  RunHeader header{source.name(), source.format(), options.ordered};
  share_header(session, header);
  Coordinator coordinator(session, source, options.skip.get(), sink, options, chunking.chunk_items);
  coordinator.run();
  DistributedRun run;
  RunStats& stats = run.stats;
  for (const RankState& state : coordinator.ranks()) {
    const RunStats& s = state.report.stats;
    stats.items += s.items;
    stats.records += s.records;
    stats.ok += s.ok;
    stats.failed += s.failed;
    stats.not_run += s.not_run;
    stats.threads += s.threads;
    if (s.stopped != StopReason::none) stats.stopped = s.stopped;
    merge_stages(stats.stages, s.stages);
    run.ranks.push_back(state.report);
  }
  run.stopped_for_errors = coordinator.stopped_for_errors();
  if (run.stopped_for_errors) stats.stopped = StopReason::max_errors;
  stats.skipped = coordinator.skipped();
  run.chunks = coordinator.chunks();
  run.handling_ns = coordinator.handling_ns();
  return run;
}

StageSummaries merge_summaries(const Pipeline& pipeline, const DistributedRun& run) {
  StageSummaries summaries;
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

}  // namespace coremap::mpi
