// SPDX-License-Identifier: MIT
#pragma once

// The stage at run time. Owns one pipeline stage's resolved config, whether it is latency-bound
// (runs on threads of its own, LatencyBoundPool), its plugin instances (one per thread, handed out by
// Lease for a batch at a time, PerThreadPool) and their per-thread latency histograms, and folds the
// instances' partial states into the stage's summary at the end of a run.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <oneapi/tbb/enumerable_thread_specific.h>

#include <coremap/latency_histogram.hpp>
#include <coremap/pipeline.hpp>
#include <coremap/loaded_plugin.hpp>

#include "per_thread_pool.hpp"

namespace coremap::detail {

// One stage at run time: its plugin, config and concurrency, and its plugin instances. One
// instance per thread (one shared instance when the plugin is reentrant), so process()
// is never entered by two threads on one instance.
struct StageRuntime {
  Stage spec;            // config resolved
  bool latency_bound = false;  // latency-bound: runs on `spec.concurrency.limit` threads of its own
  bool reduces = false;
  // Every instance of the stage, one per thread; one shared by all when the plugin is
  // reentrant. Instances are made one at a time: a plugin's constructor need not be thread-safe.
  PerThreadPool<PluginInstance> instances;
  // The first instance, made with the engine (so a constructor that throws is a setup error);
  // the serial paths use it alone. Null when the plugin runs in worker processes.
  PluginInstance* primary = nullptr;
  // RunOptions::measure: each thread's process() durations, merged after the run.
  tbb::enumerable_thread_specific<LatencyHistogram> latency;

  // `in_process` is false when the plugin runs in worker processes (RunOptions::isolate).
  StageRuntime(Stage stage, bool in_process)
      : spec(resolved(std::move(stage))),
        reduces(spec.plugin->reduces()),
        instances([this] { return std::make_unique<PluginInstance>(spec.plugin, spec.config); },
                  PerThreadPool<PluginInstance>::Making::under_lock, spec.plugin->reentrant()) {
    if (in_process) primary = instances.add();
  }

  // The calling thread's instance for the duration of one batch. A plugin that runs TBB work
  // itself may, while waiting, have this thread pick up another batch: that call gets an
  // instance of its own instead of re-entering the busy one (PerThreadPool).
  class Lease : public PerThreadPool<PluginInstance>::Lease {
   public:
    explicit Lease(StageRuntime& stage) : PerThreadPool<PluginInstance>::Lease(stage.instances) {}
  };

  // Folds every instance's partial state into one and summarises it; then starts afresh, so
  // the next run's summary covers that run only.
  Json summarize(Json* state = nullptr) {
    std::vector<PluginInstance*> all;
    instances.for_each([&](PluginInstance& instance) { all.push_back(&instance); });
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
    primary = instances.add();
    return ok ? summary : Json{{"error", error}};
  }

 private:
  static Stage resolved(Stage stage) {
    stage.config = stage.plugin->resolve_config(stage.config);
    return stage;
  }
};

}  // namespace coremap::detail
