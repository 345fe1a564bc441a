// SPDX-License-Identifier: MIT
#pragma once

// The isolated worker process's entry point, compiled into libcoremap so that it shares the
// item parser and the record writer with the engine; tools/coremap-worker's main() calls it.

#include <coremap/export.hpp>

namespace coremap::detail {

/// `coremap-worker [--memory-limit BYTES] [--retries N] [--timeout-ms MS] [--note-fd FD] PLUGIN.so`: loads the plugin, reads the setup frame
/// (the resolved config), answers `ready`, then processes batch frames from standard input and
/// writes one result frame per item to standard output until end of input (see
/// worker_protocol.hpp). Returns the process's exit code.
COREMAP_EXPORT int worker_main(int argc, char** argv);

/// Called by coremap-worker's exit() (it interposes the C library's, see worker/main.cpp)
/// before the real one runs: when a plugin's item calls exit(), the engine is told at once,
/// through the note page and the end of the channel, so an exit that hangs in an atexit
/// handler or a static destructor costs its item, not the run. Does nothing between items.
COREMAP_EXPORT void worker_exit_called(int status) noexcept;

}  // namespace coremap::detail
