// SPDX-License-Identifier: MIT
#pragma once

// The isolated worker process's entry point, compiled into libcoremap so that it shares the
// item parser and the record writer with the engine; tools/coremap-worker's main() calls it.

#include <coremap/export.hpp>

namespace coremap::detail {

/// `coremap-worker [--memory-limit BYTES] PLUGIN.so`: loads the plugin, reads the setup frame
/// (the resolved config), answers `ready`, then processes batch frames from standard input and
/// writes one result frame per item to standard output until end of input (see
/// worker_protocol.hpp). Returns the process's exit code.
COREMAP_EXPORT int worker_main(int argc, char** argv);

}  // namespace coremap::detail
