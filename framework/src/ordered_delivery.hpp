// SPDX-License-Identifier: MIT
#pragma once

// Ordered delivery: values numbered first, first + 1, ... are put from any thread in any order
// and delivered in number order, each as soon as every value before it was delivered. Whoever
// finds the next value in order delivers the ready run of them, outside the lock and one
// deliverer at a time; the others park their value and leave, and the deliverer looks again
// before it stops, so a value parked while it delivered is not left behind. This is the one
// in-order delivery of the project: the reorder buffer (a streamed run's batches), the ordered
// callback of Engine::map (items) and the MPI coordinator (chunks coming back from ranks).
//
// Owns: the parked values (a ring indexed by number, doubled as needed), the next number to
// deliver, the deliverer's turn, and the ThreadSanitizer edge between one deliverer and the next.
// Not here: what a value costs or what a put gives back (ReorderBuffer keeps its memory budget
// and its tokens through `admit`).

#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tsan_handoff.hpp"

namespace coremap::detail {

/// Delivers values in the order of their numbers. `T` is default-constructible and movable.
/// Thread safety: put() and drain() may be called from any threads at once; the `deliver`
/// callbacks never run concurrently with each other, and run in number order.
template <class T>
class OrderedDelivery {
 public:
  explicit OrderedDelivery(std::uint64_t first = 0, std::size_t capacity = 64) : next_(first) {
    std::size_t size = 1;
    while (size < capacity) size *= 2;
    ring_.resize(size);
  }
  OrderedDelivery(const OrderedDelivery&) = delete;
  OrderedDelivery& operator=(const OrderedDelivery&) = delete;

  /// Parks `value` as number `seq` (each number once, not below the next one to deliver).
  /// `admit(T& parked, bool behind)` runs under the lock once the value is parked (it may
  /// still change it) and its result is returned: `behind` is true when the value waits for an
  /// earlier one that is not parked yet (still being made), false when it is the next one or
  /// waits only for the deliverer. Throws std::logic_error for a number delivered or parked
  /// already.
  template <class Admit>
  decltype(auto) put(std::uint64_t seq, T value, Admit&& admit) {
    std::lock_guard lock(mutex_);
    if (seq < next_ || (seq - next_ < ring_.size() && slot(seq).full)) {
      throw std::logic_error("ordered delivery: value " + std::to_string(seq) + " put twice (internal error)");
    }
    while (seq - next_ >= ring_.size()) grow();
    const bool behind = seq != next_ && !slot(next_).full;
    Slot& parked = slot(seq);
    parked.value = std::move(value);
    parked.full = true;
    return admit(parked.value, behind);
  }
  void put(std::uint64_t seq, T value) {
    put(seq, std::move(value), [](T&, bool) {});
  }

  /// Delivers parked values from the next number on while they are there: `deliver(T&)` for
  /// each, in order, outside the lock. Returns at once when another thread is delivering: that
  /// one looks again before it stops. Call after each put() (the caller may do work between).
  /// An exception from `deliver` ends this drain (the rest of its run is dropped) and passes on;
  /// the next drain() delivers again.
  template <class Deliver>
  void drain(Deliver&& deliver) {
    for (;;) {
      {
        std::lock_guard lock(mutex_);
        if (delivering_) return;
        ready_.clear();
        for (Slot* head = &slot(next_); head->full; head = &slot(next_)) {
          ready_.push_back(std::move(head->value));
          head->value = T{};
          head->full = false;
          ++next_;
        }
        if (ready_.empty()) return;
        delivering_ = true;
      }
      // One deliverer at a time: what the last one did (the sink, the run's counters) happens
      // before what this one does. The mutex orders it already; TBB's threads reach here through
      // uninstrumented code, so the edge is stated for ThreadSanitizer as well.
      struct Turn {
        OrderedDelivery& self;
        explicit Turn(OrderedDelivery& s) noexcept : self(s) { taken_over(&self); }
        ~Turn() {
          handed_over(&self);
          std::lock_guard lock(self.mutex_);
          self.delivering_ = false;
        }
      } turn(*this);
      for (T& value : ready_) deliver(value);
    }
  }

  /// put(), then drain().
  template <class Deliver>
  void put_and_drain(std::uint64_t seq, T value, Deliver&& deliver) {
    put(seq, std::move(value));
    drain(deliver);
  }

  /// Memory the delivery itself spends per parked value, at most: two ring slots (the ring
  /// doubles) and one in the deliverer's run.
  static constexpr std::size_t bytes_per_value = 2 * (sizeof(T) + alignof(T)) + sizeof(T);

  /// The number of the next value to deliver (every one before it was taken for delivery).
  std::uint64_t next() {
    std::lock_guard lock(mutex_);
    return next_;
  }

 private:
  struct Slot {
    T value{};
    bool full = false;
  };

  Slot& slot(std::uint64_t seq) noexcept { return ring_[seq & (ring_.size() - 1)]; }

  // Doubles the ring, keeping each parked value at its number's slot.
  void grow() {
    std::vector<Slot> bigger(ring_.size() * 2);
    for (std::uint64_t seq = next_; seq < next_ + ring_.size(); ++seq) {
      bigger[seq & (bigger.size() - 1)] = std::move(slot(seq));
    }
    ring_.swap(bigger);
  }

  std::mutex mutex_;
  std::vector<Slot> ring_;  // slot seq % size holds value seq, for seq in [next_, next_ + size)
  std::vector<T> ready_;    // the deliverer's run of values, reused
  std::uint64_t next_;      // the next value to deliver
  bool delivering_ = false;
};

}  // namespace coremap::detail
