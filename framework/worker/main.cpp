// SPDX-License-Identifier: MIT
// coremap-worker: the process `coremap run --isolate` runs a plugin in, so that a crash costs
// one item instead of the run. Everything it does lives in libcoremap (worker_main.cpp).
#include <dlfcn.h>

#include "worker_main.hpp"

int main(int argc, char** argv) { return coremap::detail::worker_main(argc, argv); }

// The C library's exit(), interposed: the executable exports it (ENABLE_EXPORTS), so a
// plugin's exit() (and std::exit) binds here first. The engine is told before the exit
// handlers and static destructors run, since one of them may hang; then the real exit().
extern "C" [[noreturn]] __attribute__((visibility("default"))) void exit(int status) noexcept {
  coremap::detail::worker_exit_called(status);
  using Exit = void (*)(int);
  const auto real = reinterpret_cast<Exit>(::dlsym(RTLD_NEXT, "exit"));
  if (real != nullptr) real(status);
  ::_exit(status);
}
