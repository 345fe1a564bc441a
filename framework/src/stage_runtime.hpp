// SPDX-License-Identifier: MIT
#pragma once

// The stage at run time. Owns one pipeline stage's resolved config, whether it is latency-bound
// (runs on threads of its own, LatencyBoundPool), its plugin instances (one per thread, handed out by
// Lease for a batch at a time, PerThreadPool) and their per-thread latency histograms, and folds the
// instances' partial states into the stage's summary at the end of a run.

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <oneapi/tbb/enumerable_thread_specific.h>

#include <coremap/engine.hpp>
#include <coremap/error.hpp>
#include <coremap/latency_histogram.hpp>
#include <coremap/pipeline.hpp>
#include <coremap/loaded_plugin.hpp>

#include "per_thread_pool.hpp"
#include "worker_process.hpp"

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

  // Isolated (Stage::isolate, RunOptions::isolate): the plugin's calls run in these worker
  // processes. The instances here then only merge what the workers send back of a reduction
  // (one per thread, never shared: merge() is not reentrant), and exist only for a reducing
  // plugin.
  std::unique_ptr<WorkerPool> workers;

  // `isolated`: the plugin runs in worker processes (started by the caller into `workers`).
  StageRuntime(Stage stage, bool isolated)
      : spec(resolved(std::move(stage))),
        reduces(spec.plugin->reduces()),
        instances([this] { return std::make_unique<PluginInstance>(spec.plugin, spec.config); },
                  PerThreadPool<PluginInstance>::Making::under_lock, spec.plugin->reentrant() && !isolated) {
    spec.isolate = isolated;
    if (!isolated) primary = instances.add();
  }

  // An isolated reducing stage: a worker's partial state of one call (CBOR, as the worker sent
  // it) merged into `into`, the calling thread's instance. A state that cannot be loaded or
  // merged leaves the stage's state unknown: its summary is that error.
  void merge_worker_state(PluginInstance& into, bool saved, std::string_view bytes) {
    std::string error;
    if (!saved) {
      error = "save() failed in a worker process: " + std::string(bytes);
    } else {
      try {
        const Json state = Json::from_cbor(bytes.begin(), bytes.end());
        PluginInstance part(spec.plugin, spec.config);
        if (part.load_state(state, error) && into.merge(part, error)) return;
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    std::lock_guard lock(worker_error_mutex);
    if (worker_error.empty()) worker_error = "a partial state from a worker process could not be merged: " + error;
  }

  // The calling thread's instance for the duration of one batch. A plugin that runs TBB work
  // itself may, while waiting, have this thread pick up another batch: that call gets an
  // instance of its own instead of re-entering the busy one (PerThreadPool).
  class Lease : public PerThreadPool<PluginInstance>::Lease {
   public:
    explicit Lease(StageRuntime& stage) : PerThreadPool<PluginInstance>::Lease(stage.instances) {}
  };

  // Checkpoints (RunOptions::on_checkpoint) and resumed runs: the partial state of the items
  // before the last checkpoint (or loaded from an earlier run's), which the instances are
  // folded into at each checkpoint and at the end. Null until either happens.
  std::unique_ptr<PluginInstance> carried;
  // A merge or save that failed at a checkpoint: the carried state is unknown from then on,
  // so the summary is this error.
  std::string carried_error;

  // Starts the carried state from `state` (a saved partial state). Throws PluginError.
  void load_carried(const Json& state) {
    carried = std::make_unique<PluginInstance>(spec.plugin, spec.config);
    std::string error;
    if (!carried->load_state(state, error)) {
      throw PluginError("stage '" + spec.name + "' (plugin " + std::string(spec.plugin->name()) +
                        "): cannot load the checkpointed state: " + error);
    }
  }

  // At a checkpoint (no instance in use): folds every instance into the carried state, makes
  // the instances afresh and returns the carried state saved, {"state": ...}, or {"error":
  // ...}. Throws PluginError when a fresh instance cannot be made.
  Json checkpoint() {
    take_worker_error();
    if (!carried_error.empty()) return Json{{"error", carried_error}};
    if (!carried) carried = std::make_unique<PluginInstance>(spec.plugin, spec.config);
    std::string error;
    bool ok = true;
    instances.for_each([&](PluginInstance& instance) {
      if (ok) ok = carried->merge(instance, error);
    });
    instances.clear();
    if (!spec.isolate) primary = instances.add();
    Json saved;
    if (ok) ok = carried->save_state(saved, error);
    if (!ok) {
      carried_error = error;
      return Json{{"error", error}};
    }
    return Json{{"state", std::move(saved)}};
  }

  // Folds every instance's partial state into one and summarises it; then starts afresh, so
  // the next run's summary covers that run only.
  StageSummary summarize(Json* state = nullptr) {
    take_worker_error();
    std::vector<PluginInstance*> all;
    if (carried) all.push_back(carried.get());
    instances.for_each([&](PluginInstance& instance) { all.push_back(&instance); });
    // An isolated stage that merged nothing (no item reached it) has no instance yet.
    if (all.empty()) all.push_back(instances.add());
    Json summary;
    std::string error = carried_error;
    bool ok = error.empty();
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
    carried.reset();
    carried_error.clear();
    if (!spec.isolate) primary = instances.add();
    return ok ? StageSummary::success(std::move(summary)) : StageSummary::failure(std::move(error));
  }

 private:
  std::mutex worker_error_mutex;
  std::string worker_error;  // merge_worker_state's first failure, until taken

  // A failed merge of a worker's state becomes the carried error (no instance in use).
  void take_worker_error() {
    std::lock_guard lock(worker_error_mutex);
    if (!worker_error.empty() && carried_error.empty()) carried_error = worker_error;
    worker_error.clear();
  }

  static Stage resolved(Stage stage) {
    stage.config = stage.plugin->resolve_config(stage.config);
    return stage;
  }
};

}  // namespace coremap::detail
