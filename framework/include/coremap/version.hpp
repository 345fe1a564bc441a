// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// What this coremap is: its version, git revision and the libraries it was built with.
/// The version at compile time: COREMAP_VERSION_MAJOR, COREMAP_VERSION_MINOR,
/// COREMAP_VERSION_PATCH and COREMAP_VERSION (MAJOR * 10000 + MINOR * 100 + PATCH), from
/// coremap/config.hpp; version() is the library the program runs with, which may be newer.

#include <string>

#include <coremap/config.hpp>
#include <coremap/export.hpp>

namespace coremap {

/// "0.1.0".
COREMAP_EXPORT const char* version() noexcept;
/// The git revision the library was built from, or "unknown".
COREMAP_EXPORT const char* git_revision() noexcept;
/// The oneTBB the library was built with and runs with: "2021.8.0 (runtime 2021.8.0)".
COREMAP_EXPORT std::string tbb_version();
/// The compiler that built the library: "g++ 12.2.0", "clang 16.0.6".
COREMAP_EXPORT std::string compiler();
/// One line: version, revision, TBB (headers and runtime), nlohmann_json, compiler, plugin ABI.
COREMAP_EXPORT std::string build_description();

}  // namespace coremap
