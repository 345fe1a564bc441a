// SPDX-License-Identifier: MIT
#pragma once

// Turns one item's manifest text into its JSON value. The engine's parallel stage and the
// isolated worker process (coremap-worker) both call it, so a malformed item gets the same
// message in and out of process.

#include <cstdint>
#include <string>
#include <string_view>

#include <coremap/manifest.hpp>
#include <coremap/plugin.hpp>

namespace coremap::detail {

/// Parses `text`, which starts on manifest line `line`, into `item` (a plain-list line becomes
/// {"path": text}, reusing `item`'s object). Returns false with "<manifest>:<line>:<column>:
/// invalid JSON: ..." (or the nesting-depth message) in `error`.
bool parse_item(std::string_view text, std::uint64_t line, ManifestFormat format,
                const std::string& manifest_name, Json& item, std::string& error);

}  // namespace coremap::detail
