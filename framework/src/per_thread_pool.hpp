// SPDX-License-Identifier: MIT
#pragma once

// Per-thread leases: objects that must not be used by two threads at once (a stage's plugin
// instances, the worker processes of an isolated run), one per thread that asks, made on the
// thread's first lease and kept for it; the lookup after that is a thread-local read, with no
// lock. A lease taken on a thread whose object is already leased (a plugin that runs TBB work
// and, while waiting, picks up another batch of ours on the same thread) gets an object of its
// own, from the spares or newly made, and gives it back to the spares when it ends, so an
// object is never entered twice. Used by StageRuntime (stage_runtime.hpp) and WorkerPool
// (worker_process.hpp).
//
// Owns: every object it made (in the order made), the spares, and each thread's slot.

#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include <oneapi/tbb/enumerable_thread_specific.h>

namespace coremap::detail {

/// Thread safety: take(), give_back() and Lease from any thread; add(), for_each() and clear()
/// only while no lease is held.
template <class T>
class PerThreadPool {
  // Declared before Lease, which holds one.
  struct Slot {
    T* object = nullptr;
    bool busy = false;  // a lease on this thread holds `object`
  };

 public:
  using Make = std::function<std::unique_ptr<T>()>;
  enum class Making {
    under_lock,    // one at a time (a plugin's constructor need not be thread-safe)
    in_parallel,   // threads starting at once make theirs in parallel (worker processes)
  };

  /// `shared`: every lease gets the first object made (a reentrant plugin's one instance).
  PerThreadPool(Make make, Making making, bool shared = false)
      : make_(std::move(make)), making_(making), shared_(shared) {}
  PerThreadPool(const PerThreadPool&) = delete;
  PerThreadPool& operator=(const PerThreadPool&) = delete;

  /// Makes an object now, as a spare (the first: a setup error shows before any item is read).
  T* add() {
    std::unique_ptr<T> made = make_();
    std::lock_guard lock(mutex_);
    owned_.push_back(std::move(made));
    spare_.push_back(owned_.back().get());
    return owned_.back().get();
  }

  /// An object for the caller alone until give_back(): a spare, else a new one.
  T* take() {
    std::unique_lock lock(mutex_);
    if (shared_ && !owned_.empty()) return owned_.front().get();
    if (!spare_.empty()) {
      T* object = spare_.back();
      spare_.pop_back();
      return object;
    }
    std::unique_ptr<T> made;
    if (making_ == Making::in_parallel) {
      lock.unlock();
      made = make_();
      lock.lock();
    } else {
      made = make_();
    }
    owned_.push_back(std::move(made));
    return owned_.back().get();
  }

  void give_back(T* object) {
    if (shared_) return;
    std::lock_guard lock(mutex_);
    spare_.push_back(object);
  }

  /// The calling thread's object for the duration of one batch.
  class Lease {
   public:
    explicit Lease(PerThreadPool& pool) : pool_(pool), slot_(&pool.slots_.local()) {
      if (slot_->busy) {
        slot_ = nullptr;
        object_ = pool_.take();
        return;
      }
      if (slot_->object == nullptr) slot_->object = pool_.take();
      slot_->busy = true;
      object_ = slot_->object;
    }
    ~Lease() {
      if (slot_ != nullptr) {
        slot_->busy = false;
      } else {
        pool_.give_back(object_);
      }
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    T& operator*() const noexcept { return *object_; }

   private:
    PerThreadPool& pool_;
    Slot* slot_;
    T* object_ = nullptr;
  };

  /// `f(T&)` for every object, in the order they were made.
  template <class F>
  void for_each(F&& f) {
    std::lock_guard lock(mutex_);
    for (const auto& object : owned_) f(*object);
  }

  /// The first object made, or null.
  T* first() {
    std::lock_guard lock(mutex_);
    return owned_.empty() ? nullptr : owned_.front().get();
  }

  /// Destroys every object and forgets every thread's slot.
  void clear() {
    std::lock_guard lock(mutex_);
    slots_.clear();
    spare_.clear();
    owned_.clear();
  }

 private:
  const Make make_;
  const Making making_;
  const bool shared_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<T>> owned_;
  std::vector<T*> spare_;
  tbb::enumerable_thread_specific<Slot> slots_;
};

}  // namespace coremap::detail
