// SPDX-License-Identifier: MIT
// A processing rank's side of a run (every rank but 0): the ordinary Engine, whose input is a
// source of chunks pulled from rank 0 (ChunkSource) and whose output goes back to rank 0
// (ResultSink).
#include <algorithm>
#include <chrono>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "messages.hpp"

namespace coremap::mpi {
namespace {

using namespace detail;

// MPI calls of one processing rank: the engine's input stage and its writer run on different TBB
// threads, so every call goes through this mutex (MPI_THREAD_SERIALIZED).
struct Link {
  std::mutex mutex;
};

struct ChunkInfo {
  std::uint64_t seq;
  bool last;  // the last engine batch cut from this chunk
};

// The engine's input on a processing rank: chunks from rank 0, each cut into batches that never span
// two chunks, so that in an ordered run the sink can tell which chunk a batch belongs to.
class ChunkSource final : public BatchSource {
 public:
  ChunkSource(const Session& session, Link& link, std::string name, ManifestFormat format, std::size_t threads)
      : session_(session), link_(link), name_(std::move(name)), format_(format), threads_(threads) {}

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
    send(session_, w.data(), 0, tag_request);
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
        MPI_Iprobe(0, tag_chunk, session_.comm(), &ready, &status);
        if (ready != 0) {
          receive(session_, status, bytes);
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
      const coremap::detail::WireItem wire = coremap::detail::decode_item(r);
      chunk_items_.push_back(Item{wire.index, wire.line, wire.malformed, std::string(wire.text)});
    }
    if (!ended_ && !draining_) {
      std::lock_guard lock(link_.mutex);
      request();
    }
    return true;
  }

  const Session& session_;
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

// The engine's output on a processing rank: collects record text and sends it to rank 0, once per
// chunk in an ordered run (tagged with the chunk's sequence number), in bounded pieces as it
// comes in an unordered one.
class ResultSink final : public Sink {
 public:
  ResultSink(const Session& session, Link& link, ChunkSource& source, bool ordered)
      : session_(session), link_(link), source_(source), ordered_(ordered) {}

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
      send(session_, w.data(), 0, tag_result);
    }
    pending_.clear();
    last_send_ = Clock::now();
  }

  const Session& session_;
  Link& link_;
  ChunkSource& source_;
  bool ordered_;
  const Progress* progress_ = nullptr;
  std::string pending_;
  std::uint64_t seq_ = 0;
  Clock::time_point last_send_ = Clock::now();
};

}  // namespace

void serve(const Session& session, Engine& engine, bool ordered) {
  RunHeader header;
  share_header(session, header);
  if (header.ordered && !ordered) {
    abort_job(session, "rank 0 runs ordered, and this rank's engine does not order its records (RunOptions::ordered)");
  }
  Link link;
  ChunkSource source(session, link, header.manifest_name, header.format, engine.threads());
  ResultSink sink(session, link, source, ordered);
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
    abort_job(session, e.what());
  }
  WireWriter w;
  write_report(w, stats, process_cpu_ns() - cpu_before);
  send(session, w.data(), 0, tag_finished);
}

}  // namespace coremap::mpi
