#!/usr/bin/env bash
# Builds coremap and runs the whole test suite (unit, loader, engine and CLI end-to-end tests),
# first in the Release build, then again built with AddressSanitizer and UndefinedBehaviorSanitizer,
# then the engine's tests built with ThreadSanitizer, then fuzzes the manifest reader and parser
# for a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

# Warnings are errors here (COREMAP_WERROR), as in CI, which runs this script.
scripts/build.sh -DCOREMAP_WERROR=ON
ctest --test-dir build --output-on-failure -j "$jobs"
# MPI runs (tests/cli/mpi.sh, mpirun -n 2 and 3) are part of that suite when CMake found MPI;
# where mpirun exists they must have been.
if command -v mpirun >/dev/null; then
  ctest --test-dir build -N -R '^cli\.mpi$' | grep -q 'Total Tests: 1' ||
    { echo "mpirun exists but cli.mpi is not registered: CMake did not find MPI (libopenmpi-dev)" >&2; exit 1; }
fi

# The Python package and its pytest suite (python/tests) are part of that suite when CMake found
# python3-dev and pybind11-dev, which scripts/install-deps.sh installs: they must have been.
ctest --test-dir build -N -R '^python\.pytest$' | grep -q 'Total Tests: 1' ||
  { echo "python.pytest is not registered: CMake did not find python3-dev and pybind11-dev (scripts/install-deps.sh)" >&2; exit 1; }

# Built without MPI: the suite also covers that build (and the MPI library's own allocations
# would trip LeakSanitizer).
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOREMAP_SANITIZE=ON -DCOREMAP_BUILD_BENCH=OFF \
  -DCOREMAP_WITH_MPI=OFF
cmake --build build-sanitize -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-sanitize --output-on-failure -j "$jobs"

# The engine's tests under ThreadSanitizer: only the test binary and what it loads are built.
# tests/tsan.supp covers synchronisation inside Debian's uninstrumented libtbb
# (docs/reliability.md); any other report fails the run. handle_segv=0: the crash-isolation
# tests need a crashing worker to die of SIGSEGV, not exit through TSan's handler.
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOREMAP_TSAN=ON -DCOREMAP_BUILD_BENCH=OFF
cmake --build build-tsan -j "$jobs" --target coremap_tests
# history_size=7: the longest access history, so the earlier access of a report keeps its
# stack and the libtbb entries of tests/tsan.supp can match it (with the default, a TBB wait
# object's atomic write on a worker's stack came back as "failed to restore the stack").
TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp:halt_on_error=1:second_deadlock_stack=1:handle_segv=0:history_size=7" \
  build-tsan/tests/coremap_tests --gtest_brief=1 \
  --gtest_filter='Engine*:Embedding*:Pipeline*:Retry*:Timeout*:Resume*:Isolate*:Map*:Progress*:Stop*:OrderedDelivery*:ReorderBuffer*:PerThreadPool*'

# The manifest reader and item parser under libFuzzer (clang) for a bounded time.
scripts/fuzz.sh 60
