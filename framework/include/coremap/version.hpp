// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// What this coremap is: its version, git revision and the libraries it was built with.

#include <string>

#include <coremap/export.hpp>

namespace coremap {

/// "0.1.0".
COREMAP_EXPORT const char* version() noexcept;
/// The git revision the library was built from, or "unknown".
COREMAP_EXPORT const char* git_revision() noexcept;
/// One line: version, revision, TBB (headers and runtime), nlohmann_json, compiler, plugin ABI.
COREMAP_EXPORT std::string build_description();

}  // namespace coremap
