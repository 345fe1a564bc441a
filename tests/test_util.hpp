// SPDX-License-Identifier: MIT
#pragma once

// Helpers shared by the unit tests: scratch directories, files, running shell oracles.

#include <filesystem>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <coremap/engine.hpp>
#include <coremap/plugin.hpp>

namespace coremap {

/// How gtest prints a StageSummary in a failed expectation.
inline void PrintTo(const StageSummary& summary, std::ostream* out) {
  if (summary.ok) {
    *out << "ok " << summary.value.dump();
  } else {
    *out << "failed: " << summary.error << " (value " << summary.value.dump() << ")";
  }
}

}  // namespace coremap

namespace coremap::test {

/// A fresh directory under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const noexcept { return path_; }
  /// Writes `contents` to `name` inside the directory; returns the full path.
  std::string write(const std::string& name, std::string_view contents) const;

 private:
  std::filesystem::path path_;
};

/// Runs `command` with /bin/sh and returns its standard output; fails the test on a non-zero exit.
std::string shell(const std::string& command);

/// The whole contents of a file.
std::string read_file(const std::string& path);

/// Items {"n": 0} ... {"n": n - 1}.
std::vector<Json> numbers(int n);

/// Path of a fixture plugin (tests/fixtures) or a bundled plugin.
std::string fixture(const std::string& name);
std::string bundled(const std::string& name);

}  // namespace coremap::test
