// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The exception tree: every error coremap throws derives from coremap::Error and says where
/// (manifest file:line, plugin path, config key, output file) and what. All of them are setup
/// errors: the CLI exits 2 on any of them. Errors of a single item are never thrown; they
/// become that item's error record.

#include <stdexcept>
#include <string>

#include <coremap/export.hpp>

namespace coremap {

/// Root of coremap's exceptions.
class COREMAP_EXPORT Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  ~Error() override;
};

/// The manifest cannot be opened, is a directory, or does not have the requested format.
class COREMAP_EXPORT ManifestError : public Error {
 public:
  using Error::Error;
  ~ManifestError() override;
};

/// A plugin library cannot be found or loaded, is not a coremap plugin, or was built for
/// another ABI or toolchain; or its constructor threw.
class COREMAP_EXPORT PluginError : public Error {
 public:
  using Error::Error;
  ~PluginError() override;
};

/// A config is not a JSON object, has an unknown key, a key of the wrong type, or lacks a
/// required key.
class COREMAP_EXPORT ConfigError : public Error {
 public:
  using Error::Error;
  ~ConfigError() override;
};

/// Writing the results failed (disk full, closed descriptor, rename failed).
class COREMAP_EXPORT OutputError : public Error {
 public:
  using Error::Error;
  ~OutputError() override;
};

/// Options that contradict each other or are out of range.
class COREMAP_EXPORT UsageError : public Error {
 public:
  using Error::Error;
  ~UsageError() override;
};

/// `--resume` cannot continue the recorded run: its manifest, plugin or config differ, or its
/// records are not coremap records.
class COREMAP_EXPORT ResumeError : public Error {
 public:
  using Error::Error;
  ~ResumeError() override;
};

}  // namespace coremap
