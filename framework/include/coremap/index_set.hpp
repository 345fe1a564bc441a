// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// A set of item indices, one bit per index: the items an earlier run already recorded.

#include <cstdint>
#include <vector>

namespace coremap {

/// A growable bitset of item indices.
///
/// Thread safety: const members from any thread; insert() from one thread, not while readers run.
class IndexSet {
 public:
  bool contains(std::uint64_t index) const noexcept {
    const std::uint64_t word = index >> 6;
    return word < words_.size() && ((words_[word] >> (index & 63)) & 1u) != 0;
  }

  /// Adds `index`; returns false when it was already there.
  bool insert(std::uint64_t index) {
    const std::uint64_t word = index >> 6;
    if (word >= words_.size()) words_.resize(word + 1 + words_.size() / 2, 0);
    const std::uint64_t bit = std::uint64_t{1} << (index & 63);
    if ((words_[word] & bit) != 0) return false;
    words_[word] |= bit;
    ++count_;
    return true;
  }

  void erase(std::uint64_t index) noexcept {
    const std::uint64_t word = index >> 6;
    const std::uint64_t bit = std::uint64_t{1} << (index & 63);
    if (word < words_.size() && (words_[word] & bit) != 0) {
      words_[word] &= ~bit;
      --count_;
    }
  }

  /// How many indices the set holds.
  std::uint64_t size() const noexcept { return count_; }
  bool empty() const noexcept { return count_ == 0; }

  /// True when the set is exactly {0, 1, ..., size() - 1}.
  bool is_prefix() const noexcept {
    const std::uint64_t full = count_ >> 6;
    for (std::uint64_t w = 0; w < full; ++w) {
      if (words_[w] != ~std::uint64_t{0}) return false;
    }
    const unsigned rest = static_cast<unsigned>(count_ & 63);
    for (std::uint64_t w = full; w < words_.size(); ++w) {
      const std::uint64_t want = w == full && rest != 0 ? (std::uint64_t{1} << rest) - 1 : 0;
      if (words_[w] != want) return false;
    }
    return true;
  }

 private:
  std::vector<std::uint64_t> words_;
  std::uint64_t count_ = 0;
};

}  // namespace coremap
