// SPDX-License-Identifier: MIT
#include <algorithm>
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <coremap/plugin.hpp>
#include <coremap/top_k.hpp>

/// A reduction over parsed requests ({"path", "status", "bytes", "hour"}, what `clf_parse`
/// returns): requests per status code, bytes per hour, the most requested paths, total requests
/// and bytes. Each thread's instance keeps full counts; merge() adds them and summary()
/// ranks the paths (count descending, then path in byte order), so the summary is the same at
/// any thread count. Every input is dropped: the run writes records only for values that failed.
class ClfStats {
 public:
  static constexpr coremap::ConfigKey config_keys[] = {
      {"top", "integer", "10", "how many of the most requested paths the summary lists"}};

  explicit ClfStats(const coremap::Json& config) : top_(config.at("top").get<std::int64_t>()) {
    if (top_ < 0) throw std::invalid_argument("config key \"top\" must be non-negative, got " + std::to_string(top_));
  }

  coremap::Json process(const coremap::Json& item, coremap::Context& context) {
    if (!item.is_object()) throw std::invalid_argument("item must be a parsed request (an object), got " + item.dump());
    const auto status = item.find("status");
    if (status == item.end() || !status->is_number_integer() || status->get<std::int64_t>() < 100 ||
        status->get<std::int64_t>() >= static_cast<std::int64_t>(statuses_.size())) {
      throw std::invalid_argument("item field \"status\" must be an integer from 100 to 599: " + item.dump());
    }
    const auto path = item.find("path");
    const auto hour = item.find("hour");
    if (path == item.end() || !path->is_string()) throw std::invalid_argument("item has no string field \"path\": " + item.dump());
    if (hour == item.end() || !hour->is_string()) throw std::invalid_argument("item has no string field \"hour\": " + item.dump());
    const auto size = item.find("bytes");
    std::uint64_t bytes = 0;  // "-" (null) counts as 0 bytes
    if (size != item.end() && !size->is_null()) {
      if (!size->is_number_integer() || size->get<std::int64_t>() < 0) throw std::invalid_argument("item field \"bytes\" must be a non-negative integer or null: " + item.dump());
      bytes = size->get<std::uint64_t>();
    }
    ++requests_;
    bytes_ += bytes;
    ++statuses_[status->get<std::size_t>()];
    ++paths_[path->get_ref<const std::string&>()];
    bytes_per_hour_[hour->get_ref<const std::string&>()] += bytes;
    context.drop();
    return nullptr;
  }

  void merge(ClfStats& other) {
    requests_ += other.requests_;
    bytes_ += other.bytes_;
    for (std::size_t s = 0; s < statuses_.size(); ++s) statuses_[s] += other.statuses_[s];
    for (const auto& [path, count] : other.paths_) paths_[path] += count;
    for (const auto& [hour, bytes] : other.bytes_per_hour_) bytes_per_hour_[hour] += bytes;
    other.requests_ = other.bytes_ = 0;
    other.statuses_.fill(0);
    other.paths_.clear();
    other.bytes_per_hour_.clear();
  }

  // The full counts, to cross processes (MPI ranks).
  coremap::Json save() const {
    return {{"requests", requests_}, {"bytes", bytes_}, {"statuses", statuses_}, {"paths", paths_},
            {"bytes_per_hour", bytes_per_hour_}};
  }
  void load(const coremap::Json& state) {
    requests_ = state.at("requests").get<std::uint64_t>();
    bytes_ = state.at("bytes").get<std::uint64_t>();
    statuses_ = state.at("statuses").get<std::array<std::uint64_t, 600>>();
    paths_ = state.at("paths").get<std::unordered_map<std::string, std::uint64_t>>();
    bytes_per_hour_ = state.at("bytes_per_hour").get<std::unordered_map<std::string, std::uint64_t>>();
  }

  coremap::Json summary() const {
    coremap::Json status = coremap::Json::object();  // keys in byte order: "200" < "304" < "404"
    for (std::size_t s = 0; s < statuses_.size(); ++s) {
      if (statuses_[s] != 0) status[std::to_string(s)] = statuses_[s];
    }
    coremap::Json hours = coremap::Json::object();  // "YYYY-MM-DD HH" sorts in time order
    for (const auto& [hour, bytes] : bytes_per_hour_) hours[hour] = bytes;

    coremap::Json top = coremap::Json::array();
    for (const auto* entry : coremap::top_k(paths_, static_cast<std::size_t>(top_))) {
      top.push_back({{"path", entry->first}, {"count", entry->second}});
    }

    return {{"requests", requests_},
            {"bytes", bytes_},
            {"status", std::move(status)},
            {"bytes_per_hour", std::move(hours)},
            {"distinct_paths", paths_.size()},
            {"top_paths", std::move(top)}};
  }

 private:
  std::int64_t top_;
  std::uint64_t requests_ = 0;
  std::uint64_t bytes_ = 0;
  std::array<std::uint64_t, 600> statuses_{};
  std::unordered_map<std::string, std::uint64_t> paths_;
  std::unordered_map<std::string, std::uint64_t> bytes_per_hour_;
};

COREMAP_PLUGIN(ClfStats, "clf_stats", "1.1.0",
               "reduces parsed requests to requests per status, bytes per hour and the top paths")
