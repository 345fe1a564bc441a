// SPDX-License-Identifier: MIT
#pragma once

// The batch: what travels through a streamed run's graph. Owns the items of one cut, the
// values between its stages, its records (as JSON Lines text or Record objects), its counts,
// and how big batches get; footprint() says what a batch holds on the heap (the reorder
// buffer's budget counts it); BatchPool recycles batches from the writer back to the cut.

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <coremap/manifest.hpp>
#include <coremap/record.hpp>

#include "result_cache.hpp"
#include "tsan_handoff.hpp"

namespace coremap::detail {

// A batch is sized to take about this long, so the pipeline's per-token cost stays a small
// fraction of the work while the last batches still balance across threads.
constexpr std::uint64_t batch_target_ns = 200'000;
// Isolated batches pay a round trip to a worker process each: they are made longer.
constexpr std::uint64_t isolated_batch_target_ns = 2'000'000;
constexpr std::size_t max_batch_items = 4096;
constexpr std::size_t max_batch_bytes = std::size_t{1} << 20;
// A value on its way from one stage to the next. A failed value passes the later stages
// untouched and becomes an error record at the end.
struct Value {
  std::uint64_t index = 0;  // the manifest item it came from
  std::uint64_t line = 0;   // that item's manifest line, for messages
  bool fanned = false;      // a stage emitted it: its record carries "sub"
  bool failed = false;
  std::uint32_t attempts = 1;
  Json data;                // when not failed
  std::string error;        // when failed
  // The run's stop cut its item short in a later stage: the item gets no record at all (none
  // of its values), so a resumed run processes it whole.
  bool stopped = false;
  // A cached outcome replayed (RunOptions::cache): stages before this one pass it on untouched.
  std::uint32_t skip_until = 0;
};

// Items of a batch, the values between its stages, and its records. Batches travel between
// threads; in a one-stage run they hold no JSON values (memory allocated for an item is freed
// by the thread that allocated it: with glibc malloc, values left in a migrating batch made
// the no-op path scale 1.4x instead of 1.7x on two cores).
struct Batch {
  std::uint64_t seq = 0;  // position in the run, for the sequencer
  std::size_t slot = 0;   // in BatchPool's list of batches
  ItemBatch raw;
  std::vector<Value> values;  // the previous stage's outputs
  std::vector<Value> next;    // the running stage's outputs
  std::string out;            // JSON Lines, for a Sink
  RecordWriter writer{out};
  std::vector<Record> records;  // or Record objects, for a RecordCallback
  bool as_records = false;
  std::string_view source;  // the manifest's name, for messages
  std::uint64_t items = 0;  // items the first stage processed
  std::uint64_t ok = 0;
  std::uint64_t failed = 0;
  std::uint64_t not_run = 0;  // items of the batch the run's stop left without a record
  std::uint64_t work_ns = 0;  // time spent in stages, for batch sizing
  // RunOptions::cache: items replayed from the cache and items run; the keys of the items run,
  // in index order, until the last cached stage stores their outcomes.
  std::uint64_t cache_hits = 0;
  std::uint64_t cache_misses = 0;
  std::vector<PendingEntry> cache_pending;
  // Numbering the records of one item: the item and how many records it has so far.
  std::uint64_t sub_item = ~std::uint64_t{0};
  std::int64_t sub_count = 0;

  void start() {
    out.clear();
    records.clear();
    values.clear();
    next.clear();
    items = ok = failed = not_run = work_ns = cache_hits = cache_misses = 0;
    cache_pending.clear();
    sub_item = ~std::uint64_t{0};
  }
  std::uint64_t written() const noexcept { return ok + failed; }

  std::int64_t sub_of(std::uint64_t index, bool fanned) noexcept {
    if (index != sub_item) {
      sub_item = index;
      sub_count = 0;
    }
    const std::int64_t sub = sub_count++;
    return fanned ? sub : -1;
  }

  // A record; false when it became an error record (a result that cannot be written, then
  // named by `source`:`line`, where the item came from).
  bool record_ok(std::uint64_t index, Json& result, std::uint32_t attempts, bool fanned, std::uint64_t line) {
    const std::int64_t sub = sub_of(index, fanned);
    if (!as_records) return writer.ok(index, result, attempts, sub, source, line);
    records.push_back(Record{index, true, std::move(result), {}, attempts, sub});
    return true;
  }
  // An ok record whose result is JSON text already written as the serializer writes it (a
  // result replayed from the cache, RunOptions::cache): one call, not fanned out, JSON Lines.
  void record_ok_text(std::uint64_t index, std::string_view result) {
    sub_of(index, false);
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, index).ptr;
    out.append("{\"index\":").append(digits, end).append(",\"ok\":true,\"result\":").append(result).append("}\n");
  }
  // A record a worker process wrote, as JSON Lines text (RunOptions::isolate).
  bool record_line(std::uint64_t index, bool is_ok, std::string_view line) {
    if (!as_records) {
      out.append(line);
      return is_ok;
    }
    Json parsed = Json::parse(line);
    const auto attempts = parsed.value("attempts", std::uint32_t{1});
    if (is_ok) {
      records.push_back(Record{index, true, std::move(parsed["result"]), {}, attempts});
    } else {
      records.push_back(Record{index, false, Json(), parsed["error"].get<std::string>(), attempts});
    }
    return is_ok;
  }

  void record_error(std::uint64_t index, std::string message, std::uint32_t attempts, bool fanned) {
    const std::int64_t sub = sub_of(index, fanned);
    if (as_records) {
      records.push_back(Record{index, false, Json(), std::move(message), attempts, sub});
    } else {
      writer.error(index, message, attempts, sub);
    }
  }
};

// Memory a batch holds on to: the object, its buffers' capacity and every JSON value in it, in
// heap blocks (EngineTest.TheReorderBudgetBoundsTheHeapWhateverTheItems compares it with what
// malloc reports).
std::size_t footprint(const Batch& batch);

// The batches of a streamed run, recycled: a steady run keeps `keep` of them (the tokens in
// flight, plus the one the cut stage fills) and allocates none. More exist only while finished
// ones are parked behind a slow batch (ReorderBuffer); those are freed once written, so the
// memory of a stall is not kept for the rest of the run. A kept batch gives back any buffer
// grown far past an ordinary batch (one very long item, a large fan-out).
class BatchPool {
 public:
  BatchPool(std::size_t keep, bool as_records, std::string_view source)
      : keep_(keep), as_records_(as_records), source_(source) {}

  // From the cut stage.
  Batch* take() {
    std::lock_guard lock(mutex_);
    if (!free_.empty()) {
      Batch* batch = free_.back();
      free_.pop_back();
      // The writer used it last, on another thread, through TBB (see give_back).
      taken_over(batch);
      return batch;
    }
    owned_.push_back(std::make_unique<Batch>());
    Batch* batch = owned_.back().get();
    batch->slot = owned_.size() - 1;
    batch->as_records = as_records_;
    batch->source = source_;
    return batch;
  }

  // From the writer, or from the cut stage for a batch it did not fill.
  void give_back(Batch* batch) {
    handed_over(batch);
    // Before the batch is on the free list: from there the cut stage may take it at once.
    trim(*batch);
    std::unique_ptr<Batch> gone;
    {
      std::lock_guard lock(mutex_);
      if (owned_.size() <= keep_) {
        free_.push_back(batch);
      } else {
        const std::size_t slot = batch->slot;
        gone = std::move(owned_[slot]);
        if (slot + 1 != owned_.size()) {
          owned_[slot] = std::move(owned_.back());
          owned_[slot]->slot = slot;
        }
        owned_.pop_back();
      }
    }
  }

 private:
  static void trim(Batch& batch) {
    constexpr std::size_t most = 4 * max_batch_bytes;
    release_if_over(batch.raw.bytes, most);
    release_if_over(batch.raw.items, most);
    release_if_over(batch.out, most);
    release_if_over(batch.records, most);
    release_if_over(batch.values, most);
    release_if_over(batch.next, most);
  }
  template <class Buffer>
  static void release_if_over(Buffer& buffer, std::size_t bytes) {
    if (buffer.capacity() * sizeof(buffer[0]) > bytes) Buffer().swap(buffer);
  }

  const std::size_t keep_;
  const bool as_records_;
  const std::string_view source_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<Batch>> owned_;  // every batch; owned_[b->slot] is b
  std::vector<Batch*> free_;
};

}  // namespace coremap::detail
