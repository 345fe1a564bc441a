// SPDX-License-Identifier: MIT
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <coremap/plugin.hpp>
#include <coremap/top_k.hpp>

/// A reduction: counts the values of one field over every item and summarises the most
/// frequent. Each thread's instance counts its share; merge() adds the counts, so the
/// summary is the same at any thread count: {"field", "items", "distinct", "top": [{"key",
/// "count"}, ...]}, most frequent first, ties by key in byte order. Items pass through
/// (`pass`) or are dropped, so a pipeline that only aggregates writes no records.
class TopKeys {
 public:
  static constexpr coremap::ConfigKey config_keys[] = {
      {"field", "string", "\"text\"", "item field whose values are counted (a non-string value counts as its JSON text)"},
      {"top", "integer", "10", "how many of the most frequent values the summary lists"},
      {"pass", "boolean", "false", "return each item unchanged instead of dropping it"}};

  explicit TopKeys(const coremap::Json& config)
      : field_(config.at("field").get<std::string>()),
        top_(config.at("top").get<std::int64_t>()),
        pass_(config.at("pass").get<bool>()) {
    if (top_ < 0) throw std::invalid_argument("config key \"top\" must be non-negative");
  }

  coremap::Json process(const coremap::Json& item, coremap::Context& context) {
    if (!item.is_object()) throw std::invalid_argument("item must be an object with a \"" + field_ + "\" field");
    const auto it = item.find(field_);
    if (it == item.end()) throw std::invalid_argument("item has no \"" + field_ + "\" field");
    if (it->is_string()) {
      ++counts_[it->get_ref<const std::string&>()];
    } else {
      ++counts_[it->dump()];
    }
    ++items_;
    if (pass_) return item;
    context.drop();
    return nullptr;
  }

  void merge(TopKeys& other) {
    items_ += other.items_;
    for (auto& [key, count] : other.counts_) counts_[key] += count;
    other.counts_.clear();
    other.items_ = 0;
  }

  // The full counts, to cross processes (MPI ranks): {"items", "counts": {key: count}}.
  coremap::Json save() const { return {{"items", items_}, {"counts", counts_}}; }
  void load(const coremap::Json& state) {
    items_ = state.at("items").get<std::uint64_t>();
    counts_ = state.at("counts").get<std::unordered_map<std::string, std::uint64_t>>();
  }

  coremap::Json summary() {
    coremap::Json top = coremap::Json::array();
    for (const auto* entry : coremap::top_k(counts_, static_cast<std::size_t>(top_))) {
      top.push_back({{"key", entry->first}, {"count", entry->second}});
    }
    return {{"field", field_}, {"items", items_}, {"distinct", counts_.size()}, {"top", std::move(top)}};
  }

 private:
  std::string field_;
  std::int64_t top_;
  bool pass_;
  std::uint64_t items_ = 0;
  std::unordered_map<std::string, std::uint64_t> counts_;
};

COREMAP_PLUGIN(TopKeys, "topkeys", "1.1.0", "counts the values of a field over all items; summary: the most frequent")
