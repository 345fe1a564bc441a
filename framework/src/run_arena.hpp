// SPDX-License-Identifier: MIT
#pragma once

// The task arena a parallel run works in (Engine::run's graph, every map over items in memory),
// and the parallelism it really gets: the width asked for, capped by the application's own
// tbb::global_control (max_allowed_parallelism), which no arena exceeds. An arena wider than
// the machine raises the global worker limit for its lifetime (the limit is the lowest of all
// live controls, so an application's lower one still wins).

#include <algorithm>
#include <cstddef>
#include <optional>

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/task_arena.h>

namespace coremap::detail {

class RunArena {
 public:
  explicit RunArena(std::size_t threads) {
    if (threads > static_cast<std::size_t>(tbb::info::default_concurrency())) {
      widen_.emplace(tbb::global_control::max_allowed_parallelism, threads);
    }
    concurrency_ = capped(threads);
    arena_.emplace(static_cast<int>(concurrency_));
  }

  // The parallelism an arena for `threads` would get now, without making one.
  static std::size_t parallelism(std::size_t threads) {
    std::optional<tbb::global_control> widen;
    if (threads > static_cast<std::size_t>(tbb::info::default_concurrency())) {
      widen.emplace(tbb::global_control::max_allowed_parallelism, threads);
    }
    return capped(threads);
  }

  // Threads the run's work can use at once: what RunStats::threads reports.
  std::size_t concurrency() const noexcept { return concurrency_; }

  template <class F>
  void execute(F&& body) {
    arena_->execute(body);
  }

 private:
  static std::size_t capped(std::size_t threads) {
    const std::size_t limit = tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism);
    return std::max<std::size_t>(1, std::min(threads, limit));
  }

  std::optional<tbb::global_control> widen_;  // before the arena: outlives it
  std::size_t concurrency_ = 1;
  std::optional<tbb::task_arena> arena_;
};

}  // namespace coremap::detail
