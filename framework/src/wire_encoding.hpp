// SPDX-License-Identifier: MIT
#pragma once

// Wire encoding, the one implementation behind every byte message coremap sends between
// processes: the frames to and from an isolated worker process (worker_protocol.hpp) and the
// messages between MPI ranks (framework/mpi). Fields are fixed-width little-endian integers
// (u8, u32, u64), raw bytes, and text (a u32 length, then the bytes); an item is its index,
// manifest line, malformed flag, first attempt and text. Tested alone in
// tests/wire_encoding_test.cpp.

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace coremap::detail {

/// A malformed message: it ends early, or the peer is not speaking the protocol.
class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Appends fields to one reusable string.
class WireWriter {
 public:
  void u8(std::uint8_t v) { data_.push_back(static_cast<char>(v)); }
  void u32(std::uint32_t v) { put(v, 4); }
  void u64(std::uint64_t v) { put(v, 8); }
  void bytes(std::string_view v) { data_.append(v); }
  /// A u32 length, then the bytes. Throws ProtocolError beyond 4 GiB - 1.
  void text(std::string_view v) {
    if (v.size() > UINT32_MAX) throw ProtocolError("a text of " + std::to_string(v.size()) + " bytes is too long to send");
    u32(static_cast<std::uint32_t>(v.size()));
    bytes(v);
  }
  /// Overwrites the u64 at byte `at` (a count known only after what follows was written).
  void patch_u64(std::size_t at, std::uint64_t v) {
    for (std::size_t i = 0; i < 8; ++i) data_[at + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  }
  /// Everything written since the last clear().
  std::string_view data() const noexcept { return data_; }
  std::size_t size() const noexcept { return data_.size(); }
  void clear() noexcept { data_.clear(); }
  /// The string itself, to send or move away (clear() before reusing the writer).
  std::string& buffer() noexcept { return data_; }

 private:
  void put(std::uint64_t v, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) data_.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  }
  std::string data_;
};

/// Reads fields in order from bytes it does not own; throws ProtocolError when they end early.
class WireReader {
 public:
  explicit WireReader(std::string_view bytes) noexcept : rest_(bytes) {}
  std::uint8_t u8() { return static_cast<std::uint8_t>(get(1)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(get(4)); }
  std::uint64_t u64() { return get(8); }
  std::string_view bytes(std::size_t n) {
    need(n);
    const std::string_view v = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return v;
  }
  std::string_view text() { return bytes(u32()); }
  std::string_view rest() noexcept { return std::exchange(rest_, std::string_view()); }
  bool empty() const noexcept { return rest_.empty(); }

 private:
  void need(std::size_t n) const {
    if (rest_.size() < n) throw ProtocolError("truncated payload");
  }
  std::uint64_t get(std::size_t n) {
    need(n);
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(rest_[i])) << (8 * i);
    rest_.remove_prefix(n);
    return v;
  }
  std::string_view rest_;
};

/// One manifest item on the wire; `text` points into the message it was read from.
struct WireItem {
  std::uint64_t index;
  std::uint64_t line;
  bool malformed;
  std::uint32_t first_attempt;  ///< above 1 when earlier attempts crashed a worker process
  std::string_view text;
};

/// u64 index, u64 line, u8 malformed, u32 first attempt, text.
inline void encode_item(WireWriter& out, const WireItem& item) {
  out.u64(item.index);
  out.u64(item.line);
  out.u8(item.malformed ? 1 : 0);
  out.u32(item.first_attempt);
  out.text(item.text);
}

inline WireItem decode_item(WireReader& in) {
  WireItem item{};
  item.index = in.u64();
  item.line = in.u64();
  item.malformed = in.u8() != 0;
  item.first_attempt = in.u32();
  item.text = in.text();
  return item;
}

}  // namespace coremap::detail
