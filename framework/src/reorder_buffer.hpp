// SPDX-License-Identifier: MIT
#pragma once

// The reorder buffer of an ordered streamed run: finished batches wait here for the batches
// before them and are written in cut order (OrderedDelivery: whoever finds the next one writes
// the ready run, one writer at a time). A batch parked behind one still being processed gives
// its in-flight token back at once while the parked batches stay under `budget` bytes, so a slow
// item holds up only the writing, not the processing of the items after it, as a sequencer_node
// in front of the writer would (the window of tokens fills behind the slow item and the threads
// idle). Over the budget, or when it waits for the writer only, a batch keeps its token until it
// is written: memory stays bounded.
//
// Owns: the memory budget of parked batches and which of them still hold a token. The caller
// says what a batch costs (footprint() in batch.hpp) and how to write it and release a token.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "ordered_delivery.hpp"

namespace coremap::detail {

/// `write(Item)` writes one batch (called in sequence order, never concurrently);
/// `release()` gives one token back to the run's limiter. Thread safety: put() from any thread.
template <class Item, class Write, class Release>
class ReorderBuffer {
 public:
  ReorderBuffer(std::size_t budget, Write write, Release release)
      : budget_(budget), write_(std::move(write)), release_(std::move(release)) {}

  /// Called from any thread, once for each batch (sequence numbers 0, 1, ...), when its last
  /// stage is done; `bytes` is the memory it holds while it waits (the buffer adds its own).
  void put(std::uint64_t seq, Item item, std::size_t bytes) {
    // Early only while the next batch to write is still being processed (`behind`): behind a
    // batch that waits for the writer, every batch waits for the writer alone and keeps its
    // token, so a run bound by writing stays within the window.
    bytes += OrderedDelivery<Parked>::bytes_per_value;
    const bool early = order_.put(seq, Parked{item, bytes, true}, [&](Parked& parked, bool behind) {
      const std::size_t before = parked_bytes_.fetch_add(bytes, std::memory_order_relaxed);
      parked.holds_token = !(behind && before + bytes <= budget_);
      return !parked.holds_token;
    });
    if (early) release_();
    order_.drain([this](Parked& parked) {
      write_(parked.item);
      parked_bytes_.fetch_sub(parked.size, std::memory_order_relaxed);
      if (parked.holds_token) release_();
    });
  }

  /// Bytes of the batches parked and not yet written.
  std::size_t parked_bytes() const noexcept { return parked_bytes_.load(std::memory_order_relaxed); }

 private:
  struct Parked {
    Item item{};
    std::size_t size = 0;
    bool holds_token = false;
  };

  OrderedDelivery<Parked> order_;
  const std::size_t budget_;
  Write write_;
  Release release_;
  std::atomic<std::size_t> parked_bytes_{0};
};

}  // namespace coremap::detail
