// SPDX-License-Identifier: MIT
#pragma once

// The wire format between the engine and an isolated worker process (coremap-worker, see
// docs/reliability.md, "Crash isolation"). Every message is one frame:
//
//   u32 payload length (little-endian) | u8 kind | payload
//
// Payloads are fields of wire_encoding.hpp (little-endian integers, texts, items). Both ends
// reuse their buffers, so a steady run allocates nothing per frame.

#include <signal.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <coremap/manifest.hpp>

#include "wire_encoding.hpp"

namespace coremap::detail {

/// Out of band, engine -> worker: the run is stopping; the worker's Context::cancelled() turns
/// true. A real-time signal, as no plugin expects it; SIGRTMIN + 1 is the worker's
/// parent-death signal.
inline int worker_stop_signal() { return SIGRTMIN + 2; }

/// What a frame carries.
enum class FrameKind : std::uint8_t {
  setup = 'S',          ///< engine -> worker, first: u8 setup flags (SetupFlags), the resolved config as JSON text
  batch = 'B',          ///< engine -> worker: items to process (see encode_batch_header)
  ready = 'R',          ///< worker -> engine: plugin loaded, instance constructed
  setup_failed = 'F',   ///< worker -> engine: why the plugin could not be loaded or constructed
  result = 'r',         ///< worker -> engine: one item's outcome, in batch order
  out_of_memory = 'O',  ///< worker -> engine: an allocation failed; the worker is about to die
  /// worker -> engine, before a call retried in the worker (--retries): u32 the attempt it
  /// starts. The engine's deadline for the item (--timeout) starts again, and a crash in it is
  /// counted from that attempt.
  attempt = 'a',
};

/// The setup frame's first byte.
enum SetupFlags : std::uint8_t {
  /// The plugin reduces: every result frame carries the worker's partial state of the calls
  /// since the one before (save()), and the worker starts a fresh instance after each.
  setup_sends_state = 1u << 0,
};

/// A batch frame's mode byte: what its inputs are and what the worker answers with.
enum BatchMode : std::uint8_t {
  /// The inputs are JSON values an earlier stage made (their text is parsed as JSON), not
  /// manifest items.
  batch_values_in = 1u << 0,
  /// Every outcome comes back as values (ItemOutcome::values, call_error), for the engine to
  /// hand on as the in-process path does; without it a plain result comes back as its record
  /// (the last stage of a one-stage run into a Sink).
  batch_values_out = 1u << 1,
};

/// The outcome byte that starts a result frame's payload. With setup_sends_state a text
/// follows: the worker's partial state after the call (save(), as JSON text). Then the rest:
enum class ItemOutcome : std::uint8_t {
  ok_record = 0,     ///< the item's complete JSON Lines record, ok
  error_message = 1, ///< the item's error message ("<manifest>:<line>: ..."), complete
  error_record = 2,  ///< a complete JSON Lines error record (the result was not serialisable)
  /// The call's outputs: u8 emitted (1: Context::emit or drop was used, so these are the
  /// outputs; 0: one value, the result), u32 count, then per value u8 writable and a text: the
  /// value as JSON when writable, else why it cannot be written (writable_result).
  values = 3,
  /// The call failed: its bare error message; the engine says where (manifest, line, stage).
  call_error = 4,
};

inline constexpr std::size_t frame_header_size = 5;
/// Larger frames are refused as corrupt: the engine's batches stay far below (about 1 MiB of
/// manifest), a single huge item or result is the only way near it.
inline constexpr std::uint32_t max_frame_payload = std::uint32_t{1} << 30;

/// Builds frames into one reusable string: begin(), the payload's fields (WireWriter), end().
class FrameWriter : public WireWriter {
 public:
  /// Starts a frame; its length is filled in by end().
  void begin(FrameKind kind) {
    start_ = size();
    bytes(std::string_view("\0\0\0\0", 4));
    u8(static_cast<std::uint8_t>(kind));
  }
  void end() {
    const std::size_t length = size() - start_ - frame_header_size;
    if (length > max_frame_payload) throw ProtocolError("frame of " + std::to_string(length) + " bytes is too large");
    for (std::size_t i = 0; i < 4; ++i) buffer()[start_ + i] = static_cast<char>((length >> (8 * i)) & 0xFF);
  }

 private:
  std::size_t start_ = 0;
};

/// One decoded frame; `payload` points into the FrameReader's buffer and stays valid until the
/// reader is next given bytes.
struct Frame {
  FrameKind kind;
  std::string_view payload;
};

/// Reassembles frames from a byte stream read in arbitrary pieces.
class FrameReader {
 public:
  /// Space for at least `n` more bytes; write into it, then call commit() with the count.
  char* prepare(std::size_t n) {
    if (begin_ > 0 && begin_ == end_) begin_ = end_ = 0;
    if (begin_ > 0 && data_.size() - end_ < n) {
      std::memmove(data_.data(), data_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (data_.size() - end_ < n) data_.resize(end_ + n);
    return data_.data() + end_;
  }
  void commit(std::size_t n) noexcept { end_ += n; }
  /// Appends bytes (prepare + commit in one).
  void feed(std::string_view bytes) {
    std::memcpy(prepare(bytes.size()), bytes.data(), bytes.size());
    commit(bytes.size());
  }

  /// The next complete frame, or nothing until more bytes arrive. Throws ProtocolError on a
  /// length beyond max_frame_payload.
  std::optional<Frame> next() {
    const std::size_t available = end_ - begin_;
    if (available < frame_header_size) return std::nullopt;
    const auto* p = reinterpret_cast<const unsigned char*>(data_.data() + begin_);
    const std::uint32_t length = static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
                                 static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
    if (length > max_frame_payload) {
      throw ProtocolError("frame length " + std::to_string(length) + " exceeds the limit (corrupt stream)");
    }
    if (available < frame_header_size + length) return std::nullopt;
    Frame frame{static_cast<FrameKind>(p[4]), std::string_view(data_.data() + begin_ + frame_header_size, length)};
    begin_ += frame_header_size + length;
    return frame;
  }

  /// Bytes received but not yet returned as frames.
  std::size_t pending() const noexcept { return end_ - begin_; }

 private:
  std::string data_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

/// A frame's payload is read field by field.
using PayloadReader = WireReader;

/// A batch frame: u8 format, u8 mode (BatchMode), text manifest name, u32 count, then the
/// items (encode_item). Items [from, end) of `batch` are sent: after a crash the engine
/// resends the rest of a batch to the replacement worker.
inline void encode_batch(FrameWriter& out, const ItemBatch& batch, std::size_t from, std::string_view manifest_name,
                         ManifestFormat format, std::uint32_t first_attempt = 1, std::uint8_t mode = 0) {
  out.begin(FrameKind::batch);
  out.u8(static_cast<std::uint8_t>(format));
  out.u8(mode);
  out.text(manifest_name);
  out.u32(static_cast<std::uint32_t>(batch.items.size() - from));
  for (std::size_t i = from; i < batch.items.size(); ++i) {
    const RawItem& item = batch.items[i];
    // The attempt the worker starts this item at: above 1 when earlier attempts crashed it.
    encode_item(out, WireItem{item.index, item.line, item.malformed, i == from ? first_attempt : 1u, batch.text(item)});
  }
  out.end();
}

/// The header of a batch frame; the items follow in the reader (see next_batch_item).
struct BatchHeader {
  ManifestFormat format;
  std::uint8_t mode;  ///< BatchMode bits
  std::string_view manifest_name;
  std::uint32_t count;
};

inline BatchHeader decode_batch_header(PayloadReader& in) {
  const std::uint8_t format = in.u8();
  if (format > static_cast<std::uint8_t>(ManifestFormat::lines)) throw ProtocolError("unknown manifest format");
  const std::uint8_t mode = in.u8();
  if ((mode & ~(batch_values_in | batch_values_out)) != 0) throw ProtocolError("unknown batch mode");
  BatchHeader header{static_cast<ManifestFormat>(format), mode, in.text(), 0};
  header.count = in.u32();
  return header;
}

/// One item of a batch frame; `text` points into the frame.
inline WireItem decode_batch_item(PayloadReader& in) { return decode_item(in); }

/// "512M", "2G", "1536K" or plain bytes: how --memory-limit is shown in messages.
inline std::string format_size(std::uint64_t bytes) {
  constexpr const char* units = "KMGT";
  std::uint64_t value = bytes;
  int unit = -1;
  while (value != 0 && value % 1024 == 0 && unit < 3) {
    value /= 1024;
    ++unit;
  }
  return unit < 0 ? std::to_string(bytes) : std::to_string(value) + units[unit];
}

}  // namespace coremap::detail
