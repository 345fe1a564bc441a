// SPDX-License-Identifier: MIT
// The stage runner: one stage over one batch. The first stage parses each item and calls its
// plugin through run_item (engine_impl.hpp); later stages take the values the one before made,
// whole or in chunks over several threads; the last stage writes the records into the batch.
// The per-item loop is run_stage's; everything here runs once per batch or per item, so it
// allocates nothing beyond the items' JSON and takes no lock.
#include <algorithm>
#include <chrono>
#include <optional>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <oneapi/tbb/parallel_for_each.h>

#include "engine_impl.hpp"
#include "item_parser.hpp"

namespace coremap {
namespace {

// What one call of a stage's plugin needs, reused from call to call within a batch.
struct CallScratch {
  using CallEmitter = detail::CallEmitter;
  explicit CallScratch(LatencyHistogram* timing) : emitter(emitted), latency(timing) {}
  CallScratch(const CallScratch&) = delete;
  CallScratch& operator=(const CallScratch&) = delete;
  Json result;
  std::string error;
  std::uint32_t attempts = 1;
  std::vector<Json> emitted;
  CallEmitter emitter;
  LatencyHistogram* latency;  // RunOptions::measure, else null
};

// RunOptions::cache, the first stage over one batch: each item parsed and keyed before any
// runs, so that all keys are looked up at once (ResultCache::lookup, one read transaction);
// the outcomes of the items run, stored at once at the end. Kept per thread from batch to
// batch (its buffers, not its items: they are cleared when the batch is done), in a per-thread
// free list rather than one per thread: a plugin that waits on TBB work inside process() can
// have its thread run another batch's first stage meanwhile.
struct CacheScratch {
  std::vector<Json> items;
  std::vector<std::uint8_t> parsed;  // 0: malformed or not parsed (the loop says why)
  std::vector<detail::ItemKey> keys;
  std::vector<const detail::ItemKey*> wanted;
  std::vector<std::uint8_t> hit;
  std::vector<std::string> outcomes;
  std::vector<detail::StoredOutcome> stores;
};

class CacheScratchLease {
 public:
  CacheScratchLease() {
    if (!free_list().empty()) {
      scratch_ = std::move(free_list().back());
      free_list().pop_back();
    } else {
      scratch_ = std::make_unique<CacheScratch>();
    }
  }
  ~CacheScratchLease() {
    scratch_->items.clear();
    free_list().push_back(std::move(scratch_));
  }
  CacheScratchLease(const CacheScratchLease&) = delete;
  CacheScratchLease& operator=(const CacheScratchLease&) = delete;
  CacheScratch* get() const noexcept { return scratch_.get(); }

 private:
  static std::vector<std::unique_ptr<CacheScratch>>& free_list() {
    thread_local std::vector<std::unique_ptr<CacheScratch>> list;
    return list;
  }
  std::unique_ptr<CacheScratch> scratch_;
};

}  // namespace

// run_stage for an isolated stage s: its inputs go to the calling thread's worker process
// (the raw items for the first stage, which the worker parses; the earlier stage's values as
// JSON text otherwise), and each outcome that comes back is handed on the way run_stage and
// run_values hand on a call's outputs. The worker answers with values (Context::emit and
// drop included), except in a one-stage run into a Sink, where a plain result comes back as
// its record. A reducing plugin's partial state of each call comes back with its outcome and
// is merged into the calling thread's instance of the stage (StageRuntime::merge_worker_state).
// A stop takes effect in the worker's item (Context::cancelled()) and at the next batch.
void Engine::Impl::run_stage_isolated(Batch& batch, std::size_t s, const std::string& manifest_name,
                                      ManifestFormat format) {
  StageRuntime& stage = *stages[s];
  const auto start = Clock::now();
  const bool last = s + 1 == stages.size();
  const bool check = checks_values(batch);
  const std::string stage_prefix = stages.size() > 1 ? "stage '" + stage.spec.name + "': " : "";
  std::uint8_t mode = 0;
  if (s > 0) mode |= detail::batch_values_in;
  if (s > 0 || !last || check) mode |= detail::batch_values_out;
  // A later stage's inputs: the values to run (not failed, not stopped), as JSON text, and
  // where each is in batch.values.
  ItemBatch values_in;
  std::vector<std::size_t> source_of;
  if (s > 0) {
    for (std::size_t i = 0; i < batch.values.size(); ++i) {
      const Value& value = batch.values[i];
      if (value.failed || value.stopped || s < value.skip_until) continue;
      const std::size_t offset = values_in.bytes.size();
      values_in.bytes += value.data.dump(-1, ' ', false, Json::error_handler_t::strict);
      values_in.items.push_back(RawItem{value.index, value.line, offset, values_in.bytes.size() - offset, false});
      source_of.push_back(i);
    }
  }
  const ItemBatch& inputs = s > 0 ? values_in : batch.raw;

  struct Collect final : detail::OutcomeHandler {
    Impl& impl;
    Batch& batch;
    StageRuntime& stage;
    std::size_t s;
    bool last;
    const ItemBatch& inputs;
    const std::vector<std::size_t>& source_of;
    const std::string& manifest_name;
    const std::string& stage_prefix;
    PluginInstance* merge_into = nullptr;
    std::size_t passed = 0;  // s > 0: batch.values before this are in batch.next
    Json value;
    Collect(Impl& i, Batch& b, StageRuntime& st, std::size_t stage_index, bool is_last, const ItemBatch& in,
            const std::vector<std::size_t>& sources, const std::string& manifest, const std::string& prefix)
        : impl(i), batch(b), stage(st), s(stage_index), last(is_last), inputs(in), source_of(sources),
          manifest_name(manifest), stage_prefix(prefix) {}

    std::string where(std::uint64_t line) const {
      return manifest_name + ":" + std::to_string(line) + ": " + stage_prefix;
    }
    // s > 0: the values before batch.values[end] that were not run go on untouched.
    void pass_until(std::size_t end) {
      for (; passed < end; ++passed) batch.next.push_back(std::move(batch.values[passed]));
    }
    void on_state(bool saved, std::string_view bytes) override {
      // Whether or not the run's stop cut the call short: what it added to the reduction is
      // in the state, as it would be in an instance in process.
      if (merge_into != nullptr) stage.merge_worker_state(*merge_into, saved, bytes);
    }
    void on_result(const RawItem& raw, detail::ItemOutcome outcome, std::string_view text,
                   std::uint32_t attempts) override {
      using detail::ItemOutcome;
      const auto k = static_cast<std::size_t>(&raw - inputs.items.data());
      bool fanned = false;
      if (s > 0) {
        pass_until(source_of[k]);
        fanned = batch.values[passed].fanned;
        ++passed;
        // An outcome that came back once the run was stopping: its item gets no record.
        if (impl.cut_short()) {
          batch.next.push_back(Value{raw.index, raw.line, fanned, false, 1, Json(), {}, true});
          return;
        }
      } else {
        if (impl.cut_short()) return;
        ++batch.items;
      }
      // One output (s > 0: a value for finish_stage; else through output_ok/output_error).
      auto error_out = [&](bool out_fanned, std::string message) {
        if (s > 0) {
          batch.next.push_back(Value{raw.index, raw.line, out_fanned, true, attempts, Json(), std::move(message)});
        } else {
          impl.output_error(batch, last, raw.index, raw.line, out_fanned, attempts, std::move(message));
        }
      };
      switch (outcome) {
        case ItemOutcome::ok_record:
        case ItemOutcome::error_record:
          if (batch.record_line(raw.index, outcome == ItemOutcome::ok_record, text)) {
            ++batch.ok;
          } else {
            ++batch.failed;
            impl.note_failure();
          }
          break;
        case ItemOutcome::error_message:
          error_out(fanned, std::string(text));
          break;
        case ItemOutcome::call_error:
          error_out(fanned, where(raw.line) + std::string(text));
          break;
        case ItemOutcome::values: {
          // Parsed with the frame checked by WorkerProcess; a value that is not JSON is the
          // worker's protocol error, and the item's.
          try {
            detail::PayloadReader payload(text);
            const bool emitted = payload.u8() != 0;
            const std::uint32_t count = payload.u32();
            for (std::uint32_t v = 0; v < count; ++v) {
              const bool writable = payload.u8() != 0;
              const std::string_view data = payload.text();
              const bool out_fanned = emitted || fanned;
              if (!writable) {
                error_out(out_fanned, where(raw.line) + std::string(data));
                continue;
              }
              value = Json::parse(data);
              if (s > 0) {
                batch.next.push_back(Value{raw.index, raw.line, out_fanned, false, attempts, std::move(value), {}});
              } else {
                impl.output_ok(batch, last, raw.index, raw.line, out_fanned, attempts, value);
              }
            }
          } catch (const std::exception& e) {
            error_out(fanned, where(raw.line) + "worker protocol error: a malformed result (" + e.what() + ")");
          }
          break;
        }
      }
    }
  } collect(*this, batch, stage, s, last, inputs, source_of, manifest_name, stage_prefix);

  std::optional<StageRuntime::Lease> instance;
  if (stage.reduces) {
    instance.emplace(stage);
    collect.merge_into = &**instance;
  }
  if (!stop.load(std::memory_order_relaxed) && !inputs.items.empty()) {
    detail::WorkerPool::Lease worker(*stage.workers);
    (*worker).run(inputs, manifest_name, format, collect, mode);
  }
  if (s == 0) {
    batch.not_run += batch.raw.items.size() - batch.items;
    batch.values.clear();
    if (!last) std::swap(batch.values, batch.next);
  } else {
    // The values the stop left without an outcome: their items get no record.
    for (; collect.passed < batch.values.size(); ++collect.passed) {
      Value& value = batch.values[collect.passed];
      if (value.failed || value.stopped || s < value.skip_until) {
        batch.next.push_back(std::move(value));
      } else {
        batch.next.push_back(Value{value.index, value.line, value.fanned, false, 1, Json(), {}, true});
      }
    }
    finish_stage(batch, s);
  }
  batch.work_ns += elapsed_ns(start);
}

std::string Engine::Impl::timed_out_message(std::int64_t took_ns) const {
  char text[128];
  std::snprintf(text, sizeof text, "timed out: ran %.3f s, over --timeout %g s (its result was discarded)",
                static_cast<double>(took_ns) / 1e9, static_cast<double>(options.timeout.count()) / 1e3);
  return text;
}

// One output of a stage: a record when the stage is the last, else the next stage's input.
void Engine::Impl::output_ok(Batch& batch, bool last, std::uint64_t index, std::uint64_t line, bool fanned,
               std::uint32_t attempts, Json& data) {
  if (!last) {
    batch.next.push_back(Value{index, line, fanned, false, attempts, std::move(data), {}});
  } else if (batch.record_ok(index, data, attempts, fanned, line)) {
    ++batch.ok;
  } else {
    ++batch.failed;
    note_failure();
  }
}

void Engine::Impl::output_error(Batch& batch, bool last, std::uint64_t index, std::uint64_t line, bool fanned,
                  std::uint32_t attempts, std::string message) {
  if (!last) {
    batch.next.push_back(Value{index, line, fanned, true, attempts, Json(), std::move(message)});
    return;
  }
  batch.record_error(index, std::move(message), attempts, fanned);
  ++batch.failed;
  note_failure();
}

// Runs stage `s` over a batch: the raw items for the first stage (parsed here, in parallel),
// the previous stage's outputs otherwise.
void Engine::Impl::run_stage(Batch& batch, std::size_t s, PluginInstance& instance, const std::string& manifest_name,
               ManifestFormat format) {
  const auto start = Clock::now();
  const bool last = s + 1 == stages.size();
  if (s > 0) {
    run_values(batch, s, instance, 0, batch.values.size(), batch.next, manifest_name);
    finish_stage(batch, s);
    batch.work_ns += elapsed_ns(start);
    return;
  }
  const std::string& stage_name = stages[s]->spec.name;
  const bool name_stage = stages.size() > 1;
  Json item;
  CallScratch call(options.measure ? &stages[s]->latency.local() : nullptr);
  // References, not a structured binding: lambdas below capture them (clang 14 cannot
  // capture a binding).
  Json& result = call.result;
  std::string& error = call.error;
  std::uint32_t& attempts = call.attempts;
  std::vector<Json>& emitted = call.emitted;
  CallEmitter& emitter = call.emitter;
  LatencyHistogram* const latency = call.latency;
  auto where = [&](std::uint64_t line) {
    return manifest_name + ":" + std::to_string(line) + ": " + (name_stage ? "stage '" + stage_name + "': " : "");
  };
  const bool check = checks_values(batch);
  std::string why;
  auto hand_on = [&](std::uint64_t index, std::uint64_t line, bool fanned, Json& value) {
    if (check && !writable_result(value, why)) {
      output_error(batch, last, index, line, fanned, attempts, where(line) + why);
    } else {
      output_ok(batch, last, index, line, fanned, attempts, value);
    }
  };
  // RunOptions::cache (else null, and the loop below takes no other branch for it): the
  // batch's keys and lookups, and whether this stage is the last cached one (then it stores
  // the outcomes of the items it runs itself).
  detail::ResultCache* const result_cache = cache.get();
  std::optional<CacheScratchLease> lease;
  if (result_cache != nullptr) lease.emplace();
  CacheScratch* const scratch = lease ? lease->get() : nullptr;
  const bool stores_here = result_cache != nullptr && cached_stages == 1;
  std::vector<detail::CachedValue> replayed;
  // The outcome of the call that just returned, stored unless a failure is not to be. True
  // when it is one result stored as its record's text ("r" and the text): then that text is
  // also what the record writer would write for it.
  auto store_outcome = [&](bool ok, detail::ItemKey& key) {
    if (!ok && (!result_cache->options().failures || (options.timeout.count() != 0 && error.starts_with("timed out: ")))) {
      result_cache->counters.not_stored.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    // A result that cannot be written is that item's error record (hand_on): not stored.
    bool writable = true;
    if (ok && !emitter.used) writable = writable_result(result, why);
    for (std::size_t v = 0; ok && emitter.used && writable && v < emitted.size(); ++v) writable = writable_result(emitted[v], why);
    if (!writable) {
      result_cache->counters.not_stored.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    std::string outcome;
    const bool as_text = ok && !emitter.used && attempts == 1;
    if (as_text) {
      // Appended, not "r" + dump(): GCC 12 at -O3 warns of an overlapping memcpy in
      // operator+(const char*, string&&) (a false -Wrestrict, GCC bug 105651), an error in CI.
      outcome = "r";
      outcome += result.dump(-1, ' ', false, Json::error_handler_t::strict);
    } else {
      std::vector<detail::CachedValue> values;
      if (!ok) {
        values.push_back(
            detail::CachedValue{false, true, attempts, Json(), (name_stage ? "stage '" + stage_name + "': " : "") + error});
      } else if (!emitter.used) {
        values.push_back(detail::CachedValue{false, false, attempts, result, {}});
      } else {
        for (const Json& value : emitted) values.push_back(detail::CachedValue{true, false, attempts, value, {}});
      }
      outcome = detail::encode_outcome(values);
    }
    scratch->stores.push_back(detail::StoredOutcome{std::move(key), std::move(outcome)});
    return as_text;
  };
  // Hands on a stored outcome: through this stage's own hand-on when it is the last cached
  // one, else as values the later cached stages pass on untouched.
  // False when the stored text does not decode (a corrupt entry: the item runs).
  auto replay = [&](std::uint64_t index, std::uint64_t line, const std::string& stored) {
    if (last && stored.front() == 'r' && !batch.as_records && !check) {
      // The common case, a one-stage run into a Sink: the result's text as stored is what the
      // serializer would write.
      batch.record_ok_text(index, std::string_view(stored).substr(1));
      ++batch.ok;
      return true;
    }
    if (!detail::decode_outcome(stored, replayed)) {
      result_cache->corrupt_entry();
      return false;
    }
    const std::string prefix = manifest_name + ":" + std::to_string(line) + ": ";
    for (detail::CachedValue& value : replayed) {
      attempts = value.attempts;
      if (cached_stages > 1) {
        batch.next.push_back(Value{index, line, value.fanned, value.failed, value.attempts, std::move(value.data),
                                   value.failed ? prefix + value.error : std::string(), false,
                                   static_cast<std::uint32_t>(cached_stages)});
      } else if (value.failed) {
        output_error(batch, last, index, line, value.fanned, value.attempts, prefix + value.error);
      } else {
        hand_on(index, line, value.fanned, value.data);
      }
    }
    return true;
  };
  // Processes one input and hands on its outputs: the emitted values, or the result; none
  // when the run's stop cut it short (false then).
  auto apply = [&](std::uint64_t index, std::uint64_t line, bool fanned, const Json& input, detail::ItemKey* key) {
    const bool ok = run_item_measured(latency, instance, index, input, result, error, attempts, &emitter);
    if (cut_short()) return false;
    if (stores_here && store_outcome(ok, *key) && last && !batch.as_records) {
      // The result was serialized once, to be stored: the record takes that text.
      batch.record_ok_text(index, std::string_view(scratch->stores.back().outcome).substr(1));
      ++batch.ok;
    } else if (!ok) {
      output_error(batch, last, index, line, fanned, attempts, where(line) + error);
    } else if (!emitter.used) {
      hand_on(index, line, fanned, result);
    } else {
      for (Json& value : emitted) hand_on(index, line, true, value);
    }
    return true;
  };
  const std::size_t count = batch.raw.items.size();
  if (scratch != nullptr) {
    // Every item parsed and keyed, then all keys looked up at once.
    CacheScratch& c = *scratch;
    c.items.resize(count);
    c.parsed.assign(count, 0);
    if (c.keys.size() < count) c.keys.resize(count);
    c.wanted.assign(count, nullptr);
    for (std::size_t i = 0; i < count; ++i) {
      const RawItem& raw = batch.raw.items[i];
      if (raw.malformed || !detail::parse_item(batch.raw.text(raw), raw.line, format, manifest_name, c.items[i], error)) {
        continue;
      }
      c.parsed[i] = 1;
      result_cache->key_of(c.items[i], c.keys[i]);
      c.wanted[i] = &c.keys[i];
    }
    result_cache->lookup(c.wanted, c.hit, c.outcomes);
  }
  for (std::size_t i = 0; i < count; ++i) {
    const RawItem& raw = batch.raw.items[i];
    if (stop.load(std::memory_order_relaxed)) {
      batch.not_run += count - i;
      break;
    }
    const std::string_view text = batch.raw.text(raw);
    if (raw.malformed) {
      output_error(batch, last, raw.index, raw.line, false, 1,
                   manifest_name + ":" + std::to_string(raw.line) + ": " + std::string(text));
    } else if (scratch == nullptr) {
      if (!detail::parse_item(text, raw.line, format, manifest_name, item, error)) {
        output_error(batch, last, raw.index, raw.line, false, 1, error);
      } else if (!apply(raw.index, raw.line, false, item, nullptr)) {
        batch.not_run += count - i;
        break;
      }
    } else if (scratch->parsed[i] == 0) {
      detail::parse_item(text, raw.line, format, manifest_name, item, error);  // again, for its message
      output_error(batch, last, raw.index, raw.line, false, 1, error);
    } else if (scratch->hit[i] != 0 && replay(raw.index, raw.line, scratch->outcomes[i])) {
      ++batch.cache_hits;
    } else {
      ++batch.cache_misses;
      detail::ItemKey& key = scratch->keys[i];
      if (!stores_here) batch.cache_pending.push_back(detail::PendingEntry{raw.index, key});
      if (!apply(raw.index, raw.line, false, scratch->items[i], &key)) {
        if (!stores_here) batch.cache_pending.pop_back();
        batch.not_run += count - i;
        break;
      }
    }
    ++batch.items;
  }
  if (scratch != nullptr) {
    scratch->items.clear();
    if (!scratch->stores.empty()) result_cache->store(scratch->stores);
  }
  batch.values.clear();
  if (!last) std::swap(batch.values, batch.next);
  batch.work_ns += elapsed_ns(start);
}

// Stage s > 0 over the previous stage's outputs [first, end): its own outputs are appended to
// `out` as values (records are written by finish_stage). Chunks of one batch may run on
// several threads at once, each with its own instance and its own `out`.
void Engine::Impl::run_values(Batch& batch, std::size_t s, PluginInstance& instance, std::size_t first, std::size_t end,
                std::vector<Value>& out, const std::string& manifest_name) {
  const std::string& stage_name = stages[s]->spec.name;
  CallScratch call(options.measure ? &stages[s]->latency.local() : nullptr);
  auto where = [&](std::uint64_t line) {
    return manifest_name + ":" + std::to_string(line) + ": stage '" + stage_name + "': ";
  };
  std::string why;
  // A value that cannot be written fails here, naming this stage, and reaches no later one.
  auto hand_on = [&](const Value& from, bool fanned, Json& data) {
    if (!writable_result(data, why)) {
      out.push_back(Value{from.index, from.line, fanned, true, call.attempts, Json(), where(from.line) + why});
    } else {
      out.push_back(Value{from.index, from.line, fanned, false, call.attempts, std::move(data), {}});
    }
  };
  for (std::size_t i = first; i < end; ++i) {
    Value& value = batch.values[i];
    if (value.failed || value.stopped || s < value.skip_until) {
      out.push_back(std::move(value));
      continue;
    }
    // Once the run is stopping nothing more is started: the value's item gets no record.
    const bool ok = !should_stop() && run_item_measured(call.latency, instance, value.index, value.data, call.result,
                                                        call.error, call.attempts, &call.emitter);
    if (cut_short()) {
      out.push_back(Value{value.index, value.line, value.fanned, false, 1, Json(), {}, true});
    } else if (!ok) {
      out.push_back(Value{value.index, value.line, value.fanned, true, call.attempts, Json(), where(value.line) + call.error});
    } else if (!call.emitter.used) {
      hand_on(value, value.fanned, call.result);
    } else {
      for (Json& emitted_value : call.emitted) hand_on(value, true, emitted_value);
    }
  }
}

// After stage s > 0 ran over the whole batch (its outputs in batch.next): hands them to the
// next stage, or, after the last stage, writes them as records in order.
void Engine::Impl::finish_stage(Batch& batch, std::size_t s) {
  if (s + 1 == cached_stages) store_cached(batch, s);
  batch.values.clear();
  if (s + 1 < stages.size()) {
    std::swap(batch.values, batch.next);
    return;
  }
  // An item's values are adjacent: all of them are written, or, when the stop cut any of them
  // short, none (a resumed run then processes the item whole, never half of its fan-out).
  for (std::size_t i = 0, n = batch.next.size(); i < n;) {
    std::size_t end = i;
    bool cut = false;
    for (; end < n && batch.next[end].index == batch.next[i].index; ++end) cut = cut || batch.next[end].stopped;
    if (cut) {
      --batch.items;
      ++batch.not_run;
      i = end;
      continue;
    }
    for (; i < end; ++i) {
      Value& value = batch.next[i];
      if (value.failed) {
        output_error(batch, true, value.index, value.line, value.fanned, value.attempts, std::move(value.error));
      } else {
        output_ok(batch, true, value.index, value.line, value.fanned, value.attempts, value.data);
      }
    }
  }
  batch.next.clear();
}

// RunOptions::cache, after the last cached stage s > 0 ran over a batch: stores the outcomes
// of the batch's items that were run (batch.cache_pending) from its outputs (batch.next, an
// item's values adjacent and in index order, as the pending keys are).
void Engine::Impl::store_cached(Batch& batch, std::size_t) {
  const std::vector<Value>& outputs = batch.next;
  const std::size_t n = outputs.size();
  std::size_t v = 0;
  std::vector<detail::CachedValue> values;
  std::vector<detail::StoredOutcome> stores;
  for (detail::PendingEntry& pending : batch.cache_pending) {
    while (v < n && outputs[v].index < pending.index) ++v;
    bool storable = true;
    values.clear();
    for (; v < n && outputs[v].index == pending.index; ++v) {
      const Value& value = outputs[v];
      if (value.stopped) storable = false;
      if (value.failed) {
        // Errors are stored without their "manifest:line: ", which the replay writes anew.
        const std::string prefix = std::string(batch.source) + ":" + std::to_string(value.line) + ": ";
        if (!cache->options().failures || !value.error.starts_with(prefix) ||
            value.error.find(": timed out: ran ") != std::string::npos) {
          storable = false;
        } else {
          values.push_back(detail::CachedValue{value.fanned, true, value.attempts, Json(), value.error.substr(prefix.size())});
        }
      } else {
        values.push_back(detail::CachedValue{value.fanned, false, value.attempts, value.data, {}});
      }
    }
    if (storable) {
      stores.push_back(detail::StoredOutcome{std::move(pending.key), detail::encode_outcome(values)});
    } else {
      cache->counters.not_stored.fetch_add(1, std::memory_order_relaxed);
    }
  }
  batch.cache_pending.clear();
  if (!stores.empty()) cache->store(stores);
}

// Stage s over a batch's values in chunks on the arena's threads (splits(s)), each chunk with
// the calling thread's instance; outputs joined in order.
void Engine::Impl::run_stage_split(Batch& batch, std::size_t s, const std::string& manifest_name) {
  const auto start = Clock::now();
  const std::size_t n = batch.values.size();
  const std::size_t chunks = std::min(n, 4 * threads);
  std::vector<std::vector<Value>> outs(chunks);
  auto body = [&](std::vector<Value>& out) {
    detail::taken_over(&detail::run_start_key);  // before anything reads the closure
    detail::TbbBody tbb_body(&batch);
    const auto c = static_cast<std::size_t>(&out - outs.data());
    StageRuntime::Lease lease(*stages[s]);
    run_values(batch, s, *lease, n * c / chunks, n * (c + 1) / chunks, out, manifest_name);
  };
  // TBB's threads read `body` (taken by reference) where this thread built it.
  detail::handed_over(&detail::run_start_key);
  tbb::parallel_for_each(outs.begin(), outs.end(), body);
  detail::taken_over(&batch);  // the chunks' outputs, written on other threads
  join_chunks(batch, outs);
  finish_stage(batch, s);
  batch.work_ns += elapsed_ns(start);
}

void Engine::Impl::join_chunks(Batch& batch, std::vector<std::vector<Value>>& outs) {
  batch.next.clear();
  for (auto& chunk : outs) {
    for (Value& value : chunk) batch.next.push_back(std::move(value));
  }
}

}  // namespace coremap
