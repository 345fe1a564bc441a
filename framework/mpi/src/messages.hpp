// SPDX-License-Identifier: MIT
#pragma once

// The messages between the ranks of a run (docs/distributed.md, "Messages"): their tags, the
// limits on chunks, the run header rank 0 broadcasts, a processing rank's final report, and
// point-to-point byte messages on the session's communicator. Fields are those of
// wire_encoding.hpp, like the isolated worker's frames.

#include <mpi.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <coremap/mpi.hpp>

#include "wire_encoding.hpp"

namespace coremap::mpi::detail {

using coremap::detail::WireReader;
using coremap::detail::WireWriter;
using Clock = std::chrono::steady_clock;

// Message tags. Every request gets exactly one chunk back, in order (MPI does not reorder
// messages between two ranks on one tag), and a chunk of no items means "no more".
constexpr int tag_request = 1;   // rank -> 0: progress figures, asks for one chunk
constexpr int tag_chunk = 2;     // 0 -> rank: sequence number and items
constexpr int tag_result = 3;    // rank -> 0: records of (part of) one chunk
constexpr int tag_finished = 4;  // rank -> 0: the rank's RunStats; it sends nothing after

// Chunks a rank keeps asked for beyond the one it works on, so that the next one is there
// before it runs dry.
constexpr int outstanding_chunks = 2;
// An adaptive chunk is sized to about this much of its rank's wall time.
constexpr std::uint64_t chunk_target_ns = 50'000'000;
constexpr std::size_t max_chunk_items = 1 << 16;
constexpr std::size_t max_chunk_bytes = std::size_t{4} << 20;
// Unordered results are sent when this much has collected, or this long after the last send.
constexpr std::size_t unordered_flush_bytes = std::size_t{256} << 10;
constexpr auto unordered_flush_interval = std::chrono::milliseconds(50);

/// What every rank must know of a run before it starts, from rank 0 (broadcast).
struct RunHeader {
  std::string manifest_name;
  ManifestFormat format = ManifestFormat::lines;
  bool ordered = true;
};

/// Collective: rank 0's `header` to every rank.
void share_header(const Session& session, RunHeader& header);

/// A processing rank's report at the end of a run (tag_finished).
void write_report(WireWriter& w, const RunStats& stats, std::uint64_t cpu_ns);
void read_report(WireReader& r, RankReport& report);

std::uint64_t ns_since(Clock::time_point start);
/// CPU time of this process so far (user + system), nanoseconds.
std::uint64_t process_cpu_ns();

/// Receives the message `probe` found, whole, into `into`.
void receive(const Session& session, const MPI_Status& probe, std::string& into);
/// A blocking send of `bytes` to rank `to`.
void send(const Session& session, std::string_view bytes, int to, int tag);

}  // namespace coremap::mpi::detail
