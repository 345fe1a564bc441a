// SPDX-License-Identifier: MIT
// The engine: setup, the run's bookkeeping and the streamed run. A manifest goes through a
// bounded tbb::flow graph (cut -> limiter -> one node per stage -> reorder buffer or unordered
// writer) or, with --serial, through a plain loop on the calling thread; each stage's node runs
// the stage runner (stage_runner.cpp). Engine::map is in map.cpp.
#include <coremap/engine.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include <oneapi/tbb/flow_graph.h>

#include <coremap/error.hpp>
#include <coremap/record.hpp>

#include "batch_sizing.hpp"
#include "engine_impl.hpp"
#include "reorder_buffer.hpp"
#include "latency_bound_pool.hpp"

namespace coremap {
namespace {

using detail::Batch;
using detail::LatencyBoundPool;
using detail::batch_target_ns;
using detail::isolated_batch_target_ns;
using detail::max_batch_bytes;
using detail::max_batch_items;

// Ordered runs: finished batches waiting for an earlier one give their token back while they
// hold less than this (detail::ReorderBuffer).
constexpr std::size_t default_reorder_budget_bytes = std::size_t{64} << 20;

}  // namespace

Engine::Impl::Impl(Pipeline pipeline, RunOptions o) : options(std::move(o)), pipeline_in_flight(pipeline.max_in_flight) {
  if (pipeline.stages.empty()) throw UsageError("a pipeline needs at least one stage");
  bool any_isolated = options.isolate;
  for (const Stage& stage : pipeline.stages) {
    const bool isolated = options.isolate || stage.isolate;
    any_isolated = any_isolated || isolated;
    if (stage.memory_limit_bytes != 0 && !isolated) {
      throw UsageError("stage '" + stage.name + "': a memory limit needs isolate (the stage's \"isolate\" or --isolate)");
    }
  }
  if (!any_isolated && options.memory_limit_bytes != 0) throw UsageError("a memory limit needs isolate (--isolate)");
  if (any_isolated && options.measure) throw UsageError("measure: isolated runs time their calls in the workers; not supported");
  if (options.on_checkpoint || !options.resume_states.is_null()) {
    const char* what = options.on_checkpoint ? "checkpoints (on_checkpoint)" : "resume_states";
    for (const Stage& stage : pipeline.stages) {
      if (stage.plugin && stage.plugin->reduces() && !stage.plugin->saves_state()) {
        throw UsageError(std::string(what) + ": stage '" + stage.name + "' reduces, but its plugin " +
                         std::string(stage.plugin->name()) +
                         " cannot save its partial state (save() and load(), docs/plugins.md)");
      }
    }
  }
  threads = detail::map_threads(options.threads, options.serial);
  for (Stage& stage : pipeline.stages) {
    if (!stage.plugin) throw UsageError("stage '" + stage.name + "' has no plugin");
    if (stage.name.empty()) stage.name = std::string(stage.plugin->name());
    const bool isolated = options.isolate || stage.isolate;
    if (isolated) {
      // Before the stage's instances: a reducing plugin without save() and load() is refused
      // before its constructor runs here.
      Stage checked = stage;
      checked.config = stage.plugin->resolve_config(stage.config);
      (void)detail::worker_settings(checked, options);
    }
    stages.push_back(std::make_unique<StageRuntime>(std::move(stage), isolated));
    StageRuntime& added = *stages.back();
    added.latency_bound = !options.serial && !isolated && added.spec.concurrency.limit > threads;
    if (isolated) {
      detail::WorkerSettings settings = detail::worker_settings(added.spec, options);
      settings.stop = &stop;
      added.workers = std::make_unique<detail::WorkerPool>(std::move(settings));
      isolated_stages = true;
    }
  }
  if (!options.cache.directory.empty()) {
    if (isolated_stages) {
      throw UsageError("--cache with --isolate: not supported yet (the cache replays outcomes in process); run "
                       "without one of them");
    }
    std::vector<const Stage*> cached;
    for (const auto& stage : stages) {
      if (const std::string why = detail::uncacheable_reason(stage->spec); !why.empty()) {
        cache_note = "stage '" + stage->spec.name + "'" + (stage.get() != stages.back().get() ? " and the stages after it" : "") +
                     " not cached: " + why;
        break;
      }
      cached.push_back(&stage->spec);
    }
    cached_stages = cached.size();
    if (!cached.empty()) cache = std::make_unique<detail::ResultCache>(options.cache, cached);
  }
}

// RunOptions::measure: merges each stage's per-thread histograms into stats.stages.
void Engine::Impl::collect_stage_stats(RunStats& stats) {
  for (const auto& stage : stages) {
    LatencyHistogram merged;
    for (const LatencyHistogram& part : stage->latency) merged.merge(part);
    const std::size_t limit = stage->spec.concurrency.limit;
    StageStats out;
    out.name = stage->spec.name;
    out.latency_bound = stage->latency_bound;
    out.concurrency = options.serial ? 1 : (stage->latency_bound ? limit : (limit == 0 ? threads : std::min(limit, threads)));
    out.latency = std::move(merged);
    out.take_figures_from_latency();
    stats.stages.push_back(std::move(out));
  }
}

std::size_t Engine::Impl::next_batch_size() const noexcept {
  const std::uint64_t ns = per_item_ns.load(std::memory_order_relaxed);
  return detail::items_for_duration(isolated_stages ? isolated_batch_target_ns : batch_target_ns, 1, ns, max_batch_items);
}

// Cuts the next batch, leaving out items an earlier run recorded (RunOptions::skip). False
// at the manifest's end or when the run is stopping. Runs in the serial input stage.
bool Engine::Impl::read_batch(BatchSource& manifest, Batch& batch, std::uint64_t& skipped) {
  const IndexSet* const skip = options.skip.get();
  for (;;) {
    if (should_stop()) return false;
    if (options.on_checkpoint && items_cut > checkpointed_items && Clock::now() >= checkpoint_due) {
      // Nothing more is cut until the batches in flight are written and the checkpoint taken.
      checkpoint_pending = true;
      return false;
    }
    if (!manifest.next_batch(batch.raw, next_batch_size(), max_batch_bytes)) return false;
    if (!batch.raw.items.empty()) items_cut = std::max(items_cut, batch.raw.items.back().index + 1);
    progress.bytes_read.store(manifest.bytes_read(), std::memory_order_relaxed);
    if (skip == nullptr) return true;
    const std::size_t before = batch.raw.items.size();
    std::erase_if(batch.raw.items, [skip](const RawItem& raw) { return skip->contains(raw.index); });
    skipped += before - batch.raw.items.size();
    if (!batch.raw.items.empty()) return true;
  }
}

// The writer's bookkeeping for a finished batch (serial: one batch at a time).
void Engine::Impl::account(const Batch& batch, RunStats& stats) {
  stats.items += batch.items;
  stats.records += batch.written();
  stats.ok += batch.ok;
  stats.failed += batch.failed;
  stats.not_run += batch.not_run;
  progress.done.fetch_add(batch.items, std::memory_order_relaxed);
  if (cache) {
    cache->counters.hits.fetch_add(batch.cache_hits, std::memory_order_relaxed);
    cache->counters.misses.fetch_add(batch.cache_misses, std::memory_order_relaxed);
    progress.cache_hits.fetch_add(batch.cache_hits, std::memory_order_relaxed);
    progress.cache_misses.fetch_add(batch.cache_misses, std::memory_order_relaxed);
  }
}

// Feeds a batch's time per item into the cut stage's batch sizing, as soon as its last stage
// is done: waiting until it is written would keep every batch behind a slow one at one item
// (nothing written, nothing learned), each paying a whole batch's memory and overhead.
// Batches finish on several threads at once; a lost update only delays the average.
void Engine::Impl::learn_speed(const Batch& batch) noexcept {
  if (batch.items == 0) return;
  const std::uint64_t measured = std::max<std::uint64_t>(1, batch.work_ns / batch.items);
  const std::uint64_t old = per_item_ns.load(std::memory_order_relaxed);
  per_item_ns.store(old == 0 ? measured : (3 * old + measured) / 4, std::memory_order_relaxed);
}

void Engine::Impl::reset_for_run() {
  // `stop` is left as it is: a request_stop() that came since the last run ended is for this
  // one (the run's EndOfRun clears it when the run is over).
  if (stop.load()) {
    StopReason none = StopReason::none;
    stop_reason.compare_exchange_strong(none, StopReason::cancelled);
  }
  progress.done = 0;
  progress.failed = 0;
  progress.bytes_read = 0;
  progress.total_bytes = 0;
  progress.total_items = 0;
  progress.cache_hits = 0;
  progress.cache_misses = 0;
  if (options.cancel.cancelled()) stop_with(StopReason::cancelled);
  for (const auto& stage : stages) stage->latency.clear();
}

void Engine::Impl::take_checkpoint(bool last) {
  checkpoint_pending = false;
  const auto start = Clock::now();
  Checkpoint checkpoint;
  checkpoint.items = items_cut;
  checkpoint.last = last;
  bool failed = false;
  for (const auto& stage : stages) {
    if (!stage->reduces) continue;
    Json state = stage->checkpoint();
    // A merge or save that failed: the state is unknown, so no checkpoint is handed on (now or
    // later); the stage's summary says why.
    failed = failed || !state.contains("state");
    checkpoint.states[stage->spec.name] = std::move(state);
  }
  if (!failed) options.on_checkpoint(checkpoint);
  checkpointed_items = items_cut;
  const auto took = Clock::now() - start;
  checkpoint_due = Clock::now() + std::max<Clock::duration>(options.checkpoint_interval, 20 * took);
}

void Engine::Impl::summarize(RunStats& stats) {
  for (const auto& stage : stages) {
    if (!stage->reduces) continue;
    if (options.save_states && stage->spec.plugin->saves_state()) {
      Json state;
      stats.summaries[stage->spec.name] = stage->summarize(&state);
      stats.states[stage->spec.name] = std::move(state);
    } else {
      stats.summaries[stage->spec.name] = stage->summarize();
    }
  }
}

Engine::Engine(std::shared_ptr<const Plugin> plugin, const Json& config, RunOptions options)
    : Engine(Pipeline{{Stage{std::string(plugin ? plugin->name() : ""), plugin, config, Concurrency::unlimited()}}, 0},
             std::move(options)) {}

Engine::Engine(Pipeline pipeline, RunOptions options)
    : impl_(std::make_unique<Impl>(std::move(pipeline), std::move(options))) {}

Engine::~Engine() = default;
Engine::Engine(Engine&& other) noexcept = default;
Engine& Engine::operator=(Engine&& other) noexcept = default;

Engine::Impl& Engine::impl(const char* what) const {
  if (!impl_) throw UsageError(std::string("Engine::") + what + ": this Engine was moved from");
  return *impl_;
}

void Engine::request_stop() noexcept {
  if (impl_) impl_->stop_with(StopReason::cancelled);
}

const Progress& Engine::progress() const noexcept {
  static const Progress moved_from;  // a moved-from engine's counters: all 0
  return impl_ ? impl_->progress : moved_from;
}

std::size_t Engine::threads() const noexcept { return impl_ ? impl_->threads : 0; }

template <class Deliver>
RunStats Engine::Impl::run_stream(BatchSource& manifest, bool as_records, Deliver&& deliver) {
  if (options.grain != 0) {
    throw UsageError("Engine::run: RunOptions::grain applies to items in memory (Engine::map, coremap::map); a run "
                     "cuts its manifest into batches sized by time, so leave grain at 0");
  }
  const EndOfRun end_of_run{*this};
  reset_for_run();
  // Items an earlier run recorded from the first on (a resumed checkpoint's) are covered
  // already: a checkpoint covers at least them, and none is taken before an item past them.
  items_cut = 0;
  if (options.skip) {
    while (options.skip->contains(items_cut)) ++items_cut;
  }
  checkpointed_items = items_cut;
  checkpoint_pending = false;
  checkpoint_due = Clock::now() + options.checkpoint_interval;
  if (!options.resume_states.is_null()) {
    for (const auto& stage : stages) {
      if (!stage->reduces) continue;
      const auto entry = options.resume_states.find(stage->spec.name);
      if (entry == options.resume_states.end() || !entry->is_object() || !entry->contains("state")) {
        throw PluginError("resume_states has no state for the reducing stage '" + stage->spec.name + "'");
      }
      stage->load_carried(entry->at("state"));
    }
  }
  progress.total_bytes = manifest.size().value_or(0);
  RunStats stats;
  stats.threads = threads;
  const auto start = Clock::now();
  const std::string& name = manifest.name();
  const ManifestFormat format = manifest.format();
  ProgressReporter reporter(progress, options.on_progress, options.progress_interval);
  // A manifest read from a pipe waits for input in slices, giving up once the run is stopping.
  struct StopCheck {
    BatchSource& source;
    ~StopCheck() { source.set_stop_check({}); }
  } stop_check{manifest};
  manifest.set_stop_check([this] { return should_stop(); });
  auto finish = [&](Batch& batch) {
    deliver(batch);
    account(batch, stats);
  };

  if (options.serial) {
    // No TBB on this path: a debugger sees plugin -> engine -> main, one thread, in order.
    Batch batch;
    batch.as_records = as_records;
    batch.source = name;
    for (;;) {
      batch.start();
      if (!read_batch(manifest, batch, stats.skipped)) {
        if (!checkpoint_pending || should_stop()) break;
        take_checkpoint(false);
        continue;
      }
      for (std::size_t s = 0; s < stages.size(); ++s) {
        if (stages[s]->workers) {
          run_stage_isolated(batch, s, name, format);
        } else {
          run_stage(batch, s, *stages[s]->primary, name, format);
        }
      }
      learn_speed(batch);
      finish(batch);
    }
  } else {
    std::size_t tokens = options.max_in_flight != 0 ? options.max_in_flight : pipeline_in_flight;
    if (tokens == 0) {
      tokens = 4 * threads;
      for (const auto& stage : stages) tokens += stage->latency_bound ? stage->spec.concurrency.limit : 0;
    }
    BatchPool batches(tokens + 1, as_records, name);
    // One graph per stretch between checkpoints: the input stops cutting when one is due, the
    // graph drains (every batch written), and the checkpoint is taken here, with nothing in
    // flight.
    for (bool more = true; more;) {
      stats.threads = in_arena([&] {
        namespace flow = tbb::flow;
        flow::graph graph;
        std::uint64_t next_seq = 0;
        flow::input_node<Batch*> source(graph, [&](tbb::flow_control& control) -> Batch* {
          // A serial node: its state (next_seq, the manifest) passes from call to call.
          detail::TbbBody tbb_body;
          detail::SerialBody serial(&next_seq);
          Batch* batch = batches.take();
          batch->start();
          if (!read_batch(manifest, *batch, stats.skipped)) {
            batches.give_back(batch);
            control.stop();
            return nullptr;
          }
          batch->seq = next_seq++;
          detail::handed_over(batch);
          return batch;
        });
        flow::limiter_node<Batch*> limiter(graph, tokens);
        flow::make_edge(source, limiter);

        // One node per stage, chained; latency-bound stages hand batches to their own threads.
        std::vector<std::unique_ptr<flow::function_node<Batch*, Batch*>>> cpu_nodes;
        // Declared before the pools, so destroyed after them: a pool's threads are joined before
        // the async_node whose gateway they called last (release_wait ends after the graph's wait
        // may already have returned).
        std::vector<std::unique_ptr<LatencyBoundPool::Node>> async_nodes;
        std::vector<std::unique_ptr<LatencyBoundPool>> pools;
        flow::sender<Batch*>* previous = &limiter;
        for (std::size_t s = 0; s < stages.size(); ++s) {
          StageRuntime& stage = *stages[s];
          flow::receiver<Batch*>* node = nullptr;
          flow::sender<Batch*>* out = nullptr;
          if (stage.latency_bound) {
            LatencyBoundPool::Work work;
            work.whole = [this, s, &name, format](Batch& batch, PluginInstance& instance) {
              run_stage(batch, s, instance, name, format);
            };
            if (splits(s)) {
              work.chunk = [this, s, &name](Batch& batch, PluginInstance& instance, std::size_t first, std::size_t end,
                                            std::vector<Value>& outputs) {
                run_values(batch, s, instance, first, end, outputs, name);
              };
              work.done = [this, s](Batch& batch, std::vector<std::vector<Value>>& outs, std::uint64_t work_ns) {
                join_chunks(batch, outs);
                finish_stage(batch, s);
                batch.work_ns += work_ns;
              };
            }
            pools.push_back(std::make_unique<LatencyBoundPool>(stage, std::move(work)));
            LatencyBoundPool* pool = pools.back().get();
            async_nodes.push_back(std::make_unique<LatencyBoundPool::Node>(
                graph, flow::unlimited,
                [pool](Batch* batch, LatencyBoundPool::Gateway& gateway) { pool->submit(batch, gateway); }));
            node = async_nodes.back().get();
            // An async_node sends through its output port, not through its sender base.
            out = &flow::output_port<0>(*async_nodes.back());
          } else {
            const std::size_t concurrency = stage.spec.concurrency.is_unlimited() ? std::size_t{flow::unlimited}
                                                                                  : stage.spec.concurrency.limit;
            cpu_nodes.push_back(std::make_unique<flow::function_node<Batch*, Batch*>>(
                graph, concurrency, [this, s, &stage, &name, format](Batch* batch) {
                  detail::TbbBody tbb_body(batch);
                  if (stage.workers) {
                    run_stage_isolated(*batch, s, name, format);
                    return batch;
                  }
                  if (splits(s) && batch->values.size() > 1) {
                    run_stage_split(*batch, s, name);
                    return batch;
                  }
                  StageRuntime::Lease lease(stage);
                  run_stage(*batch, s, *lease, name, format);
                  return batch;
                }));
            node = cpu_nodes.back().get();
            out = cpu_nodes.back().get();
          }
          flow::make_edge(*previous, *node);
          previous = out;
        }

        flow::function_node<Batch*, flow::continue_msg> writer(graph, flow::serial, [&](Batch* batch) {
          // A serial node: `stats` and the sink pass from call to call.
          detail::TbbBody tbb_body(batch);
          detail::SerialBody serial(&stats);
          learn_speed(*batch);
          finish(*batch);
          batches.give_back(batch);
          return flow::continue_msg();
        });
        // Ordered: batches are written from the reorder buffer, in sequence, by the thread that
        // completes the next one; unordered: by a serial writer node, as they come.
        auto write_in_order = [&](Batch* batch) {
          // One writer at a time (ReorderBuffer): `stats` and the sink pass between them.
          finish(*batch);
          batches.give_back(batch);
        };
        auto release_token = [&limiter] { limiter.decrementer().try_put(flow::continue_msg()); };
        detail::ReorderBuffer<Batch*, decltype(write_in_order), decltype(release_token)> reorder_buffer(
            options.reorder_budget_bytes != 0 ? options.reorder_budget_bytes : default_reorder_budget_bytes,
            write_in_order, release_token);
        flow::function_node<Batch*, flow::continue_msg> reorder(graph, flow::unlimited, [&](Batch* batch) {
          detail::TbbBody tbb_body(batch);
          learn_speed(*batch);
          // A parked batch also takes a slot in the pool's list of batches.
          reorder_buffer.put(batch->seq, batch, footprint(*batch) + sizeof(std::unique_ptr<Batch>));
          return flow::continue_msg();
        });
        if (options.ordered) {
          flow::make_edge(*previous, reorder);
        } else {
          flow::make_edge(*previous, writer);
          flow::make_edge(writer, limiter.decrementer());
        }
        // The nodes and their bodies were built on this thread; TBB's threads run them.
        detail::handed_over(&detail::run_start_key);
        // The nodes and their bodies are destroyed on this thread after the last body ran on
        // another, also when a body threw (the sink's OutputError leaves wait_for_all()).
        struct RunEnd {
          ~RunEnd() { detail::taken_over(&detail::run_end_key); }
        } run_end;
        source.activate();
        graph.wait_for_all();
      });
      // A stop during the drain may have cut items short after a reducing stage saw them: no
      // checkpoint then (a resumed run continues from the one before).
      more = checkpoint_pending && !should_stop();
      if (more) take_checkpoint(false);
    }
  }
  reporter.stop();
  if (options.on_checkpoint && !should_stop()) take_checkpoint(true);
  if (!options.cache.directory.empty()) {
    if (cache) stats.cache = cache->finish_run();
    stats.cache.enabled = true;
    stats.cache.cached_stages = cached_stages;
    if (!cache_note.empty()) stats.cache.note = cache_note + (stats.cache.note.empty() ? "" : "; " + stats.cache.note);
  }
  summarize(stats);
  stats.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  stats.stopped = stop_reason.load();
  if (options.measure) collect_stage_stats(stats);
  // The progress callback threw: the run went on to its end; the application hears of it now.
  if (const std::exception_ptr error = reporter.error()) std::rethrow_exception(error);
  return stats;
}

StageSummary summarize_states(const Stage& stage, std::span<const Json> states) {
  if (!stage.plugin->saves_state()) {
    throw PluginError("plugin " + std::string(stage.plugin->name()) + " (stage '" + stage.name +
                      "') does not save its partial state (save() and load()), so states of several runs cannot "
                      "be merged");
  }
  const Json config = stage.plugin->resolve_config(stage.config);
  PluginInstance total(stage.plugin, config);
  std::string error;
  for (const Json& entry : states) {
    const auto state = entry.find("state");
    if (state == entry.end()) {
      const auto why = entry.find("error");
      return StageSummary::failure(why != entry.end() && why->is_string() ? why->get<std::string>()
                                                                           : "a partial state is missing");
    }
    PluginInstance part(stage.plugin, config);
    if (!part.load_state(*state, error) || !total.merge(part, error)) return StageSummary::failure(std::move(error));
  }
  Json summary;
  if (!total.summary(summary, error)) return StageSummary::failure(std::move(error));
  return StageSummary::success(std::move(summary));
}

Engine::Engine(ItemFunction function, RunOptions options)
    : Engine(Plugin::from_function(std::move(function)), Json::object(), std::move(options)) {}

RunStats Engine::run(BatchSource& manifest, Sink& sink) {
  return impl("run").run_stream(manifest, false, [&](Batch& batch) { sink.write(batch.out); });
}

RunStats Engine::run(BatchSource& manifest, const RecordCallback& on_record) {
  return impl("run").run_stream(manifest, true, [&](Batch& batch) {
    for (const Record& record : batch.records) on_record(record);
  });
}

}  // namespace coremap
