// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Streaming manifest reader. It only cuts the input into items (lines, or the top-level
/// elements of one JSON array) and never parses them: parsing happens in the engine's
/// parallel stage. Memory is one read buffer plus whatever batch the caller asks for, however
/// long the manifest is.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <coremap/export.hpp>
#include <coremap/plugin.hpp>

namespace coremap {

/// How a manifest lists its items.
enum class ManifestFormat {
  automatic,   ///< decided from the file name, then the first non-blank byte
  jsonl,       ///< JSON Lines: one JSON value a line
  json_array,  ///< one JSON array; each top-level element is an item
  lines,       ///< a plain list: each non-blank line becomes {"path": "<line>"}
};

/// "auto", "jsonl", "json" or "lines".
COREMAP_EXPORT std::string_view to_string(ManifestFormat format) noexcept;

/// Parses "auto", "jsonl" (or "ndjson"), "json" (or "array"), "lines" (or "list", "paths");
/// throws UsageError otherwise.
COREMAP_EXPORT ManifestFormat parse_manifest_format(std::string_view name);

/// One item cut from a manifest, its bytes stored in the owning ItemBatch.
struct RawItem {
  std::uint64_t index;  ///< 0-based position among the manifest's items
  std::uint64_t line;   ///< 1-based line of the manifest where the item starts
  std::size_t offset;   ///< into ItemBatch::bytes
  std::size_t size;
  bool malformed;       ///< the bytes are a structural error message, not item text
};

/// A run of consecutive items and their bytes. Reused from batch to batch so that a steady
/// run allocates nothing here.
struct ItemBatch {
  std::string bytes;
  std::vector<RawItem> items;

  void clear() noexcept {
    bytes.clear();
    items.clear();
  }
  std::string_view text(const RawItem& item) const noexcept {
    return std::string_view(bytes).substr(item.offset, item.size);
  }
};

/// Where the engine takes its items from: a manifest file (ManifestReader), or anything else
/// that hands out raw items in batches, e.g. chunks received from another process.
///
/// Thread safety: one thread at a time (the engine calls it from its serial input stage).
class COREMAP_EXPORT BatchSource {
 public:
  virtual ~BatchSource();
  /// Clears `batch` and fills it with the next items: at most `max_items`, and stops adding
  /// once `max_bytes` are stored (a batch always takes at least one item, however long).
  /// Returns false when there are no more items.
  virtual bool next_batch(ItemBatch& batch, std::size_t max_items, std::size_t max_bytes) = 0;
  /// The name used in error messages (a record's error names `name():line`).
  virtual const std::string& name() const noexcept = 0;
  /// How the items' text is to be parsed (never `automatic`).
  virtual ManifestFormat format() const noexcept = 0;
  /// Bytes consumed so far, for progress (0 when unknown).
  virtual std::uint64_t bytes_read() const noexcept { return 0; }
  /// Total bytes when known, for progress.
  virtual std::optional<std::uint64_t> size() const noexcept { return std::nullopt; }
  /// The engine calls this before a run with a check that turns true once the run is stopping
  /// (and with an empty function after it). A source whose next_batch() may wait for input
  /// (a pipe, a socket, another process) should wait in slices of at most about 50 ms,
  /// calling `stopped` between them, and return false once it is true; and, holding items
  /// already, should return them rather than wait for more. The default ignores it.
  virtual void set_stop_check(std::function<bool()> stopped) { (void)stopped; }
};

/// Reads a manifest file (or standard input for "-") and cuts it into items.
///
/// \code
/// coremap::ManifestReader reader("items.jsonl");
/// coremap::ItemBatch batch;
/// while (reader.next_batch(batch, 64, 1 << 20)) {
///   for (const auto& item : batch.items) use(reader.name(), item.line, batch.text(item));
/// }
/// \endcode
///
/// Thread safety: one thread at a time (the engine calls it from its serial input stage).
class COREMAP_EXPORT ManifestReader final : public BatchSource {
 public:
  /// Opens `path` ("-" is standard input) and decides the format; throws ManifestError when the
  /// file cannot be opened or read, is a directory, or does not start the way `format` needs.
  explicit ManifestReader(const std::string& path, ManifestFormat format = ManifestFormat::automatic);
  ~ManifestReader() override;
  ManifestReader(const ManifestReader&) = delete;
  ManifestReader& operator=(const ManifestReader&) = delete;

  /// The name used in error messages: the path, or "<stdin>".
  const std::string& name() const noexcept override { return name_; }
  /// The format in use (never `automatic`).
  ManifestFormat format() const noexcept override { return format_; }
  /// A note for the user when the format was chosen from the file name but the content looks
  /// like another (a `.txt` whose first line starts with `{`: every item would be a path that
  /// is JSON text); empty otherwise. The CLI prints it before the run.
  const std::string& format_hint() const noexcept { return format_hint_; }

  /// Clears `batch` and fills it with the next items: at most `max_items`, and stops adding
  /// once `max_bytes` are stored (a batch always takes at least one item, however long).
  /// Returns false when the manifest has no more items. Throws ManifestError on a read error.
  /// A manifest that is a pipe, FIFO, socket or terminal (standard input, `tail -f log |`) is
  /// never waited on while the batch holds an item: the items that have arrived are returned
  /// at once. With none yet it waits for input, and returns false when the stop check (see
  /// set_stop_check) turns true meanwhile.
  bool next_batch(ItemBatch& batch, std::size_t max_items, std::size_t max_bytes) override;

  /// See BatchSource::set_stop_check; polled every 50 ms while waiting on a stream.
  void set_stop_check(std::function<bool()> stopped) override;

  /// Items cut so far.
  std::uint64_t items_read() const noexcept { return next_index_; }
  /// Bytes consumed so far.
  std::uint64_t bytes_read() const noexcept override { return consumed_; }
  /// Size of the manifest when it is a regular file.
  std::optional<std::uint64_t> size() const noexcept override { return size_; }

 private:
  // What reading more input gave: bytes, the end of the input, or nothing for now (a stream
  // with no input ready while `hurry_`, or the stop check turned true while waiting).
  enum class Fill { data, eof, later };
  Fill fill();
  bool wait_readable(bool patient);
  void detect_format(const std::string& path, ManifestFormat requested);
  Fill skip_blank();  // skips whitespace between array elements; data when a non-blank byte follows
  bool cut_line(ItemBatch& batch);
  bool cut_array_element(ItemBatch& batch);
  void add_item(ItemBatch& batch, std::string_view text, std::uint64_t line, bool malformed);

  std::string name_;
  ManifestFormat format_ = ManifestFormat::automatic;
  std::string format_hint_;
  int fd_ = -1;
  bool owns_fd_ = false;
  bool eof_ = false;
  bool stream_ = false;  // a pipe, FIFO, socket or terminal: reading may wait for a writer
  bool hurry_ = false;   // the batch being cut holds items: do not wait for more
  std::function<bool()> stopped_;
  std::vector<char> buffer_;
  std::size_t begin_ = 0;  // first unconsumed byte in buffer_
  std::size_t end_ = 0;    // one past the last valid byte in buffer_
  std::uint64_t line_ = 1;
  std::uint64_t next_index_ = 0;
  std::uint64_t consumed_ = 0;
  std::optional<std::uint64_t> size_;
  enum class ArrayState { before_open, expect_element, after_element, closed, failed } array_state_ =
      ArrayState::before_open;
};

}  // namespace coremap
