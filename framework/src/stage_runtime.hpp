// SPDX-License-Identifier: MIT
#pragma once

// The stage at run time. Owns one pipeline stage's resolved config, whether it is latency-bound
// (runs on threads of its own, StagePool), its plugin instances (one per thread, handed out by
// Lease for a batch at a time) and their per-thread latency histograms, and folds the
// instances' partial states into the stage's summary at the end of a run.

#include <memory>
#include <mutex>
#include <vector>

#include <oneapi/tbb/enumerable_thread_specific.h>

#include <coremap/latency_histogram.hpp>
#include <coremap/pipeline.hpp>
#include <coremap/plugin_loader.hpp>

namespace coremap::detail {

// One stage at run time: its plugin, config and concurrency, and its plugin instances. One
// instance per worker thread (one shared instance when the plugin is reentrant), so process()
// is never entered by two threads on one instance.
struct StageRuntime {
  Stage spec;            // config resolved
  bool pooled = false;   // latency-bound: runs on `spec.concurrency.limit` threads of its own
  bool reduces = false;
  std::unique_ptr<PluginInstance> primary;
  // `busy` catches the case where a plugin runs TBB work itself and this thread, while
  // waiting, picks up another batch: that call gets an instance of its own instead of
  // re-entering the busy one.
  struct Slot {
    PluginInstance* instance = nullptr;
    bool busy = false;
  };
  tbb::enumerable_thread_specific<Slot> slots;
  std::mutex mutex;
  std::vector<std::unique_ptr<PluginInstance>> instances;
  std::vector<PluginInstance*> spare;
  // RunOptions::measure: each thread's process() durations, merged after the run.
  tbb::enumerable_thread_specific<LatencyHistogram> latency;

  // `in_process` is false when the plugin runs in worker processes (RunOptions::isolate).
  StageRuntime(Stage stage, bool in_process) : spec(std::move(stage)) {
    spec.config = spec.plugin->resolve_config(spec.config);
    reduces = spec.plugin->reduces();
    if (in_process) primary = std::make_unique<PluginInstance>(spec.plugin, spec.config);
  }

  // Not on the per-item path: runs once per thread (or per nested call), under a mutex.
  PluginInstance* take_instance() {
    std::lock_guard lock(mutex);
    if (spec.plugin->reentrant()) return primary ? primary.get() : instances.front().get();
    if (!spare.empty()) {
      PluginInstance* instance = spare.back();
      spare.pop_back();
      return instance;
    }
    if (primary) {
      instances.push_back(std::move(primary));
      return instances.back().get();
    }
    instances.push_back(std::make_unique<PluginInstance>(spec.plugin, spec.config));
    return instances.back().get();
  }

  void give_back(PluginInstance* instance) {
    if (spec.plugin->reentrant()) return;
    std::lock_guard lock(mutex);
    spare.push_back(instance);
  }

  // The instance the calling thread uses for the duration of one batch.
  class Lease {
   public:
    explicit Lease(StageRuntime& stage) : stage_(stage), slot_(&stage.slots.local()) {
      if (slot_->busy) {
        slot_ = nullptr;
        instance_ = stage_.take_instance();
        return;
      }
      if (slot_->instance == nullptr) slot_->instance = stage_.take_instance();
      slot_->busy = true;
      instance_ = slot_->instance;
    }
    ~Lease() {
      if (slot_ != nullptr) {
        slot_->busy = false;
      } else {
        stage_.give_back(instance_);
      }
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    PluginInstance& operator*() const noexcept { return *instance_; }

   private:
    StageRuntime& stage_;
    Slot* slot_;
    PluginInstance* instance_ = nullptr;
  };

  // Folds every instance's partial state into one and summarises it; then starts afresh, so
  // the next run's summary covers that run only.
  Json summarize(Json* state = nullptr) {
    std::lock_guard lock(mutex);
    std::vector<PluginInstance*> all;
    if (primary) all.push_back(primary.get());
    for (const auto& instance : instances) all.push_back(instance.get());
    Json summary;
    std::string error;
    bool ok = true;
    for (std::size_t i = 1; i < all.size() && ok; ++i) ok = all[0]->merge(*all[i], error);
    if (state != nullptr) {
      Json saved;
      std::string save_error;
      if (!ok) {
        *state = Json{{"error", error}};
      } else if (all[0]->save_state(saved, save_error)) {
        *state = Json{{"state", std::move(saved)}};
      } else {
        *state = Json{{"error", save_error}};
      }
    }
    if (ok) ok = all[0]->summary(summary, error);
    instances.clear();
    spare.clear();
    slots.clear();
    primary = std::make_unique<PluginInstance>(spec.plugin, spec.config);
    return ok ? summary : Json{{"error", error}};
  }
};

}  // namespace coremap::detail
