// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Finding the log files and cutting them into chunks: a plain file into byte ranges of about
/// the chunk size that end just after a newline (so no line is split), a gzip file into one
/// chunk (a deflate stream cannot be entered in the middle).

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace logstats {

/// A problem that stops the run before anything is read: a path argument that does not exist,
/// is not a file or directory, or is a directory that cannot be read.
class SetupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// One file found, or one that could not be opened (then `error` says why and it has no chunks).
struct LogFile {
  std::string path;
  std::uint64_t size = 0;
  bool gzip = false;    ///< starts with the gzip magic bytes 1f 8b
  std::string error;    ///< empty when the file was opened and cut
};

/// A byte range of one file, one engine item.
struct Chunk {
  std::size_t file = 0;  ///< index into Plan::files
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

/// The files, in reading order, and their chunks, in file order then offset order.
struct Plan {
  std::vector<LogFile> files;
  std::vector<Chunk> chunks;
};

/// Lists the files named by `paths` (each a file, or a directory searched recursively; symbolic
/// links to directories are not followed; within one directory argument files are taken in
/// byte order of their paths) and cuts them into chunks of about `chunk_bytes` (at least 1).
/// A file or subdirectory that cannot be opened is listed with its error. Throws SetupError
/// for a path argument that does not exist, is neither a file nor a directory, or is a
/// directory that cannot be read.
Plan plan_chunks(const std::vector<std::string>& paths, std::uint64_t chunk_bytes);

}  // namespace logstats
