// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The output record: one JSON Lines record per item,
/// `{"index":N,"ok":true,"result":...}` or `{"index":N,"ok":false,"error":"..."}`, with
/// with `"sub":S` after `"index"` for the S-th record of an item that fanned out
/// (Context::emit), and `"attempts":K` after `"ok"` when a retried item took K > 1 calls.
/// The same format everywhere: streamed to a file, handed to a callback, or collected.

#include <cstddef>
#include <cstdint>
#include <string>

#include <coremap/export.hpp>
#include <coremap/plugin.hpp>

namespace coremap {

/// The outcome of one item.
struct Record {
  std::uint64_t index = 0;  ///< 0-based position among the manifest's items
  bool ok = false;
  Json result;              ///< the plugin's result when ok
  std::string error;        ///< what went wrong when not ok (may hold bytes that are not UTF-8)
  std::uint32_t attempts = 1;  ///< calls it took (above 1 only with retries)
  /// With fan-out: the record's 0-based position among its item's records; -1 when the item's
  /// record did not come from Context::emit.
  std::int64_t sub = -1;
};

/// Appends records to one string, reusing its JSON serializer from record to record (the
/// engine keeps one per batch, so writing a record allocates nothing beyond the string's
/// growth). The free functions below are one-off conveniences over it. `out` must outlive the
/// writer. Not copyable or movable (it writes into `out` through a serializer it holds).
///
/// Thread safety: one thread at a time.
class COREMAP_EXPORT RecordWriter {
 public:
  explicit RecordWriter(std::string& out);
  ~RecordWriter();
  RecordWriter(const RecordWriter&) = delete;
  RecordWriter& operator=(const RecordWriter&) = delete;
  /// See append_ok_record.
  /// `file` and `line` (when given) say where the item came from: an error record written
  /// instead starts with "<file>:<line>: " (nothing is formatted unless the result is
  /// unwritable).
  bool ok(std::uint64_t index, const Json& result, std::uint32_t attempts = 1, std::int64_t sub = -1,
          std::string_view file = {}, std::uint64_t line = 0);
  /// See append_error_record.
  void error(std::uint64_t index, std::string_view message, std::uint32_t attempts = 1, std::int64_t sub = -1);

  /// Bytes set aside in every RecordWriter for its serializer (record.cpp checks at compile
  /// time that nlohmann_json's fits).
  static constexpr std::size_t serializer_room = 1024;

 private:
  struct Serializer;  // nlohmann_json's serializer, built in storage_ (record.cpp)
  Serializer& serializer() noexcept;

  std::string& out_;
  // The serializer lives here rather than behind a pointer: no heap block per writer and no
  // indirection on the per-record path, and no nlohmann_json internals in this class's layout
  // (an application built with other nlohmann settings sees only bytes).
  alignas(std::max_align_t) unsigned char storage_[serializer_room];
};

/// Appends the JSON Lines text of an ok record, newline included. When `result` cannot be
/// written (see writable_result), appends an error record saying why instead and returns false.
COREMAP_EXPORT bool append_ok_record(std::string& out, std::uint64_t index, const Json& result);

/// Appends the JSON Lines text of an error record. Bytes of `error` that are not valid UTF-8
/// are written as the text \xNN, with a note saying so, so the record is always valid JSON.
COREMAP_EXPORT void append_error_record(std::string& out, std::uint64_t index, std::string_view error);

/// Appends the record's text (either of the two above).
COREMAP_EXPORT bool append_record(std::string& out, const Record& record);

/// How deeply a result's arrays and objects may nest: as deep as an item may (the manifest's
/// limit). Deeper values could not be written (the serializer recurses) nor safely handed on.
inline constexpr std::size_t max_result_depth = 1000;

/// Whether `value` can be written as a record's result: every string and object key valid
/// UTF-8, every number finite (JSON has no NaN or infinity; written, they would silently become
/// null), no discarded value (written, it would be the text <discarded>), arrays and objects
/// nested at most max_result_depth deep. When not, returns false and
/// sets `why` to a sentence starting "the plugin's result ..." that says where in the value
/// (a JSON pointer). `check_strings` false leaves out the UTF-8 check, for a caller whose
/// serializer makes it anyway. Recursion is bounded by max_result_depth.
///
/// Thread safety: reads `value` only.
COREMAP_EXPORT bool writable_result(const Json& value, std::string& why, bool check_strings = true);

/// `text` with every byte that is not part of valid UTF-8 replaced by the text \xNN.
/// `replaced` is set when anything was replaced.
COREMAP_EXPORT std::string escape_invalid_utf8(std::string_view text, bool* replaced = nullptr);

}  // namespace coremap
