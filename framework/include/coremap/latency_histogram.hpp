// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// A fixed-size log-bucket histogram of durations in nanoseconds: what the engine keeps per
/// stage and thread when RunOptions::measure is set, and what `coremap bench` reports
/// percentiles from.

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>

namespace coremap {

/// Durations in log buckets: values below 64 ns are exact; above, each power of two is split
/// into 32 buckets, so a percentile is reported at most 1/32 (3.1 %) above the true value and
/// never below it. record() is branch-light, allocation-free and lock-free; one histogram
/// belongs to one thread, and merge() combines them afterwards.
///
/// \code
/// coremap::LatencyHistogram h;
/// h.record(2'000'000);              // one 2 ms call
/// std::uint64_t p99 = h.percentile(0.99);
/// \endcode
///
/// Thread safety: none; keep one per thread and merge.
class LatencyHistogram {
 public:
  static constexpr int sub_bits = 5;
  static constexpr std::size_t sub_buckets = std::size_t{1} << sub_bits;
  static constexpr std::size_t bucket_count = (64 - sub_bits + 1) * sub_buckets;

  /// The bucket holding `ns`.
  static constexpr std::size_t bucket_of(std::uint64_t ns) noexcept {
    if (ns < 2 * sub_buckets) return static_cast<std::size_t>(ns);
    const auto shift = static_cast<unsigned>(std::bit_width(ns)) - 1 - sub_bits;
    return (shift + 1) * sub_buckets + static_cast<std::size_t>((ns >> shift) & (sub_buckets - 1));
  }
  /// The largest value bucket `index` holds.
  static constexpr std::uint64_t bucket_upper(std::size_t index) noexcept {
    if (index < 2 * sub_buckets) return index;
    const std::size_t shift = index / sub_buckets - 1;
    const std::uint64_t lower = (sub_buckets + index % sub_buckets) << shift;
    return lower + ((std::uint64_t{1} << shift) - 1);
  }

  /// Counts one duration.
  void record(std::uint64_t ns) noexcept {
    ++counts_[bucket_of(ns)];
    ++count_;
    sum_ += ns;
    max_ = std::max(max_, ns);
    min_ = std::min(min_, ns);
  }

  /// Adds `other`'s counts to this one.
  void merge(const LatencyHistogram& other) noexcept {
    for (std::size_t i = 0; i < bucket_count; ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ += other.sum_;
    max_ = std::max(max_, other.max_);
    min_ = std::min(min_, other.min_);
  }

  /// The count of every bucket: with sum(), min() and max(), all a histogram holds, so that
  /// from_parts() rebuilds it elsewhere (in another process, say).
  std::span<const std::uint64_t, bucket_count> buckets() const noexcept { return counts_; }
  /// The histogram whose buckets(), sum(), min() and max() these are.
  static LatencyHistogram from_parts(std::span<const std::uint64_t, bucket_count> buckets, std::uint64_t sum,
                                     std::uint64_t min, std::uint64_t max) noexcept {
    LatencyHistogram h;
    std::copy(buckets.begin(), buckets.end(), h.counts_.begin());
    for (std::uint64_t c : buckets) h.count_ += c;
    h.sum_ = sum;
    h.max_ = max;
    h.min_ = h.count_ == 0 ? std::numeric_limits<std::uint64_t>::max() : min;
    return h;
  }

  std::uint64_t count() const noexcept { return count_; }
  /// Sum of all recorded durations (exact).
  std::uint64_t sum() const noexcept { return sum_; }
  /// Largest recorded duration (exact); 0 when empty.
  std::uint64_t max() const noexcept { return max_; }
  /// Smallest recorded duration (exact); 0 when empty.
  std::uint64_t min() const noexcept { return count_ == 0 ? 0 : min_; }

  /// The nearest-rank `q` quantile (0 < q <= 1): the value v with ceil(q * count) recorded
  /// values at or below it, reported as its bucket's upper end capped at max(). 0 when empty.
  std::uint64_t percentile(double q) const noexcept {
    if (count_ == 0) return 0;
    const double wanted = std::ceil(std::clamp(q, 0.0, 1.0) * static_cast<double>(count_));
    const std::uint64_t rank = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(wanted));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < bucket_count; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::min(bucket_upper(i), max_);
    }
    return max_;
  }

 private:
  std::array<std::uint64_t, bucket_count> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t sum_ = 0;
  std::uint64_t max_ = 0;
  std::uint64_t min_ = std::numeric_limits<std::uint64_t>::max();
};

}  // namespace coremap
