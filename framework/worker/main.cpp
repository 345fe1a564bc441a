// SPDX-License-Identifier: MIT
// coremap-worker: the process `coremap run --isolate` runs a plugin in, so that a crash costs
// one item instead of the run. Everything it does lives in libcoremap (worker_main.cpp).
#include "worker_main.hpp"

int main(int argc, char** argv) { return coremap::detail::worker_main(argc, argv); }
