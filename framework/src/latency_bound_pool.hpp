// SPDX-License-Identifier: MIT
#pragma once

// The pool of a latency-bound stage: owns the threads of one stage whose concurrency is above the
// run's thread count (each with one plugin instance), the queue the stage's async_node fills,
// and the chunks of a batch spread over those threads.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include <oneapi/tbb/concurrent_queue.h>
#include <oneapi/tbb/flow_graph.h>

#include "batch.hpp"
#include "stage_runtime.hpp"
#include "tsan_handoff.hpp"

namespace coremap::detail {

// The threads of a latency-bound stage: each owns one plugin instance and takes batches from a
// queue that the stage's async_node fills, so a blocking call holds one of these threads and
// never a TBB thread.
class LatencyBoundPool {
 public:
  using Node = tbb::flow::async_node<Batch*, Batch*>;
  using Gateway = Node::gateway_type;
  struct Work {
    std::function<void(Batch&, PluginInstance&)> whole;  // the stage over a whole batch
    // When set, a batch of several values is spread over the stage's threads in chunks: each
    // runs `chunk` over values [first, end) into its own vector, the last to finish runs `done`.
    std::function<void(Batch&, PluginInstance&, std::size_t, std::size_t, std::vector<Value>&)> chunk;
    std::function<void(Batch&, std::vector<std::vector<Value>>&, std::uint64_t)> done;
  };

  LatencyBoundPool(StageRuntime& stage, Work work) : stage_(stage), work_(std::move(work)) {
    const std::size_t n = stage.spec.concurrency.limit;
    threads_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) threads_.emplace_back([this] { serve(); });
  }
  ~LatencyBoundPool() {
    for (std::size_t i = 0; i < threads_.size(); ++i) queue_.push(Job{});
    for (std::thread& thread : threads_) thread.join();
  }
  LatencyBoundPool(const LatencyBoundPool&) = delete;
  LatencyBoundPool& operator=(const LatencyBoundPool&) = delete;

  // The async_node's body: hand the batch over and return at once.
  void submit(Batch* batch, Gateway& gateway) {
    gateway.reserve_wait();
    handed_over(batch);
    const std::size_t n = batch->values.size();
    if (!work_.chunk || n < 2) {
      queue_.push(Job{batch, &gateway, nullptr, 0, 0, 0});
      return;
    }
    const std::size_t chunks = std::min(n, threads_.size());
    auto group = std::make_shared<Group>(chunks);
    for (std::size_t c = 0; c < chunks; ++c) queue_.push(Job{batch, &gateway, group, c, n * c / chunks, n * (c + 1) / chunks});
  }

 private:
  // The chunks of one batch in flight.
  struct Group {
    explicit Group(std::size_t chunks) : outs(chunks), remaining(chunks) {}
    std::vector<std::vector<Value>> outs;
    std::atomic<std::size_t> remaining;
    std::atomic<std::uint64_t> work_ns{0};
  };
  struct Job {
    Batch* batch = nullptr;
    Gateway* gateway = nullptr;
    std::shared_ptr<Group> group;
    std::size_t chunk = 0, first = 0, end = 0;
  };

  void serve() {
    PluginInstance* instance = nullptr;
    for (;;) {
      Job job;
      queue_.pop(job);
      if (job.batch == nullptr) break;
      if (instance == nullptr) instance = stage_.instances.take();
      // Each call sees the batch as the last holder left it and the run's setup (the work's
      // closures); what it did is seen by the next holder (TbbBody).
      if (!job.group) {
        TbbBody body(job.batch);
        work_.whole(*job.batch, *instance);
      } else {
        const auto start = std::chrono::steady_clock::now();
        {
          TbbBody body(job.batch);
          work_.chunk(*job.batch, *instance, job.first, job.end, job.group->outs[job.chunk]);
        }
        job.group->work_ns += static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
        if (job.group->remaining.fetch_sub(1) != 1) continue;  // another chunk hands the batch on
        TbbBody body(job.batch);
        work_.done(*job.batch, job.group->outs, job.group->work_ns.load());
      }
      job.gateway->try_put(job.batch);
      // try_put walked the node's successor list, which the graph frees after wait_for_all().
      handed_over(&run_end_key);
      job.gateway->release_wait();
    }
    if (instance != nullptr) stage_.instances.give_back(instance);
  }

  StageRuntime& stage_;
  Work work_;
  tbb::concurrent_bounded_queue<Job> queue_;
  std::vector<std::thread> threads_;
};

}  // namespace coremap::detail
