// SPDX-License-Identifier: MIT
#include <coremap/latency_histogram.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include <gtest/gtest.h>

namespace coremap {
namespace {

// The oracle: nearest-rank percentile of a sorted copy.
std::uint64_t nearest_rank(std::vector<std::uint64_t> values, double q) {
  std::sort(values.begin(), values.end());
  const auto rank = static_cast<std::size_t>(std::max(1.0, std::ceil(q * static_cast<double>(values.size()))));
  return values[rank - 1];
}

// The histogram's answer is never below the true value and at most 1/32 above it.
void expect_close(const LatencyHistogram& h, const std::vector<std::uint64_t>& values, double q) {
  const std::uint64_t truth = nearest_rank(values, q);
  const std::uint64_t got = h.percentile(q);
  EXPECT_GE(got, truth) << "q=" << q;
  EXPECT_LE(static_cast<double>(got), static_cast<double>(truth) * (1.0 + 1.0 / 32.0)) << "q=" << q;
}

TEST(LatencyHistogramTest, PercentilesMatchASortedVectorOracle) {
  std::mt19937_64 random(42);
  // Log-uniform from 1 ns to about 10 s, as real call durations spread.
  std::uniform_real_distribution<double> exponent(0.0, 10.0);
  for (std::size_t n : {1u, 2u, 7u, 100u, 1000u, 100000u}) {
    LatencyHistogram h;
    std::vector<std::uint64_t> values;
    for (std::size_t i = 0; i < n; ++i) {
      const auto v = static_cast<std::uint64_t>(std::pow(10.0, exponent(random)));
      values.push_back(v);
      h.record(v);
    }
    for (double q : {0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0}) expect_close(h, values, q);
    EXPECT_EQ(h.count(), n);
    EXPECT_EQ(h.max(), *std::max_element(values.begin(), values.end()));
    EXPECT_EQ(h.min(), *std::min_element(values.begin(), values.end()));
    std::uint64_t sum = 0;
    for (std::uint64_t v : values) sum += v;
    EXPECT_EQ(h.sum(), sum);
    EXPECT_EQ(h.percentile(1.0), h.max());
  }
}

TEST(LatencyHistogramTest, SmallValuesAreExact) {
  LatencyHistogram h;
  std::vector<std::uint64_t> values;
  for (std::uint64_t v = 0; v < 64; ++v) {
    values.push_back(v);
    h.record(v);
  }
  for (double q : {0.1, 0.5, 0.77, 1.0}) EXPECT_EQ(h.percentile(q), nearest_rank(values, q));
}

TEST(LatencyHistogramTest, MergeEqualsRecordingEverythingInOne) {
  std::mt19937_64 random(7);
  std::uniform_int_distribution<std::uint64_t> duration(1000, 5'000'000);
  LatencyHistogram a, b, all;
  std::vector<std::uint64_t> values;
  for (int i = 0; i < 5000; ++i) {
    const std::uint64_t v = duration(random);
    (i % 3 == 0 ? a : b).record(v);
    all.record(v);
    values.push_back(v);
  }
  a.merge(b);
  for (double q : {0.5, 0.95, 0.99}) {
    EXPECT_EQ(a.percentile(q), all.percentile(q));
    expect_close(a, values, q);
  }
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.sum(), all.sum());
  EXPECT_EQ(a.max(), all.max());
}

TEST(LatencyHistogramTest, FromPartsRebuildsTheSameHistogram) {
  std::mt19937_64 random(11);
  std::uniform_int_distribution<std::uint64_t> duration(1, 50'000'000);
  LatencyHistogram h;
  std::vector<std::uint64_t> values;
  for (int i = 0; i < 3000; ++i) {
    values.push_back(duration(random));
    h.record(values.back());
  }
  // As another process would rebuild it: the bucket counts and the totals, copied out.
  const std::vector<std::uint64_t> counts(h.buckets().begin(), h.buckets().end());
  const LatencyHistogram copy = LatencyHistogram::from_parts(
      std::span<const std::uint64_t, LatencyHistogram::bucket_count>(counts.data(), counts.size()), h.sum(), h.min(),
      h.max());
  EXPECT_EQ(copy.count(), values.size());
  EXPECT_EQ(copy.min(), *std::min_element(values.begin(), values.end()));
  EXPECT_EQ(copy.max(), *std::max_element(values.begin(), values.end()));
  for (double q : {0.5, 0.95, 0.99}) expect_close(copy, values, q);
  const LatencyHistogram empty = LatencyHistogram::from_parts(LatencyHistogram().buckets(), 0, 0, 0);
  EXPECT_EQ(empty.count(), 0u);
  EXPECT_EQ(empty.min(), 0u);
  LatencyHistogram merged = empty;
  merged.merge(copy);
  EXPECT_EQ(merged.min(), copy.min());
}

TEST(LatencyHistogramTest, ExtremesAndEmpty) {
  LatencyHistogram h;
  EXPECT_EQ(h.percentile(0.5), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.min(), 0u);
  h.record(UINT64_MAX);
  EXPECT_EQ(h.percentile(0.5), UINT64_MAX);
  EXPECT_LT(LatencyHistogram::bucket_of(UINT64_MAX), LatencyHistogram::bucket_count);
  // Every bucket's upper end maps back to that bucket, and the next value to the next one.
  for (std::size_t i = 0; i + 1 < LatencyHistogram::bucket_count; ++i) {
    ASSERT_EQ(LatencyHistogram::bucket_of(LatencyHistogram::bucket_upper(i)), i);
    ASSERT_EQ(LatencyHistogram::bucket_of(LatencyHistogram::bucket_upper(i) + 1), i + 1);
  }
}

}  // namespace
}  // namespace coremap
